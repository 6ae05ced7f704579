"""What drain is for, from what the BOSH agent passes it (docs/bosh-contracts.md, drain).

``$1`` is ``job_changed``/``job_new`` for an update on the same VM, ``job_shutdown``
for a stop, VM replacement, disk change or deletion, and ``job_check_status`` when
the agent re-invokes drain after a negative answer. ``BOSH_JOB_NEXT_STATE`` holds
only ``{"persistent_disk": <MiB>}``: 0 means this instance's data is going away.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from disk_snapshots.errors import UsageError
from disk_snapshots.triggers import EVENT_TRIGGERS

UPDATE = ("job_changed", "job_new")
SHUTDOWN = "job_shutdown"
STATUS = "job_check_status"


class DrainArgumentError(UsageError):
    """The agent passed something this release does not know how to read."""


@dataclass(frozen=True)
class DrainDecision:
    event: str  # deploy | stop | delete | disk-change | status
    trigger: str | None  # the snapshot trigger, None when no snapshot is due
    reason: str


def persistent_disk_of(state_json: str | None, variable: str) -> int | None:
    """``persistent_disk`` from BOSH_JOB_STATE / BOSH_JOB_NEXT_STATE; None when unset."""
    if state_json is None or not state_json.strip():
        return None
    try:
        state = json.loads(state_json)
    except json.JSONDecodeError as err:
        raise DrainArgumentError(f"{variable} is not JSON ({err}): {state_json[:200]!r}") from None
    if not isinstance(state, dict):
        raise DrainArgumentError(f"{variable} is not a JSON object: {state_json[:200]!r}")
    size = state.get("persistent_disk", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise DrainArgumentError(f"{variable}.persistent_disk is not a size in MiB: {size!r}")
    return size


def decide(
    args: list[str],
    job_state: str | None,
    next_state: str | None,
    snapshot_on: Collection[str],
) -> DrainDecision:
    """What this drain invocation is for, and whether it takes a snapshot."""
    if not args:
        raise DrainArgumentError(
            "drain needs the agent's arguments: job_changed|job_new|job_shutdown|job_check_status"
        )
    change = args[0]
    if change == STATUS:
        return DrainDecision("status", None, "re-invoked by the agent to check status")
    current = persistent_disk_of(job_state, "BOSH_JOB_STATE")
    following = persistent_disk_of(next_state, "BOSH_JOB_NEXT_STATE")
    if change in UPDATE:
        event, reason = "deploy", "the instance is updated in place (deploy or restart)"
    elif change == SHUTDOWN:
        if following == 0:
            event, reason = (
                "delete",
                "the next state has no persistent disk: the instance goes away",
            )
        elif following is not None and current is not None and following != current:
            event = "disk-change"
            reason = f"the persistent disk changes from {current} MiB to {following} MiB"
        else:
            # Without BOSH_JOB_NEXT_STATE a deletion cannot be told from a stop; a snapshot
            # is what a deletion would need, so a stop snapshot is the safe reading.
            event, reason = "stop", "the instance stops (stop, recreate or VM replacement)"
    else:
        raise DrainArgumentError(
            f"unknown drain argument {change!r}; expected job_changed, job_new, job_shutdown "
            "or job_check_status"
        )
    if event not in snapshot_on:
        return DrainDecision(event, None, f"{reason}; drain.snapshot_on does not include {event}")
    return DrainDecision(event, EVENT_TRIGGERS[event], reason)
