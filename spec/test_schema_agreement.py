"""The templates and the config loader judge properties alike, from the one schema.

Every bad-property case (tests/support/bad_properties.py) is rendered the way the
Director renders it: the structural ones must fail the render with exactly the lines
the Python loader reports for the same properties; the ones only Python can judge
must render, and the loader must refuse the rendered file. The same under the bosh
CLI's create-env renderer (marker bosh: the real CLI) is in test_create_env.py.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from disk_snapshots import schema
from disk_snapshots.config import ConfigError
from disk_snapshots.config import load_config
from localbosh import schema_blocks
from localbosh.templates import InstanceSpec
from localbosh.templates import RenderError
from localbosh.templates import render_job
from localbosh.templates import ruby_executable
from support.bad_properties import CASES
from support.bad_properties import BadProperty
from support.configdocs import spec_defaults
from template_specs import JOBS_DIR
from template_specs import RELEASE_DIR
from template_specs import job_names

SPEC = InstanceSpec(deployment="redis", name="redis-leader", address="127.0.0.11")


def render_problems(error: RenderError) -> list[str]:
    """The problem lines of a failed render: what follows "(line N: " up to the last ")"."""
    assert len(error.errors) == 1, error.message
    found = re.search(r"\(line \d+: (.*)\)\Z", error.errors[0].message, re.DOTALL)
    assert found, error.errors[0].message
    return found.group(1).splitlines()


def python_problems(job: str, properties: object) -> list[str]:
    doc: dict[str, object] = {"job": job, "properties": properties}
    if job == "snapshotter":
        doc |= {
            "spec": {
                "deployment": "redis",
                "name": "redis-leader",
                "index": 0,
                "id": "x",
                "az": "z1",
                "bootstrap": True,
                "address": "127.0.0.11",
            },
            "links": {},
        }
    try:
        load_config(doc)
    except ConfigError as err:
        return list(err.problems)
    return []


def test_every_job_has_a_schema_and_an_up_to_date_block() -> None:
    assert set(schema.jobs()) == set(job_names())
    stale = schema_blocks.stale(RELEASE_DIR)
    assert stale == [], f"stale property checks in {stale}; run {schema_blocks.REGENERATE}"


def test_a_stale_block_is_found() -> None:
    text = (JOBS_DIR / "list-snapshots" / "templates" / "config.json.erb").read_text()
    edited = text.replace('"table"', '"tabular"')
    assert edited != text
    assert schema_blocks.rewrite(edited, "list-snapshots") == text


@pytest.mark.parametrize("job", schema.jobs())
def test_spec_defaults_satisfy_the_schema(job: str) -> None:
    assert schema.check(job, spec_defaults(job)) == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_director_render_and_the_loader_agree(case: BadProperty) -> None:
    properties = case.properties()
    python = python_problems(case.job, properties)
    assert any(line.startswith(case.message) for line in python), python
    if not case.at_render:
        files = render_job(JOBS_DIR / case.job, properties, SPEC)
        rendered = json.loads(files["config/config.json"])
        assert python_problems(case.job, rendered["properties"]) == python
        return
    with pytest.raises(RenderError) as caught:
        render_job(JOBS_DIR / case.job, properties, SPEC)
    assert "Error filling in template 'config.json.erb'" in caught.value.message
    assert sorted(render_problems(caught.value)) == sorted(python)


# Values whose JSON differs between Ruby's and Python's encoders if either is careless:
# non-ASCII text, control characters, a long value cut short, floats, nested values.
AWKWARD = [
    "Zürich \u2013 \u2603",
    "tab\there\x01\x1f",
    "x" * 200,
    1.5,
    {"b": [1, None, True]},
    ["a", {"k": "v"}],
]


@pytest.mark.parametrize("value", AWKWARD, ids=range(len(AWKWARD)))
def test_values_are_shown_alike(value: object) -> None:
    properties = spec_defaults("list-snapshots")
    properties["list"]["format"] = value
    with pytest.raises(RenderError) as caught:
        render_job(JOBS_DIR / "list-snapshots", properties, SPEC)
    assert render_problems(caught.value) == python_problems("list-snapshots", properties)


def test_the_ruby_checks_run_on_ruby_2_7_syntax() -> None:
    # The create-env machine's Ruby may be older than the Director's: no syntax newer
    # than 2.7 (endless methods, `it`, hash shorthand) in what the templates carry.
    source = schema_blocks.CHECKS_RB.read_text()
    for newer in (r"\bit\b(?=\.)", r"def \w+\(.*\) =", r"\{ *\w+:, "):
        assert not re.search(newer, source), newer
    check = subprocess.run(
        [ruby_executable(), "-c", str(schema_blocks.CHECKS_RB)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
