"""The stemcell's monit (5.2.5), driven the way the agent drives it (bosh-agent jobsupervisor/).

Every instance gets what a stemcell has (bosh-linux-stemcell-builder stages/bosh_monit):
the binary `scripts/bootstrap` compiled from the stemcell's source tarball, installed as
/var/vcap/bosh/bin/monit-actual behind the stemcell's wrapper /var/vcap/bosh/bin/monit, and
the stemcell's /var/vcap/bosh/etc/monitrc (10 s cycle, HTTP interface on port 2822, the
agent's cleartext credentials file). Each instance runs its own daemon in its namespace.

What differs, because instances share one host (manifests/local/README.md lists it):
the HTTP interface listens on the instance's own address instead of 127.0.0.1, monit's
pid, id and state files are under /var/vcap/monit instead of $HOME (root's home is shared),
and the wrapper's monit-access-helper.sh grants nothing (no cgroup firewall in front of
port 2822; the agent's credentials are a random password per deployment instead).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from localbosh.namespace import Namespace
from localbosh.state import cache_dir

VERSION = "5.2.5"
MONITRC = "/var/vcap/bosh/etc/monitrc"
MONIT = "/var/vcap/bosh/bin/monit"
MONIT_ACTUAL = "/var/vcap/bosh/bin/monit-actual"
MONIT_USER = "/var/vcap/monit/monit.user"
PORT = 2822
# The agent gives services 5 minutes to stop (StopAndWait).
STOP_TIMEOUT = 300.0
# bosh-agent jobsupervisor/monit/provider.go: the short client (status, start) tries 20
# times, the long one (stop, unmonitor) up to 300 times while monit answers 503 ("Other
# action already in progress": 5.2.5 runs one action at a time), 1 s apart.
SHORT_ATTEMPTS = 20
LONG_UNAVAILABLE_ATTEMPTS = 300
RETRY_DELAY = 1.0

# The stemcell's /var/vcap/bosh/bin/monit (stages/bosh_monit/assets/monit).
WRAPPER = """#!/bin/bash

set -e

source /var/vcap/bosh/etc/monit-access-helper.sh

permit_monit_access

exec /var/vcap/bosh/bin/monit-actual "$@"
"""

# On a stemcell permit_monit_access moves the caller into the cgroup that the firewall
# lets through to port 2822; instances here share the host's network and cgroups.
ACCESS_HELPER = """# localbosh: no cgroup firewall guards monit's port here (instances share the
# host's network); monit's own credentials (/var/vcap/monit/monit.user) do.
permit_monit_access() {
    :
}
"""


def binary() -> Path:
    """The monit that scripts/bootstrap built from the stemcell's source."""
    return cache_dir() / f"monit-{VERSION}" / "bin" / "monit"


def monitrc(address: str) -> str:
    """The stemcell's monitrc, with the instance's address and per-instance state files."""
    return (
        "set daemon 10\n"
        "set logfile /var/vcap/monit/monit.log\n"
        "set pidfile /var/vcap/monit/monit.pid\n"
        "set idfile /var/vcap/monit/monit.id\n"
        "set statefile /var/vcap/monit/monit.state\n"
        "\n"
        f"set httpd port {PORT} and use address {address}\n"
        f"  allow cleartext {MONIT_USER}\n"
        "\n"
        "include /var/vcap/monit/*.monitrc\n"
        "include /var/vcap/monit/job/*.monitrc\n"
    )


@dataclass(frozen=True)
class Service:
    name: str
    monitored: bool
    pending: bool
    status: str  # running | starting | failing | unknown (bosh-agent monit/status.go)
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
    """monit's `_status2?format=xml`, read the way the agent reads it (bosh-agent
    jobsupervisor/monit/status.go): only this document lists service groups."""
    root = ElementTree.fromstring(xml)  # noqa: S314 (our own monit, on loopback)
    incarnation = int(root.get("incarnation") or 0)
    services = []
    for svc in root.findall("services/service"):
        if svc.findtext("type", "") != "3":  # processes only; the system entry is not a job
            continue
        monitor = int(svc.findtext("monitor", "0"))
        status_code = int(svc.findtext("status", "0"))
        if monitor == 0:
            status = "unknown"
        elif monitor == 2:
            status = "starting"
        elif status_code == 0:
            status = "running"
        else:
            status = "failing"
        services.append(
            Service(
                name=svc.get("name") or "",
                monitored=monitor > 0,
                pending=int(svc.findtext("pendingaction", "0")) > 0,
                status=status,
                errored=status_code > 0 and bool(svc.findtext("status_message", "")),
            )
        )
    groups: dict[str, tuple[str, ...]] = {}
    for group in root.findall("servicegroups/servicegroup"):
        groups[group.get("name", "")] = tuple(s.text or "" for s in group.findall("service"))
    return Status(incarnation, tuple(services), groups)


class MonitError(Exception):
    pass


class Monit:
    def __init__(self, ns: Namespace, vcap: Path, address: str, password: str) -> None:
        self.ns = ns
        self.vcap = vcap  # the instance's /var/vcap, seen from the host
        self.address = address
        self.password = password

    def cli(self, *args: str) -> str:
        """The monit command line through the stemcell's wrapper, as the agent runs it."""
        proc = self.ns.run(
            [MONIT, "-c", MONITRC, *args], what=f"monit {' '.join(args)} on {self.address}"
        )
        return proc.stdout

    def install(self) -> None:
        """What the stemcell has under /var/vcap/bosh and /var/vcap/monit."""
        vcap = self.vcap
        actual = binary()
        if not actual.is_file():
            raise MonitError(f"monit {VERSION} is not built at {actual}: run scripts/bootstrap")
        bin_dir = vcap / "bosh" / "bin"
        (bin_dir / "monit-actual").write_bytes(actual.read_bytes())
        (bin_dir / "monit-actual").chmod(0o755)
        (bin_dir / "monit").write_text(WRAPPER)
        (bin_dir / "monit").chmod(0o755)
        (vcap / "bosh" / "etc" / "monit-access-helper.sh").write_text(ACCESS_HELPER)
        rc = vcap / "bosh" / "etc" / "monitrc"
        rc.write_text(monitrc(self.address))
        rc.chmod(0o700)
        user = vcap / "monit" / "monit.user"
        user.write_text(f"vcap:{self.password}")  # bosh-agent linux_platform.go SetupMonitUser
        user.chmod(0o600)
        # monit refuses to start without an include file present (stages/bosh_monit/apply.sh)
        (vcap / "monit" / "empty.monitrc").touch()

    def version(self) -> str:
        return self.cli("-V").splitlines()[0]

    def start_daemon(self) -> None:
        # The stemcell's runit service runs monit at nice -10 (stages/bosh_monit).
        self.ns.run(
            ["nice", "-n", "-10", MONIT, "-c", MONITRC],
            what=f"starting monit on {self.address}",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(MonitError):
                self.status(attempts=1)
                return
            time.sleep(0.1)
        try:
            tail = (self.vcap / "monit" / "monit.log").read_text(errors="replace")[-1500:]
        except OSError:
            tail = "(no monit.log)"
        raise MonitError(f"monit on {self.address} did not answer within 30s; monit.log:\n{tail}")

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.cli("quit")

    def _request(self, path: str, body: str | None) -> tuple[int, str]:
        data = body.encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.address}:{PORT}/{path}", data=data)
        token = base64.b64encode(f"vcap:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (http on loopback)
                return int(resp.status), resp.read().decode("latin-1")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("latin-1", errors="replace")

    def _call(
        self, path: str, body: str | None, attempts: int, unavailable_attempts: int = 0
    ) -> str:
        """One request with the agent's retry strategy: `attempts` tries for any failure,
        and with `unavailable_attempts`, that many more while monit answers 503."""
        unavailable = other = 0
        while True:
            try:
                code, text = self._request(path, body)
            except OSError as exc:
                code, text = 0, str(exc)
            if code == 200:
                return text
            if code == 503 and unavailable < unavailable_attempts:
                unavailable += 1
            else:
                unavailable = unavailable_attempts
                other += 1
            if other >= attempts:
                what = f"{body} on {path}" if body else path
                raise MonitError(
                    f"monit on {self.address}:{PORT}: {what} failed with "
                    f"{code or 'no answer'}: {text.strip()[:300]}"
                )
            time.sleep(RETRY_DELAY)

    def status(self, attempts: int = SHORT_ATTEMPTS) -> Status:
        text = self._call("_status2?format=xml", None, attempts)
        try:
            return parse_status(text)
        except ElementTree.ParseError as exc:
            raise MonitError(f"monit status from {self.address}:{PORT}: {exc}") from exc

    def _action(self, service: str, action: str, long: bool) -> None:
        body = urllib.parse.urlencode({"action": action})
        unavailable = LONG_UNAVAILABLE_ATTEMPTS if long else 0
        self._call(urllib.parse.quote(service), body, SHORT_ATTEMPTS, unavailable)

    def reload(self) -> None:
        """The agent's Reload: kill monit and start it again, then wait for a new
        incarnation (monit_job_supervisor.go; `monit reload` would wait for 5.2.5 to
        finish its cycle, which blocks up to 30 s on a start program that fails)."""
        old = self.status().incarnation
        # The incarnation is monit's start time in seconds: a restart within the same
        # second as the last one would look like no restart at all.
        time.sleep(max(0.0, old + 1 - time.time()))
        for _ in range(3):  # provider.go: MaxTries 3, MaxCheckTries 10, 1 s apart
            self._kill_daemon()
            self.start_daemon()
            for _ in range(10):
                with contextlib.suppress(MonitError):
                    if self.status(attempts=1).incarnation != old:
                        return
                time.sleep(RETRY_DELAY)
        raise MonitError(f"Failed to reload monit on {self.address}: incarnation stayed {old}")

    def _kill_daemon(self) -> None:
        """`sv kill monit`: SIGKILL; the processes monit started live on."""
        pidfile = self.vcap / "monit" / "monit.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if pid in self.ns.pids():
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while pid in self.ns.pids() and time.monotonic() < deadline:
                    time.sleep(0.05)
        # runit reaps the monit it kills; here a dead daemon can stay a zombie (of
        # whatever adopted it), which monit's own "already running" test counts as alive.
        pidfile.unlink(missing_ok=True)

    def vcap_services(self) -> list[str]:
        return [s.name for s in self.status().in_group("vcap")]

    def start(self) -> None:
        for name in self.vcap_services():
            self._action(name, "start", long=False)

    def unmonitor(self) -> None:
        for name in self.vcap_services():
            self._action(name, "unmonitor", long=True)

    def stop_and_wait(
        self, stopped: Callable[[], object] = lambda: None, timeout: float = STOP_TIMEOUT
    ) -> None:
        """StopAndWait: wait until nothing is pending, `monit stop -g vcap`, call `stopped`,
        wait until no service is monitored. 5.2.5 runs the stop program of a service the
        drain action has just unmonitored (control.c do_stop), so nothing is monitored
        again first (Debian's 5.33 would skip it)."""
        deadline = time.monotonic() + timeout
        while pending := [s.name for s in self.status().in_group("vcap") if s.pending]:
            if time.monotonic() > deadline:
                raise MonitError(
                    f"Timed out waiting for services '{', '.join(pending)}' to no longer be "
                    "pending after 5 minutes"
                )
            time.sleep(0.5)
        self.cli("stop", "-g", "vcap")
        stopped()
        while True:
            services = self.status().in_group("vcap")
            errored = [s.name for s in services if s.errored]
            left = [s.name for s in services if s.monitored or s.pending]
            if errored:
                raise MonitError(f"Stopping services '{errored}' errored")
            if not left:
                return
            if time.monotonic() > deadline:
                raise MonitError(
                    f"Timed out waiting for services '{', '.join(left)}' to stop after 5 minutes"
                )
            time.sleep(0.5)
