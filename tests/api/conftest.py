"""Fixtures of the agent API tests: certificates, an API on fakes, VM roots on loop disks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from disk_snapshots.api.client import AgentClient
from disk_snapshots.api.server import serve
from disk_snapshots.config import TlsConfig
from disk_snapshots.daemon.agent import Agent
from disk_snapshots.metrics import Metrics
from support.cluster import Vm
from support.cluster import running_cluster
from support.disks import require_root
from support.disks import xfs_pool
from support.fakes import FakeApi
from support.fakes import FakeMonit
from support.fakes import fake_snapshotter
from support.tls import make_tls


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


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A reflink-capable XFS pool on a loop device, like tests/disks' and localbosh's."""
    require_root()
    with xfs_pool(tmp_path_factory.mktemp("apipool")) as mountpoint:
        yield mountpoint


@pytest.fixture
def cluster(pool: Path, tmp_path: Path, tls: TlsConfig) -> Iterator[list[Vm]]:
    """Three VM-shaped roots, each with its own ext4 loop disk at var/vcap/store and its
    own snapshotter daemon (a real process) serving the agent API on 127.0.0.2/.3/.4."""
    with running_cluster(pool, tmp_path, tls) as vms:
        yield vms
