"""Delay from a schedule's time to the start of its snapshot (issue #5), without jitter.

The daemon's Scheduler runs a schedule firing every second for 20 seconds; each run
records how late it started after the whole second it was due at. Baseline, measured in
the same run: a bare loop that sleeps until each whole second with the same primitive
(threading.Event.wait), i.e. the timer slack no scheduler can beat.

Prints ``bench: <name> <value> <unit> baseline=<v> ratio=<r>``.
"""

from __future__ import annotations

import math
import statistics
import sys
import threading
import time
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from disk_snapshots.config import load_snapshotter_config  # noqa: E402
from disk_snapshots.daemon.scheduler import Scheduler  # noqa: E402
from disk_snapshots.metrics import Metrics  # noqa: E402
from support.configdocs import snapshotter_doc  # noqa: E402

SECONDS = 20


class Recording(Scheduler):
    delays: list[float]

    def run_once(self, schedule: Any) -> bool:
        now = time.time()
        self.delays.append(now - math.floor(now))
        return True


class _Snapshotter:
    def __init__(self) -> None:
        doc = snapshotter_doc()
        doc["properties"]["schedules"] = [{"name": "bench", "cron": "* * * * * *", "jitter": 0}]
        self.config = load_snapshotter_config(doc)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> int:
    state = Path("/tmp") / f"bench-schedule-{time.time_ns()}.json"
    scheduler = Recording(_Snapshotter(), Metrics(), state)  # type: ignore[arg-type]
    scheduler.delays = []
    stop = threading.Event()
    worker = threading.Thread(target=scheduler.run, args=(stop,))
    worker.start()
    time.sleep(SECONDS)
    stop.set()
    worker.join()
    state.unlink(missing_ok=True)

    baseline: list[float] = []
    wake = threading.Event()
    for _ in range(SECONDS):
        now = time.time()
        wake.wait(math.ceil(now) - now)
        woke = time.time()
        baseline.append(woke - math.floor(woke))
    s50, s99 = percentiles(scheduler.delays)
    b50, b99 = percentiles(baseline)
    for name, value, base in (("p50", s50, b50), ("p99", s99, b99)):
        print(
            f"bench: schedule-start-delay-{name} {value * 1000:.3g} ms "
            f"baseline={base * 1000:.3g} ratio={value / base:.3g}",
            flush=True,
        )
    print(f"# {len(scheduler.delays)} scheduled runs at {datetime.now(UTC):%H:%M:%S}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
