"""The agent API on fakes (no root): mutual TLS, routing, body validation, operations,
service stop/start through the monit seam, metrics, and a set member's lease."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import time
import warnings
from pathlib import Path

import pytest

from disk_snapshots.api.client import AgentClient
from disk_snapshots.api.client import AgentError
from disk_snapshots.api.tls import client_context
from disk_snapshots.commands.daemon import _start_api
from disk_snapshots.config import TlsConfig
from disk_snapshots.daemon.agent import Agent
from disk_snapshots.metrics import Metrics
from disk_snapshots.vm.monit import parse_summary
from support.fakes import FakeApi
from support.fakes import FakeMonit
from support.fakes import FakeProvider
from support.fakes import fake_snapshotter
from support.tls import raw_https

REFUSED = (ssl.SSLError, ConnectionError)


def test_no_client_certificate_gets_no_access(fake_api: FakeApi, tls: TlsConfig) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=tls.ca)
    # TLS 1.3 sends the server's verdict on the client certificate after the client's
    # handshake: the refusal shows on the first read at the latest, never as HTTP.
    with pytest.raises(REFUSED):
        raw_https(fake_api.address, fake_api.port, context)


def test_a_certificate_from_another_ca_gets_no_access(
    fake_api: FakeApi, tls: TlsConfig, other_tls: TlsConfig
) -> None:
    impostor = TlsConfig(
        ca=tls.ca, certificate=other_tls.certificate, private_key=other_tls.private_key
    )
    with pytest.raises(REFUSED):
        raw_https(fake_api.address, fake_api.port, client_context(impostor))


def test_the_client_refuses_a_server_from_another_ca(
    fake_api: FakeApi, other_tls: TlsConfig
) -> None:
    with pytest.raises(REFUSED):
        raw_https(fake_api.address, fake_api.port, client_context(other_tls))


def test_tls_below_1_2_is_refused(fake_api: FakeApi, tls: TlsConfig) -> None:
    context = client_context(tls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point here
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(REFUSED):
        raw_https(fake_api.address, fake_api.port, context)


def test_the_right_certificate_gets_status_with_the_role(fake_api: FakeApi, tls: TlsConfig) -> None:
    status, body = raw_https(fake_api.address, fake_api.port, client_context(tls))
    assert status == 200
    answer = json.loads(body)
    assert answer["role"] == "leader"
    assert answer["instance"]["name"] == "redis-leader"
    assert answer["service"]["jobs"] == {"redis": "running"}
    assert answer["disk"]["cid"] == "disk-fake"
    assert answer["last_snapshots"] == []


def test_status_without_monit_says_so(fake_api: FakeApi, tmp_path: Path) -> None:
    from disk_snapshots.vm.monit import MonitCli

    fake_api.agent.jobs.monit = MonitCli(binary=tmp_path / "no-monit", timeout=5)
    answer = fake_api.client.status()
    service = answer["service"]
    assert isinstance(service, dict)
    assert service["jobs"] == {"redis": "unknown"}
    assert "monit" in str(service.get("error", ""))


def test_unknown_paths_and_wrong_methods(fake_api: FakeApi) -> None:
    status, _, data = fake_api.client.request("GET", "/nope")
    assert status == 404
    assert "no such endpoint" in json.loads(data)["error"]
    status, _, data = fake_api.client.request("GET", "/snapshots")
    assert status == 405
    assert "allowed: POST" in json.loads(data)["error"]
    status, _, _ = fake_api.client.request("DELETE", "/status")
    assert status == 405
    status, _, _ = fake_api.client.request("GET", "/operations/op-0000000000000000")
    assert status == 404


def problems_of(client: AgentClient, path: str, body: object) -> list[str]:
    with pytest.raises(AgentError) as caught:
        client.call("POST", path, body)  # type: ignore[arg-type]
    assert caught.value.status == 400
    return list(caught.value.problems)


def test_bodies_are_validated_with_the_field_named(fake_api: FakeApi) -> None:
    c = fake_api.client
    problems = problems_of(c, "/sets/s1/quiesce", {"lease_seconds": "5", "color": "red"})
    assert "body.color: unknown key; allowed: lease_seconds, coordinator" in problems
    assert "body.lease_seconds: expected an integer, got a string '5'" in problems
    assert problems_of(c, "/sets/s1/quiesce", {"lease_seconds": 0}) == [
        "body.lease_seconds: 0 is too small; the minimum is 1"
    ]
    assert problems_of(c, "/sets/s1/quiesce", {}) == [
        "body.lease_seconds: is missing; expected an integer"
    ]
    [problem] = problems_of(c, "/snapshots", {"trigger": "schedule:weekly"})
    assert problem.startswith("body.trigger: 'schedule:weekly' names no schedule")
    assert "schedule:hourly" in problem
    [problem] = problems_of(c, "/snapshots", {"note": "a\nb"})
    assert problem.startswith("body.note: must be one line of text")
    [problem] = problems_of(c, "/sets/s1/state", {"state": "incomplete"})
    assert problem.startswith("body.reason: required when state is incomplete")
    [problem] = problems_of(c, "/sets/s1/state", {"state": "done"})
    assert problem.startswith("body.state: 'done' is not allowed; allowed: complete, incomplete")
    [problem] = problems_of(c, "/sets/s1/snapshot", {"set_size": 3, "trigger": "manual"})
    assert problem.startswith("body.trigger: 'manual' does not match")
    [problem] = problems_of(c, "/sets/-x/thaw", {})
    assert problem.startswith("path.set_id: '-x' does not match")
    assert problems_of(c, "/service/stop", ["timeout"]) == [
        "body: expected a map, got a list ['timeout']"
    ]
    status, _, data = c.request("POST", "/snapshots")
    assert status == 202  # no body at all is an empty one: every field is optional
    c.wait_operation(json.loads(data)["id"], timeout=10)


def test_invalid_json_is_a_400(fake_api: FakeApi) -> None:
    connection_client = fake_api.client
    status, _, _ = connection_client.request("POST", "/sets/s1/thaw", None)
    assert status == 404  # a valid empty body; the set just does not exist
    import http.client

    conn = http.client.HTTPSConnection(
        fake_api.address, fake_api.port, context=connection_client.context, timeout=5
    )
    try:
        conn.request("POST", "/sets/s1/thaw", body=b"{not json", headers={"Content-Length": "9"})
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 400
    assert answer["problems"][0].startswith("body: not valid JSON")


def test_a_snapshot_is_an_operation_to_poll(fake_api: FakeApi) -> None:
    c = fake_api.client
    operation_id = c.take_snapshot("schedule:hourly", note="before the migration")
    assert operation_id.startswith("op-")
    answer = c.wait_operation(operation_id, timeout=10)
    assert answer["state"] == "succeeded", answer
    result = answer["result"]
    assert isinstance(result, dict)
    provider = fake_api.agent.snapshotter.provider
    assert isinstance(provider, FakeProvider)
    snapshot = provider.get(str(result["snapshot_id"]))
    assert snapshot.annotations.trigger == "schedule:hourly"
    assert snapshot.annotations.note == "before the migration"
    assert snapshot.annotations.role == "leader"
    metrics = c.metrics()
    assert 'disk_snapshots_taken_total{deployment="redis",trigger="schedule:hourly"} 1' in metrics
    assert "# TYPE disk_snapshots_last_freeze_seconds gauge" in metrics


def test_a_failed_snapshot_is_a_failed_operation(fake_api: FakeApi) -> None:
    service = fake_api.agent.snapshotter.service
    service.flush_error = "redis is not running"  # type: ignore[attr-defined]
    answer = fake_api.client.wait_operation(fake_api.client.take_snapshot(), timeout=10)
    assert answer["state"] == "failed"
    assert "redis is not running" in str(answer["error"])
    assert 'disk_snapshots_failures_total{deployment="redis",trigger="manual"} 1' in (
        fake_api.client.metrics()
    )


def test_service_stop_and_start_wait_for_monit(fake_api: FakeApi) -> None:
    assert fake_api.client.service_stop(timeout=5) == {
        "action": "stop",
        "jobs": {"redis": "not monitored"},
    }
    assert fake_api.monit.states == {"redis": "not monitored"}
    assert fake_api.client.service_start(timeout=5)["jobs"] == {"redis": "running"}
    assert fake_api.monit.calls == ["stop redis", "start redis"]


def test_service_stop_has_a_deadline(fake_api: FakeApi) -> None:
    fake_api.monit.stuck = True
    started = time.monotonic()
    with pytest.raises(AgentError) as caught:
        fake_api.client.service_stop(timeout=1)
    assert caught.value.status == 504
    assert "not not monitored within 1s: redis: running" in caught.value.message
    assert time.monotonic() - started < 5


def test_metrics_can_be_disabled(tmp_path: Path, tls: TlsConfig) -> None:
    from disk_snapshots.api.server import serve

    snapshotter = fake_snapshotter(tmp_path, tls, metrics={"enabled": False})
    agent = Agent(snapshotter, Metrics(), monit=FakeMonit())
    running = serve(agent, tls, "127.0.0.1", 0)
    try:
        status, _, _ = AgentClient.connect("127.0.0.1", running.port, tls).request(
            "GET", "/metrics"
        )
    finally:
        running.stop()
    assert status == 404


def test_without_tls_the_api_is_not_served_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent(fake_snapshotter(tmp_path), Metrics(), monit=FakeMonit())
    with caplog.at_level(logging.WARNING):
        assert _start_api(agent) is None
    assert "agent API not served: api.tls is not set" in caplog.text


def test_a_port_in_use_is_logged_not_fatal(
    tmp_path: Path, tls: TlsConfig, caplog: pytest.LogCaptureFixture
) -> None:
    tls_props = {"ca": tls.ca, "certificate": tls.certificate, "private_key": tls.private_key}
    with socket.socket() as taken:
        taken.bind(("127.0.0.11", 0))  # the address snapshotter_doc's spec gives
        taken.listen()
        port = taken.getsockname()[1]
        snapshotter = fake_snapshotter(tmp_path, tls, api={"port": port, "tls": tls_props})
        agent = Agent(snapshotter, Metrics(), monit=FakeMonit())
        with caplog.at_level(logging.ERROR):
            assert _start_api(agent) is None
    assert f"cannot listen on 127.0.0.11:{port}" in caplog.text


def test_monit_summary_parsing() -> None:
    table = (
        "Monit 5.33.0 uptime: 3m\n"
        " Service Name                     Status                      Type          \n"
        " vm                               OK                          System        \n"
        " redis                            OK                          Process       \n"
        " snapshotter                      Not monitored               Process       \n"
        " sleeper                          Does not exist - start ...  Process       \n"
    )
    assert parse_summary(table) == {
        "redis": "running",
        "snapshotter": "not monitored",
        "sleeper": "does not exist - start ...",
    }
    old = "The Monit daemon 5.2.5 uptime: 1h\n\nProcess 'redis'  running\nSystem 'vm'  running\n"
    assert parse_summary(old) == {"redis": "running"}


# A set member on fakes: the lease and the verdicts, without freezing anything.


def test_member_set_steps_and_verdict(fake_api: FakeApi) -> None:
    c = fake_api.client
    quiesced = c.quiesce("set-a", 5, "redis-leader/0")
    assert quiesced["role"] == "leader"
    assert quiesced["consistency"] == "crash"  # flushed, but this fake freezes nothing
    with pytest.raises(AgentError) as caught:
        c.quiesce("set-b", 5, "redis-leader/0")
    assert caught.value.status == 409
    assert "set-a" in caught.value.message
    taken = c.snapshot_member("set-a", 3, "set:manual")
    thawed = c.thaw("set-a")
    assert thawed["snapshot_id"] == taken["snapshot_id"]
    c.set_state("set-a", "complete")
    provider = fake_api.agent.snapshotter.provider
    a = provider.get(str(taken["snapshot_id"])).annotations
    assert (a.set_id, a.set_size, a.set_state, a.trigger) == ("set-a", 3, "complete", "set:manual")


def test_member_lease_expiry_marks_its_own_snapshot_incomplete(fake_api: FakeApi) -> None:
    c = fake_api.client
    c.quiesce("set-c", 1, "redis-leader/0 (coordinator that dies)")
    taken = c.snapshot_member("set-c", 3, "set:manual")
    time.sleep(1.5)
    with pytest.raises(AgentError) as caught:
        c.thaw("set-c")
    assert caught.value.status == 409
    assert "expired before the thaw" in caught.value.message
    provider = fake_api.agent.snapshotter.provider
    a = provider.get(str(taken["snapshot_id"])).annotations
    assert a.set_state == "incomplete"
    assert "expired without a thaw from the coordinator redis-leader/0" in a.set_reason
    with pytest.raises(AgentError) as caught:
        c.set_state("set-c", "complete")
    assert caught.value.status == 409
    with pytest.raises(AgentError) as caught:
        c.snapshot_member("set-c", 3, "set:manual")
    assert caught.value.status == 409


def test_member_without_a_verdict_marks_itself_incomplete(fake_api: FakeApi) -> None:
    c = fake_api.client
    c.quiesce("set-d", 5, "redis-leader/0")
    taken = c.snapshot_member("set-d", 3, "set:manual")
    c.thaw("set-d")
    provider = fake_api.agent.snapshotter.provider
    deadline = time.monotonic() + 5  # decision_seconds is 2 in this fixture
    while time.monotonic() < deadline:
        a = provider.get(str(taken["snapshot_id"])).annotations
        if a.set_state:
            break
        time.sleep(0.1)
    assert a.set_state == "incomplete"
    assert "did not report the set's outcome" in a.set_reason


def test_member_flush_failure_refuses_the_quiesce(fake_api: FakeApi) -> None:
    fake_api.agent.snapshotter.service.flush_error = "redis: connection refused"  # type: ignore[attr-defined]
    with pytest.raises(AgentError) as caught:
        fake_api.client.quiesce("set-e", 5, "redis-leader/0")
    assert caught.value.status == 409
    assert caught.value.message == "flush failed: redis: connection refused"
    assert fake_api.agent.sets.active() is None
