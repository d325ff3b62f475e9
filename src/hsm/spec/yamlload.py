"""Load a YAML file into plain Python data, remembering the line of every key.

The loader is PyYAML's safe loader with three changes, so that a value means
what a Hydra user expects it to mean:

- numbers follow OmegaConf's reading: ``1e-4`` is the float 0.0001 (plain
  PyYAML would read the string ``"1e-4"``);
- no sexagesimal or octal surprises: ``04:00:00`` stays a string (PyYAML would
  read the integer 14400) and ``017`` stays a string;
- dates are not converted (``2024-01-01`` stays a string), as in OmegaConf.

Mapping keys are always the raw text of the key (``on:`` is the key ``"on"``,
not ``True``). Duplicate keys are an error. Every key and every list item gets
its 1-based line number in :attr:`YamlDocument.lines`, keyed by its location
(a tuple of keys and list indexes), so that errors can say ``line N``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hsm.errors import ConfigError

Loc = tuple[str | int, ...]
"""The location of a value in a document: its keys and list indexes from the top."""

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_DROPPED_TAGS = {
    _INT_TAG,
    _FLOAT_TAG,
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:value",
}

_INT_RE = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_FLOAT_RE = re.compile(
    r"""^(?:
        [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
       |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
       |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
       |[-+]?\.(?:inf|Inf|INF)
       |\.(?:nan|NaN|NAN)
    )$""",
    re.X,
)

_PLAIN_TYPES = (str, int, float, bool, type(None))


class _Loader(yaml.SafeLoader):
    """Safe loader with OmegaConf-like number resolution (see the module docstring)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT_TAG, _INT_RE, list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


@dataclass(frozen=True)
class YamlDocument:
    """A loaded YAML file: its data (a mapping) and the line of every key and item."""

    path: Path
    data: dict[str, Any]
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest ancestor that has one."""
        while loc:
            line = self.lines.get(loc)
            if line is not None:
                return line
            loc = loc[:-1]
        return None


def dotted(loc: Loc) -> str:
    """Render a location as a dotted key: ``("a", "b", 2, "c")`` -> ``a.b[2].c``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if part.isprintable() else repr(part)[1:-1]
            out += f".{text}" if out else text
    return out


def _problem(path: Path, loc: Loc, problem: str, line: int | None) -> ConfigError:
    where = f"{dotted(loc)}: " if loc else ""
    at = f" (line {line})" if line is not None else ""
    return ConfigError(f"{path}: {where}{problem}{at}")


class _Converter:
    """Turns a composed node tree into plain data, recording lines on the way."""

    def __init__(self, loader: _Loader, path: Path) -> None:
        self.loader = loader
        self.path = path
        self.lines: dict[Loc, int] = {}
        self._active: set[int] = set()

    def convert(self, node: Node, loc: Loc) -> Any:
        if id(node) in self._active:
            raise _problem(self.path, loc, "recursive YAML alias", node.start_mark.line + 1)
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, loc)
            if isinstance(node, SequenceNode):
                return self._sequence(node, loc)
            return self._scalar(node, loc)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            raise _problem(
                self.path, loc, f"unsupported YAML tag {node.tag!r}", node.start_mark.line + 1
            )
        own: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, loc)
            if key in own:
                raise _problem(
                    self.path, loc + (key,), "duplicate key", key_node.start_mark.line + 1
                )
            own.add(key)
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merges in place
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, loc)
            self.lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = self.convert(value_node, loc + (key,))
        return out

    def _key(self, key_node: Node, loc: Loc) -> str:
        if not isinstance(key_node, ScalarNode):
            raise _problem(
                self.path,
                loc,
                "a key must be a plain name, not a list or a mapping",
                key_node.start_mark.line + 1,
            )
        return str(key_node.value)

    def _sequence(self, node: SequenceNode, loc: Loc) -> list[Any]:
        if node.tag != _SEQ_TAG:
            raise _problem(
                self.path, loc, f"unsupported YAML tag {node.tag!r}", node.start_mark.line + 1
            )
        items: list[Any] = []
        for index, item in enumerate(node.value):
            self.lines[loc + (index,)] = item.start_mark.line + 1
            items.append(self.convert(item, loc + (index,)))
        return items

    def _scalar(self, node: Node, loc: Loc) -> Any:
        value = self.loader.construct_object(node, deep=True)
        if not isinstance(value, _PLAIN_TYPES):
            raise _problem(
                self.path,
                loc,
                f"unsupported YAML value of type {type(value).__name__} (tag {node.tag!r}); "
                "use a string, number, true/false, null, list or mapping",
                node.start_mark.line + 1,
            )
        return value


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
        if exc.context and exc.problem:
            if exc.problem.startswith("but "):
                problem = f"{exc.context}, {exc.problem}"
            else:
                problem = f"{problem} ({exc.context})"
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return ConfigError(f"{path}: invalid YAML: {problem}{where}")
    return ConfigError(f"{path}: invalid YAML: {exc}")


def load_yaml_text(text: str, path: Path, *, allow_empty: bool) -> YamlDocument:
    """Parse ``text`` (the content of ``path``); see :func:`load_yaml`."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            if allow_empty:
                return YamlDocument(path=path, data={})
            raise ConfigError(f"{path}: the file is empty")
        if not isinstance(root, MappingNode):
            kind = "a list" if isinstance(root, SequenceNode) else "a single value"
            raise ConfigError(
                f"{path}: expected a mapping of keys at the top level, found {kind} "
                f"(line {root.start_mark.line + 1})"
            )
        converter = _Converter(loader, path)
        data = converter.convert(root, ())
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    finally:
        loader.dispose()
    return YamlDocument(path=path, data=data, lines=converter.lines)


def load_yaml(path: Path, *, allow_empty: bool) -> YamlDocument:
    """Load a YAML file whose top level must be a mapping.

    An empty file (or one holding only comments) is an empty mapping when
    ``allow_empty`` is true, and an error otherwise. Every problem raises
    :class:`~hsm.errors.ConfigError` naming the file and, where known, the line.
    """
    return load_yaml_text(_read(path), path, allow_empty=allow_empty)
