"""``bin/snapshots status|take-set|restore-*|create-disk|hold``: what the operator's command
runs on an instance over ``bosh ssh``, each printing one line of JSON.

The operator's command (``disk-snapshots`` on a jumpbox) reaches instances only the way
its user already can, with ``bosh ssh -c 'sudo …/bin/snapshots … ' --results --json``;
the catalog and the provider's credentials stay on the VMs. These run without the
snapshotter daemon (a ``bosh stop`` stops it with the service); each answers on stdout
with one JSON object, or says on stderr in one line why it could not, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import TypeVar

from disk_snapshots.config import ConfigError
from disk_snapshots.member_errors import MemberError
from disk_snapshots.members import coordinator
from disk_snapshots.restore.journal import RESTORE_ID
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.restore.standalone import Standalone
from disk_snapshots.sets.coordinator import SetError
from disk_snapshots.sets.coordinator import run_set
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.triggers import MANUAL

STEPS = (
    "status",
    "take-set",
    "restore-safety",
    "restore-copy",
    "restore-adopt",
    "restore-finish",
    "restore-verify",
    "create-disk",
    "hold",
)
FOR_THE_OPERATOR = "(for the operator's command disk-snapshots; prints JSON)"
# Plan holds last at most this long: a hold that outlives every restore is a leak.
MAX_HOLD = timedelta(days=7)


def restore_id(text: str) -> str:
    if not re.fullmatch(RESTORE_ID, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a restore id (restore-YYYYMMDDTHHMMSSZ-xxxxxx)"
        )
    return text


def plan_json(text: str) -> list[PlanEntry]:
    try:
        raw = json.loads(text)
        if not isinstance(raw, list):
            raise ValueError("not a JSON list")
        return [PlanEntry.from_json(e) for e in raw if isinstance(e, dict)]
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(f"--plan is not a restore plan: {err}") from None


def hold_seconds(text: str) -> timedelta:
    try:
        seconds = int(text)
    except ValueError:
        seconds = -1
    if not 0 < seconds <= MAX_HOLD.total_seconds():
        raise argparse.ArgumentTypeError(
            f"--for {text!r}: a number of seconds from 1 to {int(MAX_HOLD.total_seconds())}"
        )
    return timedelta(seconds=seconds)


Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def add_steps(actions: argparse._SubParsersAction[Parser]) -> None:
    actions.add_parser(
        "status", help=f"this instance's role, service, disk, journals {FOR_THE_OPERATOR}"
    )
    take_set = actions.add_parser(
        "take-set", help=f"one consistent set across the deployment, run here {FOR_THE_OPERATOR}"
    )
    take_set.add_argument("--note", default="", help="free text recorded on every snapshot")
    safety = actions.add_parser(
        "restore-safety",
        help=f"clean pre-restore safety snapshot, the service stopped {FOR_THE_OPERATOR}",
    )
    safety.add_argument("restore_id", type=restore_id)
    safety.add_argument("--plan", type=plan_json, required=True, help="the plan's entries (JSON)")
    safety.add_argument(
        "--replace", action="store_true", help="the disk will be replaced: no journal on it"
    )
    safety.add_argument(
        "--replaces", type=restore_id, help="an unfinished restore this one replaces"
    )
    copy = actions.add_parser(
        "restore-copy", help=f"copy the journal's snapshot onto this disk now {FOR_THE_OPERATOR}"
    )
    copy.add_argument("restore_id", type=restore_id)
    adopt = actions.add_parser(
        "restore-adopt",
        help=f"journal a disk attached by a replace restore {FOR_THE_OPERATOR}",
    )
    adopt.add_argument("restore_id", type=restore_id)
    adopt.add_argument("--plan", type=plan_json, required=True)
    adopt.add_argument("--safety", required=True, help="the old disk's safety snapshot id")
    finish = actions.add_parser("restore-finish", help=f"close the journal {FOR_THE_OPERATOR}")
    finish.add_argument("restore_id", type=restore_id)
    actions.add_parser("restore-verify", help=f"run restore.verify here {FOR_THE_OPERATOR}")
    create = actions.add_parser(
        "create-disk",
        help=f"a new disk from a snapshot, for bosh attach-disk {FOR_THE_OPERATOR}",
    )
    create.add_argument("snapshot_id")
    create.add_argument("--restore-id", type=restore_id, required=True)
    held = actions.add_parser(
        "hold", help=f"keep snapshots from retention for a while {FOR_THE_OPERATOR}"
    )
    held.add_argument("snapshot_ids", nargs="*", metavar="SNAPSHOT_ID")
    held.add_argument("--by", type=restore_id, required=True, help="the restore holding them")
    held.add_argument("--for", dest="seconds", type=hold_seconds, help="how long, in seconds")
    held.add_argument("--release", action="store_true", help="drop every hold --by placed")


def run_step(args: argparse.Namespace) -> int:
    """One step; its JSON on stdout, or one line on stderr and exit 1."""
    try:
        answer = _step(args)
    except ConfigError as err:
        print(err.report("snapshots: invalid configuration").replace("\n", "; "), file=sys.stderr)
        return 1
    except (MemberError, SetError, *SNAPSHOT_ERRORS) as err:
        print(f"snapshots {args.action}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(answer, default=str))
    return 0


def _step(args: argparse.Namespace) -> dict[str, object]:
    if args.action == "take-set":
        return _take_set(Snapshotter.load(), args.note)
    here = Standalone.load()
    if args.action == "status":
        leads, who = coordinator(here.snapshotter.config)
        return here.status() | {"coordinator": {"here": leads, "who": who}}
    if args.action == "restore-safety":
        return here.safety(args.restore_id, args.plan, args.replace, args.replaces or "")
    if args.action == "restore-copy":
        return here.copy(args.restore_id)
    if args.action == "restore-adopt":
        return here.adopt(args.restore_id, args.plan, args.safety)
    if args.action == "restore-finish":
        return here.finish(args.restore_id)
    if args.action == "restore-verify":
        return here.verify()
    if args.action == "create-disk":
        return here.create_disk(args.snapshot_id, args.restore_id)
    if args.release:
        return here.release(args.by)
    if args.seconds is None or not args.snapshot_ids:
        raise MemberError("hold needs snapshot ids and --for SECONDS (or --release)")
    return here.hold(args.snapshot_ids, args.by, datetime.now(UTC) + args.seconds)


def _take_set(snapshotter: Snapshotter, note: str) -> dict[str, object]:
    """One consistent set, coordinated here (the operator's command picks the coordinator)."""
    leads, who = coordinator(snapshotter.config)
    if not leads:
        raise MemberError(f"the set is coordinated by {who}, not by this instance")
    outcome = run_set(snapshotter, MANUAL, note=note)
    return {
        "set_id": outcome.set_id,
        "state": outcome.state,
        "reason": outcome.reason,
        "longest_freeze_seconds": outcome.longest_freeze,
        "members": [
            {
                "instance": r.member.label,
                "id": r.member.id,
                "snapshot_id": r.snapshot_id,
                "errors": list(r.errors),
            }
            for r in outcome.results
        ],
    }
