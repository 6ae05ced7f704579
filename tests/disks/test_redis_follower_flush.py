"""A follower whose leader is gone still flushes: Debian's redis-server, two of them.

With replica-serve-stale-data no (what the README asks of followers), Redis refuses
BGSAVE with MASTERDOWN while the link to the leader is down, which is the case in every
rolling deploy, stop and delete that takes the leader first. The flush must still save
the follower's (unchanging) data, and leave the follower refusing stale reads after.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from disk_snapshots.vm.resp import RedisClient
from disk_snapshots.vm.resp import RedisError
from disk_snapshots.vm.services import RedisService
from support.net import free_port


def _start(tmp: Path, name: str, port: int, extra: str = "") -> subprocess.Popen[bytes]:
    data = tmp / name
    data.mkdir()
    conf = tmp / f"{name}.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {port}\ndir {data}\nsave ""\nappendonly no\n'
        f'protected-mode no\ndaemonize no\nlogfile ""\n{extra}'
    )
    return subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)


def _until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except RedisError:
            pass  # starting
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


@pytest.fixture
def orphaned_follower(tmp_path: Path) -> Iterator[RedisClient]:
    leader_port, follower_port = free_port(), free_port()
    leader = _start(tmp_path, "leader", leader_port)
    follower = _start(
        tmp_path,
        "follower",
        follower_port,
        f"replicaof 127.0.0.1 {leader_port}\nreplica-serve-stale-data no\n",
    )
    try:
        up, down = RedisClient(port=leader_port), RedisClient(port=follower_port)
        _until(lambda: up.call("PING") == "PONG", "leader answers")
        up.call("SET", "greeting", "hello")
        _until(lambda: down.call("GET", "greeting") == "hello", "follower in sync")
        leader.terminate()
        leader.wait(10)
        _until(lambda: down.info("replication").get("master_link_status") == "down", "link down")
        yield down
    finally:
        for proc in (leader, follower):
            proc.kill()
            proc.wait(10)


def test_a_follower_without_its_leader_saves_and_still_refuses_stale_reads(
    orphaned_follower: RedisClient,
) -> None:
    client = orphaned_follower
    with pytest.raises(RedisError, match="MASTERDOWN"):
        client.call("BGSAVE")  # what Redis itself does: the case the flush must handle
    saves = int(client.info("persistence")["rdb_saves"])
    assert RedisService(client).flush() is True
    assert int(client.info("persistence")["rdb_saves"]) == saves + 1
    assert client.call("CONFIG", "GET", "replica-serve-stale-data") == [
        "replica-serve-stale-data",
        "no",
    ]
    with pytest.raises(RedisError, match="MASTERDOWN"):
        client.call("GET", "greeting")
