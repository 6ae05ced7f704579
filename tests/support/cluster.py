"""VM-shaped roots on real loop disks, each with a snapshotter daemon (a real process)
serving the agent API: the set tests, the restore tests and the set benchmark."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from disk_snapshots.config import TlsConfig
from disk_snapshots.snapshot.snapshotter import Paths
from support.configdocs import snapshotter_doc
from support.disks import sh
from support.net import free_port


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


DAEMON = (
    "import logging, sys; from pathlib import Path; "
    "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s'); "
    "from disk_snapshots.commands.daemon import run; "
    "from disk_snapshots.snapshot.snapshotter import Paths; "
    "sys.exit(run(Paths(root=Path(sys.argv[1]))))"
)


def start_daemon(vm: Vm) -> subprocess.Popen[bytes]:
    # A restarted daemon appends to the log: only what it writes counts.
    start = vm.log.stat().st_size if vm.log.exists() else 0
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
        if b"agent API on" in vm.log.read_bytes()[start:]:
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
