"""Fixtures of the restore tests: a pool, certificates and a redis cluster (tests/support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from disk_snapshots.config import TlsConfig
from support.disks import require_root
from support.disks import xfs_pool
from support.redis_cluster import Node
from support.redis_cluster import redis_cluster
from support.tls import make_tls


@pytest.fixture(scope="session")
def tls() -> TlsConfig:
    return make_tls()


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_root("rsync", "redis-server")
    with xfs_pool(tmp_path_factory.mktemp("restorepool")) as mountpoint:
        yield mountpoint


@pytest.fixture
def cluster(pool: Path, tmp_path: Path, tls: TlsConfig) -> Iterator[list[Node]]:
    with redis_cluster(pool, tmp_path, tls) as nodes:
        yield nodes
