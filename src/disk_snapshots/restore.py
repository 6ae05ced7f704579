"""The restore errand's executor (DESIGN §8): one coordinator drives every member's agent.

An errand holds the deployment lock, so it cannot `bosh stop` its own instances
(reference §2.2); it works through each instance's agent API instead: monit stops and
starts the service, the agent takes the safety snapshot, copies the chosen snapshot
onto its own disk under a journal, and runs imports and verify.

The journal on each disk is the record that makes the errand rerunnable: when any
member still has an unfinished journal, a rerun resumes that restore with the
snapshot and safety ids the journals name instead of planning anew (a new plan
might choose differently, and a second safety snapshot of a half-copied disk would
be worthless). Only naming other snapshots in ``restore.snapshots`` replaces it:
that is how an operator goes back to the safety snapshots.

The decisions (members, who leads, resume or plan) are pure functions; ``Runner``
does the I/O.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from types import FrameType
from typing import TextIO
from typing import TypeVar

from disk_snapshots.agent_client import AgentClient
from disk_snapshots.agent_client import AgentError
from disk_snapshots.agent_client import AgentUnreachable
from disk_snapshots.agent_client import TlsSetupError
from disk_snapshots.catalog import Snapshot
from disk_snapshots.config import ConfigError
from disk_snapshots.config import LinkInstance
from disk_snapshots.config import RestoreConfig
from disk_snapshots.config import SnapshotterConfig
from disk_snapshots.config import load_config
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.errands import coordinator
from disk_snapshots.hooks import SNAPSHOT_ERRORS
from disk_snapshots.restore_copy import Journal
from disk_snapshots.restore_copy import PlanEntry
from disk_snapshots.restore_plan import Member
from disk_snapshots.restore_plan import PlanError
from disk_snapshots.restore_plan import Policy
from disk_snapshots.restore_plan import Target
from disk_snapshots.restore_plan import plan_restore
from disk_snapshots.snapshotter import VM_PATHS
from disk_snapshots.snapshotter import Paths
from disk_snapshots.snapshotter import Snapshotter

EXIT_FAILED = 1
LEADER_READY = ("leader", "standalone")  # a leader without replicas yet reports standalone
ROLE_WAIT_SECONDS = 600.0
SERVICE_SECONDS = 300
POLL_SECONDS = 0.25
AGENT_ERRORS = (AgentError, AgentUnreachable, TimeoutError)
T = TypeVar("T")


class RestoreFailed(RuntimeError):
    """The restore cannot go on; the message says why (the report says where things stand)."""


# ---------------------------------------------------------------------------------------
# Pure decisions


def restore_members(config: SnapshotterConfig) -> tuple[Member, ...]:
    """The ``snapshotter`` link's instances, then the ``peers`` link's; this one alone
    when no link is wired."""
    seen: dict[str, Member] = {}
    for name in ("snapshotter", "peers"):
        link = config.links.get(name)
        for i in link.instances if link else ():
            seen.setdefault(i.id, Member(i.name, i.index, i.id, i.address))
    if not seen:
        spec = config.spec
        return (Member(spec.name, spec.index, spec.id, spec.address),)
    return tuple(seen.values())


def member_ports(config: SnapshotterConfig) -> dict[str, int]:
    """Instance id → agent API port, from the link that names the instance."""
    ports: dict[str, int] = {config.spec.id: config.api.port}
    for name in ("peers", "snapshotter"):
        link = config.links.get(name)
        for i in link.instances if link else ():
            ports[i.id] = link.api_port if link else config.api.port
    return ports


def _bootstrap(instances: Sequence[LinkInstance]) -> LinkInstance:
    return next((i for i in instances if i.bootstrap), min(instances, key=lambda i: i.index))


def choose_leader(
    group: Sequence[LinkInstance],
    peers: Sequence[LinkInstance],
    roles: Mapping[str, str],
) -> tuple[str, str]:
    """Which instance leads after the restore (its id), and why, in words.

    With a ``peers`` link the topology is a leader group and a data group: the leader
    group's bootstrap instance leads by configuration, whatever a failover did since.
    One group with changing roles: the member that reports leader now (or, failing
    that, the only one that reports standalone); else the bootstrap instance.
    """
    if not group:
        raise PlanError("the snapshotter link names no instance")
    boot = _bootstrap(group)
    label = f"{boot.name}/{boot.index}"
    if peers:
        return boot.id, f"{label} leads: it is the bootstrap instance of the leader group"
    for wanted in ("leader", "standalone"):
        found = [i for i in group if roles.get(i.id) == wanted]
        if len(found) == 1:
            who = f"{found[0].name}/{found[0].index}"
            return found[0].id, f"{who} leads: it reports role {wanted} now"
        if len(found) > 1:
            names = ", ".join(f"{i.name}/{i.index}" for i in found)
            return boot.id, (
                f"{label} leads: several members report {wanted} ({names}), so the bootstrap "
                "instance is chosen"
            )
    return boot.id, f"{label} leads: no member reports leader now; it is the bootstrap instance"


def plan_entries(steps: Sequence[tuple[Member, str, str, str]]) -> list[PlanEntry]:
    """(member, role, action, snapshot id) → the plan as every journal records it."""
    return [
        {"instance": m.name, "id": m.id, "role": role, "action": action, "snapshot_id": snap}
        for m, role, action, snap in steps
    ]


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
    journaled = {e["id"]: e["snapshot_id"] for e in resume.plan if e.get("action") == "copy"}
    for key, snapshot_id in explicit.items():
        member = next((m for m in members if m.matches(key)), None)
        if member is None or journaled.get(member.id) != snapshot_id:
            return True
    return False


def new_restore_id(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"restore-{moment}-{secrets.token_hex(3)}"


# ---------------------------------------------------------------------------------------
# The executor


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
                    errors.append(f"{self.member(i).name}: {err}")
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

    def stop_services(self, plan: list[PlanEntry], skip: frozenset[str]) -> None:
        leader = [e["id"] for e in plan if e["role"] == "leader" and e["id"] not in skip]
        followers = [e["id"] for e in plan if e["role"] != "leader" and e["id"] not in skip]
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
                self.say(f"  stopped the service on {self.member(i).name}")

    def safety_and_journals(self, plan: list[PlanEntry], skip: frozenset[str]) -> None:
        self.step = "taking pre-restore safety snapshots"
        ids = [e["id"] for e in plan if e["id"] not in skip]
        by_id = {e["id"]: e for e in plan}

        def safety(m: Member) -> dict[str, object]:
            e = by_id[m.id]
            answer = self.clients[m.id].restore_safety(
                self.restore_id,
                e["snapshot_id"],
                e["action"],
                e["role"],
                e["instance"],
                plan,
                replaces=self.replaces,
                timeout=min(600.0, self.left()),
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
            self.say(f"  safety snapshot {self.safety[i]} of {self.member(i).name} ({how})")

    def copy(self, plan: list[PlanEntry], journals: Mapping[str, Journal]) -> None:
        self.step = "copying snapshots onto the disks"
        todo = [
            e
            for e in plan
            if e["action"] == "copy"
            and e["id"] in self.journaled
            and (e["id"] not in journals or journals[e["id"]].phase not in ("copied", "started"))
        ]

        def copy(m: Member) -> dict[str, object]:
            e = next(x for x in todo if x["id"] == m.id)
            client = self.clients[m.id]
            operation = client.restore_copy(self.restore_id, e["snapshot_id"], self.safety[m.id])
            self.say(f"  copying {e['snapshot_id']} onto {m.name} (operation {operation})")
            result = client.wait_operation(operation, timeout=self.left(), poll=POLL_SECONDS)
            if result.get("state") != "succeeded":
                raise RestoreFailed(str(result.get("error") or "the copy failed"))
            return result

        results = self.each([e["id"] for e in todo], copy)
        for i, result in results.items():
            detail = result.get("result")
            seconds = detail.get("seconds", "?") if isinstance(detail, dict) else "?"
            self.say(f"  copied onto {self.member(i).name} in {seconds}s")

    def start(self, m: Member, entry: PlanEntry, wanted: tuple[str, ...]) -> str:
        client = self.clients[m.id]
        if entry["action"] == "copy":
            client.restore_imports("pre_start", timeout=max(1.0, self.left()))
        client.service_start(timeout=int(min(SERVICE_SECONDS, self.left())))
        self.stopped.discard(m.id)
        role = self.wait_role(m, wanted)
        if entry["action"] == "copy":
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
        raise RestoreFailed(f"{m.name} did not report {' or '.join(wanted)} in time (last: {last})")

    def start_all(self, plan: list[PlanEntry]) -> dict[str, str]:
        leader = next(e for e in plan if e["role"] == "leader")
        m = self.member(leader["id"])
        self.step = f"starting the leader {m.name}"
        roles = {m.id: self.start(m, leader, LEADER_READY)}
        self.say(f"  started {m.name}: role {roles[m.id]}")
        self.step = f"verifying the leader {m.name}"
        verified = self.clients[m.id].restore_verify(timeout=max(1.0, self.left()))
        if verified.get("ran"):
            self.say(f"  restore.verify passed on {m.name}")
        else:
            self.say("  restore.verify is empty: nothing to verify")
        self.step = "starting the followers"
        followers = [e for e in plan if e["role"] != "leader"]
        by_id = {e["id"]: e for e in followers}
        roles |= self.each(
            [e["id"] for e in followers], lambda f: self.start(f, by_id[f.id], ("follower",))
        )
        for e in followers:
            self.say(f"  started {e['instance']}: role {roles[e['id']]}")
        if followers:
            # It reported standalone before its replicas connected; say what it is now.
            with contextlib.suppress(*AGENT_ERRORS):
                roles[m.id] = str(self.clients[m.id].status().get("role", roles[m.id]))
        return roles

    def finish(self, plan: list[PlanEntry]) -> None:
        self.step = "closing the journals"
        self.each(
            [e["id"] for e in plan],
            lambda m: self.clients[m.id].restore_finish(self.restore_id),
        )

    def execute(self, plan: list[PlanEntry], resume: Resume | None) -> int:
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
            what = (
                f"restored {e['snapshot_id']}"
                if e["action"] == "copy"
                else "kept its disk, replicates from the leader"
            )
            safety = self.safety.get(e["id"], "none (finished by an earlier run)")
            self.say(
                f"  {e['instance']}: {what}; now {roles.get(e['id'], 'running')}; "
                f"safety snapshot {safety}"
            )
        self.say(
            "restore: the safety snapshots keep each disk as it was before; name them in "
            "restore.snapshots to go back"
        )
        return 0

    # -- failure ----------------------------------------------------------------------

    def report_failure(self, reason: str, plan: list[PlanEntry]) -> int:
        self.say(f"restore {self.restore_id or ''}: FAILED while {self.step}: {reason}".strip())
        if self.stopped and not self.journaled and not self.resumed:
            # Nothing was overwritten or journaled: give the service back as it was.
            self.say("  nothing was overwritten; starting the stopped services again")
            order = sorted(self.stopped, key=lambda i: self.member(i).name != _leader_id(plan))
            for i in order:
                try:
                    self.clients[i].service_start(timeout=SERVICE_SECONDS)
                    self.stopped.discard(i)
                    self.say(f"  started {self.member(i).name} again")
                except AGENT_ERRORS as err:
                    self.say(f"  could not start {self.member(i).name} again: {err}")
        self.say("State of every instance now:")
        for m in self.members:
            self.say(f"  {m.name} ({m.address}): {self._state(m)}")
        if self.safety:
            named = ", ".join(
                f"{self.member(i).name}: {sid}" for i, sid in sorted(self.safety.items())
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


def _leader_id(plan: list[PlanEntry]) -> str:
    return next((e["instance"] for e in plan if e["role"] == "leader"), "")


@contextmanager
def _terminated_is_failure() -> Iterator[None]:
    """`bosh cancel-task` sends TERM to the errand: report where things stand, then exit."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise RestoreFailed(f"the errand was cancelled (signal {signum})")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _plan(
    runner: Runner,
    config: SnapshotterConfig,
    statuses: Mapping[str, Mapping[str, object]],
    catalog: Sequence[Snapshot],
) -> list[PlanEntry]:
    group = config.links["snapshotter"].instances if "snapshotter" in config.links else ()
    peers = config.links["peers"].instances if "peers" in config.links else ()
    if not group:
        spec = config.spec
        group = (LinkInstance(spec.name, spec.index, spec.id, spec.az, spec.address, True),)
    roles = {i: str(s.get("role", "unknown")) for i, s in statuses.items()}
    leader_id, why = choose_leader(group, peers, roles)
    restore = runner.restore
    plan = plan_restore(
        catalog,
        runner.members,
        leader_id,
        config.spec.deployment,
        Target.parse(restore.target),
        Policy(followers=restore.followers),
        explicit=restore.snapshots,
    )
    runner.say(plan.describe())
    runner.say(f"Leader: {why}.")
    return plan_entries(
        [(s.member, s.role, s.action, s.source.id if s.source else "") for s in plan.steps]
    )


def run(paths: Paths = VM_PATHS, out: TextIO = sys.stdout) -> int:
    """``bosh run-errand restore`` on one instance; 0 only when the restore is done."""
    try:
        restore = load_config(paths.job_config("restore"))
        config = load_snapshotter_config(paths.config)
    except ConfigError as err:
        print(err.report("restore: invalid configuration"), file=out)
        return EXIT_FAILED
    if not isinstance(restore, RestoreConfig):
        print("restore: config.json is not the restore job's", file=out)
        return EXIT_FAILED
    leads, who = coordinator(config)
    if not leads:
        print(f"restore: coordinated by {who}; nothing to do on this instance", file=out)
        return 0
    members = restore_members(config)
    ports = member_ports(config)
    try:
        clients = {
            m.id: AgentClient.connect(m.address, ports[m.id], config.api.tls) for m in members
        }
    except TlsSetupError as err:
        print(f"restore: cannot talk to the agents: {err}; nothing was stopped", file=out)
        return EXIT_FAILED
    runner = Runner(members, clients, restore, out, time.monotonic() + restore.timeout)
    plan: list[PlanEntry] = []
    with _terminated_is_failure():
        try:
            statuses = runner.statuses()
            journals = runner.journals()
            resume = find_unfinished(journals)
            if resume is not None and supersedes(resume, restore.snapshots, members):
                runner.say(
                    f"restore: restore.snapshots names other snapshots than the unfinished "
                    f"{resume.restore_id}; it is replaced by a new restore"
                )
                runner.replaces = resume.restore_id
                resume = None
            if resume is not None:
                plan = resume.plan
                runner.restore_id = resume.restore_id
                runner.resumed = True
                runner.say(
                    f"restore: {resume.restore_id} did not finish (an earlier run stopped); "
                    "resuming it with the snapshots and safety snapshots its journals name:"
                )
                for e in plan:
                    j = resume.journals.get(e["id"])
                    phase = j.phase if j else ("done" if e["id"] in resume.finished else "none")
                    source = e["snapshot_id"] or "-"
                    runner.say(f"  {e['instance']} ({e['role']}): {e['action']} {source} [{phase}]")
            else:
                runner.step = "planning"
                try:
                    catalog = Snapshotter.load(paths).catalog()
                except SNAPSHOT_ERRORS as err:
                    raise RestoreFailed(f"the catalog cannot be read: {err}") from None
                try:
                    plan = _plan(runner, config, statuses, catalog)
                except PlanError as err:
                    raise RestoreFailed(f"no restore plan: {err}; nothing was stopped") from None
                runner.restore_id = new_restore_id()
            if restore.dry_run:
                runner.say("restore: dry run: nothing was stopped, snapshotted or written")
                return 0
            return runner.execute(plan, resume)
        except RestoreFailed as err:
            return runner.report_failure(str(err), plan)
        except Exception as err:  # a bug: still say where every instance stands
            return runner.report_failure(f"internal error: {err!r}", plan)
