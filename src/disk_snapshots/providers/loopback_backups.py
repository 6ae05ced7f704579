"""The loopback provider's backup tier: full, checksummed copies of snapshot images in a
backup store (``provider.loopback.backup_store``), a directory that may be on another
filesystem and another disk than the pool (docs/catalog.md, Backups).

Layout of the store::

    bkp-<17 hex>.json    the record: the source snapshot's tags, state, times, checksum
    bkp-<17 hex>.img     the copy, there only once it was verified
    .bkp-<id>.partial    the copy while it is written
    .bkp-<id>.lock       held (flock) by the process copying, as long as it copies
    .materialize-*       restores reading a backup

A backup is written in this order: lock, record (pending), copy under the partial name
(image_copy.py: flushed, checksummed, read back), rename to ``.img``, record
(completed), unlock. It lists as completed only when its record says so and its image
is there, so a process killed at any step leaves at most a pending record whose lock
nobody holds: that lists as ``error`` (interrupted), and ``cleanup_leftovers`` (run by
the next backup, the daemon's start and ``bin/snapshots cleanup``) removes it.
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

from disk_snapshots.annotations import AnnotationError
from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import parse_timestamp
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.catalog import select
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.image_copy import checksum_image
from disk_snapshots.providers.image_copy import copy_image
from disk_snapshots.providers.loop_images import detach_leftover
from disk_snapshots.providers.loop_images import hold
from disk_snapshots.providers.loop_images import is_held
from disk_snapshots.providers.loop_images import mounted_clone
from disk_snapshots.providers.loop_images import sync_directory
from disk_snapshots.providers.loop_images import write_atomically

log = logging.getLogger(__name__)

_ID = re.compile(r"^bkp-[0-9a-f]{17}$")
MATERIALIZE_PREFIX = ".materialize-"
# A file this young may belong to a process between creating it and locking it.
SETTLE_SECONDS = 60.0


def check_backup_id(backup_id: object) -> str:
    """Refuse any id that is not a loopback backup's before it gets near a path."""
    if not isinstance(backup_id, str) or not _ID.match(backup_id):
        raise UnknownBackup(
            f"{backup_id!r} is not a loopback backup id (expected bkp- and 17 hex digits)"
        )
    return backup_id


def _settled(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime > SETTLE_SECONDS
    except FileNotFoundError:
        return False


def _unused(path: Path, lock: Path) -> bool:
    """Left behind: old enough, and no live process holds its lock."""
    return _settled(path) and not is_held(lock)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _moment(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_timestamp(text)
    except AnnotationError:
        return None


@dataclass(frozen=True)
class LoopbackBackups:
    store: Path

    def _paths(self, backup_id: str) -> tuple[Path, Path, Path, Path]:
        """(record, image, partial, lock) of one backup."""
        check_backup_id(backup_id)
        return (
            self.store / f"{backup_id}.json",
            self.store / f"{backup_id}.img",
            self.store / f".{backup_id}.partial",
            self.store / f".{backup_id}.lock",
        )

    def backup(self, snapshot: Snapshot, image: Path, deadline: float | None = None) -> Backup:
        """Copy the snapshot's image into the store; returns the completed backup."""
        backup_id = "bkp-" + secrets.token_hex(9)[:17]
        record_path, final, partial, lock_path = self._paths(backup_id)
        try:
            self.store.mkdir(parents=True, exist_ok=True)
            self.cleanup_leftovers()
            lock = hold(lock_path)
        except OSError as err:
            raise ProviderError(
                f"the backup store {self.store} (provider.loopback.backup_store) cannot be "
                f"written: {err.strerror or err}"
            ) from None
        record: dict[str, Any] = {
            "id": backup_id,
            "source_snapshot": snapshot.id,
            "tags": snapshot.annotations.to_tags(),
            "state": "pending",
            "started_at": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        try:
            write_atomically(record_path, json.dumps(record, indent=2))
            copied = copy_image(image, partial, deadline)
            partial.replace(final)
            sync_directory(self.store)
            record |= {
                "state": "completed",
                "completed_at": _now(),
                "size_bytes": copied.size,
                "data_bytes": copied.data_bytes,
                "checksum": copied.checksum,
                "seconds": round(copied.seconds, 3),
            }
            write_atomically(record_path, json.dumps(record, indent=2))
            sync_directory(self.store)
        except BaseException as err:
            # Said in the record, so that the catalog shows why; cleanup removes it.
            reason = str(err) or type(err).__name__
            self._fail(record_path, record, reason, partial, final)
            if isinstance(err, OSError | ProviderError):
                raise ProviderError(
                    f"backup of snapshot {snapshot.id} into {self.store} failed: {reason}"
                ) from None
            raise
        finally:
            lock_path.unlink(missing_ok=True)
            os.close(lock)
        log.info(
            "backup %s of snapshot %s: %d MiB in %.1fs, verified",
            backup_id,
            snapshot.id,
            copied.data_bytes // 2**20,
            copied.seconds,
        )
        return self._read(record_path)

    @staticmethod
    def _fail(
        record_path: Path, record: dict[str, Any], reason: str, partial: Path, final: Path
    ) -> None:
        partial.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        record |= {"state": "error", "detail": reason[:500], "completed_at": ""}
        try:
            write_atomically(record_path, json.dumps(record, indent=2))
        except OSError as err:
            log.error("cannot record the failure of %s: %s", record_path.stem, err)

    def _read(self, record_path: Path) -> Backup:
        record = json.loads(record_path.read_text())
        backup_id = check_backup_id(record.get("id"))
        _, image, _, lock = self._paths(backup_id)
        state, detail = self._state(record, image, lock)
        if state == "error" and record.get("state") == "pending":
            # Finished between the look at the record and the look at its lock?
            record = json.loads(record_path.read_text())
            state, detail = self._state(record, image, lock)
        return Backup(
            id=backup_id,
            source_snapshot=str(record.get("source_snapshot", "")),
            annotations=Annotations.from_tags(record.get("tags", {})),
            state=state,
            started_at=_moment(record.get("started_at")),
            completed_at=_moment(record.get("completed_at")) if state == "completed" else None,
            size_bytes=record.get("size_bytes") if state == "completed" else None,
            location=str(self.store),
            detail=detail,
        )

    @staticmethod
    def _state(record: Mapping[str, Any], image: Path, lock: Path) -> tuple[Any, str]:
        written = record.get("state")
        if written == "completed":
            size = record.get("size_bytes")
            if image.is_file() and image.stat().st_size == size:
                return "completed", str(record.get("checksum", ""))
            return "error", f"its image {image.name} is missing or not {size} bytes"
        if written == "pending":
            if is_held(lock):
                return "pending", f"copying (pid {record.get('pid')} on {record.get('host')})"
            return "error", "interrupted: the process copying it is gone (cleanup removes it)"
        return "error", str(record.get("detail") or f"state {written!r}")

    def list(self, query: Query | None = None) -> builtins.list[Backup]:
        if not self.store.is_dir():
            return []
        found: builtins.list[Backup] = []
        for path in self.store.glob("bkp-*.json"):
            try:
                found.append(self._read(path))
            except FileNotFoundError:
                continue  # deleted while listing
            except (AnnotationError, ProviderError, ValueError, OSError) as err:
                log.warning("ignoring %s: %s", path, err)
        return select(found, query or Query())

    def get(self, backup_id: str) -> Backup:
        record_path = self._paths(backup_id)[0]
        try:
            return self._read(record_path)
        except FileNotFoundError:
            raise UnknownBackup(f"backup {backup_id} does not exist in {self.store}") from None
        except (AnnotationError, ValueError) as err:
            raise ProviderError(f"backup {backup_id} has a damaged record: {err}") from None

    def delete(self, backup_id: str) -> None:
        backup = self.get(backup_id)
        if backup.state == "pending":
            raise ProviderError(f"backup {backup_id} is still being copied ({backup.detail})")
        self._remove(backup_id)

    def _remove(self, backup_id: str) -> None:
        # The record goes first: without it the backup no longer lists, so a crash here
        # leaves an orphaned image (removed by cleanup), never a listed backup without data.
        record_path, image, partial, lock = self._paths(backup_id)
        record_path.unlink(missing_ok=True)
        for path in (image, partial, lock):
            path.unlink(missing_ok=True)

    @contextmanager
    def materialize(self, backup_id: str) -> Iterator[Path]:
        """The backup's content mounted read-only from a clone whose checksum was checked."""
        backup = self.get(backup_id)
        if backup.state != "completed":
            raise ProviderError(
                f"backup {backup_id} is {backup.state} ({backup.detail}): not restorable"
            )
        image = self._paths(backup_id)[1]
        expected = backup.detail  # a completed backup's detail is its checksum

        def check(clone: Path) -> None:
            found = checksum_image(clone)
            if found != expected:
                raise ProviderError(
                    f"backup {backup_id} is damaged: its content's checksum is {found}, "
                    f"its record says {expected}"
                )

        prefix = f"{MATERIALIZE_PREFIX}{backup_id}-"
        with mounted_clone(image, self.store, prefix, check) as mountpoint:
            yield mountpoint

    def leftovers(self) -> builtins.list[tuple[str, Callable[[], None]]]:
        """What killed backups and restores left in the store, each with what releases it:
        a pending record nobody holds the lock of, a lock, partial or image without a
        record, a restore's work directory; none of a process still running."""
        if not self.store.is_dir():
            return []
        found: builtins.list[tuple[str, Callable[[], None]]] = []
        gone: set[str] = set()
        for path in sorted(self.store.glob("bkp-*.json")):
            backup_id = path.stem
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if record.get("state") == "pending" and not is_held(self._paths(backup_id)[3]):
                found.append((backup_id, functools.partial(self._remove, backup_id)))
                gone.add(backup_id)
        listed = {p.stem for p in self.store.glob("bkp-*.json")} - gone
        for path in sorted(self.store.glob(".bkp-*.lock")):
            backup_id = path.name[1:].removesuffix(".lock")
            if _ID.match(backup_id) and backup_id not in listed | gone and _unused(path, path):
                found.append((backup_id, functools.partial(self._remove, backup_id)))
                gone.add(backup_id)
        for path in sorted([*self.store.glob(".bkp-*.partial"), *self.store.glob("bkp-*.img")]):
            backup_id = path.name.lstrip(".").split(".")[0]
            lock = self.store / f".{backup_id}.lock"
            if backup_id not in listed | gone and _unused(path, lock):
                found.append((path.name, functools.partial(path.unlink, missing_ok=True)))
        for work in sorted(self.store.glob(f"{MATERIALIZE_PREFIX}*")):
            if work.is_dir() and _unused(work, work / "lock"):
                found.append((work.name, functools.partial(detach_leftover, work)))
        return found

    def cleanup_leftovers(self) -> builtins.list[str]:
        """Remove what ``leftovers`` finds; the names of what was removed."""
        removed: builtins.list[str] = []
        for name, release in self.leftovers():
            release()
            removed.append(name)
            log.info("removed leftover %s from %s", name, self.store)
        return removed
