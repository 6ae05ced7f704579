"""The dev release tarball built by `localbosh.release.build_release` (the real
`bosh create-release`): what our specs put into it, and what the build leaves
alone (the release dir, its blobs, the git index, ~/.bosh).

Runs on copies of the release dir with its real blobs (the release_blobs
fixture fetches them when missing).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from localbosh.release import ReleaseError
from localbosh.release import build_release
from localbosh.release import read_release_manifest
from support.release import REPO

pytestmark = pytest.mark.bosh

JOBS = {"snapshotter", "take-snapshot", "list-snapshots", "restore"}
PACKAGES = {
    "python3": set(),
    "python-deps": {"python3"},
    "disk-snapshots": {"python3", "python-deps"},
}
RELEASE_PARTS = ("config", "jobs", "packages", "src")


def copy_release(dest: Path) -> Path:
    """A copy of what create-release reads, blobs hard-linked (the CLI only reads
    or deletes them, never writes them)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for part in RELEASE_PARTS:
        shutil.copytree(REPO / part, dest / part, ignore=ignore)
    listed: dict[str, Any] = yaml.safe_load((REPO / "config" / "blobs.yml").read_text()) or {}
    for path in listed:
        blob = dest / "blobs" / path
        blob.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(REPO / "blobs" / path, blob)
        except OSError:
            shutil.copy2(REPO / "blobs" / path, blob)
    return dest


@pytest.fixture
def release_dir(release_blobs: Path, tmp_path: Path) -> Path:
    return copy_release(tmp_path / "release")


@pytest.fixture(scope="module")
def built(release_blobs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(release dir, tarball) built once for the read-only tests."""
    base = tmp_path_factory.mktemp("built")
    release = copy_release(base / "release")
    return release, build_release(release, base / "out")


def members(tgz: Path | bytes) -> dict[str, bytes | None]:
    data = tgz.read_bytes() if isinstance(tgz, Path) else tgz
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out: dict[str, bytes | None] = {}
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = f.read() if f else None
        return out


def inner(tarball: Path, name: str) -> dict[str, bytes | None]:
    with tarfile.open(tarball, "r:gz") as tar:
        f = tar.extractfile(name)
        assert f is not None, name
        return members(f.read())


def fingerprints(tarball: Path) -> dict[str, str]:
    manifest = read_release_manifest(tarball)
    return {r["name"]: r["fingerprint"] for kind in ("jobs", "packages") for r in manifest[kind]}


def test_manifest_lists_four_jobs_three_packages_and_the_graph(built: tuple[Path, Path]) -> None:
    release, tarball = built
    manifest = read_release_manifest(tarball)
    assert tarball.name == "disk-snapshots-0+dev.1.tgz"
    assert manifest["name"] == "disk-snapshots"
    assert manifest["version"] == "0+dev.1"
    assert manifest["commit_hash"] == "non-git"  # a copy outside any git work tree
    assert {j["name"] for j in manifest["jobs"]} == JOBS
    for job in manifest["jobs"]:
        assert set(job["packages"]) == set(PACKAGES), job["name"]
    assert {p["name"]: set(p["dependencies"]) for p in manifest["packages"]} == PACKAGES
    # The CLI's outputs went into its own copy, never into the directory given.
    assert not (release / "dev_releases").exists()
    assert not (release / ".dev_builds").exists()


def test_packages_hold_what_their_specs_mean(built: tuple[Path, Path]) -> None:
    tarball = built[1]
    job = inner(tarball, "jobs/snapshotter.tgz")
    spec = yaml.safe_load((REPO / "jobs" / "snapshotter" / "spec").read_text())
    assert job["./job.MF"] == (REPO / "jobs" / "snapshotter" / "spec").read_bytes()
    assert "./monit" in job
    assert {f"./templates/{t}" for t in spec["templates"]} <= set(job)

    pkg = inner(tarball, "packages/disk-snapshots.tgz")
    files = {n for n, data in pkg.items() if data is not None}
    assert "./disk_snapshots/cli.py" in files
    # dev tooling and byte code stay out of the release
    assert not [n for n in files if "localbosh" in n or "__pycache__" in n or n.endswith(".pyc")]
    assert all(n == "./packaging" or n.startswith("./disk_snapshots/") for n in files)

    deps = inner(tarball, "packages/python-deps.tgz")
    assert "./python-deps/requirements.txt" in deps


def test_every_listed_blob_is_in_a_package(built: tuple[Path, Path]) -> None:
    """A blob in config/blobs.yml that no `files:` glob takes is dead weight (or a typo)."""
    tarball = built[1]
    packed: set[str] = set()
    for name in PACKAGES:
        packed |= {n.removeprefix("./") for n in inner(tarball, f"packages/{name}.tgz")}
    listed = yaml.safe_load((REPO / "config" / "blobs.yml").read_text())
    assert sorted(set(listed) - packed) == []


def test_fingerprints_do_not_depend_on_where_the_release_is(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    # The compile cache is keyed by fingerprint: a checkout elsewhere must hit it.
    first = built[1]
    b = copy_release(tmp_path / "elsewhere" / "b")
    assert fingerprints(build_release(b, tmp_path / "out")) == fingerprints(first)


def test_a_source_change_changes_only_that_package(
    built: tuple[Path, Path], release_dir: Path, tmp_path: Path
) -> None:
    # Our specs keep the Python sources apart from the CPython and dependency blobs,
    # so a code change never recompiles CPython.
    before = fingerprints(built[1])
    init = release_dir / "src" / "disk_snapshots" / "__init__.py"
    init.write_text(init.read_text() + "# changed\n")
    after = fingerprints(build_release(release_dir, tmp_path / "out"))
    assert after["disk-snapshots"] != before["disk-snapshots"]
    assert {k: v for k, v in after.items() if k != "disk-snapshots"} == {
        k: v for k, v in before.items() if k != "disk-snapshots"
    }


def test_the_clis_errors_come_back_all_at_once(release_dir: Path, tmp_path: Path) -> None:
    deps_spec = release_dir / "packages" / "python-deps" / "spec"
    spec = yaml.safe_load(deps_spec.read_text())
    spec["dependencies"].append("phantom")
    deps_spec.write_text(yaml.safe_dump(spec))
    job_spec = release_dir / "jobs" / "restore" / "spec"
    spec = yaml.safe_load(job_spec.read_text())
    spec["packages"].append("ghost")
    job_spec.write_text(yaml.safe_dump(spec))
    with pytest.raises(ReleaseError) as err:
        build_release(release_dir, tmp_path / "out")
    message = str(err.value)
    assert message.startswith(f"{release_dir}: bosh create-release failed: ")
    assert (
        "Expected to find package 'phantom' since it's a dependency of package 'python-deps'"
        in message
    )
    assert "Constructing jobs from manifest" in message
    assert not list((tmp_path / "out").iterdir())


def test_an_unlisted_blob_is_invisible_and_left_in_place(release_dir: Path, tmp_path: Path) -> None:
    # create-release deletes blobs that blobs.yml does not list (in its copy: ours stays).
    extra = release_dir / "blobs" / "extra" / "thing.tgz"
    extra.parent.mkdir()
    extra.write_bytes(b"x")
    spec_path = release_dir / "packages" / "python3" / "spec"
    spec = yaml.safe_load(spec_path.read_text())
    spec["files"].append("extra/*.tgz")
    spec_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ReleaseError, match=r"Missing files for pattern 'extra/\*\.tgz'"):
        build_release(release_dir, tmp_path / "out")
    assert extra.read_bytes() == b"x"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_git_checkout_is_named_by_its_commit_and_its_index_left_alone(
    release_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (release_dir / ".gitignore").write_text("blobs/\n")
    git(release_dir, "init", "-q")
    git(release_dir, "add", "-A")
    git(
        release_dir,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.org",
        "commit",
        "-q",
        "-m",
        "release",
    )
    head = git(release_dir, "rev-parse", "--short", "HEAD")
    index = release_dir / ".git" / "index"
    index_before = index.stat().st_mtime_ns

    clean = read_release_manifest(build_release(release_dir, tmp_path / "clean"))
    assert (clean["commit_hash"], clean["uncommitted_changes"]) == (head, False)

    job_spec = release_dir / "jobs" / "restore" / "spec"
    job_spec.write_text(job_spec.read_text() + "\n")
    dirty = read_release_manifest(build_release(release_dir, tmp_path / "dirty"))
    assert (dirty["commit_hash"], dirty["uncommitted_changes"]) == (head, True)

    assert index.stat().st_mtime_ns == index_before
    assert git(release_dir, "status", "--porcelain") == "M jobs/restore/spec"
    assert list(home.iterdir()) == []  # the CLI's ~/.bosh went to a temporary HOME
