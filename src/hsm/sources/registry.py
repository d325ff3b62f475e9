"""Build the sources a sweep asked for from the project config.

The SSH and cluster backends (and asyncssh with them) are imported by the functions that
build them, so a command or a sweep that does not use one starts without loading them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hsm.errors import ConfigError, UnknownSourceError
from hsm.sources.base import Source
from hsm.sources.local import LocalSource
from hsm.spec.config import LoadedConfig
from hsm.spec.config import local_slots as config_local_slots
from hsm.spec.sweep import Resources

if TYPE_CHECKING:
    from hsm.sources.transport import SshTarget

LOCAL = "local"


def known_sources(loaded: LoadedConfig) -> list[str]:
    return [LOCAL, *loaded.config.distributed.remotes]


def resolve_names(loaded: LoadedConfig, *, names: Sequence[str], distributed: bool) -> list[str]:
    """The source names a run uses: ``--source`` names, every enabled one, or this machine."""
    config = loaded.config
    known = known_sources(loaded)
    for name in names:
        if name not in known:
            raise UnknownSourceError(
                f"unknown source {name!r}; known sources: {', '.join(known)}"
                + (
                    f" (defined in {loaded.path})"
                    if loaded.path
                    else " (no hsm_config.yaml found, so only 'local' exists)"
                )
            )
    if names:
        return list(dict.fromkeys(names))
    if not distributed:
        return [LOCAL]
    chosen = [LOCAL] if config.distributed.include_local else []
    chosen += [n for n, r in config.distributed.remotes.items() if r.enabled]
    if not chosen:
        where = loaded.path or "hsm_config.yaml"
        raise ConfigError(f"{where}: distributed.remotes: --distributed found no enabled source")
    return chosen


def local_slots(loaded: LoadedConfig, parallel: int | None) -> int:
    """``--parallel``, else ``local.max_parallel_jobs``, else the CPUs this process may use
    (its affinity: a Slurm allocation or ``taskset`` gives fewer than the machine has)."""
    return parallel if parallel is not None else config_local_slots(loaded.config)


def local_python(loaded: LoadedConfig) -> str:
    """``local.python``, with a leading ``~`` expanded (no shell runs the task's argv)."""
    return os.path.expanduser(loaded.config.local.python)


def local_gpus(loaded: LoadedConfig) -> list[int]:
    gpus = loaded.config.local.gpus
    if gpus is None:
        return []
    if gpus == "all":
        from hsm.sources.gpus import detect_local_gpus

        return detect_local_gpus()
    return list(gpus)


def build_sources(
    loaded: LoadedConfig,
    names: Sequence[str],
    *,
    parallel: int | None,
    resources: Resources | None = None,
) -> dict[str, Source]:
    """The sources of a run. ``resources`` (the sweep's) lets a cluster check, before
    anything is written, that its scheduler accepts the job script."""
    sources: dict[str, Source] = {}
    for name in names:
        if name == LOCAL:
            sources[name] = LocalSource(
                slots=local_slots(loaded, parallel),
                gpus=local_gpus(loaded),
                disk_path=str(loaded.project_root),
                python=local_python(loaded),
            )
        else:
            sources[name] = build_remote(loaded, name, resources=resources)
    if len(sources) > 1:
        from hsm.sources.queue import QueueSource

        # Beside other sources a cluster holds only its throttle's worth of tasks at once,
        # so it cannot swallow the queue while the other sources sit idle.
        for source in sources.values():
            if isinstance(source, QueueSource) and source.settings.throttle:
                source.slots = min(source.slots, source.settings.throttle)
    return sources


def ssh_config_file(loaded: LoadedConfig) -> str | None:
    """The OpenSSH client config to read, or None when the default one does not exist."""
    path = loaded.ssh_config_path
    if path.is_file():
        return str(path)
    if loaded.config.distributed.ssh_config or loaded.config.ssh_config:
        raise ConfigError(f"{loaded.path}: ssh_config: {path} does not exist")
    return None


def ssh_target(loaded: LoadedConfig, name: str) -> SshTarget:
    from hsm.sources.transport import SshTarget

    remote = loaded.config.distributed.remotes[name]
    return SshTarget(
        source=name,
        host=remote.host,
        port=remote.port,
        user=remote.user,
        ssh_key=remote.ssh_key,
        known_hosts=remote.known_hosts,
        ssh_config=ssh_config_file(loaded),
        connect_timeout=remote.connect_timeout,
        keepalive_interval=remote.keepalive_interval,
        keepalive_count_max=remote.keepalive_count_max,
    )


def push_excludes(loaded: LoadedConfig, extra: Sequence[str]) -> list[str]:
    """rsync excludes of the code push: hsm's own folders (when inside the project), then
    the remote's ``exclude`` list."""
    anchored = []
    for folder in (loaded.output_dir, loaded.state_dir):
        with contextlib.suppress(ValueError):
            anchored.append(f"/{folder.relative_to(loaded.project_root).as_posix()}/")
    return [*anchored, *extra]


def build_remote(loaded: LoadedConfig, name: str, *, resources: Resources | None = None) -> Source:
    remote = loaded.config.distributed.remotes[name]
    if remote.type == "ssh":
        from hsm.sources.ssh import SshSource
        from hsm.sources.transport import SshTransport

        gpus = remote.gpus if isinstance(remote.gpus, list) else []
        return SshSource(
            name,
            transport=SshTransport(ssh_target(loaded, name)),
            slots=remote.max_parallel_jobs,
            remote_root=remote.remote_root,
            python=remote.python,
            setup=remote.setup,
            gpus=gpus,
            keep_remote=remote.keep_remote,
            exclude=push_excludes(loaded, remote.exclude),
            probe_gpus=remote.gpus == "all",
            project_name=loaded.project_root.name or "project",
        )
    return build_cluster(loaded, name, resources=resources)


def build_cluster(loaded: LoadedConfig, name: str, *, resources: Resources | None = None) -> Source:
    """A Slurm or PBS cluster, reached through ``host`` (or this machine: ``host: local``)."""
    from hsm.sources.login import LocalLogin, Login, SshLogin
    from hsm.sources.pbs import Pbs
    from hsm.sources.queue import QueueSource
    from hsm.sources.scheduler import ClusterSettings, load_lines
    from hsm.sources.slurm import Slurm
    from hsm.sources.ssh import SshSource
    from hsm.sources.transport import SshTransport

    remote = loaded.config.distributed.remotes[name]
    try:
        modules = load_lines(remote.modules)
    except ValueError as exc:
        raise ConfigError(f"{loaded.path}: distributed.remotes.{name}.modules: {exc}") from None
    login: Login
    if remote.host == LOCAL:
        login = LocalLogin(str(loaded.output_dir))
    else:
        # The login node's checks (python found?) see the job's modules and setup lines.
        login = SshLogin(
            SshSource(
                name,
                transport=SshTransport(ssh_target(loaded, name)),
                slots=1,
                remote_root=remote.remote_root,
                python=remote.python,
                setup=[*modules, *remote.setup],
                keep_remote=remote.keep_remote,
                exclude=push_excludes(loaded, remote.exclude),
                project_name=loaded.project_root.name or "project",
                host_tasks=False,
            )
        )
    settings = ClusterSettings(
        partition=remote.partition,
        qos=remote.qos,
        account=remote.account,
        gpu_type=remote.gpu_type,
        modules=tuple(remote.modules),
        directives=tuple(remote.directives),
        throttle=remote.array_throttle or remote.max_parallel_jobs,
        max_array_size=remote.max_array_size,
        poll_max_interval=remote.poll_max_interval,
    )
    scheduler = Slurm() if remote.type == "slurm" else Pbs()
    return QueueSource(
        name,
        scheduler=scheduler,
        login=login,
        settings=settings,
        python=remote.python,
        setup=remote.setup,
        resources=resources,
    )
