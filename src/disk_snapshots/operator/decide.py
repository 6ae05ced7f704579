"""The operator's command's decisions, as pure functions of what the instances said.

Who takes part (the ``snapshotter`` and ``peers`` links' members, as every instance's
rendered config has them), who leads, what each disk gets (the errand's planner,
restore/plan.py), and how: copy onto the disk, or replace it with a disk the provider
makes from the snapshot (``--method``). Nothing here runs a command.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from disk_snapshots.catalog import Snapshot
from disk_snapshots.members import Member
from disk_snapshots.operator.errors import Refused
from disk_snapshots.operator.shapes import Instance
from disk_snapshots.restore.plan import PlanEntry

Method = Literal["copy", "replace", "resync"]
METHODS = ("copy", "replace", "auto")
MIB = 2**20


@dataclass(frozen=True)
class Topology:
    """The restore's members with what each said (``bin/snapshots status``)."""

    members: tuple[Member, ...]  # the links' instances (restore/plan's members)
    group: tuple[Member, ...]  # the snapshotter link (the leader group, or the only one)
    peers: tuple[Member, ...]  # the peers link (a data group), maybe none
    statuses: Mapping[str, Mapping[str, object]]  # by instance id
    instances: Mapping[str, Instance]  # by instance id, as the Director lists them

    @property
    def roles(self) -> dict[str, str]:
        return {i: str(s.get("role", "unknown")) for i, s in self.statuses.items()}

    def slug(self, instance_id: str) -> str:
        return self.instances[instance_id].slug

    def label(self, instance_id: str) -> str:
        member = next((m for m in self.members if m.id == instance_id), None)
        return member.label if member else self.instances[instance_id].label


def _members(raw: object) -> tuple[Member, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        Member(
            str(m.get("group")),
            int(m.get("index", 0)),
            str(m.get("id")),
            str(m.get("address", "")),
            int(m.get("port", 0)),
            bool(m.get("bootstrap")),
        )
        for m in raw
        if isinstance(m, dict)
    )


def topology(
    deployment: str,
    instances: Sequence[Instance],
    statuses: Mapping[str, Mapping[str, object]],
    failures: Mapping[str, str],
) -> Topology:
    """The members every answering instance's links name; Refused when there are none,
    or when a member cannot take part (no VM, no answer), naming it and what to do.
    ``statuses`` and ``failures`` are by ``group/id``."""
    by_slug = {i.slug: i for i in instances}
    by_id = {i.id: i for i in instances}
    if not statuses:
        said = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())) or "no instance"
        raise Refused(
            f"no instance of {deployment} answers as a snapshotter ({said}); is the "
            "snapshotter job colocated, and are its instances running?"
        )
    raw_links = next(iter(statuses.values())).get("links")
    links: Mapping[str, object] = raw_links if isinstance(raw_links, dict) else {}
    members = _members(links.get("members"))
    problems = []
    for m in members:
        inst = by_id.get(m.id)
        if inst is None:
            problems.append(f"{m.label} ({m.id}) is in the links but not among the instances")
        elif not inst.has_vm:
            problems.append(
                f"{m.label} is {inst.state or 'without a VM'} (no VM to restore with): "
                f"`bosh -d {deployment} start {inst.slug}` first"
            )
        elif inst.slug not in statuses:
            problems.append(f"{m.label} does not answer: {failures.get(inst.slug, 'no answer')}")
    if problems:
        raise Refused("; ".join(problems) + "; nothing was stopped or written")
    return Topology(
        members=members,
        group=_members(links.get("snapshotter")),
        peers=_members(links.get("peers")),
        statuses={by_slug[s].id: v for s, v in statuses.items() if s in by_slug},
        instances=by_id,
    )


def disk_size(status: Mapping[str, object]) -> int | None:
    disk = status.get("disk")
    size = disk.get("size_bytes") if isinstance(disk, dict) else None
    return size if isinstance(size, int) else None


def _copy_refusal(status: Mapping[str, object]) -> str:
    """Why a snapshot cannot be copied onto the instance's disk, or "" when it can (the
    provider says why: providers/base.py copy_refusal)."""
    provider = status.get("provider")
    refusal = provider.get("copy_refusal") if isinstance(provider, dict) else ""
    return refusal if isinstance(refusal, str) else ""


def _replace_refusal(label: str, snapshot: Snapshot, status: Mapping[str, object]) -> str:
    """Why ``snapshot`` cannot replace ``label``'s disk, or "" when it can."""
    provider = status.get("provider")
    kind = provider.get("type") if isinstance(provider, dict) else "?"
    if not (isinstance(provider, dict) and provider.get("creates_disks")):
        return f"{label}'s provider ({kind}) cannot make a disk from a snapshot"
    now, then = disk_size(status), snapshot.size_bytes
    if now is None or then is None:
        return f"the size of {label}'s disk or of {snapshot.id}'s disk is unknown"
    if now != then:
        return (
            f"{snapshot.id} was taken of a {then // MIB} MiB disk and {label}'s disk is "
            f"{now // MIB} MiB now: attach-disk --disk-properties=copy would record "
            f"{now // MIB} MiB for it, and the Director would migrate the disk to the "
            "manifest's size on the next start"
        )
    return ""


def method(
    entry: PlanEntry,
    snapshot: Snapshot | None,
    status: Mapping[str, object],
    wanted: str,
) -> tuple[Method, str]:
    """How ``entry``'s disk gets its snapshot, and why, in words; Refused when ``wanted``
    is replace and it cannot be (``auto`` falls back to copy and says why)."""
    if entry.action == "resync" or snapshot is None:
        return "resync", "keeps its disk and replicates from the restored leader"
    cannot_copy = _copy_refusal(status)
    if wanted == "copy":
        if cannot_copy:
            raise Refused(
                f"--method copy for {entry.instance}: {cannot_copy}; use --method replace; "
                "nothing was stopped or written"
            )
        return "copy", "--method copy: the snapshot is copied onto the current disk"
    refusal = _replace_refusal(entry.instance, snapshot, status)
    if not refusal:
        size = snapshot.size_bytes // MIB if snapshot.size_bytes else 0
        return "replace", (
            f"a new {size} MiB disk made from {snapshot.id} replaces the current one "
            "(bosh attach-disk); the old disk is orphaned, not deleted"
        )
    if wanted == "replace" or cannot_copy:
        other = (
            f"and it cannot copy either: {cannot_copy}"
            if cannot_copy
            else "use --method copy (it copies the snapshot onto the current disk) or --method auto"
        )
        raise Refused(
            f"--method {wanted} for {entry.instance}: {refusal}; {other}; "
            "nothing was stopped or written"
        )
    return "copy", f"copy, not replace: {refusal}"


def unfinished(topology: Topology) -> list[str]:
    """Instances whose disk holds a restore journal that did not finish."""
    found = []
    for instance_id, status in topology.statuses.items():
        journal = status.get("journal")
        current = journal.get("journal") if isinstance(journal, dict) else None
        if isinstance(current, dict):
            found.append(
                f"{topology.label(instance_id)}: {current.get('restore_id')} "
                f"(phase {current.get('phase')})"
            )
    return found
