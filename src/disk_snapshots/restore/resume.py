"""Resume or plan anew: what the members' journals say about an unfinished restore.

The journal on each disk is the record that makes the errand rerunnable: when any
member still has an unfinished journal, a rerun resumes that restore with the
snapshot and safety ids the journals name instead of planning anew (a new plan
might choose differently, and a second safety snapshot of a half-copied disk would
be worthless). Only naming other snapshots in ``restore.snapshots`` replaces it:
that is how an operator goes back to the safety snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from disk_snapshots.errors import ReleaseError
from disk_snapshots.members import Member
from disk_snapshots.restore.journal import Journal
from disk_snapshots.restore.plan import PlanEntry


class RestoreFailed(ReleaseError, RuntimeError):
    """The restore cannot go on; the message says why (the report says where things stand)."""


@dataclass(frozen=True)
class Resume:
    """What the journals say about an unfinished restore."""

    restore_id: str
    plan: list[PlanEntry]
    journals: dict[str, Journal]  # instance id → its unfinished journal
    finished: frozenset[str]  # instance ids whose part is already done


def find_unfinished(
    journals: Mapping[str, tuple[Journal | None, Journal | None]],
) -> Resume | None:
    """An unfinished restore from the members' (journal, last finished journal) pairs."""
    unfinished = {i: j for i, (j, _) in journals.items() if j is not None}
    if not unfinished:
        return None
    ids = {j.restore_id for j in unfinished.values()}
    if len(ids) > 1 or "unknown" in ids:
        detail = ", ".join(f"{j.instance or i}: {j.restore_id}" for i, j in unfinished.items())
        raise RestoreFailed(
            f"the members' restore journals disagree or cannot be read ({detail}); "
            "nothing was changed. Inspect /var/vcap/store/.disk-snapshots/restore.json on each"
        )
    restore_id = ids.pop()
    plan = next((j.plan for j in unfinished.values() if j.plan), [])
    if not plan:
        raise RestoreFailed(f"the journals of {restore_id} hold no plan; nothing was changed")
    finished = frozenset(
        i
        for i, (j, last) in journals.items()
        if j is None and last is not None and last.restore_id == restore_id
    )
    return Resume(restore_id, plan, unfinished, finished)


def supersedes(resume: Resume, explicit: Mapping[str, str], members: Sequence[Member]) -> bool:
    """restore.snapshots naming other snapshots than the journals replaces the restore."""
    if not explicit:
        return False
    journaled = {e.id: e.snapshot_id for e in resume.plan if e.action == "copy"}
    for key, snapshot_id in explicit.items():
        member = next((m for m in members if m.matches(key)), None)
        if member is None or journaled.get(member.id) != snapshot_id:
            return True
    return False
