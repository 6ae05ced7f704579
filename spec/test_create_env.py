"""Templates under `bosh create-env`: the CLI's own renderer, read out of the real `bosh`.

The Director itself is deployed with create-env, and the snapshotter is colocated there
(DESIGN.md 8b), so every job template must render under the CLI's context as well as
under the Director's (test_job_templates.py). Marker `bosh`: these need the real CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from localbosh import create_env
from localbosh import templates as tpl
from localbosh.create_env import render_job_create_env
from localbosh.templates import InstanceSpec
from localbosh.templates import RenderError
from localbosh.templates import render_job
from support.bad_properties import CASES
from support.bad_properties import BadProperty
from template_specs import JOBS_DIR
from template_specs import OPERATOR_VARS
from template_specs import Case
from template_specs import assert_renders_usably
from template_specs import cases
from template_specs import job_names
from template_specs import manifest_jobs
from test_schema_agreement import python_problems

pytestmark = pytest.mark.bosh

PROBE = Path(__file__).resolve().parent / "fixtures" / "jobs" / "probe"

# Hashes inside lists, and a hash whose keys are out of order.
UNSORTED = {
    "list": [{"b": 1, "a": {"z": 1, "y": 2}}],
    "nested": {"hash": {"zeta": [{"d": 1, "c": 2}], "alpha": 1}},
}


def test_the_renderer_is_the_one_embedded_in_the_cli() -> None:
    script = create_env.cli_renderer_script()
    assert script.startswith("# Based on common/properties/template_evaluation_context.rb\n")
    # Spelled in two pieces, so that only a copy of the script would hold the whole line.
    its_class = "class Template" + "EvaluationContext"
    assert its_class in script
    # It is the Ruby the CLI runs: it compiles, and it is not a copy kept in this repo.
    check = subprocess.run(
        [tpl.ruby_executable(), "-c", "-e", script], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    repo = Path(__file__).resolve().parent.parent
    tracked = subprocess.run(
        ["git", "-C", str(repo), "grep", "-l", "-F", its_class],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tracked.stdout == ""


def test_the_context_is_the_clis_not_the_directors() -> None:
    out = render_job_create_env(
        PROBE, UNSORTED, deployment="bosh", address="10.0.0.6", templates={"create_env.erb": "x"}
    )["x"]
    assert out.splitlines() == [
        # no spec.name; spec.job.name is the job's own name (the Director's is the group's)
        'name=nil job=probe legacy_name="probe"',
        'index=0 bootstrap=true az="unknown"',
        "release=nil persistent_disk=nil",
        'deployment=bosh address=10.0.0.6 network_ip=""',
        # if_link neither yields nor returns an else-chain
        "if_link=FalseClass",
        # keys sorted at every depth, inside lists too (Go's json.Marshal)
        'nested={"alpha":1,"zeta":[{"c":2,"d":1}]}',
        'list=[{"a":{"y":2,"z":1},"b":1}]',
    ]


def test_the_same_template_under_the_director_keeps_list_order_and_has_links() -> None:
    spec = InstanceSpec(networks={"default": {"ip": "10.0.0.6"}})
    out = render_job(PROBE, UNSORTED, spec, templates={"create_env.erb": "x"})["x"]
    assert 'nested={"alpha":1,"zeta":[{"d":1,"c":2}]}' in out
    assert 'list=[{"b":1,"a":{"z":1,"y":2}}]' in out
    assert "if_link=LocalBosh::EvaluationContext::ActiveElseBlock" in out


def test_else_after_if_link_fails_under_create_env() -> None:
    assert render_job(PROBE, {}, templates={"if_link_else.erb": "x"})["x"] == "no db\n"
    with pytest.raises(RenderError) as err:
        render_job_create_env(PROBE, {}, templates={"if_link_else.erb": "x"})
    assert err.value.errors[0].line == 3
    assert "undefined method" in str(err.value) and "for false" in str(err.value)
    assert str(err.value).startswith("Rendering template src: if_link_else.erb, dst: x: ")


def test_every_spec_id_is_new_like_the_clis_uuid_per_template() -> None:
    first = create_env.create_env_context({"name": "j"}, {}, deployment="d")
    second = create_env.create_env_context({"name": "j"}, {}, deployment="d")
    assert first["id"] != second["id"]


def test_without_job_properties_the_group_and_global_ones_are_merged() -> None:
    out = render_job_create_env(
        PROBE,
        None,
        instance_group_properties={"plain": {"with_default": "from the group"}},
        global_properties={"plain": {"with_default": "global", "false_default": True}},
        templates={"p.erb": "x"},
    )["x"]
    lines = out.splitlines()
    assert lines[0] == "from the group"
    assert lines[4] == "true"


@pytest.mark.parametrize("job", job_names())
def test_every_job_renders_under_create_env(job: str) -> None:
    files = render_job_create_env(JOBS_DIR / job, {})
    config = assert_renders_usably(job, files, f"jobs/{job} under bosh create-env")
    if job == "snapshotter":
        assert config["links"] == {"snapshotter": None, "peers": None}
        assert config["spec"]["name"] is None and config["spec"]["release"] is None


def test_the_loader_names_a_create_env_instance_after_its_deployment() -> None:
    from disk_snapshots.config import load_snapshotter_config

    files = render_job_create_env(JOBS_DIR / "snapshotter", {}, deployment="bosh")
    spec = load_snapshotter_config(json.loads(files["config/config.json"])).spec
    assert (spec.deployment, spec.name, spec.index, spec.bootstrap, spec.az) == (
        "bosh",
        "bosh",
        0,
        True,
        "unknown",
    )
    assert (spec.release_name, spec.release_version, spec.persistent_disk) == ("", "", 0)


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.id)
def test_every_manifest_renders_under_create_env(
    case: Case, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from localbosh.manifest import interpolate

    raw = case.document()
    store = tmp_path_factory.mktemp("vars") / "vars-store.yml"
    doc: dict[str, Any] = interpolate(
        raw, var_kvs=[f"{k}={v}" for k, v in OPERATOR_VARS.items()], vars_store=store
    )
    entries = manifest_jobs(doc, case.label)
    if case.removes_our_jobs:
        assert not entries, f"{case.label}: the ops file should remove every disk-snapshots job"
        return
    assert entries, f"{case.label}: no job from release disk-snapshots"
    rendered = set()
    for entry in entries:
        # create-env renders one instance (index 0) per job: groups that give a job the
        # same properties would render the same, so each is rendered once.
        key = json.dumps([entry.job["name"], entry.properties, entry.group.get("properties")])
        if key in rendered:
            continue
        rendered.add(key)
        where = f"{entry.where} under create-env"
        try:
            files = render_job_create_env(
                JOBS_DIR / entry.job["name"],
                entry.properties,
                deployment=str(doc["name"]),
                instance_group_properties=entry.group.get("properties") or {},
                global_properties=doc.get("properties") or {},
            )
        except RenderError as err:
            pytest.fail(f"{where}:\n{err}")
        assert_renders_usably(entry.job["name"], files, where)


@pytest.mark.parametrize("case", [c for c in CASES if c.at_render], ids=lambda c: c.id)
def test_create_env_refuses_each_bad_property_as_the_loader_names_it(case: BadProperty) -> None:
    # The CLI stops at the first template that fails: config.json.erb is listed first.
    properties = case.properties()
    with pytest.raises(RenderError) as caught:
        render_job_create_env(JOBS_DIR / case.job, properties, templates={"config.json.erb": "c"})
    found = re.search(r"#<RuntimeError: (.*)>\)\Z", caught.value.message, re.DOTALL)
    assert found, caught.value.message
    # Ruby's printer of an uncaught error doubles every backslash of the message.
    lines = found.group(1).replace("\\\\", "\\").splitlines()
    assert sorted(lines) == sorted(python_problems(case.job, properties))
