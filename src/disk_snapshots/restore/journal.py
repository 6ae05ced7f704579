"""The restore journal: what one instance's part of a restore is, and how far it got.

The journal lives on the disk being restored (``.disk-snapshots/restore.json``), so it
stays with the data: pre-start reads it and refuses to start a service on a disk
whose copy did not finish, naming the way to finish (rerun the errand) or to go back
(the safety snapshot). Every journal also holds the whole plan, so that any one member
can tell a rerun of the errand what the restore was (resume.py).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Literal

from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.vm.instance import DISK_DIR

Phase = Literal["planned", "copying", "copied", "started", "done", "failed"]
PHASES = ("planned", "copying", "copied", "started", "done", "failed")
RESTORE_ID = r"restore-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}"


def new_restore_id(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"restore-{moment}-{secrets.token_hex(3)}"


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
    # The data of snapshot_id comes from this backup of it (restore.source backup/auto).
    backup_id: str = ""

    @staticmethod
    def path(store: Path) -> Path:
        return store / DISK_DIR / "restore.json"

    @staticmethod
    def last_path(store: Path) -> Path:
        return store / DISK_DIR / "restore-last.json"

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
        plan = [PlanEntry.from_json(entry) for entry in raw_plan if isinstance(entry, dict)]
        return cls(plan=plan, **fields)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "plan": [entry.to_json() for entry in self.plan]}

    def write(self, store: Path, phase: Phase, detail: str = "") -> None:
        self.phase = phase
        self.detail = detail
        self.updated_at = datetime.now(UTC).isoformat()
        path = self.path(store)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as handle:
            json.dump(self.to_json(), handle, indent=2)
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
