"""The dev release tarball: layout, manifest, fingerprints, and the CLI's errors.

Builds with the Python builder (localbosh.release), which must agree with
`bosh --sha2 create-release`; when bosh is on PATH the last test compares them.
Runs on copies of the release dir, with the real blobs when they are present and
with stand-in blobs otherwise (fingerprint mechanics do not depend on blob
content; the compile tier uses the real ones).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from conftest import missing_blobs
from localbosh.release import ReleaseError
from localbosh.release import SourceFile
from localbosh.release import build_release
from localbosh.release import fingerprint
from localbosh.release import glob_regex
from localbosh.release import read_release_dir
from localbosh.release import read_release_manifest

JOBS = {"snapshotter", "take-snapshot", "list-snapshots", "restore"}
PACKAGES = {
    "python3": set(),
    "python-deps": {"python3"},
    "disk-snapshots": {"python3", "python-deps"},
}
RELEASE_PARTS = ("config", "jobs", "packages", "src")


def copy_release(dest: Path) -> Path:
    """A copy of what create-release reads; blobs hard-linked (or stood in)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for part in RELEASE_PARTS:
        shutil.copytree(REPO / part, dest / part, ignore=ignore)
    for lic in [*REPO.glob("LICENSE*"), *REPO.glob("NOTICE*")]:
        shutil.copy2(lic, dest / lic.name)
    listed: dict[str, Any] = yaml.safe_load((REPO / "config" / "blobs.yml").read_text()) or {}
    real = not missing_blobs()
    for path in listed:
        blob = dest / "blobs" / path
        blob.parent.mkdir(parents=True, exist_ok=True)
        if real:
            try:
                os.link(REPO / "blobs" / path, blob)
            except OSError:
                shutil.copy2(REPO / "blobs" / path, blob)
        else:
            data = f"stand-in for {path}\n".encode()
            blob.write_bytes(data)
            listed[path] = {"size": len(data), "sha": "sha256:" + hashlib.sha256(data).hexdigest()}
    if not real:
        (dest / "config" / "blobs.yml").write_text(yaml.safe_dump(listed))
    return dest


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    return copy_release(tmp_path / "release")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(release dir, tarball) built once for the read-only tests."""
    base = tmp_path_factory.mktemp("built")
    release = copy_release(base / "release")
    return release, build_release(release, base / "out", builder="python")


def fingerprints(release_dir: Path) -> dict[str, str]:
    sources = read_release_dir(release_dir)
    return {r.name: r.fingerprint for r in (*sources.jobs, *sources.packages)}


def members(tgz: Path | bytes) -> dict[str, bytes | None]:
    data = tgz.read_bytes() if isinstance(tgz, Path) else tgz
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out: dict[str, bytes | None] = {}
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = f.read() if f else None
        return out


def test_manifest_lists_four_jobs_three_packages_and_the_graph(
    built: tuple[Path, Path],
) -> None:
    tarball = built[1]
    manifest = read_release_manifest(tarball)

    assert manifest["name"] == "disk-snapshots"
    assert manifest["version"] == "0+dev.1"
    assert {j["name"] for j in manifest["jobs"]} == JOBS
    for job in manifest["jobs"]:
        assert set(job["packages"]) == set(PACKAGES), job["name"]
    assert {p["name"]: set(p["dependencies"]) for p in manifest["packages"]} == PACKAGES

    content = members(tarball)
    for kind in ("jobs", "packages"):
        for ref in manifest[kind]:
            archive = content[f"{kind}/{ref['name']}.tgz"]
            assert archive is not None
            assert ref["version"] == ref["fingerprint"]
            # --sha2: archive digests are "sha256:<hex>", as the CLI writes them
            assert ref["sha1"] == "sha256:" + hashlib.sha256(archive).hexdigest()


def test_archives_are_laid_out_like_the_cli(built: tuple[Path, Path]) -> None:
    tarball = built[1]
    with tarfile.open(tarball, "r:gz") as tar:

        def inner(name: str) -> dict[str, bytes | None]:
            f = tar.extractfile(name)
            assert f is not None
            return members(f.read())

        job = inner("jobs/snapshotter.tgz")
        spec = yaml.safe_load((REPO / "jobs" / "snapshotter" / "spec").read_text())
        assert job["./job.MF"] == (REPO / "jobs" / "snapshotter" / "spec").read_bytes()
        assert "./monit" in job
        assert {f"./templates/{t}" for t in spec["templates"]} <= set(job)

        pkg = inner("packages/disk-snapshots.tgz")
        files = {n for n, data in pkg.items() if data is not None}
        assert "./packaging" in files
        assert "./disk_snapshots/__init__.py" in files
        assert "./disk_snapshots/cli.py" in files
        # dev tooling and byte code stay out of the release
        assert not [
            n for n in files if "localbosh" in n or "__pycache__" in n or n.endswith(".pyc")
        ]
        assert all(n == "./packaging" or n.startswith("./disk_snapshots/") for n in files)

        py3 = inner("packages/python3.tgz")
        assert "./python3/python3.13_3.13.5.orig.tar.xz" in py3

        deps = inner("packages/python-deps.tgz")
        assert "./python-deps/requirements.txt" in deps
        assert "./python-deps/psutil-7.2.2.tar.gz" in deps


def test_fingerprints_are_stable_across_builds_and_directories(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    a, first = built
    # copied from the first copy, not the repo, which others may be editing right now
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    assert fingerprints(a) == fingerprints(b)

    second = build_release(b, tmp_path / "out2", builder="python")
    strip = ("commit_hash", "uncommitted_changes")
    m1 = {k: v for k, v in read_release_manifest(first).items() if k not in strip}
    m2 = {k: v for k, v in read_release_manifest(second).items() if k not in strip}
    assert m1 == m2  # archives are deterministic too, so even their digests agree


def test_content_change_changes_only_that_package(release_dir: Path) -> None:
    before = fingerprints(release_dir)
    init = release_dir / "src" / "disk_snapshots" / "__init__.py"
    init.write_text(init.read_text() + "# changed\n")
    after = fingerprints(release_dir)
    assert after["disk-snapshots"] != before["disk-snapshots"]
    assert {k: v for k, v in after.items() if k != "disk-snapshots"} == {
        k: v for k, v in before.items() if k != "disk-snapshots"
    }


def test_mode_change_changes_the_fingerprint(release_dir: Path) -> None:
    before = fingerprints(release_dir)
    init = release_dir / "src" / "disk_snapshots" / "__init__.py"
    init.chmod(init.stat().st_mode | stat.S_IXUSR)
    template = release_dir / "jobs" / "restore" / "templates" / "config.json.erb"
    template.chmod(template.stat().st_mode | stat.S_IXUSR)
    after = fingerprints(release_dir)
    assert after["disk-snapshots"] != before["disk-snapshots"]
    assert after["restore"] != before["restore"]
    assert after["snapshotter"] == before["snapshotter"]


def test_packaging_mode_does_not_count(release_dir: Path) -> None:
    # The agent runs `bash -x packaging`, so the CLI leaves its mode out.
    before = fingerprints(release_dir)
    packaging = release_dir / "packages" / "disk-snapshots" / "packaging"
    packaging.chmod(packaging.stat().st_mode ^ stat.S_IXUSR)
    assert fingerprints(release_dir) == before


def test_missing_files_for_pattern_fails_with_the_cli_message(release_dir: Path) -> None:
    spec_path = release_dir / "packages" / "disk-snapshots" / "spec"
    spec = yaml.safe_load(spec_path.read_text())
    spec["files"].append("disk_snapshots/no-such-dir/*.py")
    spec_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(
        ReleaseError,
        match=r"Missing files for pattern "
        r"'disk_snapshots/no-such-dir/\*\.py'",
    ):
        read_release_dir(release_dir)


def test_blob_not_in_blobs_yml_is_invisible(release_dir: Path) -> None:
    # create-release deletes unlisted blobs first, so a spec must not rely on one.
    (release_dir / "blobs" / "extra").mkdir()
    (release_dir / "blobs" / "extra" / "thing.tgz").write_bytes(b"x")
    spec_path = release_dir / "packages" / "python3" / "spec"
    spec = yaml.safe_load(spec_path.read_text())
    spec["files"].append("extra/*.tgz")
    spec_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ReleaseError, match=r"Missing files for pattern 'extra/\*\.tgz'"):
        read_release_dir(release_dir)


def test_unknown_package_dependency_fails_with_the_cli_message(release_dir: Path) -> None:
    spec_path = release_dir / "jobs" / "restore" / "spec"
    spec = yaml.safe_load(spec_path.read_text())
    spec["packages"].append("ghost")
    spec_path.write_text(yaml.safe_dump(spec))
    pkg_spec = release_dir / "packages" / "python-deps" / "spec"
    pspec = yaml.safe_load(pkg_spec.read_text())
    pspec["dependencies"].append("phantom")
    pkg_spec.write_text(yaml.safe_dump(pspec))
    with pytest.raises(ReleaseError) as err:
        read_release_dir(release_dir)
    # all problems at once, like the CLI
    assert (
        "Expected to find package 'ghost' since it's a dependency of job 'restore'"
        in err.value.errors
    )
    assert (
        "Expected to find package 'phantom' since it's a dependency of package 'python-deps'"
    ) in err.value.errors


def test_job_dir_must_match_spec_name(release_dir: Path) -> None:
    spec_path = release_dir / "jobs" / "restore" / "spec"
    spec_path.write_text(spec_path.read_text().replace("name: restore", "name: restorer", 1))
    with pytest.raises(
        ReleaseError, match="Job directory 'restore' does not match job name 'restorer'"
    ):
        read_release_dir(release_dir)


def test_fingerprint_algorithm_matches_bosh_cli(tmp_path: Path) -> None:
    """release/resource/fingerprint.go, written out independently: "v2", then per file
    (sorted by path) path + digest + git mode (none for packaging), then the sorted
    dependency names joined by commas; sha256 throughout under --sha2."""
    (tmp_path / "packaging").write_text("echo hi\n")
    (tmp_path / "b.sh").write_text("#!/bin/sh\n")
    (tmp_path / "b.sh").chmod(0o755)
    (tmp_path / "a.txt").write_text("a\n")

    def d(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    expected = hashlib.sha256(
        (
            "v2"
            + "a.txt"
            + d(b"a\n")
            + "100644"
            + "b.sh"
            + d(b"#!/bin/sh\n")
            + "100755"
            + "packaging"
            + d(b"echo hi\n")
            + "dep-a,dep-b"
        ).encode()
    ).hexdigest()
    files = [
        SourceFile(tmp_path / "packaging", "packaging", exclude_mode=True),
        SourceFile(tmp_path / "b.sh", "b.sh"),
        SourceFile(tmp_path / "a.txt", "a.txt"),
    ]
    assert fingerprint(files, ["dep-b", "dep-a"], follow_symlinks=False) == expected


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("disk_snapshots/**/*", "disk_snapshots/cli.py", True),
        ("disk_snapshots/**/*", "disk_snapshots/providers/base.py", True),
        ("disk_snapshots/*", "disk_snapshots/providers/base.py", False),
        ("disk_snapshots/**/__pycache__/*", "disk_snapshots/__pycache__/cli.cpython-313.pyc", True),
        ("python-deps/*.whl", "python-deps/six-1.17.0-py2.py3-none-any.whl", True),
        ("python3/python3.13_*.orig.tar.xz", "python3/python3.13_3.13.5.orig.tar.xz", True),
        ("a/{x,y}.txt", "a/y.txt", True),
        ("a/?.txt", "a/xy.txt", False),
    ],
)
def test_files_globs(pattern: str, path: str, hit: bool) -> None:
    assert bool(glob_regex(pattern).match(path)) is hit


def test_blobs_yml_is_in_the_cli_format_and_every_blob_is_pinned_and_used() -> None:
    text = (REPO / "config" / "blobs.yml").read_text()
    listed: dict[str, Any] = yaml.safe_load(text)
    # what yaml.v2 marshals from the CLI's schema: keys sorted, size then sha, no object_id
    # for local blobs (so `bosh blobs` shows them as local and never downloads them)
    assert list(listed) == sorted(listed)
    for path, entry in listed.items():
        assert list(entry) == ["size", "sha"], path
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", entry["sha"]), path
        assert f"{path}:\n  size: {entry['size']}\n  sha: {entry['sha']}\n" in text

    specs = [yaml.safe_load(p.read_text()) for p in (REPO / "packages").glob("*/spec")]
    for path in listed:
        users = [
            s["name"] for s in specs if any(glob_regex(g).match(path) for g in s.get("files") or [])
        ]
        assert users, f"blob {path} is listed in blobs.yml but no package uses it"

    lock_hashes = {
        h
        for lock in ("requirements.txt", "build-requirements.txt")
        for h in re.findall(
            r"--hash=sha256:([0-9a-f]{64})", (REPO / "src" / "python-deps" / lock).read_text()
        )
    }
    deps_blobs = {
        e["sha"].removeprefix("sha256:") for p, e in listed.items() if p.startswith("python-deps/")
    }
    assert deps_blobs == lock_hashes, (
        "blobs.yml and the python-deps locks disagree: run scripts/update-blobs --record"
    )
    for path in listed:
        if path.startswith("python-deps/") and path.endswith(".whl"):
            assert path.endswith("-none-any.whl"), f"{path}: only pure-Python wheels"

    for line in (REPO / "src" / "python3" / "sources.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, sha256, _url = line.split()
            assert listed[path]["sha"] == f"sha256:{sha256}"


def test_bosh_builder_runs_the_cli_on_a_copy_with_a_private_home(
    release_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plumbing of the bosh path, with a stand-in `bosh` that records its call
    (the real CLI is checked by the next test when it is installed)."""
    record = tmp_path / "call"
    fake = tmp_path / "bin" / "bosh"
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
printf '%s\\n' "$HOME" "$@" > {record}
for a in "$@"; do case "$a" in --tarball=*) : > "${{a#--tarball=}}";; esac; done
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    tarball = build_release(release_dir, tmp_path / "out")
    home, *args = record.read_text().splitlines()
    assert args[:5] == ["--sha2", "-n", "create-release", "--force", args[4]]
    copy = Path(args[4].removeprefix("--dir="))
    assert copy != release_dir and not copy.exists()  # a temporary copy, gone again
    assert not Path(home).exists() and home != os.environ.get("HOME")
    assert f"--tarball={tarball}" in args and "--version=0+dev.1" in args
    assert tarball.exists()


@pytest.mark.bosh
def test_bosh_cli_tarball_agrees_with_the_python_builder(release_dir: Path, tmp_path: Path) -> None:
    if shutil.which("bosh") is None:
        pytest.skip(
            "bosh CLI not on PATH (the Go module proxy refuses "
            "github.com/cloudfoundry/* here); only the Python builder was checked"
        )
    ours = read_release_manifest(build_release(release_dir, tmp_path / "py", builder="python"))
    theirs = read_release_manifest(build_release(release_dir, tmp_path / "cli", builder="bosh"))

    def summary(m: dict[str, Any]) -> dict[str, Any]:
        return {
            "jobs": {j["name"]: (j["fingerprint"], sorted(j["packages"])) for j in m["jobs"]},
            "packages": {
                p["name"]: (p["fingerprint"], sorted(p["dependencies"])) for p in m["packages"]
            },
        }

    assert summary(theirs) == summary(ours)
