"""The snapshotter job's BOSH lifecycle hooks (docs/bosh-contracts.md, the hooks).

Each returns an exit code; drain also returns the one line it prints, because the
agent reads drain's stdout as a signed integer and nothing else may reach it.
Everything else goes to stderr, which BOSH appends to /var/vcap/sys/log/snapshotter/.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from pathlib import Path

from disk_snapshots.config import EXIT_INVALID_CONFIG
from disk_snapshots.config import ConfigError
from disk_snapshots.config import SnapshotterConfig
from disk_snapshots.config import load_snapshotter_config
from disk_snapshots.drain import DrainArgumentError
from disk_snapshots.drain import decide
from disk_snapshots.errors import code_of
from disk_snapshots.providers import make_provider
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.restore.journal import Journal
from disk_snapshots.snapshot.snapshotter import SNAPSHOT_ERRORS
from disk_snapshots.snapshot.snapshotter import VM_PATHS
from disk_snapshots.snapshot.snapshotter import Paths
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.snapshot.snapshotter import pending_import_marker
from disk_snapshots.vm.deadline import DeadlineExceeded
from disk_snapshots.vm.deadline import deadline
from disk_snapshots.vm.instance import InstanceError
from disk_snapshots.vm.instance import current_disk
from disk_snapshots.vm.monit import service_stopped
from disk_snapshots.vm.services import ServiceError
from disk_snapshots.vm.services import run_imports

log = logging.getLogger("disk_snapshots.hooks")

PRE_START_SECONDS = 600
POST_START_SECONDS = 600
PROBE_INTERVAL = 1.0


def _config(paths: Paths) -> SnapshotterConfig | None:
    """The snapshotter's config, or None when it is invalid (every bad property logged)."""
    try:
        return load_snapshotter_config(paths.config)
    except ConfigError as err:
        log.error("%s", err.report("invalid snapshotter properties"))
        return None


def pre_start(paths: Paths) -> int:
    """Refuse a bad deploy early, and import state that a restore or drain left behind."""
    config = _config(paths)
    if config is None:
        return EXIT_INVALID_CONFIG
    try:
        with deadline(PRE_START_SECONDS, "pre-start"):
            disk = current_disk(paths.root)
            journal = Journal.read(disk.mount)
            if journal is not None and journal.blocks_start:
                log.error("pre-start refuses to start the service: %s", journal.refusal())
                return 1
            # Listing proves the provider answers with these settings before the service
            # starts relying on snapshots.
            make_provider(config.provider, disk).list()
            marker = pending_import_marker(disk.mount)
            if marker.exists() and config.service.import_pre_start:
                run_imports(config.service.import_pre_start, "import.pre_start")
    except (InstanceError, ProviderError, ServiceError, DeadlineExceeded, OSError) as err:
        log.error("pre-start failed: %s", err)
        return code_of(err)
    log.info("pre-start: configuration valid, disk %s, provider %s", disk.cid, config.provider.type)
    return 0


def post_start(paths: Paths) -> int:
    """Wait until the service answers its probe, record its role, finish pending imports."""
    try:
        snapshotter = Snapshotter.load(paths)
    except ConfigError as err:
        log.error("%s", err.report("invalid snapshotter properties"))
        return EXIT_INVALID_CONFIG
    except (InstanceError, ProviderError) as err:
        log.error("post-start failed: %s", err)
        return code_of(err)
    config, service = snapshotter.config, snapshotter.service
    try:
        with deadline(POST_START_SECONDS, "post-start"):
            while True:
                try:
                    role = service.role()
                    break
                except ServiceError as err:
                    log.info("waiting for %s to answer: %s", service.name, err)
                    time.sleep(PROBE_INTERVAL)
            snapshotter.record_role(role)
            marker = pending_import_marker(snapshotter.disk.mount)
            if marker.exists():
                run_imports(config.service.import_post_start, "import.post_start")
                marker.unlink()
    except (ServiceError, DeadlineExceeded, OSError) as err:
        log.error("post-start failed: %s", err)
        return code_of(err)
    log.info("post-start: %s answers as %s", service.name, role)
    return 0


def drain(args: Sequence[str], environ: Mapping[str, str], paths: Paths) -> tuple[int, str]:
    """Take the snapshot this stop calls for; returns (exit code, what to print on stdout).

    Failure with ``drain.on_failure: fail`` prints nothing and exits 1: the agent then
    fails on "did not return a signed integer", whatever exit code it honours
    (docs/bosh-contracts.md, drain).
    """
    config = _config(paths)
    if config is None:
        return EXIT_INVALID_CONFIG, ""
    try:
        decision = decide(
            list(args),
            environ.get("BOSH_JOB_STATE"),
            environ.get("BOSH_JOB_NEXT_STATE"),
            config.drain.snapshot_on,
        )
    except DrainArgumentError as err:
        return _drain_failed(config, f"drain: {err}", err.exit_code)
    log.info("drain %s: %s", " ".join(args), decision.reason)
    if decision.trigger is None:
        return 0, "0"
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.drain_file.write_text(json.dumps({"trigger": decision.trigger, "event": decision.event}))
    stopped = service_stopped(config.service.jobs, paths.root)
    try:
        with deadline(config.drain.timeout, "the drain snapshot"):
            snapshotter = Snapshotter.load(paths)
            if stopped:
                log.info("%s; nothing to flush, the snapshot is clean", stopped)
                taken = snapshotter.take_clean(decision.trigger)
            else:
                taken = snapshotter.take(decision.trigger)
            for warning in taken.warnings:
                log.warning("%s", warning)
            if config.service.import_pre_start or config.service.import_post_start:
                _mark_pending_import(snapshotter.disk.mount, f"drain {decision.trigger}")
            plan = snapshotter.prune()
    except SNAPSHOT_ERRORS as err:
        return _drain_failed(config, f"{decision.trigger} snapshot failed: {err}", code_of(err))
    a = taken.snapshot.annotations
    log.info(
        "%s snapshot %s of %s taken: consistency %s, role %s, frozen %.3fs; retention deleted %d",
        decision.trigger,
        taken.snapshot.id,
        a.instance,
        a.consistency,
        a.role,
        taken.frozen_seconds,
        len(plan.delete),
    )
    return 0, "0"


def _drain_failed(config: SnapshotterConfig, message: str, code: int) -> tuple[int, str]:
    if config.drain.on_failure == "warn":
        log.warning("%s; continuing because drain.on_failure is warn", message)
        return 0, "0"
    log.error("%s; stopping the deploy because drain.on_failure is fail", message)
    return code, ""


def _mark_pending_import(store: Path, reason: str) -> None:
    marker = pending_import_marker(store)
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(json.dumps({"reason": reason, "at": datetime.now(UTC).isoformat()}))


def post_stop(paths: Paths) -> int:
    """With ``post_stop_snapshot``: a clean snapshot, the service being stopped now."""
    config = _config(paths)
    if config is None:
        return EXIT_INVALID_CONFIG
    if not config.post_stop_snapshot:
        return 0
    try:
        trigger = json.loads(paths.drain_file.read_text()).get("trigger", "pre-stop")
    except (OSError, ValueError):
        trigger = "pre-stop"
    try:
        with deadline(config.drain.timeout, "the post-stop snapshot"):
            snapshotter = Snapshotter.load(paths)
            snapshot = snapshotter.take_clean(trigger).snapshot
            snapshotter.prune()
    except SNAPSHOT_ERRORS as err:
        log.error("post-stop: clean %s snapshot failed: %s", trigger, err)
        return code_of(err)
    log.info("post-stop: clean %s snapshot %s taken", trigger, snapshot.id)
    return 0


def run_hook(name: str, args: Sequence[str], paths: Paths = VM_PATHS) -> int:
    if name == "drain":
        code, line = drain(args, os.environ, paths)
        sys.stderr.flush()
        if line:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        return code
    hooks = {"pre-start": pre_start, "post-start": post_start, "post-stop": post_stop}
    return hooks[name](paths)
