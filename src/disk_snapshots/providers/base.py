"""The provider interface and what all providers share."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from typing import runtime_checkable

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.errors import EXIT_PROVIDER
from disk_snapshots.errors import EXIT_USAGE
from disk_snapshots.errors import ReleaseError
from disk_snapshots.vm.instance import Disk


class ProviderError(ReleaseError, RuntimeError):
    """The backend refused or failed; the message says what and where."""

    exit_code = EXIT_PROVIDER


class UnknownSnapshot(ProviderError):
    """No snapshot with that id exists (or it is not one of ours): a bad argument."""

    exit_code = EXIT_USAGE


class UnknownBackup(ProviderError):
    """No backup with that id exists (or it is not one of ours): a bad argument."""

    exit_code = EXIT_USAGE


class Provider(Protocol):
    name: str

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
class RefusesCopy(Protocol):
    """A provider whose materialize cannot work (openstack-cinder: attaching a volume to
    this VM is Nova's job), so a copy restore must be refused while it is planned."""

    def copy_refusal(self) -> str:
        """Why a copy restore cannot work here, and what to do instead."""
        ...


def copy_refusal(provider: Provider) -> str:
    """Why this provider cannot restore by copying ("" when it can)."""
    return provider.copy_refusal() if isinstance(provider, RefusesCopy) else ""


@dataclass(frozen=True)
class Leftover:
    """A temporary resource a provider made and an operation killed midway left behind."""

    kind: str  # "loop device", "mount", "temporary image", "temporary volume", ...
    id: str  # the device, path or cloud id, as the operator would look for it
    detail: str = ""  # what made it and why it counts as left behind

    def describe(self) -> str:
        return f"{self.kind} {self.id}" + (f" ({self.detail})" if self.detail else "")


@runtime_checkable
class LeavesDebris(Protocol):
    """A provider whose operations make temporary resources (materialize: a clone and a
    loop device, a cloud volume; snapshot: a partial image) that a killed process can
    leave behind. Each is marked with the process that made it (vm/processes
    ``process_token``) the moment it exists, and counts as left behind once that process
    is gone. The provider releases its own leftovers before it makes new ones (the next
    run of the same operation), the daemon at start, and ``bin/snapshots cleanup``.

    A new kind of temporary resource (the backup tier's copies, for one) is listed by
    ``leftovers`` and released by ``cleanup_leftovers``, and gets a kill test in
    tests/disks/test_leftovers.py or tests/aws/test_aws_leftovers.py.
    """

    def leftovers(self) -> list[Leftover]:
        """What earlier runs on this VM left behind; nothing is changed."""
        ...

    def cleanup_leftovers(self) -> list[Leftover]:
        """Release what ``leftovers`` finds; returns what was released. What cannot be
        released is named in one ProviderError, after the rest was."""
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


@runtime_checkable
class BackupTier(Protocol):
    """A provider that can copy snapshots out of their failure domain (docs/catalog.md).

    Backup ids are the provider's own (a loopback ``bkp-...``, an EBS snapshot id in the
    backup region, a Cinder backup UUID), checked before any path or request is built
    from them. A backup carries its source snapshot's annotations, so the catalog, the
    retention rules and the restore planner read it like a snapshot.
    """

    name: str
    # The property that turns backups on, for messages that say what to set.
    backup_property: str

    @property
    def backup_location(self) -> str:
        """Where backups go (a directory, a region); "" when the operator left them off."""
        ...

    def backup(self, snapshot_id: str, timeout: float | None = None) -> Backup:
        """Start a backup of one of our snapshots. Returns it ``pending`` where the IaaS
        copies on its own (poll get_backup), ``completed`` where the copy ran here;
        ``timeout`` bounds the time spent here (a copy, or waiting for the source)."""
        ...

    def backups(self, query: Query | None = None) -> list[Backup]:
        """Our backups, newest point in time first, also those whose snapshot is gone."""
        ...

    def get_backup(self, backup_id: str) -> Backup:
        """One backup with its state as the provider reports it now; UnknownBackup when
        it does not exist."""
        ...

    def delete_backup(self, backup_id: str) -> None: ...

    def materialize_backup(self, backup_id: str, az: str) -> AbstractContextManager[Path]:
        """A read-only tree of a completed backup's content (for the copy restore),
        gone on exit. The replace restore's twin, a new disk made from a backup in
        ``az``, belongs beside it when the provider gains "a disk from a snapshot"."""
        ...


def backup_tier(provider: Provider) -> BackupTier | None:
    """The provider's backup tier when it has one and the operator turned it on."""
    if isinstance(provider, BackupTier) and provider.backup_location:
        return provider
    return None


def require_backup_tier(provider: Provider) -> BackupTier:
    """The backup tier, or a ProviderError naming what to set to get one."""
    tier = backup_tier(provider)
    if tier is not None:
        return tier
    if isinstance(provider, BackupTier):
        raise ProviderError(
            f"backups are off: {provider.backup_property} is empty (it says where backups go)"
        )
    raise ProviderError(f"the {provider.name} provider has no backup tier")
