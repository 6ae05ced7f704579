"""Prometheus text-format metrics of the snapshotter (DESIGN §7).

Kept in memory by the daemon, written to a file for node_exporter's textfile collector
after every change, and served at /metrics by the agent API.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

HELP = {
    "disk_snapshots_last_success_timestamp_seconds": (
        "gauge",
        "Unix time of the last successful snapshot, per schedule or trigger.",
    ),
    "disk_snapshots_last_duration_seconds": (
        "gauge",
        "Seconds the last snapshot took from flush to thaw, per schedule or trigger.",
    ),
    "disk_snapshots_last_freeze_seconds": (
        "gauge",
        "Seconds the filesystem was frozen during the last snapshot.",
    ),
    "disk_snapshots_failures_total": ("counter", "Snapshots that failed, per schedule or trigger."),
    "disk_snapshots_taken_total": ("counter", "Snapshots taken, per trigger."),
    "disk_snapshots_skipped_runs_total": (
        "counter",
        "Scheduled runs skipped because the previous run was still going.",
    ),
    "disk_snapshots_retention_deleted_total": ("counter", "Snapshots deleted by retention."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Metrics:
    labels: dict[str, str] = field(default_factory=dict)  # deployment, instance...
    textfile: Path | None = None
    _values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = value
        self._write()

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount
        self._write()

    def get(self, name: str, **labels: str) -> float | None:
        return self._values.get((name, tuple(sorted(labels.items()))))

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            items = sorted(self._values.items())
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

    def _write(self) -> None:
        if self.textfile is None:
            return
        tmp = self.textfile.with_name(f".{self.textfile.name}.{os.getpid()}")
        tmp.write_text(self.render())
        tmp.replace(self.textfile)
