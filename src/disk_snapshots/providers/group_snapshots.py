"""The group-snapshot capability: one storage-level cut across several disks.

A provider that has it (``openstack-cinder``: Cinder's generic volume groups and group
snapshots) lets the set coordinator replace N single snapshots by one group snapshot
taken inside the freeze barrier, so a set is consistent at the application and at the
storage level (sets/group.py). The coordinator calls ``volume_group`` before the freeze
(it may create and fill the group) and ``snapshot_group`` inside it; each member then
claims its own snapshot (``claim_group_member``, still frozen, so it can tell whether its
freeze held); leaving ``volume_group`` undoes the membership.
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

    def snapshot_group(self, group: VolumeGroup, set_id: str) -> dict[str, str]:
        """One snapshot of every volume of the group at one instant, marked with the set
        id: volume id → member snapshot id (taken inside the freeze)."""
        ...

    def claim_group_member(
        self, snapshot_id: str, disk: Disk, annotations: Annotations
    ) -> Snapshot:
        """This disk's member of the set's group snapshot, with the annotations written;
        refused for any other snapshot."""
        ...

    def release_group_member(self, snapshot_id: str) -> None:
        """Let go of a member nobody claimed; a claimed one is left to its instance."""
        ...
