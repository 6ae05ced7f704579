"""Restore from backups against three real agents, loop disks and Redis processes: a set
backed up by the take-snapshot errand, the snapshots lost, every member restored from its
own backup of the set."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from disk_snapshots.commands.errands import take_snapshot
from disk_snapshots.config import TlsConfig
from disk_snapshots.snapshot.snapshotter import Snapshotter
from support.configdocs import spec_defaults
from support.redis_cluster import Node
from support.redis_cluster import redis_cluster
from support.redis_cluster import run_errand
from support.redis_cluster import wait_for

pytestmark = pytest.mark.root


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def cluster(pool: Path, tmp_path: Path, tls: TlsConfig, store: Path) -> Iterator[list[Node]]:
    backups = {"provider": {"loopback": {"pool": str(pool), "backup_store": str(store)}}}
    with redis_cluster(pool, tmp_path, tls, properties=backups) as nodes:
        yield nodes


def keys(node: Node) -> set[str]:
    found = node.redis().call("KEYS", "*")
    assert isinstance(found, list)
    return {str(k) for k in found}


def test_a_set_backed_up_by_the_errand_restores_every_member_after_the_snapshots_are_lost(
    cluster: list[Node], pool: Path, store: Path
) -> None:
    leader, data0, data1 = cluster
    for n in range(50):
        leader.redis().call("SET", f"a:{n}", f"value-{n}")
    wait_for("replicated", lambda: len(keys(data0)) == len(keys(data1)) == 50)
    errand = {"job": "take-snapshot", "properties": spec_defaults("take-snapshot")}
    errand["properties"]["take_snapshot"] |= {"scope": "set", "backup": True}
    leader.vm.paths.job_config("take-snapshot").write_text(json.dumps(errand))

    assert take_snapshot(leader.vm.paths) == 0

    backups = Snapshotter.load(leader.vm.paths).backups()
    assert len(backups) == 3 and {b.state for b in backups} == {"completed"}
    (set_id,) = {b.annotations.set_id for b in backups}
    shutil.rmtree(pool / "snapshots")  # the pool loses every snapshot
    leader.redis().call("FLUSHALL")
    for n in range(5):
        leader.redis().call("SET", f"later:{n}", "x")
    leader.restore_config(target=f"set:{set_id}", followers="restore")

    code, out = run_errand(leader)

    assert code == 0, out
    assert out.count(" from backup bkp-") >= 3
    assert out.count("restore.source auto: the snapshot is gone") == 3
    want = {f"a:{n}" for n in range(50)}
    assert keys(leader) == want
    for follower in (data0, data1):
        wait_for(f"{follower.label} replicates", lambda f=follower: keys(f) == want)
