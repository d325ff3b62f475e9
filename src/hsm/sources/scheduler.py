"""A batch scheduler as data: the element states, the typed job options, and the description a
scheduler module (``slurm.py``, ``pbs.py``) provides: its commands, job-id syntax, directive
prefix, state map and header. The job script of an array is rendered here, from
``hsm/jobscript/array_job.sh``.
"""

from __future__ import annotations

import logging
import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from hsm.errors import ConfigError, SourceUnavailableError
from hsm.sources.process import CommandResult
from hsm.spec.sweep import Resources
from hsm.states import ElementState

log = logging.getLogger(__name__)

# run(argv, *, input=None, timeout=60.0): a scheduler command on the login side.
Runner = Callable[..., Awaitable[CommandResult]]


async def require_answer(
    run: Runner, argv: list[str], *, source: str, who: str, timeout: float
) -> None:
    """Run a cheap scheduler command; when it fails, say that ``who`` does not answer."""
    result = await run(argv, timeout=timeout)
    if result.returncode != 0:
        answer = (result.stdout.strip() or result.stderr.strip()).splitlines()[-1:] or [""]
        raise SourceUnavailableError(
            f"source {source!r}: {who} does not answer ({' '.join(argv)}: "
            f"{answer[0] or 'exit ' + str(result.returncode)})"
        )


_PLACEHOLDER = re.compile(r"@(HEADER|NAME|ROOT|WRAPPER|TASKS|INDEX|JOB_ID|MODULES|TIMER)@\n?")


_unknown_seen: set[tuple[str, str]] = set()


def translate(raw: str, table: Mapping[str, ElementState], scheduler: str) -> ElementState:
    """The one place a scheduler's raw state string becomes an :class:`ElementState`."""
    state = table.get(raw)
    if state is None:
        if (scheduler, raw) not in _unknown_seen:
            _unknown_seen.add((scheduler, raw))
            log.warning("%s reported the job state %r, which hsm does not know", scheduler, raw)
        return ElementState.UNKNOWN
    return state


@dataclass(frozen=True)
class Element:
    """One array element (or job) as the scheduler reports it."""

    job_id: str  # canonical id (see Scheduler.canonical)
    state: ElementState
    raw: str = ""
    exit_code: int | None = None
    reason: str = ""
    name: str = ""


@dataclass(frozen=True)
class ClusterSettings:
    """The cluster part of a ``distributed.remotes`` entry."""

    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    gpu_type: str | None = None
    modules: tuple[str, ...] = ()
    directives: tuple[str, ...] = ()
    throttle: int | None = None  # at most this many elements of an array run at once
    max_array_size: int | None = None
    poll_max_interval: float = 60.0  # seconds between scheduler queries at most, when idle


@dataclass(frozen=True)
class JobOptions:
    """Typed resources of every element: the sweep's ``resources:`` over the cluster entry."""

    walltime_seconds: int | None = None
    cpus: int | None = None
    mem_mb: int | None = None
    gpus: int = 0
    gpu_type: str | None = None
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    modules: tuple[str, ...] = ()
    directives: tuple[str, ...] = ()
    signal: str | None = None  # sent to the job wrapper, which passes it to the task
    signal_seconds: int | None = None  # ... this many seconds before the walltime

    @classmethod
    def merge(cls, res: Resources, cfg: ClusterSettings, where: str) -> JobOptions:
        opts = cls(
            walltime_seconds=res.walltime_seconds,
            cpus=res.cpus,
            mem_mb=res.mem_megabytes,
            gpus=res.gpus,
            gpu_type=(res.gpu_type or cfg.gpu_type) if res.gpus else None,
            partition=res.partition or cfg.partition,
            qos=res.qos or cfg.qos,
            account=res.account or cfg.account,
            modules=cfg.modules,
            directives=cfg.directives,
            signal=res.signal_name,
            signal_seconds=res.signal_seconds,
        )
        for key in ("gpu_type", "partition", "qos", "account"):
            value = getattr(opts, key)
            if value is not None and (not value.strip() or _unsafe(value)):
                raise ConfigError(
                    f"{where}: {key}: {value!r} is not a valid value (it must be "
                    "one word, without spaces, newlines or quotes)"
                )
        for key, values in (("modules", opts.modules), ("directives", opts.directives)):
            for value in values:
                if "\n" in value or "\r" in value or "\0" in value or not value.strip():
                    raise ConfigError(f"{where}: {key}: {value!r} must be one non-empty line")
        return opts


def _unsafe(value: str) -> bool:
    return bool(re.search(r"[\s'\"\\`$;|&<>]", value))


@dataclass(frozen=True)
class ArraySpec:
    """One submission: a job name, its number of elements and its throttle."""

    name: str
    size: int
    throttle: int | None = None


class Scheduler(ABC):
    """A batch scheduler, described by data and small parsers."""

    name: str = ""
    commands: tuple[str, ...] = ()  # must exist on the login node
    directive: str = ""  # "#SBATCH", "#PBS"
    index_expr: str = ""  # bash expression of the element's index (1-based)
    job_id_expr: str = ""  # bash expression naming the element, for its job.log
    ping: str = ""  # shell command that fails fast when the controller is down
    probe_sections: tuple[tuple[str, str], ...] = ()  # (name, constant shell command)
    blind: bool = False  # the status query cannot see our elements: trust status files
    chain_chunks: bool = False  # chunks of one batch wait for each other (one throttle)
    max_array_size: int = 1000

    async def configure(self, run: Runner, source: str) -> None:  # noqa: B027 - optional
        """Learn the cluster's limits (max array size, accounting, flavour) before a sweep."""

    @abstractmethod
    def header(self, opts: JobOptions, array: ArraySpec) -> list[str]:
        """The directive lines of a job script."""

    @abstractmethod
    def submit_argv(self, script: str, array: ArraySpec, after: str | None) -> list[str]:
        """Submit one job script as an array (``after``: an array id to wait for)."""

    @abstractmethod
    def parse_submit(self, stdout: str) -> str:
        """The array id printed by the submit command (ValueError if there is none)."""

    @abstractmethod
    def element_id(self, array_id: str, index: int, size: int) -> str: ...

    @abstractmethod
    def array_of(self, job_id: str) -> str: ...

    def canonical(self, job_id: str) -> str:
        return job_id

    @abstractmethod
    def status_argv(self, array_ids: Sequence[str]) -> list[str]: ...

    @abstractmethod
    def parse_status(self, text: str) -> list[Element]: ...

    def status_failed(self, result: CommandResult) -> bool:
        return result.returncode != 0

    def history_argv(self, array_ids: Sequence[str]) -> list[str] | None:
        """Final states of elements the live query no longer shows (None: no history)."""
        return None

    def parse_history(self, text: str) -> list[Element]:
        return []

    @abstractmethod
    def find_argv(self, names: Sequence[str]) -> list[str]:
        """List jobs by name (to find a submission a killed controller did not record)."""

    @abstractmethod
    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]: ...

    def signal_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        """SIGTERM to the job script (the wrapper) alone, before a cancel (None: cannot)."""
        return None

    def test_argv(self) -> list[str] | None:
        """Validate a job script read from stdin without submitting it (None: cannot)."""
        return None

    def health_extra(self, sections: Mapping[str, list[str]]) -> dict[str, Any]:
        return {}

    # -- the job script ------------------------------------------------------------------
    def render(
        self, opts: JobOptions, array: ArraySpec, *, root: str, wrapper: str, tasks: Sequence[str]
    ) -> str:
        """The job script of one array: header, task list, modules, the wrapper."""
        modules = ""
        if opts.modules:
            lines = [MODULE_INIT]
            for module, load in zip(opts.modules, load_lines(opts.modules)[1:], strict=True):
                failed = shlex.quote(f"hsm: module load {module} failed")
                lines.append(f"{load} || {{ echo {failed} >&2; exit 3; }}")
            modules = "\n".join(lines)
        template = resources.files("hsm.jobscript").joinpath("array_job.sh").read_text()
        values = {
            "HEADER": "\n".join(self.header(opts, array)),
            "NAME": array.name,
            "ROOT": shlex.quote(root),
            "WRAPPER": shlex.quote(wrapper),
            "TASKS": " ".join(shlex.quote(t) for t in tasks),
            "INDEX": self.index_expr,
            "JOB_ID": self.job_id_expr,
            "MODULES": modules,
            "TIMER": self.signal_timer(opts),
        }

        def fill(match: re.Match[str]) -> str:
            value = values[match.group(1)]
            newline = "\n" if match.group(0).endswith("\n") and value else ""
            return value + newline

        # One pass: a value (e.g. a folder named "@TASKS@") is never substituted again.
        return _PLACEHOLDER.sub(fill, template)

    native_signal = False  # the scheduler signals the batch shell before the walltime itself

    def check_signal(self, opts: JobOptions) -> None:
        """A checkpoint signal this scheduler cannot send needs a walltime to count from."""
        if opts.signal and not self.native_signal and not opts.walltime_seconds:
            raise ConfigError(
                f"resources.signal: {opts.signal}@{opts.signal_seconds} needs "
                f"resources.walltime on {self.name} (hsm sends the signal itself, counted "
                "from the start of the job)"
            )

    def signal_timer(self, opts: JobOptions) -> str:
        """For a scheduler that cannot signal before the walltime: a timer in the job script
        (the job script becomes the wrapper, so $$ is the wrapper's pid)."""
        if self.native_signal or opts.signal is None or not opts.walltime_seconds:
            return ""
        delay = max(opts.walltime_seconds - (opts.signal_seconds or 0), 0)
        return (
            f"(sleep {delay} && kill -{opts.signal} $$) </dev/null >/dev/null 2>&1 &"
            "  # the checkpoint signal"
        )

    def directives(self, opts: JobOptions) -> list[str]:
        """The user's extra directives, with the scheduler's prefix."""
        out = []
        for line in opts.directives:
            line = line.strip()
            if line.startswith("#"):
                if not line.startswith(self.directive + " "):
                    raise ConfigError(f"directives: {line!r} is not a {self.directive} line")
                out.append(line)
            else:
                out.append(f"{self.directive} {line}")
        return out


MODULE_INIT = """\
if ! type module >/dev/null 2>&1; then
  for hsm_init in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh \\
      /usr/share/lmod/lmod/init/bash /usr/share/Modules/init/bash /usr/share/modules/init/bash; do
    if [[ -r $hsm_init ]]; then . "$hsm_init"; break; fi
  done
fi"""


def load_lines(modules: Sequence[str]) -> list[str]:
    """Shell lines that make ``module`` available and load these modules, in order."""
    if not modules:
        return []
    return [MODULE_INIT, *(f"module load {shlex.join(shlex.split(m))}" for m in modules)]
