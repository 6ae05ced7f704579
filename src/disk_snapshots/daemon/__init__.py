"""The snapshotter daemon's parts: the scheduler, and the Agent the agent API serves.

commands/daemon.py runs them in one process under monit.
"""
