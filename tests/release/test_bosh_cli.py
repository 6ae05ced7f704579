"""The real bosh CLI's verdict on the release (marker `bosh`): `create-release`
validates and packs it, `inspect-local-release` reads the result back.

scripts/test fails when the CLI is missing (scripts/bootstrap installs it), so
nothing here is ever skipped; the manifests' `bosh int` checks are in
test_manifests.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_manifests import REPO

from localbosh import boshcli
from localbosh.release import build_release

pytestmark = pytest.mark.bosh

JOBS = {"snapshotter", "take-snapshot", "list-snapshots", "restore"}
PACKAGES = {
    "python3": set(),
    "python-deps": {"python3"},
    "disk-snapshots": {"python3", "python-deps"},
}


@pytest.fixture(scope="module")
def tarball(release_blobs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield build_release(REPO, tmp_path_factory.mktemp("release"))


def test_cli_is_the_pinned_version() -> None:
    # scripts/bootstrap installs 7.10.6; an operator's own bosh on PATH wins, and must be v7.
    (block,) = boshcli.run(["--version"]).blocks
    assert block.startswith("version 7."), block


def test_create_release(tarball: Path) -> None:
    assert tarball.is_file() and tarball.stat().st_size > 0


def table(answer: boshcli.Output, content: str) -> list[dict[str, Any]]:
    (found,) = [t for t in answer.tables if t.get("Content") == content]
    return list(found.get("Rows") or [])


def names(cell: str) -> set[str]:
    return {part.split("/")[0] for part in cell.replace(",", " ").split()}


def test_inspect_local_release(tarball: Path) -> None:
    answer = boshcli.run(["inspect-local-release", str(tarball)])
    jobs = {row["job"].split("/")[0]: names(row["packages"]) for row in table(answer, "jobs")}
    packages = {
        row["package"].split("/")[0]: names(row["dependencies"])
        for row in table(answer, "packages")
    }
    assert set(jobs) == JOBS
    assert packages == PACKAGES
    for job, used in jobs.items():
        assert used == set(PACKAGES), f"job {job} uses {sorted(used)}"
