"""Where a cluster's commands run and where its files live: this machine, or a login node.

A login node is reached over SSH exactly like an SSH source: the same transport, the same code
push and the same result pull (an :class:`~hsm.sources.ssh.SshSource` does that part). With
``host: local`` the scheduler commands run here (``hsm.sources.process.run_local``) and the
task folders are the local sweep folder's, so nothing has to be copied back.
"""

from __future__ import annotations

import io
import os
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

from hsm.jobscript import WRAPPER_PATH, wrapper_name
from hsm.sources.base import JobHandle, SweepContext, task_folder_name
from hsm.sources.process import CommandResult, run_local
from hsm.sources.remote import script
from hsm.sources.ssh import SshSource
from hsm.sources.transport import SshTransport

READ_SCRIPT = script("read_files.sh")  # "<path>\0<content>\0" for every path
MISSING_SCRIPT = script("missing_commands.sh")  # the commands that are not on the PATH


class Login(ABC):
    """The cluster's login side: run commands, write and read files, push code, pull results."""

    remote = False
    transport: SshTransport | None = None

    @property
    @abstractmethod
    def label(self) -> str:
        """Host name for messages and handles."""

    @property
    @abstractmethod
    def work_root(self) -> str:
        """The folder whose disk the health probe reports (``~`` allowed)."""

    @abstractmethod
    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60.0
    ) -> CommandResult:
        """Run one command there (an argv list, never a shell string)."""

    async def preflight(self) -> None:  # noqa: B027 - optional
        """Check, before a sweep is created, that the login side can be used at all."""

    @abstractmethod
    async def prepare(self, ctx: SweepContext) -> None:
        """Create the sweep's folders, install the job wrapper, push the code."""

    @abstractmethod
    def sweep_root(self, ctx: SweepContext) -> str:
        """The folder holding this source's task folders and job scripts."""

    @abstractmethod
    def task_dir(self, ctx: SweepContext, number: int) -> str: ...

    @abstractmethod
    def project_dir(self, ctx: SweepContext) -> str: ...

    @abstractmethod
    def wrapper_path(self, ctx: SweepContext) -> str: ...

    @abstractmethod
    async def write(self, root: str, files: Mapping[str, bytes]) -> None:
        """Write ``files`` (paths relative to ``root``), creating folders as needed."""

    async def read(self, paths: Sequence[str]) -> dict[str, str]:
        """The text of each file; a missing file reads as an empty string."""
        if not paths:
            return {}
        result = await self.run(["bash", "-c", READ_SCRIPT, "hsm-read", *paths], timeout=60)
        fields = result.stdout.split("\0")
        return {fields[i]: fields[i + 1] for i in range(0, len(fields) - 1, 2)}

    async def missing(self, commands: Sequence[str]) -> list[str]:
        """Which of these commands are not on the PATH."""
        result = await self.run(["bash", "-c", MISSING_SCRIPT, "hsm-check", *commands])
        return result.stdout.split()

    async def collect(self, ctx: SweepContext, handle: JobHandle) -> None:  # noqa: B027
        """Bring a task folder into the local sweep folder (nothing to do here)."""

    async def finish(self, ctx: SweepContext, all_completed: bool) -> None:  # noqa: B027
        """Clean up after the sweep (nothing to do here)."""

    async def close(self) -> None:  # noqa: B027
        """Release connections."""


class LocalLogin(Login):
    """This machine is the login node: scheduler commands run here, files are local."""

    def __init__(self, work_root: str) -> None:
        self._work_root = work_root

    @property
    def label(self) -> str:
        return os.uname().nodename

    @property
    def work_root(self) -> str:
        return self._work_root

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60.0
    ) -> CommandResult:
        try:
            return await run_local(argv, input=input, timeout=timeout)
        except FileNotFoundError:
            return CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found")

    async def prepare(self, ctx: SweepContext) -> None:
        self._work_root = ctx.sweep_dir
        Path(ctx.sweep_dir, "tasks").mkdir(parents=True, exist_ok=True)
        wrapper = Path(self.wrapper_path(ctx))
        if not wrapper.exists():
            wrapper.parent.mkdir(parents=True, exist_ok=True)
            tmp = wrapper.with_suffix(".tmp")
            tmp.write_bytes(WRAPPER_PATH.read_bytes())
            os.replace(tmp, wrapper)

    def sweep_root(self, ctx: SweepContext) -> str:
        return ctx.sweep_dir

    def task_dir(self, ctx: SweepContext, number: int) -> str:
        return f"{ctx.sweep_dir}/tasks/{task_folder_name(number)}"

    def project_dir(self, ctx: SweepContext) -> str:
        return ctx.project_root

    def wrapper_path(self, ctx: SweepContext) -> str:
        # A copy in the sweep folder: compute nodes see it wherever they see the sweep.
        return f"{ctx.sweep_dir}/.hsm/{wrapper_name()}"

    async def write(self, root: str, files: Mapping[str, bytes]) -> None:
        for rel, data in files.items():
            path = Path(root, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    async def read(self, paths: Sequence[str]) -> dict[str, str]:
        out = {}
        for path in paths:
            try:
                out[path] = Path(path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                out[path] = ""
        return out


class SshLogin(Login):
    """A login node over SSH, served by the same remote-host object as an SSH source
    (``helper``, an `SshSource` that runs no tasks itself): one connection, the folders,
    the wrapper, the code snapshot and the pulls over one long-lived channel, so that a
    cluster's remote layout and its behaviour are those of an SSH host. Only the host monitor
    is left out: a login node starts no wrappers, its scheduler does."""

    remote = True

    def __init__(self, helper: SshSource) -> None:
        self.helper = helper
        self.transport = helper.transport

    @property
    def label(self) -> str:
        return self.helper.host_label()

    @property
    def work_root(self) -> str:
        return self.helper.remote_root

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 60.0
    ) -> CommandResult:
        return await self.helper.transport.run(argv, input=input, timeout=timeout)

    async def preflight(self) -> None:
        await self.helper.preflight()

    async def prepare(self, ctx: SweepContext) -> None:
        await self.helper.prepare(ctx=ctx)

    def sweep_root(self, ctx: SweepContext) -> str:
        return self.helper.sweep_root(ctx)

    def task_dir(self, ctx: SweepContext, number: int) -> str:
        return self.helper.task_dir(ctx, number)

    def project_dir(self, ctx: SweepContext) -> str:
        return self.helper.project_dir(ctx)

    def wrapper_path(self, ctx: SweepContext) -> str:
        return self.helper.wrapper_path(ctx)

    async def write(self, root: str, files: Mapping[str, bytes]) -> None:
        """All files in one round trip: a tar stream unpacked under ``root``."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for rel, data in files.items():
                info = tarfile.TarInfo(rel)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        argv = ["tar", "-x", "--no-same-owner", "--no-same-permissions", "-f", "-", "-C", root]
        result = await self.run(argv, input=buffer.getvalue(), timeout=120)
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-1:] or [""]
            raise OSError(
                f"writing {len(files)} file(s) under {root} on {self.label} failed "
                f"(exit {result.returncode}): {tail[0]}"
            )

    async def collect(self, ctx: SweepContext, handle: JobHandle) -> None:
        await self.helper.collect(ctx=ctx, handle=handle)

    async def finish(self, ctx: SweepContext, all_completed: bool) -> None:
        await self.helper.finish(ctx=ctx, all_completed=all_completed)

    async def close(self) -> None:
        await self.helper.close()
