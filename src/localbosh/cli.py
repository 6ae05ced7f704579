"""`localbosh`: the bosh CLI's verbs and flags against the local deployment."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from localbosh.boshcli import BoshCliError
from localbosh.director import Director
from localbosh.director import DirectorError
from localbosh.director import ErrandResult
from localbosh.manifest import InterpolationError
from localbosh.manifest import interpolate
from localbosh.namespace import CommandError
from localbosh.release import ReleaseError
from localbosh.state import Layout
from localbosh.state import LockError
from localbosh.state import home


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="localbosh",
        description="Simulated BOSH deployments on this machine (namespaces, monit, loop disks).",
    )
    p.add_argument("-d", "--deployment", default=os.environ.get("BOSH_DEPLOYMENT"))
    p.add_argument(
        "-n", "--non-interactive", action="store_true", help="accepted for bosh compatibility"
    )
    sub = p.add_subparsers(dest="verb", required=True)

    d = sub.add_parser("deploy", help="create or update the deployment")
    d.add_argument("manifest", type=Path)
    d.add_argument("-o", "--ops-file", action="append", default=[], type=Path)
    d.add_argument("-v", "--var", action="append", default=[])
    d.add_argument("-l", "--vars-file", action="append", default=[], type=Path)
    d.add_argument("--vars-store", type=Path)
    d.add_argument("--recreate", action="store_true")
    d.add_argument(
        "--skip-drain", action="store_true", help="skip drain and pre-stop scripts, as bosh does"
    )

    i = sub.add_parser("instances", help="list instances with process state and addresses")
    i.add_argument("-p", "--ps", action="store_true", help="show processes")
    i.add_argument(
        "--details", action="store_true", help="show state (started, stopped, detached), disks"
    )

    e = sub.add_parser("run-errand", help="run an errand's bin/run")
    e.add_argument("name")
    e.add_argument("--instance", action="append", default=[])
    e.add_argument("--keep-alive", action="store_true", help="accepted; VMs are always kept")

    for verb in ("stop", "start", "restart", "recreate"):
        s = sub.add_parser(verb, help=f"{verb} instances")
        s.add_argument("selector", nargs="?")
        if verb == "stop":
            s.add_argument(
                "--hard", action="store_true", help="also delete the VM (disk kept): detached"
            )
        if verb in ("stop", "restart", "recreate"):
            s.add_argument("--skip-drain", action="store_true", help="skip pre-stop and drain")

    s = sub.add_parser("ssh", help="run a command inside an instance's namespace")
    s.add_argument("selector")
    s.add_argument("-c", "--command", required=True)

    x = sub.add_parser("delete-deployment", help="delete all instances; disks are orphaned")
    x.add_argument("--force", action="store_true")

    sub.add_parser("deployments", help="list deployments")
    sub.add_parser("clean-up", help="delete orphaned disks").add_argument(
        "--all", action="store_true"
    )
    return p


def _need_deployment(args: argparse.Namespace) -> str:
    if not args.deployment:
        raise DirectorError("Expected non-empty deployment name (use -d NAME)")
    return str(args.deployment)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


def _print_errands(results: Sequence[ErrandResult]) -> None:
    for r in results:
        print(_table(["Instance", r.instance], [["Exit Code", str(r.exit_code)]]))
        for label, text in (("Stdout", r.stdout), ("Stderr", r.stderr)):
            lines = text.rstrip().splitlines() or ["-"]
            # Continuation lines line up under the value column, as in the bosh CLI.
            print(f"{label:<11}{lines[0]}")
            for line in lines[1:]:
                print(f"{'':<11}{line}")
        print()
    print(f"{len(results)} errand(s)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    layout = Layout(home())
    director = Director(layout)
    try:
        if args.verb == "deploy":
            name = _need_deployment(args)
            # Generated variables must survive redeploys, as in a Director's config
            # server: without --vars-store they live in the deployment's state dir.
            vars_store = args.vars_store or layout.deployment(name) / "vars-store.yml"
            # The real `bosh int`, so a manifest means here what it means to the bosh CLI.
            manifest = interpolate(
                args.manifest,
                list(args.ops_file),
                var_kvs=list(args.var),
                vars_files=list(args.vars_file),
                vars_store=vars_store,
            )
            print("Interpolated the manifest with bosh int")
            print(f"Using deployment '{name}'")
            director.deploy(
                name,
                manifest,
                args.manifest.resolve().parent,
                recreate=args.recreate,
                skip_drain=args.skip_drain,
            )
        elif args.verb == "instances":
            name = _need_deployment(args)
            rows = director.instances(name)
            print(f"Deployment '{name}'\n")
            headers = ["Instance", "Process State", "AZ", "IPs"]
            if args.details:
                headers += ["State", "Bootstrap", "Disk CIDs"]
            table = []
            for r in rows:
                row = [r["instance"], r["process_state"], r["az"], r["ips"]]
                if args.details:
                    row += [r["state"], "true" if r["bootstrap"] else "false", r["disk_cid"]]
                table.append(row)
                if args.ps:
                    for proc, state in r["processes"]:
                        table.append(
                            [f"~ {proc}", state, "", ""] + (["", "", ""] if args.details else [])
                        )
            print(_table(headers, table))
            print(f"\n{len(rows)} instances\n\nSucceeded")
        elif args.verb == "run-errand":
            name = _need_deployment(args)
            results = director.run_errand(name, args.name, args.instance)
            _print_errands(results)
            failed = [r for r in results if r.exit_code != 0]
            if failed:
                worst = max(r.exit_code for r in failed)
                verb = "was canceled" if worst > 128 else "completed with error"
                print(f"\nErrand '{args.name}' {verb} (exit code {worst})\n\nExit code 1")
                return 1
            print("\nSucceeded")
        elif args.verb in ("stop", "start", "restart", "recreate"):
            name = _need_deployment(args)
            director.change_state(
                name,
                args.verb,
                args.selector,
                hard=getattr(args, "hard", False),
                skip_drain=getattr(args, "skip_drain", False),
            )
        elif args.verb == "ssh":
            return director.ssh(_need_deployment(args), args.selector, args.command)
        elif args.verb == "delete-deployment":
            director.delete_deployment(_need_deployment(args), force=args.force)
        elif args.verb == "deployments":
            names = layout.deployment_names()
            print(_table(["Name"], [[n] for n in names]))
            print(f"\n{len(names)} deployments\n\nSucceeded")
        elif args.verb == "clean-up":
            director.clean_up()
    except (
        DirectorError,
        LockError,
        InterpolationError,
        BoshCliError,
        ReleaseError,
        CommandError,
    ) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        print("\nExit code 1", file=sys.stderr)
        return 1
    except Exception as exc:  # an unexpected failure still gets a one-line cause first
        print(f"Error: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        print("\nExit code 1", file=sys.stderr)
        return 1
    return 0
