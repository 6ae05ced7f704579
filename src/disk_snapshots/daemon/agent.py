"""This instance's side of the agent API: what each endpoint does, apart from HTTP.

The daemon serves one Agent. It answers status, takes snapshots as operations to poll,
stops and starts the service through monit, and holds the member sides of the two
cross-instance protocols: ``sets`` (sets/member.py) and ``restore`` (restore/member.py).
Each raises member_errors; api/server.py maps them to HTTP.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Literal

from disk_snapshots import __version__
from disk_snapshots import metrics as m
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.member_errors import Conflict
from disk_snapshots.metrics import Metrics
from disk_snapshots.operations import Operations
from disk_snapshots.restore.journal import Journal
from disk_snapshots.restore.member import RestoreMember
from disk_snapshots.sets.member import SetMember
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.monit import Monit
from disk_snapshots.vm.monit import MonitCli
from disk_snapshots.vm.monit import MonitError
from disk_snapshots.vm.monit import ServiceJobs
from disk_snapshots.vm.services import ServiceError

log = logging.getLogger(__name__)

LAST_SNAPSHOTS = 5


@dataclass
class Agent:
    snapshotter: Snapshotter
    metrics: Metrics
    monit: Monit = field(default_factory=MonitCli)
    operations: Operations = field(default_factory=Operations)
    jobs: ServiceJobs = field(init=False)
    sets: SetMember = field(init=False)
    restore: RestoreMember = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = ServiceJobs(self.monit, self.snapshotter.config.service.jobs)
        self.sets = SetMember(self.snapshotter, self.metrics)
        self.restore = RestoreMember(self.snapshotter, self.jobs, self.operations)

    def close(self) -> None:
        self.sets.close()
        late = self.operations.close()
        if late:
            log.warning("operations still running at shutdown: %s", ", ".join(late))

    def status(self) -> dict[str, object]:
        """Identity, role, service state, disk, last snapshots, the set in progress."""
        s = self.snapshotter
        spec = s.config.spec
        try:
            role: str = s.service.role()
            role_error = ""
        except ServiceError as err:
            role, role_error = "unknown", str(err)
        return {
            "instance": {
                "deployment": spec.deployment,
                "name": spec.name,
                "index": spec.index,
                "id": spec.id,
                "az": spec.az,
                "address": spec.address,
                "bootstrap": spec.bootstrap,
            },
            "role": role,
            "role_error": role_error,
            "replication": self._replication(),
            "service": self._service_status(),
            # volume_id: what a set's group snapshot gathers (sets/group.py).
            "disk": {"cid": s.disk.cid, "mount": str(s.disk.mount), "volume_id": s.disk.volume_id},
            "last_snapshots": self._last_snapshots(),
            "set": self.sets.describe(),
            "version": __version__,
        }

    def _replication(self) -> dict[str, object] | None:
        """The service's own word on its replication (None: the profile cannot tell)."""
        try:
            state = self.snapshotter.service.replication()
        except ServiceError as err:
            return {"error": str(err)}
        return None if state is None else state.to_json()

    def _service_status(self) -> dict[str, object]:
        service: dict[str, object] = {"profile": self.snapshotter.config.service.profile}
        try:
            service["jobs"] = self.jobs.states()
        except MonitError as err:
            service["jobs"] = {j: "unknown" for j in self.jobs.jobs}
            service["error"] = str(err)
        return service

    def _last_snapshots(self) -> list[dict[str, object]] | str:
        spec = self.snapshotter.config.spec
        query = Query(deployment=spec.deployment, instance=spec.id)
        try:
            mine = self.snapshotter.provider.list(query)
        except SNAPSHOT_ERRORS as err:
            return f"catalog unavailable: {err}"
        return [_brief(x) for x in mine[:LAST_SNAPSHOTS]]

    def take(self, trigger: str, note: str) -> dict[str, object]:
        """A snapshot as an operation to poll (Conflict while another one runs)."""
        s = self.snapshotter

        def work() -> dict[str, object]:
            started = time.monotonic()
            try:
                taken = s.take(trigger, note=note)
            except SNAPSHOT_ERRORS:
                self.metrics.inc(m.FAILURES, trigger=trigger)
                raise
            self.metrics.inc(m.TAKEN, trigger=trigger)
            m.record_snapshot(
                self.metrics, started=started, frozen_seconds=taken.frozen_seconds, trigger=trigger
            )
            plan = s.prune()
            a = taken.snapshot.annotations
            return {
                "snapshot_id": taken.snapshot.id,
                "consistency": a.consistency,
                "role": a.role,
                "frozen_seconds": taken.frozen_seconds,
                "warnings": taken.warnings,
                "retention_deleted": [x.id for x in plan.delete],
            }

        return self.operations.start("snapshot", work, errors=SNAPSHOT_ERRORS).to_json()

    def service(self, action: Literal["stop", "start"], timeout: int) -> dict[str, object]:
        """monit stop/start every ``service.jobs`` process and wait for it, with a deadline;
        never a start on a disk whose restore did not finish."""
        if action == "start":
            journal = Journal.read(self.snapshotter.disk.mount)
            if journal is not None and journal.blocks_start:
                raise Conflict(journal.refusal())
        return self.jobs.control(action, timeout)


def _brief(snapshot: Snapshot) -> dict[str, object]:
    a = snapshot.annotations
    return {
        "id": snapshot.id,
        "created_at": a.created_at.isoformat(),
        "trigger": a.trigger,
        "consistency": a.consistency,
        "role": a.role,
        "set_id": a.set_id,
        "set_state": a.set_state,
    }
