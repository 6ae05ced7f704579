"""``disk-snapshots``: the operator's command, run on a jumpbox next to the bosh CLI.

It drives the real ``bosh`` CLI (``--json``, never its human tables) in the context of
one deployment, and reaches the instances the way its user already can, with ``bosh
ssh`` running ``bin/snapshots`` there: the catalog and the provider's credentials stay
on the VMs. Restores plan with the errand's own planner (restore/plan.py) and run in the
seed's order through the Director: stop, restore (copy onto the disk, or replace the
disk with ``bosh attach-disk``), start.
"""
