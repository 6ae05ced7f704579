"""The on-VM restore's choice (restore/single.py choose_for_instance): this instance's
snapshot by deployment, instance group and index, never by instance id or disk CID."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_restore_plan import snap

from disk_snapshots.members import Member
from disk_snapshots.restore.plan import PlanError
from disk_snapshots.restore.single import choose_for_instance
from disk_snapshots.restore.target import Target

# The Director's VM after its disk was lost: a new instance id (and disk CID).
OLD = Member("bosh", 0, "id-old", "10.0.0.6")
NEW = replace(OLD, id="id-new")
OTHER_GROUP = Member("worker", 0, "id-w0", "10.0.0.7")
LATEST = Target("latest")


def choose(catalog, target=LATEST, snapshot_id=""):  # type: ignore[no-untyped-def]
    return choose_for_instance(catalog, NEW, "redis", target, snapshot_id)


def chosen(catalog, **kwargs) -> str:  # type: ignore[no-untyped-def]
    step = choose(catalog, **kwargs).leader
    assert step.source is not None
    return step.source.id


def test_latest_is_the_newest_consistent_snapshot_of_this_group_and_index() -> None:
    catalog = [
        snap(1, OLD, 0, "standalone"),
        snap(2, OLD, 10, "standalone"),
        # Newer, but not this instance's, not consistent, or not complete: never chosen.
        snap(3, OTHER_GROUP, 20, "standalone"),
        snap(4, OLD, 30, "standalone", consistency="crash"),
        snap(5, OLD, 40, "standalone", state="error"),
        snap(
            6, OLD, 50, "standalone", set_id="set-20261129T090000Z-abcdef", set_state="incomplete"
        ),
        snap(7, OLD, 60, "standalone", deployment="other"),
    ]
    plan = choose(catalog)
    assert chosen(catalog) == catalog[1].id
    entry = plan.entries()
    # The journal records this VM's id and label, whatever instance id took the snapshot.
    assert [(e.instance, e.id, e.role, e.action) for e in entry] == [
        ("bosh/0", "id-new", "leader", "copy")
    ]


def test_to_a_time_takes_the_newest_at_or_before_it() -> None:
    catalog = [snap(1, OLD, 0, "standalone"), snap(2, OLD, 10, "standalone")]
    moment = catalog[0].created_at
    assert chosen(catalog, target=Target("time", moment=moment)) == catalog[0].id
    with pytest.raises(PlanError, match="no eligible snapshot"):
        choose(catalog, target=Target("time", moment=moment.replace(year=2020)))


def test_a_named_snapshot_is_taken_even_a_safety_one_of_another_instance() -> None:
    safety = replace(
        snap(1, OLD, 0, "standalone"),
        annotations=replace(snap(1, OLD, 0, "standalone").annotations, trigger="pre-restore"),
    )
    catalog = [safety, snap(2, OLD, 10, "standalone"), snap(3, OTHER_GROUP, 20, "standalone")]
    assert chosen(catalog) == catalog[1].id, "latest never goes back to a safety snapshot"
    assert chosen(catalog, snapshot_id=safety.id) == safety.id
    assert chosen(catalog, snapshot_id=catalog[2].id) == catalog[2].id


def test_refusals_name_the_snapshot() -> None:
    foreign = snap(9, OLD, 0, "standalone", deployment="other")
    catalog = [snap(1, OLD, 0, "standalone"), foreign]
    with pytest.raises(PlanError, match=f"snapshot {foreign.id} belongs to deployment other"):
        choose(catalog, snapshot_id=foreign.id)
    with pytest.raises(PlanError, match="--snapshot bosh/0: snapshot snap-x does not exist"):
        choose(catalog, snapshot_id="snap-x")
    with pytest.raises(PlanError, match="name one in --snapshot"):
        choose([snap(3, OTHER_GROUP, 0, "standalone")])
