"""Fixtures of the restore tests: the agent API tests' pool and certificates, a redis cluster."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The cluster builder and certificates live with the agent API tests; reuse them.
sys.path.append(str(Path(__file__).resolve().parents[1] / "api"))

from apihelpers import make_tls
from apihelpers import xfs_pool
from restorehelpers import Node
from restorehelpers import redis_cluster

from disk_snapshots.config import TlsConfig


@pytest.fixture(scope="session")
def tls() -> TlsConfig:
    return make_tls()


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices, mounts and fsfreeze")
    for tool in ("mkfs.xfs", "mkfs.ext4", "losetup", "fsfreeze", "rsync", "redis-server"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/bootstrap installs it")
    with xfs_pool(tmp_path_factory.mktemp("restorepool")) as mountpoint:
        yield mountpoint


@pytest.fixture
def cluster(pool: Path, tmp_path: Path, tls: TlsConfig) -> Iterator[list[Node]]:
    with redis_cluster(pool, tmp_path, tls) as nodes:
        yield nodes
