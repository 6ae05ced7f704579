"""drain's reading of the agent's arguments (docs/bosh-contracts.md, the drain table)."""

from __future__ import annotations

import pytest

from disk_snapshots.drain import DrainArgumentError
from disk_snapshots.drain import decide

ALL = ("deploy", "stop", "delete", "disk-change")
DISK = '{"persistent_disk": 1024}'


@pytest.mark.parametrize(
    ("args", "current", "following", "event", "trigger"),
    [
        (["job_changed", "hash_changed", "python3"], DISK, DISK, "deploy", "pre-deploy"),
        (["job_new", "hash_new"], None, DISK, "deploy", "pre-deploy"),
        (["job_changed", "hash_unchanged"], DISK, DISK, "deploy", "pre-deploy"),  # bosh restart
        (["job_shutdown", "hash_unchanged"], DISK, DISK, "stop", "pre-stop"),  # stop, recreate
        (
            ["job_shutdown", "hash_unchanged"],
            DISK,
            '{"persistent_disk": 2048}',
            "disk-change",
            "pre-disk-change",
        ),
        (
            ["job_shutdown", "hash_unchanged"],
            DISK,
            '{"persistent_disk": 0}',
            "delete",
            "pre-delete",
        ),
        (["job_shutdown", "hash_unchanged"], DISK, None, "stop", "pre-stop"),
        (["job_check_status", "hash_unchanged"], None, None, "status", None),
    ],
)
def test_agent_arguments(
    args: list[str], current: str | None, following: str | None, event: str, trigger: str | None
) -> None:
    decision = decide(args, current, following, ALL)
    assert (decision.event, decision.trigger) == (event, trigger)


def test_snapshot_on_filters() -> None:
    decision = decide(["job_shutdown", "hash_unchanged"], DISK, DISK, ("deploy",))
    assert decision.trigger is None
    assert "drain.snapshot_on does not include stop" in decision.reason


@pytest.mark.parametrize(
    ("args", "following", "message"),
    [
        ([], DISK, "drain needs the agent's arguments"),
        (["job_exploded"], DISK, "unknown drain argument 'job_exploded'"),
        (["job_shutdown"], "{", "BOSH_JOB_NEXT_STATE is not JSON"),
        (
            ["job_shutdown"],
            '{"persistent_disk": "big"}',
            "BOSH_JOB_NEXT_STATE.persistent_disk is not a size",
        ),
    ],
)
def test_bad_arguments_are_named(args: list[str], following: str, message: str) -> None:
    with pytest.raises(DrainArgumentError, match=message):
        decide(args, DISK, following, ALL)
