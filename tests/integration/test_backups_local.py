"""Backups in the three-instance local deployment (issue 11): the daemons' schedule backs up
every instance's snapshot into a backup store outside the disk pool; then the pool loses
every snapshot and Redis loses its data, and the restore errand brings the deployment
back from the backups, leader first, with every key."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from lbtest import REPO
from lbtest import LocalBosh
from lbtest import deploy_unscheduled
from lbtest import needs_root
from test_redis_ha import redis

from localbosh.state import Layout

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

MANIFEST = REPO / "manifests" / "local" / "redis-ha.yml"
BACKUPS = REPO / "manifests" / "local" / "operations" / "backups.yml"
SNAPSHOTS = "/var/vcap/jobs/snapshotter/bin/snapshots"
KEYS = 300


def on_vm(lb: LocalBosh, instance: str, command: str) -> str:
    return lb.run("-d", "redis", "ssh", instance, "-c", command).stdout


def catalog(lb: LocalBosh) -> list[dict[str, Any]]:
    records = json.loads(on_vm(lb, "redis-leader/0", f"{SNAPSHOTS} list --json 2>/dev/null"))
    assert isinstance(records, list)
    return records


def tier(records: list[dict[str, Any]], name: str, state: str = "") -> list[dict[str, Any]]:
    return [r for r in records if r["tier"] == name and (not state or r["state"] == state)]


def backed_up(lb: LocalBosh) -> set[str]:
    """The instances with a completed backup of a manual snapshot."""
    return {
        f"{r['annotations']['instance_group']}/{r['annotations']['index']}"
        for r in tier(catalog(lb), "backup", "completed")
        if r["annotations"]["trigger"] == "manual"
    }


def keys(lb: LocalBosh, host: str) -> set[str]:
    out = redis(lb, host, "--scan", "--pattern", "k:*")
    return set(out.split()) if out else set()


def wait_for(what: str, predicate: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def test_the_restore_errand_brings_the_deployment_back_from_backups_after_the_pool_is_lost(
    localbosh: LocalBosh, tmp_path: Path
) -> None:
    store = tmp_path / "backups"
    # Only the errand's snapshots: an hourly one taken after the loss would be restored.
    deploy_unscheduled(
        localbosh, MANIFEST, tmp_path, "-o", str(BACKUPS), "-v", f"backup_store={store}"
    )
    hosts = {
        f"{i['group']}/{i['index']}": i["address"] for i in localbosh.state("redis")["instances"]
    }
    leader = hosts["redis-leader/0"]
    for n in range(KEYS):
        redis(localbosh, leader, "SET", f"k:{n}", f"value-{n}")
    assert redis(localbosh, leader, "WAIT", "2", "10000") == "2"
    want = {f"k:{n}" for n in range(KEYS)}

    localbosh.run("-d", "redis", "run-errand", "take-snapshot")
    # The daemons' backup schedule (every 10 s) copies each new snapshot to the store.
    wait_for("a completed backup of every instance", lambda: len(backed_up(localbosh)) == 3)
    table = localbosh.run("-d", "redis", "run-errand", "list-snapshots").stdout
    assert "Backup ID" in table and "(completed)" in table
    assert store.is_dir() and len(list(store.glob("bkp-*.img"))) >= 3

    # The disaster: the pool loses every snapshot, and the data is destroyed.
    pool = Layout(localbosh.home).pool
    on_vm(localbosh, "redis-leader/0", f"rm -rf {pool}/snapshots")
    records = catalog(localbosh)
    assert tier(records, "snapshot") == []
    assert len(tier(records, "backup", "completed")) >= 3
    redis(localbosh, leader, "FLUSHALL")
    for host in hosts.values():
        wait_for(f"{host} is empty", lambda h=host: keys(localbosh, h) == set(), timeout=30)

    out = localbosh.run("-d", "redis", "run-errand", "restore", timeout=900).stdout

    assert "restore.source: auto" in out
    assert "restore.source auto: the snapshot is gone" in out
    assert "1. redis-leader/0 (leader): copy snap-" in out and " from backup bkp-" in out
    assert re.search(r"redis-leader/0: restored snap-\w+ from backup bkp-\w+; now leader", out)
    started = [out.index(f"started {name}") for name in ("redis-leader/0", "redis-data/0")]
    assert started[0] < started[1], "the leader starts first"
    assert keys(localbosh, leader) == want
    for name in ("redis-data/0", "redis-data/1"):
        wait_for(f"{name} replicates", lambda h=hosts[name]: keys(localbosh, h) == want, 60)
        assert "role:slave" in redis(localbosh, hosts[name], "INFO", "replication")
    # The safety snapshots went into the (emptied) pool: the way back exists again.
    safety = [
        r
        for r in tier(catalog(localbosh), "snapshot")
        if r["annotations"]["trigger"] == "pre-restore"
    ]
    assert len(safety) == 3
