"""materialize: a temporary volume from a snapshot, attached here, mounted, and always removed.

EC2 is moto's; the kernel side (the NVMe device appearing, mount, umount) is the fake
device seam, because attaching a volume to this machine cannot happen here.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.awsrequest import HTTPHeaders

from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.ebs_volumes import MATERIALIZED_BY_TAG
from disk_snapshots.providers.ebs_volumes import OWNER_TAG
from disk_snapshots.providers.ebs_volumes import RELEASED
from disk_snapshots.providers.ebs_volumes import TEMPORARY_TAG
from disk_snapshots.providers.ebs_volumes import imds_instance_id
from disk_snapshots.providers.ec2 import SOURCE_SNAPSHOT_TAG
from disk_snapshots.providers.ec2 import tags_of
from disk_snapshots.vm.processes import process_token
from support.aws import ZONE
from support.aws import FakeDevices
from support.aws import MakeProvider
from support.aws import World
from support.aws import free_port_url
from support.aws import sample_annotations


def record_calls(provider: AwsEbsProvider) -> list[str]:
    calls: list[str] = []
    provider.client().meta.events.register(
        "before-call.ec2", lambda model, **_: calls.append(model.name)
    )
    return calls


def fail(provider: AwsEbsProvider, operation: str, code: str, times: int = 1) -> None:
    """Make the next ``times`` calls of ``operation`` fail with ``code``, as EC2 would answer."""
    left = [times]

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if left[0] <= 0:
            return None
        left[0] -= 1
        response = AWSResponse("http://ec2", 400, HTTPHeaders(), None)
        return response, {"Error": {"Code": code, "Message": f"injected {code}"}}

    # Handlers of before-call may answer in the request's place; the stubs say None.
    handler: Any = answer
    provider.client().meta.events.register(f"before-call.ec2.{operation}", handler)


def temporary_volumes(ec2: Any) -> list[dict[str, Any]]:
    found = ec2.describe_volumes(Filters=[{"Name": f"tag:{TEMPORARY_TAG}", "Values": ["true"]}])
    return list(found["Volumes"])


@pytest.fixture
def snapshot_id(provider: AwsEbsProvider, world: World) -> str:
    return provider.snapshot(world.disk, sample_annotations(disk_cid=world.volume_id)).id


def test_materialize_api_sequence_and_cleanup(
    provider: AwsEbsProvider, world: World, ec2: Any, devices: FakeDevices, snapshot_id: str
) -> None:
    calls = record_calls(provider)
    with provider.materialize(snapshot_id, "z1") as mounted:
        during = calls[:]
        volumes = temporary_volumes(ec2)
        assert len(volumes) == 1
        volume = volumes[0]
        tags = {t["Key"]: t["Value"] for t in volume["Tags"]}
        assert tags[TEMPORARY_TAG] == "true"
        assert tags[SOURCE_SNAPSHOT_TAG] == snapshot_id
        assert tags[MATERIALIZED_BY_TAG] == world.instance_id
        assert tags[OWNER_TAG] == process_token()
        assert volume["SnapshotId"] == snapshot_id
        assert volume["AvailabilityZone"] == ZONE
        assert volume["Attachments"][0]["InstanceId"] == world.instance_id
        assert volume["Attachments"][0]["Device"] == "/dev/sdf"  # sda1, sdb are taken
        assert mounted.is_dir()
        assert mounted in devices.mounted

    assert during == [
        "DescribeSnapshots",
        "DescribeVolumes",  # what a killed materialize left goes first
        "DescribeInstances",
        "CreateVolume",
        "DescribeVolumes",
        "AttachVolume",
        "DescribeVolumes",
    ]
    assert calls[len(during) :] == ["DetachVolume", "DescribeVolumes", "DeleteVolume"]
    volume_id = volume["VolumeId"]
    assert devices.calls == [
        ("find", volume_id, "/dev/sdf"),
        ("mount", "/dev/nvme9n1", str(mounted)),
        ("unmount", str(mounted)),
    ]
    assert not mounted.exists()
    assert temporary_volumes(ec2) == []
    # The persistent disk itself is untouched.
    assert ec2.describe_volumes(VolumeIds=[world.volume_id])["Volumes"][0]["State"] == "in-use"


def test_an_error_inside_the_block_still_cleans_up_and_propagates(
    provider: AwsEbsProvider, ec2: Any, devices: FakeDevices, snapshot_id: str
) -> None:
    with pytest.raises(RuntimeError, match="copy failed"), provider.materialize(snapshot_id):
        raise RuntimeError("copy failed")
    assert devices.mounted == set()
    assert temporary_volumes(ec2) == []


@pytest.mark.parametrize("step", ["find", "mount"])
def test_device_failures_detach_and_delete_the_volume(
    provider: AwsEbsProvider, ec2: Any, devices: FakeDevices, snapshot_id: str, step: str
) -> None:
    devices.fail_on = step
    expected = {"find": "no block device", "mount": "mount .* failed"}[step]
    with pytest.raises(ProviderError, match=expected), provider.materialize(snapshot_id):
        pytest.fail("the block must not run without a mount")
    assert temporary_volumes(ec2) == []
    assert ("unmount",) not in [c[:1] for c in devices.calls]


def test_attach_failure_deletes_the_volume(
    provider: AwsEbsProvider, ec2: Any, snapshot_id: str
) -> None:
    fail(provider, "AttachVolume", "InvalidParameterValue")
    calls = record_calls(provider)
    with (
        pytest.raises(ProviderError, match=r"AttachVolume .* InvalidParameterValue"),
        provider.materialize(snapshot_id),
    ):
        pytest.fail("not attached")
    assert calls[-1] == "DeleteVolume"
    assert "DetachVolume" not in calls
    assert temporary_volumes(ec2) == []


def test_a_failed_detach_leaves_a_released_volume_that_cleanup_leftovers_removes(
    provider: AwsEbsProvider, ec2: Any, snapshot_id: str
) -> None:
    fail(provider, "DetachVolume", "IncorrectState")
    with (
        pytest.raises(ProviderError, match=r"left behind.*cleanup_leftovers"),
        provider.materialize(snapshot_id),
    ):
        pass
    (volume,) = temporary_volumes(ec2)
    assert tags_of(volume)[OWNER_TAG] == RELEASED  # this process lives, but let it go

    listed = provider.leftovers()
    assert [v.id for v in listed] == [volume["VolumeId"]]
    assert [v["VolumeId"] for v in temporary_volumes(ec2)] == [volume["VolumeId"]]  # unchanged
    assert [v.id for v in provider.cleanup_leftovers()] == [volume["VolumeId"]]
    assert temporary_volumes(ec2) == []


def test_the_block_error_wins_over_a_cleanup_error(
    provider: AwsEbsProvider,
    ec2: Any,
    snapshot_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fail(provider, "DetachVolume", "IncorrectState")
    with pytest.raises(RuntimeError, match="copy failed"), provider.materialize(snapshot_id):
        raise RuntimeError("copy failed")
    assert "IncorrectState" in caplog.text  # logged, not lost
    assert provider.cleanup_leftovers()


def test_a_busy_mount_is_left_attached_then_unmounted_by_cleanup(
    provider: AwsEbsProvider, ec2: Any, devices: FakeDevices, snapshot_id: str
) -> None:
    devices.fail_on = "unmount"
    with (
        pytest.raises(ProviderError, match=r"target is busy.*left attached"),
        provider.materialize(snapshot_id),
    ):
        pass
    (volume,) = temporary_volumes(ec2)
    assert volume["State"] == "in-use"  # never detached while mounted

    devices.fail_on = ""
    assert [v.id for v in provider.cleanup_leftovers()] == [volume["VolumeId"]]
    assert devices.mounted == set()
    assert temporary_volumes(ec2) == []


def test_an_ec2_zone_other_than_the_instances_is_refused(
    provider: AwsEbsProvider, ec2: Any, snapshot_id: str
) -> None:
    with (
        pytest.raises(ProviderError, match=r"eu-west-1b.*instance .* is in eu-west-1a"),
        provider.materialize(snapshot_id, "eu-west-1b"),
    ):
        pass
    assert temporary_volumes(ec2) == []


def test_cleanup_leftovers_leaves_other_instances_volumes(
    provider: AwsEbsProvider, ec2: Any, snapshot_id: str
) -> None:
    theirs = ec2.create_volume(
        AvailabilityZone=ZONE,
        SnapshotId=snapshot_id,
        TagSpecifications=[
            {
                "ResourceType": "volume",
                "Tags": [
                    {"Key": TEMPORARY_TAG, "Value": "true"},
                    {"Key": MATERIALIZED_BY_TAG, "Value": "i-0fffffffffffffff0"},
                ],
            }
        ],
    )
    assert provider.cleanup_leftovers(min_age=timedelta(0)) == []
    assert ec2.describe_volumes(VolumeIds=[theirs["VolumeId"]])["Volumes"]


def _temporary(ec2: Any, snapshot_id: str, instance_id: str, owner: str | None) -> str:
    tags = [
        {"Key": TEMPORARY_TAG, "Value": "true"},
        {"Key": MATERIALIZED_BY_TAG, "Value": instance_id},
        {"Key": SOURCE_SNAPSHOT_TAG, "Value": snapshot_id},
    ]
    if owner is not None:
        tags.append({"Key": OWNER_TAG, "Value": owner})
    made = ec2.create_volume(
        AvailabilityZone=ZONE,
        SnapshotId=snapshot_id,
        TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
    )
    return str(made["VolumeId"])


def test_a_volume_is_left_behind_once_the_process_that_made_it_is_gone(
    provider: AwsEbsProvider, ec2: Any, world: World, snapshot_id: str
) -> None:
    gone = subprocess.Popen(["true"])
    dead = process_token(gone.pid)
    gone.wait()
    in_use = _temporary(ec2, snapshot_id, world.instance_id, process_token())
    killed = _temporary(ec2, snapshot_id, world.instance_id, dead)
    old_release = _temporary(ec2, snapshot_id, world.instance_id, None)
    # A volume that names no process is spared for a while: it may still be in use.
    assert [v.id for v in provider.leftovers()] == [killed]
    assert {v.id for v in provider.leftovers(min_age=timedelta(0))} == {killed, old_release}
    # The next materialize releases the killed one before it makes its own.
    with provider.materialize(snapshot_id):
        left = {v["VolumeId"] for v in temporary_volumes(ec2)}
        assert killed not in left and {in_use, old_release} <= left
    assert {v["VolumeId"] for v in temporary_volumes(ec2)} == {in_use, old_release}


# -- the instance id from IMDSv2 ------------------------------------------------------


class _Imds(BaseHTTPRequestHandler):
    token = "token-1234"
    instance_id = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:
        if self.path != "/latest/api/token" or not self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self.send_error(400)
            return
        self._send(self.token)

    def do_GET(self) -> None:
        # IMDSv2 only: a request without the session token is refused, as with
        # HttpTokens=required.
        if self.headers.get("X-aws-ec2-metadata-token") != self.token:
            self.send_error(401)
            return
        if self.path != "/latest/meta-data/instance-id":
            self.send_error(404)
            return
        self._send(self.instance_id)

    def _send(self, text: str) -> None:
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def serve_imds() -> Iterator[Callable[[str], str]]:
    """Start a stand-in metadata service answering ``instance_id``; returns its URL."""
    servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def serve(instance_id: str) -> str:
        handler = type("Imds", (_Imds,), {"instance_id": instance_id})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


def test_instance_id_from_imdsv2(
    make_provider: MakeProvider, world: World, serve_imds: Callable[[str], str], ec2: Any
) -> None:
    provider = make_provider(instance_id="", metadata_endpoint=serve_imds(world.instance_id))
    snapshot_id = provider.snapshot(world.disk, sample_annotations()).id
    with provider.materialize(snapshot_id):
        (volume,) = temporary_volumes(ec2)
        assert volume["Attachments"][0]["InstanceId"] == world.instance_id
    assert provider.instance_id() == world.instance_id


def test_unreachable_imds_says_how_to_do_without() -> None:
    with pytest.raises(ProviderError, match=r"set provider\.aws\.instance_id"):
        imds_instance_id(free_port_url(), timeout=0.5)


def test_imds_answer_is_validated(serve_imds: Callable[[str], str]) -> None:
    with pytest.raises(ProviderError, match="not an instance id"):
        imds_instance_id(serve_imds("<html>captive portal</html>"))
