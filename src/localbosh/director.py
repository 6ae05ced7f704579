"""The local Director: deploy, stop/start/restart/recreate, errands, delete-deployment.

Every converging operation is one update_deployment, as on the real Director: stop,
start, restart and recreate deploy the stored manifest with some instances' states
overridden. What each instance update does is decided by `plan.procedure` (after
bosh-director instance_updater/update_procedure.rb) and carried out here in the
Director's order (starter.rb, stopper.rb), with canaries 1 and max_in_flight 1;
deletes of whole deployments, post-deploy and errands run in parallel. The deployment
state is written after every step, so a failure midway leaves a state that
`delete-deployment` can still clean up completely.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Collection
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import TextIO

from localbosh import dns
from localbosh import plan
from localbosh.agent import Agent
from localbosh.agent import AgentError
from localbosh.agent import Identity
from localbosh.agent import RenderedJob
from localbosh.agent import in_parallel
from localbosh.cinder import CinderError
from localbosh.cinder import CinderSettings
from localbosh.cinder import Volumes as CinderVolumes
from localbosh.deployment import Group
from localbosh.deployment import ManifestError
from localbosh.deployment import configuration_hash
from localbosh.deployment import parse_groups
from localbosh.deployment import render_instance
from localbosh.deployment import resolve_links
from localbosh.deployment import resolve_releases
from localbosh.disks import Pool
from localbosh.ec2 import Ec2Error
from localbosh.ec2 import Ec2Settings
from localbosh.ec2 import Volumes
from localbosh.namespace import CommandError
from localbosh.namespace import Namespace
from localbosh.namespace import ensure_private_dir
from localbosh.namespace import mounted
from localbosh.namespace import run
from localbosh.packages import lay_out_packages
from localbosh.packages import package_fingerprints
from localbosh.state import DeploymentState
from localbosh.state import InstanceState
from localbosh.state import Layout
from localbosh.state import address
from localbosh.state import address_in_use
from localbosh.state import deployment_lock
from localbosh.state import free_slot

DEFAULT_WATCH_MS = (1000, 30000)


class DirectorError(Exception):
    pass


@dataclass(frozen=True)
class ErrandResult:
    instance: str
    exit_code: int
    stdout: str
    stderr: str


def watch_time(manifest: Mapping[str, Any], canary: bool) -> float:
    """Max of `update.canary_watch_time` / `update_watch_time` (ms, int or "min-max"), in s."""
    update = manifest.get("update") or {}
    raw = update.get("canary_watch_time" if canary else "update_watch_time")
    if raw is None:
        return DEFAULT_WATCH_MS[1] / 1000
    parts = re.split(r"\s*-\s*", str(raw).strip())
    return int(parts[-1]) / 1000


class Director:
    def __init__(self, layout: Layout, out: TextIO | None = None) -> None:
        self.layout = layout
        self.out = out or sys.stdout
        self.pool = Pool(layout)
        self.volumes = Volumes(layout.root)
        self.cinder_volumes = CinderVolumes(layout.root)
        self.started = time.monotonic()
        self._print_lock = threading.Lock()
        # Instances are deleted, and post-deploy and errands run, in parallel threads.
        self._state_lock = threading.RLock()

    def log(self, msg: str) -> None:
        with self._print_lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} | {msg}\n")
            self.out.flush()

    # -- plumbing ---------------------------------------------------------------------

    def _save(self, dep: DeploymentState) -> None:
        with self._state_lock:
            dep.save(self.layout)

    @contextlib.contextmanager
    def _host(self) -> Iterator[None]:
        """Host-wide pieces (disk pool, namespace dir) exist while the block runs."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with _flock(self.layout.root / ".host.lock"):
            self.pool.ensure()
            if ensure_private_dir(self.layout.ns_dir):
                (self.layout.root / ".ns-bind").write_text("")
        yield

    def release_host_if_idle(self) -> None:
        """Unmount the pool (and the namespace dir bind) when no deployment is left."""
        with _flock(self.layout.root / ".host.lock"):
            if self.layout.deployment_names():
                return
            self.pool.release()
            (self.layout.root / ".pool-native").unlink(missing_ok=True)
            marker = self.layout.root / ".ns-bind"
            if marker.exists() and mounted(self.layout.ns_dir):
                run(["umount", str(self.layout.ns_dir)], what="unmounting namespace dir")
            marker.unlink(missing_ok=True)

    def agent(self, dep: DeploymentState, inst: InstanceState) -> Agent:
        ident = Identity(
            dep.name, inst.group, inst.index, inst.id, inst.az, inst.address, inst.bootstrap
        )
        return Agent(
            self.layout.instance_root(dep.name, inst.id),
            Namespace(self.layout.ns_file(dep.name, inst.id)),
            ident,
            dep.monit_password,
            hosts_file=self.layout.deployment(dep.name) / "hosts",
        )

    def load(self, name: str) -> DeploymentState:
        dep = DeploymentState.load(self.layout, name)
        if dep is None:
            raise DirectorError(f"Deployment '{name}' doesn't exist")
        return dep

    def _settings(self, dep: DeploymentState, inst: InstanceState, env: Mapping[str, Any]) -> None:
        disks = {inst.disk_cid: self.pool.image(inst.disk_cid)} if inst.disk_cid else {}
        volumes = {}
        if inst.disk_cid:
            volume_id = self._volume(dep, inst, inst.disk_cid)
            if volume_id:
                volumes[inst.disk_cid] = volume_id
        self.agent(dep, inst).write_settings(env, disks, volumes)

    def _volume(self, dep: DeploymentState, inst: InstanceState, cid: str) -> str | None:
        """The disk's EBS volume (localbosh.ec2) or Cinder volume (localbosh.cinder),
        created the first time a VM gets the disk."""
        try:
            settings = Ec2Settings.from_manifest(dep.manifest)
            known = self.volumes.volume_id(cid) or self.cinder_volumes.volume_id(cid)
            if known:
                return known
            if settings is None:
                return self._cinder_volume(dep, inst, cid)
            volume_id = self.volumes.ensure(
                settings,
                cid,
                inst.disk_size,
                inst.az,
                {"deployment": dep.name, "instance": f"{inst.group}/{inst.id}"},
            )
        except Ec2Error as exc:
            raise DirectorError(f"{inst.name}: {exc}") from exc
        self.log(f"Creating EBS volume {volume_id} in {settings.zone(inst.az)} for disk {cid}")
        return volume_id

    def _cinder_volume(self, dep: DeploymentState, inst: InstanceState, cid: str) -> str | None:
        try:
            settings = CinderSettings.from_manifest(dep.manifest)
            if settings is None:
                return None
            metadata = {
                "deployment": dep.name,
                "instance_group": inst.group,
                "instance_index": str(inst.index),
                "director": "localbosh",
            }
            volume_id, zone = self.cinder_volumes.ensure(
                settings, cid, inst.disk_size, inst.az, metadata
            )
        except CinderError as exc:
            raise DirectorError(f"{inst.name}: {exc}") from exc
        self.log(f"Creating Cinder volume {volume_id} in {zone or 'the default zone'} for {cid}")
        return volume_id

    # -- desired state ----------------------------------------------------------------

    def _groups(self, dep: DeploymentState) -> list[Group]:
        manifest_dir = Path(dep.manifest.get("_manifest_dir", "."))
        releases = resolve_releases(dep.manifest, manifest_dir)
        return [g for g in parse_groups(dep.manifest, releases) if g.lifecycle != "errand"]

    def _render(
        self, dep: DeploymentState, groups: Sequence[Group]
    ) -> dict[str, tuple[list[RenderedJob], plan.AppliedSpec]]:
        """Instance id -> (rendered jobs, the spec the agent will have applied)."""
        links = resolve_links(groups)
        idents = [self.agent(dep, i).ident for i in dep.instances]
        azs = dns.az_numbers(g.azs for g in groups)
        # Like the Director publishing DNS records at deploy, before instances update.
        dns.publish(self.layout.deployment(dep.name) / "hosts", idents, azs)
        by_name = {g.name: g for g in groups}
        out = {}
        for inst in dep.instances:
            group = by_name.get(inst.group)
            if group is None:
                continue
            ident = self.agent(dep, inst).ident
            jobs = render_instance(ident, group, links, idents, azs)
            pkgs = package_fingerprints(jobs, group)
            applied = plan.AppliedSpec(
                jobs=tuple(j.name for j in jobs),
                configuration_hash=configuration_hash(jobs),
                packages=pkgs,
                persistent_disk=group.persistent_disk,
            )
            out[inst.id] = (jobs, applied)
        return out

    # -- deploy and every converging operation ----------------------------------------

    def deploy(
        self,
        name: str,
        manifest: dict[str, Any],
        manifest_dir: Path,
        recreate: bool = False,
        skip_drain: bool = False,
    ) -> None:
        if manifest.get("name") != name:
            raise DirectorError(
                f"Expected manifest to specify deployment name '{name}' but was "
                f"'{manifest.get('name')}'"
            )
        with deployment_lock(self.layout, name, f"create deployment {name}"):
            dep = DeploymentState.load(self.layout, name)
            if dep is None:
                dep = DeploymentState(
                    name=name, slot=free_slot(self.layout), monit_password=secrets.token_hex(16)
                )
                # Saved before the host pieces are ensured: a concurrent delete of the
                # last other deployment must see this one and keep the pool.
                self._save(dep)
            with self._host():
                dep.manifest = {**manifest, "_manifest_dir": str(manifest_dir)}
                self._converge(dep, {}, recreate=recreate, skip_drain=skip_drain)

    def change_state(
        self,
        name: str,
        action: str,
        selector: str | None,
        hard: bool = False,
        skip_drain: bool = False,
    ) -> None:
        """`bosh stop|start|restart|recreate [GROUP[/ID]]`: like the CLI's default
        (converge), a deploy of the stored manifest with these instances' states
        overridden (deployments_controller.rb PUT /deployments/:d/jobs/...)."""
        virtual: plan.Virtual
        if action == "stop":
            virtual = "detached" if hard else "stopped"
        elif action == "start":
            virtual = "started"
        elif action == "restart":
            virtual = "restart"
        elif action == "recreate":
            virtual = "recreate"
        else:
            raise DirectorError(f"unknown action {action!r}")
        with deployment_lock(self.layout, name, f"{action} instances"), self._host():
            dep = self.load(name)
            targets = self._selected(dep, selector)
            self._converge(
                dep,
                {i.id: virtual for i in targets},
                skip_drain_groups={i.group for i in targets} if skip_drain else set(),
            )

    def _converge(
        self,
        dep: DeploymentState,
        states: Mapping[str, plan.Virtual],
        recreate: bool = False,
        skip_drain: bool = False,
        skip_drain_groups: Collection[str] = (),
    ) -> None:
        """update_deployment: scale, delete what is no longer needed, update each instance
        group in manifest order (canary first, one at a time), then post-deploy when
        anything changed. `states` overrides instances' states (by id)."""
        try:
            groups = self._groups(dep)
            Ec2Settings.from_manifest(dep.manifest)
        except (ManifestError, OSError, Ec2Error) as exc:
            raise DirectorError(str(exc)) from exc
        _, create, delete = plan.scale(
            [plan.Placement(i.group, i.index) for i in dep.instances],
            {g.name: g.instances for g in groups},
        )
        by_name = {g.name: g for g in groups}
        used = {i.address for i in dep.instances}
        n = 0
        for p in create:
            while address(dep.slot, n) in used or address_in_use(address(dep.slot, n)):
                n += 1
            used.add(address(dep.slot, n))
            azs = by_name[p.group].azs
            dep.instances.append(
                InstanceState(
                    group=p.group,
                    index=p.index,
                    id=str(uuid.uuid4()),
                    az=azs[p.index % len(azs)],
                    address=address(dep.slot, n),
                )
            )
        doomed = [i for p in delete if (i := dep.find(p.group, p.index)) is not None]
        for g in groups:
            members = sorted(
                (i for i in dep.instances if i.group == g.name and i not in doomed),
                key=lambda i: i.index,
            )
            for i in members:
                i.bootstrap = i is members[0]
        self._save(dep)
        # Render before touching anything: a template error must not leave half a deploy.
        remaining = [i for i in dep.instances if i not in doomed]
        live = DeploymentState(dep.name, dep.slot, dep.manifest, remaining, dep.monit_password)
        try:
            desired = self._render(live, groups)
        except Exception as exc:
            raise DirectorError(f"Preparing deployment: {exc}") from exc
        changed = False
        # Groups gone from the manifest go first; each remaining group deletes its
        # surplus instances, then updates the rest (instance_group_updater.rb update).
        order = [None, *(g.name for g in groups)]
        for group_name in order:
            for inst in sorted(
                (i for i in doomed if (i.group if i.group in by_name else None) == group_name),
                key=lambda i: i.index,
            ):
                self.log(f"Deleting unneeded instances {inst.group}: {inst.name} ({inst.index})")
                self._delete_instance(dep, inst, force=False)
                changed = True
            if group_name is None:
                continue
            group = by_name[group_name]
            canaried = False
            for inst in sorted(
                (i for i in remaining if i.group == group_name), key=lambda i: i.index
            ):
                jobs, applied = desired[inst.id]
                virtual = states.get(inst.id, _state(inst.state))
                procedure = plan.procedure(self._facts(dep, inst, applied), virtual, recreate)
                if not procedure.changed:
                    continue
                skip = skip_drain or group_name in skip_drain_groups
                self._update_instance(
                    dep, inst, group, jobs, applied, procedure, not canaried, skip
                )
                canaried = changed = True
        if changed:
            self._post_deploy(dep)
        self.log("Succeeded")

    def _facts(
        self, dep: DeploymentState, inst: InstanceState, applied: plan.AppliedSpec
    ) -> plan.Facts:
        agent = self.agent(dep, inst)
        # A VM whose namespace is gone (the host rebooted, say) is a missing VM: the
        # Director would find its agent unresponsive and recreate it.
        has_vm = inst.vm and agent.ns.exists()
        return plan.Facts(
            state=_state(inst.state),
            has_vm=has_vm,
            job_state=agent.get_state() if has_vm else None,
            update_completed=inst.update_completed,
            old=plan.AppliedSpec.from_json(inst.applied),
            new=applied,
            disk_size=inst.disk_size,
        )

    def _post_deploy(self, dep: DeploymentState) -> None:
        """post-deploy on every instance with a VM that is not stopped, all at once
        (post_deployment_script_runner.rb, models/instance.rb has_important_vm?)."""
        targets = [i for i in dep.instances if i.vm and i.state == "started"]

        def one(inst: InstanceState) -> None:
            agent = self.agent(dep, inst)
            if agent.jobs_with("post-deploy"):
                self.log(f"Running post-deploy scripts: {inst.name} ({inst.index})")
                self._agent_call(inst, lambda: agent.run_script("post-deploy"))

        in_parallel(targets, one, plan.MAX_THREADS)

    def _agent_call(self, inst: InstanceState, fn: Any) -> None:
        try:
            fn()
        except (AgentError, CommandError) as exc:
            raise DirectorError(
                f"Action Failed get_task: Task {uuid.uuid4()} result: {exc}"
                f" (instance {inst.name} ({inst.index}))"
            ) from exc

    def _update_instance(
        self,
        dep: DeploymentState,
        inst: InstanceState,
        group: Group,
        jobs: list[RenderedJob],
        applied: plan.AppliedSpec,
        procedure: plan.Procedure,
        canary: bool,
        skip_drain: bool,
    ) -> None:
        """One instance's update_procedure.rb `perform`, step by step. Until it completes
        the instance is dirty: the next converge updates it fully again."""
        inst.update_completed = False
        self._save(dep)
        label = f"{inst.group}: {inst.name} ({inst.index})" + (" (canary)" if canary else "")
        started = time.monotonic()
        changes = ", ".join(sorted(procedure.changes))
        self.log(f"Updating instance {label} (changes: {changes})")
        if procedure.stop is not None:
            old = plan.AppliedSpec.from_json(inst.applied)
            args = (
                plan.SHUTDOWN_ARGS
                if procedure.stop == "shutdown"
                else tuple(plan.update_drain_args(old, applied))
            )
            self._stop_sequence(
                dep, inst, args, applied.persistent_disk, procedure.intent, skip_drain
            )
        if procedure.detach:
            self.log(f"Detaching instance {inst.name} ({inst.index})")
            self._unmount(dep, inst)
            self._delete_vm(dep, inst)
        if procedure.create_vm:
            self.log(f"Creating missing vms: {inst.name} ({inst.index})")
            self._create_vm(dep, inst, group)
        if procedure.recreate_vm:
            self.log(f"Recreating instance {label}")
            self._unmount(dep, inst)
            self._delete_vm(dep, inst)
            self._create_vm(dep, inst, group)
        if procedure.change_disk:
            self._change_disk(dep, inst, group)
        inst.state = procedure.final_state
        self._save(dep)
        if procedure.apply:
            self._apply(dep, inst, group, jobs, applied)
        if procedure.start:
            self._start_sequence(dep, inst, watch_time(dep.manifest, canary))
        inst.update_completed = True
        self._save(dep)
        self.log(f"Updated instance {label} ({_duration(started)})")

    def _unmount(self, dep: DeploymentState, inst: InstanceState) -> None:
        """UnmountInstanceDisksStep: the agent's unmount_disk, fatal while the disk is busy."""
        if inst.disk_cid:
            agent = self.agent(dep, inst)
            self._agent_call(inst, agent.unmount_disk)

    def _create_vm(self, dep: DeploymentState, inst: InstanceState, group: Group) -> None:
        """A VM from the "stemcell", with the instance's existing disk attached and mounted
        (a disk to create or resize is the disk step's, after this)."""
        agent = self.agent(dep, inst)
        # Recorded first, so a failure inside still gets the VM deleted later.
        inst.vm = True
        self._save(dep)
        self._settings(dep, inst, group.env)
        self._agent_call(inst, lambda: agent.create_vm(group.env))
        self.log(f"{inst.name} ({inst.index}): {agent.monit_version()}")
        self.pool.attach_to(agent.ns)
        if inst.disk_cid:
            cid = inst.disk_cid
            self._agent_call(inst, lambda: agent.mount_disk(cid, self.pool.image(cid)))

    def _delete_vm(self, dep: DeploymentState, inst: InstanceState) -> None:
        self.agent(dep, inst).delete_vm()
        inst.vm = False
        self._save(dep)

    def _change_disk(self, dep: DeploymentState, inst: InstanceState, group: Group) -> None:
        agent = self.agent(dep, inst)
        old_cid = inst.disk_cid
        if group.persistent_disk > 0:
            new_cid = self.pool.create(group.persistent_disk)
            size = f"{group.persistent_disk} MiB"
            if old_cid:
                self.log(f"Migrating disk {old_cid} to {new_cid} ({size}): {inst.name}")
            else:
                self.log(f"Creating disk {new_cid} ({size}): {inst.name}")
            image = self.pool.image(new_cid)
            if old_cid:
                self._agent_call(inst, lambda: agent.migrate_disk(new_cid, image))
            else:
                self._agent_call(inst, lambda: agent.mount_disk(new_cid, image))
            inst.disk_cid, inst.disk_size = new_cid, group.persistent_disk
        else:
            self._agent_call(inst, agent.unmount_disk)
            inst.disk_cid, inst.disk_size = None, 0
        self._save(dep)
        self._settings(dep, inst, group.env)
        if old_cid:
            self._orphan(dep, inst, old_cid)

    def _orphan(self, dep: DeploymentState, inst: InstanceState, cid: str) -> None:
        with self._state_lock:
            orphans = _read_json(self.layout.orphans, [])
            orphans.append(
                {
                    "disk_cid": cid,
                    "deployment": dep.name,
                    "instance": inst.name,
                    "az": inst.az or "",
                    "size": inst.disk_size,
                    "orphaned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
            self.layout.orphans.write_text(json.dumps(orphans, indent=2))
        self.log(f"Orphaning disk {cid} of {inst.name}")

    def _apply(
        self,
        dep: DeploymentState,
        inst: InstanceState,
        group: Group,
        jobs: list[RenderedJob],
        applied: plan.AppliedSpec,
    ) -> None:
        spec = {
            "deployment": dep.name,
            "name": inst.group,
            "index": inst.index,
            "id": inst.id,
            "az": inst.az,
            "bootstrap": inst.bootstrap,
            "address": inst.address,
            "job_names": [j.name for j in jobs],
            "jobs": [{"name": j.name, "release": j.release, "sha1": j.sha1} for j in jobs],
            "configuration_hash": applied.configuration_hash,
            "packages": dict(applied.packages),
            "persistent_disk": group.persistent_disk,
        }
        agent = self.agent(dep, inst)
        self._agent_call(inst, lambda: agent.apply(jobs, spec, lay_out_packages(group)))
        inst.applied = applied.to_json()
        self._save(dep)

    def _stop_sequence(
        self,
        dep: DeploymentState,
        inst: InstanceState,
        drain_args: Sequence[str],
        next_disk: int,
        intent: plan.Intent,
        skip_drain: bool = False,
    ) -> None:
        """Stopper.stop: pre-stop, drain (after unmonitor), monit stop and wait, post-stop.
        --skip-drain skips pre-stop and drain, as the Director does."""
        agent = self.agent(dep, inst)
        if not skip_drain:
            env = plan.pre_stop_env(intent)
            self._agent_call(inst, lambda: agent.run_script("pre-stop", env))
            self._agent_call(
                inst,
                lambda: agent.drain(drain_args, inst.disk_size, next_disk, self.log),
            )
        self._agent_call(inst, agent.stop)
        self._agent_call(inst, lambda: agent.run_script("post-stop"))

    def _start_sequence(self, dep: DeploymentState, inst: InstanceState, watch: float) -> None:
        """Starter.start: pre-start, monit start, wait until running, post-start."""
        agent = self.agent(dep, inst)
        self._agent_call(inst, lambda: agent.run_script("pre-start"))
        self._agent_call(inst, agent.start)
        deadline = time.monotonic() + watch
        state = agent.get_state()
        while state != "running" and time.monotonic() < deadline:
            time.sleep(0.5)
            state = agent.get_state()
        if state != "running":
            failing = [n for n, s in agent.processes() if s != "running"]
            raise DirectorError(
                f"'{inst.name} ({inst.index})' is not running after update. "
                f"Review logs for failed jobs: {', '.join(failing)}"
            )
        self._agent_call(inst, lambda: agent.run_script("post-start"))

    # -- selection --------------------------------------------------------------------

    def _selected(self, dep: DeploymentState, selector: str | None) -> list[InstanceState]:
        idents = [plan.Ident(i.group, i.index, i.id) for i in dep.instances]
        try:
            chosen = {i.id for i in plan.select(idents, selector)}
        except plan.SelectionError as exc:
            raise DirectorError(str(exc)) from exc
        return sorted(
            (i for i in dep.instances if i.id in chosen), key=lambda i: (i.group, i.index)
        )

    # -- delete -----------------------------------------------------------------------

    def _delete_instance(
        self,
        dep: DeploymentState,
        inst: InstanceState,
        force: bool,
        intent: plan.Intent = "delete_instance",
    ) -> None:
        """InstanceDeleter: Stopper.stop with next persistent_disk 0 (pre-stop, drain
        job_shutdown, monit stop, post-stop) on every instance that has a VM, soft-stopped
        ones too (stopper.rb only skips instances without a VM or with an unresponsive
        agent); then the VM goes (no unmount first) and the disk is orphaned. With
        --force, failures of the instance's own scripts are logged and skipped."""
        agent = self.agent(dep, inst)
        try:
            if inst.vm and agent.ns.exists():
                self._stop_sequence(dep, inst, plan.SHUTDOWN_ARGS, 0, intent)
        except DirectorError as exc:
            if not force:
                raise
            self.log(f"Ignoring error (--force): {exc}")
        self._delete_vm(dep, inst)
        if inst.disk_cid:
            self._orphan(dep, inst, inst.disk_cid)
            inst.disk_cid = None
        with self._state_lock:
            dep.instances.remove(inst)
        self._save(dep)

    def delete_deployment(self, name: str, force: bool = False) -> None:
        if DeploymentState.load(self.layout, name) is None:
            self.log(f"Deployment '{name}' does not exist, nothing to delete")
            return
        with deployment_lock(self.layout, name, f"delete deployment {name}"), self._host():
            dep = self.load(name)

            def one(inst: InstanceState) -> None:
                self.log(f"Deleting instances: {inst.name} ({inst.index})")
                self._delete_instance(dep, inst, force, "delete_deployment")

            # Every instance at once, up to the Director's thread pool (deployment_deleter.rb).
            in_parallel(
                sorted(dep.instances, key=lambda i: (i.group, i.index)), one, plan.MAX_THREADS
            )
            # Sweep namespaces of this deployment the state might not know (a crash
            # between creating a namespace and saving the state).
            for ns_file in self.layout.ns_dir.glob(f"{name}.*"):
                Namespace(ns_file).destroy()
            _rmtree(self.layout.deployment(name))
        self.release_host_if_idle()
        self.log("Succeeded")

    def clean_up(self) -> None:
        """`bosh clean-up --all`: delete orphaned disks."""
        with self._host():
            for orphan in _read_json(self.layout.orphans, []):
                # The volume first: if EC2 fails, the orphan stays listed for a retry.
                try:
                    volume_id = self.volumes.delete(orphan["disk_cid"])
                    cinder_volume = self.cinder_volumes.delete(orphan["disk_cid"])
                except (Ec2Error, CinderError) as exc:
                    raise DirectorError(str(exc)) from exc
                if volume_id:
                    self.log(f"Deleting EBS volume {volume_id} of disk {orphan['disk_cid']}")
                if cinder_volume:
                    self.log(f"Deleting Cinder volume {cinder_volume} of {orphan['disk_cid']}")
                self.pool.delete(orphan["disk_cid"])
                self.log(f"Deleting orphaned disk {orphan['disk_cid']}")
            self.layout.orphans.unlink(missing_ok=True)
        self.release_host_if_idle()

    # -- disks ------------------------------------------------------------------------

    def orphaned_disks(self) -> list[dict[str, Any]]:
        """`bosh disks --orphaned` (orphan_disk_manager.rb list_orphan_disks)."""
        with self._state_lock:
            orphans = _read_json(self.layout.orphans, [])
        return [o for o in orphans if isinstance(o, dict)]

    def attach_disk(self, name: str, slug: str, cid: str, disk_properties: str = "") -> str:
        """`bosh attach-disk GROUP/ID CID [--disk-properties copy]` (jobs/attach_disk.rb):
        only a stopped or detached instance, found by its id (the Director looks the
        instance up by uuid only); its disk is unmounted, detached and orphaned; the new
        one is un-orphaned when it is a known orphan (keeping its size), else recorded at
        1 MiB or, with ``copy``, at the old disk's size; a soft-stopped instance gets it
        attached and mounted now, a detached one on its next start."""
        group, _, instance_id = slug.partition("/")
        with deployment_lock(self.layout, name, f"attach disk '{cid}'"), self._host():
            dep = self.load(name)
            inst = next((i for i in dep.instances if (i.group, i.id) == (group, instance_id)), None)
            where = f"Instance '{slug}' in deployment '{name}'"
            if inst is None:
                raise DirectorError(f"{where} was not found")
            if inst.state not in ("stopped", "detached"):
                raise DirectorError(f"{where} must be in 'bosh stopped' state")
            self._check_attachable(cid)
            size = inst.disk_size if disk_properties == "copy" and inst.disk_cid else 1
            orphan = self._unorphan(cid)
            if orphan is not None:
                size = int(orphan.get("size") or size)
            has_vm = inst.vm and self.agent(dep, inst).ns.exists()
            if inst.disk_cid:
                old = inst.disk_cid
                if inst.state == "stopped" and has_vm:
                    self.log(f"Detaching disk {old} from {inst.name}")
                    self._unmount(dep, inst)
                inst.disk_cid = None
                self._orphan(dep, inst, old)
            inst.disk_cid, inst.disk_size = cid, size
            self._save(dep)
            if inst.state == "stopped" and has_vm:
                group_spec = next(g for g in self._groups(dep) if g.name == inst.group)
                self._settings(dep, inst, group_spec.env)
                agent = self.agent(dep, inst)
                self.log(f"Attaching disk {cid} to {inst.name}")
                self._agent_call(inst, lambda: agent.mount_disk(cid, self.pool.image(cid)))
        return f"attached disk '{cid}' to '{slug}' in deployment '{name}'"

    def _check_attachable(self, cid: str) -> None:
        """The CPI's part: the disk must exist, and not be some instance's disk already."""
        if not self.pool.exists(cid):
            raise DirectorError(
                f"CPI error 'Bosh::Clouds::DiskNotFound' with message 'Disk '{cid}' not found'"
            )
        for other in self.layout.deployment_names():
            state = DeploymentState.load(self.layout, other)
            for i in state.instances if state else []:
                if i.disk_cid == cid:
                    raise DirectorError(
                        f"Disk '{cid}' is attached to {i.name} in deployment '{other}'"
                    )

    def _unorphan(self, cid: str) -> dict[str, Any] | None:
        with self._state_lock:
            orphans = self.orphaned_disks()
            found = next((o for o in orphans if o.get("disk_cid") == cid), None)
            if found is not None:
                rest = [o for o in orphans if o is not found]
                self.layout.orphans.write_text(json.dumps(rest, indent=2))
        return found

    # -- errands ----------------------------------------------------------------------

    def run_errand(
        self, name: str, errand: str, selectors: Sequence[str] = ()
    ) -> list[ErrandResult]:
        with deployment_lock(self.layout, name, f"run errand {errand} from deployment {name}"):
            dep = self.load(name)
            groups = self._groups(dep)
            with_job = {
                g.name for g in groups for j in g.jobs if j.name == errand and j.spec.is_errand
            }
            by_id = {i.id: i for i in dep.instances}
            candidates = [
                plan.ErrandCandidate(
                    plan.Ident(i.group, i.index, i.id),
                    _state(i.state),
                    i.vm and self.agent(dep, i).ns.exists(),
                )
                for i in sorted(dep.instances, key=lambda i: (i.group, i.index))
            ]
            try:
                targets = plan.errand_targets(errand, candidates, with_job, selectors)
            except plan.SelectionError as exc:
                raise DirectorError(str(exc)) from exc
            for ident in targets.skipped:
                self.log(
                    f"Warning: Skipping instance: {ident.group}/{ident.id} ({ident.index}) "
                    "no matching VM reference was found"
                )
            if len(targets.run) > 1:
                self.log(
                    "Warning: Executing errand on multiple instances in parallel. "
                    "Use the `--instance` flag to run the errand on a single instance."
                )
            results: dict[str, ErrandResult] = {}

            def one(inst: InstanceState) -> None:
                self.log(f"Running errand: {inst.name} ({inst.index})")
                code, out, err = self.agent(dep, inst).run_errand(errand)
                results[inst.id] = ErrandResult(f"{inst.name}", code, out, err)

            in_parallel([by_id[i.id] for i in targets.run], one, plan.MAX_THREADS)
            return [results[i.id] for i in targets.run]

    # -- read-only --------------------------------------------------------------------

    def instances(self, name: str) -> list[dict[str, Any]]:
        dep = self.load(name)
        vm_types = {
            g.get("name"): g.get("vm_type") for g in dep.manifest.get("instance_groups") or []
        }
        rows = []
        for inst in sorted(dep.instances, key=lambda i: (i.group, i.index)):
            agent = self.agent(dep, inst)
            rows.append(
                {
                    "instance": inst.name,
                    "index": inst.index,
                    "process_state": agent.get_state() if inst.vm else "-",
                    "state": inst.state,
                    "az": inst.az or "",
                    "ips": inst.address,
                    "bootstrap": inst.bootstrap,
                    "disk_cid": inst.disk_cid or "",
                    "processes": agent.processes() if inst.vm else [],
                    "vm_cid": f"vm-{inst.id}" if inst.vm else "",
                    "agent_id": inst.id,
                    "vm_type": str(vm_types.get(inst.group) or ""),
                }
            )
        return rows

    def _ssh_targets(
        self, name: str, selector: str | None
    ) -> tuple[DeploymentState, list[InstanceState]]:
        dep = self.load(name)
        insts = self._selected(dep, selector)
        for inst in insts:
            if not inst.vm:
                raise DirectorError(f"Instance '{inst.name}' has no VM (hard-stopped?)")
        return dep, insts

    def ssh(self, name: str, selector: str | None, command: str) -> int:
        dep, insts = self._ssh_targets(name, selector)
        rc = 0
        for inst in insts:
            rc = max(rc, self.agent(dep, inst).ssh(command))
        return rc

    def ssh_results(
        self, name: str, selector: str | None, command: str
    ) -> list[tuple[str, int, str, str]]:
        """`bosh ssh --results`: on every selected instance at once (the CLI's ComboRunner
        starts one ssh per host), each its ``group/id``, exit status, stdout and stderr."""
        dep, insts = self._ssh_targets(name, selector)
        results: dict[str, tuple[str, int, str, str]] = {}

        def one(inst: InstanceState) -> None:
            code, out, err = self.agent(dep, inst).ssh_results(command)
            results[inst.id] = (inst.name, code, out, err)

        in_parallel(insts, one, plan.MAX_THREADS)
        return [results[i.id] for i in insts]


def _state(value: str) -> plan.State:
    if value == "stopped":
        return "stopped"
    if value == "detached":
        return "detached"
    return "started"


def _duration(started: float) -> str:
    s = int(time.monotonic() - started)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
