"""Build the sources a sweep asked for from the project config."""

from __future__ import annotations

import os
from collections.abc import Sequence

from hsm.errors import ConfigError, UnknownSourceError
from hsm.sources.base import Source
from hsm.sources.local import LocalSource
from hsm.sources.ssh import SshSource
from hsm.sources.transport import SshTarget, SshTransport
from hsm.spec.config import LoadedConfig

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
                + (f" (defined in {loaded.path})" if loaded.path else
                   " (no hsm_config.yaml found, so only 'local' exists)"))
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
    if parallel is not None:
        return parallel
    configured = loaded.config.local.max_parallel_jobs
    return configured if configured is not None else (os.cpu_count() or 1)


def local_gpus(loaded: LoadedConfig) -> list[int]:
    gpus = loaded.config.local.gpus
    if gpus is None:
        return []
    if gpus == "all":
        from hsm.sources.gpus import detect_local_gpus

        return detect_local_gpus()
    return list(gpus)


def build_sources(loaded: LoadedConfig, names: Sequence[str], *,
                  parallel: int | None) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    for name in names:
        if name == LOCAL:
            sources[name] = LocalSource(slots=local_slots(loaded, parallel),
                                        gpus=local_gpus(loaded),
                                        disk_path=str(loaded.project_root))
        else:
            sources[name] = build_remote(loaded, name)
    return sources


def ssh_target(loaded: LoadedConfig, name: str) -> SshTarget:
    remote = loaded.config.distributed.remotes[name]
    return SshTarget(
        source=name, host=remote.host, port=remote.port, user=remote.user,
        ssh_key=remote.ssh_key, known_hosts=remote.known_hosts,
        ssh_config=loaded.config.effective_ssh_config(),
        connect_timeout=remote.connect_timeout, keepalive_interval=remote.keepalive_interval,
        keepalive_count_max=remote.keepalive_count_max)


def build_remote(loaded: LoadedConfig, name: str) -> Source:
    remote = loaded.config.distributed.remotes[name]
    if remote.type == "ssh":
        gpus = [] if remote.gpus in (None, "all") else list(remote.gpus)
        return SshSource(
            name, transport=SshTransport(ssh_target(loaded, name)),
            slots=remote.max_parallel_jobs, remote_root=remote.remote_root,
            python=remote.python, setup=remote.setup, gpus=gpus,
            keep_remote=remote.keep_remote, exclude=remote.exclude,
            probe_gpus=remote.gpus == "all")
    raise ConfigError(
        f"{loaded.path}: distributed.remotes.{name}.type: sources of type {remote.type!r}"
        " are not supported by this build of hsm")
