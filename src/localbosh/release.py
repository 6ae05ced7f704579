"""Build a BOSH dev release tarball, with the real bosh CLI or without it.

With `bosh` on PATH, `build_release` runs `bosh --sha2 create-release --force
--tarball` on a throw-away copy of the release directory (the CLI prunes
unlisted blobs and writes dev_releases/ and .dev_builds/ into the directory it
is given, and keeps a cache under ~/.bosh, so both the copy and HOME are
temporary).

Without it, a Python implementation produces the same tarball layout and the
same fingerprints as `bosh --sha2 create-release` (bosh-cli v7,
release/resource/fingerprint.go, release/pkg/dir_reader.go,
release/job/dir_reader.go, release/archive_writer.go):

- fingerprint = digest("v2" + for each file sorted by relative path:
  relpath + file digest + mode) + ",".join(sorted(dependencies)) for packages;
  mode is git's view ("100755" if any x bit, else "100644"), left out for
  `packaging`; job files are job.MF (the spec), monit, properties_schema.json
  and templates/<src> with symlinks followed; package symlinks are not followed.
- digests are "sha256:<hex>" because we always run the CLI with --sha2 (its
  default is still SHA-1), so the two builders can be compared byte for byte
  on fingerprints.
- only blobs listed in config/blobs.yml are visible to `files:` globs, as the
  CLI deletes every other file under blobs/ before building.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import Literal

import yaml

log = logging.getLogger(__name__)

DEFAULT_VERSION = "0+dev.1"
Builder = Literal["auto", "bosh", "python"]

# What a copy of the release dir for the CLI leaves out: our dev tooling state
# and the CLI's own outputs (which would otherwise bump the dev version).
_COPY_IGNORE = shutil.ignore_patterns(
    ".venv",
    ".cache",
    "dev_releases",
    ".dev_builds",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
)


class ReleaseError(Exception):
    """The release directory is invalid; carries every problem found, like the CLI."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class SourceFile:
    path: Path  # on disk
    rel: str  # inside the archive, and what the fingerprint hashes
    exclude_mode: bool = False
    use_basename: bool = False


@dataclass(frozen=True)
class Resource:
    name: str
    fingerprint: str
    files: tuple[SourceFile, ...]
    follow_symlinks: bool


@dataclass(frozen=True)
class PackageSource(Resource):
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobSource(Resource):
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReleaseSources:
    name: str
    jobs: tuple[JobSource, ...]
    packages: tuple[PackageSource, ...]
    license: Resource | None = None
    warnings: tuple[str, ...] = field(default=())


# -- digests and fingerprints


def _digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _mode_string(st: os.stat_result, symlink_kept: bool) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "40755"
    if symlink_kept:
        return "symlink"
    return "100755" if st.st_mode & 0o111 else "100644"


def fingerprint(
    files: Iterable[SourceFile], chunks: Iterable[str], *, follow_symlinks: bool
) -> str:
    parts = ["v2"]
    for f in sorted(files, key=lambda f: f.rel):
        part = f.path.name if f.use_basename else f.rel
        lst = f.path.lstat()
        keep_link = stat.S_ISLNK(lst.st_mode) and not follow_symlinks
        if keep_link:
            part += _digest_bytes(str(f.path.readlink()).encode())
        else:
            part += _digest_file(f.path)
        if not f.exclude_mode:
            # lstat even when following: the CLI does, so a followed symlink counts as 100755.
            part += _mode_string(lst, keep_link)
        parts.append(part)
    extra = sorted(chunks)
    if extra:
        parts.append(",".join(extra))
    return _digest_bytes("".join(parts).encode()).removeprefix("sha256:")


# -- `files:` globs (bosh-utils RecursiveGlob: doublestar semantics)


def _glob_segment(seg: str) -> str:
    out, i = "", 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = seg.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
            else:
                body = seg[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out += f"[{body}]"
                i = end
        elif c == "{":
            end = seg.find("}", i + 1)
            if end == -1:
                out += re.escape(c)
            else:
                alts = seg[i + 1 : end].split(",")
                out += "(?:" + "|".join(_glob_segment(a) for a in alts) + ")"
                i = end
        else:
            out += re.escape(c)
        i += 1
    return out


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`**` as a whole segment matches zero or more directories."""
    segs = pattern.strip("/").split("/")
    out = ""
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            out += ".*" if last else "(?:.*/)?"
        else:
            out += _glob_segment(seg) + ("" if last else "/")
    return re.compile(out + r"\Z")


def _walk(base: Path) -> Iterator[str]:
    if not base.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = Path(dirpath).relative_to(base)
        for name in sorted(dirnames + filenames):
            yield (rel_dir / name).as_posix()


def _packageable(path: Path) -> bool:
    return path.is_symlink() or not path.is_dir()


# -- reading the release directory


def _load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def release_name(release_dir: Path) -> str:
    final = release_dir / "config" / "final.yml"
    config = _load_yaml(final) if final.exists() else None
    config = config if isinstance(config, dict) else {}
    name, final_name = config.get("name"), config.get("final_name")
    if name and final_name:
        raise ReleaseError(["Expected 'name' or 'final_name' but not both in config"])
    if not (name or final_name):
        raise ReleaseError(["Expected non-empty 'name' in config"])
    return str(name or final_name)


def listed_blobs(release_dir: Path) -> dict[str, dict[str, Any]]:
    index = release_dir / "config" / "blobs.yml"
    if not index.exists():
        raise ReleaseError([f"Reading blobs index: open {index}: no such file or directory"])
    data = _load_yaml(index) or {}
    if not isinstance(data, dict):
        raise ReleaseError(["Unmarshalling blobs index"])
    return {str(k): dict(v or {}) for k, v in data.items()}


def _read_package(
    pkg_dir: Path, src_dir: Path, blobs_dir: Path, blob_paths: set[str]
) -> PackageSource:
    spec = _load_yaml(pkg_dir / "spec") or {}
    name = str(spec.get("name", ""))
    packaging = pkg_dir / "packaging"
    if not packaging.exists():
        raise ReleaseError([f"Expected to find '{packaging}' for package '{name}'"])
    if (pkg_dir / "pre_packaging").exists():
        # The CLI runs it at build time; nothing in this release needs one.
        raise ReleaseError([f"Package '{name}': pre_packaging is not supported by localbosh"])
    files: dict[str, SourceFile] = {}
    src_entries = list(_walk(src_dir))
    blob_entries = [p for p in _walk(blobs_dir) if p in blob_paths]
    for pattern in spec.get("files") or []:
        rx = glob_regex(str(pattern))
        found = False
        for base, entries in ((src_dir, src_entries), (blobs_dir, blob_entries)):
            for rel in entries:
                if rx.match(rel) and _packageable(base / rel):
                    found = True
                    files.setdefault(rel, SourceFile(base / rel, rel))
        if not found:
            raise ReleaseError([f"Missing files for pattern '{pattern}'"])
    for pattern in spec.get("excluded_files") or []:
        rx = glob_regex(str(pattern))
        for rel in list(files):
            if rx.match(rel):
                del files[rel]
    for special in ("packaging", "pre_packaging"):
        if special in files:
            raise ReleaseError(
                [
                    f"Expected special '{special}' file to not be included via 'files' key "
                    f"for package '{name}'"
                ]
            )
    all_files = (SourceFile(packaging, "packaging", exclude_mode=True), *files.values())
    deps = tuple(str(d) for d in spec.get("dependencies") or [])
    fp = fingerprint(all_files, deps, follow_symlinks=False)
    return PackageSource(name, fp, all_files, False, deps)


def _read_job(job_dir: Path) -> JobSource:
    spec_path = job_dir / "spec"
    spec = _load_yaml(spec_path) or {}
    name = str(spec.get("name", ""))
    if job_dir.name != name:
        raise ReleaseError(
            [f"Job directory '{job_dir.name}' does not match job name '{name}' in spec"]
        )
    files = [SourceFile(spec_path, "job.MF")]
    for extra in ("monit", "properties_schema.json"):
        if (job_dir / extra).exists():
            files.append(SourceFile(job_dir / extra, extra))
    errors = []
    for src in spec.get("templates") or {}:
        path = job_dir / "templates" / str(src)
        if not path.exists():
            errors.append(
                f"Collecting job files: Fingerprinting file '{path}': "
                f"lstat {path}: no such file or directory"
            )
        files.append(SourceFile(path, f"templates/{src}"))
    if errors:
        raise ReleaseError(errors)
    fp = fingerprint(files, [], follow_symlinks=True)
    packages = tuple(str(p) for p in spec.get("packages") or [])
    return JobSource(name, fp, tuple(files), True, packages)


def read_release_dir(release_dir: Path) -> ReleaseSources:
    """Everything `create-release` would put in the tarball, validated the way the
    CLI validates it; all problems are reported together."""
    release_dir = release_dir.resolve()
    name = release_name(release_dir)
    blob_index = listed_blobs(release_dir)
    errors: list[str] = []
    warnings: list[str] = []
    blobs_dir = release_dir / "blobs"
    for path in sorted(set(_walk(blobs_dir)) - set(blob_index)):
        if not (blobs_dir / path).is_dir():
            warnings.append(
                f"blobs/{path} is not in config/blobs.yml; bosh create-release "
                "would delete it (use scripts/update-blobs)"
            )

    packages: list[PackageSource] = []
    for pkg_dir in sorted(p for p in (release_dir / "packages").glob("*") if p.is_dir()):
        try:
            packages.append(_read_package(pkg_dir, release_dir / "src", blobs_dir, set(blob_index)))
        except ReleaseError as exc:
            errors.extend(exc.errors)
    jobs: list[JobSource] = []
    for job_dir in sorted(p for p in (release_dir / "jobs").glob("*") if p.is_dir()):
        try:
            jobs.append(_read_job(job_dir))
        except ReleaseError as exc:
            errors.extend(exc.errors)

    known = {p.name for p in packages}
    for pkg in packages:
        errors.extend(
            f"Expected to find package '{d}' since it's a dependency of package '{pkg.name}'"
            for d in pkg.dependencies
            if d not in known
        )
    for job in jobs:
        errors.extend(
            f"Expected to find package '{d}' since it's a dependency of job '{job.name}'"
            for d in job.packages
            if d not in known
        )
    if errors:
        raise ReleaseError(errors)

    license_files = tuple(
        SourceFile(p, p.name, exclude_mode=True, use_basename=True)
        for pattern in ("LICENSE*", "NOTICE*")
        for p in sorted(release_dir.glob(pattern))
    )
    lic = None
    if license_files:
        lic = Resource(
            "license", fingerprint(license_files, [], follow_symlinks=False), license_files, False
        )
    return ReleaseSources(name, tuple(jobs), tuple(packages), lic, tuple(warnings))


# -- writing archives (deterministic: fixed mtimes and owners, so equal inputs give
#    equal tarballs)


def _tar_info(
    name: str, mode: int, size: int = 0, kind: bytes = tarfile.REGTYPE
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.size, info.type = mode, size, kind
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    return info


def _write_tgz(dest: Path, entries: list[tuple[str, Path | bytes | None, int]]) -> None:
    """entries: (name, file path | bytes | None for a directory, mode)."""
    with (
        dest.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for name, content, mode in entries:
            if content is None:
                tar.addfile(_tar_info(name, mode, kind=tarfile.DIRTYPE))
            elif isinstance(content, bytes):
                tar.addfile(_tar_info(name, mode, len(content)), io.BytesIO(content))
            else:
                with content.open("rb") as f:
                    tar.addfile(_tar_info(name, mode, content.stat().st_size), f)


def _resource_entries(res: Resource) -> list[tuple[str, Path | bytes | None, int]]:
    """The staging dir the CLI builds and then packs with `tar -czf x -C dir .`."""
    entries: list[tuple[str, Path | bytes | None, int]] = [("./", None, 0o755)]
    dirs: set[str] = set()
    for f in sorted(res.files, key=lambda f: f.rel):
        parents = Path(f.rel).parents
        for parent in reversed(list(parents)[:-1]):
            if parent.as_posix() not in dirs:
                dirs.add(parent.as_posix())
                entries.append((f"./{parent.as_posix()}/", None, 0o755))
        name = f"./{f.path.name if f.use_basename else f.rel}"
        lst = f.path.lstat()
        if stat.S_ISLNK(lst.st_mode) and not res.follow_symlinks:
            raise ReleaseError([f"{f.path}: symlinks in packages are not supported by localbosh"])
        # The CLI keeps only the executable bit (archive.go getFilePerms).
        mode = 0o755 if f.path.stat().st_mode & 0o100 else 0o644
        entries.append((name, f.path, mode))
    return entries


def _git_state(release_dir: Path) -> tuple[str, bool]:
    try:
        head = subprocess.run(
            ["git", "-C", str(release_dir), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(release_dir), "status", "--short"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "non-git", False
    return head, bool(dirty)


def _build_python(release_dir: Path, out_dir: Path, version: str) -> Path:
    sources = read_release_dir(release_dir)
    for warning in sources.warnings:
        log.warning("%s", warning)
    commit, dirty = _git_state(release_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="localbosh-release-") as tmp:
        staging = Path(tmp)
        (staging / "jobs").mkdir()
        (staging / "packages").mkdir()
        manifest: dict[str, Any] = {
            "name": sources.name,
            "version": version,
            "commit_hash": commit,
            "uncommitted_changes": dirty,
            "jobs": [],
            "packages": [],
        }
        top: list[tuple[str, Path | bytes | None, int]] = []
        for job in sorted(sources.jobs, key=lambda j: j.name):
            archive = staging / "jobs" / f"{job.name}.tgz"
            _write_tgz(archive, _resource_entries(job))
            manifest["jobs"].append(
                {
                    "name": job.name,
                    "version": job.fingerprint,
                    "fingerprint": job.fingerprint,
                    "sha1": _digest_file(archive),
                    "packages": list(job.packages),
                }
            )
        for pkg in sorted(sources.packages, key=lambda p: p.name):
            archive = staging / "packages" / f"{pkg.name}.tgz"
            _write_tgz(archive, _resource_entries(pkg))
            manifest["packages"].append(
                {
                    "name": pkg.name,
                    "version": pkg.fingerprint,
                    "fingerprint": pkg.fingerprint,
                    "sha1": _digest_file(archive),
                    "dependencies": list(pkg.dependencies),
                }
            )
        if sources.license is not None:
            archive = staging / "license.tgz"
            _write_tgz(archive, _resource_entries(sources.license))
            manifest["license"] = {
                "version": sources.license.fingerprint,
                "fingerprint": sources.license.fingerprint,
                "sha1": _digest_file(archive),
            }
            top += [("license.tgz", archive, 0o644)]
            top += [(f.path.name, f.path, 0o644) for f in sources.license.files]
        release_mf = yaml.safe_dump(manifest, sort_keys=False).encode()
        entries: list[tuple[str, Path | bytes | None, int]] = [("release.MF", release_mf, 0o644)]
        for kind in ("jobs", "packages"):
            entries.append((f"{kind}/", None, 0o755))
            entries += [(f"{kind}/{p.name}", p, 0o644) for p in sorted((staging / kind).iterdir())]
        entries += top
        tarball = out_dir / f"{sources.name}-{version}.tgz"
        _write_tgz(tarball, entries)
    return tarball


def _build_bosh(bosh: str, release_dir: Path, out_dir: Path, version: str) -> Path:
    name = release_name(release_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tarball = out_dir.resolve() / f"{name}-{version}.tgz"
    with tempfile.TemporaryDirectory(prefix="localbosh-bosh-") as tmp:
        copy = Path(tmp) / "release"
        shutil.copytree(release_dir, copy, symlinks=True, ignore=_COPY_IGNORE)
        home = Path(tmp) / "home"
        home.mkdir()
        cmd = [
            bosh,
            "--sha2",
            "-n",
            "create-release",
            "--force",
            f"--dir={copy}",
            f"--version={version}",
            f"--tarball={tarball}",
        ]
        proc = subprocess.run(
            cmd, env={**os.environ, "HOME": str(home)}, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise ReleaseError(
                [
                    f"{' '.join(cmd)} failed ({proc.returncode}):",
                    proc.stdout.strip(),
                    proc.stderr.strip(),
                ]
            )
    return tarball


def build_release(
    release_dir: Path, out_dir: Path, *, version: str = DEFAULT_VERSION, builder: Builder = "auto"
) -> Path:
    """Build a dev release tarball of `release_dir` into `out_dir` and return its path.

    builder="auto" uses the bosh CLI when it is on PATH, else the Python builder.
    """
    bosh = shutil.which("bosh")
    if builder == "bosh" and bosh is None:
        raise ReleaseError(["builder='bosh' requested but no bosh on PATH"])
    if builder in ("auto", "bosh") and bosh is not None:
        path = _build_bosh(bosh, release_dir, out_dir, version)
        used = f"bosh CLI ({bosh})"
    else:
        path = _build_python(release_dir, out_dir, version)
        used = "Python builder (no bosh on PATH)" if builder == "auto" else "Python builder"
    log.info("release tarball %s built with the %s", path, used)
    print(f"release: {path} built with the {used}", file=sys.stderr)
    return path


def read_release_manifest(tarball: Path) -> dict[str, Any]:
    """release.MF of a release tarball, parsed."""
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name.removeprefix("./") == "release.MF":
                f = tar.extractfile(member)
                if f is None:
                    break
                data = yaml.safe_load(f.read())
                if not isinstance(data, dict):
                    break
                return data
    raise ReleaseError([f"{tarball}: no readable release.MF"])


def main(argv: list[str] | None = None) -> int:
    """`python -m localbosh.release [--dir DIR] [--out DIR] [--builder ...]`"""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m localbosh.release", description="Build a dev release tarball."
    )
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="release directory")
    parser.add_argument("--out", type=Path, default=Path("dev_releases"), help="output dir")
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--builder", choices=["auto", "bosh", "python"], default="auto")
    args = parser.parse_args(argv)
    try:
        tarball = build_release(args.dir, args.out, version=args.version, builder=args.builder)
    except ReleaseError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 1
    manifest = read_release_manifest(tarball)
    print(f"{tarball} ({tarball.stat().st_size / 1e6:.1f} MB)")
    for kind in ("jobs", "packages"):
        for ref in manifest.get(kind) or []:
            print(f"  {kind[:-1]:8} {ref['name']:16} {ref['fingerprint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
