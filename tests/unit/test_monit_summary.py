"""`monit summary` as the snapshotter's agent API reads it, from both monits it meets.

The outputs in tests/fixtures/monit/ are real and byte-exact: the stemcell's monit 5.2.5
(built by scripts/bootstrap from the stemcell's source) and Debian's 5.33, each running
the same three processes (redis running, then killed behind monit's back; snapshotter
unmonitored, then being unmonitored; broken, whose start program fails), captured with
`monit summary` on a pipe, as MonitCli runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from disk_snapshots.vm.monit import parse_summary

CAPTURED = Path(__file__).resolve().parents[1] / "fixtures" / "monit"


def summary(name: str) -> dict[str, str]:
    return parse_summary((CAPTURED / f"summary-{name}.txt").read_text())


@pytest.mark.parametrize("version", ["5.2.5", "5.33"])
def test_running_and_unmonitored_read_alike(version: str) -> None:
    states = summary(version)
    assert states["redis"] == "running"
    assert states["snapshotter"] == "not monitored"
    # Only processes: the system entry is not a service job.
    assert set(states) == {"redis", "snapshotter", "broken"}


@pytest.mark.parametrize("version", ["5.2.5", "5.33"])
def test_a_process_gone_behind_monits_back(version: str) -> None:
    assert summary(f"{version}-gone")["redis"] == "does not exist"


@pytest.mark.parametrize("version", ["5.2.5", "5.33"])
def test_a_pending_action_is_neither_running_nor_stopped(version: str) -> None:
    # The agent API waits for exactly "running" or "not monitored".
    assert summary(f"{version}-pending")["snapshotter"] not in ("running", "not monitored")
    assert summary(f"{version}-pending")["redis"] == "running"
