"""Compiled packages for instances: dev release tarball, compile (cached), lay out.

Thin glue over `localbosh.release.build_release` (the real `bosh create-release`)
and `localbosh.compile`; jobs without packages (the test fixtures) never touch
either.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from localbosh.agent import RenderedJob
from localbosh.compile import CompiledPackage
from localbosh.compile import compile_release
from localbosh.compile import install_packages
from localbosh.deployment import Group
from localbosh.deployment import Release
from localbosh.release import build_release
from localbosh.state import cache_dir


@cache
def _compiled(release: Release) -> dict[str, CompiledPackage]:
    out = cache_dir() / "releases" / release.name
    out.mkdir(parents=True, exist_ok=True)
    tarball = build_release(release.path, out)
    return dict(compile_release(tarball, cache_dir() / "compiled"))


def _group_packages(group: Group) -> dict[str, tuple[Release, str]]:
    wanted: dict[str, tuple[Release, str]] = {}
    for job in group.jobs:
        if not job.spec.packages:
            continue
        compiled = _compiled(job.spec.release)
        # Install each job's packages and what they depend on.
        stack = list(job.spec.packages)
        while stack:
            name = stack.pop()
            pkg = compiled[name]
            wanted[name] = (job.spec.release, pkg.key)
            stack.extend(pkg.dependencies)
    return wanted


def package_fingerprints(jobs: Sequence[RenderedJob], group: Group) -> dict[str, str]:
    return {name: key for name, (_, key) in _group_packages(group).items()}


def lay_out_packages(group: Group) -> Callable[[Path, Sequence[str]], None] | None:
    wanted = _group_packages(group)
    if not wanted:
        return None

    def install(fs_root: Path, names: Sequence[str]) -> None:
        pkgs = [_compiled(wanted[n][0])[n] for n in wanted]
        install_packages(pkgs, fs_root)

    return install
