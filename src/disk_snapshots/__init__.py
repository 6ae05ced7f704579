"""disk-snapshots: safe, scheduled, annotated and restorable persistent-disk snapshots for BOSH."""

__version__ = "0.1.0"
