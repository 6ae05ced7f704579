"""``bin/snapshots restore``: restore this instance's disk from the VM itself (restore/single.py).

For a deployment of one instance that nothing else can restore: the Director made with
``bosh create-env``, reached with ``ssh`` as the jumpbox user. Exit codes as every
``bin/snapshots`` command: 1 for an invalid configuration, a refusal or a failure (the
reason on stderr), 2 for a command line argparse rejects.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from disk_snapshots.commands.restore import DRY_RUN_HOLD
from disk_snapshots.commands.steps import Parser
from disk_snapshots.config import EXIT_INVALID_CONFIG
from disk_snapshots.config import ConfigError
from disk_snapshots.restore.single import Options
from disk_snapshots.restore.single import SingleRestore
from disk_snapshots.restore.standalone import Standalone
from disk_snapshots.restore.target import Target
from disk_snapshots.restore.tiers import SOURCES
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import Paths

EXAMPLE_TIME = "2026-11-29T08:00:00Z"


def moment(text: str) -> Target:
    try:
        return Target.parse(f"time:{text}")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--to {text!r}: an ISO 8601 time with a zone is allowed, e.g. {EXAMPLE_TIME}"
        ) from None


def add_restore(actions: argparse._SubParsersAction[Parser]) -> None:
    restore = actions.add_parser(
        "restore",
        help="restore this instance's disk from a snapshot (single-instance deployments)",
        description=(
            "Restore this instance's persistent disk from one of its snapshots, here on the "
            "VM: for a deployment of one instance, such as a Director made with bosh "
            "create-env, also on a new, empty disk. It prints its plan, then holds the "
            "snapshot against retention, stops service.jobs in their order, takes a clean "
            "safety snapshot, copies the snapshot onto the disk under a journal (an "
            "interrupted restore is resumed by the next run), starts the jobs in reverse "
            "order, waits until the service answers its probe, runs restore.verify when a "
            "restore job is colocated, and says what it did. Exit 0 when done (or after a "
            "dry run), 1 when refused or failed, with the reason and the way back on stderr."
        ),
    )
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--latest",
        action="store_true",
        help="the newest consistent snapshot this instance group and index took",
    )
    which.add_argument(
        "--to",
        dest="target",
        type=moment,
        metavar="TIME",
        help=f"the newest one taken at or before TIME (ISO 8601 with a zone, e.g. {EXAMPLE_TIME})",
    )
    which.add_argument(
        "--snapshot",
        dest="snapshot_id",
        metavar="ID",
        help="this snapshot (any of this deployment's; a pre-restore safety snapshot to go back)",
    )
    restore.add_argument(
        "--from",
        dest="source",
        choices=SOURCES,
        default="auto",
        help="which tier the data comes from: snapshot, backup, or auto (the snapshot while "
        "it exists, else its backup; the default), as restore.source says for the errand",
    )
    restore.add_argument(
        "--dry-run", action="store_true", help="print the plan; stop, copy and write nothing"
    )


def run_restore(args: argparse.Namespace, paths: Paths) -> int:
    try:
        here = Standalone.load(paths)
    except ConfigError as err:
        print(err.report("snapshots restore: invalid configuration"), file=sys.stderr)
        return EXIT_INVALID_CONFIG
    except SNAPSHOT_ERRORS as err:
        print(
            f"snapshots restore: {err}; nothing was stopped, snapshotted or written",
            file=sys.stderr,
        )
        return 1
    options = Options(
        target=args.target or Target("latest"),
        snapshot_id=args.snapshot_id or "",
        source=args.source,
        dry_run=args.dry_run,
        dry_run_hold=timedelta(seconds=DRY_RUN_HOLD),
    )
    return SingleRestore(here).run(options)
