"""Metric names: one constant each, and a name nobody registered fails instead of vanishing."""

from __future__ import annotations

import re

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


def test_the_release_names_no_metric_outside_the_table() -> None:
    spelled = {
        name
        for path in (REPO / "src" / "disk_snapshots").rglob("*.py")
        for name in re.findall(r"\bdisk_snapshots_[a-z_]+\b", path.read_text())
    }
    assert spelled, "the scan found no metric names at all"
    assert spelled <= set(m.HELP), sorted(spelled - set(m.HELP))
