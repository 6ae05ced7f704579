"""Snapshot sets: one consistent cut across every instance of a deployment.

The coordinator (coordinator.py, on the bootstrap instance) drives every member
through the agent API: quiesce all (flush + freeze, in parallel, under a lease) →
snapshot all → thaw all (always, also after errors) → mark every member's snapshot
``complete`` only if every member succeeded, else ``incomplete`` with the reason. The
member's side (member.py) holds its freeze across those requests and marks its own
snapshot incomplete when the coordinator goes silent; decisions.py holds the pure
decisions both sides share. docs/architecture.md has the protocol step by step.
"""
