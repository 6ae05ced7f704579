"""Manifest interpolation with the semantics of `bosh int` (bosh-cli v7).

Two layers, applied in the CLI's order:

1. ops files (go-patch, `github.com/cppforlife/go-patch/patch`): `replace` and `remove`
   with pointer paths (`/a/b`, `/name=x`, `/0`, `/-1`, `/0:before`, `/-`, `?` optional);
2. `((variables))` (bosh-cli `director/template/template.go`): whole-value and in-string
   substitution, `((var.key))` lookups, `((!literal))`, `variables:` definitions generated
   into a vars store, and the `--var-errs` / `--var-errs-unused` checks.

Error messages keep the CLI's wording so that an operator sees the same text whichever
engine ran. `interpolate_preferring_cli` runs the real `bosh int` when it is on PATH and
this module otherwise, and says which one it was.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import Literal

import yaml

from localbosh import variables as _variables

__all__ = [
    "Engine",
    "Interpolated",
    "InterpolationError",
    "Op",
    "OpsError",
    "apply_ops",
    "bosh_cli",
    "bosh_int",
    "dump",
    "find",
    "format_pointer",
    "interpolate",
    "interpolate_preferring_cli",
    "load_ops",
    "parse_pointer",
    "parse_var_kv",
]

Engine = Literal["bosh", "python"]
OpsSource = Path | str | Sequence[Mapping[str, Any]]


class InterpolationError(Exception):
    """The manifest cannot be interpolated; the message is worded like the bosh CLI's."""


class OpsError(InterpolationError):
    """An ops file is malformed or one of its operations does not apply."""


# ---------------------------------------------------------------------------------------
# Pointers (go-patch pointer.go)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Root:
    pass


@dataclass(frozen=True)
class _Index:
    index: int
    modifiers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _AfterLast:
    pass


@dataclass(frozen=True)
class _Matching:
    key: str
    value: str
    optional: bool = False
    modifiers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Key:
    key: str
    optional: bool = False


Token = _Root | _Index | _AfterLast | _Matching | _Key

_MODIFIERS = ("prev", "next", "before", "after")
_DECODE = {"~0": "~", "~1": "/", "~2": "?", "~3": "=", "~7": ":"}
_ENCODE = {"~": "~0", "/": "~1", "?": "~2", "=": "~3", ":": "~7"}
_INT = re.compile(r"[+-]?[0-9]+")


def _decode(text: str) -> str:
    return re.sub(r"~[01237]", lambda m: _DECODE[m.group(0)], text)


def _encode(text: str) -> str:
    return re.sub(r"[~/?=:]", lambda m: _ENCODE[m.group(0)], text)


def parse_pointer(path: str) -> list[Token]:
    """Parse a go-patch path; raises OpsError with go-patch's wording."""
    tokens: list[Token] = [_Root()]
    if path == "":
        return tokens
    if not path.startswith("/"):
        raise OpsError("Expected to start with '/'")
    pieces = path.split("/")[1:]
    # Once a segment is optional, every later one is too (`/a?/b/c` creates b and c).
    optional = False
    for i, raw in enumerate(pieces):
        is_last = i == len(pieces) - 1
        tok, *mods = raw.split(":")
        for mod in mods:
            if mod not in _MODIFIERS:
                raise OpsError(
                    "Expected to find one of the following modifiers: 'prev', 'next', "
                    f"'before', or 'after' but found '{mods[0]}'"
                )
        modifiers = tuple(mods)
        if is_last and tok == "-":
            if modifiers:
                raise OpsError("Expected not to find any modifiers with after last index token")
            tokens.append(_AfterLast())
            continue
        if _INT.fullmatch(tok):
            tokens.append(_Index(int(tok), modifiers))
            continue
        if tok.endswith("?"):
            optional = True
            tok = tok[:-1]
        if "=" in tok:
            key, value = tok.split("=", 1)
            tokens.append(_Matching(_decode(key), _decode(value), optional, modifiers))
            continue
        if modifiers:
            raise OpsError("Expected not to find any modifiers with key token")
        tokens.append(_Key(_decode(tok), optional))
    return tokens


def format_pointer(tokens: Sequence[Token]) -> str:
    parts: list[str] = []
    optional_shown = False
    for tok in tokens:
        if isinstance(tok, _Root):
            parts.append("")
        elif isinstance(tok, _Index):
            parts.append(f"{tok.index}" + "".join(f":{m}" for m in tok.modifiers))
        elif isinstance(tok, _AfterLast):
            parts.append("-")
        elif isinstance(tok, _Matching):
            value = _encode(tok.value)
            if tok.optional and not optional_shown:
                value += "?"
                optional_shown = True
            mods = "".join(f":{m}" for m in tok.modifiers)
            parts.append(f"{_encode(tok.key)}={value}{mods}")
        else:
            key = _encode(tok.key)
            if tok.optional and not optional_shown:
                key += "?"
                optional_shown = True
            parts.append(key)
    return "/".join(parts)


# ---------------------------------------------------------------------------------------
# Errors worded like go-patch's errs.go
# ---------------------------------------------------------------------------------------


def _go_type(obj: Any) -> str:
    """The `%T` name Go prints for a value decoded by yaml.v2."""
    if obj is None:
        return "<nil>"
    if isinstance(obj, bool):
        return "bool"
    if isinstance(obj, int):
        return "int"
    if isinstance(obj, float):
        return "float64"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, list):
        return "[]interface {}"
    if isinstance(obj, dict):
        return "map[interface {}]interface {}"
    return type(obj).__name__


def _mismatch(kind: str, tokens: Sequence[Token], obj: Any) -> OpsError:
    return OpsError(
        f"Expected to find {kind} at path '{format_pointer(tokens)}' but found '{_go_type(obj)}'"
    )


def _missing_key(key: str, tokens: Sequence[Token], obj: dict[Any, Any]) -> OpsError:
    keys = sorted(k for k in obj if isinstance(k, str))
    siblings = "found map keys: '" + "', '".join(keys) + "'" if obj else "found no other map keys"
    return OpsError(
        f"Expected to find a map key '{key}' for path '{format_pointer(tokens)}' ({siblings})"
    )


def _missing_index(idx: int, array: list[Any], tokens: Sequence[Token]) -> OpsError:
    return OpsError(
        f"Expected to find array index '{idx}' but found array of length '{len(array)}' "
        f"for path '{format_pointer(tokens)}'"
    )


def _not_one_match(tokens: Sequence[Token], count: int) -> OpsError:
    return OpsError(
        "Expected to find exactly one matching array item for path "
        f"'{format_pointer(tokens)}' but found {count}"
    )


def _unexpected(tok: Token, tokens: Sequence[Token]) -> OpsError:
    return OpsError(
        f"Expected to not find token 'patch.{type(tok).__name__.strip('_')}Token' "
        f"at path '{format_pointer(tokens)}'"
    )


def _concrete_index(
    idx: int, modifiers: Sequence[str], array: list[Any], tokens: Sequence[Token]
) -> int:
    """go-patch ArrayIndex.Concrete: apply :prev/:next, then resolve negative indices."""
    result = idx
    for mod in modifiers:
        if mod == "prev":
            result -= 1
        elif mod == "next":
            result += 1
        else:
            name = "BeforeModifier" if mod == "before" else "AfterModifier"
            raise OpsError(
                "Expected to find one of the following modifiers: 'prev', 'next', "
                f"but found modifier 'patch.{name}'"
            )
    if result >= len(array) or (-result) - 1 >= len(array):
        raise _missing_index(result, array, tokens)
    return result + len(array) if result < 0 else result


def _insertion(
    idx: int, modifiers: Sequence[str], array: list[Any], tokens: Sequence[Token]
) -> tuple[int, bool]:
    """go-patch ArrayInsertion.Concrete: (index, insert?) honouring :before/:after."""
    plain: list[str] = []
    before = after = False
    for mod in modifiers:
        if before or after:
            which = "before" if before else "after"
            name = {"prev": "Prev", "next": "Next", "before": "Before", "after": "After"}[mod]
            raise OpsError(
                f"Expected to not find any modifiers after '{which}' modifier, "
                f"but found modifier 'patch.{name}Modifier'"
            )
        if mod == "before":
            before = True
        elif mod == "after":
            after = True
        else:
            plain.append(mod)
    num = _concrete_index(idx, plain, array, tokens)
    if after and num != len(array):
        num += 1
    return num, before or after


def _matches(array: list[Any], tok: _Matching) -> list[int]:
    # Go compares interface{} values: an int 1 never equals the path's string "1".
    return [
        i
        for i, item in enumerate(array)
        if isinstance(item, dict)
        and isinstance(item.get(tok.key), str)
        and item[tok.key] == tok.value
    ]


# ---------------------------------------------------------------------------------------
# Operations (go-patch replace_op.go, remove_op.go, find_op.go)
# ---------------------------------------------------------------------------------------


@dataclass
class Op:
    kind: Literal["replace", "remove"]
    path: str
    tokens: list[Token]
    value: Any = None
    error: str | None = None

    def apply(self, doc: Any) -> Any:
        try:
            if self.kind == "replace":
                return _replace(doc, self.tokens, self.path, self.value)
            return _remove(doc, self.tokens)
        except OpsError as exc:
            if self.error is None:
                raise
            raise OpsError(f"Error '{self.error}': {exc}") from exc


def _replace(doc: Any, tokens: list[Token], path: str, value: Any) -> Any:
    if len(tokens) == 1:
        return copy.deepcopy(value)

    # Go's append may reallocate, hence its PrevUpdate callbacks; Python lists grow in
    # place, so walking down and mutating is enough.
    obj = doc
    for i, tok in enumerate(tokens[1:]):
        here = tokens[: i + 2]
        is_last = i == len(tokens) - 2
        if isinstance(tok, _Index):
            if not isinstance(obj, list):
                raise _mismatch("an array", here, obj)
            if is_last:
                num, insert = _insertion(tok.index, tok.modifiers, obj, here)
                if insert:
                    obj.insert(num, copy.deepcopy(value))
                else:
                    obj[num] = copy.deepcopy(value)
            else:
                num = _concrete_index(tok.index, tok.modifiers, obj, here)
                obj = obj[num]
        elif isinstance(tok, _AfterLast):
            if not isinstance(obj, list):
                raise _mismatch("an array", here, obj)
            if not is_last:
                raise OpsError(f"Expected after last index token to be last in path '{path}'")
            obj.append(copy.deepcopy(value))
        elif isinstance(tok, _Matching):
            if not isinstance(obj, list):
                raise _mismatch("an array", here, obj)
            idxs = _matches(obj, tok)
            if tok.optional and not idxs:
                if is_last:
                    obj.append(copy.deepcopy(value))
                else:
                    created: dict[Any, Any] = {tok.key: tok.value}
                    obj.append(created)
                    obj = created
                continue
            if len(idxs) != 1:
                raise _not_one_match(here, len(idxs))
            if is_last:
                num, insert = _insertion(idxs[0], tok.modifiers, obj, here)
                if insert:
                    obj.insert(num, copy.deepcopy(value))
                else:
                    obj[num] = copy.deepcopy(value)
            else:
                num = _concrete_index(idxs[0], tok.modifiers, obj, here)
                obj = obj[num]
        elif isinstance(tok, _Key):
            if not isinstance(obj, dict):
                raise _mismatch("a map", here, obj)
            found = tok.key in obj
            if not found and not tok.optional:
                raise _missing_key(tok.key, here, obj)
            if is_last:
                obj[tok.key] = copy.deepcopy(value)
                continue
            if not found:
                nxt = tokens[i + 2]
                if isinstance(nxt, _AfterLast | _Matching):
                    obj[tok.key] = []
                elif isinstance(nxt, _Key):
                    obj[tok.key] = {}
                else:
                    raise OpsError(
                        "Expected to find key, matching index or after last index token at path "
                        f"'{format_pointer(tokens[: i + 3])}'"
                    )
            obj = obj[tok.key]
        else:
            raise _unexpected(tok, here)
    return doc


def _remove(doc: Any, tokens: list[Token]) -> Any:
    if len(tokens) == 1:
        raise OpsError("Cannot remove entire document")
    obj = doc
    for i, tok in enumerate(tokens[1:]):
        here = tokens[: i + 2]
        is_last = i == len(tokens) - 2
        if isinstance(tok, _Index | _Matching):
            if not isinstance(obj, list):
                raise _mismatch("an array", here, obj)
            if isinstance(tok, _Matching):
                idxs = _matches(obj, tok)
                if tok.optional and not idxs:
                    return doc
                if len(idxs) != 1:
                    raise _not_one_match(here, len(idxs))
                num = _concrete_index(idxs[0], tok.modifiers, obj, here)
            else:
                num = _concrete_index(tok.index, tok.modifiers, obj, here)
            if is_last:
                del obj[num]
            else:
                obj = obj[num]
        elif isinstance(tok, _Key):
            if not isinstance(obj, dict):
                raise _mismatch("a map", here, obj)
            if tok.key not in obj:
                if tok.optional:
                    return doc
                raise _missing_key(tok.key, here, obj)
            if is_last:
                del obj[tok.key]
            else:
                obj = obj[tok.key]
        else:
            raise _unexpected(tok, here)
    return doc


def find(doc: Any, path: str | Sequence[Token]) -> Any:
    """go-patch FindOp: the value at `path` (what `bosh int --path` prints)."""
    tokens = parse_pointer(path) if isinstance(path, str) else list(path)
    obj = doc
    for i, tok in enumerate(tokens[1:]):
        here = tokens[: i + 2]
        if isinstance(tok, _Index | _Matching):
            if not isinstance(obj, list):
                raise _mismatch("an array", here, obj)
            if isinstance(tok, _Matching):
                idxs = _matches(obj, tok)
                if tok.optional and not idxs:
                    obj = {tok.key: tok.value}
                    continue
                if len(idxs) != 1:
                    raise _not_one_match(here, len(idxs))
                obj = obj[_concrete_index(idxs[0], tok.modifiers, obj, here)]
            else:
                obj = obj[_concrete_index(tok.index, tok.modifiers, obj, here)]
        elif isinstance(tok, _Key):
            if not isinstance(obj, dict):
                raise _mismatch("a map", here, obj)
            if tok.key not in obj:
                if not tok.optional:
                    raise _missing_key(tok.key, here, obj)
                return None
            obj = obj[tok.key]
        else:
            raise _unexpected(tok, here)
    return obj


def _fmt_op_def(definition: Mapping[str, Any]) -> str:
    # go-patch prints the failing definition as indented JSON with the value redacted.
    shown: dict[str, Any] = {}
    for key, go_key in (("type", "Type"), ("path", "Path"), ("value", "Value"), ("error", "Error")):
        if definition.get(key) is not None:
            shown[go_key] = "<redacted>" if key == "value" else definition[key]
    return json.dumps(shown, indent=2)


def load_ops(source: OpsSource, name: str | None = None) -> list[Op]:
    """Read an ops file (path, YAML text or parsed list) into operations.

    Like the CLI, every operation is labelled "operation [i] in FILE failed" so that an
    error while applying it says which file and which entry.
    """
    label = name
    if isinstance(source, Path):
        label = label or str(source)
        try:
            text = source.read_text()
        except OSError as exc:
            raise OpsError(f"Reading ops file '{source}': {exc}") from exc
        defs: Any = _load_yaml(text, f"Deserializing ops file '{source}'")
    elif isinstance(source, str):
        defs = _load_yaml(source, f"Deserializing ops file '{label or '<text>'}'")
    else:
        defs = list(source)
    label = label or "<ops>"
    if defs is None:
        defs = []
    if not isinstance(defs, list):
        raise OpsError(f"Deserializing ops file '{label}': expected a list of operations")

    ops: list[Op] = []
    for i, raw in enumerate(defs):
        if not isinstance(raw, Mapping):
            raise OpsError(f"Deserializing ops file '{label}': operation [{i}] is not a map")
        definition = dict(raw)
        definition["error"] = f"operation [{i}] in {label} failed"
        kind = definition.get("type")
        path = definition.get("path")
        where = _fmt_op_def(definition)
        if kind not in ("replace", "remove"):
            raise OpsError(
                f"Building ops: Unknown operation [{i}] with type '{kind or ''}' within\n{where}"
            )
        title = "Replace" if kind == "replace" else "Remove"
        if path is None:
            raise OpsError(f"Building ops: {title} operation [{i}]: Missing path within\n{where}")
        if kind == "replace" and definition.get("value") is None:
            raise OpsError(f"Building ops: {title} operation [{i}]: Missing value within\n{where}")
        if kind == "remove" and definition.get("value") is not None:
            raise OpsError(
                f"Building ops: {title} operation [{i}]: Cannot specify value within\n{where}"
            )
        try:
            tokens = parse_pointer(str(path))
        except OpsError as exc:
            raise OpsError(
                f"Building ops: {title} operation [{i}]: Invalid path: {exc} within\n{where}"
            ) from exc
        ops.append(Op(kind, str(path), tokens, definition.get("value"), definition["error"]))
    return ops


def apply_ops(doc: Any, ops: Sequence[Op]) -> Any:
    for op in ops:
        doc = op.apply(doc)
    return doc


# ---------------------------------------------------------------------------------------
# Variables (bosh-cli director/template/template.go)
# ---------------------------------------------------------------------------------------

# Go's `\(\((!?[-/\.\w\pL]+)\)\)`; Python's \w already covers Unicode letters.
_VAR = re.compile(r"\(\((!?[-/.\w]+)\)\)")


def _load_yaml(text: str, context: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InterpolationError(f"{context}: {exc}") from exc


def parse_var_kv(arg: str) -> tuple[str, Any]:
    """`-v NAME=VALUE`: the value is YAML unless it only parses as a plain string."""
    name, sep, raw = arg.partition("=")
    if not sep:
        raise InterpolationError(f"Expected var '{arg}' to be in format 'name=value'")
    if not name:
        raise InterpolationError(f"Expected var '{arg}' to specify non-empty name")
    if not raw:
        raise InterpolationError(f"Expected var '{arg}' to specify non-empty value")
    parsed = _load_yaml(raw, f"Deserializing variables '{arg}'")
    # The CLI keeps the raw text for strings: YAML parsing would fold newlines.
    return name, raw if isinstance(parsed, str) else parsed


@dataclass
class _Sources:
    """MultiVars: static values (-l, -v) first, then the vars store (which generates)."""

    static: dict[str, Any]
    store: _variables.VarsStore | None

    def get(self, name: str, var_type: str = "", options: Any = None) -> tuple[Any, bool]:
        if name in self.static:
            return self.static[name], True
        if self.store is None:
            return None, False
        value, found = self.store.get(name)
        if found:
            return value, True
        if not var_type:
            return None, False
        try:
            value = _variables.generate(var_type, options, self._load_ca)
        except _variables.VariableError as exc:
            raise InterpolationError(f"Generating variable '{name}': {exc}") from exc
        self.store.set(name, value)
        return value, True

    def _load_ca(self, name: str) -> Any:
        value, found = self.get(name)
        return value if found else None

    def names(self) -> set[str]:
        names = set(self.static)
        if self.store is not None:
            names.update(self.store.names())
        return names


@dataclass
class _Definition:
    name: str
    type: str
    options: Any


def _definitions(doc: Any) -> list[_Definition]:
    if not isinstance(doc, dict) or doc.get("variables") is None:
        return []
    raw = doc["variables"]
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise InterpolationError("Expected 'variables' to be a list of variable definitions")
    return [
        _Definition(str(d.get("name") or ""), str(d.get("type") or ""), d.get("options"))
        for d in raw
    ]


@dataclass
class _Tracker:
    sources: _Sources
    defs: list[_Definition]
    visited_all: set[str]
    visiting: frozenset[str] = frozenset()
    missing: set[str] = field(default_factory=set)

    def get(self, name: str) -> tuple[Any, bool]:
        self.visited_all.add(name)
        if name in self.visiting:
            raise InterpolationError("Detected recursion")
        scoped = _Tracker(self.sources, self.defs, self.visited_all, self.visiting | {name})
        definition = next((d for d in self.defs if d.name == name), _Definition(name, "", None))
        try:
            options = _interpolate_node(copy.deepcopy(definition.options), scoped)
        except InterpolationError as exc:
            raise InterpolationError(
                f"Interpolating variable '{name}' definition options: {exc}"
            ) from exc
        if scoped.missing:
            # A definition whose options need a missing variable is reported through that
            # variable, not itself (as the CLI does).
            self.missing |= scoped.missing
            return None, False
        value, found = self.sources.get(name, definition.type, options)
        if not found:
            self.missing.add(name)
        return value, found

    def lookup(self, name: str) -> tuple[Any, bool]:
        """`((a.b.c))`: variable `a`, then keys b and c inside its value."""
        first, *rest = name.split(".")
        value, found = self.get(first)
        if not found or not rest:
            return value, found
        return find(value, [_Root(), *(_Key(k) for k in rest)]), True


def _interpolate_node(node: Any, tracker: _Tracker) -> Any:
    if isinstance(node, dict):
        result: dict[Any, Any] = {}
        for key, value in node.items():
            new_value = _interpolate_node(value, tracker)
            new_key = _interpolate_node(key, tracker)
            if isinstance(new_key, dict | list):
                raise InterpolationError(f"Expected map key '{key}' to interpolate to a scalar")
            result[new_key] = new_value
        return result
    if isinstance(node, list):
        return [_interpolate_node(item, tracker) for item in node]
    if isinstance(node, str):
        text = node
        for match in _VAR.finditer(node):
            name = match.group(1).removeprefix("!")
            try:
                value, found = tracker.lookup(name)
            except InterpolationError as exc:
                raise InterpolationError(f"Finding variable '{name}': {exc}") from exc
            if not found:
                continue
            if _VAR.fullmatch(text):
                # A whole-value reference keeps the value's type (map, list, int...).
                return copy.deepcopy(value)
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise InterpolationError(
                    f"Invalid type '{_go_type(value)}' for value '{_go_value(value)}' and variable "
                    f"'{name}'. Supported types for interpolation within a string are integers "
                    "and strings."
                )
            text = text.replace(f"(({name}))", str(value)).replace(f"((!{name}))", str(value))
        return text
    return node


def _go_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    return str(value)


def _read_manifest(manifest: str | Path | Mapping[str, Any]) -> Any:
    if isinstance(manifest, Path):
        try:
            return _load_yaml(manifest.read_text(), f"Reading manifest '{manifest}'")
        except OSError as exc:
            raise InterpolationError(f"Reading manifest '{manifest}': {exc}") from exc
    if isinstance(manifest, str):
        return _load_yaml(manifest, "Deserializing manifest")
    return copy.deepcopy(dict(manifest))


def interpolate(
    manifest: str | Path | Mapping[str, Any],
    ops_files: Sequence[OpsSource] = (),
    variables: Mapping[str, Any] | None = None,
    vars_store: Path | None = None,
    var_errs: bool = False,
    var_errs_unused: bool = False,
    vars_files: Sequence[Path] = (),
) -> dict[str, Any]:
    """`bosh int MANIFEST -o OPS... -l FILE... -v K=V... --vars-store S [--var-errs[-unused]]`.

    `manifest` is YAML text, a path, or an already parsed mapping (left untouched).
    `variables` are typed values (what `-v` gives after YAML parsing; see parse_var_kv);
    they override `vars_files`, which override later ones in order, as in the CLI.
    """
    doc = _read_manifest(manifest)
    for source in ops_files:
        doc = apply_ops(doc, load_ops(source))

    static: dict[str, Any] = {}
    for path in vars_files:
        loaded = _load_yaml(path.read_text(), f"Deserializing variables file '{path}'")
        if loaded is not None and not isinstance(loaded, dict):
            raise InterpolationError(f"Deserializing variables file '{path}': expected a map")
        static.update({str(k): v for k, v in (loaded or {}).items()})
    static.update(dict(variables or {}))
    sources = _Sources(static, _variables.VarsStore(vars_store) if vars_store else None)
    defs = _definitions(doc)
    tracker = _Tracker(sources, defs, visited_all=set())

    # Typed definitions first, in order, so that a leaf can find the CA generated above it.
    for definition in defs:
        if definition.type:
            try:
                tracker.get(definition.name)
            except InterpolationError as exc:
                raise InterpolationError(
                    f"Getting all variables from variable definitions sections: {exc}"
                ) from exc

    doc = _interpolate_node(doc, tracker)

    # The CLI drops every definition whose value it found: the output is what a Director
    # would receive with those values already filled in.
    for definition in defs:
        _, found = tracker.get(definition.name)
        if found:
            doc = _remove(doc, [_Root(), _Key("variables"), _Matching("name", definition.name)])

    errors: list[str] = []
    if var_errs and tracker.missing:
        errors.append("Expected to find variables: " + "\n".join(sorted(tracker.missing)))
    if var_errs_unused:
        unused = sources.names() - tracker.visited_all
        if unused:
            errors.append("Expected to use variables: " + "\n".join(sorted(unused)))
    if errors:
        raise InterpolationError("\n".join(errors))
    if not isinstance(doc, dict):
        raise InterpolationError(f"Expected the manifest to be a map but found '{_go_type(doc)}'")
    return doc


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # PEM blocks and keys stay readable (and diffable) as literal blocks, as bosh prints them.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump(doc: Any) -> str:
    """YAML as `bosh int` prints it: keys sorted, block style, multi-line strings as blocks."""
    return yaml.dump(doc, Dumper=_Dumper, default_flow_style=False, sort_keys=True)


# ---------------------------------------------------------------------------------------
# The real CLI, preferred when present
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interpolated:
    manifest: dict[str, Any]
    engine: Engine


def bosh_cli() -> str | None:
    """Path of the bosh CLI on PATH, or None."""
    return shutil.which("bosh")


def bosh_int(
    manifest: str | Path | Mapping[str, Any],
    ops_files: Sequence[OpsSource] = (),
    variables: Mapping[str, Any] | None = None,
    vars_store: Path | None = None,
    var_errs: bool = False,
    var_errs_unused: bool = False,
    vars_files: Sequence[Path] = (),
    bosh: str | None = None,
) -> dict[str, Any]:
    """The same contract as `interpolate`, run by the real `bosh int`."""
    cli = bosh or bosh_cli()
    if cli is None:
        raise InterpolationError("bosh CLI not found on PATH")
    with tempfile.TemporaryDirectory(prefix="bosh-int-") as tmp:
        tmpdir = Path(tmp)
        if isinstance(manifest, Path):
            manifest_path = manifest
        else:
            manifest_path = tmpdir / "manifest.yml"
            text = manifest if isinstance(manifest, str) else dump(dict(manifest))
            manifest_path.write_text(text)
        argv = [cli, "int", str(manifest_path)]
        for i, source in enumerate(ops_files):
            if isinstance(source, Path):
                argv += ["-o", str(source)]
                continue
            ops_path = tmpdir / f"ops-{i}.yml"
            ops_path.write_text(source if isinstance(source, str) else dump(list(source)))
            argv += ["-o", str(ops_path)]
        for path in vars_files:
            argv += ["-l", str(path)]
        if variables:
            # A vars file keeps every value's type exactly; `-v` would re-parse strings
            # such as "true" or "1" as YAML. Passed last, it overrides like `-v` does.
            vars_path = tmpdir / "vars.yml"
            vars_path.write_text(dump(dict(variables)))
            argv += ["-l", str(vars_path)]
        if vars_store is not None:
            argv += ["--vars-store", str(vars_store)]
        if var_errs:
            argv.append("--var-errs")
        if var_errs_unused:
            argv.append("--var-errs-unused")
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InterpolationError((proc.stdout + proc.stderr).strip())
    doc = yaml.safe_load(proc.stdout)
    if not isinstance(doc, dict):
        raise InterpolationError(f"bosh int printed no manifest map: {proc.stdout[:200]!r}")
    return doc


def interpolate_preferring_cli(
    manifest: str | Path | Mapping[str, Any],
    ops_files: Sequence[OpsSource] = (),
    variables: Mapping[str, Any] | None = None,
    vars_store: Path | None = None,
    var_errs: bool = False,
    var_errs_unused: bool = False,
    vars_files: Sequence[Path] = (),
) -> Interpolated:
    """Run `bosh int` when the CLI is on PATH, this module otherwise; say which ran."""
    args = (manifest, ops_files, variables, vars_store, var_errs, var_errs_unused, vars_files)
    cli = bosh_cli()
    if cli is not None:
        return Interpolated(bosh_int(*args, bosh=cli), "bosh")
    return Interpolated(interpolate(*args), "python")
