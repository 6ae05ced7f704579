"""Real disks for root tests: a reflink-capable XFS pool on a loop device (like localbosh's),
and the one way to let a mount go again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from disk_snapshots.providers.loopback_leftovers import loop_devices
from disk_snapshots.snapshot.snapshotter import Paths


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def unmount(target: Path) -> None:
    """Unmount, waiting out writers a thaw just released (and loop devices that let go of
    their images a moment late); lazily as the last resort, since a mount left behind
    breaks pytest's temp-dir cleanup in every later run."""
    for _ in range(25):
        if (
            subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode
            == 0
        ):
            return
        if not os.path.ismount(target):
            return
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(target)], check=False)


@contextmanager
def xfs_pool(base: Path, size: str = "4G") -> Iterator[Path]:
    """A reflink-capable XFS pool on a loop device, mounted at ``base/mnt``."""
    image = base / "pool.img"
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    sh("truncate", "-s", size, str(image))
    sh("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
    sh("mount", "-o", "loop", str(image), str(mountpoint))
    try:
        yield mountpoint
    finally:
        unmount(mountpoint)


def write_config(paths: Paths, doc: dict[str, Any]) -> None:
    """The snapshotter's rendered config.json under a VM root."""
    paths.config.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(json.dumps(doc))


def require_root(*tools: str) -> None:
    """Skip without root (saying why); fail when a tool bootstrap installs is missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices, mounts and fsfreeze")
    for tool in ("mkfs.xfs", "mkfs.ext4", "losetup", "fsfreeze", *tools):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/bootstrap installs it")


def temporary_resources(pool: Path) -> list[str]:
    """Every temporary resource of the loopback provider under a pool: loop devices on its
    snapshots' files, mounts below them, clone directories, partial, pending and orphaned
    images. A test that kills an operation wants this empty once the next one ran."""
    found = [
        f"loop {name} on {file}"
        for name, file in loop_devices().items()
        if file.startswith(f"{pool}/snapshots/")
    ]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount {line.split()[4]}" for line in mounts if f" {pool}/snapshots/" in line]
    snapshots = pool / "snapshots"
    if snapshots.is_dir():
        for path in snapshots.iterdir():
            if path.name.startswith(("materialize-", ".")):
                found.append(f"file {path.name}")
            elif path.suffix == ".img" and not path.with_suffix(".json").exists():
                found.append(f"orphaned image {path.name}")
    return sorted(found)
