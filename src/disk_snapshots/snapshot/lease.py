"""The freeze lease: the file through which a freezer and its watchdog agree who thaws.

The freezer (quiesce.frozen) writes ``{mount, deadline, pid}`` before it freezes and
removes the file after it thaws. The watchdog (commands/watchdog.py) claims a lease
it has to act on by renaming it to ``.expired`` first, so the freezer can tell that
its freeze did not hold until the end.
"""

from __future__ import annotations

import json
from pathlib import Path


class Lease:
    """What the freezer promises: ``mount`` is thawed by ``deadline`` (Unix time), and
    ``pid`` holds the freeze until then. (A plain class: the watchdog imports this
    module before it says ready, inside other set members' freezes: what it imports
    costs them frozen milliseconds.)"""

    __slots__ = ("deadline", "mount", "pid")

    def __init__(self, mount: str, deadline: float, pid: int) -> None:
        self.mount = mount
        self.deadline = deadline
        self.pid = pid


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
