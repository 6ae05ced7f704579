"""A set's storage-level cut: one group snapshot of every member's volume, inside the barrier.

With a provider that has group snapshots (``providers/group_snapshots.GroupSnapshots``:
openstack-cinder), the coordinator does the storage side itself, with its own provider:

1. before anyone freezes, it learns each member's volume (``GET /status``) and gathers the
   volumes in the deployment's group (slow: group creation, membership updates);
2. once every member is frozen, it takes ONE group snapshot: every volume at one instant;
3. each member claims its own member snapshot (``POST /sets/<id>/snapshot`` with
   ``snapshot_id``), still frozen, so it can tell whether its freeze held until the cut,
   and writes its annotations with the set id;
4. after the thaw the volumes leave the group, and whatever no member claimed is released.

If any member fails to quiesce, no group snapshot is taken: a cut that includes a disk
still taking writes would not be the set's consistent point.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from disk_snapshots.members import Member
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.group_snapshots import GroupSnapshots
from disk_snapshots.providers.group_snapshots import VolumeGroup
from disk_snapshots.sets.decisions import clean_text
from disk_snapshots.vm.instance import Disk


def disk_of(status: Mapping[str, object]) -> Disk:
    """A member's disk as its ``GET /status`` describes it (the volume id is what counts)."""
    disk = status.get("disk")
    if not isinstance(disk, Mapping) or not disk.get("volume_id"):
        raise ProviderError("its status names no volume (is its snapshotter older?)")
    return Disk(
        cid=str(disk.get("cid", "")),
        mount=Path(str(disk.get("mount", "/var/vcap/store"))),
        hint={"volume_id": str(disk["volume_id"])},
    )


@dataclass
class GroupCut:
    """One set's group snapshot, from the members' volumes to the unclaimed leftovers."""

    provider: GroupSnapshots
    deployment: str
    disks: dict[str, Disk] = field(default_factory=dict)  # member id → its disk
    claims: dict[str, str] = field(default_factory=dict)  # member id → its member snapshot
    failure: str = ""
    _stack: ExitStack = field(default_factory=ExitStack)

    def gather(self, members: Sequence[Member]) -> VolumeGroup | None:
        """The members' volumes in the deployment's group until ``scatter``; None (and
        ``failure`` set) when they cannot be gathered, so that nothing gets frozen."""
        try:
            return self._stack.enter_context(
                self.provider.volume_group([self.disks[m.id] for m in members], self.deployment)
            )
        except ProviderError as err:
            self.failure = clean_text(f"no group snapshot: {err}")
            return None

    def scatter(self) -> list[str]:
        """The volumes out of the group again (BOSH cannot delete a disk in a group)."""
        try:
            self._stack.close()
        except ProviderError as err:
            return [
                f"the volumes could not leave their group: {err} (`snapshots cleanup` on any "
                "instance takes them out once they have been there 30 minutes)"
            ]
        return []

    def take(self, group: VolumeGroup, set_id: str, members: Sequence[Member]) -> None:
        """The one group snapshot; each member's claim is its own volume's snapshot."""
        try:
            by_volume = self.provider.snapshot_group(group, set_id)
        except ProviderError as err:
            self.failure = clean_text(f"the group snapshot failed: {err}")
            return
        for member in members:
            volume = self.disks[member.id].volume_id
            if volume in by_volume:
                self.claims[member.id] = by_volume[volume]

    def release_unclaimed(self, claimed: set[str]) -> list[str]:
        """Release the member snapshots no member claimed; the problems, if any."""
        problems = []
        for member_id, snapshot_id in self.claims.items():
            if snapshot_id in claimed:
                continue
            try:
                self.provider.release_group_member(snapshot_id)
            except ProviderError as err:
                problems.append(
                    f"releasing unclaimed {snapshot_id} of {member_id}: {err} (`snapshots "
                    "cleanup` releases it after 30 minutes)"
                )
        return problems
