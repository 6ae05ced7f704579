"""The provider interface and what all providers share."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from typing import runtime_checkable

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.vm.instance import Disk


class ProviderError(RuntimeError):
    """The backend refused or failed; the message says what and where."""


class UnknownSnapshot(ProviderError):
    """No snapshot with that id exists (or it is not one of ours)."""


class Provider(Protocol):
    name: str
    # Whether ``materialize`` can work here, so that a copy restore is refused before it
    # stops any service (openstack-cinder: attaching a volume to the VM is Nova's job).
    can_materialize: bool

    def prepare(self, disk: Disk) -> None:
        """Called just before the freeze: flush what can be flushed while writes still go on."""
        ...

    def snapshot(self, disk: Disk, annotations: Annotations) -> Snapshot:
        """Take a snapshot; returns once its point in time is fixed."""
        ...

    def list(self, query: Query | None = None) -> list[Snapshot]:
        """Our snapshots, from the provider's own tags/metadata, newest first."""
        ...

    def get(self, snapshot_id: str) -> Snapshot:
        """One snapshot; UnknownSnapshot when it does not exist."""
        ...

    def update(self, snapshot_id: str, annotations: Annotations) -> Snapshot:
        """Rewrite a snapshot's annotations (set state is decided after the fact)."""
        ...

    def delete(self, snapshot_id: str) -> None: ...

    def materialize(self, snapshot_id: str, az: str) -> AbstractContextManager[Path]:
        """A read-only mount of a new disk made from the snapshot, gone on exit."""
        ...


@runtime_checkable
class LeavesDebris(Protocol):
    """A provider whose materialize makes resources a killed process can leave behind."""

    def cleanup_leftovers(self) -> list[str]:
        """Remove what earlier runs on this VM left behind; the ids of what was removed."""
        ...


@dataclass(frozen=True)
class NewDisk:
    """A persistent disk made from a snapshot, for the Director to attach by its CID."""

    cid: str  # what `bosh attach-disk` takes: a loopback disk-<uuid>, an EBS volume id
    size_mib: int
    zone: str  # where the IaaS made it (the instance's zone; "" for loopback)
    snapshot_id: str


@runtime_checkable
class CreatesDisks(Protocol):
    """A provider that can make a new disk from a snapshot: the replace restore, where the
    Director swaps the instance's disk (``bosh attach-disk``) instead of copying onto it."""

    def create_disk(self, snapshot_id: str, like: Disk, labels: Mapping[str, str]) -> NewDisk:
        """A new disk holding the snapshot, in this instance's zone and of the kind of its
        current disk ``like``, labelled with ``labels`` (the snapshot's annotations and why
        it was made); returns once the disk can be attached."""
        ...
