"""The health probes: one round trip that reads an SSH host's disk, load, cores and memory,
one that reads a cluster's disk and its scheduler's state, and their parsers.

A probe prints sections, each headed by a line ``--NAME`` (or ``--NAME VALUE``, the value
being the section's first line); both begin with `DISK`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from hsm.sources.base import HealthSample
from hsm.sources.local import parse_meminfo
from hsm.sources.remote import script
from hsm.sources.scheduler import Scheduler

# The "--df" section of both probes (lib/disk.sh), and an SSH host's whole probe: the disk,
# then load, cores and memory (probe.sh).
DISK = script("lib/disk.sh")
PROBE_SCRIPT = script("probe.sh")

_HEADER = re.compile(r"--([a-z_]+)(?: (.*))?")


def probe_sections(text: str) -> dict[str, list[str]]:
    """The sections of a probe's output, by name (lines before the first header are left)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        header = _HEADER.fullmatch(line)
        if header is not None:
            current = sections[header[1]] = [] if header[2] is None else [header[2]]
        elif current is not None:
            current.append(line)
    return sections


def disk_bytes(sections: Mapping[str, list[str]]) -> tuple[int, int]:
    """(total, free) bytes from the ``df`` section; ValueError when it has none."""
    try:
        df = sections["df"][0].split()
        return int(df[1]), int(df[3])
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"no disk usage in the df section ({exc!r})") from None


def parse_probe(text: str, root: str) -> HealthSample:
    """The health of an SSH host, from the output of `PROBE_SCRIPT`."""
    sections = probe_sections(text)
    try:
        total, free = disk_bytes(sections)
        load1 = float(sections["load"][0].split()[0])
        cores = int(sections["cores"][0].strip())
    except (KeyError, IndexError, ValueError) as exc:
        return HealthSample(
            reachable=True, disk_path=root, error=f"cannot parse the probe output: {exc}"
        )
    return HealthSample(
        reachable=True,
        disk_path=root,
        free_bytes=free,
        total_bytes=total,
        load1=load1,
        cores=cores,
        memory_percent=parse_meminfo("\n".join(sections.get("mem", []))),
    )


def queue_probe_script(sched: Scheduler, *, sections: bool = True) -> str:
    """A cluster: DISK, the controller's answer, then (only if it answers, and with
    ``sections``) the scheduler's own sections. Every scheduler command is bounded by
    ``timeout``."""
    lines = [
        DISK,
        f"out=$(timeout 10 {sched.ping} 2>&1); rc=$?",
        'printf -- \'--ping %s\\n%s\\n\' "$rc" "$out"',
        'if [ "$rc" = 0 ]; then',
    ]
    for name, command in sched.probe_sections if sections else ():
        lines.append(f"  printf -- '--{name}\\n'; timeout 10 {command} 2>/dev/null")
    lines += ["fi", "true"]
    return "\n".join(lines) + "\n"


def parse_queue_probe(sched: Scheduler, text: str, root: str) -> HealthSample:
    """The health of a cluster, from the output of `queue_probe_script`."""
    sections = probe_sections(text)
    free = total = None
    with contextlib.suppress(ValueError):
        total, free = disk_bytes(sections)
    code, *answer_lines = sections.get("ping") or [""]
    ping_rc = int(code) if code.strip().isdigit() else None
    answer = " ".join(s.strip() for s in answer_lines if s.strip())
    extra: dict[str, Any] = {"scheduler": sched.name}
    if ping_rc != 0:
        extra["controller"] = "down"
        return HealthSample(
            reachable=False,
            disk_path=root,
            free_bytes=free,
            total_bytes=total,
            error=f"the {sched.name} controller does not answer "
            f"({sched.ping}: {answer or 'no answer'})",
            extra=extra,
        )
    extra["controller"] = "up"
    extra.update(sched.health_extra(sections))
    return HealthSample(
        reachable=True, disk_path=root, free_bytes=free, total_bytes=total, extra=extra
    )
