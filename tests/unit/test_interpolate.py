"""localbosh.manifest and localbosh.boshcli: how the local deployment and the tests
run the real `bosh int` (argv, HOME, vars store, errors). What `bosh int` itself does
with ops files and variables is the CLI's business and is not re-tested here."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from localbosh import boshcli
from localbosh.manifest import InterpolationError
from localbosh.manifest import interpolate

pytestmark = pytest.mark.bosh


def test_a_parsed_manifest_and_v_values_as_an_operator_types_them() -> None:
    # The CLI parses -v values as YAML: 1 is an int, the in-string use stays a string.
    doc = interpolate({"a": "((n))", "b": "x-((n))", "c": "((s))"}, var_kvs=["n=1", "s=two"])
    assert doc == {"a": 1, "b": "x-1", "c": "two"}


def test_ops_files_vars_files_and_v_reach_the_cli(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yml"
    manifest.write_text("name: ((name))\nlist: [a]\n")
    ops = tmp_path / "ops.yml"
    ops.write_text("- {type: replace, path: /list/-, value: ((item))}\n")
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("name: from-file\nitem: b\n")
    doc = interpolate(manifest, [ops], vars_files=[vars_file], var_kvs=["item=c"])
    assert doc == {"name": "from-file", "list": ["a", "c"]}


def test_vars_store_is_private_and_reused(tmp_path: Path) -> None:
    store = tmp_path / "state" / "vars-store.yml"
    manifest = {"pw": "((pw))", "variables": [{"name": "pw", "type": "password"}]}
    first = interpolate(manifest, vars_store=store)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert yaml.safe_load(store.read_text()) == {"pw": first["pw"]}
    assert len(first["pw"]) == 20
    assert interpolate(manifest, vars_store=store) == first


def test_the_clis_error_is_the_message(tmp_path: Path) -> None:
    with pytest.raises(InterpolationError) as err:
        interpolate({"a": "((x))", "b": "((y))"}, var_errs=True)
    assert str(err.value) == "bosh int failed: - Expected to find variables:\n    - x\n    - y"


def test_the_cli_gets_a_temporary_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    interpolate(
        {"a": "((p))", "variables": [{"name": "p", "type": "password"}]},
        vars_store=tmp_path / "s.yml",
    )
    assert list(home.iterdir()) == []  # no ~/.bosh cache or config left behind


def test_a_missing_cli_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(boshcli, "BOOTSTRAPPED", tmp_path / "venv" / "bin" / "bosh")
    with pytest.raises(boshcli.BoshCliError, match=r"run scripts/bootstrap"):
        boshcli.find()
    with pytest.raises(InterpolationError, match=r"neither on PATH nor at .*/venv/bin/bosh"):
        interpolate({"a": 1})


def test_the_bootstrapped_cli_is_found_without_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # scripts/localbosh runs .venv/bin/python without .venv/bin on PATH.
    venv_bosh = tmp_path / "venv" / "bin" / "bosh"
    venv_bosh.parent.mkdir(parents=True)
    venv_bosh.symlink_to(boshcli.find())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(boshcli, "BOOTSTRAPPED", venv_bosh)
    assert boshcli.find() == str(venv_bosh)
    assert interpolate({"a": "((b))"}, var_kvs=["b=c"]) == {"a": "c"}
