"""This VM: who it is and which disk it has, its processes and monit, the colocated service."""
