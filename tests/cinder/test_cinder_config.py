"""provider.openstack.* in the config loader, and the provider's pure decisions (no Cinder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.catalog import Query
from disk_snapshots.config import ConfigError
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.cinder_metadata import MARKER_KEY
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
    with pytest.raises(ProviderError, match="not a Cinder backup id"):
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
