"""Wait until a Cinder started by scripts/cinder-local serves requests.

Ready: the API answers, cinder-scheduler, cinder-volume and cinder-backup report
themselves up and enabled, and the scheduler knows the volume backend's pool. A service
is "up" as soon as its row is fresh, before its driver published capabilities: a volume
created then goes to 'error' (no valid backend). Fails at once when a daemon has exited.
Usage: wait_ready.py ENDPOINT PROJECT PID_DIR TIMEOUT_SECONDS
"""

import json
import os
import sys
import time
import urllib.request

NEEDED = {"cinder-scheduler", "cinder-volume", "cinder-backup"}


def main():
    endpoint, project, pid_dir, timeout = sys.argv[1:5]
    headers = {"X-Auth-Token": "admin:" + project, "Accept": "application/json"}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + float(timeout)
    last = "no answer yet"

    def get(path, key):
        request = urllib.request.Request(endpoint + path, headers=headers)
        with opener.open(request, timeout=5) as response:
            return json.load(response)[key]

    while True:
        try:
            services = get("/os-services", "services")
            up = {s["binary"] for s in services if s["state"] == "up" and s["status"] == "enabled"}
            last = "up: " + (", ".join(sorted(up)) or "none")
            if NEEDED <= up:
                pools = get("/scheduler-stats/get_pools?detail=true", "pools")
                if pools:
                    for pool in pools:
                        free = pool.get("capabilities", {}).get("free_capacity_gb", "?")
                        free = f"{free:.1f}" if isinstance(free, float) else free
                        print(f"cinder-local: pool {pool['name']}, {free} GiB free", file=sys.stderr)
                    return
                last += "; the scheduler knows no pool yet"
        except OSError as err:
            last = str(err)
        for name in ("api", "scheduler", "volume", "backup"):
            with open(os.path.join(pid_dir, f"cinder-{name}.pid")) as f:
                pid = int(f.read())
            try:
                os.kill(pid, 0)
            except OSError:
                sys.exit(f"cinder-{name} exited during start-up; see its log")
        if time.monotonic() > deadline:
            sys.exit(f"Cinder was not ready after {timeout}s ({last})")
        time.sleep(1)


if __name__ == "__main__":
    main()
