"""The real Cinder of scripts/cinder-local, for the openstack-cinder tests.

``scripts/test`` starts one for its cinder tier and names its env file in
``CINDER_LOCAL_ENV``; a test session without it starts its own (root, packages
installed) on free ports in a private directory and stops it at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from disk_snapshots.catalog import Backup
from disk_snapshots.openstack_settings import OpenstackSettings
from disk_snapshots.providers.openstack_cinder import OpenstackCinderProvider
from support.net import free_ports

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "cinder-local"
MICROVERSION = "volume 3.47"

# make_provider(**OpenstackSettings fields and provider options) -> closed at teardown
MakeProvider = Callable[..., OpenstackCinderProvider]


@dataclass(frozen=True)
class Keystone:
    """The Keystone in front of it: a project `redis` with a member user `bosh`."""

    url: str
    region: str
    admin_password: str
    user_password: str
    project_id: str
    user_id: str


@dataclass(frozen=True)
class CinderLocal:
    endpoint: str  # http://127.0.0.1:PORT/v3/<project>
    project: str
    volume_dir: Path  # where the NFS driver keeps volume files
    backup_dir: Path  # where the POSIX backup driver keeps its containers
    version: str
    keystone: Keystone


def read_env(path: Path) -> CinderLocal:
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return CinderLocal(
        endpoint=values["CINDER_ENDPOINT"],
        project=values["CINDER_PROJECT"],
        volume_dir=Path(values["CINDER_VOLUME_DIR"]),
        # An env file written before CINDER_BACKUP_DIR: the same place.
        backup_dir=Path(
            values.get("CINDER_BACKUP_DIR") or Path(values["CINDER_LOCAL_DIR"]) / "backups"
        ),
        version=values.get("CINDER_VERSION", "unknown"),
        keystone=Keystone(
            url=values["KEYSTONE_URL"],
            region=values["KEYSTONE_REGION"],
            admin_password=values["KEYSTONE_ADMIN_PASSWORD"],
            user_password=values["KEYSTONE_USER_PASSWORD"],
            project_id=values["KEYSTONE_PROJECT_ID"],
            user_id=values["KEYSTONE_USER_ID"],
        ),
    )


def unavailable_reason() -> str:
    """Why this session cannot start a Cinder of its own ("" when it can)."""
    if os.geteuid() != 0:
        return "scripts/cinder-local needs root (bind mount, daemons)"
    probe = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "cinder-volume"], capture_output=True, text=True
    )
    if "install ok installed" not in probe.stdout:
        return "Cinder's packages are not installed: run scripts/cinder-local install"
    return ""


@contextmanager
def started(base: Path) -> Iterator[CinderLocal]:
    """A Cinder of this test session's own, on free ports; stopped and wiped on exit."""
    api, rabbit, dist, epmd, keystone = free_ports(5)
    name = base.name
    env = {
        **os.environ,
        "CINDER_LOCAL_DIR": str(base),
        # cinder-rootwrap lets privsep-helper read a config under /etc only.
        "CINDER_LOCAL_ETC": f"/etc/cinder-local-{name}",
        "CINDER_LOCAL_API_PORT": str(api),
        "CINDER_LOCAL_RABBIT_PORT": str(rabbit),
        "CINDER_LOCAL_RABBIT_DIST_PORT": str(dist),
        "CINDER_LOCAL_EPMD_PORT": str(epmd),
        "CINDER_LOCAL_KEYSTONE_PORT": str(keystone),
    }
    try:
        proc = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/cinder-local start failed:\n{proc.stderr[-3000:]}")
        yield read_env(Path(proc.stdout.strip().splitlines()[-1]))
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, text=True)


@contextmanager
def reachable() -> Iterator[tuple[CinderLocal | None, str]]:
    """The Cinder scripts/test started (CINDER_LOCAL_ENV), else one of this process's own
    (stopped on exit); (None, why) when neither can be had."""
    given = os.environ.get("CINDER_LOCAL_ENV")
    if given:
        yield read_env(Path(given)), ""
        return
    reason = unavailable_reason()
    if reason:
        yield None, reason
        return
    with started(Path(f"/var/lib/cinder-local-pytest-{os.getpid()}")) as cinder:
        yield cinder, ""


@contextmanager
def for_this_session() -> Iterator[CinderLocal]:
    """``reachable``'s Cinder, or a skip saying why there is none."""
    import pytest

    with reachable() as (cinder, reason):
        if cinder is None:
            pytest.skip(f"no real Cinder: {reason}")
        yield cinder


class Admin:
    """The test's own hands on Cinder (arranging and checking), beside the provider."""

    def __init__(self, cinder: CinderLocal, project: str = "") -> None:
        self.cinder = cinder
        project = project or cinder.project
        self.endpoint = cinder.endpoint.rsplit("/", 1)[0] + "/" + project
        self.session = requests.Session()
        # noauth: every request acts as admin of the project.
        self.session.headers.update(
            {
                "X-Auth-Token": f"admin:{project}",
                "OpenStack-API-Version": MICROVERSION,
                "Accept": "application/json",
            }
        )
        self.session.trust_env = False

    def close(self) -> None:
        self.session.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, self.endpoint + path, timeout=60, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else {}

    def wait(
        self, kind: str, resource_id: str, want: str = "available", timeout: float = 120
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            resource = self.call("GET", f"/{kind}s/{resource_id}")[kind]
            if resource["status"] == want:
                return resource
            if "error" in resource["status"] or time.monotonic() > deadline:
                raise AssertionError(
                    f"{kind} {resource_id}: {resource['status']}{self.why(resource_id)}"
                )
            time.sleep(0.2)

    def why(self, resource_id: str) -> str:
        """Cinder's user messages about a resource (what a failed create says, e.g. no
        valid backend), so a failure in CI reads its cause."""
        found = self.call("GET", "/messages", params={"resource_uuid": resource_id})
        said = [f"{m['event_id']} {m['user_message']}" for m in found.get("messages", [])]
        return f" ({'; '.join(said)})" if said else ""

    def create_volume(self, deployment: str = "redis", size: int = 1, **extra: Any) -> str:
        metadata = {"deployment": deployment} if deployment else {}
        body = {"volume": {"size": size, "name": "test", "metadata": metadata, **extra}}
        volume = self.call("POST", "/volumes", json=body)["volume"]
        self.wait("volume", volume["id"])
        return str(volume["id"])

    def create_volumes(self, count: int, deployment: str = "redis", **extra: Any) -> list[str]:
        ids = []
        for _ in range(count):
            body = {"volume": {"size": 1, "metadata": {"deployment": deployment}, **extra}}
            ids.append(str(self.call("POST", "/volumes", json=body)["volume"]["id"]))
        for volume_id in ids:
            self.wait("volume", volume_id)
        return ids

    def create_group_type(self, prefix: str = "consistent") -> str:
        """A group type asking for consistent group snapshots, as an operator's would."""
        body = {
            "group_type": {
                "name": f"{prefix}-{os.urandom(4).hex()}",
                "group_specs": {"consistent_group_snapshot_enabled": "<is> True"},
            }
        }
        return str(self.call("POST", "/group_types", json=body)["group_type"]["id"])

    def volume(self, volume_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/volumes/{volume_id}")["volume"])

    def snapshot(self, snapshot_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/snapshots/{snapshot_id}")["snapshot"])

    def backup(self, backup_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/backups/{backup_id}")["backup"])

    def gone(self, kind: str, resource_id: str, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.session.get(f"{self.endpoint}/{kind}s/{resource_id}", timeout=30)
            if response.status_code == 404:
                return True
            time.sleep(0.2)
        return False


class VolumeFiles:
    """A volume's bytes as a guest sees them, through the NFS driver's files.

    A volume is a raw file until its first snapshot; each snapshot then starts a qcow2
    overlay, and the volume's ``.info`` file names the active one. Reading and writing
    go through qemu-io / qemu-img, which follow the overlay chain.
    """

    def __init__(self, cinder: CinderLocal, scratch: Path) -> None:
        self.dir = cinder.volume_dir
        self.scratch = scratch

    def active(self, volume_id: str) -> Path:
        info = self.dir / f"volume-{volume_id}.info"
        if info.exists():
            return self.dir / json.loads(info.read_text())["active"]
        return self.dir / f"volume-{volume_id}"

    def _format(self, path: Path) -> str:
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", "-U", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return str(json.loads(out)["format"])

    def write(self, volume_id: str, data: bytes, offset: int) -> None:
        source = self.scratch / "write.bin"
        source.write_bytes(data)
        path = self.active(volume_id)
        command = f"write -s {source} {offset} {len(data)}"
        subprocess.run(
            ["qemu-io", "-f", self._format(path), "-c", command, str(path)],
            capture_output=True,
            check=True,
        )

    def read(self, volume_id: str, offset: int, length: int) -> bytes:
        raw = self.scratch / f"read-{volume_id}.raw"
        subprocess.run(
            ["qemu-img", "convert", "-U", "-O", "raw", str(self.active(volume_id)), str(raw)],
            check=True,
        )
        try:
            with raw.open("rb") as f:
                f.seek(offset)
                return f.read(length)
        finally:
            raw.unlink()


def completed(provider: OpenstackCinderProvider, backup_id: str, timeout: float = 300) -> Backup:
    """The backup once Cinder has finished copying it (as BackupRunner polls for it)."""
    deadline = time.monotonic() + timeout
    while True:
        backup = provider.get_backup(backup_id)
        if backup.state != "pending":
            return backup
        if time.monotonic() > deadline:
            raise AssertionError(f"backup {backup_id} still pending after {timeout}s")
        time.sleep(0.2)


def have_qemu() -> bool:
    return shutil.which("qemu-io") is not None and shutil.which("qemu-img") is not None


def noauth_settings(endpoint: str, **overrides: Any) -> OpenstackSettings:
    values: dict[str, Any] = {
        "auth_url": "",
        "username": "",
        "api_key": "",
        "domain": "Default",
        "project": "",
        "project_domain": "",
        "application_credential_id": "",
        "application_credential_secret": "",
        "region": "",
        "interface": "public",
        "endpoint": endpoint,
        "ca_cert": "",
        "insecure": False,
        "group_type": "",
    }
    return OpenstackSettings(**(values | overrides))
