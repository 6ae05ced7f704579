"""Every template of every job renders like on a Director, with spec defaults and with
every example manifest (alone and with each ops file), and what it renders is usable:
config.json is JSON the config loader accepts, bin/* are scripts."""

from __future__ import annotations

import json

import pytest

from localbosh.manifest import interpolate
from localbosh.templates import InstanceSpec
from localbosh.templates import Link
from localbosh.templates import LinkInstance
from localbosh.templates import RenderError
from localbosh.templates import render_job
from template_specs import EXPECTED_JOBS
from template_specs import JOBS_DIR
from template_specs import OPERATOR_VARS
from template_specs import Case
from template_specs import assert_renders_usably
from template_specs import cases
from template_specs import job_names
from template_specs import manifest_jobs
from template_specs import manifest_links
from template_specs import manifest_paths


def test_the_release_has_the_four_jobs() -> None:
    assert set(EXPECTED_JOBS) <= set(job_names())


@pytest.mark.parametrize("job", job_names())
def test_renders_with_spec_defaults(job: str) -> None:
    files = render_job(JOBS_DIR / job, {}, InstanceSpec())
    assert_renders_usably(job, files, f"jobs/{job} with spec defaults")


@pytest.mark.parametrize("job", job_names())
def test_renders_on_an_instance_without_a_disk(job: str) -> None:
    # The Director omits persistent_disk for groups with named disks; the
    # template must still render (deciding what that means is the loader's job).
    files = render_job(JOBS_DIR / job, {}, InstanceSpec(persistent_disk=None))
    json.loads(files["config/config.json"])


def test_snapshotter_links_are_null_when_absent() -> None:
    files = render_job(JOBS_DIR / "snapshotter", {}, InstanceSpec())
    config = assert_renders_usably("snapshotter", files, "snapshotter without links")
    assert config["links"] == {"snapshotter": None, "peers": None}


def test_snapshotter_config_carries_link_instances() -> None:
    leader = Link(
        instances=[LinkInstance(name="redis-leader", index=0, id="l-0", az="z1", bootstrap=True)],
        properties={"api": {"port": 2453}, "service": {"profile": "redis"}},
    )
    peers = Link(
        instances=[
            LinkInstance(name="redis-data", index=i, id=f"d-{i}", az="z1", address=f"{i}.data")
            for i in range(2)
        ],
        properties={"api": {"port": 3000}, "service": {"profile": "redis"}},
    )
    files = render_job(
        JOBS_DIR / "snapshotter", {}, InstanceSpec(), {"snapshotter": leader, "peers": peers}
    )
    config = assert_renders_usably("snapshotter", files, "snapshotter with links")
    assert config["links"]["snapshotter"] == {
        "properties": {"api": {"port": 2453}, "service": {"profile": "redis"}},
        "instances": [
            {
                "name": "redis-leader",
                "index": 0,
                "id": "l-0",
                "az": "z1",
                "address": "link.instance.fake.example.com",
                "bootstrap": True,
            }
        ],
    }
    assert [i["address"] for i in config["links"]["peers"]["instances"]] == ["0.data", "1.data"]
    assert config["links"]["peers"]["properties"]["api"]["port"] == 3000


def test_undeclared_manifest_properties_never_reach_config_json() -> None:
    files = render_job(
        JOBS_DIR / "snapshotter",
        {"provider": {"type": "loopback", "typo_key": 1}, "not_a_property": {"x": 1}},
        InstanceSpec(),
    )
    config = json.loads(files["config/config.json"])
    assert "typo_key" not in config["properties"]["provider"]
    assert "not_a_property" not in config["properties"]


def test_a_link_the_snapshotter_does_not_consume_never_reaches_config_json() -> None:
    # A Director drops it with a warning (links/link_consumers_parser.rb).
    files = render_job(JOBS_DIR / "snapshotter", {}, InstanceSpec(), {"database": Link()})
    config = json.loads(files["config/config.json"])
    assert config["links"] == {"snapshotter": None, "peers": None}


def test_example_manifests_exist() -> None:
    # Without this, a glob that matches nothing would let every manifest
    # check below pass by checking nothing.
    assert manifest_paths(), "no deployment manifest under manifests/"


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.id)
def test_renders_with_every_manifest(case: Case, tmp_path_factory: pytest.TempPathFactory) -> None:
    raw = case.document()
    store = tmp_path_factory.mktemp("vars") / "vars-store.yml"
    doc = interpolate(raw, var_kvs=[f"{k}={v}" for k, v in OPERATOR_VARS.items()], vars_store=store)
    entries = manifest_jobs(doc, case.label)
    if case.removes_our_jobs:
        assert not entries, f"{case.label}: the ops file should remove every disk-snapshots job"
        return
    assert entries, f"{case.label}: no job from release disk-snapshots"
    for entry in entries:
        links = manifest_links(entry)
        for spec in entry.instance_specs():
            where = f"{entry.where} (index {spec.index})"
            try:
                files = render_job(JOBS_DIR / entry.job["name"], entry.properties, spec, links)
            except RenderError as err:
                pytest.fail(f"{where}:\n{err}")
            config = assert_renders_usably(entry.job["name"], files, where)
            if entry.job["name"] == "snapshotter":
                for name, link in links.items():
                    rendered = config["links"][name]
                    assert rendered is not None, f"{where}: link '{name}' missing from config.json"
                    assert len(rendered["instances"]) == len(link.instances), where
