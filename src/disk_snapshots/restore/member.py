"""A member's side of a restore: the steps the coordinator asks of this instance.

The coordinator (coordinator.py) calls these through the agent API in its order; each
checks its own preconditions, because a rerun after a kill may call them in any state.
Nothing is written onto the disk before a clean safety snapshot of it exists and the
journal names it; the service must be stopped (monit) for both.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Literal

from disk_snapshots.config import ConfigError
from disk_snapshots.config import RestoreConfig
from disk_snapshots.config import load_config
from disk_snapshots.member_errors import Conflict
from disk_snapshots.member_errors import Failed
from disk_snapshots.member_errors import Invalid
from disk_snapshots.member_errors import NotFound
from disk_snapshots.operations import Operations
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import UnknownBackup
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.base import require_backup_tier
from disk_snapshots.restore.copy import RestoreCopyError
from disk_snapshots.restore.copy import copy_tree
from disk_snapshots.restore.journal import Journal
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.snapshot.snapshotter import pending_import_marker
from disk_snapshots.triggers import PRE_RESTORE
from disk_snapshots.vm.monit import ServiceJobs
from disk_snapshots.vm.services import IMPORT_SECONDS
from disk_snapshots.vm.services import ServiceError
from disk_snapshots.vm.services import run_argv
from disk_snapshots.vm.services import run_imports

ImportPhase = Literal["pre_start", "post_start"]


@dataclass
class RestoreMember:
    snapshotter: Snapshotter
    jobs: ServiceJobs
    operations: Operations
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # restore id → the operation copying it, so a rerun of a killed errand finds the copy
    _copies: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.snapshotter.disk.mount

    def journal(self) -> dict[str, object]:
        """This disk's restore journal, the last finished one, and what is pending."""
        journal, last = Journal.read(self.store), Journal.read_last(self.store)
        copying = self._copies.get(journal.restore_id, "") if journal is not None else ""
        return {
            "journal": journal.to_json() if journal else None,
            "last": last.to_json() if last else None,
            "pending_import": pending_import_marker(self.store).exists(),
            "copy_operation": copying,
        }

    def safety(
        self, restore_id: str, mine: PlanEntry, plan: list[PlanEntry], replaces: str = ""
    ) -> dict[str, object]:
        """A clean pre-restore snapshot, then the journal (phase planned); the same again
        is a no-op; an unfinished journal of another restore is replaced only when named
        in ``replaces``."""
        with self._lock:
            existing = Journal.read(self.store)
            if existing is not None and not (replaces and existing.restore_id == replaces):
                if existing.restore_id == restore_id:
                    return {
                        "safety_snapshot_id": existing.safety_snapshot_id,
                        "taken": False,
                        "journal": existing.to_json(),
                    }
                raise Conflict(
                    f"restore {existing.restore_id} on this disk is unfinished "
                    f"(phase {existing.phase}); rerun the errand to finish it, or name other "
                    "snapshots in restore.snapshots to replace it"
                )
            self.jobs.require_stopped()
            try:
                safety = self.snapshotter.take_clean(
                    PRE_RESTORE, note=f"before {restore_id}"[:255]
                ).snapshot
            except SNAPSHOT_ERRORS as err:
                raise Failed(f"pre-restore safety snapshot failed: {err}") from None
            journal = Journal(
                restore_id,
                mine.snapshot_id,
                safety.id,
                "planned",
                action=mine.action,
                role=mine.role,
                instance=mine.instance,
                plan=plan,
                backup_id=mine.backup_id,
            )
            if mine.action == "resync":
                # Nothing is copied onto this disk: it may start, and replicates once it does.
                journal.write(self.store, "copied", "resync: the disk is kept and replicates")
            else:
                journal.write(self.store, "planned")
            return {"safety_snapshot_id": safety.id, "taken": True, "journal": journal.to_json()}

    def copy(self, restore_id: str, snapshot_id: str, safety_snapshot_id: str) -> dict[str, object]:
        """Start (or find the running) copy of the snapshot onto this disk: an operation."""
        with self._lock:
            journal = self._journal_of(restore_id)
            if (journal.action, journal.snapshot_id, journal.safety_snapshot_id) != (
                "copy",
                snapshot_id,
                safety_snapshot_id,
            ):
                raise Conflict(
                    f"the journal of {restore_id} says {journal.action} {journal.snapshot_id} "
                    f"(safety {journal.safety_snapshot_id}), not copy {snapshot_id} "
                    f"(safety {safety_snapshot_id})"
                )
            running = self.operations.get(self._copies.get(restore_id, ""))
            if running is not None and running.state == "running":
                return running.to_json()
            self._check_source(journal)
            self.jobs.require_stopped()
            operation = self.operations.start(
                "restore-copy",
                lambda: self._copy(journal, restore_id, safety_snapshot_id),
                errors=(RestoreCopyError, ProviderError, OSError),
            )
            self._copies[restore_id] = operation.id
            return operation.to_json()

    def copy_now(self, restore_id: str) -> dict[str, object]:
        """The copy the journal of ``restore_id`` names, here and now, not as an operation:
        ``bin/snapshots restore-copy`` runs it while the instance is ``bosh stop``ped, with
        the daemon stopped too. Same checks, same journal, same copy as ``copy``."""
        with self._lock:
            journal = self._journal_of(restore_id)
            if journal.action != "copy":
                raise Conflict(f"the journal of {restore_id} says {journal.action}, not copy")
            running = self.operations.get(self._copies.get(restore_id, ""))
            if running is not None and running.state == "running":
                raise Conflict(f"operation {running.id} is copying {restore_id} already")
            self._check_source(journal)
            self.jobs.require_stopped()
            try:
                return self._copy(journal, restore_id, journal.safety_snapshot_id)
            except (RestoreCopyError, ProviderError, OSError) as err:
                raise Failed(str(err)) from None

    def safety_only(self, restore_id: str) -> dict[str, object]:
        """The clean pre-restore snapshot of a disk that a replace restore swaps out: the
        disk itself is not written (the Director orphans it), so no journal goes on it and
        it starts as it was when attached back."""
        with self._lock:
            existing = Journal.read(self.store)
            if existing is not None:
                raise Conflict(
                    f"restore {existing.restore_id} on this disk is unfinished (phase "
                    f"{existing.phase}); finish it before replacing the disk"
                )
            self.jobs.require_stopped()
            try:
                safety = self.snapshotter.take_clean(
                    PRE_RESTORE, note=f"before {restore_id}"
                ).snapshot
            except SNAPSHOT_ERRORS as err:
                raise Failed(f"pre-restore safety snapshot failed: {err}") from None
            return {"safety_snapshot_id": safety.id, "taken": True, "journal": None}

    def adopt(
        self, restore_id: str, mine: PlanEntry, plan: list[PlanEntry], safety_snapshot_id: str
    ) -> dict[str, object]:
        """The disk now mounted was made from ``mine.snapshot_id`` and attached in place of
        the old one (a replace restore): its journal says copied, so it may start and the
        restore is finished like a copy one, and its imports are pending. A journal the
        snapshot carried over from its own disk belongs to that disk's past: it goes."""
        with self._lock:
            self.jobs.require_stopped()
            carried = Journal.read(self.store)
            if carried is not None and carried.restore_id == restore_id:
                return {"adopted": False, "journal": carried.to_json()}
            journal = Journal(
                restore_id,
                mine.snapshot_id,
                safety_snapshot_id,
                "planned",
                action=mine.action,
                role=mine.role,
                instance=mine.instance,
                plan=plan,
            )
            journal.write(
                self.store, "copied", f"replaced: this disk was made from {mine.snapshot_id}"
            )
            marker = pending_import_marker(self.store)
            marker.write_text(json.dumps({"reason": f"{restore_id} replaced the disk"}) + "\n")
            dropped = carried.restore_id if carried is not None else ""
            return {"adopted": True, "dropped_journal": dropped, "journal": journal.to_json()}

    def _journal_of(self, restore_id: str) -> Journal:
        journal = Journal.read(self.store)
        if journal is None or journal.restore_id != restore_id:
            found = journal.restore_id if journal else "none"
            raise Conflict(
                f"no journal of {restore_id} on this disk (found: {found}); "
                "POST /restore/safety comes first"
            )
        return journal

    def _check_source(self, journal: Journal) -> None:
        """The snapshot (or the backup of it) the journal names exists and is ours."""
        s = self.snapshotter
        snapshot_id, backup_id = journal.snapshot_id, journal.backup_id
        try:
            if backup_id:
                backup = require_backup_tier(s.provider).get_backup(backup_id)
                if backup.source_snapshot != snapshot_id:
                    raise Invalid(f"backup {backup_id} is not a backup of {snapshot_id}")
                deployment = backup.annotations.deployment
            else:
                deployment = s.provider.get(snapshot_id).annotations.deployment
        except (UnknownSnapshot, UnknownBackup) as err:
            raise NotFound(str(err)) from None
        except ProviderError as err:
            raise Failed(str(err)) from None
        if deployment != s.config.spec.deployment:
            raise Invalid(
                f"{backup_id or snapshot_id} belongs to deployment {deployment}, "
                f"not {s.config.spec.deployment}"
            )

    def _copy(
        self, journal: Journal, restore_id: str, safety_snapshot_id: str
    ) -> dict[str, object]:
        """The copy operation: materialize the snapshot, copy it, leave the import pending."""
        snapshot_id = journal.snapshot_id
        if journal.phase in ("copied", "started"):
            return {"snapshot_id": snapshot_id, "copied": False, "phase": journal.phase}
        s = self.snapshotter
        started = time.monotonic()
        what = f"backup {journal.backup_id} of {snapshot_id}" if journal.backup_id else snapshot_id
        az = s.config.spec.az
        try:
            if journal.backup_id:
                tree = require_backup_tier(s.provider).materialize_backup(journal.backup_id, az)
            else:
                tree = s.provider.materialize(snapshot_id, az)
            with tree as source:
                copy_tree(source, self.store, journal)
        except ProviderError as err:
            journal.write(self.store, "failed", f"materializing {what}: {err}")
            raise RestoreCopyError(
                f"materializing {what} failed: {err}. The service "
                f"stays stopped; the safety snapshot {safety_snapshot_id} holds the "
                "data from before the restore."
            ) from None
        marker = pending_import_marker(self.store)
        marker.write_text(json.dumps({"reason": f"{restore_id} restored {snapshot_id}"}) + "\n")
        return {
            "snapshot_id": snapshot_id,
            "backup_id": journal.backup_id,
            "copied": True,
            "seconds": round(time.monotonic() - started, 3),
            "phase": "copied",
        }

    def imports(self, phase: ImportPhase) -> dict[str, object]:
        """The service.import commands of one phase (pre_start only with the service stopped)."""
        service = self.snapshotter.config.service
        commands = service.import_pre_start if phase == "pre_start" else service.import_post_start
        if phase == "pre_start":
            # The same order as a BOSH start: files are imported before processes exist.
            self.jobs.require_stopped()
        try:
            run_imports(commands, f"import.{phase}")
        except (ServiceError, OSError) as err:
            raise Failed(str(err)) from None
        if phase == "post_start":
            pending_import_marker(self.store).unlink(missing_ok=True)
        return {"phase": phase, "commands": len(commands)}

    def verify(self) -> dict[str, object]:
        """The colocated restore job's restore.verify argv, run here."""
        path = self.snapshotter.paths.job_config("restore")
        try:
            config = load_config(path)
        except ConfigError as err:
            raise Conflict(
                f"restore.verify cannot be read on this instance: {err.report(str(path))}"
            ) from None
        if not isinstance(config, RestoreConfig):
            raise Conflict(f"{path} is not the restore job's config")
        if not config.verify:
            return {"ran": False, "argv": [], "output": ""}
        try:
            output = run_argv(config.verify, "restore.verify", timeout=IMPORT_SECONDS)
        except ServiceError as err:
            raise Failed(str(err)) from None
        return {"ran": True, "argv": list(config.verify), "output": output[-2000:]}

    def finish(self, restore_id: str) -> dict[str, object]:
        """Close the journal (kept as restore-last.json): the restore is done here."""
        with self._lock:
            journal = Journal.read(self.store)
            if journal is None:
                last = Journal.read_last(self.store)
                if last is not None and last.restore_id == restore_id:
                    return {"finished": False, "journal": last.to_json()}
                raise Conflict(f"no journal of {restore_id} on this disk")
            if journal.restore_id != restore_id:
                raise Conflict(
                    f"the journal on this disk is of {journal.restore_id}, not {restore_id}"
                )
            if journal.blocks_start:
                raise Conflict(journal.refusal())
            journal.finish(self.store)
            return {"finished": True, "journal": journal.to_json()}
