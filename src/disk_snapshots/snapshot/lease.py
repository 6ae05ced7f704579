"""The freeze lease: the file through which a freezer and its watchdog agree who thaws.

The freezer (quiesce.frozen) writes ``{mount, deadline, pid}`` before it freezes and
removes the file after it thaws. The watchdog (commands/watchdog.py) claims a lease
it has to act on by renaming it to ``.expired`` first, so the freezer can tell that
its freeze did not hold until the end.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lease:
    mount: str
    deadline: float  # Unix time
    pid: int  # the process holding the freeze


def lease_path(lease_dir: Path, mount: Path) -> Path:
    return lease_dir / f"freeze-{hashlib.sha256(str(mount).encode()).hexdigest()[:12]}.lease"


def expired_path(lease: Path) -> Path:
    return lease.with_name(lease.name + ".expired")


def write(path: Path, lease: Lease) -> None:
    """Atomically: the watchdog never reads half a lease."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"mount": lease.mount, "deadline": lease.deadline, "pid": lease.pid}))
    tmp.replace(path)


def read(path: Path) -> Lease:
    record = json.loads(path.read_text())
    return Lease(str(record["mount"]), float(record["deadline"]), int(record["pid"]))


def holder(path: Path) -> int:
    """The pid a lease left behind names (0 when it names none)."""
    return int(json.loads(path.read_text()).get("pid", 0))
