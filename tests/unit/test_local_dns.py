"""The local deployment resolves the DNS names the renderer gives templates (localbosh.dns)."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from localbosh import dns
from localbosh.agent import Identity
from localbosh.namespace import Namespace
from localbosh.templates import Link
from localbosh.templates import LinkInstance
from localbosh.templates import render_job

INSTANCES = [
    Identity("redis", "redis-leader", 0, "uuid-l0", "z1", "127.77.9.10", True),
    Identity("redis", "redis_Data", 0, "uuid-d0", "z1", "127.77.9.11", True),
    Identity("redis", "redis_Data", 1, "uuid-d1", "z2", "127.77.9.12", False),
]
AZS = dns.az_numbers([("z1",), ("z1", "z2")])


def link_to(group: str) -> Link:
    """The link localbosh's Director gives a consumer of `group` (deployment.link_for_template)."""
    members = [i for i in INSTANCES if i.group == group]
    return Link(
        instances=[LinkInstance(name=i.group, index=i.index, id=i.id, az=i.az) for i in members],
        instance_group=group,
        default_network=dns.NETWORK,
        deployment_name="redis",
        domain=dns.DOMAIN,
    )


def rendered_address(tmp_path: Path, group: str, criteria: str = "") -> str:
    job = tmp_path / "jobs" / "consumer"
    (job / "templates").mkdir(parents=True, exist_ok=True)
    spec = {
        "name": "consumer",
        "templates": {"a.erb": "a"},
        "consumes": [{"name": "db", "type": "x"}],
    }
    (job / "spec").write_text(yaml.safe_dump(spec))
    (job / "monit").write_text("")
    (job / "templates" / "a.erb").write_text(f"<%= link('db').address({criteria}) %>")
    return render_job(job, {}, links={"db": link_to(group)}, az_numbers=AZS)["a"]


def test_az_numbers_follow_first_appearance() -> None:
    assert AZS == {"z1": 1, "z2": 2}


@pytest.mark.parametrize(
    ("group", "criteria", "addresses"),
    [
        ("redis-leader", "", ["127.77.9.10"]),
        ("redis_Data", "", ["127.77.9.11", "127.77.9.12"]),
        ("redis_Data", "azs: ['z2']", ["127.77.9.12"]),
        ("redis_Data", "status: 'healthy'", ["127.77.9.11", "127.77.9.12"]),
        ("redis_Data", "azs: ['z1'], status: 'all'", ["127.77.9.11"]),
    ],
)
def test_every_name_the_renderer_encodes_has_its_instances(
    tmp_path: Path, group: str, criteria: str, addresses: list[str]
) -> None:
    name = rendered_address(tmp_path, group, criteria)
    assert name.endswith(".default.redis.bosh") and name.startswith("q-")
    assert sorted(a for a, n in dns.records(INSTANCES, AZS) if n == name) == addresses


def test_instances_are_named_by_index_and_id() -> None:
    names = dict((n, a) for a, n in dns.records(INSTANCES, AZS))
    assert names["1.redis-data.default.redis.bosh"] == "127.77.9.12"
    assert names["uuid-d1.redis-data.default.redis.bosh"] == "127.77.9.12"


def test_the_hosts_file_keeps_the_hosts_own_entries() -> None:
    text = dns.hosts_file("127.0.0.1 localhost\n", [("127.77.9.10", "q-s0.a.default.d.bosh")])
    assert text == textwrap.dedent(
        f"""\
        127.0.0.1 localhost
        {dns.BEGIN}
        127.77.9.10 q-s0.a.default.d.bosh
        """
    )


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes a mount namespace")
def test_an_instance_resolves_the_names_through_its_own_etc_hosts(tmp_path: Path) -> None:
    """What localbosh does for every VM (Agent.create_vm): the deployment's hosts file bound
    over /etc/hosts in the instance's mount namespace, then read by glibc's resolver."""
    hosts = tmp_path / "hosts"
    dns.publish(hosts, INSTANCES, AZS)
    ns = Namespace(tmp_path / "ns")
    ns.create()
    try:
        ns.run(["mount", "--bind", str(hosts), "/etc/hosts"], what="binding the hosts file")
        answer = ns.run(
            ["getent", "ahostsv4", "q-s0.redis-data.default.redis.bosh"], what="resolving"
        ).stdout
        assert {line.split()[0] for line in answer.splitlines()} == {"127.77.9.11", "127.77.9.12"}
        # Written in place, a new deploy's names reach instances already bound to it.
        dns.publish(hosts, INSTANCES[:2], AZS)
        answer = ns.run(
            ["getent", "ahostsv4", "q-s0.redis-data.default.redis.bosh"], what="resolving"
        ).stdout
        assert {line.split()[0] for line in answer.splitlines()} == {"127.77.9.11"}
        # The host itself never sees these names.
        host = subprocess.run(
            ["getent", "hosts", "q-s0.redis-data.default.redis.bosh"], check=False
        )
        assert host.returncode == 2
    finally:
        ns.destroy()
