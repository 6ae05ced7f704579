"""``disk-snapshots snapshots`` and ``take-snapshot``: the seed's first two commands.

The catalog is read on one instance (every instance lists the whole deployment's), and
printed with the errand's table (table.py): the seed's columns first (instance, snapshot
CID, created at, clean), then trigger, role, consistency, set, note and backup.
"""

from __future__ import annotations

import json
from typing import TextIO

from disk_snapshots.catalog import Snapshot
from disk_snapshots.operator.bosh import Bosh
from disk_snapshots.operator.errors import OperatorError
from disk_snapshots.operator.errors import PartlyDone
from disk_snapshots.operator.errors import UsageError
from disk_snapshots.operator.remote import Answer
from disk_snapshots.operator.remote import Remote
from disk_snapshots.table import from_json
from disk_snapshots.table import render_table
from disk_snapshots.table import to_json


def _snapshots(answer: Answer) -> list[Snapshot]:
    return from_json(json.dumps(answer.value))


def list_snapshots(bosh: Bosh, out: TextIO, as_json: bool) -> int:
    """The deployment's catalog, read on its first instance that can (bootstrap first)."""
    instances = sorted(
        (i for i in bosh.instances() if i.has_vm),
        key=lambda i: (not i.bootstrap, i.group, i.index or 0),
    )
    remote, tried = Remote(bosh), []
    for instance in instances:
        answer = remote.one(instance.slug, "list", "--json")
        if answer.ok:
            catalog = _snapshots(answer)
            print(to_json(catalog) if as_json else render_table(catalog), file=out)
            return 0
        tried.append(f"{instance.label}: {answer.error}")
    raise OperatorError(
        f"no instance of {bosh.deployment} could read the catalog "
        f"({'; '.join(tried) or 'no instance has a VM'}); is the snapshotter job colocated?"
    )


def take(bosh: Bosh, out: TextIO, selector: str | None, note: str, as_json: bool) -> int:
    """``bin/snapshots take`` on every selected instance that has the snapshotter (each
    its own application-consistent snapshot); the ids taken, and every failure named."""
    remote = Remote(bosh)
    args = ["--json", *(["--note", note] if note else [])]
    if selector:
        answers = remote.each(selector, "take", *args)
    else:
        answers = remote.everywhere(bosh.instances(), "take", *args)
    taken = [s for a in answers.values() if a.ok for s in _snapshots(a)]
    failed = [f"{slug}: {a.error}" for slug, a in sorted(answers.items()) if not (a.ok or a.absent)]
    if taken:
        print(to_json(taken) if as_json else render_table(taken), file=out)
        if not as_json:
            print(f"taken: {' '.join(s.id for s in taken)}", file=out)
    if failed and taken:
        raise PartlyDone("some instances took no snapshot: " + "; ".join(failed))
    if failed or not taken:
        said = (
            "; ".join(failed) or f"no instance of {selector or bosh.deployment} has the snapshotter"
        )
        raise OperatorError(f"no snapshot taken: {said}")
    return 0


def take_set(bosh: Bosh, out: TextIO, note: str) -> int:
    """One consistent set across the deployment, run on its coordinator (the bootstrap
    instance of the snapshotter link), which freezes every member under one lease."""
    remote = Remote(bosh)
    statuses = remote.everywhere(bosh.instances(), "status")
    coordinator = next(
        (
            slug
            for slug, a in sorted(statuses.items())
            if a.ok and isinstance(a.value, dict) and _here(a.value.get("coordinator"))
        ),
        None,
    )
    if coordinator is None:
        raise OperatorError(f"no instance of {bosh.deployment} coordinates snapshot sets")
    outcome = remote.call(coordinator, "take-set", "--note", note)
    members = outcome.get("members")
    for m in members if isinstance(members, list) else []:
        if isinstance(m, dict):
            errors = "; ".join(m.get("errors") or [])
            print(
                f"{m.get('instance')} ({m.get('id')}): {m.get('snapshot_id') or 'none'} {errors}",
                file=out,
            )
    state, set_id = outcome.get("state"), outcome.get("set_id")
    if state != "complete":
        raise OperatorError(f"set {set_id} is {state}: {outcome.get('reason')}")
    print(f"set {set_id} complete (coordinated by {coordinator})", file=out)
    return 0


def _here(coordinator: object) -> bool:
    return isinstance(coordinator, dict) and bool(coordinator.get("here"))


def check_selector(selector: str | None, as_set: bool) -> None:
    if as_set and selector:
        raise UsageError("take-snapshot --set snapshots every member at once: give no GROUP[/ID]")
