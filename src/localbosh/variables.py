"""Values for `variables:` entries, generated the way `bosh int --vars-store` does.

The bosh CLI generates `password`, `certificate`, `rsa` and `ssh` variables with the
config-server generators it vendors (`github.com/cloudfoundry/config-server/types`) and
writes them to a YAML vars store, which later runs read back instead of regenerating.
This module mirrors those generators' parameters, defaults and output shapes so that a
vars store written here can be read by `bosh int` and the other way around.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import secrets
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

__all__ = [
    "GENERATED_TYPES",
    "CaLoader",
    "VariableError",
    "VarsStore",
    "generate",
    "generate_certificate",
    "generate_password",
    "generate_rsa",
    "generate_ssh",
]

GENERATED_TYPES = ("password", "certificate", "rsa", "ssh")

# config-server: 3072-bit keys for certificates, 2048 for rsa/ssh.
_CERT_KEY_BITS = 3072
_RSA_KEY_BITS = 2048
_PASSWORD_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"  # noqa: S105 (an alphabet, no secret)
_DEFAULT_PASSWORD_LENGTH = 20
_CERT_OPTIONS = frozenset(
    {
        "common_name",
        "organization",
        "alternative_names",
        "is_ca",
        "ca",
        "extended_key_usage",
        "duration",
    }
)
_EKU = {
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
}

# Returns the stored value of a CA variable ({certificate, private_key, ca}), or None.
CaLoader = Callable[[str], Any]


class VariableError(Exception):
    """A variable could not be generated or loaded; the message says which and why."""


def generate(var_type: str, options: Any, load_ca: CaLoader | None = None) -> Any:
    """Generate a value for a `variables:` entry of type `var_type`."""
    opts = _options(options, var_type)
    if var_type == "password":
        return generate_password(opts)
    if var_type == "certificate":
        return generate_certificate(opts, load_ca)
    if var_type == "rsa":
        return generate_rsa(opts)
    if var_type == "ssh":
        return generate_ssh(opts)
    # Same wording as config-server's ValueGeneratorConcrete.
    raise VariableError(f"Unsupported value type: {var_type}")


def _options(options: Any, var_type: str) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise VariableError(
            f"Failed to generate {var_type}, parameters are invalid: expected a map of options"
        )
    return {str(k): v for k, v in options.items()}


def generate_password(options: Mapping[str, Any]) -> str:
    unknown = sorted(set(options) - {"length"})
    if unknown:
        raise VariableError(
            "Failed to generate password, parameters are invalid: "
            f"unsupported option '{unknown[0]}'"
        )
    length = options.get("length") or _DEFAULT_PASSWORD_LENGTH
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise VariableError(
            "Failed to generate password, parameters are invalid: length must be a positive integer"
        )
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))


def _pem_private_key(key: rsa.RSAPrivateKey) -> str:
    # PKCS#1 ("RSA PRIVATE KEY"), as Go's x509.MarshalPKCS1PrivateKey writes it.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_id(key: rsa.RSAPublicKey) -> bytes:
    # config-server: SubjectKeyId = sha1 of the modulus bytes.
    n = key.public_numbers().n
    modulus = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return hashlib.sha1(modulus, usedforsecurity=False).digest()


def _load_ca(name: str, load_ca: CaLoader | None) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    value = load_ca(name) if load_ca is not None else None
    if value is None:
        raise VariableError(
            f"Loading certificates: Expected to find variable '{name}' with a certificate"
        )
    if not (isinstance(value, Mapping) and value.get("certificate") and value.get("private_key")):
        raise VariableError(
            f"Loading certificates: Expected variable '{name}' to be a certificate "
            "with 'certificate' and 'private_key'"
        )
    try:
        cert = x509.load_pem_x509_certificate(str(value["certificate"]).encode())
        key = serialization.load_pem_private_key(str(value["private_key"]).encode(), password=None)
    except ValueError as exc:
        raise VariableError(f"Loading certificates: variable '{name}': {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise VariableError(f"Loading certificates: variable '{name}': only RSA keys are supported")
    return cert, key


def _str_list(options: Mapping[str, Any], key: str) -> list[str]:
    value = options.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise VariableError(
            "Failed to generate certificate, parameters are invalid: "
            f"'{key}' must be a list of strings"
        )
    return list(value)


def generate_certificate(
    options: Mapping[str, Any], load_ca: CaLoader | None = None
) -> dict[str, str]:
    """A CA (`is_ca`), an intermediate (`is_ca` + `ca`) or a leaf (`ca`), like config-server."""
    unknown = sorted(set(options) - _CERT_OPTIONS)
    if unknown:
        raise VariableError(
            "Failed to generate certificate, parameters are invalid: "
            f"unsupported option '{unknown[0]}'"
        )
    is_ca = bool(options.get("is_ca", False))
    ca_name = str(options.get("ca") or "")
    if not is_ca and not ca_name:
        raise VariableError("Missing required CA name")
    duration = options.get("duration") or 365
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 1:
        raise VariableError(
            "Failed to generate certificate, parameters are invalid: "
            "duration must be a number of days"
        )
    eku_names = _str_list(options, "extended_key_usage")
    alt_names = _str_list(options, "alternative_names")
    for eku in eku_names:
        if eku not in _EKU:
            raise VariableError(f"Unsupported extended key usage value: {eku}")

    key = rsa.generate_private_key(public_exponent=65537, key_size=_CERT_KEY_BITS)
    now = datetime.datetime.now(datetime.UTC)
    # config-server writes Country "USA"; cryptography only accepts ISO 3166 alpha-2.
    organization = str(options.get("organization") or "Cloud Foundry")
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ]
    if options.get("common_name"):
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, str(options["common_name"])))
    subject = x509.Name(attributes)
    ski = _key_id(key.public_key())

    signer_cert: x509.Certificate | None = None
    signer_key = key
    issuer = subject
    aki = ski
    if ca_name:
        signer_cert, signer_key = _load_ca(ca_name, load_ca)
        issuer = signer_cert.subject
        signer_pub = signer_cert.public_key()
        if not isinstance(signer_pub, rsa.RSAPublicKey):
            raise VariableError(
                f"Loading certificates: variable '{ca_name}': only RSA keys are supported"
            )
        aki = _key_id(signer_pub)

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(127) + 1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=duration))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=aki, authority_cert_issuer=None, authority_cert_serial_number=None
            ),
            critical=False,
        )
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # config-server defaults a leaf to server_auth when none is asked for.
        usages = [_EKU[e] for e in eku_names] or [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if alt_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_general_names(alt_names)), critical=False
            )

    cert = builder.sign(signer_key, hashes.SHA256())
    ca_pem = _pem_cert(signer_cert) if signer_cert is not None else _pem_cert(cert)
    return {"ca": ca_pem, "certificate": _pem_cert(cert), "private_key": _pem_private_key(key)}


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    # config-server: whatever parses as an IP is an IP SAN, everything else a DNS SAN.
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def generate_rsa(options: Mapping[str, Any]) -> dict[str, str]:
    if options:
        raise VariableError("Failed to generate rsa, parameters are invalid: rsa takes no options")
    key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_KEY_BITS)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {"private_key": _pem_private_key(key), "public_key": public}


def generate_ssh(options: Mapping[str, Any]) -> dict[str, str]:
    if options:
        raise VariableError("Failed to generate ssh, parameters are invalid: ssh takes no options")
    key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_KEY_BITS)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    blob = base64.b64decode(public.split()[1])
    # ssh.FingerprintLegacyMD5: colon-separated hex MD5 of the key blob.
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    return {
        "private_key": _pem_private_key(key),
        "public_key": public.decode(),
        "public_key_fingerprint": fingerprint,
    }


class VarsStore:
    """A `--vars-store` YAML file: read on every lookup, rewritten after every generation.

    Like the CLI's VarsFSStore, a value that is already in the file is never regenerated,
    so a second run against the same store yields the same passwords and certificates.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = yaml.safe_load(self.path.read_text())
        except yaml.YAMLError as exc:
            raise VariableError(f"Deserializing variables file store '{self.path}': {exc}") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise VariableError(f"Deserializing variables file store '{self.path}': expected a map")
        return {str(k): v for k, v in data.items()}

    def get(self, name: str) -> tuple[Any, bool]:
        values = self.load()
        if name in values:
            return values[name], True
        return None, False

    def set(self, name: str, value: Any) -> None:
        values = self.load()
        values[name] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        # Generated private keys live here: never world-readable, not even briefly.
        tmp.touch(mode=0o600, exist_ok=True)
        tmp.chmod(0o600)
        tmp.write_text(yaml.safe_dump(values, default_flow_style=False, sort_keys=True))
        tmp.replace(self.path)

    def names(self) -> list[str]:
        return sorted(self.load())
