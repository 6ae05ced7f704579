"""A three-instance redis-ha stand-in for restore tests: real loop disks, real snapshotter
daemons serving the agent API on 127.0.0.2-4, real redis-server processes under a fake
monit (tests/support/fakemonit.py), replicating from redis-leader/0 as redis-ha.yml does."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disk_snapshots.api.client import AgentClient
from disk_snapshots.catalog import Snapshot
from disk_snapshots.commands import restore
from disk_snapshots.config import TlsConfig
from disk_snapshots.snapshot.snapshotter import Snapshotter
from disk_snapshots.vm.resp import RedisClient
from support.cluster import DAEMON
from support.cluster import MEMBERS
from support.cluster import MemberDisks
from support.cluster import MemberSpec
from support.cluster import Vm
from support.cluster import member_doc
from support.cluster import stop_daemon
from support.cluster import write_vm
from support.configdocs import spec_defaults
from support.net import free_port

HERE = Path(__file__).resolve().parent
LEADER, DATA0, DATA1 = MEMBERS


@dataclass
class Node:
    vm: Vm
    redis_port: int
    tls: TlsConfig
    bindir: Path = Path("/nonexistent")  # where the fake monit is

    def restart_daemon(self) -> None:
        """Start this instance's daemon again (after a test killed it), as monit would."""
        self.vm.process = _start_daemon(self.vm, self.bindir, self.monit_dir)

    @property
    def label(self) -> str:
        return self.vm.spec.label

    @property
    def monit_dir(self) -> Path:
        return self.vm.paths.root / "monit"

    def redis(self) -> RedisClient:
        return RedisClient(host=self.vm.spec.address, port=self.redis_port, password="")

    def agent(self) -> AgentClient:
        return AgentClient.connect(self.vm.spec.address, self.vm.port, self.tls)

    def monit(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, str(HERE / "fakemonit.py"), *args],
            env={**os.environ, "FAKE_MONIT_DIR": str(self.monit_dir)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def redis_state(self) -> str:
        return "running" if " OK " in self.monit("summary", "-B") else "stopped"

    def restore_config(self, **props: Any) -> None:
        settings = spec_defaults("restore")["restore"] | props
        path = self.vm.paths.job_config("restore")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"job": "restore", "properties": {"restore": settings}}))

    def catalog(self) -> list[Snapshot]:
        return Snapshotter.load(self.vm.paths).catalog()

    def take(self, note: str = "") -> Snapshot:
        client = self.agent()
        result = client.wait_operation(client.take_snapshot(note=note), timeout=60)
        assert result["state"] == "succeeded", result
        snapshot_id = result["result"]["snapshot_id"]  # type: ignore[index]
        return next(s for s in self.catalog() if s.id == snapshot_id)


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as err:  # the service may be starting: keep asking
            last = err
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def replicating(node: Node) -> bool:
    return node.redis().info("replication").get("master_link_status") == "up"


def tree_digest(store: Path) -> str:
    """Names, modes, owners and contents of every file under a store."""
    digest = hashlib.sha256()
    for path in sorted(store.rglob("*")):
        st = path.lstat()
        digest.update(f"{path.relative_to(store)} {st.st_mode} {st.st_uid}\n".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_errand(node: Node) -> tuple[int, str]:
    out = io.StringIO()
    code = restore.run(node.vm.paths, out=out)
    return code, out.getvalue()


def _redis_conf(spec: MemberSpec, store: Path, port: int) -> str:
    lines = [
        f"bind {spec.address}",
        f"port {port}",
        f"dir {store}/redis",
        "dbfilename dump.rdb",
        "save 3600 1",
        "appendonly no",
        "protected-mode no",
        "daemonize no",
        'logfile ""',
    ]
    if spec.name != LEADER.name:
        # As the README asks of a Redis under the snapshotter: no stale reads while syncing.
        lines += [f"replicaof {LEADER.address} {port}", "replica-serve-stale-data no"]
    return "\n".join(lines) + "\n"


def _start_daemon(vm: Vm, bindir: Path, monit_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_MONIT_DIR": str(monit_dir)}
    # A restarted daemon appends to the log: only what it writes counts.
    start = vm.log.stat().st_size if vm.log.exists() else 0
    with vm.log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", DAEMON, str(vm.paths.root)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon of {vm.spec.label} exited: {vm.log.read_text()}")
        if b"agent API on" in vm.log.read_bytes()[start:]:
            return process
        time.sleep(0.05)
    stop_daemon(process)
    raise RuntimeError(f"daemon of {vm.spec.label} did not serve: {vm.log.read_text()}")


@contextmanager
def redis_cluster(
    pool: Path,
    tmp_path: Path,
    tls: TlsConfig,
    sizes: dict[str, str] | None = None,
    properties: dict[str, Any] | None = None,
) -> Iterator[list[Node]]:
    """redis-leader/0, redis-data/0 and redis-data/1, each running and replicating;
    ``properties`` are merged into every snapshotter's (one level deep)."""
    port, redis_port = free_port(), free_port()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monit = bindir / "monit"
    monit.write_text(f'#!/bin/sh\nexec {sys.executable} {HERE / "fakemonit.py"} "$@"\n')
    monit.chmod(0o755)
    nodes: list[Node] = []
    disks = MemberDisks(pool, tmp_path)
    try:
        for spec in MEMBERS:
            root, cid, image = disks.attach(spec, (sizes or {}).get(spec.label, "256M"))
            store = root / "var/vcap/store"
            (store / "redis").mkdir()
            doc = member_doc(spec, MEMBERS, tls, port, root, pool)
            doc["properties"]["service"].update(
                {"profile": "redis", "redis": {"port": redis_port, "password": ""}}
            )
            for link in doc["links"].values():
                link["properties"]["service"]["profile"] = "redis"
            for key, value in (properties or {}).items():
                current = doc["properties"].get(key)
                doc["properties"][key] = current | value if isinstance(current, dict) else value
            vm = Vm(spec, write_vm(root, doc, cid, image), port)
            node = Node(vm, redis_port, tls, bindir)
            node.monit_dir.mkdir()
            conf = root / "redis.conf"
            conf.write_text(_redis_conf(spec, store, redis_port))
            (node.monit_dir / "services.json").write_text(
                json.dumps({"redis": [shutil.which("redis-server"), str(conf)]})
            )
            node.restore_config()
            nodes.append(node)
        for node in nodes:
            node.monit("start", "redis")
        for node in nodes:
            node.restart_daemon()
        for node in nodes:
            wait_for(f"{node.label} answers", lambda n=node: n.redis().call("PING") == "PONG")
        for node in nodes[1:]:
            wait_for(f"{node.label} replicates", lambda n=node: replicating(n))
        yield nodes
    finally:
        for node in nodes:
            if node.vm.process is not None:
                stop_daemon(node.vm.process)
        for node in nodes:
            subprocess.run(
                [sys.executable, str(HERE / "fakemonit.py"), "stop", "redis"],
                env={**os.environ, "FAKE_MONIT_DIR": str(node.monit_dir)},
                check=False,
                capture_output=True,
            )
        disks.release()
