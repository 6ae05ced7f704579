"""Prometheus text-format metrics of the snapshotter daemon.

Kept in memory by the daemon, written to a file for node_exporter's textfile collector
after every change, and served at /metrics by the agent API. Every metric is named by
one of the constants below; setting any other name is a bug and raises, so a misspelt
name fails a test instead of silently vanishing from the output.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import psutil

from disk_snapshots.vm.usage import own_usage
from disk_snapshots.vm.usage import space

LAST_SUCCESS = "disk_snapshots_last_success_timestamp_seconds"
LAST_DURATION = "disk_snapshots_last_duration_seconds"
LAST_FREEZE = "disk_snapshots_last_freeze_seconds"
FAILURES = "disk_snapshots_failures_total"
TAKEN = "disk_snapshots_taken_total"
SKIPPED_RUNS = "disk_snapshots_skipped_runs_total"
RETENTION_DELETED = "disk_snapshots_retention_deleted_total"
RESIDENT = "disk_snapshots_process_resident_memory_bytes"
CPU = "disk_snapshots_process_cpu_seconds_total"
DISK_FREE = "disk_snapshots_disk_free_bytes"
BACKUP_NEWEST = "disk_snapshots_backup_newest_timestamp_seconds"
BACKUP_DURATION = "disk_snapshots_backup_last_duration_seconds"
BACKUPS_COMPLETED = "disk_snapshots_backups_completed_total"
BACKUP_FAILURES = "disk_snapshots_backup_failures_total"
BACKUP_RETENTION_DELETED = "disk_snapshots_backup_retention_deleted_total"

HELP = {
    LAST_SUCCESS: ("gauge", "Unix time of the last successful snapshot, per schedule or trigger."),
    LAST_DURATION: (
        "gauge",
        "Seconds the last snapshot took from flush to thaw, per schedule or trigger.",
    ),
    LAST_FREEZE: ("gauge", "Seconds the filesystem was frozen during the last snapshot."),
    FAILURES: ("counter", "Snapshots that failed, per schedule or trigger."),
    TAKEN: ("counter", "Snapshots taken, per trigger."),
    SKIPPED_RUNS: ("counter", "Scheduled runs skipped because the previous run was still going."),
    RETENTION_DELETED: ("counter", "Snapshots deleted by retention."),
    RESIDENT: ("gauge", "Resident memory of the snapshotter daemon."),
    CPU: ("counter", "CPU time (user and system) the snapshotter daemon used."),
    DISK_FREE: ("gauge", "Free bytes on the persistent disk (/var/vcap/store)."),
    BACKUP_NEWEST: (
        "gauge",
        "Unix time of the point in time the newest completed backup of this instance holds "
        "(its source snapshot's creation).",
    ),
    BACKUP_DURATION: ("gauge", "Seconds the last backup took from its start to completed."),
    BACKUPS_COMPLETED: ("counter", "Backups the daemon saw through to completed."),
    BACKUP_FAILURES: (
        "counter",
        "Backups that failed, per reason: failed (the copy or the provider failed), "
        "deadline (not completed within backups.deadline), no-source (no snapshot to copy).",
    ),
    BACKUP_RETENTION_DELETED: ("counter", "Backups deleted by backups.retention."),
}
# Read when the metrics are rendered, not recorded: what the daemon and its disk use now.
Gauges = Callable[[], dict[str, float]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _known(name: str) -> str:
    if name not in HELP:
        raise KeyError(f"metric {name!r} is not one of {', '.join(HELP)}")
    return name


@dataclass
class Metrics:
    labels: dict[str, str] = field(default_factory=dict)  # deployment, instance...
    textfile: Path | None = None
    gauges: Gauges | None = None
    _values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(_known(name), tuple(sorted(labels.items())))] = value
        self._write()

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (_known(name), tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount
        self._write()

    def get(self, name: str, **labels: str) -> float | None:
        return self._values.get((_known(name), tuple(sorted(labels.items()))))

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            items = sorted(self._values.items())
        items += [((_known(name), ()), value) for name, value in self._read_gauges().items()]
        for name, (kind, text) in HELP.items():
            rows = [(labels, v) for (n, labels), v in items if n == name]
            if not rows:
                continue
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in rows:
                merged = {**self.labels, **dict(labels)}
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(merged.items()))
                lines.append(
                    f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}"
                )
        return "\n".join(lines) + "\n"

    def refresh(self) -> None:
        """Write the textfile again, so node_exporter sees the gauges as they are now."""
        self._write()

    def _read_gauges(self) -> dict[str, float]:
        if self.gauges is None:
            return {}
        try:
            return self.gauges()
        except (OSError, psutil.Error):
            return {}  # a disk being unmounted: the other metrics still render

    def _write(self) -> None:
        if self.textfile is None:
            return
        tmp = self.textfile.with_name(f".{self.textfile.name}.{os.getpid()}")
        tmp.write_text(self.render())
        tmp.replace(self.textfile)


def record_snapshot(
    metrics: Metrics, *, started: float, frozen_seconds: float, **labels: str
) -> None:
    """A successful snapshot (or set): when, how long since ``started`` (time.monotonic()),
    how long frozen. Labelled ``schedule=`` by the scheduler, ``trigger=`` by the API."""
    metrics.set(LAST_SUCCESS, time.time(), **labels)
    metrics.set(LAST_DURATION, time.monotonic() - started, **labels)
    metrics.set(LAST_FREEZE, frozen_seconds, **labels)


def vm_gauges(mount: Path) -> Gauges:
    """The daemon's own memory and CPU, and the persistent disk's free space."""

    def read() -> dict[str, float]:
        resident, cpu = own_usage()
        return {RESIDENT: resident, CPU: cpu, DISK_FREE: space(mount)[2]}

    return read
