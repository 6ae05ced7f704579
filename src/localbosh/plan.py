"""Pure decisions of the local Director and agent: no processes, mounts or files.

Everything here is a function of its arguments, so the rules that decide what an
operation does to an instance (and which arguments its drain sees) are unit-tested
apart from the code that carries them out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Literal

# Hooks and errands get the agent's own environment with PATH replaced by this one
# (bosh-agent agent/script/cmd/build_command_unix.go, agent/script/pathenv; bosh-utils
# system/exec_cmd_runner.go mergeEnv).
HOOK_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# The Director's thread pool (director.max_threads, default 32): delete-deployment,
# post-deploy and errands run on at most this many instances at once.
MAX_THREADS = 32

SHUTDOWN_ARGS = ("job_shutdown", "hash_unchanged")
CHECK_STATUS_ARGS = ("job_check_status", "hash_unchanged")
# `bosh restart` keeps the VM and the spec: an update drain with nothing changed.
RESTART_ARGS = ("job_changed", "hash_unchanged")

_SIGNED_INT = re.compile(r"^-?\d+$")


class DrainOutputError(Exception):
    """drain printed something other than one signed integer."""


@dataclass(frozen=True)
class AppliedSpec:
    """What an agent has applied: the part of the apply spec that drain compares."""

    jobs: tuple[str, ...]
    configuration_hash: str | None
    packages: Mapping[str, str]  # name -> fingerprint
    persistent_disk: int

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": list(self.jobs),
            "configuration_hash": self.configuration_hash,
            "packages": dict(self.packages),
            "persistent_disk": self.persistent_disk,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> AppliedSpec | None:
        if data is None:
            return None
        return cls(
            jobs=tuple(data["jobs"]),
            configuration_hash=data.get("configuration_hash"),
            packages=dict(data.get("packages", {})),
            persistent_disk=int(data.get("persistent_disk", 0)),
        )


def update_drain_args(old: AppliedSpec | None, new: AppliedSpec) -> list[str]:
    """`$1 $2 [pkgs...]` of an update drain (bosh-agent drain/script_params.go)."""
    job_change = "job_new" if old is None or not old.jobs else "job_changed"
    if old is None or old.configuration_hash is None:
        hash_change = "hash_new"
    elif old.configuration_hash != new.configuration_hash:
        hash_change = "hash_changed"
    else:
        hash_change = "hash_unchanged"
    old_pkgs = dict(old.packages) if old else {}
    changed = sorted(n for n, fp in new.packages.items() if old_pkgs.get(n) != fp)
    return [job_change, hash_change, *changed]


def job_state_env(persistent_disk: int) -> str:
    """BOSH_JOB_STATE / BOSH_JOB_NEXT_STATE: only the disk size (MiB), as Go's json.Marshal
    writes it, without spaces (bosh-agent agent/script/drain/presented_job_state.go)."""
    return json.dumps({"persistent_disk": persistent_disk}, separators=(",", ":"))


def parse_drain_output(stdout: str) -> int:
    """The agent's parse of drain stdout: one signed integer, surrounding space allowed."""
    text = stdout.strip()
    if not _SIGNED_INT.match(text):
        raise DrainOutputError(f"Script did not return a signed integer: {stdout!r}")
    return int(text)


Intent = Literal["keep_vm", "delete_vm", "delete_instance", "delete_deployment"]


def pre_stop_env(intent: Intent) -> dict[str, str]:
    """pre-stop's environment for why the instance stops (bosh-director stopper.rb)."""
    vm, instance, deployment = {
        "keep_vm": ("keep", "keep", "keep"),
        "delete_vm": ("delete", "keep", "keep"),
        "delete_instance": ("delete", "delete", "keep"),
        "delete_deployment": ("delete", "delete", "delete"),
    }[intent]
    return {
        "BOSH_VM_NEXT_STATE": vm,
        "BOSH_INSTANCE_NEXT_STATE": instance,
        "BOSH_DEPLOYMENT_NEXT_STATE": deployment,
    }


def parallel_failure_message(script: str, failed: Sequence[str], succeeded: Sequence[str]) -> str:
    """The agent's summary when colocated scripts run in parallel (parallel_script.go)."""
    total = len(failed) + len(succeeded)
    msg = f"{len(failed)} of {total} {script} scripts failed. Failed Jobs: {', '.join(failed)}."
    if succeeded:
        msg += f" Successful Jobs: {', '.join(succeeded)}."
    return msg


State = Literal["started", "stopped", "detached"]
# What an operation asks of one instance: a state, or restart/recreate, which end started
# (bosh-director deployment_plan/instance.rb VIRTUAL_STATE_TO_STATE_MAPPING).
Virtual = Literal["started", "stopped", "detached", "restart", "recreate"]


_STATE_OF: dict[Virtual, State] = {
    "started": "started",
    "stopped": "stopped",
    "detached": "detached",
    "restart": "started",
    "recreate": "started",
}


def state_of(virtual: Virtual) -> State:
    return _STATE_OF[virtual]


@dataclass(frozen=True)
class Facts:
    """What the Director knows about an instance before it updates it."""

    state: State  # the Director's record (the instance model's state)
    has_vm: bool
    job_state: str | None  # the agent's get_state (running, failing, stopped...), None: no VM
    update_completed: bool  # false after an update that failed midway
    old: AppliedSpec | None  # what the agent has applied
    new: AppliedSpec  # what the manifest renders to now
    disk_size: int  # MiB of the disk the instance has (0: none)


def changes(facts: Facts, virtual: Virtual, recreate: bool = False) -> frozenset[str]:
    """The instance plan's changes that the local deployment can have
    (bosh-director deployment_plan/instance_plan.rb `changes`)."""
    found = set()
    if not facts.update_completed:
        found.add("dirty")
    if virtual == "restart":
        found.add("restart")
    if virtual == "recreate" or recreate:
        found.add("recreate")
    if facts.disk_size != facts.new.persistent_disk:
        found.add("persistent_disk")
    old = facts.old
    if old is None or old.configuration_hash != facts.new.configuration_hash:
        found.add("configuration")
    if old is None or old.jobs != facts.new.jobs:
        found.add("job")
    if old is None or dict(old.packages) != dict(facts.new.packages):
        found.add("packages")
    desired = state_of(virtual)
    running = facts.job_state == "running"
    # instance_plan.rb state_changed?
    if (
        (desired == "detached" and facts.state != "detached")
        or (desired == "stopped" and running)
        or (desired == "started" and not running)
    ):
        found.add("state")
    return frozenset(found)


Drain = Literal["update", "shutdown"]


@dataclass(frozen=True)
class Procedure:
    """The steps of one instance update, in the Director's order
    (bosh-director instance_updater/update_procedure.rb `perform`)."""

    changes: frozenset[str]
    final_state: State
    stop: Drain | None = None  # Stopper.stop with this kind of drain
    intent: Intent = "keep_vm"  # pre-stop's intent for that stop
    detach: bool = False  # `stop --hard`: unmount (fatal if busy), detach, delete the VM
    create_vm: bool = False  # a missing VM is created (the update stage's setup)
    recreate_vm: bool = False  # unmount (fatal if busy), delete the VM, create a new one
    change_disk: bool = False  # the disk created, migrated to the desired size, or removed
    apply: bool = False
    start: bool = False  # Starter.start: pre-start, monit start, watch, post-start

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def procedure(facts: Facts, virtual: Virtual, recreate: bool = False) -> Procedure:
    """What updating one instance does, from what the Director knows and what is asked."""
    found = changes(facts, virtual, recreate)
    desired = state_of(virtual)
    if not found:
        return Procedure(found, facts.state)
    needs_recreate = "recreate" in found
    disk_changed = "persistent_disk" in found
    stop: Drain | None = None
    intent: Intent = "keep_vm"
    if facts.state != "detached":
        # handle_not_detached_instance_plan: an instance the Director has stopped is not
        # stopped again, whatever its agent says (Stopper.stop needs a VM).
        if facts.state != "stopped" and facts.has_vm:
            shutdown = desired in ("stopped", "detached") or needs_recreate or disk_changed
            stop = "shutdown" if shutdown else "update"
            intent = "delete_vm" if needs_recreate or desired == "detached" else "keep_vm"
        if desired == "stopped":
            # `bosh stop`, or a deploy to a soft-stopped instance: nothing is applied,
            # converged or migrated until it starts again.
            return Procedure(found, "stopped", stop, intent)
        if desired == "detached":
            return Procedure(found, "detached", stop, intent, detach=facts.has_vm)
    if desired == "detached":  # already detached: stays so, nothing on any VM
        return Procedure(found, "detached")
    has_vm = facts.has_vm
    return Procedure(
        found,
        desired,
        stop,
        intent,
        create_vm=not has_vm,
        recreate_vm=needs_recreate and has_vm,
        change_disk=disk_changed,
        apply=True,
        start=desired == "started",
    )


@dataclass(frozen=True)
class Placement:
    group: str
    index: int


def scale(
    existing: Iterable[Placement], desired: Mapping[str, int]
) -> tuple[list[Placement], list[Placement], list[Placement]]:
    """(keep, create, delete) for the desired instance counts per group.

    Scale-in removes the highest indexes, and groups no longer in the manifest
    go entirely, as the Director does. Output is sorted by group then index.
    """
    have = sorted(existing, key=lambda p: (p.group, p.index))
    keep = [p for p in have if p.index < desired.get(p.group, 0)]
    delete = [p for p in have if p.index >= desired.get(p.group, 0)]
    taken = {(p.group, p.index) for p in keep}
    create = [
        Placement(group, i)
        for group, count in desired.items()
        for i in range(count)
        if (group, i) not in taken
    ]
    return keep, create, delete


def update_order(groups: Sequence[str], placements: Iterable[Placement]) -> list[Placement]:
    """Instance groups in manifest order; inside a group the canary (lowest index) first.

    With canaries 1 and max_in_flight 1 this is also the serial order of the rest.
    """
    rank = {g: i for i, g in enumerate(groups)}
    return sorted(placements, key=lambda p: (rank.get(p.group, len(rank)), p.group, p.index))


class SelectionError(Exception):
    pass


@dataclass(frozen=True)
class Ident:
    group: str
    index: int
    id: str


def select(instances: Sequence[Ident], selector: str | None) -> list[Ident]:
    """Instances matching `GROUP`, `GROUP/INDEX`, `GROUP/UUID`, `GROUP/first` or all (None)."""
    if selector is None:
        return list(instances)
    group, _, ident = selector.partition("/")
    in_group = [i for i in instances if i.group == group]
    if not in_group:
        raise SelectionError(f"Instance group '{group}' doesn't exist or has no instances")
    if not ident:
        return in_group
    if ident == "first":
        return [min(in_group, key=lambda i: i.id)]
    matched = [i for i in in_group if i.id == ident or str(i.index) == ident]
    if not matched:
        raise SelectionError(f"No instances match selection criteria: '{selector}'")
    return matched


def _matches(selector: str, inst: Ident, instances: Sequence[Ident]) -> bool:
    group, _, ident = selector.partition("/")
    if inst.group != group:
        return False
    if not ident:
        return True
    if ident == "first":
        return inst.id == min(i.id for i in instances if i.group == group)
    return ident in (inst.id, str(inst.index))


@dataclass(frozen=True)
class ErrandCandidate:
    ident: Ident
    state: State  # the Director's record
    has_vm: bool


@dataclass(frozen=True)
class ErrandTargets:
    run: tuple[Ident, ...]
    skipped: tuple[Ident, ...]  # without a VM: skipped with a warning


def errand_targets(
    errand: str,
    instances: Sequence[ErrandCandidate],
    with_job: Collection[str],
    selectors: Sequence[str],
) -> ErrandTargets:
    """Where a colocated errand runs (bosh-director errand/errand_provider.rb, instance_matcher.rb).

    Without selectors every instance of the deployment is checked for "stopped", also in
    groups without the errand; with them, only the selected ones. Instances of the errand's
    groups without a VM (hard-stopped) are skipped, not failed.
    """
    idents = [c.ident for c in instances]
    if selectors:
        chosen = [c for c in instances if any(_matches(s, c.ident, idents) for s in selectors)]
        unmatched = [s for s in selectors if not any(_matches(s, i, idents) for i in idents)]
    else:
        chosen, unmatched = list(instances), []
    stopped = [c for c in chosen if c.state == "stopped"]
    if stopped:
        names = ",".join(f"'{c.ident.group}/{c.ident.id}'" for c in stopped)
        raise SelectionError(
            f"Instance(s) {names} is stopped, unable to run errand. Maybe start vm?"
        )
    if not with_job:
        raise SelectionError(f"Errand '{errand}' doesn't exist")
    targets = [c for c in chosen if c.ident.group in with_job]
    if unmatched:
        raise SelectionError(f"No instances match selection criteria: [{', '.join(unmatched)}]")
    return ErrandTargets(
        tuple(c.ident for c in targets if c.has_vm),
        tuple(c.ident for c in targets if not c.has_vm),
    )
