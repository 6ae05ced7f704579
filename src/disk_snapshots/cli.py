"""``python -m disk_snapshots``: the one entry point for job shims, errands and operators.

Every ``bin/*`` script of the release execs this with a fixed sub-command, so
BOSH hooks, errands and ``bosh ssh`` users all reach the same code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from disk_snapshots import __version__
from disk_snapshots.config import ConfigError
from disk_snapshots.config import load_config

JOBS_DIR = Path("/var/vcap/jobs")
EXIT_CONFIG = 2
EXIT_NOT_BUILT = 3

# What this version does not do yet, and the issue that brings it. An operator must
# never read success from a hook or errand that did nothing (DESIGN §12), so these
# refuse loudly: drain prints nothing on stdout, which the agent treats as failure.
NOT_BUILT = {
    "hook": "lifecycle hooks arrive with issue #4 (snapshots on every deploy)",
    "snapshots": "on-VM snapshot commands arrive with issue #4",
    "daemon": "the snapshotter daemon arrives with issue #5",
    "errand take-snapshot": "the take-snapshot errand arrives with issue #4",
    "errand list-snapshots": "the list-snapshots errand arrives with issue #4",
    "errand restore": "the restore errand arrives with issue #6",
}


def _config_path(job: str) -> Path:
    return JOBS_DIR / job / "config" / "config.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disk-snapshots",
        description=(
            "Application-consistent persistent-disk snapshots for BOSH deployments. "
            "BOSH runs these commands through the snapshotter job's bin/ scripts; on a VM "
            "use /var/vcap/jobs/snapshotter/bin/snapshots."
        ),
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

    daemon = commands.add_parser("daemon", help="the scheduler and agent API (run by monit)")
    daemon.add_argument("action", choices=["start", "stop", "run"])

    snapshots = commands.add_parser(
        "snapshots", help="list, show, take or delete snapshots on this VM"
    )
    snapshots.add_argument("action", choices=["list", "show", "take", "delete"])
    snapshots.add_argument("args", nargs="*")

    errand = commands.add_parser("errand", help="run an errand (bin/run of the errand jobs)")
    errand.add_argument("name", choices=["take-snapshot", "list-snapshots", "restore"])
    return parser


def _check_config(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as err:
        print(f"disk-snapshots: invalid configuration in {path}:", file=sys.stderr)
        for line in err.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: valid {type(config).__name__}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        return _check_config(args.config)
    key = f"errand {args.name}" if args.command == "errand" else args.command
    print(
        f"disk-snapshots: {key}: not available in this version: {NOT_BUILT[key]}", file=sys.stderr
    )
    return EXIT_NOT_BUILT
