"""Service profiles: how to ask the colocated service its role and make it flush to disk.

Each profile answers three questions with deadlines: which role does this instance
play (leader, follower, standalone), how to get everything the service holds in
memory onto the disk before a snapshot, and how to undo that afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from disk_snapshots.annotations import ROLES
from disk_snapshots.annotations import Role
from disk_snapshots.config import ServiceConfig
from disk_snapshots.errors import ReleaseError
from disk_snapshots.vm import processes
from disk_snapshots.vm.resp import RedisClient
from disk_snapshots.vm.resp import RedisError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# Imports and restore.verify are operator commands: they get as long as pre-start gives them.
IMPORT_SECONDS = 600


class ServiceError(ReleaseError, RuntimeError):
    """The service did not answer a probe or refused to flush."""


class Service(Protocol):
    name: str

    def role(self) -> Role: ...

    def replication(self) -> Replication | None:
        """Where this instance's replication stands; None when the profile cannot tell."""
        ...

    def flush(self) -> bool:
        """Make the on-disk state complete; False when this profile has nothing to flush."""
        ...

    def resume(self) -> None: ...


@dataclass(frozen=True)
class Replication:
    """What a replicating service says of itself (Redis: INFO replication)."""

    role: Role
    offset: int  # the leader's: what it has sent; a follower's: what it has applied
    link_up: bool = True  # a follower's link to its leader
    syncing: bool = False  # a follower still loading the leader's full copy

    def to_json(self) -> dict[str, object]:
        return {
            "role": self.role,
            "offset": self.offset,
            "link_up": self.link_up,
            "syncing": self.syncing,
        }


def behind(follower: Replication | None, leader_offset: int) -> str:
    """Why a follower is not in sync with the leader ("" when it is). A profile that cannot
    tell (None) is taken at its word once it reports follower."""
    if follower is None:
        return ""
    if follower.role != "follower":
        return f"it reports {follower.role}"
    if not follower.link_up:
        return "its link to the leader is down"
    if follower.syncing:
        return "it is still loading the leader's full copy"
    if follower.offset < leader_offset:
        return f"it has applied up to offset {follower.offset}, the leader sent {leader_offset}"
    return ""


def run_argv(
    argv: Sequence[str],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> str:
    """A service command (profile probe, flush, import, verify); ServiceError when it fails."""
    return processes.run_argv(argv, what, timeout, env, error=ServiceError)


def run_imports(commands: Sequence[Sequence[str]], what: str) -> None:
    """``service.import`` commands, in order (after a restore, or when drain left state)."""
    for argv in commands:
        log.info("%s: running %s", what, " ".join(argv))
        run_argv(argv, what, timeout=IMPORT_SECONDS)


@dataclass
class RedisService:
    client: RedisClient
    timeout: float = DEFAULT_TIMEOUT
    name: str = "redis"

    def role(self) -> Role:
        try:
            replication = self.client.info("replication")
        except RedisError as err:
            raise ServiceError(f"redis role probe (INFO replication) failed: {err}") from None
        if replication.get("role") == "slave":
            return "follower"
        if replication.get("role") == "master":
            replicas = int(replication.get("connected_slaves", "0") or 0)
            return "leader" if replicas > 0 else "standalone"
        raise ServiceError(f"redis reported an unknown role {replication.get('role')!r}")

    def replication(self) -> Replication:
        """INFO replication: a leader's offset, a follower's link, sync and offset."""
        try:
            info = self.client.info("replication")
        except RedisError as err:
            raise ServiceError(
                f"redis replication probe (INFO replication) failed: {err}"
            ) from None
        if info.get("role") == "slave":
            return Replication(
                role="follower",
                offset=_int(info.get("slave_repl_offset")),
                link_up=info.get("master_link_status") == "up",
                syncing=info.get("master_sync_in_progress") != "0",
            )
        replicas = _int(info.get("connected_slaves")) > 0
        return Replication(
            role="leader" if replicas else "standalone",
            offset=_int(info.get("master_repl_offset")),
        )

    def flush(self) -> bool:
        """BGSAVE and wait for it: clients keep writing meanwhile (SAVE would block them)."""
        deadline = time.monotonic() + self.timeout
        try:
            before = int(self.client.info("persistence").get("rdb_saves", "0"))
            while True:
                try:
                    self._bgsave()
                    break
                except RedisError as err:
                    # Another save is running and may predate our call: wait, then start ours.
                    if "already in progress" not in str(err):
                        raise
                    before = self._wait_idle(deadline)
            while True:
                persistence = self.client.info("persistence")
                done = persistence.get("rdb_bgsave_in_progress") == "0"
                if done and int(persistence.get("rdb_saves", "0")) > before:
                    if persistence.get("rdb_last_bgsave_status") != "ok":
                        raise ServiceError("redis BGSAVE failed (rdb_last_bgsave_status is not ok)")
                    return True
                if time.monotonic() > deadline:
                    raise ServiceError(f"redis BGSAVE did not finish within {self.timeout:.0f}s")
                time.sleep(0.005)
        except RedisError as err:
            raise ServiceError(f"redis refused to flush (BGSAVE): {err}") from None

    def _bgsave(self) -> None:
        try:
            self.client.call("BGSAVE")
        except RedisError as err:
            if not str(err).startswith("MASTERDOWN"):
                raise
        else:
            return
        # A follower with replica-serve-stale-data no refuses BGSAVE while its link to the
        # leader is down: in a rolling deploy, a stop or a delete, the leader goes first.
        # Its data cannot change then (a replica takes no writes but the leader's), so
        # saving it is as consistent as ever. The setting is lifted for the BGSAVE call
        # alone (the fork is all it needs) and put back at once; CONFIG SET changes
        # nothing on disk, so a crash in between leaves the configured value at restart.
        log.warning(
            "redis: the follower's link to its leader is down (MASTERDOWN); saving its "
            "unchanged data with replica-serve-stale-data lifted for the BGSAVE call"
        )
        self.client.call("CONFIG", "SET", "replica-serve-stale-data", "yes")
        try:
            self.client.call("BGSAVE")
        finally:
            self.client.call("CONFIG", "SET", "replica-serve-stale-data", "no")

    def _wait_idle(self, deadline: float) -> int:
        while True:
            persistence = self.client.info("persistence")
            if persistence.get("rdb_bgsave_in_progress") == "0":
                return int(persistence.get("rdb_saves", "0"))
            if time.monotonic() > deadline:
                raise ServiceError("redis: a running background save did not finish in time")
            time.sleep(0.01)

    def resume(self) -> None:
        """Nothing to undo: BGSAVE never stopped Redis."""


def _int(text: str | None) -> int:
    return int(text) if text and text.lstrip("-").isdigit() else -1


def find_psql() -> str:
    """psql from the colocated PostgreSQL job's package, else from PATH.

    BOSH jobs' PATH lacks /var/vcap/packages, and the postgres package's name carries
    its version (postgres-15, postgres-16...), so it is looked for there first.
    """
    for candidate in sorted(Path("/var/vcap/packages").glob("postgres*/bin/psql"), reverse=True):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("psql")
    if found is None:
        raise ServiceError(
            "psql not found in /var/vcap/packages/postgres*/bin or on PATH: the postgres "
            "profile needs the PostgreSQL client of the colocated job"
        )
    return found


@dataclass
class PostgresService:
    host: str
    port: int
    user: str
    database: str
    password: str = ""
    timeout: float = DEFAULT_TIMEOUT
    name: str = "postgres"

    def _query(self, sql: str, what: str) -> str:
        argv = [
            find_psql(),
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
            "--set",
            "ON_ERROR_STOP=1",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--username",
            self.user,
            "--dbname",
            self.database,
            "--command",
            sql,
        ]
        # The password goes in the environment, never in argv (visible in ps).
        env = {"PGCONNECT_TIMEOUT": "10"}
        if self.password:
            env["PGPASSWORD"] = self.password
        return run_argv(argv, what, self.timeout, env=env).strip()

    def role(self) -> Role:
        in_recovery = self._query("SELECT pg_is_in_recovery()", "postgres role probe")
        if in_recovery == "t":
            return "follower"
        replicas = self._query("SELECT count(*) FROM pg_stat_replication", "postgres role probe")
        return "leader" if replicas.isdigit() and int(replicas) > 0 else "standalone"

    def flush(self) -> bool:
        """CHECKPOINT: every dirty buffer on disk, so recovery from the snapshot replays little."""
        self._query("CHECKPOINT", "postgres flush (CHECKPOINT)")
        return True

    def resume(self) -> None:
        """Nothing to undo: CHECKPOINT does not pause PostgreSQL."""

    def replication(self) -> Replication | None:
        """This profile cannot tell; its role is taken at its word."""
        return None


@dataclass
class CommandService:
    role_argv: tuple[str, ...]
    flush_argv: tuple[str, ...]
    resume_argv: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT
    name: str = "command"

    def role(self) -> Role:
        printed = run_argv(self.role_argv, "role command", self.timeout).strip()
        if printed not in ROLES:
            raise ServiceError(
                f"role command {' '.join(self.role_argv)} printed {printed[:80]!r}; "
                "expected leader, follower or standalone"
            )
        return printed

    def flush(self) -> bool:
        if not self.flush_argv:
            return False
        run_argv(self.flush_argv, "flush command", self.timeout)
        return True

    def resume(self) -> None:
        if self.resume_argv:
            run_argv(self.resume_argv, "resume command", self.timeout)

    def replication(self) -> Replication | None:
        """This profile cannot tell; its role is taken at its word."""
        return None


@dataclass
class NoService:
    name: str = "none"

    def role(self) -> Role:
        return "unknown"

    def flush(self) -> bool:
        return False

    def resume(self) -> None:
        """Nothing was flushed."""

    def replication(self) -> Replication | None:
        """This profile cannot tell; its role is taken at its word."""
        return None


def make_service(config: ServiceConfig, address: str = "127.0.0.1") -> Service:
    if config.profile == "redis":
        client = RedisClient(host=address, port=config.redis.port, password=config.redis.password)
        return RedisService(client)
    if config.profile == "postgres":
        pg = config.postgres
        return PostgresService(pg.host or address, pg.port, pg.user, pg.database, pg.password)
    if config.profile == "command":
        c = config.command
        return CommandService(c.role, c.flush, c.resume)
    if config.profile == "none":
        return NoService()
    raise ServiceError(f"service.profile {config.profile!r} is not available in this version")


# What a follower's INFO replication must say before a restore calls it in sync: the
# link to its leader is up and no full sync is running (it has loaded the leader's data).
REDIS_REPLICATION_FIELDS = (
    "role",
    "master_host",
    "master_link_status",
    "master_sync_in_progress",
    "master_repl_offset",
    "slave_repl_offset",
    "connected_slaves",
)


def replication_state(service: Service) -> dict[str, object]:
    """How this instance replicates, for the operator's wait after a restore: the
    service's own fields, and ``in_sync`` (a follower's link is up and no sync runs;
    None when the profile cannot tell). ServiceError when the service does not answer."""
    if not isinstance(service, RedisService):
        return {"in_sync": None}
    try:
        info = service.client.info("replication")
    except RedisError as err:
        raise ServiceError(f"redis INFO replication failed: {err}") from None
    state: dict[str, object] = {k: info[k] for k in REDIS_REPLICATION_FIELDS if k in info}
    if info.get("role") == "slave":
        state["in_sync"] = (
            info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == "0"
        )
    else:
        state["in_sync"] = None
    return state
