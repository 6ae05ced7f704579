"""``disk-snapshots``: snapshots, take-snapshot, restore and lint, from a jumpbox.

The console script of this project (``pip install .``; no root, no BOSH VM). Every
expected failure is one message naming what to do, with the release's exit codes; a
bug prints its traceback and exits 70.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from disk_snapshots import __version__
from disk_snapshots.operator import catalog
from disk_snapshots.operator import lint
from disk_snapshots.operator import specs
from disk_snapshots.operator.bosh import BOSH_VARIABLE
from disk_snapshots.operator.bosh import Bosh
from disk_snapshots.operator.decide import METHODS
from disk_snapshots.operator.errors import EXIT_BUG
from disk_snapshots.operator.errors import OperatorError
from disk_snapshots.operator.errors import Refused
from disk_snapshots.operator.errors import UsageError
from disk_snapshots.operator.progress import Progress
from disk_snapshots.operator.restore import Options
from disk_snapshots.operator.restore import RestoreRun
from disk_snapshots.restore.target import Target

EPILOG = f"""\
The bosh CLI is ${BOSH_VARIABLE} or bosh on PATH, run with -n --json and your environment
(BOSH_ENVIRONMENT, BOSH_CLIENT, BOSH_CLIENT_SECRET, BOSH_CA_CERT, bosh log-in). Instances
are reached with bosh ssh running /var/vcap/jobs/snapshotter/bin/snapshots there.

exit codes: 0 done; 1 not done (the message says why; a refusal changed nothing);
2 a bad argument; 5 stopped midway (the message says where every instance stands and the
way back); 70 a bug (its traceback is printed)."""


def _target(text: str) -> Target:
    spelled = text if text == "latest" or ":" in text.split("T")[0] else f"time:{text}"
    try:
        return Target.parse(spelled)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--to {err}") from None


def _named(text: str) -> tuple[str, str]:
    instance, sep, snapshot_id = text.partition("=")
    if not sep or "/" not in instance or not snapshot_id:
        raise argparse.ArgumentTypeError(
            f"--snapshot {text!r}: expected GROUP/ID=SNAPSHOT_ID (ID: the index or the uuid)"
        )
    return instance, snapshot_id


def _seconds(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (1 or more)")
    return int(text)


def _restore_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = commands.add_parser(
        "restore",
        help="restore the deployment's disks in the seed's order, through the Director",
        description=(
            "Plan (the errand's planner: after a failover the leader gets the promoted "
            "instance's snapshot), confirm, then: stop the followers and the leader, take a "
            "clean safety snapshot of every disk, restore each disk (copy the snapshot onto "
            "it, or replace it with a new disk made from the snapshot: bosh attach-disk), "
            "start the leader and wait until it leads, start the followers and wait until "
            "they are in sync. Run it again after a failure: it resumes."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--to",
        type=_target,
        default=Target("latest"),
        metavar="latest|TIME|set:ID",
        help="the state to restore: the newest (default), the newest at or before "
        "an ISO 8601 time with zone, or a snapshot set",
    )
    r.add_argument(
        "--snapshot",
        type=_named,
        action="append",
        default=[],
        metavar="GROUP/ID=SNAPSHOT",
        help="this instance gets this snapshot (repeat)",
    )
    r.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="copy onto the disk, replace the disk, or auto: replace when the "
        "provider can make disks and the snapshot's disk has the disk's size now",
    )
    r.add_argument(
        "--followers",
        choices=("resync", "restore"),
        default="resync",
        help="resync from the leader (default) or get their own snapshots",
    )
    _restore_flags(r)


def _restore_flags(r: argparse.ArgumentParser) -> None:
    r.add_argument(
        "--dry-run", action="store_true", help="print the plan and hold its snapshots; stop nothing"
    )
    r.add_argument(
        "--hold",
        type=_seconds,
        default=3600,
        metavar="SECONDS",
        help="how long a dry run holds the plan's snapshots (default 3600)",
    )
    r.add_argument("--skip-drain", action="store_true", help="bosh stop --skip-drain")
    r.add_argument("--yes", action="store_true", help="do not ask before stopping anything")
    r.add_argument(
        "--timeout",
        type=_seconds,
        default=3600,
        metavar="SECONDS",
        help="for each wait: the leader to lead, a follower to sync (default 3600)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="disk-snapshots",
        description="Snapshots and restores of a BOSH deployment's persistent disks, driven "
        "through the bosh CLI.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"disk-snapshots {__version__}")
    p.add_argument(
        "-d",
        "--deployment",
        default=os.environ.get("BOSH_DEPLOYMENT", ""),
        help="the deployment (default: $BOSH_DEPLOYMENT)",
    )
    p.add_argument(
        "-e",
        "--environment",
        default="",
        help="the Director (passed to bosh -e; default: the CLI's own)",
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = commands.add_parser("snapshots", help="the deployment's snapshot catalog")
    s.add_argument("--json", action="store_true", help="JSON instead of a table")
    t = commands.add_parser("take-snapshot", help="take snapshots now; prints the ids taken")
    t.add_argument("selector", nargs="?", metavar="GROUP[/ID]")
    t.add_argument("--note", default="", help="free text recorded on each snapshot (no secrets)")
    t.add_argument("--set", action="store_true", help="one consistent set across every member")
    t.add_argument("--json", action="store_true", help="JSON instead of a table")
    _restore_parser(commands)
    lint_p = commands.add_parser(
        "lint",
        help="check a manifest's properties of this release's jobs against their specs",
        description=lint.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lint_p.add_argument("manifest", type=Path)
    lint_p.add_argument("-o", "--ops-file", action="append", default=[], type=Path)
    lint_p.add_argument("-v", "--var", action="append", default=[], metavar="NAME=VALUE")
    lint_p.add_argument("-l", "--vars-file", action="append", default=[], type=Path)
    return p


def _bosh(args: argparse.Namespace) -> Bosh:
    if not args.deployment:
        raise UsageError("which deployment? give -d NAME or set BOSH_DEPLOYMENT")
    return Bosh.from_environment(args.deployment, args.environment)


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        raise Refused(
            f"{question} needs an answer: run it on a terminal, or pass --yes; nothing was "
            "stopped or written"
        )
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _restore(args: argparse.Namespace) -> int:
    named = dict(args.snapshot)
    options = Options(
        target=args.to,
        snapshots=named,
        method=args.method,
        followers=args.followers,
        dry_run=args.dry_run,
        skip_drain=args.skip_drain,
        yes=args.yes,
        hold_seconds=args.hold,
        timeout=float(args.timeout),
    )
    return RestoreRun(_bosh(args), options, Progress(), _ask).run()


def _lint(args: argparse.Namespace) -> int:
    options = [a for o in args.ops_file for a in ("-o", str(o))]
    options += [a for v in args.var for a in ("-v", v)]
    options += [a for f in args.vars_file for a in ("-l", str(f))]
    bosh = Bosh.from_environment("", args.environment)
    manifest = lint.parse(bosh.interpolate(str(args.manifest), options))
    problems, checked = lint.check(manifest, specs.load())
    for problem in problems:
        print(f"{args.manifest}: {problem}")
    if problems:
        raise OperatorError(f"{len(problems)} problem(s) in {args.manifest}")
    print(
        f"{args.manifest}: {checked} job(s) of {specs.load().release}: every property is declared"
    )
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "lint":
        return _lint(args)
    if args.command == "snapshots":
        return catalog.list_snapshots(_bosh(args), sys.stdout, args.json)
    if args.command == "take-snapshot":
        catalog.check_selector(args.selector, args.set)
        if args.set:
            return catalog.take_set(_bosh(args), sys.stdout, args.note)
        return catalog.take(_bosh(args), sys.stdout, args.selector, args.note, args.json)
    return _restore(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except OperatorError as err:
        print(f"disk-snapshots {args.command}: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except Exception as err:  # a bug: its traceback, and say so
        traceback.print_exc()
        print(f"disk-snapshots {args.command}: internal error, a bug: {err!r}", file=sys.stderr)
        return EXIT_BUG
