"""The sweep spec, ``sweep.yaml``: what to run and over which parameters.

```yaml
script: train.py            # or: command: [python, -m, pkg.train]  (or one string)
sweep:
  grid:                     # Cartesian product; nested maps flatten to dotted keys
    seed: [1, 2, 3]
    optimizer: {lr: [0.001, 0.01]}
  paired:                   # each group is zipped (equal lengths), then crossed with grid
    - {model.name: [small, large], model.width: [128, 1024]}
  random:                   # n seeded draws, crossed with grid and paired (or alone)
    n: 20
    seed: 0
    params: {lr: {loguniform: [1e-5, 1e-2]}, layers: {choice: [2, 4]}}
  exclude:                  # drop the tasks matching every key of one entry
    - {seed: 3, optimizer.lr: 0.01}
  include:                  # extra tasks, added after the others
    - {seed: 7, optimizer.lr: 0.1, model.name: small, model.width: 64, lr: 0.001, layers: 2}
  # combinations: [{a: 1, b: x}, {a: 2, b: y}]   # explicit tasks instead of grid/paired
defaults: {batch_size: 32}  # applied to every task; grid/paired win
resources: {gpus: 1, cpus: 4, mem: 16G, walltime: "04:00:00"}
max_runs: 100
hydra: null                 # true: a Hydra app; false: not; null: look for @hydra.main
output_dir_arg: null        # e.g. output.dir: also pass the task folder as an argument
wandb_group_arg: null       # e.g. wandb.group: also pass the sweep ID as an argument
hydra_append: false         # true: pass every argument as ++key=value
```

A Hydra app gets ``hydra.run.dir=<task folder>`` after its parameters, so its
``.hydra/`` folder and its log land in the task folder; the task folder and the sweep
ID otherwise reach the script through the environment (``HSM_TASK_DIR``,
``WANDB_RUN_GROUP``) and only become arguments when ``output_dir_arg`` /
``wandb_group_arg`` name a key (see docs/hydra.md).

Each grid entry is a list of values; a single value that is itself a list is written
as a list of lists (``layers: [[64, 64]]``). Parameter keys may carry Hydra's ``+``
or ``++`` prefix (see :mod:`hsm.spec.render`).
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from hsm.spec.errors import describe_value, from_validation_error, problem
from hsm.spec.render import hydra_value, key_problem
from hsm.spec.yamlload import Loc, YamlDocument, load_yaml

_WALLTIME_HMS = re.compile(r"(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)")
_MEM = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:I?B)?)?", re.I)
_MEM_FACTOR_MB = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}


def _minutes_as_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def walltime_seconds(text: str) -> int:
    """Seconds in a walltime: ``"HH:MM:SS"``, ``"D-HH:MM:SS"`` or minutes (``"90"``).

    Raises ``ValueError`` for any other form.
    """
    text = text.strip()
    if text.isdigit():
        if int(text) <= 0:
            raise ValueError(f"a walltime must be positive, found {text!r}")
        return int(text) * 60
    match = _WALLTIME_HMS.fullmatch(text)
    if match is None:
        raise ValueError(
            f"expected a walltime as 'HH:MM:SS', 'D-HH:MM:SS' or a number of minutes, "
            f"found {text!r}"
        )
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    if match.group(1) is not None and hours >= 24:
        raise ValueError(f"hours must be below 24 in 'D-HH:MM:SS', found {text!r}")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"a walltime must be positive, found {text!r}")
    return total


def _check_walltime(text: str) -> str:
    walltime_seconds(text)
    return text.strip()


def mem_megabytes(text: str) -> int:
    """Megabytes (2^20 bytes, rounded up) in a memory request such as ``16G``,
    ``500M``, ``16GB`` or ``16000`` (a bare number is megabytes, as in Slurm)."""
    match = _MEM.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"expected memory such as '16G', '500M' or a number of megabytes, found {text!r}"
        )
    number = float(match.group(1))
    unit = (match.group(2) or "M").upper()
    megabytes = number * _MEM_FACTOR_MB[unit]
    if megabytes <= 0:
        raise ValueError(f"memory must be positive, found {text!r}")
    return max(1, -int(-megabytes // 1))


def _check_mem(text: str) -> str:
    mem_megabytes(text)
    return text.strip()


def _split_command(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command {value!r}: {exc}") from None
    return value


def _check_key(key: str) -> str:
    why = key_problem(key)
    if why is not None:
        raise ValueError(why)
    return key


# Signals a task may ask for before its walltime: the job wrapper uses TERM, INT and HUP
# to stop a task, so only these two.
CHECKPOINT_SIGNALS = ("USR1", "USR2")
_SIGNAL = re.compile(r"(?:SIG)?(USR1|USR2)@([1-9][0-9]*)")


def _check_signal(text: str) -> str:
    match = _SIGNAL.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f'{text!r} is not a checkpoint signal: write SIGNAL@SECONDS, e.g. "USR1@90" '
            f"(SIGNAL is one of {', '.join(CHECKPOINT_SIGNALS)}; SECONDS before the walltime)"
        )
    return f"{match.group(1)}@{match.group(2)}"


Walltime = Annotated[str, BeforeValidator(_minutes_as_text), AfterValidator(_check_walltime)]
Mem = Annotated[str, BeforeValidator(_minutes_as_text), AfterValidator(_check_mem)]
Signal = Annotated[str, AfterValidator(_check_signal)]
Command = Annotated[list[str], BeforeValidator(_split_command), Field(min_length=1)]
ArgKey = Annotated[str, AfterValidator(_check_key)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Resources(_Model):
    """``resources:`` what each task needs (used by Slurm and PBS, and for local GPUs)."""

    gpus: Annotated[int, Field(ge=0)] = 0
    cpus: Annotated[int, Field(ge=1)] | None = None
    mem: Mem | None = None
    walltime: Walltime | None = None
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    gpu_type: str | None = None
    # "USR1@90": the task gets SIGUSR1 90 s before its walltime (a checkpoint), on clusters
    signal: Signal | None = None

    @property
    def signal_name(self) -> str | None:
        return None if self.signal is None else self.signal.partition("@")[0]

    @property
    def signal_seconds(self) -> int | None:
        return None if self.signal is None else int(self.signal.partition("@")[2])

    @property
    def walltime_seconds(self) -> int | None:
        return None if self.walltime is None else walltime_seconds(self.walltime)

    @property
    def mem_megabytes(self) -> int | None:
        return None if self.mem is None else mem_megabytes(self.mem)


class _RandomBlock(_Model):
    n: Annotated[int, Field(ge=1)]
    seed: int = 0
    params: dict[str, Any]


class _SweepBlock(_Model):
    grid: dict[str, Any] | None = None
    paired: list[dict[str, Any]] | None = None
    combinations: list[dict[str, Any]] | None = None
    random: _RandomBlock | None = None
    exclude: list[dict[str, Any]] | None = None
    include: list[dict[str, Any]] | None = None


class _SweepFile(_Model):
    """The shape of the file, before the parameters are checked."""

    script: str | None = None
    command: Command | None = None
    sweep: _SweepBlock | None = None
    defaults: dict[str, Any] | None = None
    resources: Resources = Field(default_factory=Resources)
    max_runs: Annotated[int, Field(ge=1)] | None = None
    hydra: bool | None = None
    output_dir_arg: ArgKey | None = None
    wandb_group_arg: ArgKey | None = None
    hydra_append: bool = False


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep.

    ``grid`` maps each dotted key to its values, in file order; ``paired`` holds the
    groups, each mapping its keys to equally long value lists; ``defaults`` maps dotted
    keys to single values. ``combinations`` (explicit tasks, instead of grid and paired),
    ``exclude`` (partial assignments), ``include`` (extra tasks) map dotted keys to single
    values; ``random`` holds the seeded draws. Expansion is in :mod:`hsm.spec.expand`.
    """

    script: str | None = None
    command: tuple[str, ...] | None = None
    grid: dict[str, list[Any]] = field(default_factory=dict)
    paired: list[dict[str, list[Any]]] = field(default_factory=list)
    combinations: list[dict[str, Any]] = field(default_factory=list)
    random: RandomDesign | None = None
    exclude: list[dict[str, Any]] = field(default_factory=list)
    include: list[dict[str, Any]] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    max_runs: int | None = None
    hydra: bool = False
    """A Hydra app: it gets ``hydra.run.dir=<task folder>``."""
    output_dir_arg: str | None = None
    wandb_group_arg: str | None = None
    hydra_append: bool = False
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    """The file's content as loaded, e.g. to store a copy with the sweep."""


@dataclass(frozen=True)
class Distribution:
    """One parameter of ``sweep.random``: ``kind`` is one of :data:`DISTRIBUTIONS`."""

    kind: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class RandomDesign:
    """``sweep.random``: ``n`` draws from ``params`` (dotted key -> distribution)."""

    n: int
    seed: int
    params: dict[str, Distribution]


DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


def param_name(key: str) -> str:
    """A parameter key without Hydra's ``+``/``++`` prefix."""
    return key.lstrip("+")


class _Params:
    """Flattens and checks grid, paired and defaults, keeping each key's location."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.seen: dict[str, Loc] = {}

    def flatten(self, data: dict[str, Any], loc: Loc, prefix: str = "") -> list[tuple[str, Loc]]:
        """(dotted key, location of its value) for every leaf under ``data``, in order."""
        out: list[tuple[str, Loc]] = []
        for key, value in data.items():
            full = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                out.extend(self.flatten(value, loc + (key,), f"{full}."))
            else:
                out.append((full, loc + (key,)))
        return out

    def claim(self, key: str, loc: Loc) -> None:
        """Check the key and that no other grid or paired entry sets it."""
        why = key_problem(key)
        if why is not None:
            raise problem(self.doc, loc, why)
        name = param_name(key)
        if name in self.seen:
            other = self.doc.line_of(self.seen[name])
            also = f" (also set at line {other})" if other is not None else ""
            raise problem(self.doc, loc, f"parameter {name!r} is swept twice{also}")
        self.seen[name] = loc

    def value(self, value: Any, loc: Loc) -> Any:
        try:
            hydra_value(value)
        except ValueError as exc:
            raise problem(self.doc, loc, str(exc)) from None
        return value

    def values(self, value: Any, loc: Loc) -> list[Any]:
        if value == {}:
            raise problem(self.doc, loc, "expected a list of values, found an empty mapping")
        if not isinstance(value, list):
            try:
                shown = hydra_value(value)
            except ValueError:
                shown = "..."
            raise problem(
                self.doc,
                loc,
                f"expected a list of values, found {describe_value(value)}; "
                f"write [{shown}] for a single value",
            )
        if not value:
            raise problem(self.doc, loc, "expected a list of values, found an empty list")
        return [self.value(item, loc + (index,)) for index, item in enumerate(value)]


def _get(data: dict[str, Any], loc: Loc) -> Any:
    current: Any = data
    for part in loc:
        current = current[part]
    return current


def _check_params(
    doc: YamlDocument, parsed: _SweepFile
) -> tuple[dict[str, list[Any]], list[dict[str, list[Any]]], dict[str, Any], _Params]:
    params = _Params(doc)
    block = parsed.sweep or _SweepBlock()
    if block.combinations is not None and (block.grid or block.paired):
        raise problem(
            doc,
            ("sweep", "combinations"),
            "give either 'combinations' or 'grid'/'paired', not both",
        )
    grid: dict[str, list[Any]] = {}
    for key, loc in params.flatten(block.grid or {}, ("sweep", "grid")):
        params.claim(key, loc)
        grid[key] = params.values(_get(doc.data, loc), loc)
    paired: list[dict[str, list[Any]]] = []
    for index, group_data in enumerate(block.paired or []):
        group_loc: Loc = ("sweep", "paired", index)
        group: dict[str, list[Any]] = {}
        for key, loc in params.flatten(group_data, group_loc):
            params.claim(key, loc)
            group[key] = params.values(_get(doc.data, loc), loc)
        if not group:
            raise problem(doc, group_loc, "a paired group needs at least one list of values")
        lengths = {key: len(values) for key, values in group.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{key} has {n}" for key, n in lengths.items())
            raise problem(
                doc,
                group_loc,
                f"the lists in paired group {index} must have equal lengths: {shown}",
            )
        paired.append(group)
    if not grid and not paired and block.combinations is None and block.random is None:
        raise problem(
            doc,
            ("sweep",),
            "the sweep has no parameters: add lists of values under sweep.grid or sweep.paired"
            " (or sweep.combinations, sweep.random)",
        )
    defaults: dict[str, Any] = {}
    default_locs: dict[str, Loc] = {}
    for key, loc in params.flatten(parsed.defaults or {}, ("defaults",)):
        why = key_problem(key)
        if why is not None:
            raise problem(doc, loc, why)
        name = param_name(key)
        if name in default_locs:
            other = doc.line_of(default_locs[name])
            also = f" (also set at line {other})" if other is not None else ""
            raise problem(doc, loc, f"default {name!r} is given twice{also}")
        default_locs[name] = loc
        defaults[key] = params.value(_get(doc.data, loc), loc)
    return grid, paired, defaults, params


def _close(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _assignment(params: _Params, data: Any, loc: Loc, what: str) -> dict[str, Any]:
    """One entry of combinations, exclude or include: dotted key -> single value."""
    if not isinstance(data, dict):
        raise problem(
            params.doc,
            loc,
            f"each entry of {what} must be a mapping of key: value, found {describe_value(data)}",
        )
    out: dict[str, Any] = {}
    for key, key_loc in params.flatten(data, loc):
        why = key_problem(key)
        if why is not None:
            raise problem(params.doc, key_loc, why)
        if param_name(key) in {param_name(k) for k in out}:
            raise problem(params.doc, key_loc, f"parameter {param_name(key)!r} is given twice")
        out[key] = params.value(_get(params.doc.data, key_loc), key_loc)
    if not out:
        raise problem(params.doc, loc, f"an entry of {what} needs at least one key: value")
    return out


def _number_pair(doc: YamlDocument, loc: Loc, kind: str, args: Any) -> tuple[Any, ...]:
    integer = kind == "randint"
    wanted = "two integers" if integer else "two numbers"
    ok = (
        isinstance(args, list)
        and len(args) == 2
        and all(
            isinstance(a, int if integer else (int, float)) and not isinstance(a, bool)
            for a in args
        )
    )
    if not ok:
        raise problem(doc, loc, f"{kind} takes [low, high], {wanted}; found {describe_value(args)}")
    low, high = args
    if not all(math.isfinite(a) for a in args):
        raise problem(doc, loc, f"{kind} bounds must be finite, found [{low}, {high}]")
    if low > high or (low == high and not integer):
        raise problem(doc, loc, f"{kind} needs low < high, found [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise problem(doc, loc, f"loguniform bounds must be positive, found [{low}, {high}]")
    return (low, high)


def _distribution(params: _Params, data: Any, loc: Loc) -> Distribution:
    doc = params.doc
    if not isinstance(data, dict) or len(data) != 1:
        raise problem(
            doc,
            loc,
            "expected one distribution such as {uniform: [0, 1]}, {loguniform: "
            "[1e-5, 1e-2]}, {randint: [2, 8]} or {choice: [a, b]}; "
            f"found {describe_value(data)}",
        )
    kind, args = next(iter(data.items()))
    if kind not in DISTRIBUTIONS:
        raise problem(
            doc,
            loc + (kind,),
            f"unknown distribution {kind!r}{_close(str(kind), list(DISTRIBUTIONS))}"
            f" (one of: {', '.join(DISTRIBUTIONS)})",
        )
    if kind == "choice":
        return Distribution(kind, tuple(params.values(args, loc + (kind,))))
    return Distribution(kind, _number_pair(doc, loc + (kind,), kind, args))


def _random_params(
    params: _Params, data: dict[str, Any], loc: Loc, prefix: str = ""
) -> dict[str, Distribution]:
    out: dict[str, Distribution] = {}
    for key, value in data.items():
        full, key_loc = f"{prefix}{key}", loc + (key,)
        nested = (
            isinstance(value, dict)
            and value
            and next(iter(value)) not in DISTRIBUTIONS
            and all(isinstance(v, dict) for v in value.values())
        )
        if nested:
            out.update(_random_params(params, value, key_loc, f"{full}."))
            continue
        params.claim(full, key_loc)
        out[full] = _distribution(params, value, key_loc)
    return out


def _check_designs(
    doc: YamlDocument,
    parsed: _SweepFile,
    params: _Params,
    defaults: dict[str, Any],
) -> tuple[list[dict[str, Any]], RandomDesign | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """combinations, random, exclude and include, checked against the swept keys."""
    block = parsed.sweep or _SweepBlock()
    base: Loc = ("sweep",)
    combinations = [
        _assignment(params, entry, base + ("combinations", i), "sweep.combinations")
        for i, entry in enumerate(block.combinations or [])
    ]
    if block.combinations is not None and not combinations:
        raise problem(
            doc, base + ("combinations",), "expected a list of tasks, found an empty list"
        )
    random: RandomDesign | None = None
    if block.random is not None:
        loc = base + ("random", "params")
        drawn = _random_params(params, block.random.params, loc)
        if not drawn:
            raise problem(doc, loc, "sweep.random needs at least one parameter")
        random = RandomDesign(block.random.n, block.random.seed, drawn)
    swept = set(params.seen)
    for entry in combinations:
        for key in entry:
            if param_name(key) in params.seen:
                raise problem(
                    doc,
                    base + ("combinations",),
                    f"parameter {param_name(key)!r} is set both "
                    "in sweep.combinations and in sweep.random",
                )
        swept.update(param_name(key) for key in entry)
    exclude = []
    for i, entry in enumerate(block.exclude or []):
        loc = base + ("exclude", i)
        rule = _assignment(params, entry, loc, "sweep.exclude")
        for key in rule:
            if param_name(key) not in swept:
                raise problem(
                    doc,
                    loc + (key,),
                    f"{param_name(key)!r} is not a swept parameter"
                    f"{_close(param_name(key), sorted(swept))}",
                )
        exclude.append(rule)
    include = []
    known = swept | {param_name(key) for key in defaults}
    required = set(params.seen) - {param_name(key) for key in defaults}
    for i, entry in enumerate(block.include or []):
        loc = base + ("include", i)
        extra = _assignment(params, entry, loc, "sweep.include")
        names = {param_name(key) for key in extra}
        for key in extra:
            if param_name(key) not in known:
                raise problem(
                    doc,
                    loc + (key,),
                    f"{param_name(key)!r} is not a parameter of this sweep"
                    f"{_close(param_name(key), sorted(known))} (give it a value under "
                    "'defaults' to add it)",
                )
        missing = sorted(required - names)
        if missing:
            raise problem(
                doc,
                loc,
                f"an included task needs a value for every swept parameter; "
                f"missing: {', '.join(missing)}",
            )
        include.append(extra)
    return combinations, random, exclude, include


def _check_program(doc: YamlDocument, parsed: _SweepFile, project_root: Path | None) -> None:
    if parsed.script is not None and parsed.command is not None:
        raise problem(doc, ("command",), "give either 'script' or 'command', not both")
    if parsed.script is None and parsed.command is None:
        raise problem(doc, (), "missing 'script' (a Python file) or 'command' (the program to run)")
    for index, arg in enumerate(parsed.command or []):
        if "\x00" in arg:
            listed = isinstance(doc.data.get("command"), list)
            loc: Loc = ("command", index) if listed else ("command",)
            which = "" if listed else f"command[{index}] "
            raise problem(
                doc, loc, f"{which}holds a NUL character, which no program argument can carry"
            )
    if parsed.script is not None:
        if "\x00" in parsed.script:
            raise problem(doc, ("script",), "holds a NUL character, which no path can carry")
        if not parsed.script.strip():
            raise problem(doc, ("script",), "must not be empty")
        if project_root is not None:
            looked = Path(parsed.script).expanduser()
            if not looked.is_absolute():
                looked = project_root / looked
            if not looked.is_file():
                raise problem(doc, ("script",), f"{parsed.script!r} not found (looked at {looked})")


_HYDRA_MAIN = re.compile(rb"^[ \t]*@hydra\.main\b", re.M)


def _program_file(parsed: _SweepFile, project_root: Path) -> Path | None:
    """The Python file the sweep runs: ``script``, else the first ``*.py`` of ``command``."""
    names = (
        [parsed.script]
        if parsed.script is not None
        else [part for part in parsed.command or () if part.endswith(".py")][:1]
    )
    for name in names:
        path = Path(name).expanduser()
        return path if path.is_absolute() else project_root / path
    return None


def is_hydra_app(path: Path) -> bool:
    """Whether the Python file at ``path`` has a ``@hydra.main`` decorator."""
    try:
        return _HYDRA_MAIN.search(path.read_bytes()) is not None
    except OSError:
        return False


def _resolve_hydra(parsed: _SweepFile, project_root: Path | None) -> bool:
    if parsed.hydra is not None:
        return parsed.hydra
    if project_root is None:
        return False
    program = _program_file(parsed, project_root)
    return program is not None and is_hydra_app(program)


def parse_sweep(doc: YamlDocument, project_root: Path | None) -> SweepSpec:
    """Validate a loaded sweep file. ``project_root=None`` skips the script check.

    Without a ``hydra`` key, the script is read to decide whether it is a Hydra app
    (when ``project_root`` is given); the decision is kept in ``raw``, so a stored
    copy of the spec gives the same arguments on resume.
    """
    try:
        parsed = _SweepFile.model_validate(doc.data)
    except ValidationError as exc:
        raise from_validation_error(exc, doc, _SweepFile) from None
    _check_program(doc, parsed, project_root)
    grid, paired, defaults, params = _check_params(doc, parsed)
    combinations, random, exclude, include = _check_designs(doc, parsed, params, defaults)
    hydra = _resolve_hydra(parsed, project_root)
    detected = parsed.hydra is None and project_root is not None
    raw = {**doc.data, "hydra": hydra} if detected else doc.data
    return SweepSpec(
        script=parsed.script,
        command=tuple(parsed.command) if parsed.command is not None else None,
        grid=grid,
        paired=paired,
        combinations=combinations,
        random=random,
        exclude=exclude,
        include=include,
        defaults=defaults,
        resources=parsed.resources,
        max_runs=parsed.max_runs,
        hydra=hydra,
        output_dir_arg=parsed.output_dir_arg,
        wandb_group_arg=parsed.wandb_group_arg,
        hydra_append=parsed.hydra_append,
        path=doc.path,
        raw=raw,
    )


def sweep_from_data(data: dict[str, Any], path: Path, project_root: Path | None) -> SweepSpec:
    """Validate sweep data that did not come from a file (e.g. a stored copy)."""
    return parse_sweep(YamlDocument(path=path, data=data), project_root)


def load_sweep(path: Path, project_root: Path) -> SweepSpec:
    """Load and validate a sweep file; a ``script`` is looked for under ``project_root``.

    Every problem raises :class:`~hsm.errors.ConfigError` naming the file, the key
    and the line.
    """
    return parse_sweep(load_yaml(path, allow_empty=False), project_root)
