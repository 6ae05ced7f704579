"""``bin/snapshots restore``: one instance restores its own disk, on its own VM.

A single-instance deployment made with ``bosh create-env`` (the Director, issue 14) has
no errands and no Director above it, so nothing else can run the restore errand or the
operator's command for it. This does on the VM what the errand does for a deployment,
with the same parts: the planner (plan.py) chooses the snapshot, resume.py decides what
an unfinished journal on the disk means, ServiceJobs stops and starts ``service.jobs``
in their order, and the member steps (standalone.py, member.py) take the clean safety
snapshot and copy under the journal. Only the order of the steps lives here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import TextIO

from disk_snapshots.annotations import Annotations
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Snapshot
from disk_snapshots.member_errors import MemberError
from disk_snapshots.members import Member
from disk_snapshots.members import myself
from disk_snapshots.members import with_myself
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.restore.coordinator import LEADER_READY
from disk_snapshots.restore.coordinator import ROLE_WAIT_SECONDS
from disk_snapshots.restore.coordinator import SERVICE_SECONDS
from disk_snapshots.restore.journal import Journal
from disk_snapshots.restore.journal import new_restore_id
from disk_snapshots.restore.plan import Plan
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.restore.plan import PlanError
from disk_snapshots.restore.plan import Policy
from disk_snapshots.restore.plan import plan_restore
from disk_snapshots.restore.resume import RestoreFailed
from disk_snapshots.restore.resume import find_unfinished
from disk_snapshots.restore.resume import supersedes
from disk_snapshots.restore.standalone import Standalone
from disk_snapshots.restore.target import Target
from disk_snapshots.restore.tiers import Source
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.vm.monit import MonitError
from disk_snapshots.vm.services import NoService
from disk_snapshots.vm.services import ServiceError

# The names an operator uses on this path, for the planner's messages.
POLICY = Policy(snapshots_option="--snapshot", followers_option="--followers")
# A restore that fails keeps its snapshot held this long, so that a rerun (which resumes
# from the journal) still finds it; a hold expires on its own (restore/hold.py).
RUN_HOLD = timedelta(days=1)
PROBE_SECONDS = 1.0


def choose_for_instance(
    catalog: Sequence[Snapshot],
    me: Member,
    deployment: str,
    target: Target,
    snapshot_id: str = "",
    backups: Sequence[Backup] = (),
    source: Source = "auto",
) -> Plan:
    """What this instance's disk gets: the snapshot ``--snapshot`` names (any of this
    deployment's, a safety snapshot too), else the newest eligible snapshot this instance
    group and index took at or before the target. Group and index, not the instance id or
    disk CID: a VM recreated after its disk was lost has new ones, and its old
    snapshots are still its own. ``source`` chooses the tier as restore.source does
    (auto: a snapshot's backup when the snapshot is gone). PlanError says why nothing may
    be restored."""
    if snapshot_id:
        explicit = {me.label: snapshot_id}
        return plan_restore(
            catalog, (me,), me.id, deployment, target, POLICY, explicit, backups, source
        )

    def own(a: Annotations) -> bool:
        return (a.instance_group, a.index) == (me.group, me.index)

    mine = [s for s in catalog if own(s.annotations)]
    my_backups = [b for b in backups if own(b.annotations)]
    return plan_restore(mine, (me,), me.id, deployment, target, POLICY, None, my_backups, source)


@dataclass(frozen=True)
class Options:
    target: Target
    snapshot_id: str = ""
    source: Source = "auto"
    dry_run: bool = False
    # How long a dry run's choice stays held, so that the real run finds the same snapshot.
    dry_run_hold: timedelta = timedelta(hours=1)


@dataclass
class SingleRestore:
    here: Standalone
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    step: str = "planning"
    restore_id: str = ""
    safety_id: str = ""
    stopped: bool = False
    journaled: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    @property
    def jobs(self) -> tuple[str, ...]:
        return self.here.member.jobs.jobs

    def run(self, options: Options) -> int:
        """0 when the restore is done, or a dry run printed its plan; else 1, with the
        reason and where things stand on stderr."""
        started = time.monotonic()
        try:
            entry, replaces, source = self._plan(options)
            self._hold(entry, options.dry_run_hold if options.dry_run else RUN_HOLD)
            if options.dry_run:
                self.say("restore: dry run: nothing was stopped, snapshotted or written")
                return 0
            role, verified = self._execute(entry, replaces)
        except (RestoreFailed, MemberError, PlanError, *SNAPSHOT_ERRORS) as err:
            return self._failed(str(err))
        except KeyboardInterrupt:
            return self._failed("interrupted")
        self.seconds["total"] = time.monotonic() - started
        self._summary(entry, source, role, verified)
        return 0

    # -- planning ---------------------------------------------------------------------

    def _plan(self, options: Options) -> tuple[PlanEntry, str, Snapshot | None]:
        """This instance's plan entry, the unfinished restore it replaces (if any), and
        the chosen snapshot; a refusal before anything is touched."""
        s = self.here.snapshotter
        me = myself(s.config)
        others = [m.label for m in with_myself(s.config) if m.id != me.id]
        if others:
            raise RestoreFailed(
                f"this deployment's links name other instances too ({', '.join(others)}): "
                "restore them together, in their order, with `bosh run-errand restore` or "
                "the operator's command disk-snapshots"
            )
        resumed, replaces = self._unfinished(me, options)
        if resumed is not None:
            return resumed, "", self._snapshot(resumed.snapshot_id)
        catalog = s.catalog()
        if options.snapshot_id and all(x.id != options.snapshot_id for x in catalog):
            # Outside this deployment's catalog: the planner says whose it is, or that
            # there is no such snapshot.
            named = self._snapshot(options.snapshot_id)
            catalog = [*catalog, *([named] if named else [])]
        plan = choose_for_instance(
            catalog,
            me,
            s.config.spec.deployment,
            options.target,
            options.snapshot_id,
            s.backups(),
            options.source,
        )
        for line in plan.choices():
            self.say(line)
        backwards = ", ".join(reversed(self.jobs)) or "-"
        self.say(
            f"Order: stop {', '.join(self.jobs) or '(service.jobs is empty)'}, each stopped "
            "before the next; a clean safety snapshot; copy under the journal; start "
            f"{backwards}; wait until the service answers; verify."
        )
        self.restore_id = new_restore_id()
        return plan.leader.entry(), replaces, plan.leader.source

    def _unfinished(self, me: Member, options: Options) -> tuple[PlanEntry | None, str]:
        """What an unfinished journal on this disk means, as the errand reads it: the
        restore to resume (its entry), or the restore a new one replaces (its id)."""
        store = self.here.snapshotter.disk.mount
        path, unfinished = Journal.path(store), Journal.read(store)
        if unfinished is not None and unfinished.restore_id == "unknown":
            raise RestoreFailed(
                f"the restore journal {path} cannot be read ({unfinished.detail}): a "
                "restore of this disk may be unfinished, and nothing is guessed. Inspect "
                "it; move it away only once the disk is known good"
            )
        resume = find_unfinished({me.id: (unfinished, Journal.read_last(store))})
        if resume is None:
            return None, ""
        journal = resume.journals[me.id]
        foreign = [e.instance for e in resume.plan if e.instance != me.label]
        if foreign:
            raise RestoreFailed(
                f"the journal on this disk ({path}) is of {resume.restore_id}, a restore of "
                f"{', '.join(foreign)} as well: finish it the way it was started (the "
                "restore errand or disk-snapshots)"
            )
        what = (
            f"{resume.restore_id} did not finish on this disk (journal {path}: phase "
            f"{journal.phase}, snapshot {journal.snapshot_id}, safety snapshot "
            f"{journal.safety_snapshot_id})"
        )
        explicit = {me.label: options.snapshot_id} if options.snapshot_id else {}
        if supersedes(resume, explicit, (me,)):
            self.say(f"restore: {what}; --snapshot names another snapshot: a new restore")
            return None, resume.restore_id
        self.say(
            f"restore: {what}: resuming it with the snapshot its journal names, not a new "
            f"choice. To go back instead: snapshots restore --snapshot "
            f"{journal.safety_snapshot_id}"
        )
        self.restore_id, self.safety_id = resume.restore_id, journal.safety_snapshot_id
        # The journal's entry, under this VM's id (a recreated VM keeps the disk's journal).
        (entry,) = (replace(e, id=me.id) for e in resume.plan)
        return entry, ""

    def _snapshot(self, snapshot_id: str) -> Snapshot | None:
        try:
            return self.here.snapshotter.provider.get(snapshot_id)
        except UnknownSnapshot:
            return None

    def _hold(self, entry: PlanEntry, how_long: timedelta) -> None:
        if entry.backup_id:
            # From a backup: its snapshot may be gone, and snapshot retention cannot
            # touch the backup (backup retention keeps the newest of every instance).
            return
        until = datetime.now(UTC) + how_long
        self.here.hold([entry.snapshot_id], self.restore_id, until)
        self.say(
            f"restore: {self.restore_id} holds {entry.snapshot_id} against retention until "
            f"{until:%Y-%m-%d %H:%M:%S} UTC"
        )

    # -- the restore ------------------------------------------------------------------

    def _timed(self, name: str, since: float) -> str:
        self.seconds[name] = time.monotonic() - since
        return f"{self.seconds[name]:.1f}s"

    def _execute(self, entry: PlanEntry, replaces: str) -> tuple[str, str]:
        member, jobs = self.here.member, self.here.member.jobs
        self.say(f"restore {self.restore_id}:")
        self.step = "stopping the service"
        began = time.monotonic()
        self.stopped = True  # from the first monit stop on, a failure starts them again
        jobs.control("stop", SERVICE_SECONDS)
        self.say(f"  stopped {', '.join(self.jobs) or 'nothing'} in this order")
        self._timed("stop", began)
        self.step = "taking the pre-restore safety snapshot"
        safety = self.here.safety(self.restore_id, [entry], replace=False, replaces=replaces)
        self.journaled = True
        self.safety_id = str(safety["safety_snapshot_id"])
        how = "clean, taken now" if safety.get("taken") else "taken by the earlier run"
        self.say(f"  safety snapshot {self.safety_id} ({how})")
        self.step = f"copying {entry.snapshot_id} onto {self.here.snapshotter.disk.mount}"
        began = time.monotonic()
        copied = self.here.copy(self.restore_id)
        took = self._timed("copy", began)
        if copied.get("copied"):
            what = f"backup {entry.backup_id} of " if entry.backup_id else ""
            self.say(f"  copied {what}{entry.snapshot_id} onto the disk in {took}")
        else:
            self.say(f"  {entry.snapshot_id} was copied by the earlier run")
        self.step = "running import.pre_start"
        member.imports("pre_start")
        self.step = "starting the service"
        began = time.monotonic()
        jobs.control("start", SERVICE_SECONDS)
        self.stopped = False
        self.say(f"  started {', '.join(reversed(self.jobs)) or 'nothing'} in this order")
        self.step = "waiting for the service to answer"
        role = self._ready()
        self._timed("start", began)
        self.step = "running import.post_start"
        member.imports("post_start")
        self.step = "verifying"
        verified = self.here.verify()
        check = "restore.verify passed" if verified.get("ran") else "no restore.verify here"
        self.step = "closing the journal"
        self.here.finish(self.restore_id)
        self.here.release(self.restore_id)
        return role, check

    def _ready(self) -> str:
        """The service's own probe (postgres: a SELECT) answering as a leader would:
        the restored data is being served."""
        s = self.here.snapshotter
        if isinstance(s.service, NoService):
            return "not asked (service.profile none)"
        deadline, last = time.monotonic() + ROLE_WAIT_SECONDS, "no answer yet"
        while time.monotonic() < deadline:
            try:
                role = s.service.role()
                if role in LEADER_READY:
                    s.record_role(role)
                    return role
                last = f"role {role}"
            except ServiceError as err:
                last = str(err)
            time.sleep(PROBE_SECONDS)
        raise RestoreFailed(
            f"{s.service.name} did not answer as {' or '.join(LEADER_READY)} within "
            f"{ROLE_WAIT_SECONDS:.0f}s (last: {last})"
        )

    def _summary(self, entry: PlanEntry, source: Snapshot | None, role: str, check: str) -> None:
        taken = ""
        if source is not None:
            a = source.annotations
            taken = f" ({a.trigger}, {a.consistency}, taken {a.created_at:%Y-%m-%d %H:%M:%S} UTC)"
        from_backup = f" from its backup {entry.backup_id}" if entry.backup_id else ""
        s = self.seconds
        self.say(
            f"restore {self.restore_id}: done: {entry.instance} restored snapshot "
            f"{entry.snapshot_id}{taken}{from_backup}; safety snapshot {self.safety_id}; "
            f"{self.here.snapshotter.service.name} answers as {role}; {check}; "
            f"stop {s.get('stop', 0):.1f}s, copy {s.get('copy', 0):.1f}s, "
            f"start {s.get('start', 0):.1f}s, total {s['total']:.1f}s"
        )
        self.say(f"To go back to the disk as it was: snapshots restore --snapshot {self.safety_id}")

    # -- failure ----------------------------------------------------------------------

    def _failed(self, reason: str) -> int:
        def tell(line: str) -> None:
            print(line, file=self.err, flush=True)

        if not self.stopped and not self.journaled:
            tell(f"snapshots restore: {reason}; nothing was stopped, snapshotted or written")
            return 1
        tell(f"snapshots restore {self.restore_id}: FAILED while {self.step}: {reason}")
        jobs = self.here.member.jobs
        if self.stopped and not self.journaled:
            try:
                jobs.control("start", SERVICE_SECONDS)
                self.stopped = False
                tell("  nothing was overwritten; the service was started again")
            except MemberError as err:
                tell(f"  nothing was overwritten; starting the service again failed: {err}")
        journal = Journal.read(self.here.snapshotter.disk.mount)
        phase = f"{journal.phase} ({journal.detail})" if journal and journal.detail else ""
        phase = phase or (journal.phase if journal else "none")
        try:
            states = ", ".join(f"{j}: {st}" for j, st in jobs.states().items()) or "no jobs"
        except MonitError as err:
            states = f"unknown ({err})"
        tell(f"  now: service {states}; journal {phase}")
        if self.journaled:
            tell(
                f"  Way back: the safety snapshot {self.safety_id} holds the disk as it was. "
                "Rerun `snapshots restore --latest` to finish this restore (it resumes from "
                f"the journal), or `snapshots restore --snapshot {self.safety_id}` to go back."
            )
        return 1
