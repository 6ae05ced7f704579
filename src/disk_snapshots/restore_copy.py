"""Copy a snapshot's content onto this instance's disk, under a journal (DESIGN §8 step 4).

The journal lives on the disk being restored (``.disk-snapshots/restore.json``), so it
stays with the data: pre-start reads it and refuses to start a service on a disk
whose copy did not finish, naming the way to finish (rerun the errand) or to go back
(the safety snapshot). The copy is rsync with --delete: rerunning it after an
interruption completes it, and whatever the snapshot lacks is removed. Owners, modes,
ACLs, xattrs, hard links and sparse files are preserved.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Literal

Phase = Literal["planned", "copying", "copied", "started", "done", "failed"]
JOURNAL_DIR = ".disk-snapshots"
RSYNC = (
    "rsync",
    "--archive",
    "--hard-links",
    "--acls",
    "--xattrs",
    "--sparse",
    "--numeric-ids",
    "--delete",
    "--whole-file",
    f"--exclude=/{JOURNAL_DIR}/",
)


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

    @staticmethod
    def path(store: Path) -> Path:
        return store / JOURNAL_DIR / "restore.json"

    @classmethod
    def read(cls, store: Path) -> Journal | None:
        try:
            data = json.loads(cls.path(store).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            # A journal we cannot read is treated as an unfinished restore: never guess.
            return cls(
                "unknown", "unknown", "unknown", "failed", detail=f"unreadable journal: {err}"
            )
        return cls(**{k: str(v) for k, v in data.items() if k in cls.__dataclass_fields__})  # type: ignore[arg-type]

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
        self.path(store).replace(self.path(store).with_name("restore-last.json"))

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


def copy_tree(source: Path, store: Path, journal: Journal) -> None:
    """Make ``store`` hold exactly what ``source`` holds (except our journal directory)."""
    journal.write(store, "copying")
    proc = subprocess.run(
        [*RSYNC, f"{source}/", f"{store}/"],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-3:]
        message = f"rsync exited {proc.returncode}: {' | '.join(detail)}"
        journal.write(store, "failed", message)
        raise RestoreCopyError(
            f"copying snapshot {journal.snapshot_id} into {store} failed: {message}. "
            f"The service stays stopped; the safety snapshot {journal.safety_snapshot_id} "
            "holds the data from before the restore."
        )
    os.sync()
    journal.write(store, "copied")
