"""Benchmarks of the loopback backup tier (issue 11), each against a baseline measured in the
same run, on the same machine.

- backup-throughput: MiB of image data per second of a whole backup (sparse copy with a
  checksum, flushed, read back from the store and verified), against ``cp
  --sparse=always`` of the same snapshot image followed by an fsync of the copy (a copy
  that is not on the storage is no backup). Goal: >= 0.9x.
- backup-copy-throughput: the same backup until its last block was written and
  flushed (the read-back runs alongside and finishes after), against the same baseline.
- backup-write-pause-max: the longest write a Redis client (AOF on the disk, one write
  at a time) sees while a backup of a snapshot of its disk is copied, against the
  longest it sees during the quiesced snapshot itself. Goal: none beyond the snapshot's
  (the backup reads the snapshot image, never the live disk).
- backup-write-p99: the 99th percentile of those writes during the backup, against the
  same client's with nothing running (as long a window, just before).

The source image's pages are dropped from the page cache before every copy
(posix_fadvise), so both sides read it from the storage. The backup store is on the
benchmark's temporary directory (another filesystem than the XFS pool, as advised).

Run as root through scripts/bench. Prints ``bench: <name> <value> <unit> baseline=<v> ratio=<r>``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "bench"))

from bench_snapshots import Redis  # noqa: E402
from bench_snapshots import Writer  # noqa: E402
from bench_snapshots import annotate_for  # noqa: E402
from bench_snapshots import disk  # noqa: E402
from bench_snapshots import free_port  # noqa: E402
from bench_snapshots import pause_stats  # noqa: E402
from bench_snapshots import quiesced_snapshot  # noqa: E402
from bench_snapshots import report  # noqa: E402

from disk_snapshots.catalog import Snapshot  # noqa: E402
from disk_snapshots.providers.image_copy import copy_image  # noqa: E402
from disk_snapshots.providers.loopback import LoopbackProvider  # noqa: E402
from disk_snapshots.vm.resp import RedisClient  # noqa: E402
from support.disks import xfs_pool  # noqa: E402

MIB = 2**20
DATA_MIB = 1024  # written into a 4 GiB disk: the image is sparse, as a real disk is
RUNS = 3


def evict(*paths: Path) -> None:
    """Drop the files' pages from the page cache: the next read comes from the storage.
    Both the snapshot image and the pool's own image file (the pool is a loop device on
    it, with a page cache of its own)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cp_sparse(source: Path, target: Path, cached: Path) -> float:
    evict(source, cached)
    started = time.monotonic()
    subprocess.run(["cp", "--sparse=always", "--", str(source), str(target)], check=True)
    subprocess.run(["sync", str(target)], check=True)  # coreutils sync FILE: fsync(2) of it
    seconds = time.monotonic() - started
    target.unlink()
    return seconds


def fill(mount: Path) -> None:
    chunk = os.urandom(8 * MIB)
    for n in range(DATA_MIB // 8):
        # Distinct blocks (no two alike), as files on a real disk are.
        (mount / f"file-{n:04d}").write_bytes(n.to_bytes(8, "big") + chunk[8:])
    subprocess.run(["sync", "-f", str(mount)], check=True)


def bench_throughput(pool_dir: Path, base: Path) -> None:
    store = base / "store-throughput"
    with disk(pool_dir, "disk-backup", "4G", base / "mnt-throughput") as d:
        fill(d.mount)
        provider = LoopbackProvider.for_disk("", d, str(store))
        snapshot: Snapshot = provider.snapshot(
            d, annotate_for(d)("clean", "leader", datetime.now(UTC))
        )
        image = provider.directory / f"{snapshot.id}.img"
        store.mkdir()
        ours: list[float] = []
        flushed: list[float] = []
        theirs: list[float] = []
        data = 0
        for _ in range(RUNS):
            theirs.append(cp_sparse(image, store / "cp.img", base / "pool.img"))
            evict(image, base / "pool.img")
            copied = copy_image(image, store / "ours.img")
            (store / "ours.img").unlink()
            ours.append(copied.seconds)
            flushed.append(copied.flushed_seconds)
            data = copied.data_bytes
        # And once through the provider, to show the whole backup path writes the same.
        backup = provider.backup(snapshot.id)
        assert backup.state == "completed", backup
    mib = data / MIB
    baseline = mib / statistics.median(theirs)
    report("backup-throughput", mib / statistics.median(ours), "MiB/s", baseline)
    report("backup-copy-throughput", mib / statistics.median(flushed), "MiB/s", baseline)


def bench_write_pause(pool_dir: Path, base: Path) -> None:
    store = base / "store-pause"
    with disk(pool_dir, "disk-pause", "2G", base / "mnt-pause") as d:
        data = d.mount / "redis"
        data.mkdir()
        port = free_port()
        redis = Redis(data, port)
        redis.start()
        try:
            client = RedisClient(port=port)
            # 400 MiB of values: a backup with something to copy.
            for i in range(0, 400_000, 1000):
                client.call("MSET", *[x for j in range(i, i + 1000) for x in (f"s{j}", "x" * 1024)])
            # Loading 400 MiB starts an AOF rewrite, during which Redis refuses BGSAVE (and
            # so the quiesced snapshot): let it finish, and start no other.
            client.call("CONFIG", "SET", "auto-aof-rewrite-percentage", "0")
            while client.info("persistence").get("aof_rewrite_in_progress") == "1":
                time.sleep(0.2)
            provider = LoopbackProvider.for_disk("", d, str(store))
            writer = Writer(port)
            writer.thread.start()
            time.sleep(1.0)
            during_snapshot: list[float] = []
            during_backup: list[float] = []
            idle: list[float] = []
            for _ in range(RUNS):
                start = time.monotonic()
                taken = quiesced_snapshot(d, provider, client, base)
                during_snapshot += writer.window(start, time.monotonic())
                time.sleep(0.5)
                start = time.monotonic()
                provider.backup(taken.snapshot.id)
                finished = time.monotonic()
                during_backup += writer.window(start, finished)
                time.sleep(finished - start)
                idle += writer.window(finished, time.monotonic())
            writer.stop.set()
            writer.thread.join()
        finally:
            redis.stop()
    report("backup-write-pause-max", max(during_backup) * 1000, "ms", max(during_snapshot) * 1000)
    report(
        "backup-write-p99", pause_stats(during_backup)[1] * 1000, "ms", pause_stats(idle)[1] * 1000
    )


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (loop devices, mounts, fsfreeze)", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    try:
        # Unmounted lazily if a loop device lets go late: nothing stays mounted.
        with xfs_pool(base, "16G") as pool_dir:
            bench_throughput(pool_dir, base)
            bench_write_pause(pool_dir, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
