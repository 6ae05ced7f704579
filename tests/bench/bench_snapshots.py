"""Benchmarks of the snapshot path (issue #4), each against a baseline measured in the same run.

- write pause a Redis client sees during a quiesced snapshot (BGSAVE + fsfreeze + reflink),
  against stopping Redis, snapshotting and starting it again (what a BOSH "clean"
  snapshot costs);
- snapshot time for 1, 4 and 16 GiB disks (reflink: should not grow with size), against
  the 1 GiB time;
- seconds drain adds: the drain hook with a snapshot against the same hook with
  drain.snapshot_on empty.

Run as root through scripts/bench. Prints ``bench: <name> <value> <unit> baseline=<v> ratio=<r>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from disk_snapshots.annotations import Annotations  # noqa: E402
from disk_snapshots.annotations import Consistency  # noqa: E402
from disk_snapshots.annotations import Role  # noqa: E402
from disk_snapshots.commands.hooks import drain  # noqa: E402
from disk_snapshots.config import QuiesceConfig  # noqa: E402
from disk_snapshots.providers.loopback import LoopbackProvider  # noqa: E402
from disk_snapshots.snapshot.quiesce import Freezer  # noqa: E402
from disk_snapshots.snapshot.quiesce import Taken  # noqa: E402
from disk_snapshots.snapshot.quiesce import snapshot_quiesced  # noqa: E402
from disk_snapshots.snapshot.snapshotter import Paths  # noqa: E402
from disk_snapshots.vm.instance import Disk  # noqa: E402
from disk_snapshots.vm.resp import RedisClient  # noqa: E402
from disk_snapshots.vm.services import RedisService  # noqa: E402
from support.configdocs import snapshotter_doc  # noqa: E402

QUIESCE = QuiesceConfig(freeze=True, freeze_timeout=10, on_failure="abort")


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def report(name: str, value: float, unit: str, baseline: float) -> None:
    ratio = value / baseline if baseline else float("inf")
    print(f"bench: {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={ratio:.3g}", flush=True)


@contextlib.contextmanager
def pool(base: Path) -> Iterator[Path]:
    image, mnt = base / "pool.img", base / "pool"
    mnt.mkdir()
    sh("truncate", "-s", "64G", str(image))
    sh("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
    sh("mount", "-o", "loop", str(image), str(mnt))
    try:
        yield mnt
    finally:
        # Detached loop devices release the pool's files a moment later.
        for _ in range(50):
            if subprocess.run(["umount", str(mnt)], check=False).returncode == 0:
                break
            time.sleep(0.2)


@contextlib.contextmanager
def disk(pool_dir: Path, name: str, size: str, mount: Path) -> Iterator[Disk]:
    image = pool_dir / f"{name}.img"
    sh("truncate", "-s", size, str(image))
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
    mount.mkdir(parents=True)
    device = sh("losetup", "--find", "--show", str(image)).strip()
    sh("mount", device, str(mount))
    try:
        yield Disk(cid=name, mount=mount, hint={"path": str(image)})
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        subprocess.run(["losetup", "-d", device], check=False)


def annotate_for(d: Disk):  # type: ignore[no-untyped-def]
    def annotate(consistency: Consistency, role: Role, moment: datetime) -> Annotations:
        return Annotations(
            deployment="bench",
            instance_group="redis",
            instance_id="bench-0",
            index=0,
            az="z1",
            disk_cid=d.cid,
            job="redis",
            created_at=moment,
            trigger="manual",
            consistency=consistency,
            role=role,
            release_version="bench",
        )

    return annotate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """Debian's redis-server with AOF on the disk: every write reaches the filesystem."""

    def __init__(self, data: Path, port: int) -> None:
        self.data, self.port = data, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = RedisClient(port=self.port, timeout=1)
        for _ in range(200):
            with contextlib.suppress(Exception):
                client.call("PING")
                return
            time.sleep(0.02)
        raise RuntimeError("redis did not start")

    def stop(self) -> None:
        if self.proc:
            with contextlib.suppress(Exception):
                RedisClient(port=self.port, timeout=5).call("SHUTDOWN", "SAVE")
            self.proc.wait(timeout=30)
            self.proc = None


class Writer:
    """One client writing continuously; records each write's latency (reconnecting if needed)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        n = 0
        conn: socket.socket | None = None
        while not self.stop.is_set():
            started = time.monotonic()
            while not self.stop.is_set():
                try:
                    if conn is None:
                        conn = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                    payload = f"k{n % 5000}"
                    conn.sendall(
                        f"*3\r\n$3\r\nSET\r\n${len(payload)}\r\n{payload}\r\n$3\r\nval\r\n".encode()
                    )
                    if not conn.recv(64).startswith(b"+OK"):
                        raise OSError("not OK")
                    break
                except OSError:
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.001)
            self.latencies.append((started, time.monotonic() - started))
            n += 1
        if conn is not None:
            conn.close()

    def window(self, start: float, end: float) -> list[float]:
        return [lat for t, lat in self.latencies if start <= t + lat and t <= end]


def pause_stats(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def quiesced_snapshot(
    d: Disk, provider: LoopbackProvider, client: RedisClient, base: Path
) -> Taken:
    """A quiesced snapshot of the disk Redis writes to (BGSAVE, fsfreeze, reflink, thaw)."""
    freezer = Freezer(
        disk=d,
        provider=provider,
        service=RedisService(client),
        quiesce=QUIESCE,
        lease_dir=base / "leases",
    )
    return snapshot_quiesced(freezer, annotate_for(d))


def bench_write_pause(pool_dir: Path, base: Path) -> None:
    with disk(pool_dir, "disk-pause", "2G", base / "store-pause") as d:
        data = d.mount / "redis"
        data.mkdir()
        port = free_port()
        redis = Redis(data, port)
        redis.start()
        client = RedisClient(port=port)
        # A service with data (100k keys of 1 KiB): what BGSAVE writes, and what a
        # restarted Redis must load again before it answers.
        for i in range(0, 100_000, 1000):
            client.call("MSET", *[x for j in range(i, i + 1000) for x in (f"seed{j}", "x" * 1024)])
        provider = LoopbackProvider.for_disk("", d)
        writer = Writer(port)
        writer.thread.start()
        time.sleep(1.0)
        quiesced: list[float] = []
        frozen: list[float] = []
        for _ in range(5):
            start = time.monotonic()
            taken = quiesced_snapshot(d, provider, client, base)
            quiesced += writer.window(start, time.monotonic())
            frozen.append(taken.frozen_seconds)
            time.sleep(0.5)
        baseline: list[float] = []
        for _ in range(3):
            start = time.monotonic()
            redis.stop()
            provider.snapshot(
                d, annotate_for(d)("clean", "standalone", datetime.now().astimezone())
            )
            redis.start()
            time.sleep(0.3)
            baseline += writer.window(start, time.monotonic())
        writer.stop.set()
        writer.thread.join()
        redis.stop()
    q, b = pause_stats(quiesced), pause_stats(baseline)
    for label, i in (("p50", 0), ("p99", 1), ("max", 2)):
        report(f"redis-write-pause-{label}", q[i] * 1000, "ms", b[i] * 1000)
    # The longest freeze, against the whole stop-snapshot-start outage.
    report("filesystem-frozen-max", max(frozen) * 1000, "ms", b[2] * 1000)


def bench_snapshot_sizes(pool_dir: Path, base: Path) -> None:
    times: dict[str, float] = {}
    for size in ("1G", "4G", "16G"):
        with disk(pool_dir, f"disk-{size}", size, base / f"store-{size}") as d:
            # Real data on every disk, so the clone has extents to share, not just holes.
            with (d.mount / "data.bin").open("wb") as handle:
                for _ in range(16):
                    handle.write(os.urandom(8 * 1024 * 1024))
            provider = LoopbackProvider.for_disk("", d)
            samples = []
            for _ in range(5):
                start = time.monotonic()
                snapshot_quiesced(
                    Freezer(
                        disk=d,
                        provider=provider,
                        service=_NoFlush(),
                        quiesce=QUIESCE,
                        lease_dir=base / "leases",
                    ),
                    annotate_for(d),
                )
                samples.append(time.monotonic() - start)
            times[size] = statistics.median(samples)
    for size, seconds in times.items():
        report(f"snapshot-time-{size}iB", seconds * 1000, "ms", times["1G"] * 1000)


class _NoFlush:
    name = "none"

    def role(self) -> Role:
        return "standalone"

    def flush(self) -> bool:
        return False

    def resume(self) -> None:
        pass


def bench_drain(pool_dir: Path, base: Path) -> None:
    with disk(pool_dir, "disk-drain", "1G", base / "store-drain") as d:
        root = base / "vm"
        store = root / "var/vcap/store"
        store.mkdir(parents=True)
        sh("mount", "--bind", str(d.mount), str(store))
        try:
            bosh = root / "var/vcap/bosh"
            bosh.mkdir(parents=True)
            (bosh / "managed_disk_settings.json").write_text(d.cid)
            (bosh / "settings.json").write_text(
                json.dumps({"disks": {"persistent": {d.cid: {"path": str(d.image)}}}})
            )
            paths = Paths(root=root)
            doc = snapshotter_doc()
            doc["properties"]["service"]["profile"] = "none"
            doc["properties"]["service"]["jobs"] = []
            env = {
                "BOSH_JOB_STATE": '{"persistent_disk":1024}',
                "BOSH_JOB_NEXT_STATE": '{"persistent_disk":1024}',
            }

            def timed(snapshot_on: list[str]) -> float:
                doc["properties"]["drain"]["snapshot_on"] = snapshot_on
                paths.config.parent.mkdir(parents=True, exist_ok=True)
                paths.config.write_text(json.dumps(doc))
                samples = []
                for _ in range(5):
                    start = time.monotonic()
                    code, out = drain(["job_changed", "hash_changed"], env, paths)
                    samples.append(time.monotonic() - start)
                    assert (code, out) == (0, "0")
                return statistics.median(samples)

            without, with_snapshot = timed([]), timed(["deploy"])
        finally:
            sh("umount", str(store))
    report("drain-seconds-added", with_snapshot - without, "s", without)


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (loop devices, mounts, fsfreeze)", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="bench-snapshots-"))
    try:
        with pool(base) as pool_dir:
            bench_write_pause(pool_dir, base)
            bench_snapshot_sizes(pool_dir, base)
            bench_drain(pool_dir, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
