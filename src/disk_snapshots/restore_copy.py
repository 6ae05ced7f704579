"""Copy a snapshot's content onto this instance's disk, under a journal (DESIGN §8 step 4).

The journal lives on the disk being restored (``.disk-snapshots/restore.json``), so it
stays with the data: pre-start reads it and refuses to start a service on a disk
whose copy did not finish, naming the way to finish (rerun the errand) or to go back
(the safety snapshot). Owners, modes, ACLs, xattrs, hard links and sparse files are
preserved, and whatever the snapshot lacks is removed.

One path, chosen by scripts/bench-restore: empty the disk (all but the journal), then
``cp -a``, then an rsync dry run that must find nothing to change. ``cp`` copies file
data with copy_file_range and skips holes with SEEK_DATA, several times faster than
rsync's pipe on large sparse files and no slower on small ones; emptying first means a
changed file never needs room for two copies (rsync --whole-file writes a temporary
file beside the old one), and a rerun after an interruption simply starts over. The
verification pass (sizes, times, owners, modes, ACLs, xattrs, hard links, extras)
costs a metadata walk, so a copy that silently missed something never counts as done.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Literal

Phase = Literal["planned", "copying", "copied", "started", "done", "failed"]
PHASES = ("planned", "copying", "copied", "started", "done", "failed")
JOURNAL_DIR = ".disk-snapshots"
# One cp for every top-level entry: hard links are only kept within one cp invocation.
COPY = ("cp", "--archive", "--reflink=never")
# The check after the copy: archive mode plus hard links, ACLs and xattrs, numeric owners;
# directory times are left out because writing the journal changes its parent's.
VERIFY = (
    "rsync",
    "--archive",
    "--hard-links",
    "--acls",
    "--xattrs",
    "--numeric-ids",
    "--omit-dir-times",
    "--delete",
    "--dry-run",
    "--itemize-changes",
    f"--exclude=/{JOURNAL_DIR}/",
)
# Plan entries travel in every journal so that any one member can tell a rerun the whole plan.
PlanEntry = dict[str, str]


class RestoreCopyError(RuntimeError):
    """The copy failed; the disk is in an unfinished state that the journal records."""


@dataclass
class Journal:
    """What one instance's part of a restore is, and how far it got."""

    restore_id: str
    snapshot_id: str
    safety_snapshot_id: str
    phase: Phase
    updated_at: str = ""
    detail: str = ""
    # copy (the disk gets snapshot_id) or resync (the disk is kept; the service replicates)
    action: str = "copy"
    role: str = ""
    instance: str = ""
    plan: list[PlanEntry] = field(default_factory=list)

    @staticmethod
    def path(store: Path) -> Path:
        return store / JOURNAL_DIR / "restore.json"

    @staticmethod
    def last_path(store: Path) -> Path:
        return store / JOURNAL_DIR / "restore-last.json"

    @classmethod
    def read(cls, store: Path) -> Journal | None:
        return cls._load(cls.path(store))

    @classmethod
    def read_last(cls, store: Path) -> Journal | None:
        """The journal of the last finished restore, kept for the record (and for reruns)."""
        return cls._load(cls.last_path(store))

    @classmethod
    def _load(cls, path: Path) -> Journal | None:
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls.from_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as err:
            # A journal we cannot read is treated as an unfinished restore: never guess.
            return cls(
                "unknown", "unknown", "unknown", "failed", detail=f"unreadable journal: {err}"
            )

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Journal:
        fields = {
            k: str(v) for k, v in data.items() if k in cls.__dataclass_fields__ and k != "plan"
        }
        for key in ("restore_id", "snapshot_id", "safety_snapshot_id", "phase"):
            fields.setdefault(key, "")
        if fields["phase"] not in PHASES:
            raise ValueError(f"phase {fields['phase']!r} is not one of {', '.join(PHASES)}")
        raw_plan = data.get("plan", [])
        if not isinstance(raw_plan, list):
            raise ValueError("plan is not a list")
        plan = [
            {str(k): str(v) for k, v in entry.items()}
            for entry in raw_plan
            if isinstance(entry, dict)
        ]
        return cls(plan=plan, **fields)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def write(self, store: Path, phase: Phase, detail: str = "") -> None:
        self.phase = phase
        self.detail = detail
        self.updated_at = datetime.now(UTC).isoformat()
        path = self.path(store)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as handle:
            json.dump(asdict(self), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)

    def finish(self, store: Path) -> None:
        """Keep the last journal for the record, out of the way of the next restore."""
        self.write(store, "done")
        self.path(store).replace(self.last_path(store))

    @property
    def blocks_start(self) -> bool:
        """Only a disk whose copy completed may be started."""
        return self.phase in ("planned", "copying", "failed")

    def refusal(self) -> str:
        """What pre-start says when it refuses to start the service on this disk."""
        return (
            f"a restore of snapshot {self.snapshot_id} onto this disk did not finish "
            f"(phase {self.phase}{': ' + self.detail if self.detail else ''}); the service "
            "must not start on half-copied data. Rerun `bosh run-errand restore` to finish it, "
            f"or restore the safety snapshot {self.safety_snapshot_id} to go back to the state "
            "before the restore began."
        )


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )


def _empty(store: Path) -> None:
    """Remove everything but the journal; files of a mount root are never crossed into."""
    for entry in store.iterdir():
        if entry.name == JOURNAL_DIR:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def copy_tree(source: Path, store: Path, journal: Journal) -> None:
    """Make ``store`` hold exactly what ``source`` holds (except our journal directory)."""
    journal.write(store, "copying")

    def fail(message: str) -> RestoreCopyError:
        journal.write(store, "failed", message)
        return RestoreCopyError(
            f"copying snapshot {journal.snapshot_id} into {store} failed: {message}. "
            f"The service stays stopped; the safety snapshot {journal.safety_snapshot_id} "
            "holds the data from before the restore."
        )

    try:
        _empty(store)
    except OSError as err:
        raise fail(f"emptying the disk: {err}") from None
    entries = [str(e) for e in sorted(source.iterdir()) if e.name != JOURNAL_DIR]
    if entries:
        proc = _run([*COPY, f"--target-directory={store}", "--", *entries])
        if proc.returncode != 0:
            detail = proc.stderr.strip().splitlines()[-3:]
            raise fail(f"cp exited {proc.returncode}: {' | '.join(detail)}")
    # The mount root itself: owner and mode come from the snapshot too.
    st = source.stat()
    os.chown(store, st.st_uid, st.st_gid)
    store.chmod(st.st_mode & 0o7777)
    os.sync()
    check = _run([*VERIFY, f"{source}/", f"{store}/"])
    if check.returncode != 0:
        detail = check.stderr.strip().splitlines()[-3:]
        raise fail(f"verification (rsync) exited {check.returncode}: {' | '.join(detail)}")
    differences = [line for line in check.stdout.splitlines() if line.strip()]
    if differences:
        raise fail(
            f"verification found {len(differences)} difference(s) after the copy, e.g. "
            + "; ".join(differences[:3])
        )
    journal.write(store, "copied")
