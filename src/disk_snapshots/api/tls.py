"""Mutual TLS of the agent API: the one certificate every member presents, both ways.

Every instance presents the same certificate, as server and as client
(manifests/operations/agent-api-tls.yml), so authentication is "signed by the
deployment's CA" in both directions. Host names are not checked: link addresses may
be IPs or BOSH DNS names, and a name check against a certificate every member shares
would prove nothing the CA check has not already proved. The private key is read from
the rendered config.json and kept in this process's memory only.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from disk_snapshots.config import TlsConfig
from disk_snapshots.errors import EXIT_CONFIG
from disk_snapshots.errors import ReleaseError


class TlsSetupError(ReleaseError, RuntimeError):
    """The configured CA, certificate or key cannot be used (the message holds no secret)."""

    exit_code = EXIT_CONFIG


def _load_identity(context: ssl.SSLContext, tls: TlsConfig) -> None:
    # ssl reads a certificate chain only from a path. A memfd gives it one that never
    # lands on a filesystem, so the private key exists nowhere but in this process.
    pem = f"{tls.certificate.strip()}\n{tls.private_key.strip()}\n".encode()
    try:
        fd = os.memfd_create("agent-tls", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = -1
    try:
        if fd >= 0:
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view) :]
            context.load_cert_chain(f"/proc/self/fd/{fd}")
            return
        with tempfile.TemporaryDirectory(prefix="agent-tls-") as private:
            path = Path(private) / "identity.pem"
            path.touch(mode=0o600)
            path.write_bytes(pem)
            context.load_cert_chain(str(path))
    except ssl.SSLError as err:
        raise TlsSetupError(
            f"api.tls.certificate / api.tls.private_key cannot be loaded ({err.reason}); "
            "they must be a PEM certificate and its matching private key"
        ) from None
    finally:
        if fd >= 0:
            os.close(fd)


def _context(tls: TlsConfig, protocol: int) -> ssl.SSLContext:
    if not tls.enabled:
        raise TlsSetupError("api.tls is not set (see manifests/operations/agent-api-tls.yml)")
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cadata=tls.ca)
    except ssl.SSLError as err:
        raise TlsSetupError(f"api.tls.ca cannot be loaded ({err.reason})") from None
    _load_identity(context, tls)
    return context


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """Mutual TLS for the server: no certificate from the CA, no handshake."""
    return _context(tls, ssl.PROTOCOL_TLS_SERVER)


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    return _context(tls, ssl.PROTOCOL_TLS_CLIENT)
