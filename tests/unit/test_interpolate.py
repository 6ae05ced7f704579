"""localbosh.manifest / localbosh.variables: `bosh int` semantics without the CLI.

Expected messages are the go-patch and bosh-cli wording (errs.go, template.go), so that an
operator reads the same error whichever engine ran.
"""

from __future__ import annotations

import datetime
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder
from cryptography.x509.verification import Store
from cryptography.x509.verification import VerificationError

from localbosh import manifest as m
from localbosh import variables as v


def ops(*defs: dict[str, Any]) -> list[dict[str, Any]]:
    return list(defs)


def apply(doc: Any, *defs: dict[str, Any]) -> Any:
    return m.apply_ops(doc, m.load_ops(list(defs), name="ops.yml"))


# ---------------------------------------------------------------------------------------
# Path grammar
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/a",
        "/a/b/0",
        "/-1",
        "/name=x",
        "/a?/b/c",
        "/name=x?/b",
        "/0:before",
        "/name=x:after",
        "/1:prev:next",
        "/a/-",
        "/a~1b/c~0d",
        "/k~3v~7w~2",
    ],
)
def test_pointer_round_trips(path: str) -> None:
    assert m.format_pointer(m.parse_pointer(path)) == path


def test_pointer_tokens() -> None:
    tokens = m.parse_pointer("/a~1b/name=x~3y?/0/-1:prev/-")
    assert [type(t).__name__ for t in tokens] == [
        "_Root",
        "_Key",
        "_Matching",
        "_Index",
        "_Index",
        "_AfterLast",
    ]
    assert m.find({"a/b": 1}, "/a~1b") == 1
    # `?` makes that segment and every later one optional.
    assert m.format_pointer(m.parse_pointer("/a?/b/c")) == "/a?/b/c"
    assert all(getattr(t, "optional", True) for t in m.parse_pointer("/a?/b/c")[1:])


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a/b", "Expected to start with '/'"),
        (
            "/a:bogus",
            "Expected to find one of the following modifiers: 'prev', 'next', "
            "'before', or 'after' but found 'bogus'",
        ),
        ("/a:prev", "Expected not to find any modifiers with key token"),
        ("/-:before", "Expected not to find any modifiers with after last index token"),
    ],
)
def test_pointer_errors(path: str, message: str) -> None:
    with pytest.raises(m.OpsError) as err:
        m.parse_pointer(path)
    assert str(err.value) == message


# ---------------------------------------------------------------------------------------
# replace / remove
# ---------------------------------------------------------------------------------------


def doc() -> dict[str, Any]:
    return {
        "name": "d",
        "instance_groups": [
            {"name": "a", "jobs": [{"name": "j1"}, {"name": "j2"}]},
            {"name": "b", "jobs": []},
        ],
        "list": [1, 2, 3],
    }


def test_replace_key_and_matching_item() -> None:
    result = apply(
        doc(), {"type": "replace", "path": "/instance_groups/name=b/instances?", "value": 2}
    )
    assert result["instance_groups"][1]["instances"] == 2


def test_replace_optional_creates_maps_and_lists() -> None:
    result = apply(
        doc(),
        {
            "type": "replace",
            "path": "/instance_groups/name=a/jobs/name=j1/properties?/api/tls",
            "value": {"ca": "x"},
        },
    )
    assert result["instance_groups"][0]["jobs"][0]["properties"] == {"api": {"tls": {"ca": "x"}}}
    result = apply(doc(), {"type": "replace", "path": "/new?/-", "value": "v"})
    assert result["new"] == ["v"]
    result = apply(
        doc(), {"type": "replace", "path": "/instance_groups/name=c?/instances", "value": 1}
    )
    assert result["instance_groups"][2] == {"name": "c", "instances": 1}


def test_replace_indexes() -> None:
    assert apply(doc(), {"type": "replace", "path": "/list/0", "value": 9})["list"] == [9, 2, 3]
    assert apply(doc(), {"type": "replace", "path": "/list/-1", "value": 9})["list"] == [1, 2, 9]
    assert apply(doc(), {"type": "replace", "path": "/list/-", "value": 9})["list"] == [1, 2, 3, 9]
    assert apply(doc(), {"type": "replace", "path": "/list/0:before", "value": 0})["list"] == [
        0,
        1,
        2,
        3,
    ]
    assert apply(doc(), {"type": "replace", "path": "/list/0:after", "value": 0})["list"] == [
        1,
        0,
        2,
        3,
    ]
    assert apply(doc(), {"type": "replace", "path": "/list/1:prev", "value": 0})["list"] == [
        0,
        2,
        3,
    ]
    # "/" is the key "" (go-patch), not the root.
    assert apply(doc(), {"type": "replace", "path": "/?", "value": 1})[""] == 1
    assert apply(doc(), {"type": "replace", "path": "", "value": {"x": 1}}) == {"x": 1}


def test_replace_copies_the_value() -> None:
    # YAML anchors (`value: *tls`) must not leave two places sharing one object.
    shared = {"k": "v"}
    result = apply(
        {"a": {}, "b": {}},
        {"type": "replace", "path": "/a/x?", "value": shared},
        {"type": "replace", "path": "/b/x?", "value": shared},
    )
    result["a"]["x"]["k"] = "changed"
    assert result["b"]["x"]["k"] == "v"
    assert shared == {"k": "v"}


def test_remove() -> None:
    assert "name" not in apply(doc(), {"type": "remove", "path": "/name"})
    assert apply(doc(), {"type": "remove", "path": "/list/-1"})["list"] == [1, 2]
    result = apply(doc(), {"type": "remove", "path": "/instance_groups/name=a/jobs/name=j1"})
    assert result["instance_groups"][0]["jobs"] == [{"name": "j2"}]
    assert apply(doc(), {"type": "remove", "path": "/missing?"}) == doc()
    assert apply(doc(), {"type": "remove", "path": "/instance_groups/name=zz?/jobs"}) == doc()


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (
            {"type": "replace", "path": "/instance_groups/name=a/job", "value": 1},
            "Expected to find a map key 'job' for path '/instance_groups/name=a/job' "
            "(found map keys: 'jobs', 'name')",
        ),
        (
            {"type": "replace", "path": "/nope/x", "value": 1},
            "Expected to find a map key 'nope' for path '/nope' "
            "(found map keys: 'instance_groups', 'list', 'name')",
        ),
        (
            {"type": "replace", "path": "/instance_groups/name=b/jobs/name=j/x", "value": 1},
            "Expected to find exactly one matching array item for path "
            "'/instance_groups/name=b/jobs/name=j' but found 0",
        ),
        (
            {"type": "replace", "path": "/list/5", "value": 1},
            "Expected to find array index '5' but found array of length '3' for path '/list/5'",
        ),
        (
            {"type": "remove", "path": "/list/-4"},
            "Expected to find array index '-4' but found array of length '3' for path '/list/-4'",
        ),
        (
            {"type": "replace", "path": "/name/x", "value": 1},
            "Expected to find a map at path '/name/x' but found 'string'",
        ),
        (
            {"type": "replace", "path": "/name/0", "value": 1},
            "Expected to find an array at path '/name/0' but found 'string'",
        ),
        (
            {"type": "replace", "path": "/list/-/x", "value": 1},
            "Expected to find a map at path '/list/-' but found '[]interface {}'",
        ),
        (
            {"type": "replace", "path": "/x?/0", "value": 1},
            "Expected to find key, matching index or after last index token at path '/x?/0'",
        ),
        ({"type": "remove", "path": ""}, "Cannot remove entire document"),
        (
            {"type": "remove", "path": "/list/0:before"},
            "Expected to find one of the following modifiers: 'prev', 'next', but found modifier "
            "'patch.BeforeModifier'",
        ),
    ],
)
def test_op_errors_are_worded_like_go_patch(op: dict[str, Any], message: str) -> None:
    with pytest.raises(m.OpsError) as err:
        apply(doc(), op)
    assert str(err.value) == f"Error 'operation [0] in ops.yml failed': {message}"


def test_dash_inside_a_path_is_a_map_key() -> None:
    # go-patch only reads "-" as "after the last index" in the last segment.
    with pytest.raises(m.OpsError, match="Expected to find a map at path '/l/-' but found"):
        apply({"l": [{"a": 1}]}, {"type": "replace", "path": "/l/-/a", "value": 1})


def test_matching_compares_strings_only() -> None:
    # go-patch compares interface{} values: the int 1 is not the path's "1".
    with pytest.raises(m.OpsError, match="but found 0"):
        apply({"l": [{"id": 1}]}, {"type": "replace", "path": "/l/id=1/x", "value": 2})


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"type": "bogus", "path": "/a"}, "Unknown operation [0] with type 'bogus' within"),
        ({"type": "replace", "value": 1}, "Replace operation [0]: Missing path within"),
        ({"type": "replace", "path": "/a"}, "Replace operation [0]: Missing value within"),
        (
            {"type": "remove", "path": "/a", "value": 1},
            "Remove operation [0]: Cannot specify value within",
        ),
        (
            {"type": "remove", "path": "a"},
            "Remove operation [0]: Invalid path: Expected to start with '/' within",
        ),
    ],
)
def test_malformed_ops(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(m.OpsError) as err:
        m.load_ops([definition], name="f.yml")
    assert str(err.value).startswith(f"Building ops: {message}\n")
    # The definition is shown, value redacted, as go-patch does.
    assert '"Error": "operation [0] in f.yml failed"' in str(err.value)
    if "value" in definition:
        assert '"Value": "<redacted>"' in str(err.value)


def test_ops_file_from_path_names_the_file(tmp_path: Path) -> None:
    ops_file = tmp_path / "broken.yml"
    ops_file.write_text("- type: replace\n  path: /missing/key\n  value: 1\n")
    with pytest.raises(m.OpsError) as err:
        m.interpolate("a: 1\n", [ops_file])
    assert str(err.value).startswith(f"Error 'operation [0] in {ops_file} failed': ")
    ops_file.write_text("type: replace\n")
    with pytest.raises(m.OpsError, match="expected a list of operations"):
        m.interpolate("a: 1\n", [ops_file])


# ---------------------------------------------------------------------------------------
# ((variables))
# ---------------------------------------------------------------------------------------


def test_whole_value_keeps_type_and_in_string_substitutes() -> None:
    result = m.interpolate(
        "a: ((map))\nb: ((n))\nc: port-((n))-((s))\nd: ((!s))\ne: ((map.k1.k2))\n((s)): key\n",
        variables={"map": {"k1": {"k2": "deep"}}, "n": 7, "s": "str"},
    )
    assert result == {
        "a": {"k1": {"k2": "deep"}},
        "b": 7,
        "c": "port-7-str",
        "d": "str",
        "e": "deep",
        "str": "key",
    }


def test_unknown_variables_stay_without_var_errs() -> None:
    assert m.interpolate("a: ((x))\nb: pre-((y))\n") == {"a": "((x))", "b": "pre-((y))"}


def test_only_strings_and_ints_inside_strings() -> None:
    with pytest.raises(m.InterpolationError) as err:
        m.interpolate("a: x-((b))\n", variables={"b": True})
    assert str(err.value) == (
        "Invalid type 'bool' for value 'true' and variable 'b'. Supported types for "
        "interpolation within a string are integers and strings."
    )


def test_missing_sub_key() -> None:
    with pytest.raises(m.InterpolationError) as err:
        m.interpolate("a: ((c.nope))\n", variables={"c": {"certificate": "x"}})
    assert str(err.value) == (
        "Finding variable 'c.nope': Expected to find a map key 'nope' for path '/nope' "
        "(found map keys: 'certificate')"
    )


def test_var_errs_and_var_errs_unused() -> None:
    text = "a: ((used))\nb: ((missing2))\nc: ((missing1.certificate))\n"
    values = {"used": 1, "unused2": 2, "unused1": 3}
    with pytest.raises(m.InterpolationError) as err:
        m.interpolate(text, variables=values, var_errs=True)
    assert str(err.value) == "Expected to find variables: missing1\nmissing2"
    with pytest.raises(m.InterpolationError) as err:
        m.interpolate(text, variables=values, var_errs_unused=True)
    assert str(err.value) == "Expected to use variables: unused1\nunused2"
    with pytest.raises(m.InterpolationError) as err:
        m.interpolate(text, variables=values, var_errs=True, var_errs_unused=True)
    assert str(err.value) == (
        "Expected to find variables: missing1\nmissing2\nExpected to use variables: unused1\n"
        "unused2"
    )


def test_vars_files_and_precedence(tmp_path: Path) -> None:
    first = tmp_path / "first.yml"
    second = tmp_path / "second.yml"
    first.write_text("a: from-first\nb: from-first\nc: from-first\n")
    second.write_text("b: from-second\nc: from-second\n")
    result = m.interpolate(
        "a: ((a))\nb: ((b))\nc: ((c))\n", variables={"c": "from-v"}, vars_files=[first, second]
    )
    assert result == {"a": "from-first", "b": "from-second", "c": "from-v"}


def test_definition_options_are_interpolated_and_count_as_used(tmp_path: Path) -> None:
    text = """
ca: ((ca.certificate))
variables:
- name: ca
  type: certificate
  options: {is_ca: true, common_name: ((cn))}
"""
    result = m.interpolate(
        text,
        variables={"cn": "my-ca"},
        vars_store=tmp_path / "s.yml",
        var_errs=True,
        var_errs_unused=True,
    )
    cert = x509.load_pem_x509_certificate(result["ca"].encode())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "my-ca"
    # A definition that needs a missing variable is reported through that variable.
    with pytest.raises(m.InterpolationError) as err:
        m.interpolate(text, vars_store=tmp_path / "other.yml", var_errs=True)
    assert str(err.value) == "Expected to find variables: cn"


def test_recursion_is_detected(tmp_path: Path) -> None:
    text = "a: ((p))\nvariables:\n- name: p\n  type: password\n  options: {length: ((p))}\n"
    with pytest.raises(m.InterpolationError, match="Detected recursion"):
        m.interpolate(text, vars_store=tmp_path / "s.yml")


def test_parse_var_kv() -> None:
    assert m.parse_var_kv("a=1") == ("a", 1)
    assert m.parse_var_kv("a=x=y") == ("a", "x=y")
    assert m.parse_var_kv("a={k: v}") == ("a", {"k": "v"})
    assert m.parse_var_kv("a=line1\nline2") == ("a", "line1\nline2")
    for bad, msg in (
        ("a", "format 'name=value'"),
        ("=1", "non-empty name"),
        ("a=", "non-empty value"),
    ):
        with pytest.raises(m.InterpolationError, match=msg):
            m.parse_var_kv(bad)


# ---------------------------------------------------------------------------------------
# Vars store and generated values
# ---------------------------------------------------------------------------------------

GENERATED_MANIFEST = """
pw: ((pw))
variables:
- name: pw
  type: password
- name: undeclared_elsewhere
  type: ""
"""


def test_password_is_generated_stored_and_reused(tmp_path: Path) -> None:
    store = tmp_path / "creds.yml"
    first = m.interpolate(GENERATED_MANIFEST, vars_store=store)
    password = first["pw"]
    assert len(password) == 20 and password.isalnum() and password == password.lower()
    assert yaml.safe_load(store.read_text()) == {"pw": password}
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert m.interpolate(GENERATED_MANIFEST, vars_store=store)["pw"] == password
    # Found definitions leave `variables:`; the ones nobody could fill stay.
    assert first["variables"] == [{"name": "undeclared_elsewhere", "type": ""}]


def test_typed_variables_without_a_store_are_missing() -> None:
    with pytest.raises(m.InterpolationError, match="Expected to find variables: pw"):
        m.interpolate(GENERATED_MANIFEST, var_errs=True)


def test_value_given_with_v_wins_over_generation(tmp_path: Path) -> None:
    result = m.interpolate(
        GENERATED_MANIFEST, variables={"pw": "given"}, vars_store=tmp_path / "s.yml"
    )
    assert result["pw"] == "given"
    assert not (tmp_path / "s.yml").exists()


TLS_MANIFEST = """
tls: ((leaf))
variables:
- name: ca
  type: certificate
  options: {is_ca: true, common_name: test-ca}
- name: leaf
  type: certificate
  options:
    ca: ca
    common_name: leaf
    alternative_names: ["*.group.default.dep.bosh", "10.0.0.5"]
    extended_key_usage: [server_auth, client_auth]
    duration: 30
"""


def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_leaf_certificate_verifies_against_its_ca(tmp_path: Path) -> None:
    result = m.interpolate(
        TLS_MANIFEST, vars_store=tmp_path / "s.yml", var_errs=True, var_errs_unused=True
    )
    tls = result["tls"]
    ca = load_cert(tls["ca"])
    leaf = load_cert(tls["certificate"])
    stored = yaml.safe_load((tmp_path / "s.yml").read_text())
    assert stored["ca"]["certificate"] == tls["ca"] == stored["ca"]["ca"]

    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.group.default.dep.bosh"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=30)

    key = serialization.load_pem_private_key(tls["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, rsa.RSAPublicKey)
    assert key.public_key().public_numbers() == leaf_key.public_numbers()
    assert tls["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")

    builder = PolicyBuilder().store(Store([ca]))
    server = builder.build_server_verifier(x509.DNSName("abc-123.group.default.dep.bosh"))
    server.verify(leaf, [])
    builder.build_client_verifier().verify(leaf, [])
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName("abc.other.default.dep.bosh")).verify(leaf, [])


def test_leaf_defaults_to_server_auth_and_intermediate_ca(tmp_path: Path) -> None:
    text = """
a: ((leaf.certificate))
b: ((inter.certificate))
variables:
- {name: root, type: certificate, options: {is_ca: true, common_name: root}}
- {name: inter, type: certificate, options: {is_ca: true, ca: root, common_name: inter}}
- {name: leaf, type: certificate, options: {ca: inter, common_name: leaf.example}}
"""
    result = m.interpolate(text, vars_store=tmp_path / "s.yml")
    root = load_cert(yaml.safe_load((tmp_path / "s.yml").read_text())["root"]["certificate"])
    inter = load_cert(result["b"])
    leaf = load_cert(result["a"])
    assert inter.issuer == root.subject
    assert leaf.issuer == inter.subject
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{common_name: x}", "Missing required CA name"),
        (
            "{ca: nope, common_name: x}",
            "Loading certificates: Expected to find variable 'nope' with a certificate",
        ),
        (
            "{is_ca: true, extended_key_usage: [code_signing]}",
            "Unsupported extended key usage value: code_signing",
        ),
        ("{is_ca: true, colour: blue}", "unsupported option 'colour'"),
    ],
)
def test_certificate_errors(tmp_path: Path, options: str, message: str) -> None:
    text = f"a: ((c))\nvariables:\n- name: c\n  type: certificate\n  options: {options}\n"
    with pytest.raises(m.InterpolationError) as err:
        m.interpolate(text, vars_store=tmp_path / "s.yml")
    assert (
        "Getting all variables from variable definitions sections: Generating variable 'c': "
        in (str(err.value))
    )
    assert message in str(err.value)


def test_rsa_and_ssh_shapes(tmp_path: Path) -> None:
    text = "r: ((r))\ns: ((s))\nvariables:\n- {name: r, type: rsa}\n- {name: s, type: ssh}\n"
    result = m.interpolate(text, vars_store=tmp_path / "s.yml")
    assert set(result["r"]) == {"private_key", "public_key"}
    assert result["r"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert set(result["s"]) == {"private_key", "public_key", "public_key_fingerprint"}
    assert result["s"]["public_key"].startswith("ssh-rsa ")
    assert len(result["s"]["public_key_fingerprint"].split(":")) == 16


def test_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(m.InterpolationError, match="Unsupported value type: gpg"):
        m.interpolate(
            "a: ((g))\nvariables:\n- {name: g, type: gpg}\n", vars_store=tmp_path / "s.yml"
        )


def test_generator_refuses_bad_password_length() -> None:
    with pytest.raises(v.VariableError, match="length must be a positive integer"):
        v.generate("password", {"length": "long"})


# ---------------------------------------------------------------------------------------
# Which engine ran
# ---------------------------------------------------------------------------------------


def test_python_engine_when_no_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "bosh_cli", lambda: None)
    result = m.interpolate_preferring_cli("a: ((b))\n", variables={"b": 1})
    assert result == m.Interpolated({"a": 1}, "python")


def test_cli_engine_when_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A stand-in `bosh` proves the argv and that the CLI's answer is what comes back.
    fake = tmp_path / "bosh"
    log = tmp_path / "argv"
    fake.write_text(f'#!/bin/sh\necho "$@" > {log}\necho "from: cli"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(m, "bosh_cli", lambda: str(fake))
    result = m.interpolate_preferring_cli(
        "a: ((b))\n",
        ops_files=[[]],
        variables={"b": 1},
        vars_store=tmp_path / "s.yml",
        var_errs=True,
        var_errs_unused=True,
    )
    assert result == m.Interpolated({"from": "cli"}, "bosh")
    argv = log.read_text().split()
    assert argv[0] == "int" and "-o" in argv and "-l" in argv
    assert argv[-4:] == ["--vars-store", str(tmp_path / "s.yml"), "--var-errs", "--var-errs-unused"]


def test_dump_sorts_keys_and_round_trips() -> None:
    data = {"b": "multi\nline\n", "a": [1, {"z": 1, "y": 2}]}
    text = m.dump(data)
    assert text.startswith("a:")
    assert "b: |" in text
    assert yaml.safe_load(text) == data
