"""The restore coordinator: drives every member's agent API through one restore, in order.

An errand holds the deployment lock, so it cannot `bosh stop` its own instances
(docs/bosh-contracts.md, errands); it works through each instance's agent API instead:
monit stops and starts the service, the member (member.py) takes the safety snapshot,
copies the chosen snapshot onto its own disk under a journal, and runs imports and
verify. On any failure it says where every instance stands and the way back.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from typing import TextIO
from typing import TypeVar
from typing import cast

from disk_snapshots.annotations import Role
from disk_snapshots.api.client import AgentClient
from disk_snapshots.api.client import AgentError
from disk_snapshots.api.client import AgentUnreachable
from disk_snapshots.config import RestoreConfig
from disk_snapshots.members import Member
from disk_snapshots.restore.journal import Journal
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.restore.resume import RestoreFailed
from disk_snapshots.restore.resume import Resume
from disk_snapshots.vm.services import Replication
from disk_snapshots.vm.services import behind

EXIT_FAILED = 1
LEADER_READY = ("leader", "standalone")  # a leader without replicas yet reports standalone
ROLE_WAIT_SECONDS = 600.0
SYNC_WAIT_SECONDS = 600.0
SERVICE_SECONDS = 300
POLL_SECONDS = 0.25
AGENT_ERRORS = (AgentError, AgentUnreachable, TimeoutError)
T = TypeVar("T")


@dataclass
class Runner:
    members: tuple[Member, ...]
    clients: dict[str, AgentClient]
    restore: RestoreConfig
    out: TextIO = sys.stdout
    deadline: float = 0.0
    step: str = "starting"
    stopped: set[str] = field(default_factory=set)
    journaled: set[str] = field(default_factory=set)
    safety: dict[str, str] = field(default_factory=dict)
    restore_id: str = ""
    # An unfinished restore whose journals this one may replace (the operator named
    # other snapshots, typically the safety snapshots, to go back).
    replaces: str = ""
    # A resumed restore may have half-copied disks: its services are never restarted blindly.
    resumed: bool = False
    # What each member's disk gets, in the order the journals record it.
    plan: Sequence[PlanEntry] = ()

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def left(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RestoreFailed(
                f"restore.timeout ({self.restore.timeout}s) ran out while {self.step}"
            )
        return remaining

    def member(self, instance_id: str) -> Member:
        return next(m for m in self.members if m.id == instance_id)

    def each(self, ids: Sequence[str], work: Callable[[Member], T]) -> dict[str, T]:
        """``work`` on every member at once; every failure is named, not just the first."""
        if not ids:
            return {}
        results: dict[str, T] = {}
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=len(ids)) as pool:
            futures = {i: pool.submit(work, self.member(i)) for i in ids}
            for i, future in futures.items():
                try:
                    results[i] = future.result()
                except (*AGENT_ERRORS, RestoreFailed) as err:
                    errors.append(f"{self.member(i).label}: {err}")
        if errors:
            raise RestoreFailed("; ".join(errors))
        return results

    # -- the steps ------------------------------------------------------------------

    def statuses(self) -> dict[str, dict[str, object]]:
        self.step = "asking every member for its status"
        try:
            return self.each([m.id for m in self.members], lambda m: self.clients[m.id].status())
        except RestoreFailed as err:
            raise RestoreFailed(f"not every member answers ({err}); nothing was stopped") from None

    def journals(self) -> dict[str, tuple[Journal | None, Journal | None]]:
        self.step = "reading the members' restore journals"

        def read(m: Member) -> tuple[Journal | None, Journal | None]:
            answer = self.clients[m.id].restore_journal()
            pair: list[Journal | None] = []
            for key in ("journal", "last"):
                raw = answer.get(key)
                try:
                    pair.append(Journal.from_json(raw) if isinstance(raw, dict) else None)
                except (ValueError, TypeError) as err:
                    raise RestoreFailed(f"its {key} journal cannot be read: {err}") from None
            return pair[0], pair[1]

        return self.each([m.id for m in self.members], read)

    def stop_services(self, plan: Sequence[PlanEntry], skip: frozenset[str]) -> None:
        leader = [e.id for e in plan if e.role == "leader" and e.id not in skip]
        followers = [e.id for e in plan if e.role != "leader" and e.id not in skip]
        for ids, who in ((followers, "followers"), (leader, "the leader")):
            if not ids:
                continue
            self.step = f"stopping {who}"
            timeout = int(min(SERVICE_SECONDS, self.left()))

            def stop(m: Member, timeout: int = timeout) -> None:
                self.clients[m.id].service_stop(timeout=timeout)
                self.stopped.add(m.id)

            self.each(ids, stop)
            for i in ids:
                self.say(f"  stopped the service on {self.member(i).label}")

    def safety_and_journals(self, plan: Sequence[PlanEntry], skip: frozenset[str]) -> None:
        self.step = "taking pre-restore safety snapshots"
        ids = [e.id for e in plan if e.id not in skip]
        by_id = {e.id: e for e in plan}

        def safety(m: Member) -> dict[str, object]:
            e = by_id[m.id]
            answer = self.clients[m.id].restore_safety(
                self.restore_id,
                e.snapshot_id,
                e.action,
                e.role,
                e.instance,
                plan,
                replaces=self.replaces,
                timeout=min(600.0, self.left()),
                backup_id=e.backup_id,
            )
            self.safety[m.id] = str(answer["safety_snapshot_id"])
            self.journaled.add(m.id)
            return answer

        answers = self.each(ids, safety)
        for i in ids:
            how = (
                "clean: taken after the service stopped"
                if answers[i].get("taken")
                else "recorded by the earlier run"
            )
            self.say(f"  safety snapshot {self.safety[i]} of {self.member(i).label} ({how})")

    def copy(self, plan: Sequence[PlanEntry], journals: Mapping[str, Journal]) -> None:
        self.step = "copying snapshots onto the disks"
        todo = [
            e
            for e in plan
            if e.action == "copy"
            and e.id in self.journaled
            and (e.id not in journals or journals[e.id].phase not in ("copied", "started"))
        ]

        def copy(m: Member) -> dict[str, object]:
            e = next(x for x in todo if x.id == m.id)
            client = self.clients[m.id]
            operation = client.restore_copy(self.restore_id, e.snapshot_id, self.safety[m.id])
            what = f"{e.snapshot_id} from backup {e.backup_id}" if e.backup_id else e.snapshot_id
            self.say(f"  copying {what} onto {m.label} (operation {operation})")
            result = client.wait_operation(operation, timeout=self.left(), poll=POLL_SECONDS)
            if result.get("state") != "succeeded":
                raise RestoreFailed(str(result.get("error") or "the copy failed"))
            return result

        results = self.each([e.id for e in todo], copy)
        for i, result in results.items():
            detail = result.get("result")
            seconds = detail.get("seconds", "?") if isinstance(detail, dict) else "?"
            self.say(f"  copied onto {self.member(i).label} in {seconds}s")

    def start(self, m: Member, entry: PlanEntry, wanted: tuple[str, ...]) -> str:
        client = self.clients[m.id]
        if entry.action == "copy":
            client.restore_imports("pre_start", timeout=max(1.0, self.left()))
        client.service_start(timeout=int(min(SERVICE_SECONDS, self.left())))
        self.stopped.discard(m.id)
        role = self.wait_role(m, wanted)
        if entry.action == "copy":
            client.restore_imports("post_start", timeout=max(1.0, self.left()))
        return role

    def wait_role(self, m: Member, wanted: tuple[str, ...]) -> str:
        limit = time.monotonic() + min(ROLE_WAIT_SECONDS, self.left())
        last = "no answer yet"
        while time.monotonic() < limit:
            try:
                status = self.clients[m.id].status()
                role = str(status.get("role"))
                if role in wanted:
                    return role
                last = f"role {role} {status.get('role_error') or ''}".strip()
            except AGENT_ERRORS as err:
                last = str(err)
            time.sleep(POLL_SECONDS)
        raise RestoreFailed(
            f"{m.label} did not report {' or '.join(wanted)} in time (last: {last})"
        )

    def start_all(self, plan: Sequence[PlanEntry]) -> dict[str, str]:
        leader = next(e for e in plan if e.role == "leader")
        m = self.member(leader.id)
        self.step = f"starting the leader {m.label}"
        roles = {m.id: self.start(m, leader, LEADER_READY)}
        self.say(f"  started {m.label}: role {roles[m.id]}")
        self.step = f"verifying the leader {m.label}"
        verified = self.clients[m.id].restore_verify(timeout=max(1.0, self.left()))
        if verified.get("ran"):
            self.say(f"  restore.verify passed on {m.label}")
        else:
            self.say("  restore.verify is empty: nothing to verify")
        self.step = "starting the followers"
        followers = [e for e in plan if e.role != "leader"]
        by_id = {e.id: e for e in followers}
        roles |= self.each(
            [e.id for e in followers], lambda f: self.start(f, by_id[f.id], ("follower",))
        )
        for e in followers:
            self.say(f"  started {e.instance}: role {roles[e.id]}")
        if followers:
            self.wait_in_sync(m, [self.member(e.id) for e in followers])
            # It reported standalone before its replicas connected; say what it is now.
            with contextlib.suppress(*AGENT_ERRORS):
                roles[m.id] = str(self.clients[m.id].status().get("role", roles[m.id]))
        return roles

    def wait_in_sync(self, leader: Member, followers: Sequence[Member]) -> None:
        """Until every follower has caught up with what the leader had sent once they all
        ran: a follower still syncing serves its old disk's data (or, with Redis's
        replica-serve-stale-data no, errors), so the restore is not done before."""
        self.step = "waiting for the followers to be in sync with the leader"
        target = _offset(self.clients[leader.id].status())
        started = time.monotonic()
        limit = started + min(SYNC_WAIT_SECONDS, self.left())
        waiting = {f.id: "no answer yet" for f in followers}
        while waiting:
            for f in followers:
                if f.id in waiting:
                    waiting[f.id] = self._behind(f, target)
                    if not waiting[f.id]:
                        del waiting[f.id]
                        self.say(f"  {f.label} is in sync with the leader {leader.label}")
            if not waiting:
                return
            if time.monotonic() >= limit:
                lagging = "; ".join(f"{self.member(i).label}: {why}" for i, why in waiting.items())
                raise RestoreFailed(
                    f"not in sync with the leader {leader.label} after "
                    f"{time.monotonic() - started:.0f}s: {lagging}"
                )
            time.sleep(POLL_SECONDS)

    def _behind(self, follower: Member, target: int) -> str:
        try:
            status = self.clients[follower.id].status()
        except AGENT_ERRORS as err:
            return f"the agent does not answer ({err})"
        raw = status.get("replication")
        if raw is None:
            return ""  # the profile cannot tell: its role (follower) is its word
        if not isinstance(raw, dict) or "error" in raw:
            return f"replication unknown ({raw.get('error') if isinstance(raw, dict) else raw})"
        state = Replication(
            role=cast(Role, raw.get("role", "unknown")),
            offset=int(raw.get("offset", -1)),
            link_up=raw.get("link_up") is True,
            syncing=raw.get("syncing") is not False,
        )
        return behind(state, target)

    def finish(self, plan: Sequence[PlanEntry]) -> None:
        self.step = "closing the journals"
        self.each(
            [e.id for e in plan],
            lambda m: self.clients[m.id].restore_finish(self.restore_id),
        )

    def execute(self, resume: Resume | None) -> int:
        plan = self.plan
        skip = resume.finished if resume else frozenset()
        journals = dict(resume.journals) if resume else {}
        for i, j in journals.items():
            self.safety[i] = j.safety_snapshot_id
        self.say(f"restore {self.restore_id}:")
        self.stop_services(plan, skip)
        self.safety_and_journals(plan, skip)
        self.copy(plan, journals)
        roles = self.start_all(plan)
        self.finish(plan)
        self.say(f"restore {self.restore_id}: done")
        for e in plan:
            via = f" from backup {e.backup_id}" if e.backup_id else ""
            what = (
                f"restored {e.snapshot_id}{via}"
                if e.action == "copy"
                else "kept its disk, replicates from the leader"
            )
            safety = self.safety.get(e.id, "none (finished by an earlier run)")
            self.say(
                f"  {e.instance}: {what}; now {roles.get(e.id, 'running')}; "
                f"safety snapshot {safety}"
            )
        self.say(
            "restore: the safety snapshots keep each disk as it was before; name them in "
            "restore.snapshots to go back"
        )
        return 0

    # -- failure ----------------------------------------------------------------------

    def report_failure(self, reason: str) -> int:
        self.say(f"restore {self.restore_id or ''}: FAILED while {self.step}: {reason}".strip())
        if self.stopped and not self.journaled and not self.resumed:
            # Nothing was overwritten or journaled: give the service back as it was.
            self.say("  nothing was overwritten; starting the stopped services again")
            order = sorted(
                self.stopped, key=lambda i: self.member(i).label != _leader_label(self.plan)
            )
            for i in order:
                try:
                    self.clients[i].service_start(timeout=SERVICE_SECONDS)
                    self.stopped.discard(i)
                    self.say(f"  started {self.member(i).label} again")
                except AGENT_ERRORS as err:
                    self.say(f"  could not start {self.member(i).label} again: {err}")
        self.say("State of every instance now:")
        for m in self.members:
            self.say(f"  {m.label} ({m.address}): {self._state(m)}")
        if self.safety:
            named = ", ".join(
                f"{self.member(i).label}: {sid}" for i, sid in sorted(self.safety.items())
            )
            self.say(f"Way back: the pre-restore safety snapshots are {named}.")
            self.say(
                "  Rerun the errand to finish this restore (it resumes from the journals), "
                "or name the safety snapshots in restore.snapshots and rerun to go back."
            )
        else:
            self.say("No disk was overwritten: no safety snapshot was needed.")
        return EXIT_FAILED

    def _state(self, m: Member) -> str:
        client = self.clients[m.id]
        try:
            status = client.status()
            service = status.get("service")
            jobs = service.get("jobs", {}) if isinstance(service, dict) else {}
            running = isinstance(jobs, dict) and jobs and all(v == "running" for v in jobs.values())
            state = "running" if running else "stopped"
            detail = ", ".join(f"{k}: {v}" for k, v in jobs.items()) if jobs else ""
            journal = client.restore_journal().get("journal")
        except AGENT_ERRORS as err:
            return f"unknown (the agent does not answer: {err})"
        phase = "none"
        if isinstance(journal, dict):
            phase = str(journal.get("phase"))
            if journal.get("detail"):
                phase += f" ({journal['detail']})"
        safety = self.safety.get(m.id, "none")
        return f"service {state} ({detail}); journal {phase}; safety snapshot {safety}"


def _offset(status: Mapping[str, object]) -> int:
    """The leader's replication offset from its status (-1: its profile cannot tell)."""
    raw = status.get("replication")
    offset = raw.get("offset") if isinstance(raw, dict) else None
    return offset if isinstance(offset, int) else -1


def _leader_id(plan: Sequence[PlanEntry]) -> str:
    return next((e.instance for e in plan if e.role == "leader"), "")


def _leader_label(plan: Sequence[PlanEntry]) -> str:
    return next((e.instance for e in plan if e.role == "leader"), "")
