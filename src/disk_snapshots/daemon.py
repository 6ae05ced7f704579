"""The snapshotter daemon: runs the schedules and serves the agent API, under monit.

It runs as root because snapshots need fsfreeze; monit starts it with ``daemon start``
(which returns once the daemon runs and its pidfile names it) and stops it with
``daemon stop`` (SIGTERM: an in-flight snapshot completes or is thawed and recorded as
failed, then the process exits).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from types import FrameType

from disk_snapshots.agent_client import TlsSetupError
from disk_snapshots.api import Agent
from disk_snapshots.api import RunningApi
from disk_snapshots.api import serve
from disk_snapshots.config import ConfigError
from disk_snapshots.config import Schedule
from disk_snapshots.hooks import SNAPSHOT_ERRORS
from disk_snapshots.metrics import Metrics
from disk_snapshots.schedule import catch_up
from disk_snapshots.schedule import next_run
from disk_snapshots.sets import run_set_schedule
from disk_snapshots.snapshotter import VM_PATHS
from disk_snapshots.snapshotter import Paths
from disk_snapshots.snapshotter import Snapshotter

log = logging.getLogger("disk_snapshots.daemon")

STOP_SECONDS = 60.0
START_SECONDS = 10.0
MAX_SLEEP = 30.0


def pidfile(paths: Paths) -> Path:
    return paths.root / "var/vcap/sys/run/snapshotter/snapshotter.pid"


@dataclass
class Scheduler:
    snapshotter: Snapshotter
    metrics: Metrics
    state_file: Path
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    last_runs: dict[str, datetime] = field(default_factory=dict)

    def load_state(self) -> None:
        try:
            raw = json.loads(self.state_file.read_text())
            self.last_runs = {k: datetime.fromisoformat(v) for k, v in raw.items()}
        except (OSError, ValueError, AttributeError):
            self.last_runs = {}

    def save_state(self) -> None:
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({k: v.isoformat() for k, v in self.last_runs.items()}))
        tmp.replace(self.state_file)

    def run(self, stop: threading.Event) -> None:
        schedules = self.snapshotter.config.schedules
        instance = self.snapshotter.config.spec.id
        self.load_state()
        now = self.clock()
        upcoming: dict[str, datetime] = {}
        for schedule in schedules:
            owed = catch_up(schedule, instance, self.last_runs.get(schedule.name), now)
            upcoming[schedule.name] = owed.at if owed else next_run(schedule, instance, now)
            if owed:
                log.info("schedule %s: catching up the run due at %s", schedule.name, owed.at)
            elif schedule.name not in self.last_runs:
                # A first start owes nothing; remember it so later downtime is noticed.
                self.last_runs[schedule.name] = now
        self.save_state()
        by_name = {s.name: s for s in schedules}
        while not stop.is_set() and upcoming:
            name, at = min(upcoming.items(), key=lambda item: item[1])
            wait = (at - self.clock()).total_seconds()
            if wait > 0:
                stop.wait(min(wait, MAX_SLEEP))
                continue
            self.run_once(by_name[name])
            self.last_runs[name] = at
            self.save_state()
            after = self.clock()
            following = next_run(by_name[name], instance, at)
            skipped = 0
            while following <= after:  # runs that fell due while this one was going
                skipped += 1
                following = next_run(by_name[name], instance, following)
            if skipped:
                log.warning(
                    "schedule %s: skipped %d run(s): the previous run was still going",
                    name,
                    skipped,
                )
                self.metrics.inc("disk_snapshots_skipped_runs_total", skipped, schedule=name)
            upcoming[name] = following

    def run_once(self, schedule: Schedule) -> bool:
        trigger = f"schedule:{schedule.name}"
        if schedule.scope == "set":
            # Only the coordinator acts; the others take part through their agent API.
            return run_set_schedule(self.snapshotter, schedule, self.metrics)
        started = time.monotonic()
        try:
            taken = self.snapshotter.take(trigger)
            plan = self.snapshotter.prune()
        except SNAPSHOT_ERRORS as err:
            log.error("schedule %s: snapshot failed: %s", schedule.name, err)
            self.metrics.inc("disk_snapshots_failures_total", schedule=schedule.name)
            return False
        for warning in taken.warnings:
            log.warning("schedule %s: %s", schedule.name, warning)
        self.metrics.set(
            "disk_snapshots_last_success_timestamp_seconds", time.time(), schedule=schedule.name
        )
        self.metrics.set(
            "disk_snapshots_last_duration_seconds",
            time.monotonic() - started,
            schedule=schedule.name,
        )
        self.metrics.set(
            "disk_snapshots_last_freeze_seconds", taken.frozen_seconds, schedule=schedule.name
        )
        self.metrics.inc("disk_snapshots_taken_total", trigger=trigger)
        if plan.delete:
            self.metrics.inc("disk_snapshots_retention_deleted_total", len(plan.delete))
        log.info(
            "schedule %s: snapshot %s (%s, %s); retention deleted %d",
            schedule.name,
            taken.snapshot.id,
            taken.snapshot.annotations.consistency,
            taken.snapshot.annotations.role,
            len(plan.delete),
        )
        return True


def run(paths: Paths = VM_PATHS) -> int:
    """The daemon in the foreground until SIGTERM: the scheduler, and the agent API."""
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current run, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        snapshotter = Snapshotter.load(paths)
    except ConfigError as err:
        log.error("%s", err.report("invalid snapshotter properties"))
        return 1
    except SNAPSHOT_ERRORS as err:
        log.error("cannot start: %s", err)
        return 1
    spec = snapshotter.config.spec
    paths.data.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(
        labels={"deployment": spec.deployment, "instance": f"{spec.name}/{spec.index}"},
        textfile=paths.data / "metrics.prom",
    )
    log.info(
        "snapshotter daemon for %s/%s: %d schedule(s)",
        spec.name,
        spec.index,
        len(snapshotter.config.schedules),
    )
    agent = Agent(snapshotter, metrics)
    for snapshot_id in agent.sets.recover():
        log.warning(
            "snapshot %s: its set was in flight when the daemon stopped; incomplete", snapshot_id
        )
    api = _start_api(agent)
    try:
        Scheduler(snapshotter, metrics, paths.data / "schedules.json").run(stop)
        if not snapshotter.config.schedules:
            # The scheduler returns at once without schedules; exiting would make monit
            # restart the daemon over and over (and the API may still be serving).
            stop.wait()
    finally:
        if api is not None:
            api.stop()
        else:
            agent.close()
    log.info("stopped")
    return 0


def _start_api(agent: Agent) -> RunningApi | None:
    """The agent API, or None (logged) when it cannot be served; the scheduler runs anyway."""
    config = agent.snapshotter.config
    if not config.api.tls.enabled:
        log.warning(
            "agent API not served: api.tls is not set, and the API never runs without mutual "
            "TLS (add manifests/operations/agent-api-tls.yml); snapshot sets cannot include "
            "this instance"
        )
        return None
    address, port = config.spec.address, config.api.port
    try:
        api = serve(agent, config.api.tls, address, port)
    except TlsSetupError as err:
        log.error("agent API not served: %s", err)
        return None
    except OSError as err:
        log.error("agent API not served: cannot listen on %s:%d: %s", address, port, err)
        return None
    log.info("agent API on https://%s:%d (mutual TLS)", address, port)
    return api


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def start(paths: Paths = VM_PATHS) -> int:
    """For monit's start program: launch ``daemon run`` detached, record its pid."""
    pid_path = pidfile(paths)
    running = _read_pid(pid_path)
    if running and _alive(running):
        print(f"snapshotter daemon already running (pid {running})")
        return 0
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    with (paths.logs / "snapshotter.log").open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "disk_snapshots", "daemon", "run"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )
    pid_path.write_text(f"{child.pid}\n")
    # A daemon that dies at once (bad config, no disk) must fail monit's start, not flap.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pid_path.unlink(missing_ok=True)
            print(
                f"snapshotter daemon exited at once (code {child.returncode}); "
                f"see {paths.logs / 'snapshotter.log'}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.1)
    print(f"snapshotter daemon started (pid {child.pid})")
    return 0


def stop(paths: Paths = VM_PATHS) -> int:
    """For monit's stop program: SIGTERM, wait for the current run, then SIGKILL."""
    pid_path = pidfile(paths)
    pid = _read_pid(pid_path)
    if pid is None or not _alive(pid):
        pid_path.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        print(
            f"snapshotter daemon (pid {pid}) ignored SIGTERM for {STOP_SECONDS:.0f}s; killing it",
            file=sys.stderr,
        )
        os.kill(pid, signal.SIGKILL)
    pid_path.unlink(missing_ok=True)
    return 0
