"""The openstack-cinder provider against a real Cinder: one per session, from
scripts/cinder-local (CINDER_LOCAL_ENV when scripts/test started it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.openstack_settings import OpenstackSettings
from disk_snapshots.providers.openstack_cinder import OpenstackCinderProvider
from support.cinder import Admin
from support.cinder import CinderLocal
from support.cinder import MakeProvider
from support.cinder import VolumeFiles
from support.cinder import for_this_session
from support.cinder import noauth_settings


@pytest.fixture(scope="session")
def cinder_local() -> Iterator[CinderLocal]:
    with for_this_session() as cinder:
        yield cinder


@pytest.fixture(scope="session")
def admin(cinder_local: CinderLocal) -> Iterator[Admin]:
    client = Admin(cinder_local)
    yield client
    client.close()


@pytest.fixture
def deployment() -> str:
    """A deployment name of this test's own: one Cinder serves every test."""
    return f"dep-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def volume_files(cinder_local: CinderLocal, tmp_path: Path) -> VolumeFiles:
    return VolumeFiles(cinder_local, tmp_path)


@pytest.fixture
def make_provider(cinder_local: CinderLocal) -> Iterator[MakeProvider]:
    made: list[OpenstackCinderProvider] = []
    names = OpenstackSettings.__dataclass_fields__

    def make(**overrides: Any) -> OpenstackCinderProvider:
        settings = {k: overrides.pop(k) for k in list(overrides) if k in names}
        settings.setdefault("endpoint", cinder_local.endpoint)
        options: dict[str, Any] = {
            "poll_interval": 0.1,
            "retry_delays": (0.05, 0.1, 0.2),
            "snapshot_timeout": 120.0,
            "volume_timeout": 300.0,
        }
        provider = OpenstackCinderProvider(noauth_settings(**settings), **(options | overrides))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture
def provider(make_provider: MakeProvider) -> OpenstackCinderProvider:
    return make_provider()


@pytest.fixture
def consistent_group_type(admin: Admin) -> str:
    return admin.create_group_type()
