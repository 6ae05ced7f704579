"""Restore: bring a replicated service back to a chosen point in time, in role order.

The planner (plan.py, target.py) is a pure function of the catalog, the members and
the target. The restore errand's coordinator (coordinator.py, run by
commands/restore.py) drives every member's agent API; the member's side
(member.py) takes the safety snapshot and copies the chosen snapshot onto its own
disk (copy.py) under a journal (journal.py), which makes a killed restore resumable
(resume.py). docs/architecture.md has the protocol step by step.
"""
