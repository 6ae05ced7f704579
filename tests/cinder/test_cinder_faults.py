"""A Cinder that answers 500 or does not answer: retried where that is safe, then one
clear error; a create whose answer was lost is found instead of made twice."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from disk_snapshots.catalog import Query
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.openstack_cinder import OpenstackCinderProvider
from disk_snapshots.vm.instance import Disk
from support.annotations import sample_annotations
from support.cinder import Admin
from support.cinder import CinderLocal
from support.cinder import MakeProvider
from support.fault_proxy import FaultProxy
from support.fault_proxy import Rule
from support.fault_proxy import fault_proxy
from support.net import free_port

pytestmark = pytest.mark.cinder


@pytest.fixture
def proxied(cinder_local: CinderLocal) -> Iterator[tuple[FaultProxy, str]]:
    """The proxy, and the Cinder endpoint as seen through it."""
    parts = urlsplit(cinder_local.endpoint)
    with fault_proxy(f"{parts.scheme}://{parts.netloc}") as (proxy, base):
        yield proxy, base + parts.path


def disk_of(volume_id: str) -> Disk:
    return Disk(cid=volume_id, mount=Path("/var/vcap/store"), hint={})


def snapshots_of(admin: Admin, volume_id: str) -> list[str]:
    found = admin.call("GET", "/snapshots/detail", params={"volume_id": volume_id})
    return [s["id"] for s in found["snapshots"] if s["status"] != "deleting"]


def test_a_500_on_a_read_is_retried(
    make_provider: MakeProvider,
    proxied: tuple[FaultProxy, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy, endpoint = proxied
    provider = make_provider(endpoint=endpoint)
    proxy.add(Rule("GET", r"/snapshots/detail", times=2, status=500))
    with caplog.at_level(logging.WARNING):
        assert provider.list(Query(deployment="nobody")) == []
    assert proxy.count("GET", r"/snapshots/detail") == 3
    assert caplog.text.count("listing snapshots: HTTP 500: injected; retrying") == 2


def test_a_cinder_that_keeps_failing_gives_one_clear_error(
    make_provider: MakeProvider, proxied: tuple[FaultProxy, str]
) -> None:
    proxy, endpoint = proxied
    provider = make_provider(endpoint=endpoint, attempts=3)
    proxy.add(Rule("GET", r"/snapshots/detail", times=99, status=500))
    with pytest.raises(ProviderError) as raised:
        provider.list()
    assert str(raised.value) == "listing snapshots failed after 3 attempts: HTTP 500: injected"
    assert proxy.count("GET", r"/snapshots/detail") == 3


def test_a_cinder_that_does_not_answer_times_out_and_is_retried(
    make_provider: MakeProvider, proxied: tuple[FaultProxy, str], admin: Admin, deployment: str
) -> None:
    proxy, endpoint = proxied
    provider = make_provider(endpoint=endpoint, timeout=1.0, attempts=3)
    volume_id = admin.create_volume(deployment)
    provider.prepare(disk_of(volume_id))  # authenticated, discovered, warm
    proxy.add(Rule("GET", rf"/volumes/{volume_id}", times=1, delay=3.0))
    provider.prepare(disk_of(volume_id))
    assert proxy.count("GET", rf"/volumes/{volume_id}") == 3

    proxy.add(Rule("GET", rf"/volumes/{volume_id}", times=99, delay=1.5))
    with pytest.raises(ProviderError) as raised:
        provider.prepare(disk_of(volume_id))
    message = str(raised.value)
    assert message.startswith(f"reading volume {volume_id} failed after 3 attempts: ")
    assert "no answer within 1s" in message


def test_a_create_whose_answer_was_lost_is_found_not_made_twice(
    make_provider: MakeProvider,
    proxied: tuple[FaultProxy, str],
    admin: Admin,
    deployment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy, endpoint = proxied
    provider = make_provider(endpoint=endpoint)
    volume_id = admin.create_volume(deployment)
    # Cinder makes the snapshot, but the client sees a 500.
    proxy.add(Rule("POST", r"/snapshots$", times=1, status=500, forward=True))
    with caplog.at_level(logging.WARNING):
        taken = provider.snapshot(
            disk_of(volume_id), sample_annotations(deployment=deployment, disk_cid=volume_id)
        )
    assert proxy.count("POST", r"/snapshots$") == 1
    assert snapshots_of(admin, volume_id) == [taken.id]
    assert "the answer was lost, but snapshot" in caplog.text


def test_a_create_that_failed_is_not_repeated_and_says_nothing_was_taken(
    make_provider: MakeProvider, proxied: tuple[FaultProxy, str], admin: Admin, deployment: str
) -> None:
    proxy, endpoint = proxied
    provider = make_provider(endpoint=endpoint)
    volume_id = admin.create_volume(deployment)
    proxy.add(Rule("POST", r"/snapshots$", times=1, status=500))
    with pytest.raises(ProviderError) as raised:
        provider.snapshot(
            disk_of(volume_id), sample_annotations(deployment=deployment, disk_cid=volume_id)
        )
    assert str(raised.value) == (
        f"creating a snapshot of volume {volume_id} failed: HTTP 500: injected; "
        f"no snapshot of {volume_id} was taken"
    )
    assert proxy.count("POST", r"/snapshots$") == 1
    assert snapshots_of(admin, volume_id) == []


def test_a_busy_cinder_503_is_retried_even_for_a_create(
    make_provider: MakeProvider, proxied: tuple[FaultProxy, str], admin: Admin, deployment: str
) -> None:
    proxy, endpoint = proxied
    provider = make_provider(endpoint=endpoint)
    volume_id = admin.create_volume(deployment)
    proxy.add(Rule("POST", r"/snapshots$", times=2, status=503))
    taken = provider.snapshot(
        disk_of(volume_id), sample_annotations(deployment=deployment, disk_cid=volume_id)
    )
    assert proxy.count("POST", r"/snapshots$") == 3
    assert snapshots_of(admin, volume_id) == [taken.id]


def test_an_endpoint_nobody_listens_on_is_named(make_provider: MakeProvider) -> None:
    port = free_port()
    provider: OpenstackCinderProvider = make_provider(
        endpoint=f"http://127.0.0.1:{port}/v3/0123456789abcdef0123456789abcdef", attempts=2
    )
    with pytest.raises(ProviderError) as raised:
        provider.list()
    message = str(raised.value)
    assert message.startswith("listing snapshots failed after 2 attempts: cannot connect"), message


def test_a_token_cinder_rejects_names_the_credentials(
    make_provider: MakeProvider, proxied: tuple[FaultProxy, str]
) -> None:
    proxy, endpoint = proxied
    provider = make_provider(endpoint=endpoint)
    proxy.add(Rule("GET", r"/snapshots/detail", times=1, status=401))
    with pytest.raises(ProviderError, match=r"Cinder rejected the token .*provider\.openstack"):
        provider.list()
