"""Example manifests only set properties their job specs declare.

The Director drops undeclared properties without a word, so a typo in a
manifest (or an ops file) silently falls back to the default. This check is the
word.
"""

from __future__ import annotations

import pytest

from localbosh.manifest import InterpolationError
from localbosh.templates import undeclared_properties
from template_specs import Case
from template_specs import cases
from template_specs import undeclared_in_manifest


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.id)
def test_manifest_sets_only_declared_properties(case: Case) -> None:
    try:
        doc = case.document()
    except InterpolationError as err:
        pytest.skip(f"{case.label}: the ops file does not apply to this manifest: {err}")
    problems = undeclared_in_manifest(doc, case.label)
    if case.ops is not None:
        # Report what the ops file adds; the manifest's own problems are
        # reported once, by its case without ops.
        base = Case(case.manifest)
        inherited = {
            p.replace(base.label, case.label, 1)
            for p in undeclared_in_manifest(base.document(), base.label)
        }
        problems = [p for p in problems if p not in inherited]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_an_undeclared_property_is_named_with_file_group_job_and_path() -> None:
    doc = {
        "name": "d",
        "instance_groups": [
            {
                "name": "redis-leader",
                "jobs": [
                    {"name": "redis", "release": "redis", "properties": {"anything": 1}},
                    {
                        "name": "snapshotter",
                        "release": "disk-snapshots",
                        "properties": {
                            "provider": {"type": "loopback", "aws": {"regoin": "eu-west-1"}},
                            "foo": {"bar": True},
                            "retention": {"manual": {"keep_last": 3}},
                            "api": {"tls": None},
                        },
                    },
                    {"name": "not-a-job", "release": "disk-snapshots"},
                ],
            }
        ],
    }
    assert undeclared_in_manifest(doc, "manifests/spec-test-undeclared.yml") == [
        "manifests/spec-test-undeclared.yml: instance_groups[redis-leader].jobs[snapshotter]"
        ".properties: 'provider.aws.regoin' is not declared in jobs/snapshotter/spec",
        "manifests/spec-test-undeclared.yml: instance_groups[redis-leader].jobs[snapshotter]"
        ".properties: 'foo.bar' is not declared in jobs/snapshotter/spec",
        "manifests/spec-test-undeclared.yml: instance_groups[redis-leader].jobs[not-a-job]"
        ": the release has no job 'not-a-job'",
    ]


@pytest.mark.parametrize(
    ("properties", "undeclared"),
    [
        ({"a": {"b": 1}}, []),
        ({"a": {"b": 1, "c": 2}}, ["a.c"]),
        # a hash under a name declared whole is the property's value
        ({"whole": {"x": {"y": 1}}}, []),
        # nulls and empty hashes on the way to declared names set nothing
        ({"a": None, "deep": {}}, []),
        ({"deep": {"er": {"name": 1, "other": 2}}}, ["deep.er.other"]),
        # a scalar where the spec expects a hash is not a declared property
        ({"deep": "oops"}, ["deep"]),
        ({"x": {}}, ["x"]),
    ],
)
def test_undeclared_properties(properties: dict[str, object], undeclared: list[str]) -> None:
    declared = ["a.b", "whole", "deep.er.name"]
    assert undeclared_properties(properties, declared) == undeclared
