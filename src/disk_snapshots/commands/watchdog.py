"""The freeze watchdog: a separate process that thaws a frozen filesystem no matter what.

A thread would die with the process that froze the filesystem; this process does not
(it runs in its own session). It thaws at the lease deadline, or at once when the
process that holds the lease is gone (SIGKILL, OOM, or a zombie not yet reaped), and
it claims the lease (snapshot/lease.py) by renaming it to ``.expired`` first so the
holder can tell that its freeze did not hold for the whole snapshot.

Usage (by snapshot/quiesce.py only): python -m disk_snapshots.commands.watchdog LEASE
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from disk_snapshots.snapshot import lease
from disk_snapshots.vm.processes import alive

POLL_SECONDS = 0.01


def thaw(mount: str) -> str:
    proc = subprocess.run(["fsfreeze", "-u", mount], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return "thawed"
    # EINVAL: not frozen (the holder thawed it a moment ago). Nothing to do.
    return f"fsfreeze -u: {proc.stderr.strip()}"


def watch(path: Path) -> str:
    held = lease.read(path)
    print("ready", flush=True)
    sys.stdout.close()
    while True:
        if not path.exists():
            return "released by its holder"
        holder_gone = not alive(held.pid)
        if holder_gone or time.time() >= held.deadline:
            try:
                path.replace(lease.expired_path(path))
            except FileNotFoundError:
                return "released by its holder"
            why = f"holder {held.pid} is gone" if holder_gone else "the lease deadline passed"
            return f"{why}: {held.mount} {thaw(held.mount)}"
        time.sleep(POLL_SECONDS)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m disk_snapshots.commands.watchdog LEASE", file=sys.stderr)
        return 2
    outcome = watch(Path(argv[0]))
    print(
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} watchdog {argv[0]}: {outcome}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
