"""Snapshots and the catalog against the real Cinder: metadata, paging, refusals."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Query
from disk_snapshots.providers import make_provider as provider_for
from disk_snapshots.providers.base import CreatesDisks
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.base import copy_refusal
from disk_snapshots.providers.cinder_metadata import MARKER_KEY
from disk_snapshots.providers.openstack_cinder import OpenstackCinderProvider
from disk_snapshots.vm.instance import Disk
from support.annotations import sample_annotations
from support.cinder import Admin
from support.cinder import MakeProvider

pytestmark = pytest.mark.cinder


def disk_of(volume_id: str) -> Disk:
    return Disk(cid=volume_id, mount=Path("/var/vcap/store"), hint={})


def annotations_for(deployment: str, volume_id: str, **changes: Any) -> Annotations:
    return sample_annotations(deployment=deployment, disk_cid=volume_id, **changes)


def test_snapshot_carries_every_annotation_as_metadata(
    provider: OpenstackCinderProvider, admin: Admin, deployment: str
) -> None:
    volume_id = admin.create_volume(deployment)
    # An attached volume needs force; this one is not attached, which force allows too.
    wanted = annotations_for(deployment, volume_id, note="before the upgrade", role="follower")
    provider.prepare(disk_of(volume_id))
    taken = provider.snapshot(disk_of(volume_id), wanted)
    assert taken.state == "completed"
    assert taken.annotations == wanted
    raw = admin.snapshot(taken.id)
    assert raw["status"] == "available"
    assert raw["volume_id"] == volume_id
    assert {k: v for k, v in raw["metadata"].items() if k != MARKER_KEY} == wanted.to_tags()
    assert raw["metadata"][MARKER_KEY] == "openstack-cinder"
    assert raw["name"].startswith(f"{deployment}/redis-leader/0 manual ")
    assert provider.get(taken.id) == taken
    assert provider.list(Query(deployment=deployment)) == [taken]


def test_update_rewrites_the_annotations(
    provider: OpenstackCinderProvider, admin: Admin, deployment: str
) -> None:
    volume_id = admin.create_volume(deployment)
    taken = provider.snapshot(disk_of(volume_id), annotations_for(deployment, volume_id))
    marked = taken.annotations.with_set_state("incomplete", "x" * 256)
    marked = replace(marked, set_id="set-a", set_size=2)
    updated = provider.update(taken.id, marked)
    # Cinder keeps 255 characters: the reason is cut, every identifier is kept whole.
    assert len(updated.annotations.set_reason) == 255
    assert provider.get(taken.id).annotations == updated.annotations
    assert provider.list(Query(deployment=deployment, set_id="set-a")) == [updated]


def test_list_filters_by_metadata_and_pages_through_250_snapshots(
    make_provider: MakeProvider, admin: Admin, deployment: str
) -> None:
    provider = make_provider(page_size=40)
    volumes = admin.create_volumes(5, deployment)
    other = f"{deployment}-other"
    other_volume = admin.create_volume(other)

    def take_51(index: int, volume_id: str) -> set[str]:
        # Each with its own time and trigger; one thread per volume, as instances would.
        taken = set()
        for n in range(51):
            wanted = annotations_for(
                deployment,
                volume_id,
                index=index,
                trigger="schedule:hourly" if n % 3 else "manual",
                minutes_ago=n + index / 10,
            )
            taken.add(provider.snapshot(disk_of(volume_id), wanted).id)
        return taken

    with ThreadPoolExecutor(max_workers=len(volumes)) as pool:
        expected = set().union(*pool.map(take_51, range(len(volumes)), volumes))
    provider.snapshot(disk_of(other_volume), annotations_for(other, other_volume))
    # One snapshot Cinder holds that is not ours: never listed.
    admin.call(
        "POST",
        "/snapshots",
        json={"snapshot": {"volume_id": volumes[0], "force": True, "name": "someone else's"}},
    )

    listed = provider.list(Query(deployment=deployment))
    assert len(expected) == 255
    assert {s.id for s in listed} == expected
    assert len(listed) == len(expected)  # no page read twice
    assert [s.created_at for s in listed] == sorted((s.created_at for s in listed), reverse=True)
    manual = provider.list(Query(deployment=deployment, trigger="manual"))
    assert len(manual) == 5 * 17
    assert {s.annotations.trigger for s in manual} == {"manual"}
    one = provider.list(Query(deployment=deployment, instance="redis-leader/2"))
    assert len(one) == 51 and {s.annotations.index for s in one} == {2}
    assert {s.annotations.deployment for s in provider.list()} >= {deployment, other}


def test_list_asks_cinder_to_filter_by_metadata(
    make_provider: MakeProvider, admin: Admin, deployment: str
) -> None:
    provider = make_provider(page_size=2)
    volume_id = admin.create_volume(deployment)
    for n in range(3):
        provider.snapshot(disk_of(volume_id), annotations_for(deployment, volume_id, minutes_ago=n))
    query = json.dumps({MARKER_KEY: "openstack-cinder", "disk-snapshots:deployment": deployment})
    pages = admin.call("GET", "/snapshots/detail", params={"metadata": query, "limit": 2})
    assert len(pages["snapshots"]) == 2 and pages.get("snapshots_links")
    assert len(provider.list(Query(deployment=deployment))) == 3


def test_refuses_unknown_and_malformed_ids(provider: OpenstackCinderProvider) -> None:
    with pytest.raises(UnknownSnapshot, match="does not exist"):
        provider.get("00000000-0000-4000-8000-000000000000")
    with pytest.raises(UnknownSnapshot, match="does not exist"):
        provider.delete("00000000-0000-4000-8000-000000000000")
    with pytest.raises(UnknownSnapshot, match="not a Cinder snapshot id"):
        provider.get("../volumes")


def test_refuses_a_snapshot_without_our_metadata(
    make_provider: MakeProvider, admin: Admin, deployment: str
) -> None:
    provider = make_provider(backup_container="disk-snapshots-tests")
    volume_id = admin.create_volume(deployment)
    foreign = admin.call(
        "POST",
        "/snapshots",
        json={"snapshot": {"volume_id": volume_id, "force": True, "metadata": {"a": "b"}}},
    )["snapshot"]["id"]
    admin.wait("snapshot", foreign)

    def create_disk(snapshot_id: str) -> object:
        return provider.create_disk(snapshot_id, disk_of(volume_id), {})

    for attempt in (provider.get, provider.delete, create_disk, provider.backup):
        with pytest.raises(UnknownSnapshot, match="not taken by disk-snapshots"):
            attempt(foreign)
    assert admin.snapshot(foreign)["status"] == "available"


def test_refuses_a_volume_of_another_deployment(
    provider: OpenstackCinderProvider, admin: Admin, deployment: str
) -> None:
    theirs = admin.create_volume("someone-elses")
    with pytest.raises(ProviderError, match="belongs to deployment 'someone-elses'"):
        provider.snapshot(disk_of(theirs), annotations_for(deployment, theirs))
    assert admin.call("GET", "/snapshots/detail", params={"volume_id": theirs})["snapshots"] == []


def test_a_disk_that_is_not_a_cinder_volume_is_named(provider: OpenstackCinderProvider) -> None:
    with pytest.raises(ProviderError, match="disk disk-123 has no Cinder volume id"):
        provider.prepare(Disk(cid="disk-123", mount=Path("/x"), hint={}))
    with pytest.raises(ProviderError, match="does not exist in this project"):
        provider.prepare(disk_of("00000000-0000-4000-8000-000000000000"))


def test_delete_removes_only_ours(
    provider: OpenstackCinderProvider, admin: Admin, deployment: str
) -> None:
    volume_id = admin.create_volume(deployment)
    taken = provider.snapshot(disk_of(volume_id), annotations_for(deployment, volume_id))
    provider.delete(taken.id)
    assert admin.gone("snapshot", taken.id)
    assert provider.list(Query(deployment=deployment)) == []


def test_copy_restore_is_refused_with_the_way_that_works(
    provider: OpenstackCinderProvider,
) -> None:
    # Said up front, so that a restore refuses copy before it stops anything.
    assert "--method replace" in copy_refusal(provider)
    assert isinstance(provider, CreatesDisks)
    with pytest.raises(ProviderError, match="--method replace"):
        provider.materialize("00000000-0000-4000-8000-000000000000", "nova")


def test_the_config_builds_this_provider(admin: Admin) -> None:
    from disk_snapshots.config import load_snapshotter_config
    from support.configdocs import snapshotter_doc

    doc = snapshotter_doc()
    doc["properties"]["provider"]["type"] = "openstack-cinder"
    doc["properties"]["provider"]["openstack"]["endpoint"] = admin.cinder.endpoint
    config = load_snapshotter_config(doc)
    provider = provider_for(config.provider, None)
    try:
        assert isinstance(provider, OpenstackCinderProvider)
        assert provider.list(Query(deployment="nobody-has-this")) == []
    finally:
        provider.close()


def test_a_snapshot_cinder_fails_to_make_is_reported_with_cinders_reason(
    provider: OpenstackCinderProvider, admin: Admin, deployment: str
) -> None:
    volume_id = admin.create_volume(deployment)
    # The backend loses the volume's file: the driver cannot make the snapshot.
    volume_file = admin.cinder.volume_dir / f"volume-{volume_id}"
    volume_file.rename(volume_file.with_name(f"lost-{volume_id}"))
    with pytest.raises(ProviderError) as raised:
        provider.snapshot(disk_of(volume_id), annotations_for(deployment, volume_id))
    message = str(raised.value)
    # Cinder's user message: "<action>:<detail>".
    assert "went into status 'error': create snapshot:" in message
    assert message.endswith("Snapshot failed to create.")
    assert provider.list(Query(deployment=deployment))[0].state == "error"
