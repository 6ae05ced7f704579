"""Volumes made from snapshots on this VM: how the aws-ebs provider materializes one.

CreateVolume from the snapshot in this instance's zone, AttachVolume here, find the
device (nvme.py), mount it read-only; on the way out unmount, detach, wait, delete.
Every such volume is tagged temporary, with its source, this instance and the process
that made it (``process_token``), the moment it is created: once that process is gone,
or its teardown failed (the tag then says ``released``), the volume is a leftover that
the next materialize, the daemon's start and ``bin/snapshots cleanup`` release.
"""

from __future__ import annotations

import builtins
import logging
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.providers.base import Leftover
from disk_snapshots.providers.base import NewDisk
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.ec2 import INSTANCE_ID
from disk_snapshots.providers.ec2 import SNAPSHOT_ID
from disk_snapshots.providers.ec2 import SOURCE_SNAPSHOT_TAG
from disk_snapshots.providers.ec2 import Ec2
from disk_snapshots.providers.ec2 import tag_list
from disk_snapshots.providers.ec2 import tags_of
from disk_snapshots.providers.nvme import DeviceSeam
from disk_snapshots.vm.processes import process_token
from disk_snapshots.vm.processes import token_alive

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef

log = logging.getLogger(__name__)

TEMPORARY_TAG = TAG_PREFIX + "temporary"
MATERIALIZED_BY_TAG = TAG_PREFIX + "materialized_by"
OWNER_TAG = TAG_PREFIX + "materialized_by_process"
RELEASED = "released"  # the owner's teardown failed: no process uses the volume any more
IMDS = "http://169.254.169.254"
# Volume types whose IOPS are provisioned (gp2's are implied by its size).
IOPS_TYPES = ("gp3", "io1", "io2")
# Volumes of an older release name no process: spared this long (a materialize may use it).
UNMARKED_GRACE = timedelta(minutes=30)
# Device names AttachVolume accepts for data volumes; Nitro ignores the name, Xen maps
# sdX to xvdX, and both refuse one already in use on the instance.
DEVICE_NAMES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")


def imds_instance_id(endpoint: str = IMDS, timeout: float = 2.0) -> str:
    """This VM's instance id from the metadata service, version 2 (token first)."""
    # IMDS is link-local: an HTTP proxy from the environment must never see these requests.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    base = endpoint.rstrip("/")
    try:
        token_request = urllib.request.Request(  # noqa: S310 - the endpoint is ours, http by design
            f"{base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with opener.open(token_request, timeout=timeout) as response:
            token = str(response.read().decode())
        id_request = urllib.request.Request(  # noqa: S310
            f"{base}/latest/meta-data/instance-id",
            headers={"X-aws-ec2-metadata-token": token},
        )
        with opener.open(id_request, timeout=timeout) as response:
            instance_id = str(response.read().decode()).strip()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ProviderError(
            f"cannot read this VM's instance id from the metadata service ({base}, IMDSv2): "
            f"{err}; set provider.aws.instance_id if the metadata service is unreachable"
        ) from None
    if not INSTANCE_ID.match(instance_id):
        raise ProviderError(
            f"the metadata service at {base} returned {instance_id[:40]!r}, not an instance id"
        )
    return instance_id


@dataclass
class EbsVolumes:
    ec2: Ec2
    devices: DeviceSeam
    work_dir: Path
    metadata_endpoint: str
    known_instance_id: str  # provider.aws.instance_id; empty: ask the metadata service
    poll_interval: float
    volume_timeout: float
    device_timeout: float
    sleep: Callable[[float], None]

    def instance_id(self) -> str:
        """This VM's id: the property when set, else the metadata service (asked once)."""
        if not self.known_instance_id:
            self.known_instance_id = imds_instance_id(self.metadata_endpoint)
        return self.known_instance_id

    def _instance(self, instance_id: str) -> tuple[str, set[str]]:
        """The instance's availability zone and the device names already in use on it."""
        with self.ec2.calling(f"DescribeInstances of {instance_id}"):
            reservations = self.ec2.client().describe_instances(InstanceIds=[instance_id])
        for reservation in reservations.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                zone = instance.get("Placement", {}).get("AvailabilityZone", "")
                used = {m.get("DeviceName", "") for m in instance.get("BlockDeviceMappings", [])}
                return zone, used
        raise ProviderError(f"instance {instance_id} does not exist in {self.ec2.region}")

    def _volume(self, volume_id: str) -> Mapping[str, Any]:
        with self.ec2.calling(f"DescribeVolumes of {volume_id}"):
            volumes = self.ec2.client().describe_volumes(VolumeIds=[volume_id])["Volumes"]
        if not volumes:
            raise ProviderError(f"volume {volume_id} does not exist in {self.ec2.region}")
        return volumes[0]

    def _wait_volume(
        self, volume_id: str, done: Callable[[Mapping[str, Any]], bool], what: str
    ) -> None:
        deadline = time.monotonic() + self.volume_timeout
        while True:
            volume = self._volume(volume_id)
            if volume.get("State") == "error":
                raise ProviderError(f"volume {volume_id} went into state error while {what}")
            if done(volume):
                return
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"volume {volume_id} not {what} after {self.volume_timeout:.0f}s "
                    f"(state {volume.get('State')})"
                )
            self.sleep(self.poll_interval)

    def _placement(self, snapshot_id: str, az: str) -> tuple[str, str, str]:
        """This instance, its zone, and a device name free on it."""
        instance_id = self.instance_id()
        zone, used = self._instance(instance_id)
        # BOSH AZ names ("z1") are not EC2 zones; only an EC2 zone name can contradict.
        if az.startswith(self.ec2.region) and az != zone:
            raise ProviderError(
                f"cannot materialize in {az}: instance {instance_id} is in {zone}, and a "
                "volume attaches only in its own zone"
            )
        device_name = next((d for d in DEVICE_NAMES if d not in used), None)
        if device_name is None:
            raise ProviderError(f"instance {instance_id} has no free device name for a volume")
        return instance_id, zone, device_name

    def _create(self, snapshot_id: str, zone: str, instance_id: str) -> str:
        tags = {
            "Name": f"disk-snapshots materialize {snapshot_id}",
            TEMPORARY_TAG: "true",
            SOURCE_SNAPSHOT_TAG: snapshot_id,
            MATERIALIZED_BY_TAG: instance_id,
            OWNER_TAG: process_token(),
        }
        with self.ec2.calling(f"CreateVolume from {snapshot_id} in {zone}"):
            return self.ec2.client().create_volume(
                SnapshotId=snapshot_id,
                AvailabilityZone=zone,
                VolumeType="gp3",
                TagSpecifications=[{"ResourceType": "volume", "Tags": tag_list(tags)}],
            )["VolumeId"]

    def create_disk(self, snapshot_id: str, like_volume: str, labels: Mapping[str, str]) -> NewDisk:
        """CreateVolume from the (completed) snapshot in this instance's zone, of the type,
        IOPS, throughput and encryption key of ``like_volume`` (the disk it replaces), with
        ``labels`` as tags; waited until available. A volume that never becomes available
        is deleted again, so a failed create leaves nothing behind."""
        zone, _ = self._instance(self.instance_id())
        like = self._volume(like_volume)
        options: dict[str, Any] = {"VolumeType": like.get("VolumeType") or "gp3"}
        for key in ("Iops", "Throughput", "KmsKeyId"):
            if like.get(key) and (key != "Iops" or options["VolumeType"] in IOPS_TYPES):
                options[key] = like[key]
        if options.get("KmsKeyId"):
            options["Encrypted"] = True
        tags = {**labels, "Name": f"disk-snapshots {snapshot_id}", SOURCE_SNAPSHOT_TAG: snapshot_id}
        with self.ec2.calling(f"CreateVolume from {snapshot_id} in {zone}"):
            created = self.ec2.client().create_volume(
                SnapshotId=snapshot_id,
                AvailabilityZone=zone,
                TagSpecifications=[{"ResourceType": "volume", "Tags": tag_list(tags)}],
                **options,
            )
        volume_id = created["VolumeId"]
        try:
            self._wait_volume(volume_id, lambda v: v.get("State") == "available", "available")
        except ProviderError:
            with suppress(ProviderError), self.ec2.calling(f"DeleteVolume of {volume_id}"):
                self.ec2.client().delete_volume(VolumeId=volume_id)
            raise
        return NewDisk(
            cid=volume_id, size_mib=int(created["Size"]) * 1024, zone=zone, snapshot_id=snapshot_id
        )

    @contextmanager
    def mounted(self, snapshot_id: str, az: str) -> Iterator[Path]:
        """A new volume from the (completed) snapshot, attached here and mounted read-only;
        unmounted, detached and deleted on exit."""
        self._release_leftovers()
        instance_id, zone, device_name = self._placement(snapshot_id, az)
        volume_id = self._create(snapshot_id, zone, instance_id)
        attached = False
        mountpoint: Path | None = None
        mounted = False
        completed = False
        try:
            self._wait_volume(volume_id, lambda v: v.get("State") == "available", "available")
            with self.ec2.calling(f"AttachVolume of {volume_id} to {instance_id}"):
                self.ec2.client().attach_volume(
                    VolumeId=volume_id, InstanceId=instance_id, Device=device_name
                )
            attached = True
            self._wait_volume(volume_id, _attached_to(instance_id), f"attached to {instance_id}")
            device = self.devices.find(volume_id, device_name, self.device_timeout)
            self.work_dir.mkdir(parents=True, exist_ok=True)
            mountpoint = Path(tempfile.mkdtemp(prefix=f"{snapshot_id}-", dir=self.work_dir))
            self.devices.mount_readonly(device, mountpoint)
            mounted = True
            yield mountpoint
            completed = True
        finally:
            problems = self._tear_down(volume_id, instance_id, attached, mountpoint, mounted)
            if problems:
                self._mark_released(volume_id)
                message = (
                    f"cleaning up after materializing {snapshot_id}: {'; '.join(problems)}; "
                    f"the volume is tagged {TEMPORARY_TAG}=true for cleanup_leftovers, which "
                    "`/var/vcap/jobs/snapshotter/bin/snapshots cleanup` runs"
                )
                if completed:
                    raise ProviderError(message)
                # The error that got us here is the one to report; this one is logged.
                log.error("%s", message)

    def _tear_down(
        self,
        volume_id: str,
        instance_id: str,
        attached: bool,
        mountpoint: Path | None,
        mounted: bool,
    ) -> builtins.list[str]:
        """Unmount, detach, wait, delete: each step only when the one before it held."""
        problems: builtins.list[str] = []
        if mounted and mountpoint is not None:
            try:
                self.devices.unmount(mountpoint)
            except (ProviderError, OSError) as err:
                # Detaching a mounted volume can leave it stuck "busy"; leave it attached.
                return [f"unmount of {mountpoint} failed ({err}); volume {volume_id} left attached"]
        if mountpoint is not None:
            _remove_empty(mountpoint)
        try:
            if attached:
                with self.ec2.calling(f"DetachVolume of {volume_id}"):
                    self.ec2.client().detach_volume(VolumeId=volume_id, InstanceId=instance_id)
                self._wait_volume(volume_id, lambda v: v.get("State") == "available", "detached")
            with self.ec2.calling(f"DeleteVolume of {volume_id}"):
                self.ec2.client().delete_volume(VolumeId=volume_id)
        except ProviderError as err:
            problems.append(f"{err}; volume {volume_id} left behind")
        return problems

    def _unmount_leftovers(self, volume: Mapping[str, Any]) -> builtins.list[str]:
        """Unmount what a failed materialize left mounted from this volume's snapshot."""
        source = tags_of(volume).get(SOURCE_SNAPSHOT_TAG, "")
        if not SNAPSHOT_ID.match(source) or not self.work_dir.is_dir():
            return []
        problems: builtins.list[str] = []
        for mountpoint in sorted(self.work_dir.glob(f"{source}-*")):
            try:
                if self.devices.is_mounted(mountpoint):
                    self.devices.unmount(mountpoint)
                _remove_empty(mountpoint)
            except (ProviderError, OSError) as err:
                problems.append(
                    f"unmount of {mountpoint} failed ({err}); volume {volume['VolumeId']} "
                    "left attached"
                )
        return problems

    def _mark_released(self, volume_id: str) -> None:
        """No process uses the volume now: the next cleanup may take it at once."""
        try:
            with self.ec2.calling(f"CreateTags of {volume_id}"):
                self.ec2.client().create_tags(
                    Resources=[volume_id], Tags=tag_list({OWNER_TAG: RELEASED})
                )
        except ProviderError as err:
            log.error("%s; the volume is released when this process is gone", err)

    def _release_leftovers(self) -> None:
        """Before making a new volume: what a killed run left goes first."""
        try:
            self.cleanup_leftovers()
        except ProviderError as err:
            log.warning("%s (bin/snapshots cleanup tries again)", err)

    def _temporary(self, min_age: timedelta) -> builtins.list[Mapping[str, Any]]:
        """This instance's temporary volumes that no running process uses."""
        instance_id = self.instance_id()
        filters: builtins.list[FilterTypeDef] = [
            {"Name": f"tag:{TEMPORARY_TAG}", "Values": ["true"]},
            {"Name": f"tag:{MATERIALIZED_BY_TAG}", "Values": [instance_id]},
        ]
        with self.ec2.calling("DescribeVolumes of temporary volumes"):
            pages = self.ec2.client().get_paginator("describe_volumes").paginate(Filters=filters)
            volumes = [v for page in pages for v in page.get("Volumes", [])]
        now = datetime.now(UTC)
        found: builtins.list[Mapping[str, Any]] = []
        for volume in volumes:
            owner = tags_of(volume).get(OWNER_TAG)
            if owner is None:
                # Made before volumes named their process: spared while it may be in use.
                created = volume.get("CreateTime")
                if isinstance(created, datetime) and now - created < min_age:
                    continue
            elif owner != RELEASED and token_alive(owner):
                continue
            found.append(volume)
        return found

    def leftovers(self, min_age: timedelta = UNMARKED_GRACE) -> builtins.list[Leftover]:
        return [
            Leftover(
                "temporary volume",
                v["VolumeId"],
                f"from {tags_of(v).get(SOURCE_SNAPSHOT_TAG, '?')}, {v.get('State', '?')}",
            )
            for v in self._temporary(min_age)
        ]

    def cleanup_leftovers(self, min_age: timedelta = UNMARKED_GRACE) -> builtins.list[Leftover]:
        """Unmount, detach and delete the temporary volumes of this instance that no running
        process uses; returns what was released."""
        instance_id = self.instance_id()
        removed: builtins.list[Leftover] = []
        failed: builtins.list[str] = []
        for volume in self._temporary(min_age):
            volume_id = volume["VolumeId"]
            attached = any(
                a.get("InstanceId") == instance_id and a.get("State") in ("attaching", "attached")
                for a in volume.get("Attachments", [])
            )
            problems = self._unmount_leftovers(volume) if attached else []
            if not problems:
                problems = self._tear_down(volume_id, instance_id, attached, None, False)
            if problems:
                failed.extend(problems)
            else:
                log.info("removed leftover temporary volume %s", volume_id)
                source = tags_of(volume).get(SOURCE_SNAPSHOT_TAG, "?")
                removed.append(Leftover("temporary volume", volume_id, f"from {source}"))
        if failed:
            raise ProviderError("leftover temporary volumes not removed: " + "; ".join(failed))
        return removed


def _attached_to(instance_id: str) -> Callable[[Mapping[str, Any]], bool]:
    def check(volume: Mapping[str, Any]) -> bool:
        return any(
            a.get("InstanceId") == instance_id and a.get("State") == "attached"
            for a in volume.get("Attachments", [])
        )

    return check


def _remove_empty(directory: Path) -> None:
    # rmdir, never rmtree: if the unmount silently did not happen, the snapshot's files
    # are below, and they are not ours to delete.
    with suppress(OSError):
        directory.rmdir()
