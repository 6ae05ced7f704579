"""Debian's monit as the agent drives it (bosh-agent jobsupervisor/monit_job_supervisor.go).

Each instance runs its own monit daemon inside its namespace, with the stemcell's
control file layout, its HTTP interface on the instance's own address (so
instances do not collide on port 2822), and `set onreboot nostart` so that a
service appears unmonitored until the agent starts it: the lifecycle decides when
processes start (after pre-start), not monit's first cycle.
"""

from __future__ import annotations

import base64
import contextlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from xml.etree import ElementTree

from localbosh.namespace import Namespace

MONITRC = "/var/vcap/bosh/etc/monitrc"
MONIT = "/var/vcap/bosh/bin/monit"
PORT = 2822
# The agent gives services 5 minutes to stop (StopAndWait).
STOP_TIMEOUT = 300.0


def monitrc(address: str, password: str, poll_seconds: int = 2) -> str:
    return (
        f"set daemon {poll_seconds}\n"
        "set onreboot nostart\n"
        "set logfile /var/vcap/monit/monit.log\n"
        "set pidfile /var/vcap/monit/monit.pid\n"
        "set idfile /var/vcap/monit/monit.id\n"
        "set statefile /var/vcap/monit/monit.state\n"
        f"set httpd port {PORT} and use address {address}\n"
        f'  allow vcap:"{password}"\n'
        "include /var/vcap/monit/*.monitrc\n"
        "include /var/vcap/monit/job/*.monitrc\n"
    )


@dataclass(frozen=True)
class Service:
    name: str
    monitored: bool
    pending: bool
    status: str  # running | starting | failing | not monitored
    pid: int
    errored: bool


@dataclass(frozen=True)
class Status:
    incarnation: int
    services: tuple[Service, ...]
    groups: dict[str, tuple[str, ...]]

    def in_group(self, group: str) -> list[Service]:
        names = set(self.groups.get(group, ()))
        return [s for s in self.services if s.name in names]


def parse_status(xml: str) -> Status:
    """Parse monit's `_status2?format=xml` (the agent's monit client reads this one: only
    it lists service groups); the older `_status` shape is accepted too."""
    root = ElementTree.fromstring(xml)  # noqa: S314 (our own monit, on loopback)
    incarnation = int(root.get("incarnation") or root.findtext("server/incarnation") or 0)
    services = []
    for svc in root.findall("service") + root.findall("services/service"):
        kind = svc.get("type") or svc.findtext("type", "")
        if kind != "3":  # processes only; the system entry is not a job
            continue
        monitor = int(svc.findtext("monitor", "0"))
        status_code = int(svc.findtext("status", "0"))
        pending = int(svc.findtext("pendingaction", "0")) != 0
        if monitor == 0:
            status = "not monitored"
        elif monitor == 2:
            status = "starting"
        elif status_code == 0 and int(svc.findtext("pid", "-1")) > 0:
            status = "running"
        else:
            status = "failing"
        services.append(
            Service(
                name=svc.get("name") or svc.findtext("name") or "",
                monitored=monitor != 0,
                pending=pending,
                status=status,
                pid=int(svc.findtext("pid", "-1")),
                errored=monitor != 0 and status_code != 0 and not pending,
            )
        )
    groups: dict[str, tuple[str, ...]] = {}
    for group in root.findall("servicegroups/servicegroup"):
        groups[group.get("name", "")] = tuple(s.text or "" for s in group.findall("service"))
    return Status(incarnation, tuple(services), groups)


class MonitError(Exception):
    pass


class Monit:
    def __init__(self, ns: Namespace, address: str, password: str) -> None:
        self.ns = ns
        self.address = address
        self.password = password

    def cli(self, *args: str) -> None:
        self.ns.run([MONIT, "-c", MONITRC, *args], what=f"monit {' '.join(args)} on {self.address}")

    def start_daemon(self) -> None:
        self.cli()  # without an action monit starts its daemon, which detaches
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(MonitError):
                self.status()
                return
            time.sleep(0.1)
        raise MonitError(f"monit on {self.address} did not answer within 30s")

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.cli("quit")

    def status(self) -> Status:
        req = urllib.request.Request(f"http://{self.address}:{PORT}/_status2?format=xml")
        token = base64.b64encode(f"vcap:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (http on loopback)
                return parse_status(resp.read().decode("latin-1"))
        except (OSError, urllib.error.URLError, ElementTree.ParseError) as exc:
            raise MonitError(f"monit status from {self.address}:{PORT}: {exc}") from exc

    def reload(self) -> None:
        """`monit reload`, then wait for a new incarnation (the agent's Reload)."""
        old = self.status().incarnation
        # The incarnation is a timestamp in seconds: a reload within the second the
        # daemon started looks like no reload at all, so reload again after 1.5s.
        for _ in range(10):
            self.cli("reload")
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                with contextlib.suppress(MonitError):
                    if self.status().incarnation != old:
                        return
                time.sleep(0.1)
        raise MonitError(f"Failed to reload monit on {self.address}: incarnation stayed {old}")

    def vcap_services(self) -> list[str]:
        return [s.name for s in self.status().in_group("vcap")]

    def start(self) -> None:
        for name in self.vcap_services():
            self.cli("start", name)

    def unmonitor(self) -> None:
        for name in self.vcap_services():
            self.cli("unmonitor", name)

    def stop_and_wait(self, timeout: float = STOP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while pending := [s.name for s in self.status().in_group("vcap") if s.pending]:
            if time.monotonic() > deadline:
                raise MonitError(
                    f"Timed out waiting for services '{', '.join(pending)}' to no longer be "
                    "pending after 5 minutes"
                )
            time.sleep(0.5)
        # Debian's monit 5.33 skips the stop program of an unmonitored service (the
        # stemcell's 5.2 runs it), and the drain action has just unmonitored them all:
        # monitor them again first, or `stop -g vcap` would leave processes running.
        # One action at a time: monit keeps a single pending action per service.
        unmonitored = [s.name for s in self.status().in_group("vcap") if not s.monitored]
        for name in unmonitored:
            self.cli("monitor", name)
        while any(
            not s.monitored or s.pending
            for s in self.status().in_group("vcap")
            if s.name in unmonitored
        ):
            if time.monotonic() > deadline:
                raise MonitError(f"Timed out re-monitoring {unmonitored} before stopping them")
            time.sleep(0.1)
        self.cli("stop", "-g", "vcap")
        while True:
            services = self.status().in_group("vcap")
            errored = [s.name for s in services if s.errored and not s.pending and not s.monitored]
            left = [s.name for s in services if s.monitored or s.pending]
            if errored:
                raise MonitError(f"Stopping services '{errored}' errored")
            if not left:
                return
            if time.monotonic() > deadline:
                raise MonitError(
                    f"Timed out waiting for services '{', '.join(left)}' to stop after 5 minutes"
                )
            time.sleep(0.25)
