"""botocore's SageMaker service model: the API's own rules (members, required, min/max, enums,
patterns), kept current by AWS, read where a request is checked and describe.json is shaped.

botocore comes with the ``local`` extra (``pip install 'smsupervise[local]'``; boto3, the ``s3``
extra, brings it too). Without it ``service()`` is None and the runner checks the request with its
own rules only, saying so once. Nothing is loaded at import: the model (a few MB of JSON) is read
on first use and kept.

``check(value, shape)`` walks a value against a botocore shape and returns every ``Finding`` (the
JSON path, the rule broken, the fix), as the service would refuse the request; the same walk checks
describe.json against DescribeTrainingJob's output shape.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from typing import Any, NamedTuple

# Java's \p{...} classes in a few of the model's patterns, as Python's re spells them (close enough
# for a check: letters and spaces beyond ASCII are allowed wholesale).
_JAVA_CLASSES = {
    r"\p{Alnum}": "A-Za-z0-9",
    r"\p{L}": "A-Za-z\u00c0-\uffff",
    r"\p{Z}": " \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000",
    r"\p{N}": "0-9",
}


ENUM_SHOWN = 8  # an enum's values listed in a fix (InstanceType has hundreds)


class Finding(NamedTuple):
    """One rule of the API a value breaks."""

    path: str  # e.g. InputDataConfig[1].DataSource.S3DataSource.S3Uri
    rule: str
    fix: str
    kind: str = "type"  # type | unknown | required | size | enum | pattern | range


@functools.cache
def service() -> Any | None:
    """botocore's SageMaker ``ServiceModel``, or None without botocore."""
    try:
        import botocore.loaders  # noqa: PLC0415 (optional dependency)
        import botocore.model  # noqa: PLC0415
    except ImportError:
        return None
    return botocore.model.ServiceModel(botocore.loaders.Loader().load_service_model("sagemaker", "service-2"))


def version() -> str | None:
    """botocore's version (the model's date), or None without it."""
    try:
        import botocore  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return None
    return str(botocore.__version__)


def input_shape(operation: str) -> Any | None:
    """An operation's input shape (None without botocore)."""
    model = service()
    return None if model is None else model.operation_model(operation).input_shape


def output_shape(operation: str) -> Any | None:
    """An operation's output shape (None without botocore)."""
    model = service()
    return None if model is None else model.operation_model(operation).output_shape


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str] | None:
    for java, python in _JAVA_CLASSES.items():
        pattern = pattern.replace(java, python)
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:
        return None  # a Java construct Python lacks: the rule is not checked here


def _join(path: str, member: str) -> str:
    return f"{path}.{member}" if path else member


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


_WANTED = {
    "structure": (dict, "an object", "write it as {...}"),
    "map": (dict, "an object", 'write it as {"key": "value"}'),
    "list": (list, "a list", "write it as [...]"),
    "string": (str, "a string", 'quote it: "..."'),
    "blob": (str, "a string", 'quote it: "..."'),
    "boolean": (bool, "true or false", "write true or false, unquoted"),
}


def check(value: Any, shape: Any, path: str = "") -> list[Finding]:
    """Every rule of ``shape`` that ``value`` breaks, each with its JSON path."""
    kind = shape.type_name
    if kind in _WANTED:
        python_type, words, fix = _WANTED[kind]
        if not isinstance(value, python_type):
            return [Finding(path or "$", f"must be {words}, not {_type_name(value)}", fix)]
    walker = _WALKERS.get(kind)
    return walker(value, shape, path) if walker is not None else []


def _list(value: list[Any], shape: Any, path: str) -> list[Finding]:
    found = _size(len(value), shape, path or "$", "items")
    for i, item in enumerate(value):
        found += check(item, shape.member, f"{path}[{i}]")
    return found


def _map(value: dict[str, Any], shape: Any, path: str) -> list[Finding]:
    found = _size(len(value), shape, path or "$", "entries")
    for key, item in value.items():
        found += [f._replace(rule=f"the key {f.rule}") for f in _string(key, shape.key, _join(path, key))]
        found += check(item, shape.value, _join(path, key))
    return found


def _timestamp(value: Any, shape: Any, path: str) -> list[Finding]:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return []
    return [
        Finding(path or "$", f"must be a time, not {_type_name(value)}", "write ISO 8601 or epoch seconds")
    ]


def _structure(value: dict[str, Any], shape: Any, path: str) -> list[Finding]:
    found = []
    members = shape.members
    for key in value:
        if key not in members:
            close = difflib.get_close_matches(key, list(members), n=1)
            fix = (
                f"did you mean {close[0]}?" if close else f"remove it ({shape.name} has {', '.join(members)})"
            )
            found.append(Finding(_join(path, key), f"is not a member of {shape.name}", fix, "unknown"))
    for key in shape.required_members:
        if key not in value:
            fix = f"add {key} (see {shape.name})"
            found.append(Finding(_join(path, key), "is required", fix, "required"))
    for key, item in value.items():
        if key in members and item is not None:
            found += check(item, members[key], _join(path, key))
    return found


def _size(count: int, shape: Any, where: str, what: str) -> list[Finding]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and count < low:
        rule = f"has {count} {what}, fewer than the {low} required"
        return [Finding(where, rule, f"add {what}", "size")]
    if high is not None and count > high:
        rule = f"has {count} {what}, more than the {high} allowed"
        return [Finding(where, rule, f"drop some {what}", "size")]
    return []


def _string(value: str, shape: Any, path: str) -> list[Finding]:
    where = path or "$"
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and len(value) < low:
        return [
            Finding(where, f"is {len(value)} characters, fewer than the {low} required", "give it a value")
        ]
    if high is not None and len(value) > high:
        rule = f"is {len(value)} characters, more than the {high} allowed"
        return [Finding(where, rule, "shorten it", "size")]
    enum = shape.enum
    if enum and value not in enum:
        close = difflib.get_close_matches(value, enum, n=1)
        listed = ", ".join(enum[:ENUM_SHOWN]) + (
            f" (and {len(enum) - ENUM_SHOWN} more)" if len(enum) > ENUM_SHOWN else ""
        )
        fix = f"did you mean {close[0]}?" if close else f"use one of {listed}"
        return [Finding(where, f"{value!r} is not one of the API's values", fix, "enum")]
    pattern = shape.metadata.get("pattern")
    compiled = _pattern(pattern) if pattern else None
    if compiled is not None and not compiled.fullmatch(value):
        return [Finding(where, f"{value!r} does not match the pattern {pattern}", "fix the value", "pattern")]
    return []


def _number(value: Any, shape: Any, path: str, *, whole: bool = True) -> list[Finding]:
    where = path or "$"
    wanted = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted):
        words = "a whole number" if whole else "a number"
        return [Finding(where, f"must be {words}, not {_type_name(value)}", f"write {words}, unquoted")]
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{low if low is not None else '-inf'} to {high if high is not None else 'inf'}"
        return [Finding(where, f"{value!r} is outside {span}", f"use a value from {span}", "range")]
    return []


def _real(value: Any, shape: Any, path: str) -> list[Finding]:
    return _number(value, shape, path, whole=False)


_WALKERS: dict[str, Callable[[Any, Any, str], list[Finding]]] = {
    "structure": _structure,
    "list": _list,
    "map": _map,
    "string": _string,
    "blob": _string,
    "integer": _number,
    "long": _number,
    "float": _real,
    "double": _real,
    "timestamp": _timestamp,
}
