"""Backups of snapshots: which one to copy, running a copy to completion, retention."""
