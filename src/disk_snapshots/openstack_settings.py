"""``provider.openstack.*``: Keystone v3 credentials and where Cinder's block-storage API is,
for the openstack-cinder provider (config.py reads the rest of the properties)."""

from __future__ import annotations

from dataclasses import dataclass

from disk_snapshots.validate import Reader

OPENSTACK_INTERFACES = ("public", "internal", "admin")


@dataclass(frozen=True)
class OpenstackSettings:
    """Keystone v3 credentials and where the block-storage API is; secrets never logged."""

    auth_url: str
    username: str
    api_key: str
    domain: str
    project: str
    project_domain: str
    application_credential_id: str
    application_credential_secret: str
    region: str
    interface: str
    endpoint: str
    ca_cert: str
    insecure: bool
    group_type: str
    # Where Cinder puts our backups (``container`` of backup-create); "" turns them off.
    backup_container: str = ""

    @classmethod
    def unset(cls) -> OpenstackSettings:
        """No OpenStack at all (another provider is configured)."""
        return cls("", "", "", "Default", "", "", "", "", "", "public", "", "", False, "")

    def __repr__(self) -> str:
        # Dataclass reprs end up in tracebacks and logs; the secrets must not.
        return (
            f"OpenstackSettings(auth_url={self.auth_url!r}, username={self.username!r}, "
            f"project={self.project!r}, application_credential_id="
            f"{self.application_credential_id!r}, region={self.region!r})"
        )


def read_openstack(openstack: Reader, *, required: bool) -> OpenstackSettings:
    """``provider.openstack``; the credentials are checked only for the openstack-cinder
    provider (``required``)."""
    url = r"https?://\S+"
    settings = OpenstackSettings(
        auth_url=openstack.get("auth_url").string(pattern=url),
        username=openstack.get("username").string(),
        api_key=openstack.get("api_key").string(),
        domain=openstack.get("domain").string(fallback="Default") or "Default",
        project=openstack.get("project").string(),
        project_domain=openstack.get("project_domain").string(),
        application_credential_id=openstack.get("application_credential_id").string(),
        application_credential_secret=openstack.get("application_credential_secret").string(),
        region=openstack.get("region").string(),
        interface=openstack.get("interface").string(
            choices=OPENSTACK_INTERFACES, fallback="public"
        ),
        endpoint=openstack.get("endpoint").string(pattern=url),
        ca_cert=openstack.get("ca_cert").pem("CERTIFICATE"),
        insecure=openstack.get("insecure").boolean(),
        group_type=openstack.get("group_type").string(),
        # Newer than some rendered configs (a test's, an older release's): absent is off.
        backup_container=""
        if openstack.get("backup_container").missing
        else openstack.get("backup_container").string(),
    )
    if not required:
        return settings
    password = [settings.username, settings.api_key, settings.project]
    app_credential = [settings.application_credential_id, settings.application_credential_secret]
    if not settings.auth_url:
        if not settings.endpoint:
            openstack.get("auth_url").fail(
                "required when provider.type is openstack-cinder (the Keystone v3 URL); "
                "only a Cinder without Keystone (noauth) is reached by endpoint alone"
            )
        elif any(password + app_credential):
            openstack.get("auth_url").fail("required with credentials (the Keystone v3 URL)")
    elif any(app_credential):
        if not all(app_credential):
            openstack.fail("set both application_credential_id and application_credential_secret")
        if any(password):
            openstack.fail(
                "set username/api_key/project or application_credential_id/"
                "application_credential_secret, not both"
            )
    elif not all(password):
        openstack.fail(
            "set username, api_key and project (Keystone v3 password), or "
            "application_credential_id and application_credential_secret"
        )
    return settings
