"""The freeze watchdog: a separate process that thaws a frozen filesystem no matter what.

A thread would die with the process that froze the filesystem; this process does not
(it runs in its own session). It thaws at the lease deadline, or at once when the
process that holds the lease is gone (SIGKILL, OOM), and it claims the lease by
renaming it to ``.expired`` first so the holder can tell that its freeze did not
hold for the whole snapshot.

Usage (by disk_snapshots.quiesce only): python -m disk_snapshots.watchdog LEASE
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.01


def expired_path(lease: Path) -> Path:
    return lease.with_name(lease.name + ".expired")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) counts as gone: it will never thaw anything.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def thaw(mount: str) -> str:
    proc = subprocess.run(["fsfreeze", "-u", mount], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return "thawed"
    # EINVAL: not frozen (the holder thawed it a moment ago). Nothing to do.
    return f"fsfreeze -u: {proc.stderr.strip()}"


def watch(lease: Path) -> str:
    record = json.loads(lease.read_text())
    mount, deadline, holder = record["mount"], float(record["deadline"]), int(record["pid"])
    print("ready", flush=True)
    sys.stdout.close()
    while True:
        if not lease.exists():
            return "released by its holder"
        holder_gone = not alive(holder)
        if holder_gone or time.time() >= deadline:
            try:
                lease.replace(expired_path(lease))
            except FileNotFoundError:
                return "released by its holder"
            why = f"holder {holder} is gone" if holder_gone else "the lease deadline passed"
            return f"{why}: {mount} {thaw(mount)}"
        time.sleep(POLL_SECONDS)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m disk_snapshots.watchdog LEASE", file=sys.stderr)
        return 2
    outcome = watch(Path(argv[0]))
    print(
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} watchdog {argv[0]}: {outcome}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
