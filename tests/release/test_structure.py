"""Release structure checks that `bosh create-release` does not make (reference §1.4).

The CLI packs whatever it finds: a template file the spec forgets is silently left
out, a misspelled spec key is ignored, ERB is never parsed, a property without a
description or default passes, and a package dependency cycle is accepted. Each check
here is a function of a release directory, so the tests below can run it against the
repository and against broken copies to prove that it fires, with a message that
names the file and the thing. What the CLI does check (job directory vs name, package
dependencies, `files:` globs) is left to it: the bosh-cli tier builds the release.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

JOB_KEYS = {
    "name",
    "description",
    "templates",
    "packages",
    "consumes",
    "provides",
    "properties",
    "logs",
}
PROPERTY_KEYS = {"description", "default", "example", "type"}
PACKAGE_KEYS = {"name", "dependencies", "files", "excluded_files"}

Check = Callable[[Path], list[str]]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _jobs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "jobs").iterdir() if p.is_dir())


def _packages(root: Path) -> list[Path]:
    base = root / "packages"
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def _spec(job: Path) -> dict[str, Any]:
    data = _yaml(job / "spec")
    return data if isinstance(data, dict) else {}


def _templates(job: Path) -> dict[str, str]:
    templates = _spec(job).get("templates") or {}
    return {str(k): str(v) for k, v in templates.items()} if isinstance(templates, dict) else {}


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


def check_templates_listed(root: Path) -> list[str]:
    """Every file under templates/ is in the spec, and every listed template exists."""
    errors: list[str] = []
    for job in _jobs(root):
        spec = _rel(root, job / "spec")
        listed = _templates(job)
        for source in listed:
            if not (job / "templates" / source).is_file():
                errors.append(
                    f"{spec}: templates: '{source}' is listed but "
                    f"{_rel(root, job / 'templates' / source)} does not exist"
                )
        base = job / "templates"
        present = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        for path in present:
            source = str(path.relative_to(base))
            if source not in listed:
                errors.append(
                    f"{spec}: templates: {_rel(root, path)} is not listed, so the release "
                    "would silently leave it out"
                )
    return errors


def check_spec_keys(root: Path) -> list[str]:
    errors: list[str] = []
    for job in _jobs(root):
        spec_path = _rel(root, job / "spec")
        spec = _spec(job)
        for key in sorted(set(spec) - JOB_KEYS):
            errors.append(
                f"{spec_path}: unknown key '{key}' (known: {', '.join(sorted(JOB_KEYS))})"
            )
        for name, definition in (spec.get("properties") or {}).items():
            if not isinstance(definition, dict):
                errors.append(f"{spec_path}: property '{name}' is not a map")
                continue
            for key in sorted(set(definition) - PROPERTY_KEYS):
                errors.append(
                    f"{spec_path}: property '{name}' has unknown key '{key}' "
                    f"(known: {', '.join(sorted(PROPERTY_KEYS))})"
                )
    for package in _packages(root):
        package_spec = package / "spec"
        if not package_spec.is_file():
            continue
        for key in sorted(set(_yaml(package_spec) or {}) - PACKAGE_KEYS):
            errors.append(
                f"{_rel(root, package_spec)}: unknown key '{key}' "
                f"(known: {', '.join(sorted(PACKAGE_KEYS))})"
            )
    return errors


def check_properties_documented(root: Path) -> list[str]:
    errors: list[str] = []
    for job in _jobs(root):
        spec_path = _rel(root, job / "spec")
        for name, definition in (_spec(job).get("properties") or {}).items():
            if not isinstance(definition, dict):
                continue
            description = definition.get("description")
            if not isinstance(description, str) or not description.strip():
                errors.append(f"{spec_path}: property '{name}' has no description")
            if "default" not in definition and "example" not in definition:
                errors.append(
                    f"{spec_path}: property '{name}' has neither a default nor an example"
                )
    return errors


def check_monit_files(root: Path) -> list[str]:
    return [
        f"{_rel(root, job)}: no monit file (an empty one is fine for an errand)"
        for job in _jobs(root)
        if not (job / "monit").is_file()
    ]


def _package_deps(root: Path) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    for package in _packages(root):
        spec_path = package / "spec"
        spec = (_yaml(spec_path) or {}) if spec_path.is_file() else {}
        deps[package.name] = [str(d) for d in spec.get("dependencies") or []]
    return deps


def check_package_names(root: Path) -> list[str]:
    """The CLI names a package by its spec and never compares that with the directory."""
    errors: list[str] = []
    for package in _packages(root):
        spec_path = package / "spec"
        if spec_path.is_file():
            name = (_yaml(spec_path) or {}).get("name")
            if name != package.name:
                errors.append(
                    f"{_rel(root, spec_path)}: name '{name}' does not match the directory "
                    f"'{package.name}'"
                )
    return errors


def check_no_dependency_cycle(root: Path) -> list[str]:
    deps = _package_deps(root)
    errors: list[str] = []
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            errors.append(f"packages/{cycle[0]}/spec: dependency cycle {' -> '.join(cycle)}")
            return
        if name in done or name not in deps:
            return
        for dep in deps[name]:
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(deps):
        visit(name, [])
    return errors


def check_bin_templates(root: Path) -> list[str]:
    errors: list[str] = []
    for job in _jobs(root):
        for source, dest in _templates(job).items():
            path = job / "templates" / source
            if not dest.startswith("bin/") or not path.is_file():
                continue
            first = path.read_text().split("\n", 1)[0]
            if not first.startswith("#!"):
                errors.append(
                    f"{_rel(root, path)}: line 1 is not a shebang (it renders to {dest}, "
                    "which the agent executes)"
                )
            if not path.stat().st_mode & stat.S_IXUSR:
                errors.append(
                    f"{_rel(root, path)}: not executable (mode {oct(path.stat().st_mode & 0o777)})"
                )
    return errors


_TLS_TEMPLATE = re.compile(r"tls/[\w.-]+\.pem\.erb\Z")


def check_config_templates(root: Path) -> list[str]:
    """A job renders bin/* shims, one config/config.json, and config/tls/*.pem; nothing else.

    Everything an operator sets goes through config.json into Python, where it is
    validated; a second config template would be logic that no test sees.
    """
    errors: list[str] = []
    for job in _jobs(root):
        spec_path = _rel(root, job / "spec")
        templates = _templates(job)
        for source, dest in templates.items():
            if dest.startswith("bin/"):
                continue
            if source == "config.json.erb" and dest == "config/config.json":
                continue
            if _TLS_TEMPLATE.match(source) and dest == "config/" + source.removesuffix(".erb"):
                continue
            errors.append(
                f"{spec_path}: templates: '{source}' renders to '{dest}'; a job renders only "
                "bin/*, config/config.json (from config.json.erb) and config/tls/*.pem "
                "(from tls/*.pem.erb)"
            )
        if "config.json.erb" not in templates:
            errors.append(f"{spec_path}: templates: no config.json.erb")
    return errors


def _erb_errors_with_ruby(job: Path) -> list[str]:
    # Used only while localbosh.templates.check_erb_syntax is unavailable.
    errors: list[str] = []
    files = [job / "monit", *sorted((job / "templates").rglob("*"))]
    for path in files:
        if not path.is_file():
            continue
        src = subprocess.run(
            [
                "ruby",
                "-e",
                'require "erb"; print ERB.new(File.read(ARGV[0]), trim_mode: "-").src',
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if src.returncode != 0:
            errors.append(f"{path.name}: {src.stderr.strip()}")
            continue
        syntax = subprocess.run(
            ["ruby", "-c"],
            input=src.stdout,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if syntax.returncode != 0:
            errors.append(f"{path.name}: {syntax.stderr.strip()}")
    return errors


def check_erb_compiles(root: Path) -> list[str]:
    check: Check
    try:
        from localbosh.templates import check_erb_syntax
    except ImportError:
        check = _erb_errors_with_ruby
    else:
        check = check_erb_syntax
    errors: list[str] = []
    for job in _jobs(root):
        errors += [f"{_rel(root, job)}: ERB does not compile: {e}" for e in check(job)]
    return errors


CHECKS: dict[str, Check] = {
    "templates-listed": check_templates_listed,
    "spec-keys": check_spec_keys,
    "properties-documented": check_properties_documented,
    "monit-files": check_monit_files,
    "package-names": check_package_names,
    "no-dependency-cycle": check_no_dependency_cycle,
    "bin-templates": check_bin_templates,
    "config-templates": check_config_templates,
    "erb-compiles": check_erb_compiles,
}


# ---------------------------------------------------------------------------------------
# The repository passes every check
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_release_passes(name: str) -> None:
    if name == "erb-compiles" and shutil.which("ruby") is None:
        pytest.skip("ruby is not on PATH: ERB cannot be compiled (apt-get install ruby)")
    errors = CHECKS[name](REPO)
    assert not errors, "\n".join(errors)


def test_the_four_jobs_and_three_packages_exist() -> None:
    assert [j.name for j in _jobs(REPO)] == [
        "list-snapshots",
        "restore",
        "snapshotter",
        "take-snapshot",
    ]
    assert [p.name for p in _packages(REPO)] == ["disk-snapshots", "python-deps", "python3"]


# ---------------------------------------------------------------------------------------
# Each check fires on a broken copy
# ---------------------------------------------------------------------------------------


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A copy of what the checks read (jobs, packages, config, src)."""
    root = tmp_path / "release"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for part in ("jobs", "packages", "config", "src"):
        if (REPO / part).exists():
            shutil.copytree(REPO / part, root / part, ignore=ignore, symlinks=True)
    return root


def edit_spec(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = _yaml(path)
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def fires(check: Check, root: Path, expected: str) -> None:
    errors = check(root)
    assert expected in errors, f"expected {expected!r} among {errors!r}"


def test_listed_template_missing(release: Path) -> None:
    (release / "jobs/snapshotter/templates/bin/drain").unlink()
    fires(
        check_templates_listed,
        release,
        "jobs/snapshotter/spec: templates: 'bin/drain' is listed but "
        "jobs/snapshotter/templates/bin/drain does not exist",
    )


def test_template_not_listed(release: Path) -> None:
    edit_spec(release / "jobs/restore/spec", lambda s: s["templates"].pop("bin/run"))
    fires(
        check_templates_listed,
        release,
        "jobs/restore/spec: templates: jobs/restore/templates/bin/run is not listed, so the "
        "release would silently leave it out",
    )


def test_unknown_spec_key(release: Path) -> None:
    edit_spec(release / "jobs/restore/spec", lambda s: s.update(templtes={}))
    fires(
        check_spec_keys,
        release,
        "jobs/restore/spec: unknown key 'templtes' (known: consumes, description, logs, name, "
        "packages, properties, provides, templates)",
    )


def test_unknown_property_key(release: Path) -> None:
    edit_spec(
        release / "jobs/restore/spec",
        lambda s: s["properties"]["restore.target"].update(defualt="x"),
    )
    fires(
        check_spec_keys,
        release,
        "jobs/restore/spec: property 'restore.target' has unknown key 'defualt' "
        "(known: default, description, example, type)",
    )


def test_unknown_package_spec_key(release: Path) -> None:
    edit_spec(release / "packages/python3/spec", lambda s: s.update(dependancies=[]))
    fires(
        check_spec_keys,
        release,
        "packages/python3/spec: unknown key 'dependancies' "
        "(known: dependencies, excluded_files, files, name)",
    )


def test_property_without_description(release: Path) -> None:
    edit_spec(
        release / "jobs/restore/spec",
        lambda s: s["properties"]["restore.target"].pop("description"),
    )
    fires(
        check_properties_documented,
        release,
        "jobs/restore/spec: property 'restore.target' has no description",
    )


def test_property_without_default_or_example(release: Path) -> None:
    def strip(spec: dict[str, Any]) -> None:
        spec["properties"]["restore.target"].pop("default")
        spec["properties"]["restore.target"].pop("example")

    edit_spec(release / "jobs/restore/spec", strip)
    fires(
        check_properties_documented,
        release,
        "jobs/restore/spec: property 'restore.target' has neither a default nor an example",
    )


def test_missing_monit(release: Path) -> None:
    (release / "jobs/list-snapshots/monit").unlink()
    fires(
        check_monit_files,
        release,
        "jobs/list-snapshots: no monit file (an empty one is fine for an errand)",
    )


def test_dependency_cycle(release: Path) -> None:
    edit_spec(
        release / "packages/python3/spec", lambda s: s.update(dependencies=["disk-snapshots"])
    )
    errors = check_no_dependency_cycle(release)
    assert any("dependency cycle" in e and "python3 -> disk-snapshots" in e for e in errors), errors
    assert errors[0].startswith("packages/")


def test_bin_template_without_shebang(release: Path) -> None:
    path = release / "jobs/take-snapshot/templates/bin/run"
    path.write_text("\n" + path.read_text())
    fires(
        check_bin_templates,
        release,
        "jobs/take-snapshot/templates/bin/run: line 1 is not a shebang (it renders to "
        "bin/run, which the agent executes)",
    )


def test_bin_template_not_executable(release: Path) -> None:
    path = release / "jobs/take-snapshot/templates/bin/run"
    path.chmod(0o644)
    fires(
        check_bin_templates,
        release,
        "jobs/take-snapshot/templates/bin/run: not executable (mode 0o644)",
    )


def test_second_config_template(release: Path) -> None:
    (release / "jobs/restore/templates/restore.yml.erb").write_text("a: 1\n")
    edit_spec(
        release / "jobs/restore/spec",
        lambda s: s["templates"].update({"restore.yml.erb": "config/restore.yml"}),
    )
    fires(
        check_config_templates,
        release,
        "jobs/restore/spec: templates: 'restore.yml.erb' renders to 'config/restore.yml'; a "
        "job renders only bin/*, config/config.json (from config.json.erb) and "
        "config/tls/*.pem (from tls/*.pem.erb)",
    )


def test_erb_syntax_error(release: Path) -> None:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not on PATH: ERB cannot be compiled (apt-get install ruby)")
    path = release / "jobs/restore/templates/config.json.erb"
    path.write_text('<%= p("restore.target" %>\n')
    errors = check_erb_compiles(release)
    assert len(errors) == 1, errors
    assert errors[0].startswith("jobs/restore: ERB does not compile: ")
    assert "config.json.erb" in errors[0]


def test_package_name_mismatch(release: Path) -> None:
    edit_spec(release / "packages/python3/spec", lambda s: s.update(name="python"))
    fires(
        check_package_names,
        release,
        "packages/python3/spec: name 'python' does not match the directory 'python3'",
    )
