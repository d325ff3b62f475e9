"""The project config, ``hsm_config.yaml``: models, defaults and discovery.

Every key is optional; a missing file means all defaults. Unknown keys are an
error that names the key and suggests the nearest valid one. Sizes accept units
(``"2GB"`` = 2*10^9 bytes, ``"1.5GiB"`` = 1.5*2^30 bytes, a plain integer is bytes).
Intervals are seconds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from hsm.errors import ConfigError
from hsm.spec.errors import from_validation_error
from hsm.spec.yamlload import YamlDocument, load_yaml

CONFIG_FILENAME = "hsm_config.yaml"
DEFAULT_SSH_CONFIG = "~/.ssh/config"
LOCAL_SOURCE = "local"
_SOURCE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")

GpuList = list[int] | Literal["all"] | None
"""A GPU allowlist: ``None`` (no restriction), ``"all"``, or a list of device indexes."""


def _check_gpus(value: Any) -> GpuList:
    if value is None:
        return None
    if value == "all":
        return "all"
    if isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        return list(value)
    raise ValueError(
        f"expected null, 'all' or a list of GPU indexes such as [0, 1], found {value!r}"
    )


def _check_source_name(name: str) -> str:
    if name == LOCAL_SOURCE:
        raise ValueError(
            "the source name 'local' is reserved for this machine; choose another name"
        )
    if not _SOURCE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid source name {name!r}: use only letters, digits, '_', '.' and '-'"
        )
    return name


def _check_size(value: ByteSize) -> ByteSize:
    if value < 0:
        raise ValueError(f"a size must not be negative, found {int(value)}")
    return value


def _size(value: int) -> str:
    return ByteSize(value).human_readable(decimal=True)


Gpus = Annotated[GpuList, BeforeValidator(_check_gpus)]
Size = Annotated[ByteSize, AfterValidator(_check_size)]
SourceName = Annotated[str, AfterValidator(_check_source_name)]
Percent = Annotated[float, Field(ge=0, le=100)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LocalConfig(_Model):
    """``local:`` this machine as a source."""

    max_parallel_jobs: Annotated[int, Field(ge=1)] | None = None
    gpus: Gpus = None
    python: Annotated[str, Field(min_length=1)] = "python3"  # runs a `script:` here


class DiskConfig(_Model):
    """``disk:`` the job wrapper's disk guard, on every host."""

    project_min_free: Size = ByteSize(2 * 10**9)
    task_min_free: Size = ByteSize(10**9)
    check_interval: Annotated[int, Field(ge=1)] = 300
    warn_below: Size = ByteSize(10**9)
    kill_below: Size = ByteSize(200 * 10**6)

    @field_validator("kill_below")
    @classmethod
    def _kill_below_warn(cls, value: ByteSize, info: ValidationInfo) -> ByteSize:
        warn = info.data.get("warn_below")
        if isinstance(warn, int) and value > warn:
            raise ValueError(f"must not be above warn_below ({_size(warn)}), found {_size(value)}")
        return value


class HealthConfig(_Model):
    """``health:`` thresholds that classify a source's health sample."""

    disk_critical_free: Size = ByteSize(10**9)
    disk_critical_percent: Percent = 5.0
    disk_warning_free: Size = ByteSize(3 * 10**9)
    disk_warning_percent: Percent = 10.0
    max_load_per_core: Annotated[float, Field(gt=0)] = 2.0
    max_memory_percent: Percent = 95.0
    # Degraded when this share of a source's recent jobs failed on disk space while its
    # disk is low (warning or critical).
    disk_failure_rate: Annotated[float, Field(gt=0, le=1)] = 0.2


class RemoteConfig(_Model):
    """One entry under ``distributed.remotes``: an SSH host or a Slurm/PBS cluster."""

    type: Literal["ssh", "slurm", "pbs"] = "ssh"
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: str | None = None
    ssh_key: str | None = None
    known_hosts: str | None = None
    max_parallel_jobs: Annotated[int, Field(ge=1)] = 4
    remote_root: str = "~/hsm"
    python: str = "python3"
    setup: list[str] = Field(default_factory=list)
    enabled: bool = True
    gpus: Gpus = None
    keep_remote: bool = False
    connect_timeout: Annotated[float, Field(gt=0)] = 3.0
    keepalive_interval: Annotated[float, Field(ge=0)] = 1.0
    keepalive_count_max: Annotated[int, Field(ge=1)] = 3
    exclude: list[str] = Field(default_factory=list)
    # Cluster fields: used by slurm/pbs sources, accepted (and ignored) for ssh.
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    gpu_type: str | None = None
    modules: list[str] = Field(default_factory=list)
    directives: list[str] = Field(default_factory=list)
    array_throttle: Annotated[int, Field(ge=1)] | None = None
    max_array_size: Annotated[int, Field(ge=1)] | None = None
    poll_max_interval: Annotated[float, Field(ge=1)] = 60.0


class DistributedConfig(_Model):
    """``distributed:`` sources, dispatch strategy and failsafe policy."""

    enabled: bool = True
    strategy: Literal["round_robin", "least_loaded"] = "round_robin"
    enable_source_failsafe: bool = True
    source_failure_threshold: Annotated[float, Field(gt=0, le=1)] = 0.4
    min_jobs_for_failsafe: Annotated[int, Field(ge=1)] = 5
    auto_disable_unhealthy_sources: bool = True
    health_check_failure_threshold: Annotated[int, Field(ge=1)] = 3
    health_check_interval: Annotated[float, Field(gt=0)] = 60.0
    include_local: bool = True
    max_retries: Annotated[int, Field(ge=0)] = 2
    # Seconds with tasks pending, none running and no source able to take one, before the
    # sweep gives up (exit 3).
    stall_timeout: Annotated[float, Field(gt=0)] = 600.0
    ssh_config: str | None = None
    remotes: dict[SourceName, RemoteConfig] = Field(default_factory=dict)


class ResultsConfig(_Model):
    """``results:`` where ``hsm results`` and the report find each task's metrics."""

    # A JSON file in each task folder, instead of metrics.json (e.g. "eval/scores.json").
    metrics_file: str | None = None


class ProjectConfig(_Model):
    """The whole ``hsm_config.yaml``."""

    local: LocalConfig = Field(default_factory=LocalConfig)
    disk: DiskConfig = Field(default_factory=DiskConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    ssh_config: str | None = None
    output_dir: str = "runs"
    state_dir: str = ".hsm"

    def effective_ssh_config(self) -> str:
        """The OpenSSH client config to read: ``distributed.ssh_config``, else the
        top-level ``ssh_config``, else ``~/.ssh/config`` (as written, not expanded)."""
        return self.distributed.ssh_config or self.ssh_config or DEFAULT_SSH_CONFIG


def cpu_count() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def local_slots(config: ProjectConfig) -> int:
    """How many tasks run at once on this machine: ``local.max_parallel_jobs``,
    or the core count when it is not set."""
    return config.local.max_parallel_jobs or cpu_count()


def _under_root(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


@dataclass(frozen=True)
class LoadedConfig:
    """A validated project config, the file it came from and the project root.

    ``path`` is ``None`` when no ``hsm_config.yaml`` was found (all defaults);
    ``project_root`` is then the folder hsm was started in.
    """

    config: ProjectConfig
    path: Path | None
    project_root: Path

    @property
    def output_dir(self) -> Path:
        """Where sweep folders go (``output_dir`` relative to the project root)."""
        return _under_root(self.project_root, self.config.output_dir)

    @property
    def state_dir(self) -> Path:
        """Where the state database goes (``state_dir`` relative to the project root)."""
        return _under_root(self.project_root, self.config.state_dir)

    @property
    def ssh_config_path(self) -> Path:
        """The effective OpenSSH client config, ``~`` expanded, relative to the root."""
        return _under_root(self.project_root, self.config.effective_ssh_config())


def parse_config(doc: YamlDocument) -> ProjectConfig:
    """Validate a loaded YAML document as a project config."""
    try:
        return ProjectConfig.model_validate(doc.data)
    except ValidationError as exc:
        raise from_validation_error(exc, doc, ProjectConfig) from None


def find_config(cwd: Path) -> Path | None:
    """The nearest ``hsm_config.yaml`` in ``cwd`` or one of its parents."""
    start = cwd.resolve()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return None


def load_config(explicit: Path | None, cwd: Path) -> LoadedConfig:
    """Find, load and validate the project config.

    ``explicit`` (``--config FILE``) must exist. Without it, ``hsm_config.yaml`` is
    looked for in ``cwd`` and then in each parent folder; the folder holding it is
    the project root. When none is found, the defaults apply, ``path`` is ``None``
    and ``cwd`` is the project root.
    """
    if explicit is not None:
        path = explicit if explicit.is_absolute() else cwd / explicit
        if not path.exists():
            raise ConfigError(f"{explicit}: config file not found (given with --config)")
        if not path.is_file():
            raise ConfigError(f"{explicit}: not a file (given with --config)")
        path = path.resolve()
    else:
        found = find_config(cwd)
        if found is None:
            return LoadedConfig(config=ProjectConfig(), path=None, project_root=cwd.resolve())
        path = found
    doc = load_yaml(path, allow_empty=True)
    return LoadedConfig(config=parse_config(doc), path=path, project_root=path.parent)
