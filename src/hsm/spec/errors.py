"""One clear message for a bad config or sweep file.

Every problem becomes a single :class:`~hsm.errors.ConfigError` whose message reads::

    <file>: <dotted.key>: <problem> (line N)

An unknown key suggests the nearest valid one. When pydantic finds several
problems, the first one (by line) is reported and the rest are counted.
"""

from __future__ import annotations

import difflib
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hsm.errors import ConfigError
from hsm.spec.yamlload import Loc, YamlDocument, dotted

_TYPE_WORDS: dict[str, str] = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping of keys",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
    "none_required": "null",
}

_MISSING = "required key is missing"

_BOUNDS: dict[str, tuple[str, str]] = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def problem_message(path: Path, loc: Loc, problem: str, line: int | None) -> str:
    """Format one problem as ``<file>: <dotted.key>: <problem> (line N)``."""
    where = f"{dotted(loc)}: " if loc else ""
    at = f" (line {line})" if line is not None else ""
    return f"{path}: {where}{problem}{at}"


def problem(doc: YamlDocument, loc: Loc, text: str, *, line_loc: Loc | None = None) -> ConfigError:
    """A :class:`ConfigError` for a problem at ``loc`` in ``doc``.

    The line is that of ``line_loc`` (default: ``loc``) or of its nearest ancestor.
    """
    return ConfigError(problem_message(doc.path, loc, text, doc.line_of(line_loc or loc)))


def describe_value(value: Any) -> str:
    """A short, human description of a value found in a file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r} (a string)"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _unwrap(tp: Any) -> list[Any]:
    """The candidate container types inside an annotation (Optional, Annotated, unions)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in get_args(tp):
            out.extend(_unwrap(arg))
        return out
    return [tp]


def _child(tp: Any, part: str | int) -> Any | None:
    """The type found at ``part`` inside a value of type ``tp``, if it is known."""
    for candidate in _unwrap(tp):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            field = candidate.model_fields.get(str(part))
            if field is not None:
                return field.annotation
        origin = get_origin(candidate)
        args = get_args(candidate)
        if origin is dict and len(args) == 2 and isinstance(part, str):
            return args[1]
        if origin is list and args and isinstance(part, int):
            return args[0]
    return None


def model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc``, if there is one."""
    tp: Any = root
    for part in loc:
        tp = _child(tp, part)
        if tp is None:
            return None
    for candidate in _unwrap(tp):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _all_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, info in model.model_fields.items():
        full = f"{prefix}{name}"
        out.append(full)
        for candidate in _unwrap(info.annotation):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                out.extend(_all_paths(candidate, f"{full}."))
    return out


def unknown_key_message(root: type[BaseModel], loc: Loc) -> str:
    """``unknown key 'a.b'; did you mean 'c'?`` for the unknown key at ``loc``."""
    key = str(loc[-1])
    model = model_at(root, loc[:-1])
    head = f"unknown key {dotted(loc)!r}"
    if model is None:
        return head
    names = list(model.model_fields)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"{head}; did you mean {close[0]!r}?"
    elsewhere = [p for p in _all_paths(root) if p.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return f"{head}; did you mean {elsewhere[0]!r}?"
    return f"{head}; valid keys here: {', '.join(names)}"


def _clean_loc(loc: tuple[int | str, ...], data: Any, *, keep_last: bool) -> Loc:
    """Drop the parts of a pydantic location that are not keys of the data.

    pydantic adds schema tags such as ``'[key]'`` or ``'list[int]'`` to locations.
    """
    out: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        in_dict = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = (
            isinstance(current, list)
            and isinstance(part, int)
            and not isinstance(part, bool)
            and 0 <= part < len(current)
        )
        if in_dict or in_list:
            current = current[part]
            out.append(part)
        elif last and keep_last:
            out.append(part)
    return tuple(out)


def describe_error(err: ErrorDetails, root: type[BaseModel], loc: Loc) -> str:
    """The ``<problem>`` part of a message for one pydantic error."""
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    found = describe_value(err.get("input"))
    if kind == "extra_forbidden":
        return unknown_key_message(root, loc)
    if kind == "missing":
        return _MISSING
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, found {found}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '?')}, found {found}"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"must be {words} {_number(ctx.get(name))}, found {found}"
    if kind in ("byte_size", "byte_size_unit"):
        return (
            f"expected a size such as '2GB', '200MB', '1.5GiB' or a number of bytes, found {found}"
        )
    if kind == "too_short":
        return f"must not be empty, found {found}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "finite_number":
        return f"expected a finite number, found {found}"
    return " ".join(str(err.get("msg", "invalid value")).split())


def from_validation_error(
    exc: ValidationError, doc: YamlDocument, root: type[BaseModel]
) -> ConfigError:
    """Turn a pydantic error for ``doc`` (validated as ``root``) into one ConfigError."""
    found: list[tuple[int, Loc, str]] = []
    for err in exc.errors():
        keep_last = err["type"] == "missing"
        loc = _clean_loc(err["loc"], doc.data, keep_last=keep_last)
        line_loc = loc[:-1] if keep_last else loc
        line = doc.line_of(line_loc)
        text = describe_error(err, root, loc)
        found.append((line if line is not None else 0, loc, text))
    if not found:  # pragma: no cover - pydantic always reports at least one error
        return ConfigError(f"{doc.path}: invalid content")
    # A missing key is often the consequence of a misspelled one: report the others first.
    found.sort(key=lambda item: (item[2] == _MISSING, item[0]))
    line, loc, text = found[0]
    if text.startswith("unknown key "):
        message = problem_message(doc.path, (), text, line or None)
    else:
        message = problem_message(doc.path, loc, text, line or None)
    others = len({item[1] for item in found[1:]} - {loc})
    if others:
        message += f" (and {others} more problem{'s' if others != 1 else ''})"
    return ConfigError(message)
