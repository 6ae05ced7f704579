"""Compile the packages of a release tarball the way a BOSH compilation VM does.

The agent (bosh-agent agent/compiler/concrete_compiler.go) compiles one package
at a time, dependencies first: it removes every package, installs only the
package's declared dependencies under /var/vcap/packages, unpacks the package
into its own compile dir and runs `bash -x packaging` there with
BOSH_COMPILE_TARGET, BOSH_INSTALL_TARGET=/var/vcap/packages/<name>,
BOSH_PACKAGES_DIR (create-env's compiler sets it), BOSH_PACKAGE_NAME and
BOSH_PACKAGE_VERSION. What the script leaves in BOSH_INSTALL_TARGET is the
compiled package.

Packages hard-code their install path (CPython's prefix, pip's shebangs), so the
compile must really see /var/vcap/packages/<name>. Each compile runs in its own
mount namespace (`unshare --mount`) with a private tmpfs at /var/vcap/packages
and bind mounts of the install dir and the dependencies into it: the host's
/var/vcap is never written, and several compiles could run side by side. If the
host has no /var/vcap at all, /var is overlaid (upper layer on a tmpfs) inside
the namespace so the mount point can exist without creating it on the host.

Compiled packages are cached under <cache_dir>/<name>/<key>/, where key is the
package fingerprint plus a digest of its dependencies' keys (a python-deps built
against another python3 is a different artefact). A compile builds in a temp
dir next to the cache and is renamed into place only on success, so a failed or
interrupted compile never leaves a half entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from localbosh.release import read_release_manifest

log = logging.getLogger(__name__)

PACKAGES_DIR = "/var/vcap/packages"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs as root inside `unshare --mount --propagation private`, so every mount
# below disappears with the process.
# $1 work dir, $2 package name, $3 install dir, $4 compile dir, $5 log file,
# then dependency name/path pairs.
_NAMESPACE_SCRIPT = r"""
set -euo pipefail
work=$1 name=$2 install=$3 compile_dir=$4 logfile=$5
shift 5

if [ -d /var/vcap/packages ]; then
  mount -t tmpfs -o mode=0755 localbosh-packages /var/vcap/packages
elif [ -d /var/vcap ]; then
  mount -t tmpfs -o mode=0755 localbosh-vcap /var/vcap
  mkdir -p /var/vcap/packages
else
  mkdir -p "$work/overlay"
  mount -t tmpfs -o mode=0755 localbosh-overlay "$work/overlay"
  mkdir -p "$work/overlay/upper" "$work/overlay/work"
  mount -t overlay localbosh-var \
    -o "lowerdir=/var,upperdir=$work/overlay/upper,workdir=$work/overlay/work" /var
  mkdir -p /var/vcap/packages
  mount -t tmpfs -o mode=0755 localbosh-packages /var/vcap/packages
fi

mkdir "/var/vcap/packages/$name"
mount --bind "$install" "/var/vcap/packages/$name"
while [ $# -gt 0 ]; do
  mkdir "/var/vcap/packages/$1"
  mount --bind "$2" "/var/vcap/packages/$1"
  mount -o remount,bind,ro "/var/vcap/packages/$1"
  shift 2
done

cd "$compile_dir"
exec env -i \
  PATH="$PATH" HOME="$work/home" TMPDIR="$work/tmp" \
  BOSH_COMPILE_TARGET="$compile_dir" \
  BOSH_INSTALL_TARGET="/var/vcap/packages/$name" \
  BOSH_PACKAGES_DIR=/var/vcap/packages \
  BOSH_PACKAGE_NAME="$name" \
  BOSH_PACKAGE_VERSION="$BOSH_PACKAGE_VERSION" \
  bash -x packaging >"$logfile" 2>&1
"""


class CompileError(RuntimeError):
    pass


@dataclass(frozen=True)
class CompiledPackage:
    name: str
    version: str
    fingerprint: str
    dependencies: tuple[str, ...]
    key: str  # cache key: fingerprint (+ digest of the dependencies' keys)
    path: Path  # the compiled contents (what BOSH_INSTALL_TARGET held)
    cached: bool  # taken from the cache rather than compiled now
    seconds: float


def topological_order(dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """Dependencies before dependents; ties broken by name so runs are repeatable."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise CompileError("package dependency cycle: " + " -> ".join([*path, name]))
        if name not in dependencies:
            raise CompileError(f"package '{path[-1]}' depends on unknown package '{name}'")
        state[name] = "visiting"
        for dep in sorted(dependencies[name]):
            visit(dep, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in sorted(dependencies):
        visit(name, [])
    return order


def cache_key(fingerprint: str, dep_keys: Mapping[str, str]) -> str:
    if not dep_keys:
        return fingerprint
    blob = "\n".join(f"{n}:{k}" for n, k in sorted(dep_keys.items()))
    return f"{fingerprint}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _check_can_compile() -> None:
    if os.geteuid() != 0:
        raise CompileError("compiling packages needs root (it uses `unshare --mount`)")
    if shutil.which("unshare") is None:
        raise CompileError("compiling packages needs `unshare` (util-linux)")


def _extract_package(tarball: Path, name: str, dest: Path) -> None:
    with tarfile.open(tarball, "r:gz") as release:
        member = None
        for m in release.getmembers():
            if m.name.removeprefix("./") == f"packages/{name}.tgz":
                member = m
                break
        f = release.extractfile(member) if member is not None else None
        if f is None:
            raise CompileError(f"{tarball}: no packages/{name}.tgz")
        with tarfile.open(fileobj=f, mode="r:gz") as pkg:
            pkg.extractall(dest, filter="data")


def _compile_one(
    tarball: Path, cache_dir: Path, name: str, version: str, key: str, deps: Mapping[str, Path]
) -> None:
    tmp_root = cache_dir / ".tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    logs = cache_dir / "logs"
    logs.mkdir(exist_ok=True)
    logfile = logs / f"{name}-{key}.log"
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_root))
    try:
        install, compile_dir = work / "install", work / "compile" / name
        for d in (install, compile_dir, work / "home", work / "tmp"):
            d.mkdir(parents=True)
        install.chmod(0o755)
        _extract_package(tarball, name, compile_dir)
        dep_args = [str(x) for dep, path in sorted(deps.items()) for x in (dep, path)]
        proc = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "bash",
                "-c",
                _NAMESPACE_SCRIPT,
                "localbosh-compile",
                str(work),
                name,
                str(install),
                str(compile_dir),
                str(logfile),
                *dep_args,
            ],
            env={"PATH": _PATH, "BOSH_PACKAGE_VERSION": version},
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = (
                logfile.read_text(errors="replace").splitlines()[-40:] if logfile.exists() else []
            )
            raise CompileError(
                f"compiling package '{name}' failed (exit {proc.returncode}); "
                f"log: {logfile}\n" + proc.stderr + "\n".join(tail)
            )
        final = cache_dir / name / key
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            install.rename(final)
        except OSError:
            if not final.is_dir():  # lost a race to an identical compile: keep theirs
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compile_release(
    tarball: Path, cache_dir: Path, *, only: Iterable[str] | None = None
) -> dict[str, CompiledPackage]:
    """Compile (or take from the cache) the release's packages, dependencies first.

    only: compile just these packages and what they depend on.
    Returns every compiled package by name.
    """
    manifest = read_release_manifest(tarball)
    pkgs = {str(p["name"]): p for p in manifest.get("packages") or []}
    graph = {n: [str(d) for d in p.get("dependencies") or []] for n, p in pkgs.items()}
    order = topological_order(graph)
    if only is not None:
        wanted: set[str] = set()
        stack = list(only)
        while stack:
            n = stack.pop()
            if n not in pkgs:
                raise CompileError(f"release has no package '{n}'")
            if n not in wanted:
                wanted.add(n)
                stack.extend(graph[n])
        order = [n for n in order if n in wanted]

    cache_dir = cache_dir.resolve()
    if cache_dir.is_relative_to("/var"):
        # The namespace shadows parts of /var before the bind mounts are made.
        raise CompileError(f"cache dir {cache_dir} must not be under /var")
    result: dict[str, CompiledPackage] = {}
    for name in order:
        meta = pkgs[name]
        fp, version = str(meta["fingerprint"]), str(meta["version"])
        deps = tuple(graph[name])
        key = cache_key(fp, {d: result[d].key for d in deps})
        path = cache_dir / name / key
        started = time.monotonic()
        cached = path.is_dir()
        if cached:
            log.info("package %s: cached (%s)", name, key)
        else:
            _check_can_compile()
            log.info("package %s: compiling (%s)", name, key)
            print(f"compile: {name} ({key[:12]}) compiling...", flush=True)
            _compile_one(tarball, cache_dir, name, version, key, {d: result[d].path for d in deps})
        seconds = time.monotonic() - started
        print(f"compile: {name} {'cached' if cached else 'compiled'} in {seconds:.1f}s", flush=True)
        result[name] = CompiledPackage(name, version, fp, deps, key, path, cached, seconds)
    return result


def install_packages(packages: Iterable[CompiledPackage], root: Path) -> dict[str, Path]:
    """Lay compiled packages out under <root>/var/vcap like the agent does:
    the contents at var/vcap/data/packages/<name>/<version> and the symlink
    var/vcap/packages/<name> pointing at them.

    The symlink is relative (../data/packages/...), unlike the agent's absolute
    one, so it resolves both from the host and inside a namespace where <root>/var/vcap
    is mounted at /var/vcap. Contents are copied (reflinks where the filesystem
    has them), so an instance that writes into its packages cannot change the cache.
    Returns the link path of every package by name.
    """
    vcap = root / "var" / "vcap"
    links: dict[str, Path] = {}
    for pkg in packages:
        data = vcap / "data" / "packages" / pkg.name / pkg.version
        if not data.is_dir():
            data.parent.mkdir(parents=True, exist_ok=True)
            partial = data.with_name(data.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            subprocess.run(["cp", "-a", "--reflink=auto", str(pkg.path), str(partial)], check=True)
            partial.rename(data)
        link = vcap / "packages" / pkg.name
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp_link = link.with_name(f".{pkg.name}.link")
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(Path("..") / "data" / "packages" / pkg.name / pkg.version)
        tmp_link.replace(link)  # atomic switch, like the agent re-pointing on update
        links[pkg.name] = link
    return links


def main(argv: list[str] | None = None) -> int:
    """`python -m localbosh.compile TARBALL [--cache DIR] [--only PKG]...`"""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m localbosh.compile",
        description="Compile a release's packages like the agent.",
    )
    parser.add_argument("tarball", type=Path)
    parser.add_argument("--cache", type=Path, default=Path(".cache/compiled"))
    parser.add_argument("--only", action="append", help="package (repeatable)")
    args = parser.parse_args(argv)
    try:
        compiled = compile_release(args.tarball, args.cache, only=args.only)
    except CompileError as exc:
        print(f"compile: {exc}", file=sys.stderr)
        return 1
    for pkg in compiled.values():
        print(
            f"  {pkg.name:16} {'cached' if pkg.cached else 'compiled':8} "
            f"{pkg.seconds:7.1f}s  {pkg.path}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
