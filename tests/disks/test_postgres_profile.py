"""The postgres profile against Debian's PostgreSQL with its data on a real loop disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from disk_snapshots.annotations import Annotations
from disk_snapshots.annotations import Consistency
from disk_snapshots.annotations import Role
from disk_snapshots.config import QuiesceConfig
from disk_snapshots.providers.loopback import LoopbackProvider
from disk_snapshots.snapshot.quiesce import Freezer
from disk_snapshots.snapshot.quiesce import QuiesceError
from disk_snapshots.snapshot.quiesce import snapshot_quiesced
from disk_snapshots.vm.instance import Disk
from disk_snapshots.vm.services import PostgresService

pytestmark = pytest.mark.root

PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
FREEZE = QuiesceConfig(freeze=True, freeze_timeout=10, on_failure="abort")


def annotate(consistency: Consistency, role: Role, moment: datetime) -> Annotations:
    return Annotations(
        deployment="pg",
        instance_group="postgres",
        instance_id="pg-0",
        index=0,
        az="z1",
        disk_cid="disk-pg",
        job="postgres",
        created_at=moment,
        trigger="manual",
        consistency=consistency,
        role=role,
        release_version="0.1.0",
    )


def as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True)


@pytest.fixture
def postgres(disk: Disk) -> Iterator[PostgresService]:
    if not PG_BIN:
        pytest.fail("Debian's postgresql is not installed: scripts/bootstrap installs it")
    (disk.mount / "postgres").mkdir()
    shutil.chown(disk.mount / "postgres", "postgres", "postgres")
    # The postgres user cannot reach into root's 0700 temp dirs: bind the data directory
    # (still on the loop disk) where it can.
    data = Path(tempfile.mkdtemp(prefix="pg-data-", dir="/var/tmp"))
    data.chmod(0o755)
    subprocess.run(["mount", "--bind", str(disk.mount / "postgres"), str(data)], check=True)
    server: subprocess.Popen[bytes] | None = None
    try:
        shutil.chown(data, "postgres", "postgres")
        data.chmod(0o700)
        as_postgres(str(PG_BIN[-1] / "initdb"), "-D", str(data), "--auth=trust", "-U", "vcap")
        port = 15432 + os.getpid() % 1000
        server = subprocess.Popen(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN[-1] / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
                "/tmp",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        service = PostgresService("127.0.0.1", port, "vcap", "postgres", timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                service.role()
                break
            except Exception:
                assert time.monotonic() < deadline, "postgres did not start"
                time.sleep(0.2)
        yield service
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        subprocess.run(["umount", str(data)], check=False)
        data.rmdir()


def test_checkpoint_then_freeze_is_app_consistent(
    postgres: PostgresService, disk: Disk, tmp_path: Path
) -> None:
    postgres._query("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')", "setup")
    provider = LoopbackProvider.for_disk("", disk)
    taken = snapshot_quiesced(
        Freezer(
            disk=disk,
            provider=provider,
            service=postgres,
            quiesce=FREEZE,
            lease_dir=tmp_path / "leases",
        ),
        annotate,
    )
    assert (taken.snapshot.annotations.consistency, taken.snapshot.annotations.role) == (
        "app",
        "standalone",
    )
    with provider.materialize(taken.snapshot.id) as root:
        assert (root / "postgres" / "PG_VERSION").exists()
        assert (root / "postgres" / "global" / "pg_control").stat().st_size > 0


def test_a_user_who_may_not_checkpoint_aborts_the_snapshot(
    postgres: PostgresService, disk: Disk, tmp_path: Path
) -> None:
    postgres._query("CREATE ROLE weak LOGIN", "setup")
    weak = PostgresService(postgres.host, postgres.port, "weak", "postgres", timeout=10)
    with pytest.raises(
        QuiesceError, match="no snapshot taken: postgres flush \\(CHECKPOINT\\)"
    ) as caught:
        snapshot_quiesced(
            Freezer(
                disk=disk,
                provider=LoopbackProvider.for_disk("", disk),
                service=weak,
                quiesce=FREEZE,
                lease_dir=tmp_path / "leases",
            ),
            annotate,
        )
    assert "CHECKPOINT" in str(caught.value)
    assert LoopbackProvider.for_disk("", disk).list() == []
