"""Group snapshots for sets against the real Cinder: one cut of three volumes, one set id."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.group_snapshots import GroupSnapshots
from disk_snapshots.providers.openstack_cinder import OpenstackCinderProvider
from disk_snapshots.vm.instance import Disk
from support.annotations import sample_annotations
from support.cinder import Admin
from support.cinder import MakeProvider
from support.cinder import VolumeFiles

pytestmark = pytest.mark.cinder


def disks_of(volume_ids: list[str]) -> list[Disk]:
    return [Disk(cid=v, mount=Path("/var/vcap/store"), hint={}) for v in volume_ids]


def annotated(disk: Disk, index: int, deployment: str, set_id: str, size: int) -> Annotations:
    return replace(
        sample_annotations(deployment=deployment, disk_cid=disk.cid, index=index),
        trigger="set:nightly",
        set_id=set_id,
        set_size=size,
    )


def cut(
    provider: OpenstackCinderProvider, disks: list[Disk], deployment: str, set_id: str
) -> list[Snapshot]:
    """What a set does with a group: gather, one group snapshot, every member claimed."""
    with provider.volume_group(disks, deployment) as group:
        members = provider.snapshot_group(group, set_id)
    return [
        provider.claim_group_member(
            members[disk.cid], disk, annotated(disk, i, deployment, set_id, len(disks))
        )
        for i, disk in enumerate(disks)
    ]


def test_the_provider_has_the_group_snapshot_capability(
    provider: OpenstackCinderProvider,
) -> None:
    assert isinstance(provider, GroupSnapshots)


def test_one_group_snapshot_of_three_volumes_with_one_set_id(
    make_provider: MakeProvider,
    admin: Admin,
    deployment: str,
    consistent_group_type: str,
    volume_files: VolumeFiles,
) -> None:
    provider = make_provider(group_type=consistent_group_type)
    volumes = admin.create_volumes(3, deployment)
    contents = {v: os.urandom(4096) for v in volumes}
    for volume_id, data in contents.items():
        volume_files.write(volume_id, data, 0)
    disks = disks_of(volumes)

    with provider.volume_group(disks, deployment) as group:
        assert {admin.volume(v)["group_id"] for v in volumes} == {group.id}
        members = provider.snapshot_group(group, "set-2026-12-02")
    # The volumes left the group again, so BOSH can still delete its disks.
    assert {admin.volume(v)["group_id"] for v in volumes} == {None}
    assert sorted(members) == sorted(volumes)
    # Not claimed yet: marked with the set, but not in the catalog.
    assert provider.list(Query(deployment=deployment)) == []
    assert {admin.snapshot(m)["metadata"]["disk-snapshots:set_id"] for m in members.values()} == {
        "set-2026-12-02"
    }
    taken = [
        provider.claim_group_member(
            members[d.cid], d, annotated(d, i, deployment, "set-2026-12-02", 3)
        )
        for i, d in enumerate(disks)
    ]
    raw = [admin.snapshot(s.id) for s in taken]
    assert len({r["group_snapshot_id"] for r in raw}) == 1
    assert raw[0]["group_snapshot_id"] is not None
    assert sorted(r["volume_id"] for r in raw) == sorted(volumes)
    assert {r["metadata"]["disk-snapshots:set_id"] for r in raw} == {"set-2026-12-02"}
    group_snapshot = admin.call("GET", f"/group_snapshots/{raw[0]['group_snapshot_id']}")
    assert group_snapshot["group_snapshot"]["group_type_id"] == consistent_group_type

    listed = provider.list(Query(deployment=deployment, set_id="set-2026-12-02"))
    assert {s.id for s in listed} == {s.id for s in taken}
    assert {s.annotations.set_size for s in listed} == {3}
    # Each member holds its own volume's data: a new volume from one shows it.
    first = next(s for s in taken if s.annotations.index == 0)
    restored = provider.create_disk(first.id, disks[1], {})
    assert volume_files.read(restored.cid, 0, 4096) == contents[volumes[0]]


def test_members_are_deleted_together_when_the_last_is_released(
    make_provider: MakeProvider, admin: Admin, deployment: str, consistent_group_type: str
) -> None:
    provider = make_provider(group_type=consistent_group_type)
    disks = disks_of(admin.create_volumes(2, deployment))
    first, second = cut(provider, disks, deployment, "s1")
    group_snapshot_id = admin.snapshot(first.id)["group_snapshot_id"]

    provider.delete(first.id)
    # Released: gone from the catalog, but Cinder keeps it until its sibling goes too.
    assert [s.id for s in provider.list(Query(deployment=deployment))] == [second.id]
    assert admin.snapshot(first.id)["status"] == "available"
    provider.delete(second.id)
    assert admin.gone("group_snapshot", group_snapshot_id)
    assert admin.gone("snapshot", first.id) and admin.gone("snapshot", second.id)


def test_the_group_is_reused_and_membership_undone_after_a_failure(
    make_provider: MakeProvider, admin: Admin, deployment: str, consistent_group_type: str
) -> None:
    provider = make_provider(group_type=consistent_group_type)
    disks = disks_of(admin.create_volumes(2, deployment))
    with provider.volume_group(disks, deployment) as first:
        pass
    with (
        pytest.raises(ProviderError, match="the set id is empty"),
        provider.volume_group(disks, deployment) as second,
    ):
        assert second.id == first.id
        provider.snapshot_group(second, "")
    assert {admin.volume(d.cid)["group_id"] for d in disks} == {None}
    assert admin.call("GET", "/group_snapshots/detail", params={"group_id": first.id}) == {
        "group_snapshots": []
    }


def test_a_member_is_claimed_only_by_its_own_disk_for_its_own_set(
    make_provider: MakeProvider, admin: Admin, deployment: str, consistent_group_type: str
) -> None:
    provider = make_provider(group_type=consistent_group_type)
    disks = disks_of(admin.create_volumes(2, deployment))
    with provider.volume_group(disks, deployment) as group:
        members = provider.snapshot_group(group, "s1")
    mine, other = members[disks[0].cid], members[disks[1].cid]
    with pytest.raises(ProviderError, match=f"a snapshot of volume {disks[1].cid}"):
        provider.claim_group_member(other, disks[0], annotated(disks[0], 0, deployment, "s1", 2))
    with pytest.raises(ProviderError, match="it belongs to set 's1', not 's2'"):
        provider.claim_group_member(mine, disks[0], annotated(disks[0], 0, deployment, "s2", 2))
    single = provider.snapshot(disks[0], sample_annotations(deployment=deployment))
    with pytest.raises(ProviderError, match="not a member of a disk-snapshots group snapshot"):
        provider.claim_group_member(
            single.id, disks[0], annotated(disks[0], 0, deployment, "s1", 2)
        )
    # Nobody claimed them: released, and with the last one the group snapshot goes.
    group_snapshot_id = admin.snapshot(mine)["group_snapshot_id"]
    provider.release_group_member(mine)
    assert admin.snapshot(mine)["status"] == "available"
    provider.release_group_member(other)
    assert admin.gone("group_snapshot", group_snapshot_id)
    # A claimed member is its instance's: releasing an unclaimed one leaves it alone.
    claimed = cut(provider, disks, deployment, "s3")[0]
    provider.release_group_member(claimed.id)
    assert provider.get(claimed.id).annotations.set_id == "s3"


def test_a_volume_of_another_deployment_does_not_join(
    make_provider: MakeProvider, admin: Admin, deployment: str, consistent_group_type: str
) -> None:
    provider = make_provider(group_type=consistent_group_type)
    disks = disks_of([admin.create_volume(deployment), admin.create_volume("someone-elses")])
    refused = pytest.raises(ProviderError, match="belongs to deployment 'someone-elses'")
    with refused, provider.volume_group(disks, deployment):
        pass
    assert {admin.volume(d.cid)["group_id"] for d in disks} == {None}


def test_without_a_group_type_the_clouds_default_is_named(
    provider: OpenstackCinderProvider, admin: Admin, deployment: str
) -> None:
    disks = disks_of(admin.create_volumes(1, deployment))
    refused = pytest.raises(ProviderError, match=r"set provider\.openstack\.group_type")
    with refused, provider.volume_group(disks, deployment):
        pass


def test_cleanup_undoes_what_a_coordinator_that_died_half_way_left(
    make_provider: MakeProvider, admin: Admin, deployment: str, consistent_group_type: str
) -> None:
    provider = make_provider(group_type=consistent_group_type)
    disks = disks_of(admin.create_volumes(2, deployment))
    # The coordinator gathers the volumes and takes the group snapshot, then dies: nobody
    # claims the members and the volumes never leave the group.
    gathering = provider.volume_group(disks, deployment)  # never left: kept referenced
    group = gathering.__enter__()
    members = set(provider.snapshot_group(group, "s-dead").values())
    group_snapshot_id = admin.snapshot(next(iter(members)))["group_snapshot_id"]
    # A set in flight is never that old: with the default age nothing of it is touched.
    assert not (members | {d.cid for d in disks}) & {
        left.id for left in provider.cleanup_leftovers()
    }
    assert {admin.volume(d.cid)["group_id"] for d in disks} == {group.id}
    time.sleep(1.5)  # Cinder's timestamps have whole seconds

    assert {left.id for left in provider.leftovers(min_age=timedelta(0))} >= members
    removed = {left.id for left in provider.cleanup_leftovers(min_age=timedelta(0))}
    assert members | {d.cid for d in disks} <= removed
    assert {admin.volume(d.cid)["group_id"] for d in disks} == {None}
    assert admin.gone("group_snapshot", group_snapshot_id)
    again = provider.cleanup_leftovers(min_age=timedelta(0))
    assert not (members | {d.cid for d in disks}) & {left.id for left in again}
