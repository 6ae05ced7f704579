"""``python -m disk_snapshots``: the one entry point for job shims, errands and operators.

Every ``bin/*`` script of the release execs this with a fixed sub-command, so
BOSH hooks, errands and ``bosh ssh`` users all reach the same code, and exit with the
same codes (errors.py): an error of the release is one line, a bug its traceback and 70.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from disk_snapshots import __version__
from disk_snapshots.annotations import text_problem
from disk_snapshots.commands import daemon
from disk_snapshots.commands import errands
from disk_snapshots.commands import restore
from disk_snapshots.commands.hooks import run_hook
from disk_snapshots.commands.restore_here import add_restore
from disk_snapshots.commands.restore_here import run_restore
from disk_snapshots.commands.snapshots import run_snapshots
from disk_snapshots.commands.steps import STEPS
from disk_snapshots.commands.steps import add_steps
from disk_snapshots.commands.steps import run_step
from disk_snapshots.config import EXIT_INVALID_CONFIG
from disk_snapshots.config import ConfigError
from disk_snapshots.config import load_config
from disk_snapshots.errors import EXIT_USAGE
from disk_snapshots.errors import epilog
from disk_snapshots.errors import guarded
from disk_snapshots.snapshot.snapshotter import VM_PATHS
from disk_snapshots.snapshot.snapshotter import Paths

JOBS_DIR = Path("/var/vcap/jobs")


def _config_path(job: str) -> Path:
    return JOBS_DIR / job / "config" / "config.json"


class _Parser(argparse.ArgumentParser):
    """argparse with one line for a bad argument, and the documented usage exit code."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _note(text: str) -> str:
    problem = text_problem(text)
    if problem:
        # Refused here, before the service is flushed and the disk frozen.
        raise argparse.ArgumentTypeError(problem)
    return text


def _add_snapshots(commands: argparse._SubParsersAction[_Parser]) -> None:
    """``snapshots ACTION``: what bin/snapshots offers ``bosh ssh`` users."""
    snapshots = commands.add_parser(
        "snapshots",
        help="list, show, take, back up, delete or restore snapshots (for bosh ssh users)",
        description="The deployment's snapshot catalog, from this VM.",
    )
    actions = snapshots.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="every snapshot and backup of this deployment, newest first"
    )
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    show = actions.add_parser("show", help="one snapshot's (or backup's) annotations")
    show.add_argument("snapshot_id", metavar="ID")
    take = actions.add_parser("take", help="take an application-consistent snapshot now")
    take.add_argument(
        "--note",
        default="",
        type=_note,
        help="one line recorded on the snapshot, at most 255 characters (no secrets)",
    )
    take.add_argument("--json", action="store_true", help="JSON instead of a table")
    delete = actions.add_parser("delete", help="delete one snapshot")
    delete.add_argument("snapshot_id")
    delete.add_argument(
        "--force",
        action="store_true",
        help="delete even if retention would keep it (newest consistent, newest leader...)",
    )
    cleanup = actions.add_parser(
        "cleanup",
        help="list (then, with --yes, release) what killed operations left behind",
        description="Temporary resources a killed restore, snapshot or backup left on this "
        "VM: loopback clones, their loop devices and mounts, partial images, unfinished "
        "backups in the backup store; aws-ebs volumes and backup copies made to read from "
        "(tagged disk-snapshots:temporary). Those of a process still running are never "
        "touched. Without --yes, only lists them.",
    )
    backup = actions.add_parser(
        "backup",
        help="back up a snapshot now and wait until the backup is complete",
        description="Copy a snapshot out of its failure domain (backups: provider.loopback."
        "backup_store or provider.aws.backup_region) and wait until the provider reports the "
        "copy complete or backups.deadline passes; then apply backups.retention. Exits "
        "non-zero unless the backup is complete.",
    )
    backup.add_argument(
        "snapshot_id",
        nargs="?",
        help="the snapshot to back up (default: the one backups.source chooses: this "
        "instance's newest app-consistent snapshot, or its member of the newest complete set)",
    )
    delete_backup = actions.add_parser("delete-backup", help="delete one backup")
    delete_backup.add_argument("backup_id")
    delete_backup.add_argument(
        "--force", action="store_true", help="delete even the newest completed backup"
    )
    cleanup.add_argument("--yes", action="store_true", help="release what is listed")
    add_restore(actions)
    add_steps(actions)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="disk-snapshots",
        description=(
            "Application-consistent persistent-disk snapshots for BOSH deployments. "
            "BOSH runs these commands through the snapshotter job's bin/ scripts; on a VM "
            "use /var/vcap/jobs/snapshotter/bin/snapshots."
        ),
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"disk-snapshots {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "config",
        help="validate a rendered config.json",
        description="Validate a job's rendered config.json and name every invalid property.",
    )
    check.add_argument("action", choices=["check"])
    check.add_argument(
        "--config",
        type=Path,
        default=_config_path("snapshotter"),
        help="path to a rendered config.json (default: %(default)s)",
    )

    hook = commands.add_parser("hook", help="BOSH lifecycle hooks of the snapshotter job")
    hook.add_argument("name", choices=["pre-start", "post-start", "drain", "post-stop"])
    hook.add_argument(
        "args", nargs="*", help="arguments BOSH passes (drain: job_change hash_change packages...)"
    )

    runner = commands.add_parser(
        "daemon",
        help="the snapshot scheduler (run by monit)",
        description="start/stop are monit's start and stop programs; run stays in the foreground.",
    )
    runner.add_argument("action", choices=["start", "stop", "run"])

    _add_snapshots(commands)

    errand = commands.add_parser("errand", help="run an errand (bin/run of the errand jobs)")
    errand.add_argument("name", choices=["take-snapshot", "list-snapshots", "restore"])
    return parser


def _check_config(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as err:
        print(err.report(f"disk-snapshots: invalid configuration in {path}"), file=sys.stderr)
        return EXIT_INVALID_CONFIG
    print(f"{path}: valid {type(config).__name__}")
    return 0


def _setup_logging(command: str, name: str, paths: Paths) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    # The agent keeps no log of drain's output (docs/bosh-contracts.md, drain): keep our own.
    if command == "hook" and name == "drain" and paths.logs.is_dir():
        handlers.append(logging.FileHandler(paths.logs / "drain.log"))
    logging.Formatter.converter = time.gmtime
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s disk-snapshots %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%SZ",
        handlers=handlers,
    )


def main(argv: Sequence[str] | None = None, paths: Paths = VM_PATHS) -> int:
    """Run one command; ``paths`` is where the VM's files are ("/" on a VM, a test's root)."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.command, getattr(args, "name", ""), paths)
    name = " ".join(str(a) for a in (args.command, getattr(args, "name", None)) if a)
    if args.command == "snapshots":
        name = f"snapshots {args.action}"
    # An errand speaks on stdout (what `bosh run-errand` shows); everything else on stderr,
    # drain's stdout being the agent's.
    out = sys.stdout if args.command == "errand" else sys.stderr
    return guarded(lambda: _run(args, paths), name, out)


def _run(args: argparse.Namespace, paths: Paths) -> int:
    if args.command == "config":
        return _check_config(args.config)
    if args.command == "hook":
        return run_hook(args.name, args.args, paths)
    if args.command == "snapshots":
        if args.action == "restore":
            return run_restore(args, paths)
        return run_step(args) if args.action in STEPS else run_snapshots(args, paths)
    if args.command == "daemon":
        actions = {"start": daemon.start, "stop": daemon.stop, "run": daemon.run}
        return actions[args.action](paths)
    errand_runs = {
        "take-snapshot": errands.take_snapshot,
        "list-snapshots": errands.list_snapshots,
        "restore": restore.run,
    }
    return errand_runs[args.name](paths)
