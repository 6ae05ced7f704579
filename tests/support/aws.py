"""Shared helpers for the aws-ebs tests and benchmark (fixtures live in tests/aws/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import Any

from disk_snapshots.config import AwsSettings
from disk_snapshots.providers.aws_ebs import AwsEbsProvider
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.vm.instance import Disk
from support.annotations import sample_annotations  # noqa: F401 - the aws tests import it here
from support.net import free_port

REGION = "eu-west-1"
BACKUP_REGION = "eu-central-1"
ZONE = "eu-west-1a"
# Never a real key; the tests check it never shows up in messages or logs.
SECRET = "tEsTsEcReT/never-in-logs+0123456789abcdefXYZ"

# make_provider(**AwsSettings fields and AwsEbsProvider options) -> a provider closed at teardown
MakeProvider = Callable[..., AwsEbsProvider]


def free_port_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class World:
    instance_id: str
    volume_id: str
    disk: Disk


def settings(endpoint: str, **overrides: str) -> AwsSettings:
    base = AwsSettings(
        region=REGION,
        endpoint=endpoint,
        access_key_id="AKIDTESTING",
        secret_access_key=SECRET,
        kms_key_id="",
        backup_region=BACKUP_REGION,
        instance_id="",
    )
    return replace(base, **overrides)


@dataclass
class FakeDevices:
    """The device seam without a kernel: records what materialize asked of it."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    fail_on: str = ""  # "find", "mount" or "unmount"
    mounted: set[Path] = field(default_factory=set)

    def find(self, volume_id: str, requested_name: str, timeout: float) -> Path:
        self.calls.append(("find", volume_id, requested_name))
        if self.fail_on == "find":
            raise ProviderError(f"no block device for {volume_id}")
        return Path("/dev/nvme9n1")

    def mount_readonly(self, device: Path, mountpoint: Path) -> None:
        self.calls.append(("mount", str(device), str(mountpoint)))
        if self.fail_on == "mount":
            raise ProviderError(f"mount {device} failed")
        self.mounted.add(mountpoint)

    def unmount(self, mountpoint: Path) -> None:
        self.calls.append(("unmount", str(mountpoint)))
        if self.fail_on == "unmount":
            raise ProviderError(f"umount {mountpoint}: target is busy")
        self.mounted.discard(mountpoint)

    def is_mounted(self, mountpoint: Path) -> bool:
        return mountpoint in self.mounted


def report_state(client: Any, state: str, times: int, message: str = "") -> list[int]:
    """Make the next ``times`` DescribeSnapshots answers of ``client`` say ``state``, as
    EBS reports a copy or a snapshot still pending, or failed; the count left is returned
    (a list, so the caller sees it go down)."""
    left = [times]

    def rewrite(parsed: dict[str, Any], **_: Any) -> None:
        if left[0] > 0:
            left[0] -= 1
            for snapshot in parsed.get("Snapshots", []):
                snapshot["State"] = state
                snapshot["Progress"] = "42%"
                if message:
                    snapshot["StateMessage"] = message

    client.meta.events.register("after-call.ec2.DescribeSnapshots", rewrite)
    return left
