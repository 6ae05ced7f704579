"""One instance's snapshot: the Snapshotter that hooks, errands and the daemon share, the
quiesce sequence (flush, freeze, thaw, resume) and the lease its watchdog honours."""
