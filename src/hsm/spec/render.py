"""Render sweep parameters as command-line arguments in Hydra's override grammar.

Each parameter becomes ONE argv element ``key=value`` (no shell is involved), written
so that a Hydra app receives exactly the value from the sweep file:

- strings stay strings. A string is left bare only when Hydra would read it back
  as the same string (``adam``, ``data/train.csv``); anything else is quoted: spaces,
  quotes, ``,``, brackets, ``=``, ``$``, ``:``, backslashes, non-ASCII text, the empty
  string, and strings that look like a number, a boolean or null (``"1"``, ``"true"``,
  ``"null"``, ``"1e-4"``, ``"nan"``). Inside quotes, Hydra 1.3's rules apply: a quote
  of the enclosing kind is written ``\\'``, and backslashes are doubled only where they
  come right before a quote or at the end of the string;
- ``${`` is escaped as ``\\${`` (and backslashes right before it doubled), so OmegaConf
  does not resolve it as an interpolation: the app gets the literal text. The one
  string that cannot be passed is ``"???"``, which OmegaConf reads as "missing";
- ints, floats (``1e-4`` is written ``0.0001`` and read back as a float, ``1.0`` stays
  a float), booleans (``true``/``false``) and ``None`` (``null``) use Hydra's literals;
- lists become ``[a,b,[c]]`` and mappings ``{k:v}`` (mapping keys may use letters,
  digits and ``_-/+.$%*@?|``, plus the characters Hydra escapes with a backslash).

Keys are written as given. Hydra refuses ``key=value`` for a key that is not in the
app's config; for such keys, write Hydra's own prefix in the sweep file:
``+key`` (add a new key) or ``++key`` (add or override), or set ``hydra_append: true``
in the sweep spec to prefix every parameter (and the opt-in output-folder and
W&B-group arguments) with ``++``. ``++`` does not work for config-group choices
(``model=resnet`` selecting ``conf/model/resnet.yaml``): leave ``hydra_append`` off
for those and prefix only the new keys.

After the parameters, a Hydra app (``spec.hydra``) gets ``hydra.run.dir=<task dir>``,
a key every Hydra config has, so it needs no prefix and cannot break a strict config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hsm.spec.sweep import SweepSpec

# Hydra's lexer (hydra/grammar/OverrideLexer.g4), as regular expressions.
_INT_UNSIGNED = r"(?:0|[1-9](?:_?[0-9])*)"
_DIGITS = r"[0-9](?:_?[0-9])*"
_POINT_FLOAT = rf"(?:{_INT_UNSIGNED}\.|(?:{_INT_UNSIGNED})?\.{_DIGITS})"
_EXPONENT_FLOAT = rf"(?:(?:{_POINT_FLOAT}|{_INT_UNSIGNED})[eE][+-]?{_DIGITS})"
_FLOAT = rf"[+-]?(?:{_EXPONENT_FLOAT}|{_POINT_FLOAT}|[Ii][Nn][Ff]|[Nn][Aa][Nn])"
_INT = rf"[+-]?{_INT_UNSIGNED}"
_KEYWORD = r"(?i:true|false|null)"
_NOT_A_STRING = re.compile(rf"{_FLOAT}|{_INT}|{_KEYWORD}")
"""Text that Hydra would read as a number, a boolean or null, not as a string."""

_BARE = re.compile(r"[A-Za-z0-9_\-/.+%*@?|]+")
"""Characters that need no quoting in a value (ID characters and Hydra's UNQUOTED_CHAR)."""

_KEY_SPECIAL = r"[A-Za-z_$][A-Za-z0-9_\-$]*"
_ID = r"[A-Za-z_][A-Za-z0-9_\-]*"
_SEGMENT = rf"(?:{_KEY_SPECIAL}|{_INT_UNSIGNED})"
_PACKAGE = rf"(?:{_KEY_SPECIAL}|{_SEGMENT}(?:\.{_SEGMENT})+)"
_GROUP = rf"(?:{_ID}(?:/{_ID})+)"
_KEY = re.compile(rf"(?:\+\+?)?(?:{_PACKAGE}|{_GROUP})(?:@{_PACKAGE}?)?")

_ESCAPED_IN_KEYS = "\\()[]{}:=, \t"
_DICT_KEY_CHARS = re.compile(r"[A-Za-z0-9_\-/.+%*@?|$\\()\[\]{}:=, \t]+")
_INTERPOLATION = re.compile(r"(\\*)\$\{")
_QUOTE_OR_END = {q: re.compile(rf"(\\*)({q}|\Z)") for q in ("'", '"')}


HYDRA_RUN_DIR = "hydra.run.dir"
"""The key that puts a Hydra app's run folder (``.hydra/``, its log) in the task folder."""


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be the key of a Hydra override, or ``None`` if it can.

    Valid: dotted paths (``optimizer.lr``, ``layers.0.width``), config groups
    (``model``, ``hydra/launcher``), ``group@package``, each optionally prefixed
    with ``+`` or ``++``.
    """
    if _KEY.fullmatch(key):
        return None
    if key.startswith("~"):
        return "deletion overrides (~key) cannot carry sweep values"
    return (
        f"{key!r} is not a valid Hydra override key (use letters, digits, '_', '-' "
        "and '$', parts joined by '.', optionally prefixed by '+' or '++')"
    )


def _escape_interpolation(text: str) -> str:
    return _INTERPOLATION.sub(lambda m: "\\" * (2 * len(m.group(1)) + 1) + "${", text)


def quote(text: str) -> str:
    """Quote ``text`` as a Hydra quoted string (Hydra 1.3 escaping rules).

    Single quotes are used unless the text holds a single quote and no double quote.
    """
    q = '"' if "'" in text and '"' not in text else "'"

    def escape(match: re.Match[str]) -> str:
        backslashes = match.group(1) * 2
        return backslashes + ("\\" + q if match.group(2) else "")

    return q + _QUOTE_OR_END[q].sub(escape, text) + q


def _string(text: str) -> str:
    if "\x00" in text:
        raise ValueError("a value cannot contain a NUL character")
    if text == "???":
        raise ValueError("the string '???' means 'missing' to OmegaConf and cannot be passed")
    text = _escape_interpolation(text)
    if _BARE.fullmatch(text) and not _NOT_A_STRING.fullmatch(text):
        return text
    return quote(text)


def _float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def _dict_key(key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return str(int(key))
    if not isinstance(key, str):
        raise ValueError(f"a mapping key must be a string, found {key!r}")
    if re.fullmatch(_INT, key):
        return key  # Hydra reads it as an integer key, as YAML does.
    if not key or not _DICT_KEY_CHARS.fullmatch(key) or _NOT_A_STRING.fullmatch(key):
        raise ValueError(
            f"the mapping key {key!r} cannot be passed to Hydra; use letters, digits "
            "and _-/+.$%*@?| in keys of mapping values"
        )
    if "${" in key:
        raise ValueError(f"the mapping key {key!r} cannot contain '${{'")
    out = key.replace("\\", "\\\\")
    for char in _ESCAPED_IN_KEYS[1:]:
        out = out.replace(char, "\\" + char)
    return out


def hydra_value(value: Any) -> str:
    """Render one value in Hydra's override grammar (see the module docstring).

    Raises ``ValueError`` for values Hydra cannot receive (e.g. bytes, dates,
    ``"???"``, unsupported mapping keys).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{_dict_key(k)}:{hydra_value(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    raise ValueError(f"cannot pass a value of type {type(value).__name__} to Hydra: {value!r}")


def hydra_override(key: str, value: Any) -> str:
    """``key=value`` as one argv element, in Hydra's override grammar.

    Raises ``ValueError`` if the key is not a valid override key or the value
    cannot be rendered.
    """
    problem = key_problem(key)
    if problem is not None:
        raise ValueError(problem)
    return f"{key}={hydra_value(value)}"


def with_append_prefix(key: str, append: bool) -> str:
    """``++key`` when ``append`` is set and the key has no prefix of its own."""
    return "++" + key if append and not key.startswith("+") else key


def task_argv(
    spec: SweepSpec,
    params: Mapping[str, Any],
    *,
    python: str,
    task_dir: str | None,
    sweep_id: str,
) -> list[str]:
    """The exact argv of one task.

    ``[python, script, *overrides]`` for a ``script`` sweep, ``[*command, *overrides]``
    for a ``command`` sweep. The overrides are the task's parameters in order, then, when
    ``task_dir`` is known, ``hydra.run.dir=<task_dir>`` for a Hydra app and
    ``<output_dir_arg>=<task_dir>`` when that key is set, and
    ``<wandb_group_arg>=<sweep_id>`` when that key is set.
    """
    argv = [python, spec.script] if spec.script is not None else list(spec.command or ())
    append = spec.hydra_append
    argv.extend(hydra_override(with_append_prefix(k, append), v) for k, v in params.items())
    if spec.hydra and task_dir is not None:
        argv.append(hydra_override(HYDRA_RUN_DIR, task_dir))
    if spec.output_dir_arg is not None and task_dir is not None:
        argv.append(hydra_override(with_append_prefix(spec.output_dir_arg, append), task_dir))
    if spec.wandb_group_arg is not None:
        argv.append(hydra_override(with_append_prefix(spec.wandb_group_arg, append), sweep_id))
    return argv
