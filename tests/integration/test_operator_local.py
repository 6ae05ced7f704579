"""The seed's workflow through ``disk-snapshots`` against the local deployment (issue 12).

``DISK_SNAPSHOTS_BOSH`` is ``scripts/localbosh``, so the operator's command drives the
local Director exactly as it drives the real bosh CLI: ``-n --json``, ``instances
--details``, ``ssh -c … --results``, ``stop``, ``attach-disk``, ``start``. The scenario
is the seed's: the leader dies, a data node is promoted, writes go on there, the data is
lost, and a restore brings every key back on the leader and on every follower (read
right after the command says done), by copying and by replacing the disks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from lbtest import REPO
from lbtest import LocalBosh
from lbtest import deploy_unscheduled
from lbtest import needs_root
from lbtest import redis
from lbtest import variable
from lbtest import wait_in_sync

from localbosh.state import Layout

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

MANIFEST = REPO / "manifests" / "local" / "redis-ha.yml"
SNAPSHOTS = "/var/vcap/jobs/snapshotter/bin/snapshots"


def operator(
    lb: LocalBosh, *args: str, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``disk-snapshots -d redis ARGS`` with scripts/localbosh as its bosh CLI."""
    env = {
        **os.environ,
        "LOCALBOSH_HOME": str(lb.home),
        "DISK_SNAPSHOTS_BOSH": str(REPO / "scripts" / "localbosh"),
        "BOSH_DEPLOYMENT": "redis",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "disk_snapshots.operator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"disk-snapshots {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def instances(lb: LocalBosh) -> dict[str, dict[str, Any]]:
    return {f"{i['group']}/{i['index']}": i for i in lb.state("redis")["instances"]}


def keys(lb: LocalBosh, host: str) -> set[str]:
    return set(redis(lb, host, "--scan").split())


def wait_for(what: str, predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.5)


def catalog(lb: LocalBosh) -> list[dict[str, Any]]:
    return list(json.loads(operator(lb, "snapshots", "--json").stdout))


def write(lb: LocalBosh, host: str, prefix: str, count: int) -> None:
    script = "".join(f"SET {prefix}:{n} v{n}\n" for n in range(count))
    subprocess.run(
        ["redis-cli", "-h", host, "-a", _secret(lb), "--no-auth-warning"],
        input=script,
        capture_output=True,
        text=True,
        check=True,
    )


def _secret(lb: LocalBosh) -> str:
    return variable(lb, "redis", "redis_password")


def data_in_another_az(path: Path) -> Path:
    """redis-data in z2, the leader in z1: a replace makes each disk in its own AZ."""
    path.write_text(
        yaml.safe_dump(
            [{"type": "replace", "path": "/instance_groups/name=redis-data/azs", "value": ["z2"]}]
        )
    )
    return path


def seed_scenario(lb: LocalBosh) -> dict[str, Any]:
    """Deployed; 100 keys; a snapshot of every disk; the leader dies, redis-data/1 is
    promoted and takes 50 more keys, then is snapshotted; then the data is lost."""
    insts = instances(lb)
    leader, data0, data1 = (
        insts[n]["address"] for n in ("redis-leader/0", "redis-data/0", "redis-data/1")
    )
    # With replica-serve-stale-data no, a follower still loading answers MASTERDOWN.
    wait_in_sync(lb)
    write(lb, leader, "a", 100)
    wait_for("replicated", lambda: len(keys(lb, data1)) == 100 and len(keys(lb, data0)) == 100)
    taken = operator(lb, "take-snapshot", "--note", "before the failover").stdout
    assert taken.count("snap-") >= 3 and "taken: " in taken
    lb.run("-d", "redis", "ssh", "redis-leader/0", "-c", "/var/vcap/bosh/bin/monit stop redis")
    redis(lb, data1, "REPLICAOF", "NO", "ONE")
    redis(lb, data0, "REPLICAOF", data1, "6379")
    write(lb, data1, "b", 50)
    wait_for("data/0 follows data/1", lambda: len(keys(lb, data0)) == 150)
    promoted = operator(lb, "take-snapshot", "redis-data/1", "--note", "promoted", "--json").stdout
    (snapshot,) = json.loads(promoted)
    assert snapshot["annotations"]["role"] == "leader"
    redis(lb, data1, "FLUSHALL")
    redis(lb, data1, "SET", "garbage", "after the loss")
    wait_for("the loss replicated", lambda: keys(lb, data0) == {"garbage"})
    return {"leader": leader, "data": (data0, data1), "promoted": snapshot["id"]}


def check_restored(lb: LocalBosh, scenario: dict[str, Any], out: str) -> None:
    """Every key back on the leader and on every follower, read right after "done"."""
    want = {f"a:{n}" for n in range(100)} | {f"b:{n}" for n in range(50)}
    assert f"redis-leader/0 (leader): copy {scenario['promoted']}" in out
    assert "redis-data/1 was leader then, its data goes to redis-leader/0" in out
    assert keys(lb, scenario["leader"]) == want
    for follower in scenario["data"]:
        assert keys(lb, follower) == want, f"{follower} is not in sync right after done"
        assert "role:slave" in redis(lb, follower, "INFO", "replication")
    safety = [s for s in catalog(lb) if s["annotations"]["trigger"] == "pre-restore"]
    assert {s["annotations"]["consistency"] for s in safety} == {"clean"}
    assert len(safety) >= 3 and all(s["id"] in out for s in safety[:3])


def test_the_seed_restored_by_copy_and_the_refusals_before_it(
    localbosh: LocalBosh, tmp_path: Path
) -> None:
    deploy_unscheduled(localbosh, MANIFEST, tmp_path, timeout=3600)
    # A consistent set, run on its coordinator (it freezes every member under one lease).
    taken = operator(localbosh, "take-snapshot", "--set", "--note", "a set").stdout
    assert "complete (coordinated by redis-leader/" in taken and taken.count("snap-") == 3
    scenario = seed_scenario(localbosh)
    # With the leader dead, a set cannot be complete, and says why.
    dead = operator(localbosh, "take-snapshot", "--set", check=False)
    assert dead.returncode == 1 and "is incomplete: redis-leader/0: quiesce failed" in dead.stderr
    refusals(localbosh)
    started = time.monotonic()
    out = operator(localbosh, "restore", "--method", "copy", "--yes").stdout
    seconds = time.monotonic() - started
    print(f"\noperator: restore --method copy of the seed took {seconds:.1f}s end to end")
    check_restored(localbosh, scenario, out)
    assert "copied onto its disk" in out
    assert "snapshot is copied onto the current disk" in out


def test_the_seed_restored_by_replace_and_the_way_back(
    localbosh: LocalBosh, tmp_path: Path
) -> None:
    ops = data_in_another_az(tmp_path / "z2.yml")
    deploy_unscheduled(localbosh, MANIFEST, tmp_path, "-o", str(ops), timeout=3600)
    scenario = seed_scenario(localbosh)
    old_disk = instances(localbosh)["redis-leader/0"]["disk_cid"]
    started = time.monotonic()
    out = operator(localbosh, "restore", "--method", "replace", "--yes").stdout
    seconds = time.monotonic() - started
    print(f"\noperator: restore --method replace of the seed took {seconds:.1f}s end to end")
    check_restored(localbosh, scenario, out)
    leader = instances(localbosh)["redis-leader/0"]
    assert leader["disk_cid"] != old_disk and leader["disk_size"] == 1024
    orphans = json.loads(localbosh.run("--json", "disks", "--orphaned").stdout)["Tables"][0]["Rows"]
    assert [o["disk_cid"] for o in orphans] == [old_disk]
    assert orphans[0]["instance"] == f"redis-leader/{leader['id']}" and orphans[0]["az"] == "z1"
    assert f"Orphaned disks (bosh disks --orphaned): {old_disk}" in out
    # The way back the summary gives: the old disk attached again holds what the leader
    # had before the restore (the first 100 keys; it died before the promotion).
    way_back = next(line for line in out.splitlines() if "attach-disk" in line and old_disk in line)
    slug = f"redis-leader/{leader['id']}"
    assert f"bosh -d redis attach-disk {slug} {old_disk}" in way_back
    localbosh.run("-d", "redis", "stop", slug)
    localbosh.run("-d", "redis", "attach-disk", slug, old_disk)
    localbosh.run("-d", "redis", "start", slug)
    assert keys(localbosh, scenario["leader"]) == {f"a:{n}" for n in range(100)}
    restored = leader["disk_cid"]
    orphans = json.loads(localbosh.run("--json", "disks", "--orphaned").stdout)["Tables"][0]["Rows"]
    assert [o["disk_cid"] for o in orphans] == [restored]


def refusals(lb: LocalBosh) -> None:
    """Each stops before anything is stopped or written, and names what to do."""
    before = {s["id"] for s in catalog(lb)}
    unknown = operator(
        lb, "restore", "--yes", "--snapshot", "redis-leader/0=snap-0123456789abcdef0", check=False
    )
    assert unknown.returncode == 1
    assert (
        "--snapshot redis-leader/0: snapshot snap-0123456789abcdef0 does not exist"
        in unknown.stderr
    )
    other = foreign_snapshot(lb)
    foreign = operator(lb, "restore", "--yes", "--snapshot", f"redis-leader/0={other}", check=False)
    assert foreign.returncode == 1
    assert f"snapshot {other} belongs to deployment other, not redis" in foreign.stderr
    for refusal in (unknown, foreign):
        assert "nothing was stopped or written" in refusal.stderr
        assert "bosh stop" not in refusal.stdout
    states = {i["state"] for i in instances(lb).values()}
    assert states == {"started"}
    assert {s["id"] for s in catalog(lb)} == before


def foreign_snapshot(lb: LocalBosh) -> str:
    """A snapshot of deployment "other" in the same pool (the same IaaS account)."""
    snapshot_id = "snap-0fedcba9876543210"
    record = catalog(lb)[0]
    tags = {f"disk-snapshots:{k}": v for k, v in record["annotations"].items()}
    tags["disk-snapshots:deployment"] = "other"
    # The pool is mounted at the same path in every instance (localbosh/disks.py).
    script = (
        f"cd {Layout(lb.home).pool}/snapshots && "
        f"cp --reflink=auto {record['id']}.img {snapshot_id}.img && cat > {snapshot_id}.json"
    )
    subprocess.run(
        [sys.executable, "-m", "localbosh", "-d", "redis", "ssh", "redis-leader/0", "-c", script],
        input=json.dumps({"id": snapshot_id, "tags": tags}),
        env={**os.environ, "LOCALBOSH_HOME": str(lb.home)},
        capture_output=True,
        text=True,
        check=True,
    )
    return snapshot_id
