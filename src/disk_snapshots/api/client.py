"""The client of the agent API: set coordinators, errands and the restore coordinator.

Each call is its own HTTPS connection with a deadline; an answer of 400 or more raises
AgentError with the member's message, no answer at all raises AgentUnreachable.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

from disk_snapshots.api.tls import client_context
from disk_snapshots.config import TlsConfig
from disk_snapshots.errors import ReleaseError
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.triggers import MANUAL

DEFAULT_TIMEOUT = 30.0
# A quiesce flushes the service first; services get 30 s for that (services.DEFAULT_TIMEOUT).
QUIESCE_TIMEOUT = 75.0


class AgentError(ReleaseError, RuntimeError):
    """The agent answered, and said no; ``status`` is the HTTP status."""

    def __init__(self, address: str, status: int, message: str, problems: tuple[str, ...] = ()):
        self.address = address
        self.status = status
        self.message = message
        self.problems = problems
        detail = f": {'; '.join(problems)}" if problems else ""
        super().__init__(f"{address}: HTTP {status}: {message}{detail}")


class AgentUnreachable(ReleaseError, RuntimeError):
    """No answer: connection refused, TLS refused, timeout."""


@dataclass
class AgentClient:
    """One instance's agent API; each call is its own connection, with a deadline."""

    address: str
    port: int
    context: ssl.SSLContext
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def connect(cls, address: str, port: int, tls: TlsConfig) -> AgentClient:
        return cls(address, port, client_context(tls))

    @property
    def where(self) -> str:
        return f"{self.address}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, object] | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[int, str, bytes]:
        """Status, content type and body of one request; raises AgentUnreachable."""
        connection = http.client.HTTPSConnection(
            self.address, self.port, context=self.context, timeout=timeout or self.timeout
        )
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.getheader("Content-Type", ""), data
        except (OSError, http.client.HTTPException) as err:
            raise AgentUnreachable(f"{self.where}: {method} {path}: {err}") from None
        finally:
            connection.close()

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, object] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, object]:
        status, _, data = self.request(method, path, body, timeout=timeout)
        try:
            document = json.loads(data) if data else {}
        except ValueError:
            document = {"error": data[:200].decode(errors="replace")}
        if not isinstance(document, dict):
            raise AgentUnreachable(
                f"{self.where}: {method} {path}: the answer is not a JSON object"
            )
        if status >= 400:
            problems = document.get("problems", [])
            raise AgentError(
                self.where,
                status,
                str(document.get("error", "")),
                tuple(str(p) for p in problems) if isinstance(problems, list) else (),
            )
        return document

    # The endpoints (api/routes.py).

    def status(self) -> dict[str, object]:
        return self.call("GET", "/status")

    def take_snapshot(self, trigger: str = MANUAL, note: str = "") -> str:
        """Start a snapshot; returns the operation id to poll."""
        answer = self.call("POST", "/snapshots", {"trigger": trigger, "note": note})
        return str(answer["id"])

    def operation(self, operation_id: str) -> dict[str, object]:
        return self.call("GET", f"/operations/{operation_id}")

    def wait_operation(
        self, operation_id: str, timeout: float = 600.0, poll: float = 0.1
    ) -> dict[str, object]:
        """Poll until the operation is no longer running; raises TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.operation(operation_id)
            if answer.get("state") != "running":
                return answer
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.where}: operation {operation_id} still running after {timeout:.0f}s"
                )
            time.sleep(poll)

    def quiesce(self, set_id: str, lease_seconds: int, coordinator: str) -> dict[str, object]:
        return self.call(
            "POST",
            f"/sets/{set_id}/quiesce",
            {"lease_seconds": lease_seconds, "coordinator": coordinator},
            timeout=QUIESCE_TIMEOUT,
        )

    def snapshot_member(
        self,
        set_id: str,
        set_size: int,
        trigger: str,
        note: str = "",
        thaw: bool = False,
        claim: str = "",
    ) -> dict[str, object]:
        body: dict[str, object] = {"set_size": set_size, "trigger": trigger, "note": note}
        body |= {"thaw": thaw} | ({"snapshot_id": claim} if claim else {})
        return self.call("POST", f"/sets/{set_id}/snapshot", body)

    def thaw(self, set_id: str) -> dict[str, object]:
        return self.call("POST", f"/sets/{set_id}/thaw", {})

    def set_state(self, set_id: str, state: str, reason: str = "") -> dict[str, object]:
        return self.call("POST", f"/sets/{set_id}/state", {"state": state, "reason": reason})

    def service_stop(self, timeout: int = 120) -> dict[str, object]:
        return self.call("POST", "/service/stop", {"timeout": timeout}, timeout=timeout + 15)

    def service_start(self, timeout: int = 120) -> dict[str, object]:
        return self.call("POST", "/service/start", {"timeout": timeout}, timeout=timeout + 15)

    def metrics(self) -> str:
        status, _, data = self.request("GET", "/metrics")
        if status != 200:
            raise AgentError(self.where, status, data[:200].decode(errors="replace"))
        return data.decode()

    # Restore (the errand's coordinator, restore/coordinator.py).

    def restore_journal(self) -> dict[str, object]:
        return self.call("GET", "/restore/journal")

    def restore_safety(
        self,
        restore_id: str,
        snapshot_id: str,
        action: str,
        role: str,
        instance: str,
        plan: Sequence[PlanEntry],
        replaces: str = "",
        timeout: float = 600.0,
        backup_id: str = "",
    ) -> dict[str, object]:
        """A clean pre-restore snapshot and the journal (planned); idempotent per restore."""
        body: dict[str, object] = {
            "restore_id": restore_id,
            "snapshot_id": snapshot_id,
            "action": action,
            "role": role,
            "instance": instance,
            "plan": [e.to_json() for e in plan],
        }
        if replaces:
            body["replaces"] = replaces
        if backup_id:
            body["backup_id"] = backup_id
        return self.call("POST", "/restore/safety", body, timeout=timeout)

    def restore_copy(self, restore_id: str, snapshot_id: str, safety_snapshot_id: str) -> str:
        """Start (or find the running) copy of a snapshot onto this disk; the operation id."""
        answer = self.call(
            "POST",
            "/restore/copy",
            {
                "restore_id": restore_id,
                "snapshot_id": snapshot_id,
                "safety_snapshot_id": safety_snapshot_id,
            },
        )
        return str(answer["id"])

    def restore_imports(self, phase: str, timeout: float = 1800.0) -> dict[str, object]:
        return self.call("POST", "/restore/imports", {"phase": phase}, timeout=timeout)

    def restore_verify(self, timeout: float = 660.0) -> dict[str, object]:
        return self.call("POST", "/restore/verify", {}, timeout=timeout)

    def restore_finish(self, restore_id: str) -> dict[str, object]:
        return self.call("POST", "/restore/finish", {"restore_id": restore_id})
