"""Cinder's block-storage API v3 through a keystoneauth session: retries, waits, pages.

Authentication (Keystone v3 password or application credential), the service catalog
(region, interface, the block-storage type's aliases), TLS and version discovery are
keystoneauth's (the auth layer of the OpenStack SDKs). This module adds what the provider
needs around each call: the pinned microversion, one clear error per failure (naming the
property to check, never a secret), retries that never repeat a request whose effect is
unknown unless repeating is harmless, polling with a deadline, and ``marker``/``limit``
paging.
"""

from __future__ import annotations

import builtins
import logging
import random
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import Literal

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1.adapter import Adapter
from keystoneauth1.identity import v3
from keystoneauth1.noauth import NoAuth
from keystoneauth1.plugin import BaseAuthPlugin
from keystoneauth1.session import Session

from disk_snapshots.openstack_settings import OpenstackSettings
from disk_snapshots.providers.base import ProviderError

log = logging.getLogger(__name__)

# 3.14 group snapshots, 3.22 snapshot metadata filters, 3.43 backup metadata, 3.47 a
# volume created from a backup (with its zone and metadata): Queens (2018) or later.
MICROVERSION = "3.47"

# Answers that say the request was not processed: retried for every method.
GATEWAY = frozenset({429, 502, 503, 504})
# Plus 500, which may come after the work was done: retried only when repeating is harmless.
SERVER = frozenset({500}) | GATEWAY

Method = Literal["GET", "POST", "PUT", "DELETE"]
Kind = Literal["snapshot", "backup", "volume", "group", "group_snapshot"]


class CinderNotFound(ProviderError):
    """Cinder answered 404 for the resource."""


class _Failed(Exception):
    """One try failed; ``retryable`` says whether sending it again is safe."""

    def __init__(self, problem: str, retryable: bool) -> None:
        super().__init__(problem)
        self.problem = problem
        self.retryable = retryable


def cinder_message(body: object) -> str:
    """Cinder's error text from ``{"badRequest": {"message": ..., "code": 400}}``."""
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])
    return ""


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def connect(settings: OpenstackSettings, timeout: float, ca_file: Path | None) -> Adapter:
    """keystoneauth's block-storage adapter for these settings: auth plugin, TLS, catalog."""
    auth: BaseAuthPlugin
    if not settings.auth_url:
        # A Cinder without Keystone (noauth): the endpoint alone.
        auth = NoAuth(endpoint=settings.endpoint)
    elif settings.application_credential_id:
        auth = v3.ApplicationCredential(
            auth_url=settings.auth_url,
            application_credential_id=settings.application_credential_id,
            application_credential_secret=settings.application_credential_secret,
        )
    else:
        auth = v3.Password(
            auth_url=settings.auth_url,
            username=settings.username,
            password=settings.api_key,
            user_domain_name=settings.domain,
            project_name=settings.project,
            project_domain_name=settings.project_domain or settings.domain,
        )
    verify: bool | str = str(ca_file) if ca_file else True
    if settings.insecure:
        verify = False
    session = Session(auth=auth, verify=verify, timeout=timeout, app_name="disk-snapshots")
    return Adapter(
        session=session,
        # The catalog may call it volumev3 or volume: keystoneauth knows the aliases.
        service_type="block-storage",
        interface=settings.interface,
        region_name=settings.region or None,
        endpoint_override=settings.endpoint or None,
        min_version="3",
        max_version="3.latest",
    )


class CinderApi:
    """One project's Cinder, as these settings reach it."""

    def __init__(
        self,
        settings: OpenstackSettings,
        *,
        timeout: float = 30.0,
        attempts: int = 4,
        retry_delays: Sequence[float] = (1.0, 2.0, 4.0),
        poll_interval: float = 0.5,
        page_size: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.auth_url and not settings.endpoint:
            raise ProviderError(
                "provider.openstack.auth_url is required for the openstack-cinder provider"
            )
        self.settings = settings
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.retry_delays = tuple(retry_delays)
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.sleep = sleep
        self._adapter: Adapter | None = None
        self._ca_dir: tempfile.TemporaryDirectory[str] | None = None
        self._checked_version = False

    def __repr__(self) -> str:
        where = self.settings.auth_url or self.settings.endpoint
        return f"CinderApi({where!r}, region={self.settings.region!r})"

    def close(self) -> None:
        if self._adapter is not None:
            self._adapter.session.session.close()
            self._adapter = None
        if self._ca_dir is not None:
            self._ca_dir.cleanup()
            self._ca_dir = None

    def _block_storage(self) -> Adapter:
        if self._adapter is None:
            ca_file: Path | None = None
            if self.settings.ca_cert:
                # requests verifies against a file; it lives as long as the connection.
                self._ca_dir = tempfile.TemporaryDirectory(prefix="disk-snapshots-ca-")
                ca_file = Path(self._ca_dir.name) / "ca.pem"
                ca_file.write_text(self.settings.ca_cert)
            self._adapter = connect(self.settings, self.timeout, ca_file)
        return self._adapter

    def _scrub(self, text: str) -> str:
        for secret in (self.settings.api_key, self.settings.application_credential_secret):
            if secret:
                text = text.replace(secret, "<secret>")
        return text

    def _auth_error(self, action: str, err: Exception) -> ProviderError:
        if isinstance(err, ks_exceptions.Unauthorized):
            if self.settings.application_credential_id:
                which = "application_credential_id/application_credential_secret"
            else:
                which = "username/api_key/domain/project"
            return ProviderError(
                f"{action}: Keystone at {self.settings.auth_url} rejected the credentials "
                f"(HTTP 401); check provider.openstack.{which}"
            )
        if isinstance(err, ks_exceptions.EndpointNotFound):
            return ProviderError(
                f"{action}: the service catalog has no block-storage (Cinder v3) endpoint for "
                f"region {self.settings.region or '(any)'!r} and interface "
                f"{self.settings.interface!r}; check provider.openstack.region/interface, or "
                "set provider.openstack.endpoint"
            )
        if isinstance(err, ks_exceptions.SSLError):
            return ProviderError(
                f"{action}: TLS verification failed ({self._scrub(str(err))}); set "
                "provider.openstack.ca_cert to the CA that signs the endpoints"
            )
        return ProviderError(f"{action}: {type(err).__name__}: {self._scrub(str(err))}")

    def request(
        self,
        method: Method,
        path: str,
        action: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        retry_ambiguous: bool | None = None,
    ) -> Any:
        """One API call with retries: the parsed JSON body, or a ProviderError saying why.

        ``retry_ambiguous`` says whether a 500 or a timeout, after which the call may or
        may not have taken effect, may be retried: whether doing it twice is harmless
        (default: for GET only).
        """
        if retry_ambiguous is None:
            retry_ambiguous = method == "GET"
        adapter = self._block_storage()
        if not self._checked_version:
            self._check_version(adapter, action)
        delays = iter(self.retry_delays)
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._send(adapter, method, path, action, body, params, retry_ambiguous)
            except _Failed as failed:
                problem, retryable = failed.problem, failed.retryable
            delay = next(delays, None) if attempt < self.attempts else None
            if not retryable or delay is None:
                tried = f" after {attempt} attempts" if attempt > 1 else ""
                raise ProviderError(f"{action} failed{tried}: {problem}")
            # Jitter, so that instances failing together do not retry together.
            wait = delay * (0.5 + random.random() / 2)  # noqa: S311 - not cryptographic
            log.warning("%s: %s; retrying in %.1fs", action, problem, wait)
            self.sleep(wait)

    def _send(
        self,
        adapter: Adapter,
        method: Method,
        path: str,
        action: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str | int] | None,
        retry_ambiguous: bool,
    ) -> Any:
        """One try: the parsed answer; _Failed when another try may help, else ProviderError."""
        try:
            response = adapter.request(
                path,
                method,
                json=body,
                params=dict(params or {}),
                headers={
                    "OpenStack-API-Version": f"volume {MICROVERSION}",
                    "Accept": "application/json",
                },
                raise_exc=False,
                connect_retries=0,
            )
        except ks_exceptions.ConnectFailure as err:
            # A refused connection never reached Cinder: safe to send again.
            refused = "refused" in str(err).lower()
            raise _Failed(
                f"cannot connect ({self._scrub(str(err))})", retry_ambiguous or refused
            ) from None
        except ks_exceptions.ConnectTimeout as err:
            problem = f"no answer within {self.timeout:g}s ({self._scrub(str(err))})"
            raise _Failed(problem, retry_ambiguous) from None
        except ks_exceptions.DiscoveryFailure as err:
            # keystoneauth reads the version document before the request: nothing sent.
            problem = f"cannot connect to Cinder's endpoint ({self._scrub(str(err))})"
            raise _Failed(problem, True) from None
        except ks_exceptions.ClientException as err:
            raise self._auth_error(action, err) from None
        status = int(response.status_code)
        if 200 <= status < 300:
            return self._json(response, action)
        problem = f"HTTP {status}: {self._error_text(response)}"
        if status not in SERVER:
            raise self._refused(status, problem, action)
        raise _Failed(problem, status in GATEWAY or retry_ambiguous)

    def _json(self, response: Any, action: str) -> Any:
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise ProviderError(
                f"{action}: Cinder answered {response.status_code} with a body that is not JSON"
            ) from None

    def _error_text(self, response: Any) -> str:
        try:
            message = cinder_message(response.json())
        except ValueError:
            message = ""
        return self._scrub(message or str(response.text)[:200])

    def _refused(self, status: int, problem: str, action: str) -> ProviderError:
        if status == 404:
            return CinderNotFound(f"{action}: not found ({problem})")
        if status == 401:
            return ProviderError(
                f"{action}: Cinder rejected the token ({problem}); check the "
                "provider.openstack credentials"
            )
        if status == 403:
            return ProviderError(
                f"{action}: the credentials lack permission ({problem}); the project's "
                "member role is needed for snapshots, groups, backups and volumes"
            )
        return ProviderError(f"{action}: Cinder refused: {problem}")

    def _check_version(self, adapter: Adapter, action: str) -> None:
        """Refuse a Cinder older than the microversion every call here asks for."""
        try:
            # keystoneauth's version discovery; it authenticates first when it must.
            data = adapter.get_endpoint_data()
        except (
            ks_exceptions.ConnectFailure,
            ks_exceptions.ConnectTimeout,
            ks_exceptions.DiscoveryFailure,
        ):
            # An unreachable endpoint is for the call itself to report, after its retries.
            return
        except ks_exceptions.ClientException as err:
            raise self._auth_error(action, err) from None
        highest = getattr(data, "max_microversion", None)
        if highest is not None and tuple(highest) < version_tuple(MICROVERSION):
            raise ProviderError(
                "this Cinder supports the block-storage API up to "
                f"{'.'.join(map(str, highest))}; the openstack-cinder provider needs "
                f"{MICROVERSION} (OpenStack Queens or later)"
            )
        self._checked_version = True

    def add_metadata(
        self, kind: Literal["snapshot", "volume"], resource_id: str, metadata: Mapping[str, str]
    ) -> None:
        """Set these metadata keys (others stay); the same keys written twice are the same
        keys, so an ambiguous failure is retried."""
        self.request(
            "POST",
            f"/{kind}s/{resource_id}/metadata",
            f"writing the metadata of {kind} {resource_id}",
            body={"metadata": dict(metadata)},
            retry_ambiguous=True,
        )

    def wait(
        self,
        kind: Kind,
        resource_id: str,
        want: str,
        timeout: float,
        transitional: Sequence[str],
    ) -> dict[str, Any]:
        """Poll until the status is ``want``; any other end state raises with Cinder's reason."""
        path = f"/{kind}s/{resource_id}"
        deadline = time.monotonic() + timeout
        while True:
            resource = dict(self.request("GET", path, f"reading {kind} {resource_id}")[kind])
            status = str(resource.get("status", ""))
            if status == want:
                return resource
            if status not in transitional:
                fault = self.fault(resource_id) or str(resource.get("fail_reason") or "")
                raise ProviderError(
                    f"{kind} {resource_id} went into status {status!r}"
                    + (f": {fault}" if fault else " (Cinder recorded no reason)")
                )
            if time.monotonic() >= deadline:
                raise ProviderError(f"{kind} {resource_id} is still {status!r} after {timeout:g}s")
            self.sleep(self.poll_interval)

    def fault(self, resource_id: str) -> str:
        """Cinder's user messages about a resource: why it failed, as the API tells users."""
        try:
            messages = self.request(
                "GET",
                "/messages",
                "reading Cinder's messages",
                params={"resource_uuid": resource_id},
            ).get("messages", [])
        except ProviderError:
            return ""
        return "; ".join(str(m["user_message"]) for m in messages if m.get("user_message"))

    def pages(
        self, path: str, key: str, params: Mapping[str, str | int], action: str
    ) -> Iterator[builtins.list[dict[str, Any]]]:
        """Every page of a list, by ``limit`` and ``marker`` (the last id of a page)."""
        marker = ""
        while True:
            page_params: dict[str, str | int] = {**params, "limit": self.page_size}
            if marker:
                page_params["marker"] = marker
            body = self.request("GET", path, action, params=page_params)
            page = [dict(item) for item in body.get(key, [])]
            yield page
            if len(page) < self.page_size or not body.get(f"{key}_links"):
                return
            marker = str(page[-1]["id"])
