"""Snapshot backends behind one small interface (base.py; docs/catalog.md)."""

from __future__ import annotations

from disk_snapshots.config import ProviderConfig
from disk_snapshots.providers.base import Provider
from disk_snapshots.providers.base import ProviderError
from disk_snapshots.vm.instance import Disk


def make_provider(config: ProviderConfig, disk: Disk | None) -> Provider:
    """The provider the ``provider.type`` property names, for this instance's disk."""
    if config.type == "loopback":
        from disk_snapshots.providers.loopback import LoopbackProvider

        return LoopbackProvider.for_disk(config.loopback_pool, disk, config.loopback_backup_store)
    if config.type == "aws-ebs":
        from disk_snapshots.providers.aws_ebs import AwsEbsProvider

        return AwsEbsProvider.from_config(config.aws)
    if config.type == "openstack-cinder":
        from disk_snapshots.providers.openstack_cinder import OpenstackCinderProvider

        return OpenstackCinderProvider.from_config(config.openstack)
    raise ProviderError(f"provider.type {config.type!r} is not available in this version")
