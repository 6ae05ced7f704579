"""The group-snapshot capability: one storage-level cut across several disks.

A provider that has it (``openstack-cinder``: Cinder's generic volume groups and group
snapshots) lets the set coordinator replace N single snapshots by one group snapshot
taken inside the freeze barrier, so a set is consistent at the application and at the
storage level. Call ``volume_group`` before the freeze (it may create and fill the group),
``snapshot_group`` inside it; leaving ``volume_group`` undoes the membership.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol
from typing import runtime_checkable

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Snapshot
from disk_snapshots.vm.instance import Disk


@dataclass(frozen=True)
class VolumeGroup:
    """A deployment's volumes gathered for one group snapshot."""

    id: str
    deployment: str
    volume_ids: tuple[str, ...]


@runtime_checkable
class GroupSnapshots(Protocol):
    def volume_group(
        self, disks: Sequence[Disk], deployment: str
    ) -> AbstractContextManager[VolumeGroup]:
        """The disks' volumes in one group until exit (done before the freeze)."""
        ...

    def snapshot_group(
        self, group: VolumeGroup, members: Sequence[tuple[Disk, Annotations]]
    ) -> list[Snapshot]:
        """One snapshot of every member at one instant, each with its annotations."""
        ...
