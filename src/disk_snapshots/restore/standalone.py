"""One instance's restore steps without its daemon: what the operator's command asks of it.

The operator's command (``disk-snapshots``, src/disk_snapshots/operator) restores in
the seed's order with ``bosh stop``, ``bosh attach-disk`` and ``bosh start``; a soft
stop stops every monit process of the instance, the snapshotter daemon too, so these
steps run in the process of ``bin/snapshots`` itself (over ``bosh ssh``), with the same
member code the errand drives through the daemon (member.py): the same journal, the
same safety snapshot, the same copy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from disk_snapshots import __version__
from disk_snapshots.annotations import TAG_PREFIX
from disk_snapshots.member_errors import Invalid
from disk_snapshots.member_errors import NotFound
from disk_snapshots.members import Member
from disk_snapshots.members import link_members
from disk_snapshots.members import linked
from disk_snapshots.operations import Operations
from disk_snapshots.providers.base import CreatesDisks
from disk_snapshots.providers.base import UnknownSnapshot
from disk_snapshots.providers.base import copy_refusal
from disk_snapshots.restore import hold
from disk_snapshots.restore.member import RestoreMember
from disk_snapshots.restore.plan import PlanEntry
from disk_snapshots.snapshot.snapshotter import VM_PATHS
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.instance import disk_size_bytes
from disk_snapshots.vm.monit import STOPPED
from disk_snapshots.vm.monit import MonitCli
from disk_snapshots.vm.monit import MonitError
from disk_snapshots.vm.monit import ServiceJobs
from disk_snapshots.vm.services import ServiceError
from disk_snapshots.vm.services import replication_state

# Tags a disk made for a replace restore carries besides its snapshot's annotations.
RESTORE_ID_TAG = TAG_PREFIX + "restore_id"
MADE_FOR_TAG = TAG_PREFIX + "made_for"


def _member_json(m: Member) -> dict[str, object]:
    return {
        "group": m.group,
        "index": m.index,
        "id": m.id,
        "address": m.address,
        "port": m.port,
        "bootstrap": m.bootstrap,
    }


@dataclass
class Standalone:
    snapshotter: Snapshotter
    member: RestoreMember

    @classmethod
    def load(cls, paths: Paths = VM_PATHS) -> Standalone:
        snapshotter = Snapshotter.load(paths)
        jobs = ServiceJobs(MonitCli(), snapshotter.config.service.jobs)
        return cls(snapshotter, RestoreMember(snapshotter, jobs, Operations()))

    def status(self) -> dict[str, object]:
        """Who this instance is, its links' members (the planner's topology), its role and
        replication, its service's processes, its disk, its provider and its journals."""
        s = self.snapshotter
        config, spec = s.config, s.config.spec
        role, role_error, replication = "unknown", "", {}
        try:
            role = s.service.role()
            replication = replication_state(s.service)
        except ServiceError as err:
            role_error = str(err)
        return {
            "instance": {
                "deployment": spec.deployment,
                "group": spec.name,
                "index": spec.index,
                "id": spec.id,
                "az": spec.az,
                "address": spec.address,
                "bootstrap": spec.bootstrap,
            },
            "links": {
                "members": [_member_json(m) for m in linked(config)],
                "snapshotter": [_member_json(m) for m in link_members(config, "snapshotter")],
                "peers": [_member_json(m) for m in link_members(config, "peers")],
            },
            "role": role,
            "role_error": role_error,
            "last_role": s.last_role(),
            "replication": replication,
            "service": self._service(),
            "disk": {
                "cid": s.disk.cid,
                "mount": str(s.disk.mount),
                "size_bytes": disk_size_bytes(s.disk.mount),
            },
            "provider": {
                "type": s.provider.name,
                "creates_disks": isinstance(s.provider, CreatesDisks),
                "copy_refusal": copy_refusal(s.provider),
            },
            "journal": self.member.journal(),
            "version": __version__,
        }

    def _service(self) -> dict[str, object]:
        service: dict[str, object] = {"profile": self.snapshotter.config.service.profile}
        try:
            jobs = self.member.jobs.states()
            service["jobs"] = jobs
            service["stopped"] = all(state == STOPPED for state in jobs.values())
        except MonitError as err:
            service["error"] = str(err)
        return service

    def safety(
        self, restore_id: str, plan: Sequence[PlanEntry], replace: bool, replaces: str = ""
    ) -> dict[str, object]:
        """The clean safety snapshot (the service stopped); with a journal unless the disk
        is to be replaced, which leaves it as it is."""
        if replace:
            return self.member.safety_only(restore_id)
        return self.member.safety(restore_id, self._mine(plan), list(plan), replaces=replaces)

    def copy(self, restore_id: str) -> dict[str, object]:
        return self.member.copy_now(restore_id)

    def create_disk(self, snapshot_id: str, restore_id: str) -> dict[str, object]:
        """A new disk from the snapshot, for ``bosh attach-disk`` onto this instance."""
        s = self.snapshotter
        provider = s.provider
        if not isinstance(provider, CreatesDisks):
            raise Invalid(
                f"the {provider.name} provider cannot make a disk from a snapshot; "
                "restore by copying instead (--method copy)"
            )
        try:
            snapshot = provider.get(snapshot_id)
        except UnknownSnapshot as err:
            raise NotFound(str(err)) from None
        deployment = s.config.spec.deployment
        if snapshot.annotations.deployment != deployment:
            raise Invalid(
                f"snapshot {snapshot_id} belongs to deployment "
                f"{snapshot.annotations.deployment}, not {deployment}"
            )
        labels = snapshot.annotations.with_hold(None).to_tags() | {
            RESTORE_ID_TAG: restore_id,
            MADE_FOR_TAG: f"{s.config.spec.name}/{s.config.spec.id}",
        }
        started = time.monotonic()
        disk = provider.create_disk(snapshot_id, s.disk, labels)
        return {
            "disk_cid": disk.cid,
            "size_mib": disk.size_mib,
            "zone": disk.zone,
            "snapshot_id": disk.snapshot_id,
            "seconds": round(time.monotonic() - started, 3),
        }

    def adopt(
        self, restore_id: str, plan: Sequence[PlanEntry], safety_snapshot_id: str
    ) -> dict[str, object]:
        return self.member.adopt(restore_id, self._mine(plan), list(plan), safety_snapshot_id)

    def finish(self, restore_id: str) -> dict[str, object]:
        return self.member.finish(restore_id)

    def verify(self) -> dict[str, object]:
        if not self.snapshotter.paths.job_config("restore").exists():
            return {"ran": False, "argv": [], "output": "", "reason": "no restore job here"}
        return self.member.verify()

    def hold(self, snapshot_ids: Sequence[str], by: str, until: datetime) -> dict[str, object]:
        try:
            held = hold.hold(self.snapshotter.provider, snapshot_ids, by, until)
        except UnknownSnapshot as err:
            raise NotFound(str(err)) from None
        return {"held": held, "by": by, "until": until.isoformat()}

    def release(self, by: str) -> dict[str, object]:
        released = hold.release(self.snapshotter.provider, self.snapshotter.catalog(), by)
        return {"released": released, "by": by}

    def _mine(self, plan: Sequence[PlanEntry]) -> PlanEntry:
        me = self.snapshotter.config.spec.id
        mine = next((e for e in plan if e.id == me), None)
        if mine is None:
            raise Invalid(f"the plan has no entry for this instance ({me})")
        return mine
