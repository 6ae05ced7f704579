"""Group snapshots for sets against the real Cinder: one cut of three volumes, one set id."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Query
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


@pytest.fixture
def consistent_group_type(admin: Admin) -> str:
    """A group type asking the backend for consistent group snapshots, as an operator's would."""
    body = {
        "group_type": {
            "name": f"consistent-{os.urandom(4).hex()}",
            "group_specs": {"consistent_group_snapshot_enabled": "<is> True"},
        }
    }
    return str(admin.call("POST", "/group_types", json=body)["group_type"]["id"])


def members_of(disks: list[Disk], deployment: str, set_id: str) -> list[tuple[Disk, Annotations]]:
    return [
        (
            disk,
            replace(
                sample_annotations(deployment=deployment, disk_cid=disk.cid, index=i),
                trigger="set:nightly",
                set_id=set_id,
                set_size=len(disks),
            ),
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
    members = members_of(disks, deployment, "set-2026-12-02")

    with provider.volume_group(disks, deployment) as group:
        assert {admin.volume(v)["group_id"] for v in volumes} == {group.id}
        taken = provider.snapshot_group(group, members)

    # The volumes left the group again, so BOSH can still delete its disks.
    assert {admin.volume(v)["group_id"] for v in volumes} == {None}
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
    restored = provider.volume_from_snapshot(first.id)
    assert volume_files.read(restored.id, 0, 4096) == contents[volumes[0]]


def test_members_are_deleted_together_when_the_last_is_released(
    make_provider: MakeProvider, admin: Admin, deployment: str, consistent_group_type: str
) -> None:
    provider = make_provider(group_type=consistent_group_type)
    disks = disks_of(admin.create_volumes(2, deployment))
    with provider.volume_group(disks, deployment) as group:
        first, second = provider.snapshot_group(group, members_of(disks, deployment, "s1"))
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
        pytest.raises(ProviderError, match="one and the same set id"),
        provider.volume_group(disks, deployment) as second,
    ):
        assert second.id == first.id
        members = members_of(disks, deployment, "s1")
        members[1] = (members[1][0], replace(members[1][1], set_id="s2"))
        provider.snapshot_group(second, members)
    assert {admin.volume(d.cid)["group_id"] for d in disks} == {None}
    assert admin.call("GET", "/group_snapshots/detail", params={"group_id": first.id}) == {
        "group_snapshots": []
    }


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
