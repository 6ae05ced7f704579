"""``disk-snapshots restore``: the seed's restore, through the Director, in the seed's order.

1. plan with the errand's planner (restore/plan.py) from what every instance says
   (``bin/snapshots status``) and the catalog; choose copy or replace per disk
   (decide.py); hold the chosen snapshots against retention (restore/hold.py);
2. ask (unless ``--yes``); a dry run stops after the plan, its hold left for a while;
3. ``bosh stop`` the followers, then the leader;
4. a clean pre-restore safety snapshot of every disk, with a journal on each disk that
   is written onto or kept (a disk to be replaced stays as it is);
5. restore: copy the snapshot onto the disk under its journal, or have the instance's
   snapshotter make a new disk from it and ``bosh attach-disk … --disk-properties=copy``
   it (the old disk is orphaned);
6. ``bosh start`` the leader, wait until it leads, run ``restore.verify``;
7. ``bosh start`` the followers, wait until each is in sync with the leader;
8. close the journals, release the hold, and say per instance what was done and the
   way back. A run that stops midway says where every instance stands; run again, it
   resumes from the journals.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Literal

from disk_snapshots.catalog import Snapshot
from disk_snapshots.operator import decide
from disk_snapshots.operator import report
from disk_snapshots.operator.bosh import Bosh
from disk_snapshots.operator.decide import Topology
from disk_snapshots.operator.errors import OperatorError
from disk_snapshots.operator.errors import PartlyDone
from disk_snapshots.operator.errors import Refused
from disk_snapshots.operator.progress import Progress
from disk_snapshots.operator.remote import Remote
from disk_snapshots.operator.report import Part
from disk_snapshots.restore.journal import Journal
from disk_snapshots.restore.journal import new_restore_id
from disk_snapshots.restore.plan import PlanError
from disk_snapshots.restore.plan import Policy
from disk_snapshots.restore.plan import choose_leader
from disk_snapshots.restore.plan import plan_restore
from disk_snapshots.restore.resume import RestoreFailed
from disk_snapshots.restore.resume import Resume
from disk_snapshots.restore.resume import find_unfinished
from disk_snapshots.restore.resume import supersedes
from disk_snapshots.restore.target import Target
from disk_snapshots.table import from_json

LEADER_READY = ("leader", "standalone")  # a leader whose followers are stopped is alone
POLL_SECONDS = 1.0
NOTHING_DONE = "nothing was stopped or written"


@dataclass(frozen=True)
class Options:
    target: Target = field(default_factory=lambda: Target("latest"))
    snapshots: Mapping[str, str] = field(default_factory=dict)  # group/id-or-index → id
    method: str = "auto"
    followers: Literal["resync", "restore"] = "resync"
    dry_run: bool = False
    skip_drain: bool = False
    yes: bool = False
    hold_seconds: int = 3600  # how long a dry run's plan stays held
    timeout: float = 3600.0  # for each wait (a role, a sync); and the real run's hold


@dataclass
class RestoreRun:
    bosh: Bosh
    options: Options
    progress: Progress
    confirm: Callable[[str], bool]
    restore_id: str = ""
    parts: list[Part] = field(default_factory=list)
    step: str = "planning"
    replaces: str = ""  # an unfinished restore this one replaces (other snapshots named)
    _topology: Topology | None = None

    @property
    def deployment(self) -> str:
        return self.bosh.deployment

    @property
    def remote(self) -> Remote:
        return Remote(self.bosh)

    @property
    def topology(self) -> Topology:
        if self._topology is None:
            raise OperatorError("the restore has not been planned")
        return self._topology

    # -- planning -----------------------------------------------------------------------

    def run(self) -> int:
        self.prepare()
        self.hold()
        if self.options.dry_run:
            self.progress.plain(
                f"Dry run: nothing was stopped or written; the plan's snapshots are held for "
                f"{self.options.hold_seconds}s (retention keeps them until the real run)."
            )
            return 0
        question = f"Restore {self.deployment} as planned above (its services stop)?"
        try:
            confirmed = self.options.yes or self.confirm(question)
        except Refused:
            self.release()
            raise
        if not confirmed:
            self.release()
            raise Refused(f"not confirmed; {NOTHING_DONE}")
        try:
            self.execute()
        except (OperatorError, RestoreFailed) as err:
            raise self.failed(str(err)) from None
        except KeyboardInterrupt:
            raise self.failed("interrupted (Ctrl-C)") from None
        for line in report.summary(
            self.deployment, self.restore_id, self.parts, self.progress.elapsed()
        ):
            self.progress.plain(line)
        return 0

    def prepare(self) -> None:
        p = self.progress
        with p.step(f"asking the Director for the instances of {self.deployment}"):
            instances = self.bosh.instances()
        with p.step("asking every instance for its status (bosh ssh: bin/snapshots status)"):
            answers = self.remote.everywhere(instances, "status")
        statuses = {s: a.value for s, a in answers.items() if a.ok and isinstance(a.value, dict)}
        failures = {s: a.error for s, a in answers.items() if not a.ok}
        self._topology = decide.topology(self.deployment, instances, statuses, failures)
        catalog = self._catalog()
        resume = self._unfinished()
        if resume is not None:
            self._resume(resume, catalog)
        else:
            self._plan(catalog)
        self._show()

    def _catalog(self) -> list[Snapshot]:
        """The deployment's catalog, plus each snapshot ``--snapshot`` names that is not in
        it (another deployment's, say), so the planner can say whose it is."""
        reader = self.topology.slug(self.topology.members[0].id)
        answer = self.remote.one(reader, "list", "--json")
        if not answer.ok:
            raise Refused(f"the catalog cannot be read on {reader}: {answer.error}; {NOTHING_DONE}")
        catalog = from_json(json.dumps(answer.value))
        known = {s.id for s in catalog}
        for snapshot_id in set(self.options.snapshots.values()) - known:
            shown = self.remote.one(reader, "show", snapshot_id)
            if shown.ok:
                catalog += from_json(json.dumps(shown.value))
        return catalog

    def _unfinished(self) -> Resume | None:
        journals: dict[str, tuple[Journal | None, Journal | None]] = {}
        for instance_id, status in self.topology.statuses.items():
            raw = status.get("journal")
            pair = raw if isinstance(raw, dict) else {}
            journals[instance_id] = (_journal(pair.get("journal")), _journal(pair.get("last")))
        try:
            resume = find_unfinished(journals)
        except RestoreFailed as err:
            raise Refused(str(err)) from None
        if resume is not None and supersedes(resume, self.options.snapshots, self.topology.members):
            self.replaces = resume.restore_id
            self.progress.say(
                f"{resume.restore_id} did not finish; --snapshot names other snapshots, so "
                "a new restore replaces it"
            )
            return None
        return resume

    def _plan(self, catalog: list[Snapshot]) -> None:
        t, o = self.topology, self.options
        leader_id, why = choose_leader(t.group or t.members, t.peers, t.roles)
        policy = Policy(o.followers, snapshots_option="--snapshot", followers_option="--followers")
        try:
            plan = plan_restore(
                catalog, t.members, leader_id, self.deployment, o.target, policy, o.snapshots
            )
        except PlanError as err:
            raise Refused(f"no restore plan: {err}; {NOTHING_DONE}") from None
        for line in plan.choices():
            self.progress.plain(line)
        self.progress.plain(f"Leader: {why}.")
        by_id = {s.id: s for s in catalog}
        self.restore_id = new_restore_id()
        for entry in plan.entries():
            snapshot = by_id.get(entry.snapshot_id)
            how, reason = decide.method(entry, snapshot, t.statuses[entry.id], o.method)
            self.parts.append(Part(entry, t.slug(entry.id), how, reason))

    def _resume(self, resume: Resume, catalog: list[Snapshot]) -> None:
        """Go on with the restore the journals name, with its snapshots and safety ids; an
        instance whose disk was not journaled yet gets its part as a new one would."""
        t = self.topology
        self.restore_id = resume.restore_id
        self.progress.say(
            f"{resume.restore_id} did not finish (an earlier run stopped): resuming it"
        )
        by_id = {s.id: s for s in catalog}
        for entry in resume.plan:
            journal = resume.journals.get(entry.id)
            part = Part(entry, t.slug(entry.id), "resync", "")
            if entry.id in resume.finished:
                part.finished, part.reason = True, "its part was finished by the earlier run"
            elif journal is not None:
                part.method = "copy" if entry.action == "copy" else "resync"
                part.safety, part.journal_phase = journal.safety_snapshot_id, journal.phase
                part.reason = f"its journal says {journal.phase}"
            else:
                snapshot = by_id.get(entry.snapshot_id)
                part.method, part.reason = decide.method(
                    entry, snapshot, t.statuses[entry.id], self.options.method
                )
            self.parts.append(part)

    def _show(self) -> None:
        self.progress.plain("How each disk gets its snapshot:")
        for part in self.parts:
            self.progress.plain(f"  {part.label}: {part.method}: {part.reason}")
        self.progress.plain(
            "Order: stop the followers, then the leader; a clean safety snapshot of every disk; "
            "restore (copy, or replace the disk); start the leader and wait until it leads; "
            "start the followers and wait until they are in sync."
        )

    def hold(self) -> None:
        ids = sorted({p.entry.snapshot_id for p in self.parts if p.entry.snapshot_id})
        if not ids:
            return
        seconds = (
            self.options.hold_seconds if self.options.dry_run else int(self.options.timeout) * 3
        )
        answer = self.remote.one(
            self.parts[0].slug, "hold", *ids, "--by", self.restore_id, "--for", str(seconds)
        )
        if not answer.ok:
            raise Refused(f"the plan's snapshots cannot be held: {answer.error}; {NOTHING_DONE}")
        self.progress.say(
            f"held {', '.join(ids)} against retention for {seconds}s (by {self.restore_id})"
        )

    # -- doing it -----------------------------------------------------------------------

    def execute(self) -> None:
        todo = [p for p in self.parts if not p.finished]
        leader = [p for p in todo if p.entry.role == "leader"]
        followers = [p for p in todo if p.entry.role != "leader"]
        self.progress.say(f"restore {self.restore_id}:")
        for part in [*followers, *leader]:
            self.stop(part)
        self.safety([p for p in todo if not p.safety])
        self.copy(
            [p for p in todo if p.method == "copy" and p.journal_phase not in ("copied", "started")]
        )
        self.replace([p for p in todo if p.method == "replace"])
        for part in leader:
            self.start(part)
            self.wait(part, _leads, "lead")
            self.verify(part)
        for part in followers:
            self.start(part)
        for part in followers:
            self.wait(part, _in_sync, "be in sync with the leader")
        self.finish(todo)
        self.release()

    def stop(self, part: Part) -> None:
        self.step = f"stopping {part.label}"
        instance = self.topology.instances[part.entry.id]
        if instance.state == "stopped":
            self.progress.say(f"{part.label} ({part.entry.role}) is stopped already")
            return
        with self.progress.step(
            f"stopping {part.label} ({part.entry.role}): bosh stop {part.slug}"
        ):
            self.bosh.stop(part.slug, skip_drain=self.options.skip_drain)
        part.done.append(f"stopped at {self.progress.elapsed():.1f}s")

    def safety(self, parts: list[Part]) -> None:
        self.step = "taking the clean pre-restore safety snapshots"
        plan = json.dumps([p.entry.to_json() for p in self.parts])
        args = {
            p.slug: [
                self.restore_id,
                "--plan",
                plan,
                *(["--replace"] if p.method == "replace" else []),
                *(["--replaces", self.replaces] if self.replaces else []),
            ]
            for p in parts
        }
        with self.progress.step(f"{self.step} ({len(parts)} disks)"):
            answers = self._each(parts, "restore-safety", args)
        for part in parts:
            part.safety = str(answers[part.slug].get("safety_snapshot_id", ""))
            part.done.append(f"safety snapshot {part.safety}")
            self.progress.note(f"{part.label}: {part.safety}")

    def copy(self, parts: list[Part]) -> None:
        self.step = "copying the snapshots onto the disks"
        if not parts:
            return
        with self.progress.step(f"{self.step}: {', '.join(p.label for p in parts)}"):
            answers = self._each(parts, "restore-copy", {p.slug: [self.restore_id] for p in parts})
        for part in parts:
            seconds = answers[part.slug].get("seconds", "?")
            part.done.append(f"copied {part.entry.snapshot_id} in {seconds}s")
            self.progress.note(f"{part.label}: {part.entry.snapshot_id} copied in {seconds}s")

    def replace(self, parts: list[Part]) -> None:
        if not parts:
            return
        self.step = "making new disks from the snapshots"
        args = {p.slug: [p.entry.snapshot_id, "--restore-id", self.restore_id] for p in parts}
        with self.progress.step(f"{self.step}: {', '.join(p.label for p in parts)}"):
            answers = self._each(parts, "create-disk", args)
        for part in parts:
            made = answers[part.slug]
            part.new_disk = str(made.get("disk_cid", ""))
            part.done.append(f"made disk {part.new_disk} in {made.get('seconds', '?')}s")
            self.progress.note(
                f"{part.label}: {part.new_disk} ({made.get('size_mib')} MiB) "
                f"in {made.get('seconds')}s"
            )
        for part in parts:
            self.attach(part)

    def attach(self, part: Part) -> None:
        self.step = f"attaching {part.new_disk} to {part.label}"
        now = {i.id: i for i in self.bosh.instances()}[part.entry.id]
        if now.state not in ("stopped", "detached"):
            stopped = next((d for d in part.done if d.startswith("stopped at")), "")
            who = (
                f"this command stopped it ({stopped})"
                if stopped
                else "it was stopped before this command ran"
            )
            raise OperatorError(
                f"{part.label} is {now.state}, not stopped, so the Director would refuse "
                f"attach-disk ('must be in bosh stopped state'): {who}, and something started "
                f"it since. Nothing was attached; the new disk {part.new_disk} is left unattached"
            )
        part.old_disk = now.disk_cids[0] if now.disk_cids else ""
        with self.progress.step(
            f"attaching {part.new_disk} to {part.label}: bosh attach-disk {part.slug} "
            f"{part.new_disk} --disk-properties=copy"
        ):
            self.bosh.attach_disk(part.slug, part.new_disk)
        part.done.append(f"attached {part.new_disk}, orphaning {part.old_disk}")
        plan = json.dumps([p.entry.to_json() for p in self.parts])
        self.remote.call(
            part.slug, "restore-adopt", self.restore_id, "--plan", plan, "--safety", part.safety
        )

    def start(self, part: Part) -> None:
        self.step = f"starting {part.label}"
        with self.progress.step(
            f"starting {part.label} ({part.entry.role}): bosh start {part.slug}"
        ):
            self.bosh.start(part.slug)
        part.done.append(f"started at {self.progress.elapsed():.1f}s")

    def wait(self, part: Part, check: Callable[[Mapping[str, object]], str], what: str) -> None:
        self.step = f"waiting for {part.label} to {what}"
        deadline = time.monotonic() + self.options.timeout
        with self.progress.step(self.step):
            while True:
                answer = self.remote.one(part.slug, "status")
                why_not = check(answer.mapping()) if answer.ok else answer.error
                if not why_not:
                    return
                if time.monotonic() > deadline:
                    raise OperatorError(
                        f"{part.label} did not {what} within {self.options.timeout:.0f}s "
                        f"(last: {why_not})"
                    )
                time.sleep(POLL_SECONDS)

    def verify(self, part: Part) -> None:
        self.step = f"verifying {part.label} (restore.verify)"
        answer = self.remote.call(part.slug, "restore-verify")
        said = (
            "passed"
            if answer.get("ran")
            else f"nothing to run ({answer.get('reason') or 'restore.verify is empty'})"
        )
        self.progress.say(f"restore.verify on {part.label}: {said}")

    def finish(self, parts: list[Part]) -> None:
        self.step = "closing the journals"
        self._each(parts, "restore-finish", {p.slug: [self.restore_id] for p in parts})

    def release(self) -> None:
        answer = self.remote.one(self.parts[0].slug, "hold", "--release", "--by", self.restore_id)
        if not answer.ok:
            self.progress.say(
                f"warning: the hold was not released ({answer.error}); it expires on its own"
            )

    def _each(
        self, parts: list[Part], action: str, args: dict[str, list[str]]
    ) -> dict[str, dict[str, object]]:
        answers = self.remote.on_many([p.slug for p in parts], action, args)
        failed = [f"{p.label}: {answers[p.slug].error}" for p in parts if not answers[p.slug].ok]
        if failed:
            raise OperatorError("; ".join(failed))
        return {slug: a.mapping() for slug, a in answers.items()}

    def failed(self, reason: str) -> OperatorError:
        try:
            states = {
                i.slug: f"{i.state}, processes {i.process_state or '-'}"
                for i in self.bosh.instances()
            }
        except OperatorError as err:
            states = {p.slug: f"unknown ({err})" for p in self.parts}
        text = report.failure(
            self.deployment, self.restore_id, self.step, reason, self.parts, states
        )
        touched = any(p.done for p in self.parts)
        return PartlyDone(text) if touched else OperatorError(text)


def _journal(raw: object) -> Journal | None:
    if not isinstance(raw, dict):
        return None
    try:
        return Journal.from_json(raw)
    except (ValueError, TypeError):
        return Journal("unknown", "unknown", "unknown", "failed", detail="unreadable journal")


def _leads(status: Mapping[str, object]) -> str:
    role = status.get("role")
    if role in LEADER_READY:
        return ""
    return f"role {role} {status.get('role_error') or ''}".strip()


def _in_sync(status: Mapping[str, object]) -> str:
    role = status.get("role")
    replication = status.get("replication")
    in_sync = replication.get("in_sync") if isinstance(replication, dict) else None
    if role == "follower" and in_sync in (True, None):
        return ""
    detail = replication if isinstance(replication, dict) else {}
    link = detail.get("master_link_status", "?")
    syncing = detail.get("master_sync_in_progress", "?")
    said = f"role {role}, link {link}, sync in progress {syncing}"
    return f"{said} {status.get('role_error') or ''}".strip()
