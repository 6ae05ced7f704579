"""service.jobs stopped in their order and started in reverse, one at a time.

The fake monit here is as slow as the real one: a stop or start takes effect only some
summaries after it was asked for (monit acts on its next cycle), so a caller that does
not wait for each job sees the next one asked while the previous is still up.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

import pytest

from disk_snapshots.member_errors import TimedOut
from disk_snapshots.vm import monit as monit_module
from disk_snapshots.vm.monit import RUNNING
from disk_snapshots.vm.monit import STOPPED
from disk_snapshots.vm.monit import ServiceJobs

JOBS = ("director", "worker_1", "blobstore_nginx", "postgres")


@dataclass
class SlowMonit:
    """Records each request with the states of every job at that moment."""

    states: dict[str, str]
    cycles: int = 2  # summaries before a requested change shows
    stuck: frozenset[str] = frozenset()
    log: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _pending: dict[str, tuple[str, int]] = field(default_factory=dict)

    def summary(self) -> dict[str, str]:
        for name, (state, left) in list(self._pending.items()):
            if left <= 1:
                self.states[name] = state
                del self._pending[name]
            else:
                self._pending[name] = (state, left - 1)
        return dict(self.states)

    def _ask(self, verb: str, name: str, state: str) -> None:
        self.log.append((f"{verb} {name}", dict(self.states)))
        self.states[name] = f"{verb} pending"
        if name not in self.stuck:
            self._pending[name] = (state, self.cycles)

    def stop(self, name: str) -> None:
        self._ask("stop", name, STOPPED)

    def start(self, name: str) -> None:
        self._ask("start", name, RUNNING)


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monit_module, "POLL_SECONDS", 0.001)


def test_stop_goes_in_list_order_each_stopped_before_the_next() -> None:
    monit = SlowMonit(dict.fromkeys(JOBS, RUNNING))
    answer = ServiceJobs(monit, JOBS).control("stop", timeout=10)
    assert answer == {"action": "stop", "jobs": dict.fromkeys(JOBS, STOPPED)}
    assert [request for request, _ in monit.log] == [f"stop {j}" for j in JOBS]
    for n, (_, seen) in enumerate(monit.log):
        # Every job before this one was already stopped; none after it was touched.
        assert all(seen[j] == STOPPED for j in JOBS[:n]), monit.log
        assert all(seen[j] == RUNNING for j in JOBS[n:]), monit.log


def test_start_goes_in_reverse_order_each_running_before_the_next() -> None:
    monit = SlowMonit(dict.fromkeys(JOBS, STOPPED))
    answer = ServiceJobs(monit, JOBS).control("start", timeout=10)
    assert answer == {"action": "start", "jobs": dict.fromkeys(JOBS, RUNNING)}
    backwards = tuple(reversed(JOBS))
    assert [request for request, _ in monit.log] == [f"start {j}" for j in backwards]
    for n, (_, seen) in enumerate(monit.log):
        assert all(seen[j] == RUNNING for j in backwards[:n]), monit.log
        assert all(seen[j] == STOPPED for j in backwards[n:]), monit.log


def test_a_job_that_does_not_stop_stops_the_sequence_and_says_where() -> None:
    monit = SlowMonit(dict.fromkeys(JOBS, RUNNING), stuck=frozenset({"worker_1"}))
    with pytest.raises(TimedOut) as caught:
        ServiceJobs(monit, JOBS).control("stop", timeout=1)
    assert str(caught.value) == (
        "not not monitored within 1s: worker_1: stop pending; already not monitored: "
        "director; not asked yet: blobstore_nginx, postgres"
    )
    # The jobs after it were never asked: PostgreSQL keeps running under a live worker.
    assert [request for request, _ in monit.log] == ["stop director", "stop worker_1"]
    assert monit.states["postgres"] == RUNNING
