"""``bin/snapshots`` on the instances, over ``bosh ssh -c … --results``.

Why ``bosh ssh``: it needs nothing the operator does not already have for ``bosh``
(the Director's SSH setup, its gateway flags, the operator's own rights), and the
catalog and the provider's credentials never leave the VMs. Each step is
``sudo -n /var/vcap/jobs/snapshotter/bin/snapshots ACTION ARGS...`` with every argument
shell-quoted (the remote shell parses the command), and answers with JSON on stdout
(commands/steps.py).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from disk_snapshots.operator import shapes
from disk_snapshots.operator.bosh import Bosh
from disk_snapshots.operator.errors import OperatorError
from disk_snapshots.operator.shapes import Instance

SNAPSHOTS = "/var/vcap/jobs/snapshotter/bin/snapshots"
PARALLEL = 8


class RemoteError(OperatorError):
    """A step failed on an instance; the message names the instance and says why."""


def command(action: str, *args: str) -> str:
    return "sudo -n " + shlex.join([SNAPSHOTS, action, *args])


@dataclass(frozen=True)
class Answer:
    """One instance's answer to one step: its JSON, or why there is none."""

    instance: str  # group/id
    value: object = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def absent(self) -> bool:
        """The instance has no snapshotter job (sudo finds no bin/snapshots)."""
        return SNAPSHOTS in self.error and ("not found" in self.error or "No such" in self.error)

    def mapping(self) -> dict[str, object]:
        if self.error:
            raise RemoteError(f"{self.instance}: {self.error}")
        if not isinstance(self.value, dict):
            raise RemoteError(f"{self.instance}: expected a JSON object, got {self.value!r:.200}")
        return self.value


def _answer(result: shapes.SshResult) -> Answer:
    if not result.ok:
        said = [line for line in result.stderr.strip().splitlines() if line.strip()]
        reason = said[-1] if said else (result.error or f"exit code {result.exit_code}")
        return Answer(result.instance, error=reason.strip())
    try:
        return Answer(result.instance, shapes.last_json(result.stdout))
    except shapes.ShapeError as err:
        return Answer(result.instance, error=str(err))


@dataclass(frozen=True)
class Remote:
    bosh: Bosh

    def each(self, slug: str | None, action: str, *args: str) -> dict[str, Answer]:
        """The step on every instance ``slug`` selects (all without one), by ``group/id``."""
        results = self.bosh.ssh(slug, command(action, *args))
        return {r.instance: _answer(r) for r in results}

    def everywhere(
        self, instances: Sequence[Instance], action: str, *args: str
    ) -> dict[str, Answer]:
        """The step on every instance that has a VM: one ``bosh ssh`` for the whole
        deployment when all have one, else one per instance (a hard-stopped instance has
        no VM to ssh to)."""
        with_vm = [i.slug for i in instances if i.has_vm]
        if len(with_vm) == len(instances):
            return self.each(None, action, *args)
        return self.on_many(with_vm, action, {s: args for s in with_vm})

    def one(self, slug: str, action: str, *args: str) -> Answer:
        answers = self.each(slug, action, *args)
        if len(answers) != 1:
            raise RemoteError(f"{slug}: bosh ssh answered for {len(answers)} instances, not one")
        return next(iter(answers.values()))

    def call(self, slug: str, action: str, *args: str) -> dict[str, object]:
        """One instance's JSON object; RemoteError naming the instance when it failed."""
        return self.one(slug, action, *args).mapping()

    def on_many(
        self,
        slugs: Sequence[str],
        action: str,
        args_of: Mapping[str, Sequence[str]] | None = None,
    ) -> dict[str, Answer]:
        """The step on several instances at once, each with its own arguments."""
        if not slugs:
            return {}
        with ThreadPoolExecutor(max_workers=min(PARALLEL, len(slugs))) as pool:
            futures = {
                s: pool.submit(self.one, s, action, *((args_of or {}).get(s, ()))) for s in slugs
            }
            return {s: f.result() for s, f in futures.items()}
