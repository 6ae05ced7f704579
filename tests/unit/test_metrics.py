"""Metric names: one constant each, and a name nobody registered fails instead of vanishing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from disk_snapshots import metrics as m
from disk_snapshots.metrics import Metrics
from support.release import REPO


def test_an_unknown_metric_name_raises() -> None:
    metrics = Metrics()
    with pytest.raises(KeyError, match="disk_snapshots_taken_totl"):
        metrics.inc("disk_snapshots_taken_totl", trigger="manual")
    with pytest.raises(KeyError):
        metrics.set("disk_snapshots_last_sucess_timestamp_seconds", 1.0)
    assert metrics.render() == "\n"


def test_a_recorded_snapshot_renders_with_its_labels() -> None:
    metrics = Metrics(labels={"deployment": "redis"})
    m.record_snapshot(metrics, started=0.0, frozen_seconds=0.25, schedule="hourly")
    text = metrics.render()
    assert 'disk_snapshots_last_freeze_seconds{deployment="redis",schedule="hourly"} 0.25' in text
    assert f"# TYPE {m.LAST_SUCCESS} gauge" in text
    assert metrics.get(m.LAST_DURATION, schedule="hourly") is not None


def test_the_daemons_gauges_are_read_when_rendered(tmp_path: Path) -> None:
    metrics = Metrics(labels={"deployment": "redis"}, gauges=m.vm_gauges(tmp_path))
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.render().splitlines()
        if not line.startswith("#")
    }
    assert values[m.RESIDENT] > 1024 * 1024  # a Python process holds megabytes
    assert values[m.CPU] > 0
    assert values[m.DISK_FREE] > 0
    gone = Metrics(gauges=m.vm_gauges(tmp_path / "unmounted"))
    assert gone.render() == "\n"  # a disk that is not there: no gauges, no failure


def test_the_release_names_no_metric_outside_the_table() -> None:
    spelled = {
        name
        for path in (REPO / "src" / "disk_snapshots").rglob("*.py")
        for name in re.findall(r"\bdisk_snapshots_[a-z_]+\b", path.read_text())
    }
    assert spelled, "the scan found no metric names at all"
    assert spelled <= set(m.HELP), sorted(spelled - set(m.HELP))
