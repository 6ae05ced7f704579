"""Dev release tarballs, built by the real `bosh create-release`.

The CLI is run on a throw-away copy of the release directory: it writes
dev_releases/ and .dev_builds/ into the directory it is given and deletes every
file under blobs/ that config/blobs.yml does not list (bosh-cli
releasedir/fs_blobs_dir.go `removeUnknownBlobs`), none of which may happen to the
checkout. `--sha2` because the CLI's default digest is still SHA-1.

The CLI records the git commit of the directory it builds (releasedir/git_repo.go
runs `git rev-parse --short HEAD` and `git status` there). The copy has no .git
of its own, so when the release directory is the top of a git work tree the copy
gets a `.git` file pointing at the same repository: the tarball then names the
checkout's commit, with `+` when the copy differs from it. GIT_OPTIONAL_LOCKS=0
keeps that `git status` from refreshing the checkout's index.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml

from localbosh import boshcli

log = logging.getLogger(__name__)

DEFAULT_VERSION = "0+dev.1"

# Left out of the copy: git (see above), our dev tooling state, and the CLI's own
# outputs (which would otherwise bump the dev version). All of it is gitignored, so
# leaving it out does not make the copy look dirty.
_COPY_IGNORE = shutil.ignore_patterns(
    ".git",
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
    """The release could not be built or read; the message is the CLI's."""


def _git_dir_of_work_tree(release_dir: Path) -> str | None:
    """The repository's git dir when release_dir is the top of its work tree."""
    try:
        out = subprocess.run(
            ["git", "-C", str(release_dir), "rev-parse", "--show-toplevel", "--absolute-git-dir"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) != 2 or Path(out[0]).resolve() != release_dir.resolve():
        return None
    return out[1]


def build_release(release_dir: Path, out_dir: Path, *, version: str = DEFAULT_VERSION) -> Path:
    """`bosh --sha2 create-release --force --tarball` of `release_dir` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="localbosh-release-") as tmp:
        copy = Path(tmp) / "release"
        shutil.copytree(release_dir, copy, symlinks=True, ignore=_COPY_IGNORE)
        git_dir = _git_dir_of_work_tree(release_dir)
        if git_dir is not None:
            (copy / ".git").write_text(f"gitdir: {git_dir}\n")
        staged = Path(tmp) / "release.tgz"
        try:
            answer = boshcli.run(
                [
                    "--sha2",
                    "create-release",
                    "--force",
                    f"--dir={copy}",
                    f"--version={version}",
                    f"--tarball={staged}",
                ],
                env={"GIT_OPTIONAL_LOCKS": "0"},
            )
        except boshcli.BoshCliError as exc:
            raise ReleaseError(f"{release_dir}: {exc}") from exc
        name = _release_name(answer)
        tarball = out_dir.resolve() / f"{name}-{version}.tgz"
        shutil.move(staged, tarball)
    log.info("release tarball %s built by bosh create-release", tarball)
    print(
        f"release: {tarball} built by bosh create-release ({boshcli.find()})",
        file=sys.stderr,
        flush=True,
    )
    return tarball


def _release_name(answer: boshcli.Output) -> str:
    """The name the CLI gave the release (config/final.yml's, unless --name)."""
    for table in answer.tables:
        for row in table.get("Rows") or ():
            if isinstance(row, dict) and row.get("name") and row.get("archive"):
                return str(row["name"])
    raise ReleaseError("bosh create-release did not say which release it built")


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
    raise ReleaseError(f"{tarball}: no readable release.MF")
