"""Benchmarks of snapshot sets and the daemon at rest, each against a baseline from the same run.

- the longest freeze of any member during a three-member set (three snapshotter daemons
  on real loop disks, 127.0.0.2-4, coordinated over the mutual-TLS agent API), against
  a single instance's quiesced snapshot; both with a writer dirtying every disk;
- a daemon's resident memory and CPU over a minute idle (scheduler and API serving),
  against a bare ``python3 -c "import time; time.sleep(60)"``.

Run as root through scripts/bench-sets (or scripts/bench). Prints
``bench: <name> <value> <unit> baseline=<value> ratio=<value>``. BENCH_IDLE_SECONDS
shortens the idle minute for a quick look.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1])]

from disk_snapshots.sets.coordinator import run_set  # noqa: E402
from disk_snapshots.snapshot.snapshotter import Snapshotter  # noqa: E402
from support.cluster import running_cluster  # noqa: E402
from support.disks import xfs_pool  # noqa: E402
from support.tls import make_tls  # noqa: E402

ROUNDS = 7
TICK = os.sysconf("SC_CLK_TCK")


def line(name: str, value: float, unit: str, baseline: float) -> None:
    ratio = f"{value / baseline:.2f}" if baseline > 0 else "inf"
    print(f"bench: {name} {value:.2f} {unit} baseline={baseline:.2f} ratio={ratio}", flush=True)


@contextmanager
def writers(stores: list[Path]) -> Iterator[None]:
    """Keep dirty pages on every disk, as a live service would (blocked while frozen)."""
    stop = threading.Event()

    def write(store: Path) -> None:
        block = os.urandom(256 * 1024)
        while not stop.is_set():
            with (store / "load.bin").open("wb") as out:
                for _ in range(4):
                    out.write(block)
            stop.wait(0.02)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) / 1024
    return 0.0


def main() -> int:
    if os.geteuid() != 0:
        print("bench-sets: needs root (loop disks, fsfreeze)", file=sys.stderr)
        return 1
    idle_seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
    tls = make_tls()
    with tempfile.TemporaryDirectory(prefix="bench-sets-") as tmp:
        base = Path(tmp)
        (base / "pool").mkdir()
        (base / "vms").mkdir()
        with xfs_pool(base / "pool") as pool, running_cluster(pool, base / "vms", tls) as vms:
            coordinator = Snapshotter.load(vms[0].paths)
            singles: list[float] = []
            sets: list[float] = []
            with writers([vm.store for vm in vms]):
                for _ in range(ROUNDS):
                    singles.append(coordinator.take("manual").frozen_seconds)
                    outcome = run_set(coordinator, "bench")
                    if outcome.state != "complete":
                        print(f"bench-sets: set incomplete: {outcome.reason}", file=sys.stderr)
                        return 1
                    sets.append(outcome.longest_freeze)
            line(
                "set_longest_member_freeze_median",
                statistics.median(sets) * 1000,
                "ms",
                statistics.median(singles) * 1000,
            )
            line("set_longest_member_freeze_max", max(sets) * 1000, "ms", max(singles) * 1000)

            daemon = vms[1].process
            if daemon is None:
                return 1
            bare = subprocess.Popen(
                ["python3", "-c", f"import time; time.sleep({idle_seconds})"],
                stdin=subprocess.DEVNULL,
            )
            try:
                time.sleep(0.5)  # let the bare interpreter finish starting up
                start_wall = time.monotonic()
                start_daemon, start_bare = cpu_seconds(daemon.pid), cpu_seconds(bare.pid)
                time.sleep(idle_seconds - 1)
                wall = time.monotonic() - start_wall
                daemon_cpu = (cpu_seconds(daemon.pid) - start_daemon) / wall * 100
                bare_cpu = (cpu_seconds(bare.pid) - start_bare) / wall * 100
                daemon_rss, bare_rss = rss_mib(daemon.pid), rss_mib(bare.pid)
            finally:
                bare.kill()
                bare.wait()
            line("daemon_idle_rss", daemon_rss, "MiB", bare_rss)
            line("daemon_idle_cpu", daemon_cpu, "%core", bare_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
