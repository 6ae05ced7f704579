"""Credentials through a real Keystone: password and application credential, the service
catalog's block-storage endpoint by region and interface, and clear errors when any of
it is wrong (never carrying a secret)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from disk_snapshots.catalog import Query
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.vm.instance import Disk
from support.annotations import sample_annotations
from support.cinder import Admin
from support.cinder import CinderLocal
from support.cinder import Keystone
from support.cinder import MakeProvider
from support.net import free_port

pytestmark = pytest.mark.cinder


@pytest.fixture(scope="module")
def keystone(cinder_local: CinderLocal) -> Keystone:
    return cinder_local.keystone


@pytest.fixture(scope="module")
def project_admin(cinder_local: CinderLocal, keystone: Keystone) -> Iterator[Admin]:
    """Cinder as seen in the Keystone project the credentials are scoped to."""
    client = Admin(cinder_local, keystone.project_id)
    yield client
    client.close()


def password(keystone: Keystone, **changes: Any) -> dict[str, Any]:
    return {
        "endpoint": "",
        "auth_url": keystone.url,
        "username": "bosh",
        "api_key": keystone.user_password,
        "project": "redis",
        "region": keystone.region,
    } | changes


@pytest.fixture(scope="module")
def application_credential(keystone: Keystone) -> tuple[str, str]:
    """One the user `bosh` makes for itself, as an operator would for the snapshotter."""
    auth = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": "bosh",
                        "domain": {"id": "default"},
                        "password": keystone.user_password,
                    }
                },
            },
            "scope": {"project": {"name": "redis", "domain": {"id": "default"}}},
        }
    }
    with requests.Session() as session:
        session.trust_env = False
        token = session.post(f"{keystone.url}/auth/tokens", json=auth, timeout=30)
        token.raise_for_status()
        made = session.post(
            f"{keystone.url}/users/{keystone.user_id}/application_credentials",
            json={"application_credential": {"name": f"disk-snapshots-{uuid.uuid4().hex[:8]}"}},
            headers={"X-Auth-Token": token.headers["X-Subject-Token"]},
            timeout=30,
        )
        made.raise_for_status()
    credential = made.json()["application_credential"]
    return str(credential["id"]), str(credential["secret"])


def test_password_credentials_find_cinder_in_the_catalog(
    make_provider: MakeProvider,
    keystone: Keystone,
    project_admin: Admin,
    deployment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = make_provider(**password(keystone))
    volume_id = project_admin.create_volume(deployment)
    disk = Disk(cid=volume_id, mount=Path("/var/vcap/store"), hint={})
    with caplog.at_level(logging.DEBUG):
        taken = provider.snapshot(
            disk, sample_annotations(deployment=deployment, disk_cid=volume_id)
        )
    # keystoneauth logs every request at debug level; the password is never in it.
    assert "POST http://127.0.0.1" in caplog.text
    assert keystone.user_password not in caplog.text
    # The catalog's endpoint carries the project Keystone scoped the token to.
    assert project_admin.snapshot(taken.id)["volume_id"] == volume_id
    assert provider.list(Query(deployment=deployment)) == [taken]


def test_an_application_credential_works_too(
    make_provider: MakeProvider,
    keystone: Keystone,
    application_credential: tuple[str, str],
    project_admin: Admin,
    deployment: str,
) -> None:
    credential_id, secret = application_credential
    provider = make_provider(
        endpoint="",
        auth_url=keystone.url,
        application_credential_id=credential_id,
        application_credential_secret=secret,
        interface="internal",
    )
    volume_id = project_admin.create_volume(deployment)
    disk = Disk(cid=volume_id, mount=Path("/var/vcap/store"), hint={})
    taken = provider.snapshot(disk, sample_annotations(deployment=deployment, disk_cid=volume_id))
    assert provider.get(taken.id) == taken


def test_a_wrong_password_is_a_clear_error_without_the_password(
    make_provider: MakeProvider, keystone: Keystone, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-password-0123456789"
    provider = make_provider(**password(keystone, api_key=wrong))
    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as raised:
        provider.list()
    message = str(raised.value)
    assert message == (
        f"listing snapshots: Keystone at {keystone.url} rejected the credentials (HTTP 401); "
        "check provider.openstack.username/api_key/domain/project"
    )
    assert caplog.records, "keystoneauth's debug logging was captured"
    assert wrong not in caplog.text
    assert wrong not in repr(provider)


def test_a_wrong_application_credential_secret_names_those_properties(
    make_provider: MakeProvider, keystone: Keystone, application_credential: tuple[str, str]
) -> None:
    credential_id, _ = application_credential
    provider = make_provider(
        endpoint="",
        auth_url=keystone.url,
        application_credential_id=credential_id,
        application_credential_secret="wrong-secret",
    )
    with pytest.raises(ProviderError, match=r"application_credential_id/application_credential"):
        provider.list()


def test_a_region_without_cinder_is_named(make_provider: MakeProvider, keystone: Keystone) -> None:
    provider = make_provider(**password(keystone, region="RegionTwo"))
    with pytest.raises(ProviderError) as raised:
        provider.list()
    assert "no block-storage (Cinder v3) endpoint for region 'RegionTwo'" in str(raised.value)
    assert "provider.openstack.region/interface" in str(raised.value)


def test_an_unreachable_keystone_is_named(make_provider: MakeProvider, keystone: Keystone) -> None:
    port = free_port()
    provider = make_provider(**password(keystone, auth_url=f"http://127.0.0.1:{port}/v3"))
    with pytest.raises(ProviderError, match=r"listing snapshots.*127\.0\.0\.1"):
        provider.list()
