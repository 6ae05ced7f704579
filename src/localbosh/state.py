"""Where the local Director keeps its state, and the deployment lock.

Layout under the state dir (`$LOCALBOSH_HOME`, default /var/lib/localbosh)::

    pool.img, pool/              reflink-capable disk pool (a loop-mounted XFS image
                                 when the state dir's filesystem has no reflink)
    ns/<deployment>.<uuid>       bind-mounted mount namespaces, one per instance
    orphaned_disks.json          disks kept after scale-in/delete-deployment/migration
    deployments/<name>/
        state.json               manifest, instances, disks (rewritten after every step)
        lock                     the deployment lock (flock) and who holds it
        instances/<uuid>/vcap/   bound onto /var/vcap inside the instance's namespace
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

DEFAULT_HOME = Path("/var/lib/localbosh")
REPO_ROOT = Path(__file__).resolve().parents[2]
# The Director waits this long for a deployment lock before failing the task.
LOCK_TIMEOUT_SECONDS = 10.0


def home() -> Path:
    return Path(os.environ.get("LOCALBOSH_HOME") or DEFAULT_HOME)


def cache_dir() -> Path:
    """Compiled packages and the stemcell's monit (built by scripts/bootstrap).

    Shared with tests/release (compiling CPython takes minutes, once). compile.py refuses
    a cache under /var (its namespace shadows /var), so it is not in the state dir.
    """
    return Path(os.environ.get("LOCALBOSH_CACHE") or REPO_ROOT / ".cache")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    @property
    def pool_image(self) -> Path:
        return self.root / "pool.img"

    @property
    def ns_dir(self) -> Path:
        return self.root / "ns"

    @property
    def deployments(self) -> Path:
        return self.root / "deployments"

    @property
    def orphans(self) -> Path:
        return self.root / "orphaned_disks.json"

    def deployment(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid deployment name {name!r}")
        return self.deployments / name

    def ns_file(self, deployment: str, instance_id: str) -> Path:
        return self.ns_dir / f"{deployment}.{instance_id}"

    def instance_root(self, deployment: str, instance_id: str) -> Path:
        return self.deployment(deployment) / "instances" / instance_id / "root"

    def deployment_names(self) -> list[str]:
        if not self.deployments.is_dir():
            return []
        return sorted(p.name for p in self.deployments.iterdir() if (p / "state.json").exists())


@dataclass
class InstanceState:
    group: str
    index: int
    id: str
    az: str | None
    address: str
    bootstrap: bool = False
    # The Director's record: "started", "stopped" (bosh stop) or "detached" (stop --hard).
    state: str = "started"
    vm: bool = False
    disk_cid: str | None = None
    disk_size: int = 0
    applied: dict[str, Any] | None = None
    update_completed: bool = True

    @property
    def name(self) -> str:
        return f"{self.group}/{self.id}"


@dataclass
class DeploymentState:
    name: str
    slot: int
    manifest: dict[str, Any] = field(default_factory=dict)
    instances: list[InstanceState] = field(default_factory=list)
    monit_password: str = ""

    def find(self, group: str, index: int) -> InstanceState | None:
        for inst in self.instances:
            if inst.group == group and inst.index == index:
                return inst
        return None

    def save(self, layout: Layout) -> None:
        path = layout.deployment(self.name) / "state.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        tmp.replace(path)

    @classmethod
    def load(cls, layout: Layout, name: str) -> DeploymentState | None:
        path = layout.deployment(name) / "state.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["instances"] = [InstanceState(**i) for i in data.get("instances", [])]
        return cls(**data)


def address_in_use(addr: str, port: int = 2822) -> bool:
    """Whether something (another state dir's instance, say) already listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like monit's own bind: TIME_WAIT leftovers of a deleted instance do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError:
            return True
    return False


def free_slot(layout: Layout) -> int:
    """A deployment's address block: instances get 127.77.<slot>.<10+n>. Slots of
    this state dir are known; those of other state dirs show as addresses in use."""
    used = set()
    for name in layout.deployment_names():
        st = DeploymentState.load(layout, name)
        if st is not None:
            used.add(st.slot)
    for slot in range(1, 250):
        if slot not in used and not address_in_use(address(slot, 0)):
            return slot
    raise RuntimeError(f"no free address block left under {layout.deployments}")


def address(slot: int, n: int) -> str:
    if not 0 <= n < 240:
        raise ValueError(f"instance number {n} out of range for one deployment")
    return f"127.77.{slot}.{10 + n}"


class LockError(Exception):
    pass


@contextlib.contextmanager
def deployment_lock(
    layout: Layout, name: str, description: str, timeout: float = LOCK_TIMEOUT_SECONDS
) -> Iterator[None]:
    """Hold `lock:deployment:NAME` like a Director task; fail with its wording after timeout."""
    path = layout.deployment(name) / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(path)
                    raise LockError(
                        f"Failed to acquire lock for lock:deployment:{name} uid: {os.getpid()}. "
                        f"Locking task id is {holder.get('pid', '?')}, "
                        f"description: '{holder.get('description', '?')}'"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "description": description}).encode(), 0)
        yield
    finally:
        os.close(fd)


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
