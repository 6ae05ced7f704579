"""`bosh run-errand restore` against three real agents, loop disks and Redis processes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import pytest

from disk_snapshots.commands.errands import take_snapshot
from disk_snapshots.config import TlsConfig
from disk_snapshots.providers.loopback import LoopbackProvider
from disk_snapshots.restore import coordinator
from disk_snapshots.restore.journal import Journal
from support.cluster import stop_daemon
from support.disks import temporary_resources
from support.redis_cluster import LEADER
from support.redis_cluster import Node
from support.redis_cluster import redis_cluster
from support.redis_cluster import replicating
from support.redis_cluster import run_errand
from support.redis_cluster import tree_digest
from support.redis_cluster import wait_for

pytestmark = pytest.mark.root


def write(node: Node, prefix: str, count: int) -> None:
    client = node.redis()
    for n in range(count):
        client.call("SET", f"{prefix}:{n}", f"value-{prefix}-{n}")


def keys(node: Node) -> set[str]:
    found = node.redis().call("KEYS", "*")
    assert isinstance(found, list)
    return {str(k) for k in found}


def expected(*groups: tuple[str, int]) -> set[str]:
    return {f"{prefix}:{n}" for prefix, count in groups for n in range(count)}


def test_failover_then_restore_copies_the_promoted_members_snapshot_to_the_leader(
    cluster: list[Node],
) -> None:
    leader, data0, data1 = cluster
    write(leader, "a", 100)
    wait_for("data/1 has a:*", lambda: len(keys(data1)) == 100)
    before = leader.take("before the failover")
    assert before.annotations.role == "leader"
    # The leader dies; redis-data/1 is promoted and takes more writes.
    leader.monit("stop", "redis")
    data1.redis().call("REPLICAOF", "NO", "ONE")
    data0.redis().call("REPLICAOF", data1.vm.spec.address, str(data1.redis_port))
    write(data1, "b", 50)
    wait_for("data/0 follows data/1", lambda: len(keys(data0)) == 150 and replicating(data0))
    promoted = data1.take("after the failover")
    assert promoted.annotations.role == "leader"
    # Then the data is destroyed.
    data1.redis().call("FLUSHALL")
    data1.redis().call("SET", "garbage", "1")

    assert run_errand(data0)[0] == 0  # not the coordinator: says who is
    code, out = run_errand(leader)
    assert code == 0, out
    assert f"1. redis-leader/0 (leader): copy {promoted.id}" in out
    assert "redis-data/1 was leader then, its data goes to redis-leader/0" in out
    assert "clean: taken after the service stopped" in out

    want = expected(("a", 100), ("b", 50))
    assert keys(leader) == want
    for follower in (data0, data1):  # "done" means in sync: no waiting here
        assert keys(follower) == want
        assert follower.redis().info("replication")["role"] == "slave"
    safety = [s for s in leader.catalog() if s.annotations.trigger == "pre-restore"]
    assert sorted(s.annotations.instance for s in safety) == [
        "redis-data/0",
        "redis-data/1",
        "redis-leader/0",
    ]
    assert {s.annotations.consistency for s in safety} == {"clean"}
    for s in safety:
        assert s.id in out
    for node in cluster:
        assert Journal.read(node.vm.store) is None
        last = Journal.read_last(node.vm.store)
        assert last is not None and last.phase == "done"
    # The plan held its snapshot while the restore ran; done, nothing is held.
    assert not [s.id for s in leader.catalog() if s.annotations.hold_by]


def test_restore_to_a_set_gives_every_member_its_own_set_snapshot(cluster: list[Node]) -> None:
    leader, data0, data1 = cluster
    write(leader, "a", 40)
    wait_for("replicated", lambda: len(keys(data1)) == 40 and len(keys(data0)) == 40)
    assert take_snapshot(leader.vm.paths) == 0
    set_ids = {s.annotations.set_id for s in leader.catalog()}
    assert len(set_ids) == 1
    set_id = set_ids.pop()
    write(leader, "later", 10)
    leader.restore_config(target=f"set:{set_id}", followers="restore")
    code, out = run_errand(leader)
    assert code == 0, out
    assert out.count(": copy snap-") == 3
    want = expected(("a", 40))
    assert keys(leader) == want
    for follower in (data0, data1):
        wait_for(f"{follower.label} replicates", lambda f=follower: keys(f) == want)


def test_restore_to_a_time_takes_the_newest_leader_snapshot_before_it(
    cluster: list[Node],
) -> None:
    leader, _, data1 = cluster
    write(leader, "a", 10)
    first = leader.take()
    time.sleep(1.1)
    moment = datetime.now(UTC)
    time.sleep(1.1)
    write(leader, "b", 10)
    leader.take()
    leader.restore_config(target=f"time:{moment.isoformat()}")
    code, out = run_errand(leader)
    assert code == 0, out
    assert f"(leader): copy {first.id}" in out
    assert keys(leader) == expected(("a", 10))
    wait_for("data/1 replicates", lambda: keys(data1) == expected(("a", 10)))


def _untouched(cluster: list[Node]) -> tuple[list[str], list[str], list[str]]:
    digests = [tree_digest(n.vm.store) for n in cluster]
    snapshots = sorted(s.id for s in cluster[0].catalog())
    states = [n.redis_state() for n in cluster]
    return digests, snapshots, states


def test_dry_run_touches_nothing(cluster: list[Node]) -> None:
    leader = cluster[0]
    write(leader, "a", 10)
    chosen = leader.take()
    before = _untouched(cluster)
    leader.restore_config(dry_run=True)
    code, out = run_errand(leader)
    assert code == 0, out
    assert "Restore plan for deployment redis" in out
    assert "dry run: nothing was stopped, snapshotted or written" in out
    assert _untouched(cluster) == before
    assert before[2] == ["running"] * 3
    # The plan's snapshot is held against retention for the real run, an hour.
    held = next(s for s in leader.catalog() if s.id == chosen.id).annotations
    assert held.hold_by.startswith("restore-") and held.hold_by in out
    assert held.held(datetime.now(UTC) + timedelta(minutes=59))
    assert not held.held(datetime.now(UTC) + timedelta(minutes=61))


def test_a_snapshot_that_does_not_exist_fails_before_anything_is_stopped(
    cluster: list[Node],
) -> None:
    leader = cluster[0]
    write(leader, "a", 10)
    leader.take()
    before = _untouched(cluster)
    leader.restore_config(snapshots={"redis-leader/0": "snap-00000000000000000"})
    code, out = run_errand(leader)
    assert code == 1, out
    assert "snapshot snap-00000000000000000 does not exist" in out
    assert "nothing was stopped" in out
    assert _untouched(cluster) == before


def test_no_eligible_leader_snapshot_fails_before_anything_is_stopped(
    cluster: list[Node],
) -> None:
    leader, data0, _ = cluster
    data0.take()  # a follower's snapshot is no leader data
    before = _untouched(cluster)
    code, out = run_errand(leader)
    assert code == 1, out
    assert "no eligible snapshot taken as leader" in out
    assert "nothing was stopped" in out
    assert _untouched(cluster) == before


def test_an_unreachable_member_fails_before_anything_is_stopped(cluster: list[Node]) -> None:
    leader, _, data1 = cluster
    leader.take()
    assert data1.vm.process is not None
    stop_daemon(data1.vm.process)
    code, out = run_errand(leader)
    assert code == 1, out
    assert "redis-data/1" in out and "nothing was stopped" in out
    assert [n.redis_state() for n in cluster] == ["running"] * 3


ERRAND = (
    "import sys; from pathlib import Path; from disk_snapshots.commands import restore; "
    "from disk_snapshots.snapshot.snapshotter import Paths; "
    "sys.exit(restore.run(Paths(root=Path(sys.argv[1]))))"
)


def kill_while_copying(leader: Node, tmp_path: Path, *, agent_too: bool = False) -> None:
    """Run the errand; SIGKILL it (and the leader's agent) once the copy has started."""
    log = (tmp_path / "errand.log").open("wb")
    with log:
        errand = subprocess.Popen(
            [sys.executable, "-c", ERRAND, str(leader.vm.paths.root)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        try:

            def copying() -> bool:
                journal = Journal.read(leader.vm.store)
                return journal is not None and journal.phase == "copying"

            wait_for("the copy starts", copying, timeout=60)
            if agent_too and leader.vm.process is not None:
                leader.vm.process.kill()
                leader.vm.process.wait()
            errand.send_signal(signal.SIGKILL)
        finally:
            errand.wait()


def test_sigkill_during_the_copy_then_rerun_completes(cluster: list[Node], tmp_path: Path) -> None:
    leader, _, data1 = cluster
    write(leader, "a", 20)
    blob = leader.vm.store / "blob.bin"
    blob.write_bytes(os.urandom(1024 * 1024) * 150)
    want_blob = hashlib.sha256(blob.read_bytes()).hexdigest()
    chosen = leader.take()
    write(leader, "b", 20)
    blob.unlink()
    kill_while_copying(leader, tmp_path)
    # The agent finishes the copy it was asked for; the rerun must not need it to.
    interrupted = Journal.read(leader.vm.store)
    assert interrupted is not None and interrupted.phase in ("copying", "copied")
    code, out = run_errand(leader)
    assert code == 0, out
    assert f"{interrupted.restore_id} did not finish" in out
    assert "recorded by the earlier run" in out
    assert keys(leader) == expected(("a", 20))
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == want_blob
    assert f"copy {chosen.id}" in out
    wait_for("data/1 replicates", lambda: keys(data1) == expected(("a", 20)))
    assert len([s for s in leader.catalog() if s.annotations.trigger == "pre-restore"]) == 3


@pytest.fixture
def uneven_cluster(pool: Path, tmp_path: Path, tls: TlsConfig) -> Iterator[list[Node]]:
    with redis_cluster(pool, tmp_path, tls, sizes={"redis-data/1": "640M"}) as nodes:
        yield nodes


def test_a_full_disk_leaves_the_service_stopped_and_names_the_safety_snapshot(
    uneven_cluster: list[Node],
) -> None:
    leader, data0, data1 = uneven_cluster
    write(leader, "a", 10)
    wait_for("replicated", lambda: len(keys(data1)) == 10)
    subprocess.run(
        ["dd", "if=/dev/urandom", f"of={data1.vm.store}/blob.bin", "bs=1M", "count=320"],
        check=True,
        capture_output=True,
    )
    too_big = data1.take()
    leader.restore_config(snapshots={"redis-leader/0": too_big.id})
    code, out = run_errand(leader)
    assert code == 1, out
    assert "No space left on device" in out
    safety = next(
        s
        for s in leader.catalog()
        if s.annotations.trigger == "pre-restore" and s.annotations.instance == "redis-leader/0"
    )
    assert f"the safety snapshot {safety.id} holds the data from before the restore" in out
    assert f"redis-leader/0: {safety.id}" in out  # the way back
    assert "redis-leader/0 (127.0.0.2): service stopped" in out
    assert "journal failed" in out
    assert [n.redis_state() for n in uneven_cluster] == ["stopped"] * 3
    # The way back: name the safety snapshots, and the failed restore is replaced.
    leader.restore_config(snapshots={"redis-leader/0": safety.id})
    code, out = run_errand(leader)
    assert code == 0, out
    assert "it is replaced by a new restore" in out
    assert keys(leader) == expected(("a", 10))
    wait_for("data/0 replicates", lambda: keys(data0) == expected(("a", 10)))


def test_a_failed_verify_states_every_service_and_a_rerun_finishes(cluster: list[Node]) -> None:
    leader, data0, _ = cluster
    write(leader, "a", 10)
    leader.take()
    write(leader, "b", 10)
    leader.restore_config(verify=["false"])
    code, out = run_errand(leader)
    assert code == 1, out
    assert "FAILED while verifying the leader redis-leader/0" in out
    assert "restore.verify: false exited 1" in out
    assert "redis-leader/0 (127.0.0.2): service running" in out
    assert "redis-data/0 (127.0.0.3): service stopped" in out
    assert [n.redis_state() for n in cluster] == ["running", "stopped", "stopped"]
    leader.restore_config(verify=["true"])
    code, out = run_errand(leader)
    assert code == 0, out
    assert "resuming it" in out and "restore.verify passed" in out
    assert keys(leader) == expected(("a", 10))
    wait_for("data/0 replicates", lambda: keys(data0) == expected(("a", 10)))


def test_sigkill_of_the_agent_while_it_copies_leaves_nothing_once_it_is_back(
    cluster: list[Node], pool: Path, tmp_path: Path
) -> None:
    # The agent holds the clone, its loop device and its mount while it copies; killed
    # there (with the errand), its next start releases them and the rerun finishes.
    leader, _, data1 = cluster
    write(leader, "a", 20)
    (leader.vm.store / "blob.bin").write_bytes(os.urandom(1024 * 1024) * 150)
    chosen = leader.take()
    write(leader, "b", 20)
    kill_while_copying(leader, tmp_path, agent_too=True)
    held = temporary_resources(pool)
    assert any(r.startswith("mount ") for r in held), held
    assert any(r.startswith("loop ") for r in held), held
    leader.restart_daemon()
    assert "left behind by a killed operation" in leader.vm.log.read_text()
    assert temporary_resources(pool) == []
    code, out = run_errand(leader)
    assert code == 0, out
    assert f"copy {chosen.id}" in out
    assert keys(leader) == expected(("a", 20))
    wait_for("data/1 replicates", lambda: keys(data1) == expected(("a", 20)))
    assert temporary_resources(pool) == []


def test_a_provider_that_cannot_copy_is_refused_before_anything_is_stopped(
    cluster: list[Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As openstack-cinder refuses materialize: the coordinator asks while it plans.
    leader = cluster[0]
    write(leader, "a", 10)
    leader.take()
    before = _untouched(cluster)
    refusal = "this provider cannot copy a snapshot onto a disk; restore with --method replace"
    monkeypatch.setattr(LoopbackProvider, "copy_refusal", lambda self: refusal, raising=False)
    code, out = run_errand(leader)
    assert code == 1, out
    assert f"the plan copies onto redis-leader/0, and {refusal}; nothing was stopped" in out
    assert _untouched(cluster) == before
    leader.restore_config(dry_run=True)
    code, out = run_errand(leader)
    assert code == 1 and "--method replace" in out, out  # a dry run says so too


def test_done_means_every_follower_serves_the_restored_data_and_nothing_after(
    cluster: list[Node],
) -> None:
    leader, data0, data1 = cluster
    write(leader, "a", 200)
    wait_for("replicated", lambda: len(keys(data0)) == 200 and len(keys(data1)) == 200)
    leader.take()
    # The loss, and writes after it: the followers replicate them onto their disks.
    leader.redis().call("FLUSHALL")
    write(leader, "after-the-loss", 30)
    wait_for("followers follow the loss", lambda: keys(data1) == expected(("after-the-loss", 30)))
    code, out = run_errand(leader)
    assert code == 0, out
    assert "Order: stop the followers, then the leader; take a clean safety snapshot" in out
    assert out.index("is in sync with the leader") < out.index(": done")
    want = expected(("a", 200))
    for node in (leader, data0, data1):  # read at once: the errand said done
        assert keys(node) == want, node.label
        info = node.redis().info("replication")
        if node is not leader:
            assert info["master_link_status"] == "up"
            assert info["master_sync_in_progress"] == "0"


def test_a_follower_that_does_not_sync_in_time_fails_the_restore_by_name(
    cluster: list[Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader, _, data1 = cluster
    write(leader, "a", 10)
    leader.take()
    # redis-data/1 replicates from nowhere once it is started again.
    conf = data1.vm.paths.root / "redis.conf"
    conf.write_text(conf.read_text().replace(f"replicaof {LEADER.address}", "replicaof 127.0.0.9"))
    monkeypatch.setattr(coordinator, "SYNC_WAIT_SECONDS", 3.0)
    code, out = run_errand(leader)
    assert code == 1, out
    assert "FAILED while waiting for the followers to be in sync" in out
    assert "redis-data/1: its link to the leader is down" in out
    assert ": done" not in out
