"""A Cinder behind the local disks: one Cinder volume per persistent disk.

On OpenStack the BOSH disk CID is the Cinder volume id, and the `openstack-cinder`
snapshot provider snapshots that volume. Locally the filesystem stays on the loop-device
image (the snapshotter still freezes and mounts it); when the manifest asks for it,
every persistent disk also gets a volume in a real Cinder (scripts/cinder-local in
tests), whose id the agent settings carry as the disk's `volume_id` hint, as ec2.py does
with EBS volumes. That volume is the disk's IaaS identity: nothing writes the disk's
bytes to it.

The manifest switches it on with a top-level key (only localbosh reads it; a Director
would take the same facts from its CPI and cloud config), with the credentials and
names of bosh-deployment's openstack/cpi.yml:

    localbosh:
      cinder:
        auth_url: http://127.0.0.1:5000/v3
        username: bosh
        password: ...
        project: redis
        domain: Default
        region: RegionOne
        availability_zones: {z1: nova}   # optional; default: Cinder's default zone

Like the OpenStack CPI, localbosh writes the volume's metadata as the Director's
set_disk_metadata asks (`deployment`, `instance_group`, `instance_index`, `director`),
which the provider checks before it snapshots a volume. Volumes are recorded per disk
CID in `$LOCALBOSH_HOME/cinder-volumes.json` (volume_registry.py, mode 0600) with the
credentials that made them, as a Director keeps its CPI's, so that clean-up can delete
them after the deployment is gone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from localbosh.volume_registry import Registry

REGISTRY = "cinder-volumes.json"
URL = re.compile(r"^https?://\S+$")
DISK_CID_KEY = "localbosh:disk_cid"
CREDENTIALS = ("auth_url", "username", "password", "project")


class CinderError(Exception):
    """Cinder refused or could not be reached; the message says which call."""


@dataclass(frozen=True)
class CinderSettings:
    auth_url: str
    username: str
    password: str
    project: str
    domain: str = "Default"
    region: str = ""
    availability_zones: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"CinderSettings(auth_url={self.auth_url!r}, project={self.project!r})"

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> CinderSettings | None:
        """`localbosh.cinder` of the manifest, checked; None when it is absent."""
        raw = (manifest.get("localbosh") or {}).get("cinder")
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise CinderError("localbosh.cinder must be a map with " + ", ".join(CREDENTIALS))
        values = {k: str(raw.get(k) or "") for k in (*CREDENTIALS, "domain", "region")}
        missing = [k for k in CREDENTIALS if not values[k]]
        if missing:
            raise CinderError(f"localbosh.cinder needs {', '.join(missing)}")
        if not URL.match(values["auth_url"]):
            raise CinderError(
                f"localbosh.cinder.auth_url must be an http(s) URL, not {values['auth_url']!r}"
            )
        zones = raw.get("availability_zones") or {}
        if not isinstance(zones, Mapping):
            raise CinderError("localbosh.cinder.availability_zones must map BOSH AZs to zones")
        return cls(
            auth_url=values["auth_url"],
            username=values["username"],
            password=values["password"],
            project=values["project"],
            domain=values["domain"] or "Default",
            region=values["region"],
            availability_zones={str(k): str(v) for k, v in zones.items()},
        )

    def zone(self, az: str | None) -> str:
        """The Cinder availability zone of a BOSH AZ ("": Cinder's default)."""
        return self.availability_zones.get(az or "", "")


class BlockStorage:
    """Cinder's volume API for one project, through Keystone (as the CPI reaches it)."""

    def __init__(self, settings: CinderSettings) -> None:
        from keystoneauth1.adapter import Adapter
        from keystoneauth1.identity import v3
        from keystoneauth1.session import Session

        auth = v3.Password(
            auth_url=settings.auth_url,
            username=settings.username,
            password=settings.password,
            user_domain_name=settings.domain,
            project_name=settings.project,
            project_domain_name=settings.domain,
        )
        self.adapter = Adapter(
            session=Session(auth=auth, timeout=30),
            service_type="block-storage",
            region_name=settings.region or None,
            min_version="3",
            max_version="3.latest",
        )

    def close(self) -> None:
        self.adapter.session.session.close()

    def call(self, method: str, path: str, action: str, body: object = None) -> Any:
        from keystoneauth1 import exceptions

        try:
            response = self.adapter.request(
                path,
                method,
                json=body,
                raise_exc=False,
                headers={"OpenStack-API-Version": "volume 3.47"},
            )
        except exceptions.ClientException as exc:
            raise CinderError(f"{action}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 404 and method == "DELETE":
            return {}
        if response.status_code >= 400:
            raise CinderError(f"{action}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else {}

    def wait_available(self, volume_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            volume = self.call("GET", f"/volumes/{volume_id}", f"reading volume {volume_id}")
            status = volume["volume"]["status"]
            if status == "available":
                return dict(volume["volume"])
            if status != "creating" or time.monotonic() > deadline:
                raise CinderError(f"volume {volume_id} is {status!r}, not available")
            time.sleep(0.5)


class Volumes:
    """Disk CID -> its Cinder volume, created with the disk and deleted with it."""

    def __init__(self, root: Path) -> None:
        self.registry = Registry(root / REGISTRY)

    def volume_id(self, cid: str) -> str | None:
        return self.registry.volume_id(cid)

    def ensure(
        self,
        settings: CinderSettings,
        cid: str,
        size_mib: int,
        az: str | None,
        metadata: Mapping[str, str],
    ) -> tuple[str, str]:
        """The volume of disk `cid` and its zone, created (sized like the disk, in the AZ's
        zone, with the Director's disk metadata) if it has none."""
        with self.registry.locked() as entries:
            if cid in entries:
                return entries[cid]["volume_id"], entries[cid]["availability_zone"]
            request: dict[str, Any] = {
                "size": max(1, -(-size_mib // 1024)),  # GiB, rounded up
                "name": cid,
                "metadata": {DISK_CID_KEY: cid, **metadata},
            }
            if settings.zone(az):
                request["availability_zone"] = settings.zone(az)
            api = BlockStorage(settings)
            try:
                created = api.call(
                    "POST", "/volumes", f"creating the volume of disk {cid}", {"volume": request}
                )
                volume = api.wait_available(created["volume"]["id"])
            finally:
                api.close()
            entries[cid] = {
                "volume_id": str(volume["id"]),
                "availability_zone": str(volume.get("availability_zone") or ""),
                **{k: getattr(settings, k) for k in (*CREDENTIALS, "domain", "region")},
            }
            return entries[cid]["volume_id"], entries[cid]["availability_zone"]

    def delete(self, cid: str) -> str | None:
        """Delete the volume of disk `cid`. Cinder refuses while the volume has snapshots,
        as the OpenStack CPI's delete_disk fails then: the orphan stays for a retry."""
        with self.registry.locked() as entries:
            entry = entries.get(cid)
            if entry is None:
                return None
            settings = CinderSettings(
                auth_url=entry["auth_url"],
                username=entry["username"],
                password=entry["password"],
                project=entry["project"],
                domain=entry["domain"],
                region=entry["region"],
            )
            api = BlockStorage(settings)
            try:
                api.call(
                    "DELETE",
                    f"/volumes/{entry['volume_id']}",
                    f"deleting volume {entry['volume_id']} of disk {cid}",
                )
            finally:
                api.close()
            del entries[cid]
            return entry["volume_id"]
