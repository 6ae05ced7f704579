"""One instance's snapshotter: its config, disk, provider and service, and the one way to
take, list and prune snapshots that hooks, errands, the daemon and operators share."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from pathlib import Path

from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import Consistency
from disk_snapshots.annotations import Role
from disk_snapshots.annotations import text_problem
from disk_snapshots.backups.decisions import in_progress_sources
from disk_snapshots.catalog import Backup
from disk_snapshots.catalog import Query
from disk_snapshots.catalog import Snapshot
from disk_snapshots.config import SnapshotterConfig
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.errors import UsageError
from disk_snapshots.providers import make_provider
from disk_snapshots.providers.base import Provider
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.providers.base import backup_tier
from disk_snapshots.retention import RetentionPlan
from disk_snapshots.retention import plan_retention
from disk_snapshots.retention import policies_for
from disk_snapshots.snapshot.quiesce import Freezer
from disk_snapshots.snapshot.quiesce import QuiesceError
from disk_snapshots.snapshot.quiesce import Taken
from disk_snapshots.snapshot.quiesce import snapshot_quiesced
from disk_snapshots.vm.deadline import DeadlineExceeded
from disk_snapshots.vm.instance import Disk
from disk_snapshots.vm.instance import InstanceError
from disk_snapshots.vm.instance import current_disk
from disk_snapshots.vm.services import NoService
from disk_snapshots.vm.services import Service
from disk_snapshots.vm.services import ServiceError
from disk_snapshots.vm.services import make_service

log = logging.getLogger(__name__)

# What can go wrong while taking, listing or pruning snapshots, as opposed to a bug.
SNAPSHOT_ERRORS = (
    QuiesceError,
    ProviderError,
    ServiceError,
    InstanceError,
    DeadlineExceeded,
    OSError,
)


@dataclass(frozen=True)
class Paths:
    """Where the snapshotter keeps its files on a VM (``root`` is "/" there)."""

    root: Path = Path("/")

    @property
    def config(self) -> Path:
        return self.root / "var/vcap/jobs/snapshotter/config/config.json"

    def job_config(self, job: str) -> Path:
        return self.root / f"var/vcap/jobs/{job}/config/config.json"

    @property
    def data(self) -> Path:
        """Ephemeral state; never on the persistent disk, which gets frozen."""
        return self.root / "var/vcap/data/snapshotter"

    @property
    def logs(self) -> Path:
        return self.root / "var/vcap/sys/log/snapshotter"

    @property
    def role_file(self) -> Path:
        return self.data / "role.json"

    @property
    def drain_file(self) -> Path:
        """What the last drain decided, for post-stop (which gets no arguments)."""
        return self.data / "drain.json"


VM_PATHS = Paths()


def pending_import_marker(store: Path) -> Path:
    """On the persistent disk, so the request to import follows the data."""
    return store / ".disk-snapshots" / "pending-import.json"


@dataclass
class Snapshotter:
    config: SnapshotterConfig
    disk: Disk
    provider: Provider
    service: Service
    paths: Paths

    @classmethod
    def load(cls, paths: Paths = VM_PATHS) -> Snapshotter:
        config = load_snapshotter_config(paths.config)
        disk = current_disk(paths.root)
        return cls(
            config=config,
            disk=disk,
            provider=make_provider(config.provider, disk),
            service=make_service(config.service, config.spec.address),
            paths=paths,
        )

    def annotations(
        self,
        *,
        trigger: str,
        consistency: Consistency,
        role: Role,
        moment: datetime,
        note: str = "",
        set_id: str = "",
        set_size: int = 0,
    ) -> Annotations:
        spec = self.config.spec
        return Annotations(
            deployment=spec.deployment,
            instance_group=spec.name,
            instance_id=spec.id,
            index=spec.index,
            az=spec.az,
            disk_cid=self.disk.cid,
            job=self.config.service.jobs[0] if self.config.service.jobs else spec.name,
            created_at=moment,
            trigger=trigger,
            consistency=consistency,
            role=role,
            release_version=spec.release_version,
            note=note,
            set_id=set_id,
            set_size=set_size,
        )

    def freezer(self) -> Freezer:
        """What quiesced() freezes on this instance, and where its lease and watchdog log go."""
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        return Freezer(
            disk=self.disk,
            provider=self.provider,
            service=self.service,
            quiesce=self.config.quiesce,
            lease_dir=self.paths.data,
            log_path=self.paths.logs / "watchdog.log",
        )

    def take(self, trigger: str, *, note: str = "") -> Taken:
        """An application-consistent snapshot (flush + freeze); the role it records is kept.

        It does not apply retention: every caller calls prune() once what must follow
        the snapshot is done (drain writes its import marker first, the agent API
        records its metrics first), so that a failing prune never hides the snapshot.
        """

        problem = text_problem(note)
        if problem:
            # Before the service is flushed and the disk frozen, not after both.
            raise UsageError(f"note: {problem}")

        def annotate(consistency: Consistency, role: Role, moment: datetime) -> Annotations:
            return self.annotations(
                trigger=trigger, consistency=consistency, role=role, moment=moment, note=note
            )

        taken = snapshot_quiesced(self.freezer(), annotate)
        self.record_role(taken.snapshot.annotations.role)
        return taken

    def take_clean(self, trigger: str, *, note: str = "") -> Taken:
        """A snapshot with the service's processes stopped (post-stop, a restore's safety
        snapshot, the drain of a stopped service being deleted): nothing to flush, recorded
        clean with the last known role. What the stopped service wrote may still sit in the
        filesystem's page cache, so it goes through the same write-back and freeze as any
        snapshot; only the flush is skipped. It does not apply retention either."""
        role = self.last_role()

        def annotate(_consistency: Consistency, _role: Role, moment: datetime) -> Annotations:
            return self.annotations(
                trigger=trigger, consistency="clean", role=role, moment=moment, note=note
            )

        return snapshot_quiesced(replace(self.freezer(), service=NoService()), annotate)

    def catalog(self) -> list[Snapshot]:
        """Every snapshot of this deployment, newest first."""
        return self.provider.list(Query(deployment=self.config.spec.deployment))

    def backups(self) -> list[Backup]:
        """Every backup of this deployment, newest first; none when the tier is off."""
        tier = backup_tier(self.provider)
        return tier.backups(Query(deployment=self.config.spec.deployment)) if tier else []

    def prune(
        self, now: datetime | None = None, protected: frozenset[str] = frozenset()
    ) -> RetentionPlan:
        """Apply retention to this instance's own snapshots; the guards see the whole catalog,
        and a snapshot a backup is being copied from is kept until the copy is done."""
        policies = policies_for(
            ((s.name, s.retention) for s in self.config.schedules), self.config.retention
        )
        try:
            copying = in_progress_sources(self.backups())
        except SNAPSHOT_ERRORS as err:
            # Unknown which snapshots are being copied: delete none this time (a backup
            # region that does not answer must not fail a drain, nor lose a copy).
            log.warning("backups cannot be listed (%s); retention deletes nothing now", err)
            return RetentionPlan(keep={}, delete=())
        plan = plan_retention(
            self.catalog(),
            policies,
            now or datetime.now(UTC),
            instance_id=self.config.spec.id,
            protected=protected | copying,
        )
        for snapshot in plan.delete:
            log.info("retention deletes %s (%s)", snapshot.id, snapshot.annotations.trigger)
            self.provider.delete(snapshot.id)
        return plan

    def record_role(self, role: Role) -> None:
        self.paths.data.mkdir(parents=True, exist_ok=True)
        record = {"role": role, "at": datetime.now(UTC).isoformat()}
        self.paths.role_file.write_text(json.dumps(record))

    def last_role(self) -> Role:
        try:
            role = json.loads(self.paths.role_file.read_text()).get("role", "unknown")
        except (OSError, ValueError):
            return "unknown"
        return role if role in ("leader", "follower", "standalone") else "unknown"
