"""Pure decisions of the local Director and agent: no processes, mounts or files.

Everything here is a function of its arguments, so the rules that decide what an
operation does to an instance (and which arguments its drain sees) are unit-tested
apart from the code that carries them out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Literal

# The agent overrides only PATH in the environment of hooks and errands
# (bosh-agent agent/script/pathenv).
HOOK_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

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
    """BOSH_JOB_STATE / BOSH_JOB_NEXT_STATE: JSON with only the disk size (MiB)."""
    return json.dumps({"persistent_disk": persistent_disk})


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


Change = Literal["create", "update", "disk-change", "none"]


@dataclass(frozen=True)
class InstanceChange:
    group: str
    index: int
    change: Change
    packages_or_config_changed: bool = False


def instance_change(
    exists: bool,
    old: AppliedSpec | None,
    new: AppliedSpec,
    old_disk: int,
    new_disk: int,
) -> Change:
    """What a deploy does to one instance of the manifest.

    A disk size change makes the Director shut the instance down (needs_shutdown?),
    so it is its own kind; otherwise any difference in jobs, rendered
    configuration or packages is an in-place update.
    """
    if not exists:
        return "create"
    if old_disk != new_disk:
        return "disk-change"
    if old is None:
        return "update"
    if (
        old.jobs != new.jobs
        or old.configuration_hash != new.configuration_hash
        or dict(old.packages) != dict(new.packages)
    ):
        return "update"
    return "none"


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
