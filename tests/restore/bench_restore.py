"""Copy-restore throughput against ``cp -a`` and ``rsync -aHAX`` of the same tree, same run.

Two data sets on a real ext4 loop disk, copied onto another (as a restore copies from
the materialized snapshot onto /var/vcap/store):

- small: 2 GiB of small files (4-60 KiB, in directories of 1000);
- sparse: 2 GiB of data in four 1 GiB sparse files (1 MiB extents between 1 MiB holes).

Each method starts from a freshly made target filesystem with cold caches and ends with
a sync; two rounds in opposite orders, the best of each counts. ``restore-copy`` is
disk_snapshots.restore_copy.copy_tree: empty the target, cp -a, then the rsync dry-run
verification. The baseline is cp -a. Run as root through
scripts/bench-restore (or scripts/bench); prints
``bench: <name> <value> <unit> baseline=<value> ratio=<value>``. BENCH_RESTORE_MIB
scales both data sets down for a quick look.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from disk_snapshots.restore.copy import copy_tree
from disk_snapshots.restore.journal import Journal

MIB = 1024 * 1024
TOTAL_MIB = int(os.environ.get("BENCH_RESTORE_MIB", "2048"))


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextmanager
def ext4(base: Path, name: str, size: str) -> Iterator[tuple[Path, Path]]:
    image, mountpoint = base / f"{name}.img", base / name
    mountpoint.mkdir()
    sh("truncate", "-s", size, str(image))
    # Without lazy init no kernel thread zeroes inode tables in the background of a copy.
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
    sh("mount", "-o", "loop", str(image), str(mountpoint))
    try:
        yield image, mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        mountpoint.rmdir()
        image.unlink(missing_ok=True)


def small_files(root: Path, total: int) -> None:
    rng = random.Random(6)  # noqa: S311 - repeatable file sizes, not secrets
    chunk = os.urandom(64 * 1024)
    written, n = 0, 0
    while written < total:
        directory = root / f"d{n // 1000:04d}"
        if n % 1000 == 0:
            directory.mkdir(parents=True)
        size = rng.randrange(4 * 1024, 60 * 1024)
        (directory / f"f{n:07d}").write_bytes(chunk[:size])
        written += size
        n += 1


def sparse_files(root: Path, total: int) -> None:
    extent = os.urandom(MIB)
    per_file = total // 4
    for k in range(4):
        with (root / f"image{k}.bin").open("wb") as handle:
            for m in range(per_file // MIB):
                handle.seek(2 * m * MIB)
                handle.write(extent)
            handle.truncate(2 * per_file)


def cold() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_cp(source: Path, target: Path) -> None:
    entries = [str(e) for e in source.iterdir()]
    sh("cp", "-a", f"--target-directory={target}", "--", *entries)


def run_rsync(source: Path, target: Path) -> None:
    sh("rsync", "-aHAX", "--numeric-ids", f"{source}/", f"{target}/")


def run_restore_copy(source: Path, target: Path) -> None:
    copy_tree(source, target, Journal("restore-bench", "snap-bench", "snap-none", "planned"))


def measure(source: Path, base: Path, data: int, method: Callable[[Path, Path], None]) -> float:
    """MiB/s of one copy onto a fresh filesystem, cold caches, sync included."""
    with ext4(base, "target", "6G") as (_, target):
        cold()
        started = time.monotonic()
        method(source, target)
        os.sync()
        return data / MIB / (time.monotonic() - started)


def line(name: str, value: float, baseline: float) -> None:
    print(
        f"bench: {name} {value:.1f} MiB/s baseline={baseline:.1f} ratio={value / baseline:.2f}",
        flush=True,
    )


def main() -> int:
    if os.geteuid() != 0:
        print("bench-restore: needs root (loop devices, mounts, drop_caches)", file=sys.stderr)
        return 1
    total = TOTAL_MIB * MIB
    with tempfile.TemporaryDirectory(prefix="bench-restore-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        for name, build in (("small-files", small_files), ("sparse-files", sparse_files)):
            with ext4(base, "source", "6G") as (_, source):
                build(source, total)
                os.sync()
                methods = {"cp": run_cp, "rsync": run_rsync, "ours": run_restore_copy}
                best = dict.fromkeys(methods, 0.0)
                # Two rounds in opposite orders, best of each: no method always goes first.
                for order in (list(methods), list(reversed(methods))):
                    for key in order:
                        best[key] = max(best[key], measure(source, base, total, methods[key]))
                cp, rsync, ours = best["cp"], best["rsync"], best["ours"]
                line(f"restore-copy-{name}", ours, cp)
                line(f"rsync-aHAX-{name}", rsync, cp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
