"""What a killed loopback operation leaves in the pool, found and released.

Temporary resources and how each is marked with the process that made it
(vm/processes ``process_token``), the moment it exists:

- ``snapshots/materialize-<id>-*/``: a clone of the snapshot (``disk.img``), the loop
  device attached to it and its read-only mount (``mnt``); ``owner.json`` names the
  process and the disk it was made for. Only that disk's provider releases it: the
  mount lives in that instance's mount namespace (the local deployment shares one pool).
- ``snapshots/.<id>.img.partial-<token>``: a clone being made by snapshot().
- ``snapshots/.<name>.tmp-<token>``: a metadata file being written.
- ``snapshots/<id>.img`` without ``<id>.json``: the image of a snapshot killed between
  its two last renames, or of one delete() did not finish (it removes the JSON first);
  while snapshot() runs, its ``.<id>.json.tmp-<token>`` says so.

A resource whose process still runs is in use and never touched. One without a mark
(made by an older release, or killed before the mark was written) is left alone for
``UNMARKED_GRACE`` and then counts as left behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from disk_snapshots.providers.base import Leftover
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.vm.processes import token_alive

log = logging.getLogger(__name__)

OWNER = "owner.json"
UNMARKED_GRACE = 600.0  # seconds
BUSY_GRACE = 10.0  # seconds a leftover mount may stay busy after its owner was killed
MATERIALIZE_PREFIX = "materialize-"
_PARTIAL = re.compile(r"^\.snap-[0-9a-f]{17}\.img\.partial(?:-(?P<token>\d+-\d+))?$")
_TEMP_JSON = re.compile(r"^\.snap-[0-9a-f]{17}\.json\.tmp-(?P<token>\d+-\d+)$")
_IMAGE = re.compile(r"^snap-[0-9a-f]{17}\.img$")


@dataclass(frozen=True)
class PoolDebris:
    """The leftovers of one pool's ``snapshots`` directory, for one disk's provider."""

    directory: Path
    disk_cid: str

    def _stale(self, path: Path, token: str | None) -> bool:
        if token is not None:
            return not token_alive(token)
        try:
            return time.time() - path.lstat().st_mtime > UNMARKED_GRACE
        except FileNotFoundError:
            return False

    def _materialize_dirs(self) -> list[Path]:
        found = []
        for work in sorted(self.directory.glob(f"{MATERIALIZE_PREFIX}*")):
            try:
                owner = json.loads((work / OWNER).read_text())
            except FileNotFoundError:
                owner = None
            except (OSError, ValueError):
                owner = {}
            if owner is None:
                if self._stale(work, None):
                    found.append(work)
            elif owner.get("disk", "") == self.disk_cid and self._stale(
                work, str(owner.get("process", ""))
            ):
                found.append(work)
        return found

    def _files(self) -> list[Path]:
        found = []
        for path in sorted(self.directory.iterdir()):
            partial, temp = _PARTIAL.match(path.name), _TEMP_JSON.match(path.name)
            match = partial or temp
            if (match and self._stale(path, match.group("token"))) or (
                _IMAGE.match(path.name) and self._orphan(path)
            ):
                found.append(path)
        return found

    def _orphan(self, image: Path) -> bool:
        """An image without metadata, unless a running snapshot() is about to write it."""
        if image.with_suffix(".json").exists():
            return False
        pending = self.directory.glob(f".{image.with_suffix('.json').name}.tmp-*")
        return not any(token_alive(p.name.rpartition(".tmp-")[2]) for p in pending)

    def find(self) -> list[Leftover]:
        if not self.directory.is_dir():
            return []
        found: list[Leftover] = []
        devices = loop_devices()
        for work in self._materialize_dirs():
            mnt = work / "mnt"
            if os.path.ismount(mnt):
                found.append(Leftover("mount", str(mnt), "of a killed materialize"))
            for device in backing(devices, work):
                found.append(Leftover("loop device", device, f"on {work / 'disk.img'}"))
            found.append(Leftover("temporary image", str(work), "a killed materialize's clone"))
        for device, file in devices.items():
            # A loop device still attached to a clone whose directory is gone.
            if (
                file.startswith(f"{self.directory}/{MATERIALIZE_PREFIX}")
                and not Path(file.removesuffix(" (deleted)")).parent.exists()
            ):
                found.append(Leftover("loop device", device, f"on {file}"))
        for path in self._files():
            found.append(Leftover("temporary image", str(path), "of a killed snapshot"))
        return found

    def release(self) -> list[Leftover]:
        """Release everything ``find`` lists; ProviderError names what stays, after the rest."""
        released: list[Leftover] = []
        problems: list[str] = []
        for leftover in self.find():
            try:
                _release(leftover)
            except (ProviderError, OSError) as err:
                problems.append(f"{leftover.describe()}: {err}")
                continue
            log.info("released %s", leftover.describe())
            released.append(leftover)
        if problems:
            raise ProviderError("leftovers not released: " + "; ".join(problems))
        return released


def _release(leftover: Leftover) -> None:
    path = Path(leftover.id)
    if leftover.kind == "mount":
        _umount(path)
    elif leftover.kind == "loop device":
        run(["losetup", "-d", leftover.id])
    elif path.is_dir():
        mnt = path / "mnt"
        if os.path.ismount(mnt):
            # Never delete below a mount: the snapshot's files would go with it.
            raise ProviderError(f"{mnt} is still mounted")
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _umount(mountpoint: Path, busy_for: float = BUSY_GRACE) -> None:
    """Unmount, waiting out a killed owner's children: a ``cp`` tied to it (dies_with_us)
    gets SIGKILL with it, but may finish the copy_file_range call it is in first."""
    deadline = time.monotonic() + busy_for
    while True:
        try:
            run(["umount", str(mountpoint)])
            return
        except ProviderError as err:
            if "busy" not in str(err) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def loop_devices() -> dict[str, str]:
    """Every loop device of this machine → its backing file (``losetup --list``)."""
    proc = subprocess.run(
        ["losetup", "--list", "--json"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return {}
    try:
        listed = json.loads(proc.stdout).get("loopdevices", [])
    except ValueError:
        return {}
    return {str(d.get("name")): str(d.get("back-file") or "") for d in listed}


def backing(devices: dict[str, str], work: Path) -> list[str]:
    prefix = f"{work}/"
    return sorted(name for name, file in devices.items() if file.startswith(prefix))


def run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProviderError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout
