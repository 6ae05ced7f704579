"""Hook order and arguments, as the recorder fixture job sees them, for every operation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from lbtest import LocalBosh
from lbtest import needs_root
from lbtest import recorder_manifest
from lbtest import records

from localbosh.plan import HOOK_PATH

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

DISK = {"persistent_disk": 64}
GONE = {"persistent_disk": 0}


def hooks(log: Path, index: int | None = None) -> list[tuple[str, ...]]:
    """(hook, *args) per record, optionally of one instance index; post-deploy, which
    follows every converge that changed something, has tests of its own
    (test_director_agent.py)."""
    return [
        (r["hook"], *r["args"])
        for r in records(log)
        if (index is None or r["index"] == index) and r["hook"] != "post-deploy"
    ]


def states(r: dict[str, Any]) -> tuple[Any, Any]:
    def load(v: str | None) -> Any:
        return None if v is None else json.loads(v)

    return load(r["BOSH_JOB_STATE"]), load(r["BOSH_JOB_NEXT_STATE"])


START = [("pre-start",), ("monit-start",), ("post-start",)]
SHUTDOWN = [
    ("pre-stop",),
    ("drain", "job_shutdown", "hash_unchanged"),
    ("monit-stop",),
    ("post-stop",),
]
KEEP = ["keep", "keep", "keep"]


def drain_record(log: Path, n: int = 0) -> dict[str, Any]:
    return [r for r in records(log) if r["hook"] == "drain"][n]


def pre_stop_env(log: Path, n: int = 0) -> list[str | None]:
    env: list[str | None] = [r for r in records(log) if r["hook"] == "pre-stop"][n]["pre_stop_env"]
    return env


def test_deploy_starts_each_instance_in_order_one_at_a_time(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log)
    localbosh.run("-d", "rec", "deploy", str(m))
    assert hooks(record_log) == [*START, *START]  # no drain on a new instance
    rs = [r for r in records(record_log) if r["hook"] != "post-deploy"]
    assert [r["index"] for r in rs] == [0, 0, 0, 1, 1, 1]  # max_in_flight 1: serial
    assert all(r["store_mounted"] for r in rs)  # disk mounted before pre-start
    assert all(r["PATH"] == HOOK_PATH for r in rs if r["hook"] != "monit-start")
    out = localbosh.run("-d", "rec", "instances", "--ps").stdout
    assert out.count("running") == 4  # 2 instances + their recorder process
    assert "127.77." in out


def test_update_drains_with_job_changed_hash_changed(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    localbosh.run("-d", "rec", "deploy", str(recorder_manifest(tmp_path / "a.yml", record_log)))
    record_log.unlink()
    m = recorder_manifest(tmp_path / "b.yml", record_log, tag="v2")
    localbosh.run("-d", "rec", "deploy", str(m))
    update = [
        ("pre-stop",),
        ("drain", "job_changed", "hash_changed"),
        ("monit-stop",),
        ("post-stop",),
        *START,
    ]
    assert hooks(record_log) == update + update
    drain = drain_record(record_log)
    assert states(drain) == (DISK, DISK)
    assert pre_stop_env(record_log) == KEEP
    assert drain["tag"] == "" and records(record_log)[4]["tag"] == "v2"  # old job drains

    record_log.unlink()
    localbosh.run("-d", "rec", "deploy", str(m))
    assert hooks(record_log) == []  # nothing changed: instances are not touched


def test_stop_start_restart(localbosh: LocalBosh, tmp_path: Path, record_log: Path) -> None:
    localbosh.run("-d", "rec", "deploy", str(recorder_manifest(tmp_path / "m.yml", record_log)))
    record_log.unlink()
    localbosh.run("-d", "rec", "stop", "node/0")
    assert hooks(record_log) == SHUTDOWN
    assert states(drain_record(record_log)) == (DISK, DISK)
    assert pre_stop_env(record_log) == KEEP
    assert "stopped" in localbosh.run("-d", "rec", "instances").stdout

    record_log.unlink()
    localbosh.run("-d", "rec", "start", "node/0")
    assert hooks(record_log) == START

    record_log.unlink()
    localbosh.run("-d", "rec", "restart", "node/1")
    assert hooks(record_log) == [
        ("pre-stop",),
        ("drain", "job_changed", "hash_unchanged"),
        ("monit-stop",),
        ("post-stop",),
        *START,
    ]
    assert {r["index"] for r in records(record_log) if r["hook"] != "post-deploy"} == {1}
    assert pre_stop_env(record_log) == KEEP

    record_log.unlink()
    localbosh.run("-d", "rec", "stop", "node/1", "--skip-drain")
    assert hooks(record_log) == [("monit-stop",), ("post-stop",)]


def test_recreate_shuts_down_and_keeps_the_disk(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    localbosh.run("-d", "rec", "deploy", str(recorder_manifest(tmp_path / "m.yml", record_log)))
    before = {i["index"]: i["disk_cid"] for i in localbosh.state("rec")["instances"]}
    localbosh.run("-d", "rec", "ssh", "node/1", "-c", "echo kept > /var/vcap/store/marker")
    record_log.unlink()
    localbosh.run("-d", "rec", "recreate", "node/1")
    assert hooks(record_log) == [*SHUTDOWN, *START]
    assert states(drain_record(record_log)) == (DISK, DISK)
    assert pre_stop_env(record_log) == ["delete", "keep", "keep"]
    after = {i["index"]: i["disk_cid"] for i in localbosh.state("rec")["instances"]}
    assert after == before
    out = localbosh.run("-d", "rec", "ssh", "node/1", "-c", "cat /var/vcap/store/marker").stdout
    assert out == "kept\n"


def test_scale_in_and_delete_drain_with_persistent_disk_zero(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    localbosh.run("-d", "rec", "deploy", str(recorder_manifest(tmp_path / "a.yml", record_log)))
    record_log.unlink()
    localbosh.run(
        "-d", "rec", "deploy", str(recorder_manifest(tmp_path / "b.yml", record_log, instances=1))
    )
    assert hooks(record_log) == SHUTDOWN
    assert records(record_log)[0]["index"] == 1  # the highest index goes
    assert states(drain_record(record_log)) == (DISK, GONE)
    assert pre_stop_env(record_log) == ["delete", "delete", "keep"]

    record_log.unlink()
    localbosh.run("-d", "rec", "delete-deployment")
    assert hooks(record_log) == SHUTDOWN
    assert states(drain_record(record_log)) == (DISK, GONE)
    assert pre_stop_env(record_log) == ["delete", "delete", "delete"]


def test_negative_drain_is_reinvoked_with_job_check_status(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=1, drain_negative_times=2)
    localbosh.run("-d", "rec", "deploy", str(m))
    record_log.unlink()
    localbosh.run("-d", "rec", "stop")
    drains = [r for r in records(record_log) if r["hook"] == "drain"]
    assert [(r["args"], r["stdout"]) for r in drains] == [
        (["job_shutdown", "hash_unchanged"], "-1"),
        (["job_check_status", "hash_unchanged"], "-1"),
        (["job_check_status", "hash_unchanged"], "0"),
    ]
    assert [states(r) for r in drains] == [(DISK, DISK), (DISK, None), (DISK, None)]
    # The agent sleeps |n| seconds between invocations.
    assert drains[1]["started"] - drains[0]["time"] >= 1
    assert drains[2]["started"] - drains[1]["time"] >= 1
    assert hooks(record_log)[-2:] == [("monit-stop",), ("post-stop",)]


def test_drain_that_prints_no_integer_fails_the_stop(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=1, drain_output="done!")
    localbosh.run("-d", "rec", "deploy", str(m))
    proc = localbosh.run("-d", "rec", "stop", check=False)
    assert proc.returncode == 1
    assert "1 of 1 drain scripts failed. Failed Jobs: recorder." in proc.stderr
    assert "Script did not return a signed integer" in proc.stderr


def test_failing_pre_start_fails_the_deploy_with_the_agents_message(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, fail=["pre-start"])
    proc = localbosh.run("-d", "rec", "deploy", str(m), check=False)
    assert proc.returncode == 1
    assert "1 of 1 pre-start scripts failed. Failed Jobs: recorder." in proc.stderr
    assert hooks(record_log) == [("pre-start",)]  # the canary failed: nothing else ran
    log = tmp_path / "home/deployments/rec/instances"
    stderr_logs = list(log.glob("*/root/var/vcap/data/sys/log/recorder/pre-start.stderr.log"))
    assert "fails because recorder.fail says so" in stderr_logs[0].read_text()
    # The fixture's teardown then checks that delete-deployment cleans up after the failure.


def test_errand_runs_everywhere_and_holds_the_deployment_lock(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, errand_sleep=25)
    localbosh.run("-d", "rec", "deploy", str(m))
    errand = localbosh.popen("-d", "rec", "run-errand", "recorder-errand")
    time.sleep(2)
    started = time.monotonic()
    blocked = localbosh.run("-d", "rec", "stop", "node/0", check=False)
    waited = time.monotonic() - started
    assert blocked.returncode == 1
    assert "Failed to acquire lock for lock:deployment:rec" in blocked.stderr
    assert "run errand recorder-errand from deployment rec" in blocked.stderr
    assert 9 <= waited < 15  # the Director's 10 s lock timeout
    out, err = errand.communicate(timeout=60)
    assert errand.returncode == 0, err
    assert out.count("Exit Code  0") == 2
    assert "2 errand(s)" in out and "errand stderr line" in out
    assert "stopped" not in localbosh.run("-d", "rec", "instances").stdout


def test_errand_exit_code_and_instance_filter(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, errand_exit=3)
    localbosh.run("-d", "rec", "deploy", str(m))
    proc = localbosh.run(
        "-d", "rec", "run-errand", "recorder-errand", "--instance", "node/1", check=False
    )
    assert proc.returncode == 1
    assert "1 errand(s)" in proc.stdout
    assert "Errand 'recorder-errand' completed with error (exit code 3)" in proc.stdout
    nope = localbosh.run("-d", "rec", "run-errand", "nope", check=False)
    assert "Errand 'nope' doesn't exist" in nope.stderr


def test_colocated_jobs_hooks_run_in_parallel(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=1, peer=True, hook_sleep=2)
    localbosh.run("-d", "rec", "deploy", str(m))
    pre = [r for r in records(record_log) if r["hook"] == "pre-start"]
    assert sorted(r["job"] for r in pre) == ["recorder", "recorder-peer"]
    # Each sleeps 2 s: they overlap only if the agent started both at once.
    assert max(r["started"] for r in pre) < min(r["time"] for r in pre)
    post = [r for r in records(record_log) if r["hook"] == "post-start"]
    assert min(r["started"] for r in post) > max(r["time"] for r in pre)


def test_instance_not_running_after_watch_time_fails_without_post_start(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(
        tmp_path / "m.yml", record_log, instances=1, process_fails=True, watch="1000-3000"
    )
    proc = localbosh.run("-d", "rec", "deploy", str(m), check=False)
    assert proc.returncode == 1
    inst = localbosh.state("rec")["instances"][0]
    assert f"'node/{inst['id']} (0)' is not running after update." in proc.stderr
    assert "Review logs for failed jobs: recorder" in proc.stderr
    assert "post-start" not in [h[0] for h in hooks(record_log)]


def test_hard_stop_deletes_the_vm_and_start_recreates_it_with_the_same_disk(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=1)
    localbosh.run("-d", "rec", "deploy", str(m))
    localbosh.run("-d", "rec", "ssh", "node/0", "-c", "echo kept > /var/vcap/store/marker")
    disk = localbosh.state("rec")["instances"][0]["disk_cid"]
    record_log.unlink()
    localbosh.run("-d", "rec", "stop", "node/0", "--hard")
    assert hooks(record_log) == SHUTDOWN
    assert pre_stop_env(record_log) == ["delete", "keep", "keep"]
    inst = localbosh.state("rec")["instances"][0]
    assert not inst["vm"] and inst["disk_cid"] == disk
    assert inst["state"] == "detached"  # update_procedure.rb: `stop --hard` detaches
    assert "detached" in localbosh.run("-d", "rec", "instances", "--details").stdout

    record_log.unlink()
    localbosh.run("-d", "rec", "start", "node/0")
    assert hooks(record_log) == START
    out = localbosh.run("-d", "rec", "ssh", "node/0", "-c", "cat /var/vcap/store/marker").stdout
    assert out == "kept\n"


def test_an_instance_whose_update_failed_is_updated_again_on_the_next_deploy(
    localbosh: LocalBosh, tmp_path: Path, record_log: Path
) -> None:
    m = recorder_manifest(tmp_path / "m.yml", record_log, instances=1, fail=["post-start"])
    assert localbosh.run("-d", "rec", "deploy", str(m), check=False).returncode == 1
    record_log.unlink()
    # Same manifest: nothing changed, but the last update never completed (the instance
    # is dirty): a full update, drain included, as the Director does.
    assert localbosh.run("-d", "rec", "deploy", str(m), check=False).returncode == 1
    assert hooks(record_log) == [
        ("pre-stop",),
        ("drain", "job_changed", "hash_unchanged"),
        ("monit-stop",),
        ("post-stop",),
        *START,
    ]
