"""Fakes for tests without root (no disks, no monit): service, provider, monit, and a
Snapshotter wired to them."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import Role
from disk_snapshots.api.client import AgentClient
from disk_snapshots.api.server import RunningApi
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import select
from disk_snapshots.config import TlsConfig
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.daemon.agent import Agent
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.instance import Disk
from disk_snapshots.vm.services import ServiceError
from support.configdocs import snapshotter_doc


@dataclass
class FakeService:
    role_answer: Role = "leader"
    flush_error: str = ""
    flushes: int = 0
    name: str = "fake"

    def role(self) -> Role:
        return self.role_answer

    def flush(self) -> bool:
        if self.flush_error:
            raise ServiceError(self.flush_error)
        self.flushes += 1
        return True

    def resume(self) -> None:
        """Nothing to undo."""

    def replication(self) -> None:
        """A fake replicates nothing."""


@dataclass
class FakeProvider:
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    name: str = "fake"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self, disk: Disk) -> None:
        """Nothing is written anywhere."""

    def snapshot(self, disk: Disk, annotations: Annotations) -> Snapshot:
        with self._lock:
            snapshot = Snapshot(id=f"snap-{len(self.snapshots):04d}", annotations=annotations)
            self.snapshots[snapshot.id] = snapshot
        return snapshot

    def list(self, query: Query | None = None) -> list[Snapshot]:
        return select(self.snapshots.values(), query or Query())

    def get(self, snapshot_id: str) -> Snapshot:
        if snapshot_id not in self.snapshots:
            raise UnknownSnapshot(snapshot_id)
        return self.snapshots[snapshot_id]

    def update(self, snapshot_id: str, annotations: Annotations) -> Snapshot:
        updated = Snapshot(id=snapshot_id, annotations=annotations)
        self.snapshots[self.get(snapshot_id).id] = updated
        return updated

    def delete(self, snapshot_id: str) -> None:
        del self.snapshots[self.get(snapshot_id).id]

    def materialize(self, snapshot_id: str, az: str) -> AbstractContextManager[Path]:
        raise NotImplementedError


@dataclass
class FakeMonit:
    states: dict[str, str] = field(default_factory=lambda: {"redis": "running"})
    stuck: bool = False
    calls: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, str]:
        return dict(self.states)

    def stop(self, name: str) -> None:
        self.calls.append(f"stop {name}")
        if not self.stuck:
            self.states[name] = "not monitored"

    def start(self, name: str) -> None:
        self.calls.append(f"start {name}")
        if not self.stuck:
            self.states[name] = "running"


@dataclass
class FakeApi:
    running: RunningApi
    agent: Agent
    monit: FakeMonit
    client: AgentClient

    @property
    def address(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.running.port


def fake_snapshotter(root: Path, tls: TlsConfig | None = None, **props: Any) -> Snapshotter:
    """A Snapshotter on fakes: no disk to freeze (quiesce.freeze false), an in-memory catalog."""
    doc = snapshotter_doc()
    doc["properties"]["quiesce"]["freeze"] = False
    doc["properties"]["schedules"] = [{"name": "hourly", "cron": "0 * * * *"}]
    if tls is not None:
        doc["properties"]["api"]["tls"] = {
            "ca": tls.ca,
            "certificate": tls.certificate,
            "private_key": tls.private_key,
        }
    for key, value in props.items():
        doc["properties"][key] = value
    (root / "store").mkdir(parents=True, exist_ok=True)
    return Snapshotter(
        config=load_snapshotter_config(doc),
        disk=Disk(cid="disk-fake", mount=root / "store", hint={}),
        provider=FakeProvider(),
        service=FakeService(),
        paths=Paths(root=root),
    )
