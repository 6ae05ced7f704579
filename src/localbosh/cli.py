"""`localbosh`: the bosh CLI's verbs and flags against the local deployment.

With ``--json`` every verb answers as the bosh CLI does (ui.py): one JSON document of
tables, blocks and lines on stdout, errors among the lines and "Exit code 1" last, so a
program that drives the real CLI with ``--json`` (the operator's ``disk-snapshots``)
drives this one unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from localbosh.ui import UI
from localbosh.ui import LineWriter
from localbosh.ui import Table

ERRORS = (DirectorError, LockError, InterpolationError, BoshCliError, ReleaseError, CommandError)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="localbosh",
        description="Simulated BOSH deployments on this machine (namespaces, monit, loop disks).",
    )
    p.add_argument("-d", "--deployment", default=os.environ.get("BOSH_DEPLOYMENT"))
    p.add_argument(
        "-n", "--non-interactive", action="store_true", help="accepted for bosh compatibility"
    )
    p.add_argument("--json", action="store_true", help="output as JSON, like the bosh CLI")
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
        "-i",
        "--details",
        action="store_true",
        help="show state (started, stopped, detached), disks",
    )

    e = sub.add_parser("run-errand", help="run an errand's bin/run")
    e.add_argument("name")
    e.add_argument("--instance", action="append", default=[])
    e.add_argument("--keep-alive", action="store_true", help="accepted; VMs are always kept")

    for verb in ("stop", "start", "restart", "recreate"):
        s = sub.add_parser(verb, help=f"{verb} instances")
        s.add_argument("selector", nargs="?")
        if verb == "stop":
            s.add_argument("--soft", action="store_true", help="stop processes only (default)")
            s.add_argument(
                "--hard", action="store_true", help="also delete the VM (disk kept): detached"
            )
        if verb in ("stop", "restart", "recreate"):
            s.add_argument("--skip-drain", action="store_true", help="skip pre-stop and drain")

    s = sub.add_parser("ssh", help="run a command inside instances' namespaces")
    s.add_argument("selector", nargs="?", help="GROUP[/ID]; every instance without it")
    s.add_argument("-c", "--command", required=True)
    s.add_argument(
        "-r", "--results", action="store_true", help="collect results into a table (with --json)"
    )

    a = sub.add_parser("attach-disk", help="attach a disk to a stopped instance")
    a.add_argument("slug", metavar="INSTANCE-GROUP/INSTANCE-ID")
    a.add_argument("disk_cid", metavar="DISK-CID")
    a.add_argument(
        "--disk-properties", default="", help="'copy': the size and properties of the old disk"
    )

    k = sub.add_parser("disks", help="list disks (--orphaned)")
    k.add_argument("-o", "--orphaned", action="store_true", help="list orphaned disks")

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


def _errands(ui: UI, results: Sequence[ErrandResult]) -> None:
    for r in results:
        ui.line(Table("", ["Instance", r.instance], [["Exit Code", str(r.exit_code)]]).render())
        for label, text in (("Stdout", r.stdout), ("Stderr", r.stderr)):
            lines = text.rstrip().splitlines() or ["-"]
            # Continuation lines line up under the value column, as in the bosh CLI.
            ui.line(f"{label:<11}{lines[0]}")
            for line in lines[1:]:
                ui.line(f"{'':<11}{line}")
        ui.line("")
    ui.line(f"{len(results)} errand(s)")


def _deploy(args: argparse.Namespace, director: Director, ui: UI) -> int:
    name = _need_deployment(args)
    # Generated variables must survive redeploys, as in a Director's config server:
    # without --vars-store they live in the deployment's state dir.
    vars_store = args.vars_store or director.layout.deployment(name) / "vars-store.yml"
    # The real `bosh int`, so a manifest means here what it means to the bosh CLI.
    manifest = interpolate(
        args.manifest,
        list(args.ops_file),
        var_kvs=list(args.var),
        vars_files=list(args.vars_file),
        vars_store=vars_store,
    )
    ui.line("Interpolated the manifest with bosh int")
    ui.line(f"Using deployment '{name}'")
    director.deploy(
        name,
        manifest,
        args.manifest.resolve().parent,
        recreate=args.recreate,
        skip_drain=args.skip_drain,
    )
    return 0


INSTANCE_TITLES = ["Instance", "Process State", "AZ", "IPs", "Deployment"]
DETAIL_TITLES = ["State", "VM CID", "VM Type", "Disk CIDs", "Agent ID", "Index", "Bootstrap"]


def _instances(args: argparse.Namespace, director: Director, ui: UI) -> int:
    name = _need_deployment(args)
    rows = director.instances(name)
    if ui.json:
        ui.table(_instances_json(name, rows, args.ps, args.details))
        ui.line("Succeeded")
        return 0
    headers = ["Instance", "Process State", "AZ", "IPs"]
    if args.details:
        headers += ["State", "Bootstrap", "Disk CIDs"]
    table = []
    for r in rows:
        row = [r["instance"], r["process_state"], r["az"], r["ips"]]
        if args.details:
            row += [r["state"], "true" if r["bootstrap"] else "false", r["disk_cid"]]
        table.append(row)
        for proc, state in r["processes"] if args.ps else []:
            table.append([f"~ {proc}", state, "", ""] + (["", "", ""] if args.details else []))
    ui.line(f"Deployment '{name}'\n")
    ui.line(Table("instances", headers, table).render())
    ui.line(f"\n{len(rows)} instances\n\nSucceeded")
    return 0


def _instances_json(name: str, rows: Sequence[dict[str, Any]], ps: bool, details: bool) -> Table:
    """The table of bosh-cli cmd/instance_table.go for one deployment: Instance,
    [Process,] Process State, AZ, IPs, Deployment[, details]; a process row has its
    instance in the first column (the CLI's JSON fills it, FillFirstColumn)."""
    titles = ["Instance", *(["Process"] if ps else []), *INSTANCE_TITLES[1:]]
    if details:
        titles += [*DETAIL_TITLES, "Ignore"]
    table = []
    for r in rows:
        process_state = "" if r["process_state"] == "-" else r["process_state"]
        row = [r["instance"], *([""] if ps else []), process_state, r["az"], r["ips"], name]
        if details:
            row += [r["state"], r["vm_cid"], r["vm_type"], r["disk_cid"], r["agent_id"]]
            row += [str(r["index"]), str(r["bootstrap"]).lower(), "false"]
        table.append(row)
        for proc, state in r["processes"] if ps else []:
            cells = [r["instance"], proc, state, "", "", ""]
            table.append(cells + [""] * (len(titles) - len(cells)))
    return Table("instances", titles, table)


def _run_errand(args: argparse.Namespace, director: Director, ui: UI) -> int:
    results = director.run_errand(_need_deployment(args), args.name, args.instance)
    _errands(ui, results)
    failed = [r for r in results if r.exit_code != 0]
    if failed:
        worst = max(r.exit_code for r in failed)
        verb = "was canceled" if worst > 128 else "completed with error"
        ui.line(f"\nErrand '{args.name}' {verb} (exit code {worst})\n\nExit code 1")
        return 1
    ui.line("\nSucceeded")
    return 0


def _change_state(args: argparse.Namespace, director: Director, ui: UI) -> int:
    director.change_state(
        _need_deployment(args),
        args.verb,
        args.selector,
        hard=getattr(args, "hard", False),
        skip_drain=getattr(args, "skip_drain", False),
    )
    return 0


def _ssh(args: argparse.Namespace, director: Director, ui: UI) -> int:
    """`bosh ssh -c CMD`: streamed, or with --results one table of every instance's
    Instance, Stdout, Stderr, Exit Code and Error (bosh-cli ssh/results_writer.go); a
    command that failed anywhere makes the whole call fail, after the table."""
    name = _need_deployment(args)
    if not args.results:
        return director.ssh(name, args.selector, args.command)
    results = director.ssh_results(name, args.selector, args.command)
    rows, failed = [], []
    for instance, code, out, err in sorted(results):
        error = f"Running command: 'bash -c ...': exit status {code}" if code else ""
        rows.append([instance, out, err, str(code), error])
        if code:
            failed.append(error)
    ui.table(Table("results", ["Instance", "Stdout", "Stderr", "Exit Code", "Error"], rows))
    if failed:
        ui.error(f"Running SSH:\n  {len(failed)} error(s) occurred:\n" + "\n".join(failed))
        ui.error("Exit code 1")
        return 1
    ui.line("Succeeded")
    return 0


def _attach_disk(args: argparse.Namespace, director: Director, ui: UI) -> int:
    if args.disk_properties not in ("", "copy"):
        raise DirectorError(f"--disk-properties {args.disk_properties!r}: only 'copy' is known")
    ui.line(
        director.attach_disk(_need_deployment(args), args.slug, args.disk_cid, args.disk_properties)
    )
    ui.line("Succeeded")
    return 0


def _disks(args: argparse.Namespace, director: Director, ui: UI) -> int:
    """`bosh disks --orphaned` (bosh-cli cmd/disks.go): sizes in IEC units, times in
    Go's UnixDate layout, as the CLI prints them."""
    if not args.orphaned:
        raise DirectorError("Only --orphaned is supported")
    rows = []
    for o in sorted(director.orphaned_disks(), key=lambda o: str(o.get("orphaned_at"))):
        moment = time.strptime(str(o.get("orphaned_at")), "%Y-%m-%dT%H:%M:%SZ")
        rows.append(
            [
                str(o.get("disk_cid")),
                _iec(int(o.get("size") or 0) * 2**20),
                str(o.get("deployment")),
                str(o.get("instance")),
                str(o.get("az") or ""),
                time.strftime("%a %b %e %H:%M:%S UTC %Y", moment),
            ]
        )
    titles = ["Disk CID", "Size", "Deployment", "Instance", "AZ", "Orphaned At"]
    ui.table(Table("disks", titles, rows))
    ui.line("Succeeded")
    return 0


def _iec(size: int) -> str:
    """go-humanize IBytes: "1.0 GiB", "512 MiB"."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"


def _delete_deployment(args: argparse.Namespace, director: Director, ui: UI) -> int:
    director.delete_deployment(_need_deployment(args), force=args.force)
    return 0


def _deployments(args: argparse.Namespace, director: Director, ui: UI) -> int:
    names = director.layout.deployment_names()
    ui.table(Table("deployments", ["Name"], [[n] for n in names]))
    ui.line(f"\n{len(names)} deployments\n\nSucceeded" if not ui.json else "Succeeded")
    return 0


def _clean_up(args: argparse.Namespace, director: Director, ui: UI) -> int:
    director.clean_up()
    return 0


VERBS: dict[str, Callable[[argparse.Namespace, Director, UI], int]] = {
    "deploy": _deploy,
    "instances": _instances,
    "run-errand": _run_errand,
    "stop": _change_state,
    "start": _change_state,
    "restart": _change_state,
    "recreate": _change_state,
    "ssh": _ssh,
    "attach-disk": _attach_disk,
    "disks": _disks,
    "delete-deployment": _delete_deployment,
    "deployments": _deployments,
    "clean-up": _clean_up,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ui = UI(json=args.json)
    out: Any = LineWriter(ui) if args.json else None
    director = Director(Layout(home()), out=out)
    # With --json, whatever any part prints (compile progress, say) is a line of the
    # document, never text before it.
    quiet = contextlib.redirect_stdout(out) if args.json else contextlib.nullcontext()
    try:
        with quiet:
            code = VERBS[args.verb](args, director, ui)
    except ERRORS as exc:
        ui.error(f"Error: {exc}" if not ui.json else str(exc))
        ui.error("\nExit code 1" if not ui.json else "Exit code 1")
        code = 1
    except Exception as exc:  # an unexpected failure still gets a one-line cause first
        ui.error(f"Error: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        ui.error("\nExit code 1" if not ui.json else "Exit code 1")
        code = 1
    finally:
        sys.stdout.flush()
    ui.flush()
    return code
