"""Slurm: commands, job-id syntax, directive header and state map. Mostly data.

Polling asks ``squeue -t all -r`` for every element of every array of a sweep in one call: it
lists pending, running and (for ``MinJobAge`` after their end) finished elements, from the same
controller records ``scontrol show job`` shows. Elements the controller has already forgotten
come from ``sacct`` when the cluster keeps accounting, else from the wrapper's status file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hsm.sources.scheduler import (
    ArraySpec,
    Element,
    JobOptions,
    Runner,
    Scheduler,
    require_answer,
    translate,
)
from hsm.states import ElementState

S = ElementState
# squeue/sacct/scontrol state names (JOB STATE CODES in squeue(1) and sacct(1)).
STATES: Mapping[str, ElementState] = {
    "PENDING": S.PENDING,
    "CONFIGURING": S.PENDING,
    "REQUEUED": S.PENDING,
    "REQUEUE_HOLD": S.PENDING,
    "REQUEUE_FED": S.PENDING,
    "RESV_DEL_HOLD": S.PENDING,
    "RUNNING": S.RUNNING,
    "COMPLETING": S.RUNNING,
    "SUSPENDED": S.RUNNING,
    "STAGE_OUT": S.RUNNING,
    "SIGNALING": S.RUNNING,
    "RESIZING": S.RUNNING,
    "STOPPED": S.RUNNING,
    "COMPLETED": S.COMPLETED,
    "FAILED": S.FAILED,
    "SPECIAL_EXIT": S.FAILED,
    "TIMEOUT": S.TIMEOUT,
    "DEADLINE": S.TIMEOUT,
    "OUT_OF_MEMORY": S.OUT_OF_MEMORY,
    "NODE_FAIL": S.NODE_FAIL,
    "BOOT_FAIL": S.NODE_FAIL,
    "PREEMPTED": S.PREEMPTED,
    "CANCELLED": S.CANCELLED,
    "REVOKED": S.CANCELLED,
}
SEP = "|"
STATUS_FORMAT = SEP.join(["%i", "%T", "%j", "%r"])  # element id, state, name, reason
_ELEMENT = re.compile(r"(\d+)_(\d+)")
_CONFIG_LINE = re.compile(r"^(\w+)\s+=\s+(.*?)\s*$")


def slurm_time(seconds: int) -> str:
    """A walltime as ``--time`` takes it: ``HH:MM:SS`` or ``D-HH:MM:SS`` (Slurm rounds
    seconds up to whole minutes)."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


def parse_config(text: str) -> dict[str, str]:
    """``scontrol show config``: ``Key = Value`` lines."""
    out = {}
    for line in text.splitlines():
        match = _CONFIG_LINE.match(line)
        if match:
            out[match.group(1)] = match.group(2)
    return out


def parse_squeue(text: str) -> list[Element]:
    """``squeue -h -r -o '%i|%T|%j|%r'`` lines: one per array element."""
    out = []
    for line in text.splitlines():
        parts = line.split(SEP, 3)
        if len(parts) < 2 or not parts[0].strip():
            continue
        raw = parts[1].strip()
        out.append(
            Element(
                parts[0].strip(),
                translate(raw, STATES, "slurm"),
                raw,
                name=parts[2].strip() if len(parts) > 2 else "",
                reason=parts[3].strip() if len(parts) > 3 else "",
            )
        )
    return out


def parse_exit_code(text: str) -> int | None:
    """sacct's ``ExitCode`` ``N:S``: the exit status, or 128+S after a signal S."""
    code, _, sig = text.partition(":")
    if not code.isdigit():
        return None
    if sig.isdigit() and int(sig):
        return 128 + int(sig)
    return int(code)


def parse_sacct(text: str) -> list[Element]:
    """``sacct -n -P -X -o JobID,State,ExitCode,JobName`` lines. Pending ranges such as
    ``12_[3-9]`` are skipped (they are still in the live queue); ``CANCELLED by 0`` is
    ``CANCELLED``."""
    out = []
    for line in text.splitlines():
        parts = line.split(SEP)
        if len(parts) < 3 or not _ELEMENT.fullmatch(parts[0].strip()):
            continue
        raw = parts[1].split()[0] if parts[1].split() else ""
        out.append(
            Element(
                parts[0].strip(),
                translate(raw, STATES, "slurm"),
                raw,
                exit_code=parse_exit_code(parts[2].strip()),
                name=parts[3].strip() if len(parts) > 3 else "",
            )
        )
    return out


def parse_sinfo(lines: Sequence[str]) -> dict[str, Any]:
    """``sinfo -h -o '%P|%a|%D|%T'``: partitions, whether they are up, nodes by state."""
    partitions: dict[str, Any] = {}
    usable = 0
    for line in lines:
        parts = line.strip().split(SEP)
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        name, avail, count, state = parts
        default = name.endswith("*")
        name = name.rstrip("*")
        entry = partitions.setdefault(name, {"available": avail, "default": default, "nodes": {}})
        state = state.rstrip("*~#!%$@^-")
        entry["nodes"][state] = entry["nodes"].get(state, 0) + int(count)
        if avail == "up" and state in ("idle", "mixed", "allocated", "completing"):
            usable += int(count)
    return {"partitions": partitions, "usable_nodes": usable}


class Slurm(Scheduler):
    name = "slurm"
    commands = ("sbatch", "squeue", "scontrol", "scancel")
    directive = "#SBATCH"
    index_expr = "${SLURM_ARRAY_TASK_ID:-}"
    job_id_expr = "${SLURM_ARRAY_JOB_ID:-}_${SLURM_ARRAY_TASK_ID:-} (job ${SLURM_JOB_ID:-})"
    ping = "scontrol ping"
    probe_sections = (("nodes", "sinfo -h -o '%P|%a|%D|%T'"), ("queue", "squeue -h --me -o %T"))
    chain_chunks = True
    native_signal = True  # --signal=B:SIG@SECONDS
    max_array_size = 1000  # Slurm's default MaxArraySize is 1001: indexes up to 1000

    def __init__(self) -> None:
        self.accounting = False

    async def configure(self, run: Runner, source: str) -> None:
        await require_answer(
            run, ["scontrol", "ping"], source=source, who="the Slurm controller", timeout=20
        )
        shown = await run(["scontrol", "show", "config"], timeout=30)
        config = parse_config(shown.stdout)
        size = config.get("MaxArraySize", "")
        if size.isdigit() and int(size) > 1:
            self.max_array_size = int(size) - 1  # indexes must stay below MaxArraySize
        self.accounting = config.get("AccountingStorageType", "accounting_storage/none") not in (
            "accounting_storage/none",
            "(null)",
            "",
        )

    def header(self, opts: JobOptions, array: ArraySpec) -> list[str]:
        throttle = f"%{array.throttle}" if array.throttle and array.throttle < array.size else ""
        lines = [
            f"--job-name={array.name}",
            f"--array=1-{array.size}{throttle}",
            "--output=/dev/null",
            "--no-requeue",
        ]
        if opts.walltime_seconds:
            lines.append(f"--time={slurm_time(opts.walltime_seconds)}")
        if opts.signal:  # to the batch shell: the job wrapper, which passes it to the task
            lines.append(f"--signal=B:{opts.signal}@{opts.signal_seconds}")
        if opts.cpus:
            lines.append(f"--cpus-per-task={opts.cpus}")
        if opts.mem_mb:
            lines.append(f"--mem={opts.mem_mb}M")
        if opts.gpus:
            kind = f"{opts.gpu_type}:" if opts.gpu_type else ""
            lines.append(f"--gres=gpu:{kind}{opts.gpus}")
        for key in ("partition", "qos", "account"):
            value = getattr(opts, key)
            if value:
                lines.append(f"--{key}={value}")
        return [f"{self.directive} {line}" for line in lines] + self.directives(opts)

    def submit_argv(self, script: str, array: ArraySpec, after: str | None) -> list[str]:
        depend = [f"--dependency=afterany:{after}"] if after else []
        return ["sbatch", "--parsable", *depend, script]

    def parse_submit(self, stdout: str) -> str:
        lines = stdout.strip().splitlines()
        job_id = lines[-1].split(";")[0].strip() if lines else ""
        if not job_id.isdigit():
            raise ValueError(stdout)
        return job_id

    def element_id(self, array_id: str, index: int, size: int) -> str:
        return f"{array_id}_{index}"

    def array_of(self, job_id: str) -> str:
        return job_id.partition("_")[0]

    def status_argv(self, array_ids: Sequence[str]) -> list[str]:
        return ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(array_ids), "-o", STATUS_FORMAT]

    def status_failed(self, result: Any) -> bool:
        # Asking only for jobs the controller has forgotten is an error, not a failure.
        return result.returncode != 0 and "Invalid job id" not in result.stderr

    def parse_status(self, text: str) -> list[Element]:
        return parse_squeue(text)

    def history_argv(self, array_ids: Sequence[str]) -> list[str] | None:
        if not self.accounting:
            return None
        return [
            "sacct",
            "-n",
            "-P",
            "-X",
            "-j",
            ",".join(array_ids),
            "-o",
            "JobID,State,ExitCode,JobName",
        ]

    def parse_history(self, text: str) -> list[Element]:
        return parse_sacct(text)

    def find_argv(self, names: Sequence[str]) -> list[str]:
        return ["squeue", "-h", "-r", "-t", "all", "-n", ",".join(names), "-o", STATUS_FORMAT]

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["scancel", *job_ids]

    def signal_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        return ["scancel", "--batch", "--signal=TERM", *job_ids]

    def test_argv(self) -> list[str] | None:
        return ["sbatch", "--test-only"]

    def health_extra(self, sections: Mapping[str, list[str]]) -> dict[str, Any]:
        extra = parse_sinfo(sections.get("nodes", []))
        queue = {"pending": 0, "running": 0}
        for line in sections.get("queue", []):
            state = STATES.get(line.strip())
            if state in (S.PENDING, S.RUNNING):
                queue[state.value] += 1
        extra["queue"] = queue
        return extra
