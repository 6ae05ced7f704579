"""An EC2 stand-in behind the local disks: one EBS volume per persistent disk.

On AWS the BOSH disk CID is the EBS volume id, and the `aws-ebs` snapshot provider
snapshots that volume. Locally the filesystem stays on the loop-device image (the
snapshotter still freezes and mounts it); when the manifest asks for it, every
persistent disk also gets a volume in an EC2-compatible endpoint (moto's server, in
tests), whose id the agent settings carry as the disk's `volume_id` hint. That volume
is the disk's IaaS identity, nothing more: no bytes are ever written to it.

The manifest switches it on with a top-level key (only localbosh reads it; a Director
would take the same facts from its CPI and cloud config):

    localbosh:
      ec2:
        endpoint: http://127.0.0.1:5000
        region: eu-west-1
        availability_zones: {z1: eu-west-1a}   # optional; default <region>a

Volumes are recorded per disk CID in `$LOCALBOSH_HOME/ec2-volumes.json` with the
endpoint and region they live in, so deleting a disk (clean-up of orphans) deletes its
volume even after the deployment, or its manifest, is gone. localbosh signs with dummy
keys: the endpoint is meant to be an emulator, never a real account.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from localbosh.volume_registry import Registry

REGISTRY = "ec2-volumes.json"
DUMMY_KEY = "localbosh"
TAG_PREFIX = "localbosh:"
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
ENDPOINT = re.compile(r"^https?://\S+$")


class Ec2Error(Exception):
    """The EC2 stand-in refused or could not be reached; the message says which call."""


@dataclass(frozen=True)
class Ec2Settings:
    endpoint: str
    region: str
    availability_zones: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Ec2Settings | None:
        """`localbosh.ec2` of the manifest, checked; None when it is absent."""
        raw = (manifest.get("localbosh") or {}).get("ec2")
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise Ec2Error("localbosh.ec2 must be a map with endpoint and region")
        endpoint = str(raw.get("endpoint") or "")
        region = str(raw.get("region") or "")
        if not ENDPOINT.match(endpoint):
            raise Ec2Error(f"localbosh.ec2.endpoint must be an http(s) URL, not {endpoint!r}")
        if not REGION.match(region):
            raise Ec2Error(f"localbosh.ec2.region must be a region name, not {region!r}")
        zones = raw.get("availability_zones") or {}
        if not isinstance(zones, Mapping):
            raise Ec2Error("localbosh.ec2.availability_zones must map BOSH AZs to EC2 zones")
        return cls(endpoint, region, {str(k): str(v) for k, v in zones.items()})

    def zone(self, az: str | None) -> str:
        """The EC2 availability zone of a BOSH AZ (the cloud config's job)."""
        return self.availability_zones.get(az or "", f"{self.region}a")


def client(endpoint: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 3},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


class Volumes:
    """Disk CID -> its EBS volume, created with the disk and deleted with it."""

    def __init__(self, root: Path) -> None:
        self.registry = Registry(root / REGISTRY)

    def volume_id(self, cid: str) -> str | None:
        return self.registry.volume_id(cid)

    def ensure(
        self,
        settings: Ec2Settings,
        cid: str,
        size_mib: int,
        az: str | None,
        tags: Mapping[str, str],
    ) -> str:
        """The volume of disk `cid`, created (CreateVolume, sized like the disk) if it has none."""
        with self.registry.locked() as entries:
            if cid in entries:
                return entries[cid]["volume_id"]
            zone = settings.zone(az)
            ec2 = client(settings.endpoint, settings.region)
            try:
                volume = ec2.create_volume(
                    AvailabilityZone=zone,
                    Size=max(1, -(-size_mib // 1024)),  # GiB, rounded up
                    VolumeType="gp3",
                    TagSpecifications=[
                        {
                            "ResourceType": "volume",
                            "Tags": [
                                {"Key": TAG_PREFIX + k, "Value": v}
                                for k, v in {"disk_cid": cid, **tags}.items()
                            ],
                        }
                    ],
                )
            except Exception as exc:
                raise Ec2Error(
                    f"CreateVolume for disk {cid} in {zone} at {settings.endpoint}: {exc}"
                ) from exc
            finally:
                ec2.close()
            volume_id = str(volume["VolumeId"])
            entries[cid] = {
                "volume_id": volume_id,
                "endpoint": settings.endpoint,
                "region": settings.region,
                "availability_zone": zone,
            }
            return volume_id

    def delete(self, cid: str) -> str | None:
        """Delete the volume of disk `cid` (DeleteVolume); a volume already gone is fine."""
        with self.registry.locked() as entries:
            entry = entries.get(cid)
            if entry is None:
                return None
            ec2 = client(entry["endpoint"], entry["region"])
            try:
                ec2.delete_volume(VolumeId=entry["volume_id"])
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code != "InvalidVolume.NotFound":
                    raise Ec2Error(
                        f"DeleteVolume {entry['volume_id']} of disk {cid} at "
                        f"{entry['endpoint']}: {exc}"
                    ) from exc
            finally:
                ec2.close()
            del entries[cid]
            return entry["volume_id"]
