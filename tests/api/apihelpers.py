"""Certificates, fakes and VM-shaped roots for the agent API tests and the set benchmark."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

from configdocs import snapshotter_doc
from disk_snapshots.agent_client import AgentClient
from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import Role
from disk_snapshots.api import Agent
from disk_snapshots.api import RunningApi
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import select
from disk_snapshots.config import TlsConfig
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.instance import Disk
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.services import ServiceError
from disk_snapshots.snapshotter import Paths
from disk_snapshots.snapshotter import Snapshotter


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        ).add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("*.redis.bosh"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls(common_name: str = "snapshotter-agent") -> TlsConfig:
    """A CA and a leaf for server and client use, as agent-api-tls.yml's variables make."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"{common_name}-ca", ca_key, None, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(common_name, key, ca, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    return TlsConfig(
        ca=ca.public_bytes(pem).decode(),
        certificate=leaf.public_bytes(pem).decode(),
        private_key=_pem_key(key),
    )


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def raw_https(
    address: str, port: int, context: ssl.SSLContext, path: str = "/status"
) -> tuple[int, bytes]:
    """A curl-like GET: the status line and body, or the exception the TLS layer raised."""
    with (
        socket.create_connection((address, port), timeout=5) as sock,
        context.wrap_socket(sock) as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.split(b"\r\n\r\n", 1)[-1]


# ---------------------------------------------------------------------------------------
# Fakes for tests without root (no disks, no monit)


@dataclass
class FakeService:
    role_answer: Role = "leader"
    flush_error: str = ""
    flushes: int = 0
    name: str = "fake"

    def role(self) -> Role:
        return self.role_answer

    def flush(self) -> bool:
        if self.flush_error:
            raise ServiceError(self.flush_error)
        self.flushes += 1
        return True

    def resume(self) -> None:
        """Nothing to undo."""


@dataclass
class FakeProvider:
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    name: str = "fake"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self, disk: Disk) -> None:
        """Nothing is written anywhere."""

    def snapshot(self, disk: Disk, annotations: Annotations) -> Snapshot:
        with self._lock:
            snapshot = Snapshot(id=f"snap-{len(self.snapshots):04d}", annotations=annotations)
            self.snapshots[snapshot.id] = snapshot
        return snapshot

    def list(self, query: Query | None = None) -> list[Snapshot]:
        return select(self.snapshots.values(), query or Query())

    def get(self, snapshot_id: str) -> Snapshot:
        if snapshot_id not in self.snapshots:
            raise UnknownSnapshot(snapshot_id)
        return self.snapshots[snapshot_id]

    def update(self, snapshot_id: str, annotations: Annotations) -> Snapshot:
        updated = Snapshot(id=snapshot_id, annotations=annotations)
        self.snapshots[self.get(snapshot_id).id] = updated
        return updated

    def delete(self, snapshot_id: str) -> None:
        del self.snapshots[self.get(snapshot_id).id]

    def materialize(self, snapshot_id: str, az: str) -> AbstractContextManager[Path]:
        raise NotImplementedError


@dataclass
class FakeMonit:
    states: dict[str, str] = field(default_factory=lambda: {"redis": "running"})
    stuck: bool = False
    calls: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, str]:
        return dict(self.states)

    def stop(self, name: str) -> None:
        self.calls.append(f"stop {name}")
        if not self.stuck:
            self.states[name] = "not monitored"

    def start(self, name: str) -> None:
        self.calls.append(f"start {name}")
        if not self.stuck:
            self.states[name] = "running"


@dataclass
class FakeApi:
    running: RunningApi
    agent: Agent
    monit: FakeMonit
    client: AgentClient

    @property
    def address(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.running.port


def fake_snapshotter(root: Path, tls: TlsConfig | None = None, **props: Any) -> Snapshotter:
    """A Snapshotter on fakes: no disk to freeze (quiesce.freeze false), an in-memory catalog."""
    doc = snapshotter_doc()
    doc["properties"]["quiesce"]["freeze"] = False
    doc["properties"]["schedules"] = [{"name": "hourly", "cron": "0 * * * *"}]
    if tls is not None:
        doc["properties"]["api"]["tls"] = {
            "ca": tls.ca,
            "certificate": tls.certificate,
            "private_key": tls.private_key,
        }
    for key, value in props.items():
        doc["properties"][key] = value
    (root / "store").mkdir(parents=True, exist_ok=True)
    return Snapshotter(
        config=load_snapshotter_config(doc),
        disk=Disk(cid="disk-fake", mount=root / "store", hint={}),
        provider=FakeProvider(),
        service=FakeService(),
        paths=Paths(root=root),
    )


# ---------------------------------------------------------------------------------------
# VM-shaped roots for tests and the benchmark (root: loop disks)


@dataclass(frozen=True)
class MemberSpec:
    name: str
    index: int
    id: str
    address: str

    @property
    def label(self) -> str:
        return f"{self.name}/{self.index}"


MEMBERS = (
    MemberSpec("redis-leader", 0, "0d9c6e9e-0000-4000-8000-000000000002", "127.0.0.2"),
    MemberSpec("redis-data", 0, "0d9c6e9e-0000-4000-8000-000000000003", "127.0.0.3"),
    MemberSpec("redis-data", 1, "0d9c6e9e-0000-4000-8000-000000000004", "127.0.0.4"),
)


def member_doc(
    me: MemberSpec,
    members: tuple[MemberSpec, ...],
    tls: TlsConfig,
    port: int,
    root: Path,
    pool: Path,
) -> dict[str, Any]:
    """config.json of one member: its links name every member, the flush is a script that
    fails while ``root/service-down`` exists (a stand-in for a stopped Redis)."""
    doc = snapshotter_doc()
    doc["spec"].update({"name": me.name, "index": me.index, "id": me.id, "address": me.address})
    doc["spec"]["bootstrap"] = me.index == 0
    props = doc["properties"]
    flush = root / "flush"
    flush.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{root}/service-down" ]; then\n'
        '  echo "redis is not running: connection refused" >&2; exit 1\nfi\n'
    )
    flush.chmod(0o755)
    props["service"].update(
        {
            "profile": "command",
            "jobs": ["redis"],
            "command": {
                "role": ["echo", "leader" if me.name == "redis-leader" else "follower"],
                "flush": [str(flush)],
                "resume": [],
            },
        }
    )
    props["provider"]["loopback"]["pool"] = str(pool)
    props["schedules"] = []
    props["quiesce"]["freeze_timeout"] = 3
    props["api"] = {
        "port": port,
        "tls": {"ca": tls.ca, "certificate": tls.certificate, "private_key": tls.private_key},
    }

    def link(group: str) -> dict[str, Any]:
        return {
            "properties": {"api": {"port": port}, "service": {"profile": "command"}},
            "instances": [
                {
                    "name": m.name,
                    "index": m.index,
                    "id": m.id,
                    "az": "z1",
                    "address": m.address,
                    "bootstrap": m.index == 0,
                }
                for m in members
                if m.name == group
            ],
        }

    doc["links"] = {"snapshotter": link("redis-leader"), "peers": link("redis-data")}
    return doc


def write_vm(root: Path, doc: dict[str, Any], disk_cid: str, image: Path) -> Paths:
    paths = Paths(root=root)
    bosh = root / "var/vcap/bosh"
    bosh.mkdir(parents=True, exist_ok=True)
    (bosh / "managed_disk_settings.json").write_text(disk_cid)
    (bosh / "settings.json").write_text(
        json.dumps({"disks": {"persistent": {disk_cid: {"path": str(image)}}}})
    )
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(json.dumps(doc))
    take = paths.job_config("take-snapshot")
    take.parent.mkdir(parents=True, exist_ok=True)
    take.write_text(
        json.dumps(
            {"job": "take-snapshot", "properties": {"take_snapshot": {"scope": "set", "note": ""}}}
        )
    )
    return paths


@dataclass
class Vm:
    spec: MemberSpec
    paths: Paths
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def store(self) -> Path:
        return self.paths.root / "var/vcap/store"

    @property
    def log(self) -> Path:
        return self.paths.root / "daemon.log"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@contextmanager
def xfs_pool(base: Path) -> Iterator[Path]:
    """A reflink-capable XFS pool on a loop device, like tests/disks' and localbosh's."""
    image = base / "pool.img"
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    sh("truncate", "-s", "4G", str(image))
    sh("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
    sh("mount", "-o", "loop", str(image), str(mountpoint))
    try:
        yield mountpoint
    finally:
        # Detached loop devices let go of their images a moment later: retry, then lazily.
        for _ in range(20):
            umount = subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
            if umount.returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


DAEMON = (
    "import logging, sys; from pathlib import Path; "
    "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s'); "
    "from disk_snapshots.daemon import run; from disk_snapshots.snapshotter import Paths; "
    "sys.exit(run(Paths(root=Path(sys.argv[1]))))"
)


def start_daemon(vm: Vm) -> subprocess.Popen[bytes]:
    with vm.log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", DAEMON, str(vm.paths.root)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    client_deadline = time.monotonic() + 15
    while time.monotonic() < client_deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon of {vm.spec.label} exited: {vm.log.read_text()}")
        if "agent API on" in vm.log.read_text():
            return process
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"daemon of {vm.spec.label} did not serve: {vm.log.read_text()}")


def stop_daemon(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class MemberDisks:
    """A 256 MiB (or sized) ext4 loop disk per member, mounted at <root>/var/vcap/store,
    and the one way to let them all go again (thaw, unmount, detach, delete)."""

    pool: Path
    tmp_path: Path
    stores: list[Path] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)

    def attach(self, spec: MemberSpec, size: str = "256M") -> tuple[Path, str, Path]:
        """The member's root, its disk CID and the disk image."""
        root = self.tmp_path / spec.label.replace("/", "-")
        root.mkdir()
        cid = f"disk-{self.tmp_path.name}-{spec.address.rsplit('.', 1)[1]}"[:60]
        image = self.pool / f"{cid}.img"
        self.images.append(image)
        sh("truncate", "-s", size, str(image))
        sh("mkfs.ext4", "-q", "-F", str(image))
        store = root / "var/vcap/store"
        store.mkdir(parents=True)
        device = sh("losetup", "--find", "--show", str(image)).strip()
        self.devices.append(device)
        sh("mount", device, str(store))
        self.stores.append(store)
        return root, cid, image

    def release(self) -> None:
        for store in self.stores:
            subprocess.run(["fsfreeze", "-u", str(store)], capture_output=True, check=False)
            subprocess.run(["umount", str(store)], check=False)
        for device in self.devices:
            subprocess.run(["losetup", "-d", device], check=False)
        for image in self.images:
            image.unlink(missing_ok=True)
        shutil.rmtree(self.pool / "snapshots", ignore_errors=True)


@contextmanager
def running_cluster(pool: Path, tmp_path: Path, tls: TlsConfig) -> Iterator[list[Vm]]:
    """Three VM-shaped roots, each with its own ext4 loop disk at var/vcap/store and its
    own snapshotter daemon (a real process) serving the agent API on 127.0.0.2/.3/.4."""
    port = free_port()
    vms: list[Vm] = []
    disks = MemberDisks(pool, tmp_path)
    try:
        for spec in MEMBERS:
            root, cid, image = disks.attach(spec)
            doc = member_doc(spec, MEMBERS, tls, port, root, pool)
            vms.append(Vm(spec, write_vm(root, doc, cid, image), port))
        for vm in vms:
            vm.process = start_daemon(vm)
        yield vms
    finally:
        for vm in vms:
            if vm.process is not None:
                stop_daemon(vm.process)
        disks.release()
