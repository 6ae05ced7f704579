"""The renderer behaves like the Director's template context (spec/fixtures/jobs/probe)."""

from __future__ import annotations

import json
import logging
import subprocess
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
    instances=[LinkInstance(), LinkInstance(name="db", index=1, id="id-1", bootstrap=True)],
    properties={"port": 5432},
    instance_group="db",
    default_network="default",
    deployment_name="dep",
)


def ruby_says(expression: str) -> str:
    """The message this Ruby gives for an error in evaluated code, as in a template
    (the wording changes between Ruby versions: `fetch' in 3.1, 'fetch' from 3.4)."""
    proc = subprocess.run(
        [
            tpl.ruby_executable(),
            "-e",
            "begin; eval(ARGV[0]); rescue => e; print e.message; end",
            expression,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


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
        # Instances carry no properties on a Director: p() always falls back.
        "i-name/4 id=jkl8098 az=az4 address=link.instance.fake.example.com bootstrap=false "
        "role=none",
        "db/1 id=id-1 az=az4 address=link.instance.fake.example.com bootstrap=true role=none",
        'properties={"port":5432}',
    ]


def test_link_instances_have_no_properties_like_on_a_director() -> None:
    out = render_one("methods.erb", links={"db": DB})
    assert "instance.properties: nil" in out
    link = {**DB.to_dict(), "instances": [{**LinkInstance().to_dict(), "properties": {"a": 1}}]}
    with pytest.raises(
        tpl.RendererFailedError,
        match=r"link 'db' instance 0 has 'properties': the Director never sends per-instance",
    ):
        render_one("link.erb", links={"db": link})  # type: ignore[dict-item]


def test_templates_see_only_the_methods_the_directors_classes_define() -> None:
    # bosh-common template/{evaluation_context,evaluation_link,evaluation_link_instance,
    # property_helper}.rb; `p` is also Kernel#p, so it is not in these lists.
    helper = "copy_property lookup_property set_property sort_property validate_properties_format"
    context = "create_evaluation_link get_binding if_link if_p index link name openstruct"
    context += " properties raw_properties spec"
    link = "address if_p instances properties"
    instance = "address az bootstrap id if_p index name properties"
    lines = render_one("methods.erb", links={"db": DB}).splitlines()
    assert lines[0] == "context: " + " ".join(sorted(f"{context} {helper}".split()))
    assert lines[1] == "link: " + " ".join(sorted(f"{link} {helper}".split()))
    assert lines[2] == "instance: " + " ".join(sorted(f"{instance} {helper}".split()))


def test_templates_have_the_ruby_the_director_has_loaded() -> None:
    # bosh/director.rb requires time, digest/sha1, securerandom, pathname, openssl...;
    # evaluation_context.rb shellwords and ActiveSupport's blank?; core_ext adds
    # Hash#recursive_merge and to_openstruct.
    assert render_one("director_ruby.erb").splitlines() == [
        "time=2026-11-29T08:00:00Z",
        "sha1=dc377b4cd04f1e177cbcd7ec2737688cf77ddb59",
        "random=8",
        "path=/var/vcap/jobs/probe",
        "openssl=51f4aaaf",
        "set=2",
        "shellwords=a\\ b",
        "blank=true,true,true,false,x,nil",
        "active_support=ActiveSupport",
        'recursive_merge={"a":{"b":1,"c":3}}',
        "to_openstruct=1",
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


def test_link_address_is_the_directors_dns_query() -> None:
    # dns/dns_encoder.rb encode_query: no uuid, long names, status default (s0).
    assert render_one("link_address.erb", links={"db": DB}) == "q-s0.db.default.dep.bosh\n"
    # Names are canonicalized (dns/canonicalizer.rb): lower case, _ to -, the rest dropped.
    odd = Link(instances=DB.instances, instance_group="Redis_Leader", deployment_name="my.dep!")
    assert render_one("link_address.erb", links={"db": odd}) == (
        "q-s0.redis-leader.default.mydep.bosh\n"
    )


def test_link_address_encodes_azs_by_the_directors_numbers_and_status() -> None:
    files = render_job(
        PROBE,
        {},
        links={"db": DB},
        templates={"link_address_criteria.erb": "out"},
        az_numbers={"z1": 1, "z2": 7},
    )
    # a<az number> per AZ, s3 for healthy, sorted into one query octet
    assert files["out"] == "q-a1a7s3.db.default.dep.bosh\n"
    with pytest.raises(RenderError, match=r"line 1: Unknown AZ: 'z2'"):
        render_job(
            PROBE,
            {},
            links={"db": DB},
            templates={"link_address_criteria.erb": "out"},
            az_numbers={"z1": 1},
        )


def test_link_address_fails_where_only_a_directors_database_can_answer() -> None:
    short = Link(instances=DB.instances, use_short_dns_addresses=True)
    with pytest.raises(RenderError, match=r"short DNS names .* the local renderer cannot encode"):
        render_one("link_address.erb", links={"db": short})


def test_link_address_of_a_manual_link_is_the_manifests() -> None:
    manual = Link(instances=DB.instances, address="db.service.internal")
    assert render_one("link_address.erb", links={"db": manual}) == "db.service.internal\n"


def test_a_link_the_job_does_not_consume_is_dropped_with_the_directors_warning(
    make_job: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    job = make_job(
        {"name": "j", "templates": {"a.erb": "a"}},
        {"a.erb": "<% if_link('queue') do %>linked<% end.else do %>no queue<% end %>\n"},
    )
    with caplog.at_level(logging.WARNING, logger="localbosh.templates"):
        assert render_job(job, {}, links={"queue": Link()}) == {"a": "no queue\n", "monit": ""}
    assert (
        "Manifest defines unknown consumers:\n"
        "  - Job 'j' does not define link consumer 'queue' in the release spec"
    ) in caplog.text


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
    assert f"Error filling in template 'config.erb' (line 3: {ruby_says('nil.fetch(1)')})" in str(
        err.value
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


def _render_with_ruby_flags(flags: list[str]) -> subprocess.CompletedProcess[str]:
    request = {
        "job_dir": str(PROBE),
        "templates": {"spec.erb": "s"},
        "spec": InstanceSpec().to_dict(),
    }
    return subprocess.run(
        [tpl.ruby_executable(), "--disable-gems", *flags, str(tpl.RENDERER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )


def test_starts_where_ostruct_is_a_bundled_gem(tmp_path: Path) -> None:
    """From Ruby 3.5 on, ostruct is a bundled gem: `ruby --disable-gems` (how the renderer
    runs) finds it only once RubyGems is loaded. This Ruby still has ostruct as a default
    library, so an ostruct.rb first on the load path plays 3.5's part: it is found only
    with RubyGems loaded, and then hands over to the real one."""
    (tmp_path / "ostruct.rb").write_text(
        "raise LoadError, 'cannot load such file -- ostruct' unless defined?(::Gem)\n"
        "$LOAD_PATH.delete(__dir__)\n"
        "require 'ostruct'\n"
    )
    proc = _render_with_ruby_flags(["-I", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["s"].startswith("deployment=my-deployment\n")


def test_a_ruby_without_ostruct_is_named_as_the_reason(tmp_path: Path) -> None:
    (tmp_path / "ostruct.rb").write_text("raise LoadError, 'cannot load such file -- ostruct'\n")
    proc = _render_with_ruby_flags(["-I", str(tmp_path)])
    assert proc.returncode == 2
    assert "the Director's template context is an OpenStruct, and this Ruby" in proc.stderr
    assert (
        "cannot load ostruct: cannot load such file -- ostruct (gem install ostruct)" in proc.stderr
    )
