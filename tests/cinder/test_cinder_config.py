"""provider.openstack.* in the config loader, and the provider's pure decisions (no Cinder)."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.catalog import Query
from disk_snapshots.config import ConfigError
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.cinder_backups import backup_record
from disk_snapshots.providers.cinder_backups import incremental_parent
from disk_snapshots.providers.cinder_metadata import COMPLETED_KEY
from disk_snapshots.providers.cinder_metadata import MARKER_KEY
from disk_snapshots.providers.cinder_metadata import PARENT_BACKUP_KEY
from disk_snapshots.providers.cinder_metadata import RELEASED_KEY
from disk_snapshots.providers.cinder_metadata import check_uuid
from disk_snapshots.providers.cinder_metadata import cinder_volume_id
from disk_snapshots.providers.cinder_metadata import is_ours
from disk_snapshots.providers.cinder_metadata import metadata_filter
from disk_snapshots.providers.cinder_metadata import metadata_of
from disk_snapshots.providers.cinder_metadata import state_of
from disk_snapshots.vm.instance import Disk
from support.annotations import sample_annotations
from support.configdocs import snapshotter_doc

VOLUME = "3f2a4b5c-6d7e-4f80-9a1b-2c3d4e5f6a7b"


def openstack_doc(**openstack: Any) -> dict[str, Any]:
    doc = snapshotter_doc()
    doc["properties"]["provider"]["type"] = "openstack-cinder"
    doc["properties"]["provider"]["openstack"].update(openstack)
    return doc


def problems_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_snapshotter_config(doc)
    return list(caught.value.problems)


def test_password_credentials() -> None:
    config = load_snapshotter_config(
        openstack_doc(
            auth_url="https://keystone.example.com:5000/v3",
            username="bosh",
            api_key="s3cret",
            project="redis",
        )
    )
    settings = config.provider.openstack
    assert config.provider.type == "openstack-cinder"
    assert (settings.domain, settings.interface, settings.insecure) == ("Default", "public", False)
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(config)


def test_application_credential() -> None:
    config = load_snapshotter_config(
        openstack_doc(
            auth_url="https://keystone.example.com:5000/v3",
            application_credential_id="abc",
            application_credential_secret="t0ps3cret",
            region="RegionOne",
            interface="internal",
        )
    )
    assert config.provider.openstack.region == "RegionOne"
    assert "t0ps3cret" not in repr(config.provider)


@pytest.mark.parametrize(
    ("openstack", "problem"),
    [
        ({}, "snapshotter.provider.openstack.auth_url: required when provider.type is"),
        (
            {"auth_url": "https://k/v3", "username": "u"},
            "snapshotter.provider.openstack: set username, api_key and project",
        ),
        (
            {"auth_url": "https://k/v3", "application_credential_id": "x"},
            "snapshotter.provider.openstack: set both application_credential_id and",
        ),
        (
            {
                "auth_url": "https://k/v3",
                "username": "u",
                "api_key": "p",
                "project": "x",
                "application_credential_id": "a",
                "application_credential_secret": "s",
            },
            "snapshotter.provider.openstack: set username/api_key/project or",
        ),
        (
            {"endpoint": "http://cinder:8776/v3/x", "username": "u"},
            "snapshotter.provider.openstack.auth_url: required with credentials",
        ),
        (
            {"auth_url": "keystone:5000"},
            'snapshotter.provider.openstack.auth_url: "keystone:5000" is not an http',
        ),
        (
            {"auth_url": "https://k/v3", "interface": "private"},
            'snapshotter.provider.openstack.interface: "private" is not allowed; allowed: '
            "public, internal, admin",
        ),
        (
            {"endpoint": "http://c/v3/x", "ca_cert": "not a pem"},
            'snapshotter.provider.openstack.ca_cert: "not a pem" is not a PEM certificate',
        ),
        (
            {"endpoint": "http://c/v3/x", "insecure": "yes"},
            "snapshotter.provider.openstack.insecure: expected true or false",
        ),
    ],
)
def test_bad_openstack_properties_are_named(openstack: dict[str, Any], problem: str) -> None:
    problems = problems_of(openstack_doc(**openstack))
    assert any(p.startswith(problem) for p in problems), problems


def test_backups_go_to_the_container_named() -> None:
    keystone = {
        "auth_url": "https://keystone.example.com:5000/v3",
        "application_credential_id": "0123abcd",
        "application_credential_secret": "s3cret",
    }
    off = load_snapshotter_config(openstack_doc(**keystone))
    assert off.provider.openstack.backup_container == ""
    doc = openstack_doc(**keystone, backup_container="disk-snapshots")
    doc["properties"]["backups"] = {"cron": "15 3 * * *"}
    config = load_snapshotter_config(doc)
    assert config.provider.openstack.backup_container == "disk-snapshots"
    assert config.backups.cron == "15 3 * * *"
    del doc["properties"]["provider"]["openstack"]["backup_container"]
    assert problems_of(doc) == [
        "snapshotter.provider.openstack.backup_container: required when backups.cron is set "
        "(backups need somewhere to go)"
    ]


def test_openstack_properties_are_not_required_for_other_providers() -> None:
    config = load_snapshotter_config(snapshotter_doc())
    assert config.provider.type == "loopback"
    assert config.provider.openstack.auth_url == ""


def test_the_volume_is_the_cid_or_the_agents_hint() -> None:
    assert cinder_volume_id(Disk(cid=VOLUME, mount=Path("/s"), hint={"path": "/dev/vdc"})) == VOLUME
    hinted = Disk(cid="disk-1", mount=Path("/s"), hint={"volume_id": VOLUME})
    assert cinder_volume_id(hinted) == VOLUME
    with pytest.raises(ProviderError, match="disk disk-1 has no Cinder volume id"):
        cinder_volume_id(Disk(cid="disk-1", mount=Path("/s"), hint={"volume_id": "3"}))


def test_ids_are_checked_before_they_reach_a_url() -> None:
    assert check_uuid(VOLUME, "volume") == VOLUME
    with pytest.raises(UnknownSnapshot):
        check_uuid("../../os-services")
    with pytest.raises(UnknownBackup, match="not a Cinder backup id"):
        check_uuid(VOLUME.upper(), "backup")


def test_metadata_is_the_annotations_with_our_marker() -> None:
    annotations = sample_annotations(note="n" * 255)
    metadata = metadata_of(annotations)
    assert metadata[MARKER_KEY] == "openstack-cinder"
    assert is_ours(metadata)
    assert not is_ours({k: v for k, v in metadata.items() if k != MARKER_KEY})
    assert all(len(v) <= 255 for v in metadata.values())
    long_reason = annotations.with_set_state("incomplete", "r" * 256)
    # The annotations already keep a reason to what every provider's tags hold.
    assert metadata_of(long_reason)["disk-snapshots:set_reason"] == "r" * 255


def test_the_list_filter_names_only_what_cinder_matches_exactly() -> None:
    query = Query(deployment="redis", instance="redis-leader/0", trigger="manual")
    assert metadata_filter(query) == {
        MARKER_KEY: "openstack-cinder",
        "disk-snapshots:deployment": "redis",
        "disk-snapshots:trigger": "manual",
    }


def test_cinder_statuses() -> None:
    assert [state_of(s) for s in ("creating", "available", "backing-up", "error", "deleting")] == [
        "pending",
        "completed",
        "completed",
        "error",
        "error",
    ]


OURS = {MARKER_KEY: "openstack-cinder", "disk-snapshots:schema": "1"}
SNAPSHOT = {"id": VOLUME, "created_at": "2026-12-01T12:00:00.000000"}


def raw_backup(
    backup_id: str, when: str, *, incremental: bool = False, parent: str = "", **extra: Any
) -> dict[str, Any]:
    metadata = dict(OURS) | ({PARENT_BACKUP_KEY: parent} if parent else {})
    return {
        "id": backup_id,
        "status": "available",
        "container": "c",
        "data_timestamp": f"2026-12-01T{when}:00.000000",
        "is_incremental": incremental,
        "metadata": metadata,
    } | extra


def test_a_backup_is_incremental_only_onto_a_whole_chain_of_ours() -> None:
    full = raw_backup("a", "08:00")
    inc = raw_backup("b", "09:00", incremental=True, parent="a")
    assert incremental_parent([full], SNAPSHOT, "c") == "a"
    assert incremental_parent([full, inc], SNAPSHOT, "c") == "b"
    # Cinder chains to the newest data before the snapshot, so that decides.
    later = raw_backup("z", "13:00")
    assert incremental_parent([full, inc, later], SNAPSHOT, "c") == "b"
    # Full instead: Cinder's parent would be another container's, failed, not ours, ...
    assert incremental_parent([full], SNAPSHOT, "other") is None
    assert incremental_parent([raw_backup("a", "08:00", status="error")], SNAPSHOT, "c") is None
    assert incremental_parent([raw_backup("a", "08:00", metadata={})], SNAPSHOT, "c") is None
    # ... or its chain lost a backup to retention (released), or the chain is unknown.
    released = raw_backup("a", "08:00", metadata=OURS | {RELEASED_KEY: "true"})
    assert incremental_parent([released, inc], SNAPSHOT, "c") is None
    assert incremental_parent([inc], SNAPSHOT, "c") is None
    unrecorded = raw_backup("b", "09:00", incremental=True)
    assert incremental_parent([full, unrecorded], SNAPSHOT, "c") is None
    # Two with the same data (two backups of one snapshot): Cinder's pick is its own.
    assert incremental_parent([full, raw_backup("a2", "08:00")], SNAPSHOT, "c") is None
    assert incremental_parent([], SNAPSHOT, "c") is None


def test_a_cinder_backup_as_the_catalog_shows_it() -> None:
    annotations = sample_annotations()
    raw = {
        "id": VOLUME,
        "status": "error",
        "container": "c",
        "size": 2,
        "created_at": "2026-12-01T12:00:01.000000",
        "updated_at": "2026-12-01T12:05:00.000000",
        "fail_reason": "[Errno 28] No space left on device",
        "snapshot_id": VOLUME,
        "metadata": metadata_of(annotations) | {"disk-snapshots:source_snapshot": VOLUME},
    }
    failed = backup_record(raw)
    assert (failed.state, failed.detail, failed.location, failed.source_snapshot) == (
        "error",
        "[Errno 28] No space left on device",
        "c",
        VOLUME,
    )
    assert failed.annotations == annotations and failed.size_bytes == 2 << 30
    assert failed.completed_at is None
    done = backup_record(raw | {"status": "available"})
    assert (done.state, done.detail) == ("completed", "")
    assert done.completed_at == datetime(2026, 12, 1, 12, 5, tzinfo=UTC)
    stamped = dict(raw["metadata"]) | {COMPLETED_KEY: "2026-12-01T12:04:00.000000Z"}
    done = backup_record(raw | {"status": "available", "metadata": stamped})
    assert done.completed_at == datetime(2026, 12, 1, 12, 4, tzinfo=UTC)
    assert backup_record(raw | {"status": "creating"}).state == "pending"
    with pytest.raises(UnknownBackup, match="not a Cinder backup id"):
        check_uuid("bkp-1", "backup")
