"""``daemon start|stop|run``: the snapshotter daemon under monit.

It runs as root because snapshots need fsfreeze; monit starts it with ``daemon start``
(which returns once the daemon runs and its pidfile names it) and stops it with
``daemon stop`` (SIGTERM: an in-flight snapshot completes or is thawed and recorded as
failed, then the process exits). ``daemon run`` is the process itself: the scheduler
(daemon/scheduler.py) in the main thread, the agent API (api/server.py) in its own.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from disk_snapshots.api.server import RunningApi
from disk_snapshots.api.server import serve
from disk_snapshots.api.tls import TlsSetupError
from disk_snapshots.backups.runner import BackupRunner
from disk_snapshots.config import EXIT_INVALID_CONFIG
from disk_snapshots.config import ConfigError
from disk_snapshots.daemon.agent import Agent
from disk_snapshots.daemon.backups import BackupScheduler
from disk_snapshots.daemon.scheduler import MAX_SLEEP
from disk_snapshots.daemon.scheduler import Scheduler
from disk_snapshots.errors import code_of
from disk_snapshots.metrics import Metrics
from disk_snapshots.metrics import vm_gauges
from disk_snapshots.providers.base import LeavesDebris
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import VM_PATHS
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.processes import alive

log = logging.getLogger("disk_snapshots.daemon")

STOP_SECONDS = 60.0


def pidfile(paths: Paths) -> Path:
    return paths.root / "var/vcap/sys/run/snapshotter/snapshotter.pid"


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
        return EXIT_INVALID_CONFIG
    except SNAPSHOT_ERRORS as err:
        log.error("cannot start: %s", err)
        return code_of(err)
    _release_leftovers(snapshotter)
    spec = snapshotter.config.spec
    paths.data.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(
        labels={"deployment": spec.deployment, "instance": f"{spec.name}/{spec.index}"},
        textfile=paths.data / "metrics.prom",
        gauges=vm_gauges(snapshotter.disk.mount),
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
    backups = BackupScheduler(BackupRunner(snapshotter, metrics), paths.data / "backups.json")
    backup_thread = threading.Thread(target=backups.run, args=(stop,), name="backups")
    backup_thread.start()
    try:
        Scheduler(snapshotter, metrics, paths.data / "schedules.json").run(stop)
        if not snapshotter.config.schedules:
            # The scheduler returns at once without schedules; exiting would make monit
            # restart the daemon over and over (and the API may still be serving).
            while not stop.wait(MAX_SLEEP):
                metrics.refresh()
    finally:
        stop.set()
        backup_thread.join()
        if api is not None:
            api.stop()
        else:
            agent.close()
    log.info("stopped")
    return 0


def _release_leftovers(snapshotter: Snapshotter) -> None:
    """What a killed run of this VM left behind (a restore's clone or volume, a partial
    image) goes now: nothing of this daemon's can be using it yet."""
    provider = snapshotter.provider
    if not isinstance(provider, LeavesDebris):
        return
    try:
        released = provider.cleanup_leftovers()
    except ProviderError as err:
        log.error("%s; bin/snapshots cleanup tries again", err)
        return
    for leftover in released:
        log.warning("released %s, left behind by a killed operation", leftover.describe())


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
    if running and alive(running):
        print(f"snapshotter daemon already running (pid {running})")
        return 0
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    pid = _launch_detached(paths.logs / "snapshotter.log")
    if pid <= 0:
        print(f"snapshotter daemon could not be launched ({sys.executable})", file=sys.stderr)
        return 1
    pid_path.write_text(f"{pid}\n")
    # A daemon that dies at once (bad config, no disk) must fail monit's start, not flap.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if not alive(pid):
            pid_path.unlink(missing_ok=True)
            print(
                f"snapshotter daemon exited at once; see {paths.logs / 'snapshotter.log'}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.1)
    print(f"snapshotter daemon started (pid {pid})")
    return 0


def _launch_detached(log: Path) -> int:
    """``daemon run`` in a session of its own, started by a short-lived intermediate so
    that init is its parent before monit first looks at it: the stemcell's monit 5.2.5
    counts a parent that changes later (when this start program exits) as an error, and
    the agent reports the instance failing for a cycle."""
    read_end, write_end = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:
        try:
            os.close(read_end)
            with log.open("ab") as out:
                child = subprocess.Popen(
                    [sys.executable, "-m", "disk_snapshots", "daemon", "run"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                    close_fds=True,
                )
            os.write(write_end, str(child.pid).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(intermediate, 0)
    with os.fdopen(read_end, "rb") as reader:
        return int(reader.read() or b"0")


def stop(paths: Paths = VM_PATHS) -> int:
    """For monit's stop program: SIGTERM, wait for the current run, then SIGKILL."""
    pid_path = pidfile(paths)
    pid = _read_pid(pid_path)
    if pid is None or not alive(pid):
        pid_path.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        print(
            f"snapshotter daemon (pid {pid}) ignored SIGTERM for {STOP_SECONDS:.0f}s; killing it",
            file=sys.stderr,
        )
        os.kill(pid, signal.SIGKILL)
    # The stemcell's monit 5.2.5 waits for the process, not for this program: a start may
    # already have recorded a new daemon here.
    if _read_pid(pid_path) == pid:
        pid_path.unlink(missing_ok=True)
    return 0
