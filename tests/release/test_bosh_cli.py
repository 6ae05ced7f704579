"""Checks with the real bosh CLI (marker `bosh`): create-release, inspect-local-release, int.

Everything here that can be checked without the CLI is also checked in pure Python
(test_structure.py, test_manifests.py); these tests prove that the CLI itself agrees.
They skip, saying why, when `bosh` is not on PATH; scripts/test installs it and treats
a skipped bosh-cli tier as a failure in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder
from cryptography.x509.verification import Store
from test_manifests import GROUPS
from test_manifests import MATRIX
from test_manifests import MATRIX_IDS
from test_manifests import REPO
from test_manifests import vars_for

BOSH = shutil.which("bosh")

pytestmark = [
    pytest.mark.bosh,
    pytest.mark.skipif(
        BOSH is None,
        reason="bosh CLI not on PATH: install it with "
        "`CGO_ENABLED=0 go install github.com/cloudfoundry/bosh-cli/v7@v7.10.6` (scripts/test "
        "does); structure and manifest checks ran in pure Python instead",
    ),
]

JOBS = {"snapshotter", "take-snapshot", "list-snapshots", "restore"}
PACKAGES = {
    "python3": set(),
    "python-deps": {"python3"},
    "disk-snapshots": {"python3", "python-deps"},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # ~/.bosh holds a cache and config; tests must neither read nor leave one.
    return tmp_path_factory.mktemp("home")


def bosh(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert BOSH is not None
    return subprocess.run(
        [BOSH, "-n", *args],
        env={**os.environ, "HOME": str(home)},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )


def missing_blobs() -> list[str]:
    listed = yaml.safe_load((REPO / "config/blobs.yml").read_text()) or {}
    return sorted(name for name in listed if not (REPO / "blobs" / name).is_file())


def _create_release(home: Path, out: Path) -> Path:
    """`bosh create-release --force --tarball` on a throw-away copy (it writes
    dev_releases/ and .dev_builds/ and prunes blobs/ in the directory it is given)."""
    try:
        from localbosh.release import build_release
    except ImportError:
        copy = out / "release"
        shutil.copytree(
            REPO,
            copy,
            symlinks=True,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", ".cache", "dev_releases", ".dev_builds", "__pycache__"
            ),
        )
        tarball = out / "disk-snapshots.tgz"
        proc = bosh(home, "create-release", "--force", f"--tarball={tarball}", cwd=copy)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return tarball
    return build_release(REPO, out, builder="bosh")


@pytest.fixture(scope="module")
def tarball(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    absent = missing_blobs()
    if absent:
        pytest.fail(
            f"blobs listed in config/blobs.yml are not in blobs/: {', '.join(absent)}; "
            "run scripts/update-blobs"
        )
    yield _create_release(home, tmp_path_factory.mktemp("release"))


def test_create_release(tarball: Path) -> None:
    assert tarball.is_file() and tarball.stat().st_size > 0


def table(answer: dict[str, Any], content: str) -> list[dict[str, str]]:
    (found,) = [t for t in answer["Tables"] if t.get("Content") == content]
    return list(found.get("Rows") or [])


def names(cell: str) -> set[str]:
    return {part.split("/")[0] for part in cell.replace(",", " ").split()}


def test_inspect_local_release(home: Path, tarball: Path) -> None:
    proc = bosh(home, "inspect-local-release", str(tarball), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answer = json.loads(proc.stdout)
    jobs = {row["job"].split("/")[0]: names(row["packages"]) for row in table(answer, "jobs")}
    packages = {
        row["package"].split("/")[0]: names(row["dependencies"])
        for row in table(answer, "packages")
    }
    assert set(jobs) == JOBS
    assert packages == PACKAGES
    for job, used in jobs.items():
        assert used == set(PACKAGES), f"job {job} uses {sorted(used)}"


def bosh_int_argv(manifest: Path, ops: Path | None, store: Path) -> list[str]:
    argv = ["int", str(manifest)]
    if ops is not None:
        argv += ["-o", str(ops)]
    for name, value in vars_for(ops).items():
        argv += ["-v", f"{name}={value}"]
    return [*argv, "--vars-store", str(store), "--var-errs", "--var-errs-unused"]


@pytest.mark.parametrize(("manifest", "ops"), MATRIX, ids=MATRIX_IDS)
def test_bosh_int(home: Path, manifest: Path, ops: Path | None, tmp_path: Path) -> None:
    proc = bosh(home, *bosh_int_argv(manifest, ops, tmp_path / "creds.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = yaml.safe_load(proc.stdout)
    assert doc["variables"] == []
    assert "((" not in proc.stdout


def test_bosh_int_generates_agent_certificates(home: Path, tmp_path: Path) -> None:
    store = tmp_path / "creds.yml"
    ops = REPO / "manifests/operations/agent-api-tls.yml"
    proc = bosh(home, *bosh_int_argv(REPO / "manifests/disk-snapshots.yml", ops, store))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stored = yaml.safe_load(store.read_text())
    ca = x509.load_pem_x509_certificate(stored["snapshotter_agent_ca"]["certificate"].encode())
    leaf = x509.load_pem_x509_certificate(stored["snapshotter_agent_tls"]["certificate"].encode())
    builder = PolicyBuilder().store(Store([ca]))
    for name in GROUPS:
        address = f"{uuid.uuid4()}.{name}.default.redis.bosh"
        builder.build_server_verifier(x509.DNSName(address)).verify(leaf, [])
    builder.build_client_verifier().verify(leaf, [])


def test_bosh_int_names_missing_variables_like_python(home: Path, tmp_path: Path) -> None:
    argv = [
        "int",
        str(REPO / "manifests/disk-snapshots.yml"),
        "-o",
        str(REPO / "manifests/operations/aws-ebs.yml"),
        "-v",
        "deployment_name=redis",
        "--vars-store",
        str(tmp_path / "creds.yml"),
        "--var-errs",
    ]
    proc = bosh(home, *argv)
    assert proc.returncode != 0
    assert "Expected to find variables: aws_backup_region\naws_region" in proc.stdout + proc.stderr
