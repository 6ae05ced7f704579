"""Where the local Director and agent follow BOSH's sources rather than the easy reading
(issue 10 item 6): hooks on deleting stopped instances, a busy disk on `stop --hard`,
errands and VM-less instances, post-deploy after every converge, the scripts' process
set-up, and what a deploy does to stopped and detached instances."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from lbtest import LocalBosh
from lbtest import needs_root
from lbtest import recorder_manifest
from lbtest import records

from localbosh.plan import HOOK_PATH

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

START = ["pre-start", "monit-start", "post-start"]


def hooks(log: Path, index: int | None = None) -> list[str]:
    return [r["hook"] for r in records(log) if index is None or r["index"] == index]


def of(log: Path, hook: str) -> list[dict[str, Any]]:
    return [r for r in records(log) if r["hook"] == hook]


def instance(lb: LocalBosh, index: int) -> dict[str, Any]:
    return next(i for i in lb.state("rec")["instances"] if i["index"] == index)


def overlap(rs: list[dict[str, Any]]) -> bool:
    """Whether these hook runs were all under way at one moment."""
    return max(r["started"] for r in rs) < min(r["time"] for r in rs)


def test_deleting_soft_stopped_instances_still_runs_their_hooks(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    localbosh.run("-d", "rec", "deploy", str(recorder_manifest(tmp_path / "a.yml", record_log)))
    localbosh.run("-d", "rec", "stop")
    record_log.unlink()
    # Scale-in of a stopped instance: stopper.rb skips only instances without a VM.
    one = recorder_manifest(tmp_path / "b.yml", record_log, instances=1)
    localbosh.run("-d", "rec", "deploy", str(one))
    # monit runs no stop program for a process that is not running.
    assert hooks(record_log) == ["pre-stop", "drain", "post-stop"]
    drain = of(record_log, "drain")[0]
    assert drain["index"] == 1 and drain["args"] == ["job_shutdown", "hash_unchanged"]
    # Go's JSON, as the agent encodes it: no spaces.
    assert drain["BOSH_JOB_STATE"] == '{"persistent_disk":64}'
    assert drain["BOSH_JOB_NEXT_STATE"] == '{"persistent_disk":0}'
    assert of(record_log, "pre-stop")[0]["pre_stop_env"] == ["delete", "delete", "keep"]

    record_log.unlink()
    localbosh.run("-d", "rec", "delete-deployment")
    assert hooks(record_log) == ["pre-stop", "drain", "post-stop"]
    assert of(record_log, "drain")[0]["BOSH_JOB_NEXT_STATE"] == '{"persistent_disk":0}'
    assert of(record_log, "pre-stop")[0]["pre_stop_env"] == ["delete", "delete", "delete"]


def test_delete_deployment_drains_every_instance_at_once(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=3, hook_sleep=2)
    localbosh.run("-d", "rec", "deploy", str(m))
    record_log.unlink()
    localbosh.run("-d", "rec", "delete-deployment")
    drains = of(record_log, "drain")
    assert sorted(r["index"] for r in drains) == [0, 1, 2]
    assert overlap(drains)  # each sleeps 2 s: only parallel drains overlap


def test_stop_hard_and_recreate_fail_while_something_holds_the_disk(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent retries `umount` 600 times, 1 s apart; three will do here.
    monkeypatch.setenv("LOCALBOSH_UNMOUNT_ATTEMPTS", "3")
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=1)
    localbosh.run("-d", "rec", "deploy", str(m))
    # A leftover child of a hook, its working directory on the persistent disk.
    holder = "(cd /var/vcap/store && exec setsid sleep 600) </dev/null >/dev/null 2>&1 & echo $!"
    pid = int(localbosh.run("-d", "rec", "ssh", "node/0", "-c", holder).stdout)
    try:
        for verb in (["stop", "--hard"], ["recreate"]):
            proc = localbosh.run("-d", "rec", *verb, "node/0", check=False)
            assert proc.returncode == 1, proc.stdout
            assert "Unmounting persistent disk after 3 attempts" in proc.stderr
            assert "/var/vcap/store" in proc.stderr and "sleep" in proc.stderr  # who holds it
            inst = instance(localbosh, 0)
            assert inst["vm"] and not inst["update_completed"]  # the VM stays, dirty
            assert inst["state"] == "started"  # nothing recorded a stop that did not happen
            localbosh.run("-d", "rec", "start", "node/0")  # dirty: updated fully again
    finally:
        os.kill(pid, 9)
    localbosh.run("-d", "rec", "stop", "--hard", "node/0")
    inst = instance(localbosh, 0)
    assert (inst["state"], inst["vm"]) == ("detached", False)


def test_errands_skip_instances_without_a_vm_and_refuse_stopped_ones(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=3)
    localbosh.run("-d", "rec", "deploy", str(m))
    localbosh.run("-d", "rec", "stop", "--hard", "node/2")
    proc = localbosh.run("-d", "rec", "run-errand", "recorder-errand")
    assert "2 errand(s)" in proc.stdout
    node2 = instance(localbosh, 2)["id"]
    assert f"Skipping instance: node/{node2} (2) no matching VM reference was found" in proc.stdout

    localbosh.run("-d", "rec", "stop", "node/1")
    # Without --instance every instance is checked (errand_provider.rb) ...
    refused = localbosh.run("-d", "rec", "run-errand", "recorder-errand", check=False)
    assert refused.returncode == 1
    node1 = instance(localbosh, 1)["id"]
    assert f"Instance(s) 'node/{node1}' is stopped, unable to run errand" in refused.stderr
    # ... with it, only the chosen ones.
    chosen = localbosh.run("-d", "rec", "run-errand", "recorder-errand", "--instance", "node/0")
    assert "1 errand(s)" in chosen.stdout
    missing = localbosh.run(
        "-d", "rec", "run-errand", "recorder-errand", "--instance", "node/7", check=False
    )
    assert "No instances match selection criteria: [node/7]" in missing.stderr


def test_scripts_get_the_agents_environment_directory_and_priorities(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALBOSH_TEST_MARKER", "from-the-agent")
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=1)
    localbosh.run("-d", "rec", "deploy", str(m))
    localbosh.run("-d", "rec", "stop")
    base = os.nice(0)  # localbosh, the agent here, runs at the test's priority
    scripts = [r for r in records(record_log) if r["hook"] not in ("monit-start", "monit-stop")]
    assert {r["hook"] for r in scripts} >= {"pre-start", "post-start", "drain", "post-stop"}
    for r in scripts:
        assert r["marker"] == "from-the-agent", r["hook"]  # the agent's environment ...
        assert r["PATH"] == HOOK_PATH, r["hook"]  # ... with PATH replaced
        assert r["cwd"] == "/var/vcap/bosh", r["hook"]
        assert r["own_process_group"], r["hook"]
        # run_script hooks at the agent's nice + 5; drain keeps the agent's.
        assert r["nice"] == (base if r["hook"] == "drain" else min(base + 5, 19)), r["hook"]
    localbosh.run("-d", "rec", "start")
    errand = localbosh.run("-d", "rec", "run-errand", "recorder-errand").stdout
    assert f"errand nice {base} cwd /var/vcap/bosh marker from-the-agent" in errand


def test_post_deploy_follows_every_converge_that_changed_something(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=2, hook_sleep=2)
    localbosh.run("-d", "rec", "deploy", str(m))
    post = of(record_log, "post-deploy")
    assert sorted(r["index"] for r in post) == [0, 1]
    assert overlap(post)  # on all instances at once
    assert min(r["started"] for r in post) > max(r["time"] for r in of(record_log, "post-start"))

    for verb, expected in (("stop", [1]), ("start", [0, 1]), ("restart", [0, 1])):
        record_log.unlink()
        localbosh.run("-d", "rec", verb, "node/0")
        # Not on a stopped instance (models/instance.rb has_important_vm?).
        assert sorted(r["index"] for r in of(record_log, "post-deploy")) == expected, verb

    record_log.unlink()
    localbosh.run("-d", "rec", "deploy", str(m))
    assert records(record_log) == []  # nothing changed: no post-deploy either


def test_failing_processes_make_the_next_deploy_a_full_update_with_drain(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=1)
    localbosh.run("-d", "rec", "deploy", str(m))
    # What a restore that stopped the service and never started it leaves behind.
    localbosh.run("-d", "rec", "ssh", "node/0", "-c", "/var/vcap/bosh/bin/monit stop recorder")
    assert "failing" in localbosh.run("-d", "rec", "instances").stdout
    record_log.unlink()
    localbosh.run("-d", "rec", "deploy", str(m))  # the same manifest
    assert hooks(record_log) == ["pre-stop", "drain", "post-stop", *START, "post-deploy"]
    assert of(record_log, "drain")[0]["args"] == ["job_changed", "hash_unchanged"]
    assert "running" in localbosh.run("-d", "rec", "instances").stdout


def test_a_deploy_leaves_stopped_and_detached_instances_as_they_are(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    localbosh.run("-d", "rec", "deploy", str(recorder_manifest(tmp_path / "a.yml", record_log)))
    localbosh.run("-d", "rec", "stop", "node/0")
    localbosh.run("-d", "rec", "stop", "--hard", "node/1")
    before = {i: instance(localbosh, i) for i in (0, 1)}
    record_log.unlink()
    # New properties and a bigger disk: neither instance is touched until it starts.
    bigger = recorder_manifest(tmp_path / "b.yml", record_log, disk=96, tag="v2")
    localbosh.run("-d", "rec", "deploy", str(bigger))
    assert records(record_log) == []
    for i in (0, 1):
        after = instance(localbosh, i)
        assert after["state"] == before[i]["state"]
        assert (after["disk_cid"], after["applied"]) == (
            before[i]["disk_cid"],
            before[i]["applied"],
        )
    assert not instance(localbosh, 1)["vm"]

    localbosh.run("-d", "rec", "start")
    assert hooks(record_log, 0) == hooks(record_log, 1) == [*START, "post-deploy"]
    assert {r["tag"] for r in of(record_log, "pre-start")} == {"v2"}
    for i in (0, 1):  # the disk migrated on start
        assert instance(localbosh, i)["disk_size"] == 96
        assert instance(localbosh, i)["disk_cid"] != before[i]["disk_cid"]


def test_recreate_of_a_stopped_instance_ends_started(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=1)
    localbosh.run("-d", "rec", "deploy", str(m))
    localbosh.run("-d", "rec", "stop")
    vm_before = localbosh.run("-d", "rec", "ssh", "node/0", "-c", "cat /var/vcap/monit/monit.id")
    record_log.unlink()
    localbosh.run("-d", "rec", "recreate")
    assert hooks(record_log) == [*START, "post-deploy"]  # stopped already: no drain
    assert instance(localbosh, 0)["state"] == "started"
    assert "running" in localbosh.run("-d", "rec", "instances").stdout
    vm_after = localbosh.run("-d", "rec", "ssh", "node/0", "-c", "cat /var/vcap/monit/monit.id")
    assert vm_after.stdout != vm_before.stdout  # a new VM: its monit has a new id
