"""Backups and new volumes against the real Cinder: the data written comes back.

Volume contents are read and written through the NFS driver's files (qemu-io/qemu-img),
as a guest would see them. Debian's Cinder 21.3.1 NFS driver copies only a volume's
first snapshot (its later ones are qcow2 overlays with a backing file, which the
driver's image safety check refuses to read), so each test backs up or copies a
volume's only snapshot at that moment; the API calls are the same for any snapshot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from disk_snapshots.catalog import Query
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.openstack_cinder import OpenstackCinderProvider
from disk_snapshots.vm.instance import Disk
from support.annotations import sample_annotations
from support.cinder import Admin
from support.cinder import MakeProvider
from support.cinder import VolumeFiles
from support.cinder import completed

pytestmark = pytest.mark.cinder

MIB = 1 << 20
CONTAINER = "disk-snapshots-tests"


def disk_of(volume_id: str) -> Disk:
    return Disk(cid=volume_id, mount=Path("/var/vcap/store"), hint={})


@pytest.fixture
def backing(make_provider: MakeProvider) -> OpenstackCinderProvider:
    """The provider with backups on."""
    return make_provider(backup_container=CONTAINER)


def test_full_then_incremental_backup_restores_what_was_written(
    backing: OpenstackCinderProvider, admin: Admin, deployment: str, volume_files: VolumeFiles
) -> None:
    provider = backing
    volume_id = admin.create_volume(deployment)
    first, second = os.urandom(64 * 1024), os.urandom(64 * 1024)
    volume_files.write(volume_id, first, 0)
    before = provider.snapshot(
        disk_of(volume_id),
        sample_annotations(deployment=deployment, disk_cid=volume_id, minutes_ago=5),
    )
    started = provider.backup(before.id)
    # Cinder copies on its own: backup() does not wait for it.
    assert (started.state, started.source_snapshot, started.location) == (
        "pending",
        before.id,
        CONTAINER,
    )
    full = completed(provider, started.id)
    assert (full.state, full.source_snapshot) == ("completed", before.id)
    assert full.annotations == before.annotations
    assert admin.backup(full.id)["is_incremental"] is False
    # The driver can copy only a volume's first snapshot (see the module docstring).
    provider.delete(before.id)
    assert admin.gone("snapshot", before.id)

    volume_files.write(volume_id, second, 8 * MIB)
    after = provider.snapshot(
        disk_of(volume_id),
        sample_annotations(deployment=deployment, disk_cid=volume_id, trigger="pre-deploy"),
    )
    incremental = completed(provider, provider.backup(after.id).id)
    raw = admin.backup(incremental.id)
    assert (raw["is_incremental"], raw["snapshot_id"], raw["container"]) == (
        True,
        after.id,
        CONTAINER,
    )
    assert raw["metadata"]["disk-snapshots:trigger"] == "pre-deploy"
    assert raw["metadata"]["disk-snapshots:source_snapshot"] == after.id
    assert raw["metadata"]["disk-snapshots:parent_backup"] == full.id

    assert [b.id for b in provider.backups(Query(deployment=deployment))] == [
        incremental.id,
        full.id,
    ]
    assert provider.get_backup(full.id) == full

    restored = provider.create_disk_from_backup(incremental.id, disk_of(volume_id), {})
    assert (restored.zone, restored.snapshot_id, restored.size_mib) == ("nova", after.id, 1024)
    assert volume_files.read(restored.cid, 0, len(first)) == first
    assert volume_files.read(restored.cid, 8 * MIB, len(second)) == second
    metadata = admin.volume(restored.cid)["metadata"]
    assert metadata["disk-snapshots:source_backup"] == incremental.id
    assert metadata["disk-snapshots:source_snapshot"] == after.id
    assert metadata["disk-snapshots:deployment"] == deployment
    assert "disk-snapshots:parent_backup" not in metadata

    # The incremental one depends on the full one: deleting that releases it (out of the
    # catalog at once), and it goes once the incremental one has gone.
    provider.delete_backup(full.id)
    assert [b.id for b in provider.backups(Query(deployment=deployment))] == [incremental.id]
    assert admin.backup(full.id)["metadata"]["disk-snapshots:released"] == "true"
    with pytest.raises(UnknownBackup, match="was deleted"):
        provider.get_backup(full.id)
    provider.delete_backup(incremental.id)
    # Being deleted is as good as gone for the catalog.
    assert provider.backups(Query(deployment=deployment)) == []
    assert admin.gone("backup", incremental.id)
    assert [leftover.id for leftover in provider.leftovers()] == [full.id]
    assert [leftover.id for leftover in provider.cleanup_leftovers()] == [full.id]
    assert admin.gone("backup", full.id)


def test_a_disk_from_a_snapshot_holds_the_snapshot_not_later_writes(
    provider: OpenstackCinderProvider, admin: Admin, deployment: str, volume_files: VolumeFiles
) -> None:
    """The replace restore's new disk: the promoted leader's snapshot, made for another
    instance, in the zone of that instance's volume (``like``). The test Cinder has one
    zone (nova), so only the zone's being passed on is checked, not a choice between two."""
    promoted = admin.create_volume(deployment)
    written = os.urandom(128 * 1024)
    volume_files.write(promoted, written, MIB)
    taken = provider.snapshot(
        disk_of(promoted), sample_annotations(deployment=deployment, disk_cid=promoted)
    )
    volume_files.write(promoted, b"\xff" * len(written), MIB)  # after the snapshot
    leader = admin.create_volume(deployment, availability_zone="nova")

    labels = {"disk-snapshots:restore_id": "restore-20261202T1800Z-ab12", "note": "x" * 300}
    with pytest.raises(ProviderError, match="Cinder keeps at most 255"):
        provider.create_disk(taken.id, disk_of(leader), labels)
    labels["note"] = "made for the restore of redis-leader/0"
    made = provider.create_disk(taken.id, disk_of(leader), labels)
    assert (made.snapshot_id, made.size_mib, made.zone) == (taken.id, 1024, "nova")
    assert volume_files.read(made.cid, MIB, len(written)) == written
    volume = admin.volume(made.cid)
    assert (volume["status"], volume["availability_zone"], volume["attachments"]) == (
        "available",
        "nova",
        [],
    )
    metadata = volume["metadata"]
    assert metadata["disk-snapshots:source_snapshot"] == taken.id
    assert metadata["disk-snapshots:instance_group"] == "redis-leader"
    assert metadata["disk-snapshots:restore_id"] == "restore-20261202T1800Z-ab12"
    assert metadata["note"] == "made for the restore of redis-leader/0"
    # The first attempt was refused before Cinder was asked: no other volume was made.
    source = json.dumps({"disk-snapshots:source_snapshot": taken.id})
    made_from = admin.call("GET", "/volumes/detail", params={"metadata": source})["volumes"]
    assert [v["id"] for v in made_from] == [made.cid]


def test_backups_that_are_not_ours_are_refused(
    backing: OpenstackCinderProvider, admin: Admin, deployment: str
) -> None:
    provider = backing
    volume_id = admin.create_volume(deployment)
    theirs = admin.call("POST", "/backups", json={"backup": {"volume_id": volume_id}})["backup"]
    admin.wait("backup", theirs["id"], timeout=300)
    with pytest.raises(UnknownBackup, match="not made by disk-snapshots"):
        provider.delete_backup(theirs["id"])
    with pytest.raises(UnknownBackup, match="not made by disk-snapshots"):
        provider.get_backup(theirs["id"])
    with pytest.raises(UnknownBackup, match="not made by disk-snapshots"):
        provider.create_disk_from_backup(theirs["id"], disk_of(volume_id), {})
    assert theirs["id"] not in {b.id for b in provider.backups()}
    with pytest.raises(UnknownBackup, match="does not exist"):
        provider.get_backup("00000000-0000-4000-8000-000000000000")
    # A backup of ours is never chained to theirs, newer though it is: theirs could not
    # be deleted while ours depended on it.
    taken = provider.snapshot(
        disk_of(volume_id), sample_annotations(deployment=deployment, disk_cid=volume_id)
    )
    ours = completed(provider, provider.backup(taken.id).id)
    assert admin.backup(ours.id)["is_incremental"] is False
