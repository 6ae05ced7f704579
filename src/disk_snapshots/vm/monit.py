"""The VM's monit, and the colocated service's processes under it (``service.jobs``).

The agent API stops and starts the service through monit (a restore errand holds the
deployment lock, so it cannot ``bosh stop``); a restore checks that the service is
stopped before it writes; ``/status`` reports each process's state.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Literal
from typing import Protocol

from disk_snapshots.errors import ReleaseError
from disk_snapshots.member_errors import Conflict
from disk_snapshots.member_errors import Failed
from disk_snapshots.member_errors import TimedOut
from disk_snapshots.vm.processes import alive
from disk_snapshots.vm.processes import run_argv

MONIT = Path("/var/vcap/bosh/bin/monit")
POLL_SECONDS = 0.2
STOPPED = "not monitored"
RUNNING = "running"


class MonitError(ReleaseError, RuntimeError):
    """monit is not there, or refused."""


class Monit(Protocol):
    """The seam to the VM's monit: tests replace it, the VM has the real one."""

    def summary(self) -> dict[str, str]:
        """Service name → ``running``, ``not monitored`` or what monit says otherwise."""
        ...

    def stop(self, name: str) -> None: ...

    def start(self, name: str) -> None: ...


@dataclass
class MonitCli:
    binary: Path = MONIT
    timeout: float = 30.0

    def _run(self, *args: str) -> str:
        binary = str(self.binary) if self.binary.exists() else "monit"
        return run_argv([binary, *args], "monit", self.timeout, error=MonitError)

    def summary(self) -> dict[str, str]:
        # Plain `summary`: the stemcell's monit 5.2.5 rejects -B ("invalid option"), and
        # 5.33 prints the same table as with -B when its output is not a terminal.
        return parse_summary(self._run("summary"))

    def stop(self, name: str) -> None:
        self._run("stop", name)

    def start(self, name: str) -> None:
        self._run("start", name)


def parse_summary(text: str) -> dict[str, str]:
    """``monit summary``: 5.33's table (Service Name, Status, Type columns) or the
    stemcell's 5.2.5 ``Process 'name'   status`` lines."""
    states: dict[str, str] = {}
    lines = text.splitlines()
    header = next((line for line in lines if "Service Name" in line and "Status" in line), None)
    if header is not None:
        status_at, type_at = header.index("Status"), header.index("Type")
        for line in lines[lines.index(header) + 1 :]:
            if line[type_at:].strip() == "Process":
                states[line[:status_at].strip()] = _normal(line[status_at:type_at])
        return states
    for line in lines:
        match = re.match(r"\s*Process '([^']+)'\s+(.*)$", line)
        if match:
            states[match.group(1)] = _normal(match.group(2))
    return states


def _normal(status: str) -> str:
    text = status.strip().lower()
    return "running" if text in ("ok", "running") else text


@dataclass
class ServiceJobs:
    """The ``service.jobs`` processes: their states, and stop/start with a deadline."""

    monit: Monit
    jobs: tuple[str, ...]
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def states(self) -> dict[str, str]:
        """Each job's state as monit says it; MonitError when monit cannot be asked."""
        summary = self.monit.summary()
        return {j: summary.get(j, "unknown to monit") for j in self.jobs}

    def control(self, action: Literal["stop", "start"], timeout: int) -> dict[str, object]:
        """Stop the jobs one at a time in ``service.jobs`` order, or start them in the
        reverse order, each reported so by monit before the next is asked: the order
        operators give (the Director's API and workers before the blobstore, PostgreSQL
        last) only holds if a job is really down before the next one goes. One deadline
        for them all."""
        want = STOPPED if action == "stop" else RUNNING
        order = self.jobs if action == "stop" else tuple(reversed(self.jobs))
        if not self._lock.acquire(blocking=False):
            raise Conflict("another service stop/start is in progress")
        try:
            deadline = time.monotonic() + timeout
            for n, job in enumerate(order):
                (self.monit.stop if action == "stop" else self.monit.start)(job)
                state = self._wait(job, want, deadline)
                if state != want:
                    done, later = order[:n], order[n + 1 :]
                    raise TimedOut(
                        f"not {want} within {timeout}s: {_listed({job: state})}"
                        + (f"; already {want}: {', '.join(done)}" if done else "")
                        + (f"; not asked yet: {', '.join(later)}" if later else "")
                    )
            return {"action": action, "jobs": {j: want for j in self.jobs}}
        except MonitError as err:
            raise Failed(str(err)) from None
        finally:
            self._lock.release()

    def _wait(self, job: str, want: str, deadline: float) -> str:
        """The job's state once monit reports ``want``, or at the deadline."""
        while True:
            state = self.states()[job]
            if state == want or time.monotonic() > deadline:
                return state
            time.sleep(POLL_SECONDS)

    def require_stopped(self) -> None:
        """Conflict unless monit reports every job stopped (restore writes only then)."""
        try:
            running = {j: st for j, st in self.states().items() if st != STOPPED}
        except MonitError as err:
            raise Failed(str(err)) from None
        if running:
            raise Conflict(
                "the service must be stopped first (POST /service/stop); "
                f"monit says {_listed(running)}"
            )


def _listed(states: dict[str, str]) -> str:
    return ", ".join(f"{j}: {st}" for j, st in sorted(states.items()))


# Whether the service is stopped, read the way monit itself decides it: by the pidfile of
# each ``check process`` stanza. monit's monitoring state says nothing at drain, because
# the agent unmonitors every service before running drain (bosh-agent agent/action/drain.go).
_CHECK_PROCESS = re.compile(
    r'^\s*check\s+process\s+"?([^"\s]+)"?\s+(?:with\s+)?pidfile\s+"?([^"\s]+)"?',
    re.IGNORECASE | re.MULTILINE,
)


def monit_pidfiles(monit_files: list[str]) -> dict[str, str]:
    """Process name → pidfile, from the jobs' monit files (`check process X with pidfile P`)."""
    found: dict[str, str] = {}
    for text in monit_files:
        for name, pidfile in _CHECK_PROCESS.findall(text):
            found[name] = pidfile
    return found


def _pidfile_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    return alive(pid)


def service_stopped(jobs: tuple[str, ...] | list[str], root: Path) -> str:
    """Why the service's processes are known to be stopped, or "" when any may run: every
    ``service.jobs`` process has a pidfile in the jobs' monit files, and none names a live
    process. A process without a pidfile monit would check may run, so it counts as running."""
    if not jobs:
        return ""
    jobs_dir = root / "var/vcap/jobs"
    files = sorted(jobs_dir.glob("*/monit")) + sorted(jobs_dir.glob("*/*.monit"))
    pidfiles = monit_pidfiles([f.read_text(errors="replace") for f in files if f.is_file()])
    if any(job not in pidfiles for job in jobs):
        return ""
    if any(_pidfile_alive(root / pidfiles[job].lstrip("/")) for job in jobs):
        return ""
    return f"service.jobs {', '.join(jobs)} not running (no live process in their pidfiles)"
