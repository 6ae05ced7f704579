"""The renderer behaves like the Director's template context (spec/fixtures/jobs/probe)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from localbosh import templates as tpl
from localbosh.templates import InstanceSpec
from localbosh.templates import Link
from localbosh.templates import LinkInstance
from localbosh.templates import RenderError
from localbosh.templates import check_erb_syntax
from localbosh.templates import render_job

PROBE = Path(__file__).resolve().parent / "fixtures" / "jobs" / "probe"
PROBE_TEMPLATES: dict[str, str] = yaml.safe_load((PROBE / "spec").read_text())["templates"]

DB = Link(
    instances=[
        LinkInstance(),
        LinkInstance(name="db", index=1, id="id-1", bootstrap=True, properties={"role": "leader"}),
    ],
    properties={"port": 5432},
)


def render_one(
    src: str,
    properties: dict[str, Any] | None = None,
    spec: InstanceSpec | dict[str, Any] | None = None,
    links: dict[str, Link] | None = None,
) -> str:
    """Render a single probe template (the others would fail on purpose)."""
    dest = PROBE_TEMPLATES[src]
    files = render_job(PROBE, properties or {}, spec, links, templates={src: dest})
    return files[dest]


def test_p_merges_spec_defaults_and_falls_back_like_the_director() -> None:
    assert render_one("p.erb").splitlines() == [
        "dflt",
        "fallback",  # p(name, default) when unset
        "dflt",  # p([names]) returns the first non-nil
        "list-fallback",  # ...and the default when all are nil (a null spec default is nil)
        "false",  # a false default is a value, not "unset"
        '{"alpha":{"x":1,"y":2},"zeta":1}',  # the Director sorts hash properties
        "2",
        '["b", "a"]',  # ...but never lists
        "undeclared-fallback",
    ]


def test_manifest_values_win_over_defaults_and_undeclared_ones_are_dropped() -> None:
    out = render_one(
        "p.erb",
        {
            "plain": {"with_default": "mine", "no_default": "given"},
            "not": {"declared": "from the manifest"},
        },
    )
    lines = out.splitlines()
    assert lines[:3] == ["mine", "given", "given"]
    assert lines[-1] == "undeclared-fallback"


def test_unknown_property_raises_with_the_directors_message_and_line() -> None:
    with pytest.raises(RenderError) as err:
        render_one("unknown.erb")
    assert str(err.value) == (
        "- Unable to render templates for job 'probe'. Errors are:\n"
        "  - Error filling in template 'unknown.erb' "
        "(line 2: Can't find property '[\"plain.no_default\"]')"
    )
    assert err.value.job == "probe"
    assert [(e.template, e.line) for e in err.value.errors] == [("unknown.erb", 2)]


def test_every_failing_template_of_a_job_is_reported_together() -> None:
    with pytest.raises(RenderError) as err:
        render_job(PROBE, {}, templates={"unknown.erb": "a", "link.erb": "b", "p.erb": "c"})
    assert str(err.value) == (
        "- Unable to render templates for job 'probe'. Errors are:\n"
        "  - Error filling in template 'unknown.erb' "
        "(line 2: Can't find property '[\"plain.no_default\"]')\n"
        "  - Error filling in template 'link.erb' (line 1: Can't find link 'db')"
    )


def test_if_p_yields_only_when_all_are_set_and_chains_else() -> None:
    assert render_one("if_p.erb").splitlines() == [
        "both: dflt false",
        "else ran",
        "else_if_p: b,a",
        # if_p returns the else-chain object, never the block's value
        "if_p returns: InactiveElseBlock",
    ]


def test_spec_is_an_openstruct_with_the_directors_fields() -> None:
    spec = InstanceSpec(
        deployment="dep",
        name="redis-data",
        index=2,
        id="uuid-2",
        az="z2",
        bootstrap=True,
        address="2.redis-data.default.dep.bosh",
        ip="10.0.0.12",
        networks={"network1": {"ip": "10.0.0.12", "default": ["dns", "gateway"]}},
        persistent_disk=2048,
        release_version="1.2.3",
    )
    out = render_one("spec.erb", spec=spec)
    assert "deployment=dep" in out
    assert "name=redis-data legacy_name=redis-data" in out
    assert "index=2 legacy_index=2" in out
    assert "id=uuid-2\naz=z2\nbootstrap=true\naddress=2.redis-data.default.dep.bosh" in out
    assert "ip=10.0.0.12\nnetwork_ip=10.0.0.12" in out
    assert "persistent_disk=2048" in out
    assert "release=disk-snapshots/1.2.3" in out
    assert "spec_properties=dflt" in out
    assert "vm_type=nil" in out  # filtered out by the Director, so nil here too


def test_spec_defaults_follow_the_bosh_template_test_helper() -> None:
    out = render_one("spec.erb").splitlines()
    assert out[:9] == [
        "deployment=my-deployment",
        "name=me legacy_name=me",
        "index=0 legacy_index=0",
        "id=xxxxxx-xxxxxxxx-xxxxx",
        "az=az1",
        "bootstrap=false",
        "address=my.bosh.com",
        "ip=192.168.0.0",
        "network_ip=192.168.0.0",
    ]


def test_spec_without_a_disk_omits_persistent_disk() -> None:
    out = render_one("spec.erb", spec=InstanceSpec(persistent_disk=None))
    assert "persistent_disk=\n" in out


def test_spec_rejects_keys_the_director_never_passes() -> None:
    spec = {**InstanceSpec().to_dict(), "vm_type": {"name": "large"}}
    with pytest.raises(tpl.RendererFailedError, match="spec has keys templates never see: vm_type"):
        render_one("spec.erb", spec=spec)


def test_properties_are_an_openstruct_and_raw_properties_a_hash() -> None:
    assert render_one("properties.erb") == "dflt 1 b\n"


def test_link_gives_instances_properties_p_and_if_p() -> None:
    assert render_one("link.erb", links={"db": DB}).splitlines() == [
        "port=5432 missing=dflt",
        "if_p port 5432",
        "link if_p else",
        "i-name/4 id=jkl8098 az=az4 address=link.instance.fake.example.com bootstrap=false "
        "role=none",
        "db/1 id=id-1 az=az4 address=link.instance.fake.example.com bootstrap=true role=leader",
        'properties={"port":5432}',
    ]


def test_link_that_is_not_given_raises() -> None:
    with pytest.raises(RenderError, match=r"\(line 1: Can't find link 'db'\)"):
        render_one("link.erb")


def test_if_link_else_and_else_if_link() -> None:
    assert render_one("if_link.erb").splitlines() == [
        "no db",
        "neither",
        "if_link returns: ActiveElseBlock",
    ]
    assert render_one("if_link.erb", links={"db": DB}).splitlines() == [
        "db: 2 instances",
        "no cache, db instead: i-name",
        # if_link returns the else-chain object, never the block's value
        "if_link returns: InactiveElseBlock",
    ]
    cache = Link(instances=[LinkInstance(address="c0"), LinkInstance(address="c1")])
    out = render_one("if_link.erb", links={"db": DB, "cache": cache})
    assert "cache: c0,c1" in out


def test_link_address_needs_a_director_unless_given() -> None:
    with pytest.raises(RenderError, match=r"line 1: link.address requires bosh director"):
        render_one("link_address.erb", links={"db": DB})
    manual = Link(instances=DB.instances, address="db.service.internal")
    assert render_one("link_address.erb", links={"db": manual}) == "db.service.internal\n"


def test_a_link_the_job_does_not_consume_is_rejected() -> None:
    with pytest.raises(RenderError) as err:
        render_one("p.erb", links={"db": DB, "queue": Link()})
    assert str(err.value) == "Link 'queue' is not declared as a consumed link in this job."


def test_trim_mode_dash() -> None:
    assert render_one("trim.erb") == "begin\n  shown\nitem 1\nitem 2\nend\n"


def test_monit_is_rendered_too() -> None:
    files = render_job(PROBE, {}, InstanceSpec(index=3), templates={"bin/ctl": "bin/ctl"})
    assert files["monit"].startswith("check process probe-3\n")
    assert files["bin/ctl"].startswith("#!/bin/bash\n# me/3\n")


def test_monit_errors_surface_alone_like_the_directors(make_job: Callable[..., Path]) -> None:
    job = make_job({"name": "broken", "templates": {}}, {}, monit="<%= p('nope') %>\n")
    with pytest.raises(RenderError) as err:
        render_job(job, {})
    assert (
        str(err.value)
        == "Error filling in template 'monit' (line 1: Can't find property '[\"nope\"]')"
    )


def test_a_hash_property_given_a_scalar_fails_like_bind_properties(
    make_job: Callable[..., Path],
) -> None:
    job = make_job(
        {"name": "j", "templates": {"a.erb": "a"}, "properties": {"api.port": {"default": 1}}},
        {"a.erb": "<%= p('api.port') %>"},
    )
    assert render_job(job, {"api": {"port": 2}}) == {"a": "2", "monit": ""}
    with pytest.raises(
        RenderError, match=r"Property 'api\.port' expects a hash, but received 'String'"
    ):
        render_job(job, {"api": "2453"})


def test_ruby_errors_name_the_template_and_line(make_job: Callable[..., Path]) -> None:
    job = make_job(
        {"name": "j", "templates": {"config.erb": "config"}},
        {"config.erb": "ok\n\n<%= nil.fetch(1) %>\n"},
    )
    with pytest.raises(RenderError) as err:
        render_job(job, {})
    assert err.value.errors[0].line == 3
    assert (
        "Error filling in template 'config.erb' (line 3: undefined method `fetch' for nil"
        in str(err.value)
    )


def test_template_listed_but_missing_is_named(make_job: Callable[..., Path]) -> None:
    job = make_job({"name": "j", "templates": {"gone.erb": "gone"}}, {})
    with pytest.raises(
        RenderError, match=r"'gone.erb' is listed in jobs/j/spec but templates/gone.erb"
    ):
        render_job(job, {})


def test_erb_syntax_check(make_job: Callable[..., Path]) -> None:
    assert check_erb_syntax(PROBE) == []
    job = make_job(
        {"name": "j", "templates": {"good.erb": "good", "bad.erb": "bad", "gone.erb": "gone"}},
        {
            "good.erb": "<%= 1 %>\n",
            "bad.erb": "one\n<% if true %>\nno end\n",
            "unlisted/old.erb": "<% end %>\n",
        },
        monit="<%= ) %>\n",
    )
    errors = check_erb_syntax(job)
    assert len(errors) == 4, errors
    assert errors[0].startswith("j/monit:1:")
    assert errors[1].startswith("j/bad.erb:") and "syntax error" in errors[1]
    assert (
        errors[2]
        == "Template 'gone.erb' is listed in jobs/j/spec but templates/gone.erb does not exist"
    )
    assert errors[3].startswith("j/unlisted/old.erb:1:")


def test_rendering_takes_json_values_only() -> None:
    with pytest.raises(TypeError, match="set value"):
        render_job(PROBE, {"plain": {"with_default": {1, 2}}})


def test_missing_ruby_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(tpl.RubyNotFoundError, match="ruby is not on PATH"):
        render_one("p.erb")


def test_render_template_rb_speaks_json_on_its_own() -> None:
    """The Ruby program is usable without the wrapper (the local deployment may call it)."""
    import subprocess

    request = {"job_dir": str(PROBE), "templates": {"trim.erb": "t"}}
    proc = subprocess.run(
        [tpl.ruby_executable(), str(tpl.RENDERER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout)["t"].startswith("begin\n")


def test_a_template_that_prints_does_not_corrupt_the_answer(
    make_job: Callable[..., Path],
) -> None:
    job = make_job(
        {"name": "j", "templates": {"a.erb": "a"}},
        {"a.erb": "<% puts 'noise'; $stdout.write('more'); system('echo', 'child') %>ok\n"},
    )
    assert render_job(job, {}) == {"a": "ok\n", "monit": ""}
