"""``bosh run-errand restore``: plan (or resume) a restore, then coordinate it.

The errand runs on every instance that has the job; the coordinator (members.py) plans
and drives the restore (restore/coordinator.py), the others say who that is and exit 0.
Exit 0 only when the restore is done, or when a dry run printed the plan.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from types import FrameType
from typing import TextIO

from disk_snapshots.api.client import AgentClient
from disk_snapshots.api.tls import TlsSetupError
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Snapshot
from disk_snapshots.config import EXIT_INVALID_CONFIG
from disk_snapshots.config import ConfigError
from disk_snapshots.config import RestoreConfig
from disk_snapshots.config import SnapshotterConfig
from disk_snapshots.config import load_config
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.errors import EXIT_BUG
from disk_snapshots.errors import ReleaseError
from disk_snapshots.members import coordinator
from disk_snapshots.members import link_members
from disk_snapshots.members import linked
from disk_snapshots.members import myself
from disk_snapshots.providers.base import copy_refusal
from disk_snapshots.restore import hold
from disk_snapshots.restore.coordinator import Runner
from disk_snapshots.restore.journal import new_restore_id
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.restore.plan import PlanError
from disk_snapshots.restore.plan import Policy
from disk_snapshots.restore.plan import choose_leader
from disk_snapshots.restore.plan import plan_restore
from disk_snapshots.restore.resume import RestoreFailed
from disk_snapshots.restore.resume import Resume
from disk_snapshots.restore.resume import find_unfinished
from disk_snapshots.restore.resume import supersedes
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import VM_PATHS
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter

# How long a dry run's plan stays held, so that the real run finds the same snapshots.
DRY_RUN_HOLD = 3600


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
    backups: Sequence[Backup] = (),
) -> tuple[PlanEntry, ...]:
    group = link_members(config, "snapshotter") or (myself(config),)
    peers = link_members(config, "peers")
    roles = {i: str(s.get("role", "unknown")) for i, s in statuses.items()}
    leader_id, why = choose_leader(group, peers, roles)
    restore = runner.restore
    plan = plan_restore(
        catalog,
        runner.members,
        leader_id,
        config.spec.deployment,
        restore.target,
        Policy(followers=restore.followers),
        explicit=restore.snapshots,
        backups=backups,
        source=restore.source,
    )
    runner.say(plan.describe())
    runner.say(f"Leader: {why}.")
    return plan.entries()


def _resume(runner: Runner, resume: Resume) -> Sequence[PlanEntry]:
    runner.restore_id = resume.restore_id
    runner.resumed = True
    runner.say(
        f"restore: {resume.restore_id} did not finish (an earlier run stopped); "
        "resuming it with the snapshots and safety snapshots its journals name:"
    )
    for e in resume.plan:
        j = resume.journals.get(e.id)
        phase = j.phase if j else ("done" if e.id in resume.finished else "none")
        via = f" from backup {e.backup_id}" if e.backup_id else ""
        runner.say(f"  {e.instance} ({e.role}): {e.action} {e.snapshot_id or '-'}{via} [{phase}]")
    return resume.plan


def _plan_anew(
    runner: Runner,
    config: SnapshotterConfig,
    statuses: Mapping[str, Mapping[str, object]],
    paths: Paths,
) -> Sequence[PlanEntry]:
    runner.step = "planning"
    try:
        snapshotter = Snapshotter.load(paths)
        catalog = snapshotter.catalog()
        backups = snapshotter.backups() if runner.restore.source != "snapshot" else []
    except SNAPSHOT_ERRORS as err:
        raise RestoreFailed(f"the catalog cannot be read: {err}") from None
    try:
        plan = _plan(runner, config, statuses, catalog, backups)
    except PlanError as err:
        raise RestoreFailed(f"no restore plan: {err}; nothing was stopped") from None
    runner.restore_id = new_restore_id()
    return plan


def _check_copies(plan: Sequence[PlanEntry], paths: Paths) -> None:
    """A provider that cannot copy is refused now, not after the services were stopped
    and the safety snapshots taken. (The coordinator's provider stands for all: every
    instance of a deployment has the same provider.type.)"""
    copies = [e.instance for e in plan if e.action == "copy"]
    if not copies:
        return
    try:
        refusal = copy_refusal(Snapshotter.load(paths).provider)
    except SNAPSHOT_ERRORS as err:
        raise RestoreFailed(f"the provider cannot be used: {err}; nothing was stopped") from None
    if refusal:
        raise RestoreFailed(
            f"the plan copies onto {', '.join(copies)}, and {refusal}; nothing was stopped"
        )


def _restore(runner: Runner, config: SnapshotterConfig, paths: Paths) -> int:
    """Resume the unfinished restore the journals name, or plan a new one; then run it."""
    statuses = runner.statuses()
    resume = find_unfinished(runner.journals())
    if resume is not None and supersedes(resume, runner.restore.snapshots, runner.members):
        runner.say(
            f"restore: restore.snapshots names other snapshots than the unfinished "
            f"{resume.restore_id}; it is replaced by a new restore"
        )
        runner.replaces = resume.restore_id
        resume = None
    if resume is not None:
        runner.plan = _resume(runner, resume)
    else:
        runner.plan = _plan_anew(runner, config, statuses, paths)
    _check_copies(runner.plan, paths)
    if resume is None:
        _hold(runner, paths)
    if runner.restore.dry_run:
        runner.say("restore: dry run: nothing was stopped, snapshotted or written")
        return 0
    code = runner.execute(resume)
    with contextlib.suppress(*SNAPSHOT_ERRORS):  # a hold left behind expires on its own
        here = Snapshotter.load(paths)
        hold.release(here.provider, here.catalog(), runner.restore_id)
    return code


def _hold(runner: Runner, paths: Paths) -> None:
    """Keep the plan's snapshots from retention on every instance (restore/hold.py): for
    DRY_RUN_HOLD after a dry run, until the real run; else until this restore ends (or
    its timeout, with room, should the errand die)."""
    seconds = DRY_RUN_HOLD if runner.restore.dry_run else 3 * runner.restore.timeout
    # A backup's snapshot may be gone, and snapshot retention never touches a backup.
    chosen = [e.snapshot_id for e in runner.plan if e.snapshot_id and not e.backup_id]
    until = datetime.now(UTC) + timedelta(seconds=seconds)
    try:
        held = hold.hold(Snapshotter.load(paths).provider, chosen, runner.restore_id, until)
    except SNAPSHOT_ERRORS as err:
        raise RestoreFailed(
            f"the plan's snapshots cannot be held: {err}; nothing was stopped"
        ) from None
    runner.say(
        f"restore: {runner.restore_id} holds {', '.join(held) or 'them'} against retention "
        f"until {until:%Y-%m-%d %H:%M:%S} UTC"
    )


def run(paths: Paths = VM_PATHS, out: TextIO = sys.stdout) -> int:
    """``bosh run-errand restore`` on one instance; 0 only when the restore is done."""
    try:
        restore = load_config(paths.job_config("restore"))
        config = load_snapshotter_config(paths.config)
    except ConfigError as err:
        print(err.report("restore: invalid configuration"), file=out)
        return EXIT_INVALID_CONFIG
    if not isinstance(restore, RestoreConfig):
        print("restore: config.json is not the restore job's", file=out)
        return EXIT_INVALID_CONFIG
    leads, who = coordinator(config)
    if not leads:
        print(f"restore: coordinated by {who}; nothing to do on this instance", file=out)
        return 0
    members = linked(config)
    try:
        clients = {m.id: AgentClient.connect(m.address, m.port, config.api.tls) for m in members}
    except TlsSetupError as err:
        print(f"restore: cannot talk to the agents: {err}; nothing was stopped", file=out)
        return err.exit_code
    runner = Runner(members, clients, restore, out, time.monotonic() + restore.timeout)
    with _terminated_is_failure():
        try:
            return _restore(runner, config, paths)
        except ReleaseError as err:
            return runner.report_failure(str(err))
        except Exception as err:  # a bug: still say where every instance stands
            traceback.print_exc(file=sys.stderr)
            runner.report_failure(f"internal error, a bug (the traceback is on stderr): {err!r}")
            return EXIT_BUG
