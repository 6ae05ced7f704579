"""What a restore says at its end: per instance what was done, and the way back (pure).

The way back is always a command the operator can paste: a replaced disk is attached
again (``bosh attach-disk`` of the orphaned disk: the Director un-orphans it with its
own size), and a disk that was copied onto (or kept for a resync) gets its clean
pre-restore safety snapshot back with this same command.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from disk_snapshots.operator.decide import Method
from disk_snapshots.restore.plan import PlanEntry


@dataclass
class Part:
    """One instance's part of a restore, and what has happened to it so far."""

    entry: PlanEntry
    slug: str  # group/id, as bosh commands take it
    method: Method
    reason: str
    safety: str = ""  # the clean pre-restore snapshot of its disk
    old_disk: str = ""  # replace: the disk the Director orphaned
    new_disk: str = ""  # replace: the disk made from the snapshot
    journal_phase: str = ""  # resumed: where the earlier run left its journal
    finished: bool = False  # resumed: an earlier run finished this instance's part
    done: list[str] = field(default_factory=list)  # what this run did, in words

    @property
    def label(self) -> str:
        return self.entry.instance


def _bosh(deployment: str, *args: str) -> str:
    return shlex.join(["bosh", "-d", deployment, *args])


def way_back(deployment: str, parts: Sequence[Part]) -> list[str]:
    """Commands that put the disks back as they were before the restore."""
    lines = []
    if parts and all(p.safety for p in parts):
        named = [a for p in parts for a in ("--snapshot", f"{p.slug}={p.safety}")]
        restore = ["disk-snapshots", "-d", deployment, "restore", "--followers", "restore"]
        lines.append(
            "every disk gets its clean pre-restore safety snapshot: "
            + shlex.join([*restore, *named])
        )
    elif any(p.safety for p in parts):
        kept = ", ".join(f"{p.label}: {p.safety}" for p in parts if p.safety)
        lines.append(f"the clean pre-restore safety snapshots: {kept}")
    for part in parts:
        if part.method == "replace" and part.old_disk and part.new_disk:
            stop, start = (
                _bosh(deployment, "stop", part.slug),
                _bosh(deployment, "start", part.slug),
            )
            attach = _bosh(deployment, "attach-disk", part.slug, part.old_disk)
            lines.append(
                f"{part.label}: its old disk, attached again (the Director un-orphans it): "
                f"{stop} && {attach} && {start}"
            )
    return lines


def describe(part: Part) -> str:
    """One instance's line: its part of the plan, and its safety snapshot."""
    if part.finished:
        what = "its part was finished by an earlier run"
    elif part.method == "replace":
        made = f"disk {part.new_disk}" if part.new_disk else "a new disk"
        what = f"{made} made from {part.entry.snapshot_id} replaces its disk"
        if part.old_disk:
            what += f" {part.old_disk} (orphaned, not deleted)"
    elif part.method == "copy":
        what = f"{part.entry.snapshot_id} is copied onto its disk"
    else:
        what = "keeps its disk and resyncs from the leader"
    safety = f"safety snapshot {part.safety}" if part.safety else "no safety snapshot yet"
    return f"{part.label} ({part.entry.role}): {what}; {safety}"


def summary(deployment: str, restore_id: str, parts: Sequence[Part], seconds: float) -> list[str]:
    lines = [f"restore {restore_id} of {deployment}: done in {seconds:.1f}s"]
    lines += [f"  {describe(p)}" for p in parts]
    orphaned = [f"{p.old_disk} ({p.label})" for p in parts if p.old_disk and p.new_disk]
    if orphaned:
        lines.append(f"Orphaned disks (bosh disks --orphaned): {', '.join(orphaned)}")
    lines.append("Way back to the state before the restore:")
    lines += [f"  {line}" for line in way_back(deployment, parts)]
    return lines


def failure(
    deployment: str,
    restore_id: str,
    step: str,
    reason: str,
    parts: Sequence[Part],
    states: dict[str, str],
) -> str:
    """Where every instance stands after a failed restore, and what to do next."""
    lines = [f"restore {restore_id} FAILED while {step}: {reason}", "Where every instance stands:"]
    for part in parts:
        director = states.get(part.slug, "unknown to the Director now")
        done = "; ".join(part.done) or "nothing done to it by this run"
        lines.append(f"  {describe(part)}; Director: {director}; this run: {done}")
    if any(p.safety for p in parts):
        lines.append(
            "To finish: run the same command again; it resumes from the journals on the "
            "disks (a disk whose copy did not finish never starts: pre-start refuses it)."
        )
    else:
        starts = [f"bosh -d {deployment} start {p.slug}" for p in parts if p.done]
        back = f"; to go back: {' && '.join(starts)}" if starts else ""
        lines.append(f"No disk was written. To finish: run the same command again{back}.")
    ways = way_back(deployment, parts)
    if ways:
        lines.append("To go back instead:")
        lines += [f"  {line}" for line in ways]
    return "\n".join(lines)
