"""One round trip that reads disk, load, cores and memory of a host, and its parser."""

from __future__ import annotations

from hsm.sources.base import HealthSample
from hsm.sources.local import parse_meminfo

# One round trip: expands "~", walks up from the root to the nearest existing folder (the
# root may not exist yet), then prints four sections. Builtins except df and nproc.
PROBE_SCRIPT = r"""
case $1 in '~') p=$HOME ;; '~/'*) p=$HOME/${1#'~/'} ;; /*) p=$1 ;; *) p=$HOME/$1 ;; esac
while [[ ! -e $p && $p == /?* ]]; do p=${p%/*}; p=${p:-/}; done
printf '%s\n' '--df'; df -P -B1 -- "$p" | { read -r _; read -r line; printf '%s\n' "$line"; }
printf '%s\n' '--load'; read -r load </proc/loadavg; printf '%s\n' "$load"
printf '%s\n' '--cores'; nproc
printf '%s\n' '--mem'; mapfile -t mem </proc/meminfo; printf '%s\n' "${mem[@]}"
"""


def parse_probe(text: str, root: str) -> HealthSample:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("--"):
            current = line[2:]
            sections[current] = []
        elif current:
            sections[current].append(line)
    try:
        df = sections["df"][0].split()
        total, free = int(df[1]), int(df[3])
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
