"""An SSH host as a source: push the code with rsync, run detached wrappers, pull results."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

from hsm.errors import SourceUnavailableError
from hsm.jobscript import encode_spec, parse_status, wrapper_text
from hsm.sources.base import (
    Capabilities,
    HealthSample,
    JobHandle,
    LaunchRequest,
    PollResult,
    PollState,
    Source,
    SweepContext,
    classify_status,
)
from hsm.sources.gpus import NVIDIA_SMI_QUERY, parse_gpu_indices
from hsm.sources.probe import PROBE_SCRIPT, parse_probe
from hsm.sources.transport import RemoteError, SshTransport

log = logging.getLogger(__name__)

# Reads every asked status file in one round trip: "<dir>\0<status json>\0<alive>\0".
POLL_SCRIPT = r"""
for d in "$@"; do
  s=""; [ -f "$d/status.json" ] && s=$(<"$d/status.json")
  alive=0
  if [[ $s =~ \"pid\":\ *([0-9]+) ]] && kill -0 "${BASH_REMATCH[1]}" 2>/dev/null; then alive=1; fi
  printf '%s\0%s\0%s\0' "$d" "$s" "$alive"
done
"""

CANCEL_SCRIPT = r"""
for d in "$@"; do
  s=""; [ -f "$d/status.json" ] && s=$(<"$d/status.json")
  if [[ $s =~ \"pid\":\ *([0-9]+) ]]; then kill -TERM "${BASH_REMATCH[1]}" 2>/dev/null; fi
done
true
"""

LAUNCH_SCRIPT = r"""
d=$1; w=$2
mkdir -p "$d/.hsm" && cat > "$d/.hsm/spec" || exit 97
cd / && setsid nohup bash "$w" "$d" </dev/null >/dev/null 2>&1 &
echo $!
"""

START_GRACE = 15.0


class SshSource(Source):
    capabilities = Capabilities(detached=True, remote=True, queue=False)

    def __init__(self, name: str, *, transport: SshTransport, slots: int, remote_root: str,
                 python: str, setup: Sequence[str], gpus: Sequence[int] = (),
                 keep_remote: bool = False, exclude: Sequence[str] = (),
                 lost_after: float = 5.0, probe_gpus: bool = False) -> None:
        super().__init__(name, slots=slots, setup=setup, python=python, gpus=gpus)
        self.transport = transport
        self.remote_root = remote_root
        self.keep_remote = keep_remote
        self.exclude = list(exclude)
        self.lost_after = lost_after
        self.probe_gpus = probe_gpus
        self._base: str | None = None
        self._unreachable_since: float | None = None
        self._launched_at: dict[str, float] = {}

    # -- paths ---------------------------------------------------------------------------
    def base(self, ctx: SweepContext) -> str:
        assert self._base is not None, "prepare() first"
        return f"{self._base}/{ctx.project_name}"

    def project_dir(self, ctx: SweepContext) -> str:
        return f"{self.base(ctx)}/code"

    def sweep_root(self, ctx: SweepContext) -> str:
        return f"{self.base(ctx)}/sweeps/{ctx.sweep_id}"

    def wrapper_path(self, ctx: SweepContext) -> str:
        digest = hashlib.sha256(wrapper_text().encode()).hexdigest()[:12]
        return f"{self.base(ctx)}/.hsm/wrapper-{digest}.sh"

    def host_label(self) -> str:
        return self.transport.target.host

    # -- contract ------------------------------------------------------------------------
    async def prepare(self, *, ctx: SweepContext) -> None:
        await self.transport.connect()
        self._base = await self._resolve_root()
        code, sweep_root = self.project_dir(ctx), self.sweep_root(ctx)
        wrapper = self.wrapper_path(ctx)
        check = (
            f"mkdir -p {shlex.quote(code)} {shlex.quote(sweep_root + '/tasks')} "
            f"{shlex.quote(self.base(ctx) + '/.hsm')} || exit 11; "
            f"[ -w {shlex.quote(sweep_root)} ] || exit 11; "
            f"command -v {shlex.quote(self.python)} >/dev/null || exit 12; "
            f"[ -f {shlex.quote(wrapper)} ] || cat > {shlex.quote(wrapper)} || exit 11"
        )
        result = await self.transport.run(check, input=wrapper_text())
        if result.exit_status == 11:
            raise SourceUnavailableError(
                f"source {self.name!r}: remote_root {self.remote_root!r} is not writable on "
                f"{self.host_label()}: {result.stderr.strip()}")
        if result.exit_status == 12:
            raise SourceUnavailableError(
                f"source {self.name!r}: python {self.python!r} not found on "
                f"{self.host_label()}; set distributed.remotes.{self.name}.python")
        result.check(f"source {self.name!r}: preparing {self.base(ctx)}")
        if self.probe_gpus:
            await self._detect_gpus()
        await self.push_code(ctx)

    async def _detect_gpus(self) -> None:
        """``gpus: all``: ask the host's nvidia-smi which GPUs exist."""
        result = await self.transport.run_argv(NVIDIA_SMI_QUERY)
        if result.exit_status != 0:
            raise SourceUnavailableError(
                f"source {self.name!r}: gpus: all, but nvidia-smi failed on "
                f"{self.host_label()}: {result.stderr.strip() or 'not found'}")
        self.gpus = parse_gpu_indices(result.stdout)

    async def _resolve_root(self) -> str:
        root = self.remote_root.rstrip("/") or "/"
        if root == "~" or root.startswith("~/"):
            home = (await self.transport.run('printf %s "$HOME"')).check("reading $HOME")
            root = home.stdout.strip() + root[1:]
        return root

    async def push_code(self, ctx: SweepContext) -> None:
        excludes = [".git/", ".hsm/", "__pycache__/", "*.pyc", "/runs/", *self.exclude]
        args = ["-a", "--delete", "--mkpath", "--filter=:- .gitignore"]
        args += [f"--exclude={e}" for e in excludes]
        args += [f"{ctx.project_root.rstrip('/')}/",
                 self.transport.rsync_remote(self.project_dir(ctx) + "/")]
        try:
            await self.transport.rsync(args, what="pushing the code with rsync")
        except Exception as exc:  # noqa: BLE001 - reported with the source name
            raise SourceUnavailableError(str(exc)) from None

    async def launch(self, *, ctx: SweepContext,
                     requests: Sequence[LaunchRequest]) -> list[JobHandle]:
        wrapper = self.wrapper_path(ctx)

        async def one(req: LaunchRequest) -> JobHandle:
            task_dir = self.task_dir(ctx, req.number)
            spec = encode_spec(self.task_spec(ctx, req, self.gpu_ids(req.slot)))
            cmd = shlex.join(["bash", "-c", LAUNCH_SCRIPT, "hsm-launch", task_dir, wrapper])
            result = (await self.transport.run(cmd, input=spec)).check(
                f"launching task {req.number} on {self.name}")
            self._launched_at[task_dir] = time.monotonic()
            return JobHandle(source=self.name, number=req.number, attempt=req.attempt,
                             task_dir=task_dir, job_id=result.stdout.strip() or None,
                             host=self.host_label())

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def poll(self, *, handles: Sequence[JobHandle]) -> dict[JobHandle, PollResult]:
        dirs = list(dict.fromkeys(h.task_dir for h in handles))
        try:
            result = await self.transport.run(
                shlex.join(["bash", "-c", POLL_SCRIPT, "hsm-poll", *dirs]), timeout=30)
        except (RemoteError, SourceUnavailableError, TimeoutError) as exc:
            return self._unreachable(handles, str(exc))
        self._unreachable_since = None
        fields = result.stdout.split("\0")
        seen: dict[str, tuple[str, bool]] = {}
        for i in range(0, len(fields) - 2, 3):
            seen[fields[i]] = (fields[i + 1], fields[i + 2] == "1")
        out: dict[JobHandle, PollResult] = {}
        now = time.monotonic()
        for h in handles:
            text, alive = seen.get(h.task_dir, ("", False))
            status = parse_status(text)
            state = classify_status(status, h.attempt)
            if state is PollState.FINISHED:
                self._launched_at.pop(h.task_dir, None)
                out[h] = PollResult(PollState.FINISHED, status)
            elif state is PollState.RUNNING:
                out[h] = PollResult(PollState.RUNNING if alive else PollState.LOST, status,
                                    "" if alive else "the job wrapper is gone")
            else:
                started = self._launched_at.setdefault(h.task_dir, now)
                lost = now - started > START_GRACE
                out[h] = PollResult(PollState.LOST if lost else PollState.STARTING, None,
                                    "the attempt never started" if lost else "")
        return out

    def _unreachable(self, handles: Sequence[JobHandle],
                     reason: str) -> dict[JobHandle, PollResult]:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
            log.warning("source %s is unreachable: %s", self.name, reason)
        lost = now - self._unreachable_since >= self.lost_after
        state = PollState.LOST if lost else PollState.UNKNOWN
        return {h: PollResult(state, None, f"host unreachable: {reason}") for h in handles}

    async def cancel(self, *, handles: Sequence[JobHandle]) -> None:
        dirs = [h.task_dir for h in handles]
        if dirs:
            await self.transport.run(shlex.join(["bash", "-c", CANCEL_SCRIPT, "hsm-cancel",
                                                 *dirs]), timeout=30)

    async def collect(self, *, ctx: SweepContext, handle: JobHandle) -> None:
        local = Path(ctx.sweep_dir, "tasks", Path(handle.task_dir).name)
        local.mkdir(parents=True, exist_ok=True)
        await self.transport.rsync(
            ["-a", self.transport.rsync_remote(handle.task_dir + "/"), f"{local}/"],
            what=f"pulling the results of task {handle.number}")

    async def finish(self, *, ctx: SweepContext, all_completed: bool) -> None:
        if all_completed and not self.keep_remote and self._base is not None:
            await self.transport.run(shlex.join(["rm", "-rf", "--", self.sweep_root(ctx)]))

    async def probe(self) -> HealthSample:
        root = self._base or self.remote_root
        try:
            if self._base is None:
                self._base = await self._resolve_root()
                root = self._base
            result = await self.transport.run(
                shlex.join(["bash", "-c", PROBE_SCRIPT, "hsm-probe", root]), timeout=15)
        except (RemoteError, SourceUnavailableError, TimeoutError) as exc:
            return HealthSample(reachable=False, error=str(exc))
        return parse_probe(result.stdout, root)

    async def close(self) -> None:
        await self.transport.close()
