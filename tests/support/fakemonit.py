"""A stand-in for the VM's monit, run as ``monit`` by the agents under test.

It speaks the three verbs the agent uses (``summary -B``, ``stop NAME``, ``start NAME``)
and manages real processes (redis-server) described in ``$FAKE_MONIT_DIR/services.json``.
Unlike monit it stops synchronously; the agent waits for "not monitored" either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HOME = Path(os.environ["FAKE_MONIT_DIR"])


def pid_of(name: str) -> int | None:
    try:
        pid = int((HOME / f"{name}.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    # A zombie still answers kill 0; it is gone for monit's purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return None
    return pid


def status(name: str) -> str:
    if (HOME / f"{name}.unmonitored").exists():
        return "Not monitored"
    return "OK" if pid_of(name) else "Does not exist"


def summary(services: dict[str, list[str]]) -> None:
    print("Monit 5.33.0 uptime: 1m")
    print(f"{'Service Name':<33}{'Status':<28}Type")
    for name in services:
        print(f"{name:<33}{status(name):<28}Process")


def stop(name: str) -> None:
    pid = pid_of(name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            if pid_of(name) is None:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
    (HOME / f"{name}.unmonitored").touch()


def start(name: str, argv: list[str]) -> None:
    (HOME / f"{name}.unmonitored").unlink(missing_ok=True)
    if pid_of(name) is not None:
        return
    with (HOME / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    (HOME / f"{name}.pid").write_text(str(process.pid))


def main(args: list[str]) -> int:
    services: dict[str, list[str]] = json.loads((HOME / "services.json").read_text())
    if args[:1] == ["summary"]:
        summary(services)
        return 0
    if len(args) == 2 and args[0] in ("stop", "start") and args[1] in services:
        if args[0] == "stop":
            stop(args[1])
        else:
            start(args[1], services[args[1]])
        return 0
    print(f"monit: unknown request {' '.join(args)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
