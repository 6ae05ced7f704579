"""Fixtures of the agent API tests: certificates, an API on fakes, VM roots on loop disks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apihelpers import MEMBERS
from apihelpers import FakeApi
from apihelpers import FakeMonit
from apihelpers import Vm
from apihelpers import fake_snapshotter
from apihelpers import free_port
from apihelpers import make_tls
from apihelpers import member_doc
from apihelpers import write_vm

from disk_snapshots.agent_client import AgentClient
from disk_snapshots.api import Agent
from disk_snapshots.api import serve
from disk_snapshots.config import TlsConfig
from disk_snapshots.metrics import Metrics


@pytest.fixture(scope="session")
def tls() -> TlsConfig:
    return make_tls()


@pytest.fixture(scope="session")
def other_tls() -> TlsConfig:
    """The same names, from another CA: must get nowhere."""
    return make_tls()


@pytest.fixture
def fake_api(tmp_path: Path, tls: TlsConfig) -> Iterator[FakeApi]:
    snapshotter = fake_snapshotter(tmp_path, tls)
    monit = FakeMonit()
    agent = Agent(snapshotter, Metrics(labels={"deployment": "redis"}), monit=monit)
    agent.sets.decision_seconds = 2.0
    running = serve(agent, tls, "127.0.0.1", 0, poll_interval=0.02)
    try:
        yield FakeApi(running, agent, monit, AgentClient.connect("127.0.0.1", running.port, tls))
    finally:
        running.stop()


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A reflink-capable XFS pool on a loop device, like tests/disks' and localbosh's."""
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices, mounts and fsfreeze")
    for tool in ("mkfs.xfs", "mkfs.ext4", "losetup", "fsfreeze"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/bootstrap installs it")
    base = tmp_path_factory.mktemp("apipool")
    image = base / "pool.img"
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    sh("truncate", "-s", "4G", str(image))
    sh("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
    sh("mount", "-o", "loop", str(image), str(mountpoint))
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
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


@pytest.fixture
def cluster(pool: Path, tmp_path: Path, tls: TlsConfig) -> Iterator[list[Vm]]:
    """Three VM-shaped roots, each with its own ext4 loop disk at var/vcap/store and its
    own snapshotter daemon (a real process) serving the agent API on 127.0.0.2/.3/.4."""
    port = free_port()
    vms: list[Vm] = []
    devices: list[str] = []
    images: list[Path] = []
    try:
        for spec in MEMBERS:
            root = tmp_path / spec.label.replace("/", "-")
            root.mkdir()
            cid = f"disk-{tmp_path.name}-{spec.address.rsplit('.', 1)[1]}"[:60]
            image = pool / f"{cid}.img"
            images.append(image)
            sh("truncate", "-s", "256M", str(image))
            sh("mkfs.ext4", "-q", "-F", str(image))
            store = root / "var/vcap/store"
            store.mkdir(parents=True)
            device = sh("losetup", "--find", "--show", str(image)).strip()
            devices.append(device)
            sh("mount", device, str(store))
            doc = member_doc(spec, MEMBERS, tls, port, root, pool)
            vms.append(Vm(spec, write_vm(root, doc, cid, image), port))
        for vm in vms:
            vm.process = start_daemon(vm)
        yield vms
    finally:
        for vm in vms:
            if vm.process is not None:
                stop_daemon(vm.process)
        for vm in vms:
            subprocess.run(["fsfreeze", "-u", str(vm.store)], capture_output=True, check=False)
            subprocess.run(["umount", str(vm.store)], check=False)
        for device in devices:
            subprocess.run(["losetup", "-d", device], check=False)
        for image in images:
            image.unlink(missing_ok=True)
        shutil.rmtree(pool / "snapshots", ignore_errors=True)
