"""The compile tier: packages compile offline the way a compilation VM compiles them.

The first test builds the real release and compiles python3 (CPython from source),
python-deps (C extensions from sdists) and disk-snapshots into the shared cache
.cache/compiled, then runs the result. A cold run takes minutes; with unchanged
fingerprints every later run takes the cache. The small synthetic releases below
pin down the agent's contract (env vars, only declared dependencies present,
no half cache entry after a failure) in seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from localbosh.compile import CompileError
from localbosh.compile import compile_release
from localbosh.compile import install_packages
from localbosh.compile import topological_order
from localbosh.release import build_release
from support.release import REPO

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="compiling needs root (unshare --mount)"),
]

CACHE = REPO / ".cache" / "compiled"
PACKAGES = ("python3", "python-deps", "disk-snapshots")


def du(path: Path) -> str:
    return subprocess.run(
        ["du", "-sh", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]


@pytest.mark.slow
def test_release_compiles_offline_and_runs(release_blobs: Path, tmp_path: Path) -> None:
    tarball = build_release(REPO, tmp_path / "release")
    print(f"\nrelease tarball: {tarball.name} {du(tarball)}")

    started = time.monotonic()
    first = compile_release(tarball, CACHE)
    first_s = time.monotonic() - started
    assert list(first) == list(PACKAGES)  # dependencies first
    for pkg in first.values():
        print(
            f"compiled {pkg.name}: {du(pkg.path)} in {pkg.seconds:.1f}s"
            f"{' (cache)' if pkg.cached else ''}"
        )

    started = time.monotonic()
    second = compile_release(tarball, CACHE)
    second_s = time.monotonic() - started
    print(f"compile_release: first {first_s:.1f}s, second {second_s:.1f}s")
    assert all(p.cached for p in second.values())
    assert {n: p.path for n, p in second.items()} == {n: p.path for n, p in first.items()}
    assert second_s < 10
    if first_s > 30:  # a real compile happened (not just our own small package)
        assert second_s < first_s / 10

    root = tmp_path / "vm"
    links = install_packages(second.values(), root)
    packages = root / "var" / "vcap" / "packages"
    for name, pkg in second.items():
        assert links[name] == packages / name
        assert (packages / name).resolve() == (
            root / "var" / "vcap" / "data" / "packages" / name / pkg.version
        ).resolve()

    python = packages / "python3" / "bin" / "python3"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONNOUSERSITE": "1",
        # what the job shims set, relative to this simulated VM's root
        "PYTHONPATH": f"{packages}/disk-snapshots/site-packages:"
        f"{packages}/python-deps/site-packages",
    }
    helped = subprocess.run(
        [str(python), "-m", "disk_snapshots", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    assert "usage" in helped.stdout.lower()

    probe = r"""
import glob, json, os, sys, sysconfig
import ssl, zlib, hashlib, ctypes
import importlib, importlib.metadata, pkgutil
import disk_snapshots
for module in pkgutil.walk_packages(disk_snapshots.__path__, "disk_snapshots."):
    if module.name != "disk_snapshots.__main__":  # runs the CLI when imported
        importlib.import_module(module.name)
import psutil
site = os.environ["PYTHONPATH"].split(":")[1]
assert glob.glob(os.path.join(site, "psutil", "_psutil_linux*.so")), "psutil not compiled"
assert sysconfig.get_config_var("prefix") == "/var/vcap/packages/python3"
assert sys.version_info[:3] == (3, 13, 5), sys.version
dists = importlib.metadata.packages_distributions()
loaded = {
    dist
    for name, module in list(sys.modules.items())
    if (getattr(module, "__file__", None) or "").startswith(site)
    for dist in dists.get(name.partition(".")[0], [name.partition(".")[0]])
}
requires = {
    dist: [
        r for r in importlib.metadata.requires(dist) or [] if "extra ==" not in r.partition(";")[2]
    ]
    for dist in loaded
}
print(json.dumps({"loaded": sorted(loaded), "requires": requires}))
print(ssl.OPENSSL_VERSION, psutil.cpu_count())
"""
    probed = subprocess.run(
        [str(python), "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert probed.returncode == 0, probed.stderr
    report = json.loads(probed.stdout.splitlines()[0])
    assert shipped_exactly(report["loaded"], report["requires"]) == (set(), set())


def _name(requirement: str) -> str:
    """The normalized distribution name at the start of a requirement line."""
    name = re.split(r"[\s;<>=!~\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> set[str]:
    """What src/python-deps/requirements.txt pins."""
    lock = (REPO / "src" / "python-deps" / "requirements.txt").read_text()
    return {_name(line) for line in lock.splitlines() if re.match(r"[A-Za-z]", line)}


def shipped_exactly(
    loaded: list[str], requires: dict[str, list[str]], lock: set[str] | None = None
) -> tuple[set[str], set[str]]:
    """(imported but not pinned, pinned but neither imported nor required by what is)."""
    lock = locked() if lock is None else lock
    used = {_name(d) for d in loaded}
    needed = used | {_name(r) for reqs in requires.values() for r in reqs}
    return used - lock, lock - needed


def test_the_lock_check_finds_what_is_missing_and_what_is_extra() -> None:
    loaded = ["boto3", "python_dateutil"]
    requires = {"boto3": ["botocore (<1.45,>=1.44)"], "python_dateutil": ["six >=1.5"]}
    lock = {"boto3", "botocore", "six", "python-dateutil", "jinja2"}
    assert shipped_exactly(loaded, requires, lock) == (set(), {"jinja2"})
    assert shipped_exactly([*loaded, "PyYAML"], requires, lock - {"jinja2"}) == ({"pyyaml"}, set())
    assert {"psutil", "croniter", "boto3"} <= locked()


def make_release(base: Path, packages: dict[str, tuple[list[str], str]]) -> Path:
    """A minimal release dir: {name: (dependencies, packaging script)}."""
    (base / "config").mkdir(parents=True)
    (base / "config" / "final.yml").write_text("name: tiny\n")
    (base / "config" / "blobs.yml").write_text("--- {}\n")
    (base / "jobs").mkdir()
    for name, (deps, script) in packages.items():
        pkg = base / "packages" / name
        pkg.mkdir(parents=True)
        (pkg / "spec").write_text(
            yaml.safe_dump({"name": name, "dependencies": deps, "files": [f"{name}/**/*"]})
        )
        (pkg / "packaging").write_text("set -euo pipefail\n" + script)
        (base / "src" / name).mkdir(parents=True)
        (base / "src" / name / "input.txt").write_text(f"{name} source\n")
    return base


RECORD = """
cat "$BOSH_COMPILE_TARGET/$BOSH_PACKAGE_NAME/input.txt" > "$BOSH_INSTALL_TARGET/input.txt"
env | grep '^BOSH_' | sort > "$BOSH_INSTALL_TARGET/env"
ls "$BOSH_PACKAGES_DIR" > "$BOSH_INSTALL_TARGET/visible"
pwd > "$BOSH_INSTALL_TARGET/cwd"
"""


def test_agent_contract(tmp_path: Path) -> None:
    release = make_release(
        tmp_path / "rel",
        {
            "base": ([], RECORD),
            "middle": (
                ["base"],
                RECORD + "cat /var/vcap/packages/base/input.txt >> "
                '"$BOSH_INSTALL_TARGET/input.txt"\n',
            ),
            "top": (["middle"], RECORD),
            "lonely": ([], RECORD),
        },
    )
    tarball = build_release(release, tmp_path / "out")
    cache = tmp_path / "cache"
    compiled = compile_release(tarball, cache)
    assert list(compiled) == ["base", "lonely", "middle", "top"]

    top = compiled["top"]
    env = dict(line.split("=", 1) for line in (top.path / "env").read_text().splitlines())
    assert env["BOSH_INSTALL_TARGET"] == "/var/vcap/packages/top"
    assert env["BOSH_PACKAGES_DIR"] == "/var/vcap/packages"
    assert env["BOSH_PACKAGE_NAME"] == "top"
    assert env["BOSH_PACKAGE_VERSION"] == top.version == top.fingerprint
    assert env["BOSH_COMPILE_TARGET"] == (top.path / "cwd").read_text().strip()
    # only the declared dependencies (not transitive ones) and itself
    assert (top.path / "visible").read_text().split() == ["middle", "top"]
    assert (compiled["middle"].path / "visible").read_text().split() == ["base", "middle"]
    assert (compiled["lonely"].path / "visible").read_text().split() == ["lonely"]
    assert (compiled["middle"].path / "input.txt").read_text() == "middle source\nbase source\n"
    # the host's /var/vcap was not touched
    assert not Path("/var/vcap/packages/top").exists()

    again = compile_release(tarball, cache, only=["middle"])
    assert list(again) == ["base", "middle"]
    assert all(p.cached for p in again.values())


def test_failed_compile_leaves_no_cache_entry(tmp_path: Path) -> None:
    release = make_release(
        tmp_path / "rel",
        {
            "good": ([], RECORD),
            "bad": (["good"], 'echo "partial" > "$BOSH_INSTALL_TARGET/half"\nfalse\n'),
        },
    )
    tarball = build_release(release, tmp_path / "out")
    cache = tmp_path / "cache"
    with pytest.raises(CompileError, match="compiling package 'bad' failed"):
        compile_release(tarball, cache)
    assert (cache / "good").is_dir()
    assert not (cache / "bad").exists()
    assert list((cache / ".tmp").iterdir()) == []
    assert list((cache / "logs").glob("bad-*.log"))


def test_dependency_key_changes_with_dependencies(tmp_path: Path) -> None:
    spec = {"base": ([], RECORD), "top": (["base"], RECORD)}
    one = compile_release(
        build_release(make_release(tmp_path / "a", spec), tmp_path / "o1"),
        tmp_path / "cache",
    )
    changed = make_release(tmp_path / "b", spec)
    (changed / "src" / "base" / "input.txt").write_text("base v2\n")
    two = compile_release(build_release(changed, tmp_path / "o2"), tmp_path / "cache")
    assert two["top"].fingerprint == one["top"].fingerprint
    assert two["top"].key != one["top"].key  # recompiled against the new base
    assert not two["top"].cached


def test_topological_order_rejects_cycles() -> None:
    assert topological_order({"c": ["b"], "b": ["a"], "a": []}) == ["a", "b", "c"]
    with pytest.raises(CompileError, match="cycle: a -> b -> a"):
        topological_order({"a": ["b"], "b": ["a"]})
