"""The pure decisions of a set: its id, the verdict, how long a member waits for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime

from disk_snapshots.annotations import MAX_TAG_VALUE
from disk_snapshots.annotations import SetState
from disk_snapshots.members import Member

# How long a thawed member waits for the coordinator's verdict before it marks its
# snapshot incomplete on its own, beyond the two leases (its own, the slowest member's)
# the coordinator may still be inside of.
DECISION_GRACE = 5.0


def decision_window(lease_seconds: int) -> float:
    """Seconds a thawed member waits for the verdict before it marks itself incomplete."""
    return 2 * lease_seconds + DECISION_GRACE


def new_set_id(name: str, now: datetime, token: str) -> str:
    """``<name>-<UTC time>-<token>``: sortable by time, unique across coordinators."""
    return f"{name}-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{token}"


def clean_text(text: str, limit: int = MAX_TAG_VALUE) -> str:
    """One line that fits a tag: command output may hold newlines and control characters."""
    flat = " ".join("".join(c if ord(c) >= 32 else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass
class MemberResult:
    member: Member
    quiesced: bool = False
    snapshot_id: str = ""
    thawed: bool = False
    frozen_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return self.quiesced and bool(self.snapshot_id) and self.thawed and not self.errors


def decide(results: Sequence[MemberResult]) -> tuple[SetState, str]:
    """``complete`` only if every member quiesced, snapshotted and thawed without error."""
    if results and all(r.ok() for r in results):
        return "complete", ""
    if not results:
        return "incomplete", "no members"
    problems: list[str] = []
    for r in results:
        if r.errors:
            problems += [f"{r.member.label}: {e}" for e in r.errors]
        elif not r.ok():
            missing = "not quiesced" if not r.quiesced else "no snapshot"
            problems.append(f"{r.member.label}: {missing if not r.snapshot_id else 'not thawed'}")
    return "incomplete", clean_text("; ".join(problems))
