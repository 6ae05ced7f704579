"""The BOSH agent's side of one simulated VM: layout, apply, hooks, drain, monit, errands.

Each method is one agent action as the Director sends it (bosh-agent agent/action),
carried out in the instance's mount namespace with the agent's conventions
(reference/bosh-contracts.md §1, §4).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import TypeVar

from localbosh import plan
from localbosh.disks import STORE
from localbosh.disks import is_mounted_in
from localbosh.disks import migrate
from localbosh.disks import mount_disk
from localbosh.disks import unmount_disk
from localbosh.monit import Monit
from localbosh.monit import MonitError
from localbosh.namespace import CommandError
from localbosh.namespace import Namespace

VCAP = "/var/vcap"
# /var/vcap/data/sys/run is a 16m tmpfs on stemcells (env.bosh.run_dir.tmpfs_size).
RUN_TMPFS_SIZE = "16m"
# The agent's working directory, which hooks and errands inherit (the stemcell's
# bosh-agent.service: WorkingDirectory=/var/vcap/bosh).
AGENT_DIR = f"{VCAP}/bosh"
# bosh-agent platform/disk/linux_mounter.go Unmount: `umount` up to 600 times, 1 s apart
# (linux_disk_manager.go), then the action fails. LOCALBOSH_UNMOUNT_ATTEMPTS shortens it
# for tests that make the disk busy on purpose.
UNMOUNT_ATTEMPTS = 600
UNMOUNT_RETRY_DELAY = 1.0


class AgentError(Exception):
    """An agent action failed; the message is the agent's."""


@dataclass(frozen=True)
class Identity:
    deployment: str
    group: str
    index: int
    id: str
    az: str | None
    address: str
    bootstrap: bool

    @property
    def name(self) -> str:
        return f"{self.group}/{self.id}"


@dataclass(frozen=True)
class RenderedJob:
    name: str
    release: str
    files: Mapping[str, str]  # dest relative to /var/vcap/jobs/<job>/ -> content
    packages: Sequence[str]
    sha1: str

    @property
    def is_errand(self) -> bool:
        return "bin/run" in self.files


Log = Callable[[str], None]
T = TypeVar("T")


class Agent:
    def __init__(
        self,
        fs_root: Path,
        ns: Namespace,
        ident: Identity,
        monit_password: str,
        hosts_file: Path | None = None,
    ) -> None:
        self.fs_root = fs_root
        # The deployment's names (localbosh.dns), seen as /etc/hosts on this VM.
        self.hosts_file = hosts_file
        self.root = fs_root / "var" / "vcap"  # bound onto /var/vcap inside the namespace
        self.ns = ns
        self.ident = ident
        self.monit = Monit(ns, self.root, ident.address, monit_password)
        self.monit_password = monit_password

    # -- VM ---------------------------------------------------------------------------

    def create_vm(self, env: Mapping[str, object] | None = None) -> None:
        """Boot a "stemcell": /var/vcap laid out, namespace made, monit running, no jobs."""
        r = self.root
        for d in (
            "bosh/bin",
            "bosh/etc",
            "bosh/log",
            "data/sys/run",
            "data/sys/log",
            "data/jobs",
            "data/packages",
            "jobs",
            "packages",
            "monit",
            "instance",
            "store",
        ):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "store").chmod(0o700)
        if not (r / "sys").is_symlink():
            (r / "sys").symlink_to("data/sys")
        try:
            self.monit.install()
        except MonitError as exc:
            raise AgentError(f"{self.ident.name}: {exc}") from exc
        self.write_settings(env or {}, {})
        Path("/var/vcap").mkdir(exist_ok=True)  # mount point on the host, stays empty there
        self.ns.create()
        self.ns.run(["mount", "--bind", str(r), VCAP], what=f"binding {r} onto {VCAP}")
        self.ns.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={RUN_TMPFS_SIZE},mode=0770",
                "tmpfs",
                f"{VCAP}/data/sys/run",
            ],
            what="mounting the sys/run tmpfs",
        )
        if self.hosts_file is not None:
            if not self.hosts_file.exists():
                self.hosts_file.write_text(Path("/etc/hosts").read_text())
            self.ns.run(
                ["mount", "--bind", str(self.hosts_file), "/etc/hosts"],
                what=f"binding {self.hosts_file} onto /etc/hosts",
            )
        try:
            self.monit.start_daemon()
        except MonitError as exc:
            raise AgentError(f"{self.ident.name}: {exc}") from exc

    def monit_version(self) -> str:
        """`monit -V` on the VM: the stemcell's monit, not the host's."""
        return self.monit.version()

    def delete_vm(self) -> None:
        """Everything on the VM goes: processes, mounts, ephemeral data. The disk image stays."""
        if self.ns.exists():
            self.monit.quit()
            with contextlib.suppress(CommandError):
                unmount_disk(self.ns)
        self.ns.destroy()
        shutil.rmtree(self.fs_root.parent, ignore_errors=True)

    def write_settings(
        self,
        env: Mapping[str, object],
        disks: Mapping[str, Path],
        volume_ids: Mapping[str, str] | None = None,
    ) -> None:
        """settings.json as the agent keeps it. A disk's hint carries its image path and,
        when the disk has an EBS volume (localbosh.ec2), that volume's id, as the AWS
        CPI's hints do."""
        hints: dict[str, dict[str, str]] = {}
        for cid, path in disks.items():
            hints[cid] = {"path": str(path)}
            if volume_ids and cid in volume_ids:
                hints[cid]["volume_id"] = volume_ids[cid]
        settings = {
            "agent_id": self.ident.id,
            "vm": {"name": f"vm-{self.ident.id}"},
            "networks": {
                "default": {
                    "type": "manual",
                    "ip": self.ident.address,
                    "netmask": "255.0.0.0",
                    "gateway": "127.0.0.1",
                    "default": ["dns", "gateway"],
                }
            },
            "disks": {
                "system": "/dev/root",
                "ephemeral": None,
                "persistent": hints,
            },
            "env": {"persistent_disk_fs": "ext4", **dict(env)},
            "blobstore": {"provider": "local", "options": {}},
            "mbus": "",
            "ntp": [],
        }
        (self.root / "bosh").mkdir(parents=True, exist_ok=True)
        (self.root / "bosh/settings.json").write_text(json.dumps(settings, indent=2))

    # -- disks ------------------------------------------------------------------------

    def mount_disk(self, cid: str, image: Path) -> None:
        if is_mounted_in(self.ns, STORE):
            raise AgentError(f"{self.ident.name}: {STORE} is already mounted")
        mount_disk(self.ns, image)
        (self.root / "bosh/managed_disk_settings.json").write_text(cid)

    def unmount_disk(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """The unmount_disk action: retried while something holds the disk, then fatal
        (a leftover hook child or a frozen filesystem fails `stop --hard` and recreate)."""
        attempts = int(os.environ.get("LOCALBOSH_UNMOUNT_ATTEMPTS") or UNMOUNT_ATTEMPTS)
        for attempt in range(1, attempts + 1):
            try:
                unmount_disk(self.ns)
                return
            except CommandError as exc:
                if attempt == attempts:
                    raise AgentError(
                        f"{self.ident.name}: Unmounting persistent disk after {attempts} "
                        f"attempts: {exc}"
                    ) from exc
                sleep(UNMOUNT_RETRY_DELAY)

    def migrate_disk(self, new_cid: str, new_image: Path) -> None:
        migrate(self.ns, new_image)
        (self.root / "bosh/managed_disk_settings.json").write_text(new_cid)

    # -- apply ------------------------------------------------------------------------

    def apply(
        self,
        jobs: Sequence[RenderedJob],
        spec: Mapping[str, object],
        lay_out_packages: Callable[[Path, Sequence[str]], None] | None = None,
    ) -> None:
        r = self.root
        inst = r / "instance"
        inst.mkdir(exist_ok=True)
        for key, value in (
            ("id", self.ident.id),
            ("az", self.ident.az or ""),
            ("name", self.ident.group),
            ("deployment", self.ident.deployment),
        ):
            (inst / key).write_text(value)
        # RemoveAllJobs: monit forgets every job until the start action configures them
        # again, so nothing starts before pre-start has run (concrete_applier.go Apply).
        shutil.rmtree(r / "monit/job", ignore_errors=True)
        for link in (r / "jobs").iterdir():
            link.unlink()
        packages = sorted({p for job in jobs for p in job.packages})
        if packages:
            if lay_out_packages is None:
                raise AgentError(
                    f"{self.ident.name}: jobs need packages {packages} but no compiled "
                    "packages were provided"
                )
            lay_out_packages(self.fs_root, packages)
        for job in jobs:
            target = r / "data/jobs" / job.name / job.sha1
            if target.exists():
                shutil.rmtree(target)
            for dest, content in job.files.items():
                path = target / dest
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
                # owner_fix.go: bin/ 0750, everything else 0640
                path.chmod(0o750 if dest.startswith("bin/") else 0o640)
            pkg_dir = target / "packages"
            pkg_dir.mkdir(exist_ok=True)
            for pkg in job.packages:
                (pkg_dir / pkg).symlink_to(f"{VCAP}/packages/{pkg}")
            (r / "jobs" / job.name).symlink_to(f"{VCAP}/data/jobs/{job.name}/{job.sha1}")
            for d in (r / "data" / job.name, r / "data/sys/log" / job.name):
                d.mkdir(parents=True, exist_ok=True)
                d.chmod(0o770)
            self.ns.run(["mkdir", "-p", f"{VCAP}/sys/run/{job.name}"], what="creating sys/run dir")
        (r / "bosh/spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
        try:
            self.monit.reload()
        except MonitError as exc:
            raise AgentError(f"{self.ident.name}: {exc}") from exc

    def applied_jobs(self) -> list[str]:
        spec_path = self.root / "bosh/spec.json"
        if not spec_path.exists():
            return []
        spec = json.loads(spec_path.read_text())
        return [str(j) for j in spec.get("job_names", [])]

    # -- scripts ----------------------------------------------------------------------

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The agent's own environment (this process's), PATH replaced, plus the script's
        variables: bosh-utils exec_cmd_runner.go mergeEnv(os.Environ(), cmd.Env)."""
        return {**os.environ, "PATH": plan.HOOK_PATH, **(extra or {})}

    def _run(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """A script as the agent starts it: in the agent's working directory, in a process
        group of its own (bosh-utils exec_process_unix.go Setpgid), stdin closed."""
        return subprocess.run(
            self.ns.argv(argv, wd=AGENT_DIR),
            env=self._env(env),
            stdin=subprocess.DEVNULL,
            process_group=0,
            check=False,
            **kwargs,
        )

    def host_path(self, path: str) -> Path:
        """Where a /var/vcap path inside the instance is on the host (symlinks resolved
        against the instance's /var/vcap, not the host's)."""
        rel = Path(path).relative_to(VCAP)
        current = self.root
        for part in rel.parts:
            current = current / part
            for _ in range(40):
                if not current.is_symlink():
                    break
                target = Path(str(current.readlink()))
                if target.is_absolute():
                    current = self.root / target.relative_to(VCAP)
                else:
                    current = current.parent / target
        return current

    def jobs_with(self, script: str) -> list[str]:
        return [
            j
            for j in self.applied_jobs()
            if self.host_path(f"{VCAP}/jobs/{j}/bin/{script}").exists()
        ]

    def run_script(self, script: str, env: Mapping[str, str] | None = None) -> None:
        """Run `script` of every job that ships it, in parallel; logs appended as the agent does."""
        jobs = self.jobs_with(script)
        results: dict[str, int] = {}

        def one(job: str) -> None:
            log_dir = self.root / "data/sys/log" / job
            log_dir.mkdir(parents=True, exist_ok=True)
            with (
                (log_dir / f"{script}.stdout.log").open("ab") as out,
                (log_dir / f"{script}.stderr.log").open("ab") as err,
            ):
                # Only the run_script hooks are started at the agent's nice + 5
                # (generic_script.go SpawnWithLowerPriority); drain and errands are not.
                argv = ["nice", "-n", "5", f"{VCAP}/jobs/{job}/bin/{script}"]
                proc = self._run(argv, env, stdout=out, stderr=err)
            results[job] = proc.returncode

        in_parallel(jobs, one)
        failed = [j for j in jobs if results.get(j) != 0]
        if failed:
            raise AgentError(
                plan.parallel_failure_message(script, failed, [j for j in jobs if j not in failed])
            )

    def drain(
        self,
        params: Sequence[str],
        job_state: int,
        next_state: int,
        log: Log,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """The drain action: unmonitor, then every job's drain in parallel with the
        signed-integer contract (negative: wait |n| and ask again with job_check_status)."""
        try:
            self.monit.unmonitor()
        except (MonitError, CommandError) as exc:
            raise AgentError(f"Unmonitoring services: {exc}") from exc
        jobs = self.jobs_with("drain")
        errors: dict[str, str] = {}

        def one(job: str) -> None:
            args: Sequence[str] = params
            env = {
                "BOSH_JOB_STATE": plan.job_state_env(job_state),
                "BOSH_JOB_NEXT_STATE": plan.job_state_env(next_state),
            }
            while True:
                argv = [f"{VCAP}/jobs/{job}/bin/drain", *args]
                proc = self._run(argv, env, capture_output=True, text=True)
                try:
                    value = plan.parse_drain_output(proc.stdout)
                except plan.DrainOutputError as exc:
                    errors[job] = f"{exc} (exit {proc.returncode}, stderr: {proc.stderr.strip()!r})"
                    return
                log(f"{self.ident.name}: drain {job} {' '.join(args)} -> {value}")
                sleep(abs(value))
                if value >= 0:
                    return
                # Re-invocations ask for status and carry no next state.
                args = plan.CHECK_STATUS_ARGS
                env = {"BOSH_JOB_STATE": plan.job_state_env(job_state)}

        in_parallel(jobs, one)
        if errors:
            failed = [j for j in jobs if j in errors]
            msg = plan.parallel_failure_message(
                "drain", failed, [j for j in jobs if j not in errors]
            )
            details = "; ".join(f"{j}: {e}" for j, e in errors.items())
            raise AgentError(f"{msg} ({details})")

    def stop(self) -> None:
        """The stop action (StopAndWait); the stopped file marks the jobs as stopped by
        the agent, not failing, once `monit stop -g vcap` went through."""
        try:
            self.monit.stop_and_wait(stopped=lambda: (self.root / "monit/stopped").write_text(""))
        except (MonitError, CommandError) as exc:
            raise AgentError(f"Stopping services: {exc}") from exc

    def configure_jobs(self) -> None:
        """ConfigureJobs: each job's monit file as /var/vcap/monit/job/NNNN_<job>.monitrc
        (NNNN counting from the last job of the spec, `*.monit` files as
        NNNN_<job>_<label>.monitrc), then a reload (concrete_applier.go ConfigureJobs,
        rendered_job_applier.go Configure, monit_job_supervisor.go AddJob)."""
        job_dir = self.root / "monit/job"
        job_dir.mkdir(parents=True, exist_ok=True)
        for i, job in enumerate(reversed(self.applied_jobs())):
            installed = self.host_path(f"{VCAP}/jobs/{job}")
            monit_file = installed / "monit"
            if monit_file.is_file():
                (job_dir / f"{i:04d}_{job}.monitrc").write_bytes(monit_file.read_bytes())
            for extra in sorted(installed.glob("*.monit")):
                label = extra.name.removesuffix(".monit")
                (job_dir / f"{i:04d}_{job}_{label}.monitrc").write_bytes(extra.read_bytes())
        self.monit.reload()

    def start(self) -> None:
        """The start action: configure the jobs in monit, then start every vcap service."""
        try:
            self.configure_jobs()
            self.monit.start()
        except (MonitError, CommandError) as exc:
            raise AgentError(f"Starting services: {exc}") from exc
        (self.root / "monit/stopped").unlink(missing_ok=True)

    def get_state(self) -> str:
        """running | failing | starting | stopped | unknown, as the agent reports it."""
        if not self.ns.exists():
            return "unknown"
        if (self.root / "monit/stopped").exists():
            return "stopped"
        try:
            services = self.monit.status().in_group("vcap")
        except MonitError:
            return "unknown"
        state = "running"
        for svc in services:
            if svc.status == "starting":
                return "starting"
            if not svc.monitored or svc.status != "running":
                state = "failing"
        return state

    def processes(self) -> list[tuple[str, str]]:
        try:
            return [(s.name, s.status) for s in self.monit.status().in_group("vcap")]
        except MonitError:
            return []

    def run_errand(self, job: str) -> tuple[int, str, str]:
        proc = self._run([f"{VCAP}/jobs/{job}/bin/run"], capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr

    def ssh(self, command: str) -> int:
        return subprocess.run(self.ns.argv(["bash", "-c", command]), check=False).returncode

    def ssh_results(self, command: str) -> tuple[int, str, str]:
        """``bosh ssh --results``: the command's exit status and what it printed."""
        proc = subprocess.run(
            self.ns.argv(["bash", "-c", command]),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr


def in_parallel(items: Sequence[T], fn: Callable[[T], None], limit: int | None = None) -> None:
    """`fn` on every item in threads, at most `limit` at once (all without one); the first
    error is raised once all have finished, as the agent's parallel scripts and the
    Director's ThreadPool do."""
    errors: list[BaseException] = []
    pending = list(items)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                item = pending.pop(0)
            try:
                fn(item)
            except BaseException as exc:  # re-raised in the caller's thread below
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(min(limit or len(items), len(items)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
