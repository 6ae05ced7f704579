"""The loopback provider and the quiesce sequence on real ext4 disks, loop devices and fsfreeze."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import Consistency
from disk_snapshots.annotations import Role
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.config import QuiesceConfig
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.loopback import LoopbackProvider
from disk_snapshots.snapshot.quiesce import Freezer
from disk_snapshots.snapshot.quiesce import QuiesceError
from disk_snapshots.snapshot.quiesce import snapshot_quiesced
from disk_snapshots.vm.instance import Disk
from disk_snapshots.vm.resp import RedisClient
from disk_snapshots.vm.services import NoService
from disk_snapshots.vm.services import RedisService

pytestmark = pytest.mark.root

FREEZE = QuiesceConfig(freeze=True, freeze_timeout=5, on_failure="abort")


def annotator(disk: Disk, trigger: str = "manual"):  # type: ignore[no-untyped-def]
    def annotate(consistency: Consistency, role: Role, moment: datetime) -> Annotations:
        return Annotations(
            deployment="test",
            instance_group="redis",
            instance_id="id-0",
            index=0,
            az="z1",
            disk_cid=disk.cid,
            job="redis",
            created_at=moment,
            trigger=trigger,
            consistency=consistency,
            role=role,
            release_version="0.1.0",
        )

    return annotate


def writable(path: Path, timeout: float) -> bool:
    """Can a file be written under ``path`` within ``timeout`` seconds (a frozen fs blocks)?

    A thread, not a process: a writer blocked on a frozen filesystem cannot be killed
    until the thaw, and the thread simply finishes then.
    """
    done = threading.Event()

    def write() -> None:
        (path / "probe").write_text("x")
        done.set()

    threading.Thread(target=write, daemon=True).start()
    return done.wait(timeout)


def test_snapshot_is_the_point_in_time_and_materializes(disk: Disk, tmp_path: Path) -> None:
    provider = LoopbackProvider.for_disk("", disk)
    (disk.mount / "data").write_text("before")
    taken = snapshot_quiesced(
        Freezer(
            disk=disk,
            provider=provider,
            service=NoService(),
            quiesce=FREEZE,
            lease_dir=tmp_path / "leases",
        ),
        annotator(disk),
    )
    (disk.mount / "data").write_text("after")
    snapshot = taken.snapshot
    assert snapshot.annotations.consistency == "fs"  # frozen, nothing flushed: profile none
    assert taken.frozen_seconds < 1.0
    with provider.materialize(snapshot.id) as root:
        assert (root / "data").read_text() == "before"
        with pytest.raises(OSError):
            (root / "data").write_text("x")  # read-only
    assert provider.get(snapshot.id) == snapshot
    assert provider.list(Query(instance="redis/0")) == [snapshot]
    copy = __import__("json").loads(
        (disk.image.parent / "snapshots" / f"{snapshot.id}.json").read_text()
    )  # type: ignore[union-attr]
    assert copy["tags"]["disk-snapshots:copy"] == "reflink"
    provider.delete(snapshot.id)
    assert provider.list() == []
    with pytest.raises(UnknownSnapshot, match="does not exist"):
        provider.get(snapshot.id)


@pytest.mark.parametrize(
    "hostile",
    ["../../etc/passwd", "snap-../x", "snap-0123456789abcdefg", "", "snap-0123456789abcdef0/.."],
)
def test_hostile_ids_never_reach_a_path(disk: Disk, hostile: str) -> None:
    provider = LoopbackProvider.for_disk("", disk)
    for call in (provider.get, provider.delete):
        with pytest.raises(UnknownSnapshot, match="is not a loopback snapshot id"):
            call(hostile)


def test_sigkill_while_frozen_thaws_within_the_lease(disk: Disk, tmp_path: Path) -> None:
    """The holder dies while the disk is frozen: the watchdog thaws it (snapshot/quiesce.py)."""
    marker = tmp_path / "frozen"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import pathlib, time
        from disk_snapshots.snapshot.quiesce import frozen
        mount = pathlib.Path({str(disk.mount)!r})
        with frozen(mount, 30, pathlib.Path({str(tmp_path / "leases")!r})):
            pathlib.Path({str(marker)!r}).write_text("frozen")
            time.sleep(600)
    """),
        ]
    )
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert holder.poll() is None and time.monotonic() < deadline, "holder never froze the disk"
        time.sleep(0.05)
    assert not writable(disk.mount, timeout=0.5), "the disk should be frozen"
    killed_at = time.monotonic()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert writable(disk.mount, timeout=10), "the watchdog did not thaw the disk"
    # Thawed because the holder died, long before the 30 s lease deadline.
    assert time.monotonic() - killed_at < 5


class SlowProvider(LoopbackProvider):
    def snapshot(self, disk: Disk, annotations: Annotations) -> Snapshot:
        time.sleep(2.5)
        return super().snapshot(disk, annotations)


def test_expired_lease_deletes_the_snapshot(disk: Disk, tmp_path: Path) -> None:
    provider = SlowProvider.for_disk("", disk)
    short = QuiesceConfig(freeze=True, freeze_timeout=1, on_failure="abort")
    with pytest.raises(
        QuiesceError, match="released by the watchdog before the snapshot was fixed"
    ):
        snapshot_quiesced(
            Freezer(
                disk=disk,
                provider=provider,
                service=NoService(),
                quiesce=short,
                lease_dir=tmp_path / "leases",
            ),
            annotator(disk),
        )
    assert provider.list() == []
    assert writable(disk.mount, timeout=5)


@pytest.fixture
def redis(disk: Disk, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisClient]:
    """Debian's redis-server with its data on the disk, like the fixture release's redis job.

    Parametrize it indirectly with extra redis.conf lines (e.g. a renamed command).
    """
    data = disk.mount / "redis"
    data.mkdir()
    port = 16379 + os.getpid() % 1000
    conf = tmp_path / "redis.conf"
    extra = getattr(request, "param", "")
    conf.write_text(f'port {port}\nbind 127.0.0.1\ndir {data}\nsave ""\nappendonly no\n{extra}\n')
    proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)
    client = RedisClient(port=port)
    for _ in range(100):
        try:
            client.call("PING")
            break
        except Exception:
            time.sleep(0.05)
    try:
        yield client
    finally:
        proc.terminate()
        proc.wait()


def test_redis_key_written_before_the_snapshot_is_in_it(
    disk: Disk, redis: RedisClient, tmp_path: Path
) -> None:
    provider = LoopbackProvider.for_disk("", disk)
    redis.call("SET", "written-before", "yes")
    taken = snapshot_quiesced(
        Freezer(
            disk=disk,
            provider=provider,
            service=RedisService(redis),
            quiesce=FREEZE,
            lease_dir=tmp_path / "leases",
        ),
        annotator(disk),
    )
    redis.call("SET", "written-after", "yes")
    assert taken.snapshot.annotations.consistency == "app"
    assert taken.snapshot.annotations.role == "standalone"
    with provider.materialize(taken.snapshot.id) as root:
        dump = (root / "redis" / "dump.rdb").read_bytes()
    assert b"written-before" in dump
    assert b"written-after" not in dump


@pytest.mark.parametrize("redis", ['rename-command BGSAVE ""'], indirect=True)
def test_redis_refusing_to_flush_aborts_or_is_recorded(
    disk: Disk, redis: RedisClient, tmp_path: Path
) -> None:
    """A Redis whose BGSAVE is renamed away (as some operators do) refuses the flush."""
    provider = LoopbackProvider.for_disk("", disk)
    refusing = RedisService(redis)
    with pytest.raises(QuiesceError, match="no snapshot taken: redis refused to flush") as caught:
        snapshot_quiesced(
            Freezer(
                disk=disk,
                provider=provider,
                service=refusing,
                quiesce=FREEZE,
                lease_dir=tmp_path / "leases",
            ),
            annotator(disk),
        )
    assert "unknown command" in str(caught.value) and "BGSAVE" in str(caught.value)
    assert provider.list() == []
    lenient = QuiesceConfig(freeze=True, freeze_timeout=5, on_failure="crash-consistent")
    taken = snapshot_quiesced(
        Freezer(
            disk=disk,
            provider=provider,
            service=refusing,
            quiesce=lenient,
            lease_dir=tmp_path / "leases",
        ),
        annotator(disk),
    )
    assert taken.snapshot.annotations.consistency == "fs"
    assert any("flush failed" in w for w in taken.warnings)
    assert provider.list()[0].annotations.consistency != "app"


def test_an_unreachable_redis_aborts_the_snapshot(disk: Disk, tmp_path: Path) -> None:
    provider = LoopbackProvider.for_disk("", disk)
    absent = RedisService(RedisClient(port=1, timeout=0.5))  # nothing listens there
    with pytest.raises(QuiesceError, match="no snapshot taken: redis refused to flush"):
        snapshot_quiesced(
            Freezer(
                disk=disk,
                provider=provider,
                service=absent,
                quiesce=FREEZE,
                lease_dir=tmp_path / "leases",
            ),
            annotator(disk),
        )
    assert provider.list() == []
