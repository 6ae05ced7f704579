"""The ``loopback`` provider: the local stand-in for an IaaS (docs/catalog.md).

A persistent disk is an ext4 image attached through a loop device. A snapshot is a
reflink clone of that image taken while the filesystem is frozen: copy-on-write, a
few milliseconds whatever the size, and a block-level point in time like an EBS
snapshot. Where the pool cannot reflink, a sparse full copy is made instead, and
both the log and the snapshot's metadata say so.

Layout: ``<pool>/snapshots/<id>.img`` and ``<id>.json`` (the tags). A snapshot
exists exactly when its JSON exists; both are written under temporary names and
renamed, so a crash leaves no half snapshot that lists as whole.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import select
from disk_snapshots.providers.base import NewDisk
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.vm import fsops
from disk_snapshots.vm.instance import Disk

log = logging.getLogger(__name__)

# Shaped like EC2 ids so that catalogs, tables and docs read the same on both.
_ID = re.compile(r"^snap-[0-9a-f]{17}$")
COPY_KEY = "disk-snapshots:copy"  # "reflink" or "full": how the image was cloned


def check_id(snapshot_id: str) -> str:
    """Refuse any id that is not ours before it gets near a path."""
    if not isinstance(snapshot_id, str) or not _ID.match(snapshot_id):
        raise UnknownSnapshot(
            f"{snapshot_id!r} is not a loopback snapshot id (expected snap- and 17 hex digits)"
        )
    return snapshot_id


def clone(source: Path, target: Path) -> str:
    """Copy-on-write clone when the filesystem can, else a sparse copy; says which."""
    try:
        fsops.reflink(source, target)
        return "reflink"
    except OSError as err:
        target.unlink(missing_ok=True)
        reason = err.strerror or str(err)
    log.warning(
        "%s cannot be reflinked (%s); making a full sparse copy, which takes time and space",
        source,
        reason,
    )
    full = subprocess.run(
        ["cp", "--sparse=always", "--", str(source), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if full.returncode != 0:
        target.unlink(missing_ok=True)
        raise ProviderError(f"copying {source} to {target} failed: {full.stderr.strip()}")
    return "full"


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class LoopbackProvider:
    name = "loopback"
    can_materialize = True

    def __init__(self, pool: Path) -> None:
        self.pool = pool
        self.directory = pool / "snapshots"

    @classmethod
    def for_disk(cls, configured_pool: str, disk: Disk | None) -> LoopbackProvider:
        """The pool the property names, else the directory of this instance's disk image."""
        if configured_pool:
            return cls(Path(configured_pool))
        if disk is not None and disk.image is not None:
            return cls(disk.image.parent)
        raise ProviderError(
            "provider.loopback.pool is empty and this instance has no loopback disk image "
            "to find the pool from"
        )

    def prepare(self, disk: Disk) -> None:
        """Write the image's dirty pages (the loop device's writes) to the pool now, so the
        clone, which must flush them first, does not do it while the disk is frozen."""
        if disk.image is not None:
            fd = os.open(disk.image, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def snapshot(self, disk: Disk, annotations: Annotations) -> Snapshot:
        if disk.image is None or not disk.image.is_file():
            raise ProviderError(
                f"disk {disk.cid} has no image file in the agent settings (path hint "
                f"{disk.hint.get('path')!r}): is this instance on the loopback provider?"
            )
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        snapshot_id = "snap-" + secrets.token_hex(9)[:17]
        image = directory / f"{snapshot_id}.img"
        partial = directory / f".{snapshot_id}.img.partial"
        try:
            how = clone(disk.image, partial)
            partial.replace(image)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        record = {"id": snapshot_id, "tags": annotations.to_tags() | {COPY_KEY: how}}
        try:
            _write_atomically(directory / f"{snapshot_id}.json", json.dumps(record, indent=2))
        except BaseException:
            image.unlink(missing_ok=True)
            raise
        return Snapshot(id=snapshot_id, annotations=annotations, size_bytes=image.stat().st_size)

    def _read(self, path: Path) -> Snapshot:
        record = json.loads(path.read_text())
        snapshot_id = check_id(record.get("id", ""))
        image = path.with_suffix(".img")
        size = image.stat().st_size if image.exists() else None
        return Snapshot(
            id=snapshot_id,
            annotations=Annotations.from_tags(record.get("tags", {})),
            state="completed" if size is not None else "error",
            size_bytes=size,
        )

    def list(self, query: Query | None = None) -> list[Snapshot]:
        directory = self.directory
        if not directory.is_dir():
            return []
        found: list[Snapshot] = []
        for path in directory.glob("snap-*.json"):
            try:
                found.append(self._read(path))
            except (AnnotationError, ProviderError, ValueError, OSError) as err:
                # Someone else's or a damaged record: skip it, but never silently.
                log.warning("ignoring %s: %s", path, err)
        return select(found, query or Query())

    def _json(self, snapshot_id: str) -> Path:
        path = self.directory / f"{check_id(snapshot_id)}.json"
        if not path.is_file():
            raise UnknownSnapshot(f"snapshot {snapshot_id} does not exist in {path.parent}")
        return path

    def get(self, snapshot_id: str) -> Snapshot:
        return self._read(self._json(snapshot_id))

    def update(self, snapshot_id: str, annotations: Annotations) -> Snapshot:
        path = self._json(snapshot_id)
        record = json.loads(path.read_text())
        copy = record.get("tags", {}).get(COPY_KEY, "")
        record["tags"] = annotations.to_tags() | ({COPY_KEY: copy} if copy else {})
        _write_atomically(path, json.dumps(record, indent=2))
        return self._read(path)

    def delete(self, snapshot_id: str) -> None:
        path = self._json(snapshot_id)
        # The JSON goes first: a snapshot without it no longer lists, so a crash here
        # leaves an orphaned image, never a listed snapshot without data.
        path.unlink()
        path.with_suffix(".img").unlink(missing_ok=True)

    @contextmanager
    def materialize(self, snapshot_id: str, az: str = "") -> Iterator[Path]:
        """Mount a fresh clone of the snapshot read-only; the clone goes on exit.

        The clone (not the snapshot) is attached writable so that ext4 may replay its
        journal; the mount itself is read-only.
        """
        source = self._json(snapshot_id).with_suffix(".img")
        if not source.is_file():
            raise ProviderError(f"snapshot {snapshot_id} has metadata but no image ({source})")
        work = Path(tempfile.mkdtemp(prefix=f"materialize-{snapshot_id}-", dir=source.parent))
        image = work / "disk.img"
        mountpoint = work / "mnt"
        mountpoint.mkdir()
        device = ""
        try:
            clone(source, image)
            device = _run(["losetup", "--find", "--show", str(image)]).strip()
            _run(["mount", "-o", "ro", device, str(mountpoint)])
            try:
                yield mountpoint
            finally:
                _run(["umount", str(mountpoint)])
        finally:
            if device:
                subprocess.run(["losetup", "-d", device], capture_output=True, check=False)
            shutil.rmtree(work, ignore_errors=True)

    def create_disk(self, snapshot_id: str, like: Disk, labels: Mapping[str, str]) -> NewDisk:
        """A clone of the snapshot's image as a new disk of the pool: ``<pool>/<cid>.img``
        beside ``<cid>.json``, the layout in which the local Director keeps the disks it
        attaches by CID (src/localbosh/disks.py), so ``attach-disk`` finds it."""
        source = self._json(snapshot_id).with_suffix(".img")
        if not source.is_file():
            raise ProviderError(f"snapshot {snapshot_id} has metadata but no image ({source})")
        cid = f"disk-{uuid.uuid4()}"
        image = self.pool / f"{cid}.img"
        partial = self.pool / f".{cid}.img.partial"
        try:
            clone(source, partial)
            size_mib = partial.stat().st_size // 2**20
            _write_atomically(
                image.with_suffix(".json"),
                json.dumps({"cid": cid, "size_mib": size_mib, "labels": dict(labels)}, indent=2),
            )
            partial.replace(image)
        except BaseException:
            partial.unlink(missing_ok=True)
            image.with_suffix(".json").unlink(missing_ok=True)
            raise
        return NewDisk(cid=cid, size_mib=size_mib, zone="", snapshot_id=snapshot_id)


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProviderError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout
