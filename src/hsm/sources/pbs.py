"""PBS (PBS Pro / OpenPBS and Torque): commands, job-id syntax, directives, state map.

The flavour is read from ``qstat --version`` before a sweep: PBS Pro prints ``pbs_version =``,
Torque ``Version:``. Anything else (e.g. the ``qsub``/``qstat``/``qdel`` wrappers Slurm ships
in ``slurm-wlm-torque``) is *generic*: plain ``qstat -f`` text, which does not name array
elements, so element states come from the wrapper's status files.

- pro: arrays ``-J 1-N -W max_run_subjobs=K``; status ``qstat -f -F json -x -t``;
  finished ``F``/``X`` with ``Exit_status``.
- torque: arrays ``-t 1-N%K``; status ``qstat -x -t`` (XML); finished ``C`` with
  ``exit_status``.
- generic: arrays ``-J 1-N%K``; status ``qstat -f`` (text); finished ``C``.

A batch of one task is submitted as a plain job (single-element arrays are not portable).
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from hsm.sources.process import CommandResult
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

log = logging.getLogger(__name__)

S = ElementState
# job_state letters (qstat(1B)); a finished letter is refined by the exit status.
STATES: Mapping[str, ElementState] = {
    "Q": S.PENDING,
    "H": S.PENDING,
    "W": S.PENDING,
    "T": S.PENDING,
    "M": S.PENDING,
    "R": S.RUNNING,
    "E": S.RUNNING,
    "B": S.RUNNING,
    "S": S.RUNNING,
    "U": S.RUNNING,
    "F": S.COMPLETED,
    "X": S.COMPLETED,
    "C": S.COMPLETED,
}
# Negative exit statuses the server sets when it kills a job (PBS Pro JOB_EXEC_KILL_*,
# Torque JOB_EXEC_OVERLIMIT_*). Other negative ones are failures to start: the node's fault.
EXIT_CAUSES: Mapping[str, Mapping[int, ElementState]] = {
    "pro": {
        -29: S.TIMEOUT,
        -28: S.TIMEOUT,
        -27: S.OUT_OF_MEMORY,
        -26: S.OUT_OF_MEMORY,
        -25: S.FAILED,
        -24: S.FAILED,
    },
    "torque": {-11: S.TIMEOUT, -12: S.TIMEOUT, -10: S.OUT_OF_MEMORY},
    "generic": {},
}
UNKNOWN_JOB = 153  # qstat's exit status for an unknown job id (PBSE_UNKJOBID % 256)
_JOB_ID = re.compile(r"^(\d+)(?:\[(\d*)\])?(\.[\w.-]+)?$")


def pbs_time(seconds: int) -> str:
    """``walltime=H:MM:SS`` (hours may exceed 24)."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def canonical(job_id: str) -> str:
    """A job id without its server suffix: ``12[3].srv`` -> ``12[3]``."""
    match = _JOB_ID.match(job_id.strip())
    if match is None:
        return job_id.strip()
    number, index, _ = match.groups()
    return number if index is None else f"{number}[{index}]"


def refine(state: ElementState, exit_code: int | None, flavor: str) -> ElementState:
    if state is not S.COMPLETED or exit_code is None or exit_code == 0:
        return state
    if exit_code < 0:
        return EXIT_CAUSES.get(flavor, {}).get(exit_code, S.NODE_FAIL)
    return S.FAILED


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _element(job_id: str, attrs: Mapping[str, Any], flavor: str) -> Element:
    raw = str(attrs.get("job_state", "")).strip()
    code = _int(attrs.get("Exit_status", attrs.get("exit_status")))
    state = refine(translate(raw, STATES, "pbs"), code, flavor)
    return Element(
        canonical(job_id),
        state,
        raw,
        exit_code=code,
        name=str(attrs.get("Job_Name", "")),
        reason=str(attrs.get("comment", "")),
    )


def parse_qstat_json(text: str) -> list[Element]:
    """PBS Pro ``qstat -f -F json``: ``{"Jobs": {id: {attribute: value}}}`` (no "Jobs" when
    nothing matched)."""
    if not text.strip():
        return []
    data = json.loads(text, strict=False)
    jobs = data.get("Jobs", {}) if isinstance(data, dict) else {}
    return [
        _element(job_id, attrs, "pro") for job_id, attrs in jobs.items() if isinstance(attrs, dict)
    ]


def parse_qstat_xml(text: str) -> list[Element]:
    """Torque ``qstat -x``: ``<Data><Job><Job_Id>..</Job_Id><job_state>..</job_state>...``."""
    text = text.strip()
    if not text:
        return []
    root = ET.fromstring(text[text.index("<Data") :] if "<Data" in text else text)
    out = []
    for job in root.iter("Job"):
        attrs = {child.tag: (child.text or "") for child in job}
        out.append(_element(attrs.get("Job_Id", ""), attrs, "torque"))
    return out


def parse_qstat_text(text: str, flavor: str = "generic") -> list[Element]:
    """``qstat -f`` text: ``Job Id: X`` then indented ``key = value`` lines (long values
    continue on lines indented by a tab)."""
    out = []
    job_id: str | None = None
    attrs: dict[str, str] = {}
    last = ""
    for line in [*text.splitlines(), "Job Id: "]:
        if line.startswith("Job Id:"):
            if job_id:
                out.append(_element(job_id, attrs, flavor))
            job_id, attrs, last = line.partition(":")[2].strip(), {}, ""
        elif " = " in line and line[:1] in (" ", "\t"):
            key, _, value = line.strip().partition(" = ")
            attrs[key.strip()] = value.strip()
            last = key.strip()
        elif last and line.startswith("\t"):
            attrs[last] += line.strip()
    return out


class Pbs(Scheduler):
    name = "pbs"
    commands = ("qsub", "qstat", "qdel")
    directive = "#PBS"
    index_expr = "${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-${SLURM_ARRAY_TASK_ID:-1}}}"
    job_id_expr = "${PBS_JOBID:-${SLURM_JOB_ID:-}}"
    ping = "qstat -Q"
    probe_sections = (("queue", 'qstat -u "$(id -un)"'),)
    max_array_size = 10000  # PBS Pro's default max_array_size

    def __init__(self, flavor: str = "pro") -> None:
        self.flavor = flavor
        self.blind = flavor == "generic"
        self._warned_qos = False

    async def configure(self, run: Runner, source: str) -> None:
        await require_answer(run, ["qstat", "-Q"], source=source, who="the PBS server", timeout=30)
        version = await run(["qstat", "--version"], timeout=30)
        text = version.stdout + version.stderr
        if version.returncode == 0 and "pbs_version" in text:
            self.flavor = "pro"
            server = await run(["qstat", "-B", "-f"], timeout=30)
            match = re.search(r"max_array_size\s*=\s*(\d+)", server.stdout)
            if match:
                self.max_array_size = int(match.group(1))
        elif version.returncode == 0 and "Version:" in text:
            self.flavor = "torque"
        else:
            self.flavor = "generic"
        self.blind = self.flavor == "generic"
        log.debug("source %s: PBS flavour %s", source, self.flavor)

    def header(self, opts: JobOptions, array: ArraySpec) -> list[str]:
        lines = [f"-N {array.name}", "-o /dev/null", "-e /dev/null"]
        if opts.walltime_seconds:
            lines.append(f"-l walltime={pbs_time(opts.walltime_seconds)}")
        if self.flavor == "torque":
            if opts.cpus or opts.gpus:
                node = f"nodes=1:ppn={opts.cpus or 1}"
                node += f":gpus={opts.gpus}" if opts.gpus else ""
                node += f":{opts.gpu_type}" if opts.gpu_type else ""
                lines.append(f"-l {node}")
            if opts.mem_mb:
                lines.append(f"-l mem={opts.mem_mb}mb")
        else:
            chunk = [f"ncpus={opts.cpus}"] if opts.cpus else []
            chunk += [f"mem={opts.mem_mb}mb"] if opts.mem_mb else []
            chunk += [f"ngpus={opts.gpus}"] if opts.gpus else []
            chunk += [f"gpu_type={opts.gpu_type}"] if opts.gpu_type else []
            if chunk:
                lines.append("-l select=1:" + ":".join(chunk))
        if opts.partition:
            lines.append(f"-q {opts.partition}")
        if opts.account:
            lines.append(f"-A {opts.account}")
        if opts.qos and not self._warned_qos:
            self._warned_qos = True
            log.warning(
                "qos %r is ignored: PBS has no QoS (use directives: for a site equivalent)",
                opts.qos,
            )
        return [f"{self.directive} {line}" for line in lines] + self.directives(opts)

    def submit_argv(self, script: str, array: ArraySpec, after: str | None) -> list[str]:
        argv = ["qsub", "-o", "/dev/null", "-e", "/dev/null"]
        n, k = array.size, array.throttle
        throttled = bool(k and k < n)
        if n > 1 and self.flavor == "torque":
            argv += ["-t", f"1-{n}" + (f"%{k}" if throttled else "")]
        elif n > 1 and self.flavor == "pro":
            argv += ["-J", f"1-{n}"] + (["-W", f"max_run_subjobs={k}"] if throttled else [])
        elif n > 1:
            argv += ["-J", f"1-{n}" + (f"%{k}" if throttled else "")]
        if after:
            argv += ["-W", f"depend=afterany:{after}"]
        return [*argv, script]

    def parse_submit(self, stdout: str) -> str:
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        if not lines or not _JOB_ID.match(lines[-1]):
            raise ValueError(stdout)
        return lines[-1]

    def element_id(self, array_id: str, index: int, size: int) -> str:
        if size == 1:
            return array_id
        match = _JOB_ID.match(array_id)
        if match is None:
            raise ValueError(array_id)
        number, _, suffix = match.groups()
        return f"{number}[{index}]{suffix or ''}"

    def array_of(self, job_id: str) -> str:
        match = _JOB_ID.match(job_id)
        if match is None or match.group(2) is None:
            return job_id
        number, _, suffix = match.groups()
        return f"{number}[]{suffix or ''}"

    def canonical(self, job_id: str) -> str:
        return canonical(job_id)

    def status_argv(self, array_ids: Sequence[str]) -> list[str]:
        if self.flavor == "pro":
            return ["qstat", "-f", "-F", "json", "-x", "-t", *array_ids]
        if self.flavor == "torque":
            return ["qstat", "-x", "-t", *array_ids]
        return ["qstat", "-f", *array_ids]  # only the sweep's own jobs

    def status_failed(self, result: CommandResult) -> bool:
        return result.returncode not in (0, UNKNOWN_JOB) and not result.stdout.strip()

    def parse_status(self, text: str) -> list[Element]:
        if self.flavor == "pro":
            return parse_qstat_json(text)
        if self.flavor == "torque":
            return parse_qstat_xml(text)
        return parse_qstat_text(text)

    def find_argv(self, names: Sequence[str]) -> list[str]:
        if self.flavor == "pro":
            return ["qstat", "-f", "-F", "json", "-x"]
        if self.flavor == "torque":
            return ["qstat", "-x"]
        return ["qstat", "-f"]

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["qdel", *job_ids]

    def health_extra(self, sections: Mapping[str, list[str]]) -> dict[str, Any]:
        queue = {"pending": 0, "running": 0}
        for line in sections.get("queue", []):
            fields = line.split()
            if len(fields) >= 3 and fields[0][:1].isdigit():
                state = STATES.get(fields[-2])
                if state in (S.PENDING, S.RUNNING):
                    queue[state.value] += 1
        return {"flavor": self.flavor, "queue": queue}
