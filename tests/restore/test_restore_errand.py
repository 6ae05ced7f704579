"""`bosh run-errand restore` against three real agents, loop disks and Redis processes."""

from __future__ import annotations

import pytest
from restorehelpers import Node
from restorehelpers import replicating
from restorehelpers import run_errand
from restorehelpers import wait_for

from disk_snapshots.restore_copy import Journal

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
    for follower in (data0, data1):
        wait_for(f"{follower.label} replicates", lambda f=follower: keys(f) == want)
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
