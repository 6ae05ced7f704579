"""Credentials and limits: bad keys, secrets kept out of messages and logs, throttling."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.awsrequest import HTTPHeaders

from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.providers.base import ProviderError
from support.aws import SECRET
from support.aws import MakeProvider
from support.aws import World
from support.aws import free_port_url
from support.aws import sample_annotations
from support.aws import settings
from support.moto import moto_server


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def ec2_error(code: str) -> AWSResponse:
    body = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>injected</Message></Error>"
        "</Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
    ).encode()
    # EC2 answers throttling with 503, other client errors with 400.
    status = 503 if code == "RequestLimitExceeded" else 400
    return AWSResponse("https://ec2.test/", status, HTTPHeaders(), _Body(body))


def answer_with(provider: AwsEbsProvider, operation: str, code: str, times: int) -> list[int]:
    """The first ``times`` sends of ``operation`` get ``code`` back instead of reaching
    moto; registered on before-send so that botocore's retry handler sees them."""
    sends = [0]

    def send(**_: Any) -> AWSResponse | None:
        sends[0] += 1
        return ec2_error(code) if sends[0] <= times else None

    # Handlers of before-send may answer in the server's place; the stubs say None.
    handler: Any = send
    provider.client().meta.events.register(f"before-send.ec2.{operation}", handler)
    return sends


@pytest.fixture(scope="module")
def strict_moto() -> Iterator[str]:
    """A second moto server that authenticates every request (moto's IAM auth mode)."""
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as url:
        yield url


def test_bad_credentials_give_a_clear_error_without_the_secret(
    strict_moto: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider = AwsEbsProvider(settings(strict_moto), poll_interval=0)
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as raised:
            provider.list()
    finally:
        provider.close()
    message = str(raised.value)
    assert "rejected the credentials" in message
    assert "access_key_id/secret_access_key" in message
    assert SECRET not in message
    assert caplog.records, "botocore's debug logging was captured"
    assert SECRET not in caplog.text
    assert SECRET not in repr(provider)


def test_unreachable_endpoint_is_a_provider_error(make_provider: MakeProvider) -> None:
    provider = make_provider(endpoint=free_port_url(), max_attempts=1)
    with pytest.raises(ProviderError, match="DescribeSnapshots failed in eu-west-1"):
        provider.list()


def test_throttling_is_retried_with_backoff(
    provider: AwsEbsProvider, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    sends = answer_with(provider, "CreateSnapshot", "RequestLimitExceeded", times=2)
    taken = provider.snapshot(world.disk, sample_annotations())
    assert sends == [3]
    assert provider.get(taken.id).id == taken.id


def test_persistent_throttling_names_the_volume(
    make_provider: MakeProvider, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    provider = make_provider(instance_id=world.instance_id, max_attempts=2)
    sends = answer_with(provider, "CreateSnapshot", "RequestLimitExceeded", times=99)
    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as raised:
        provider.snapshot(world.disk, sample_annotations())
    assert sends == [2]
    message = str(raised.value)
    assert f"CreateSnapshot of {world.volume_id}" in message
    assert "kept throttling (RequestLimitExceeded) after 2 attempts" in message
    assert SECRET not in caplog.text


def test_per_volume_rate_limit_is_retried(
    provider: AwsEbsProvider, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    sends = answer_with(provider, "CreateSnapshot", "SnapshotCreationPerVolumeRateExceeded", 2)
    with caplog.at_level(logging.WARNING):
        provider.snapshot(world.disk, sample_annotations())
    assert sends == [3]
    assert caplog.text.count("SnapshotCreationPerVolumeRateExceeded, retrying") == 2


def test_persistent_per_volume_rate_limit_is_reported(
    provider: AwsEbsProvider, world: World
) -> None:
    sends = answer_with(provider, "CreateSnapshot", "SnapshotCreationPerVolumeRateExceeded", 99)
    with pytest.raises(ProviderError, match=f"no snapshot of {world.volume_id} was taken"):
        provider.snapshot(world.disk, sample_annotations())
    assert sends == [3]  # rate_limit_delays has two entries: three attempts
    assert provider.list() == []


def test_permission_denied_says_what_is_missing(provider: AwsEbsProvider, world: World) -> None:
    answer_with(provider, "CreateSnapshot", "UnauthorizedOperation", 1)
    with pytest.raises(ProviderError, match="lack permission"):
        provider.snapshot(world.disk, sample_annotations())


def test_prepare_checks_the_volume_before_the_freeze(
    provider: AwsEbsProvider, world: World
) -> None:
    provider.prepare(world.disk)
    missing = replace(world.disk, cid="vol-0123456789abcdef0")
    with pytest.raises(ProviderError, match="vol-0123456789abcdef0"):
        provider.prepare(missing)
