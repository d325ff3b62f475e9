"""The bash programs hsm runs on remote hosts (SSH hosts and cluster login nodes), shipped as
``.sh`` files beside this module and checked by shellcheck in CI, like the job wrapper.

Each program is run as ``bash -c PROGRAM NAME ARG...`` (through ``bash -s`` on the host, so any
login shell works): values from the config, the sweep or the user only ever arrive as
positional arguments or on stdin, never in the program text. They need bash >= 4.4 and
coreutils. A program takes its shared parts from ``lib/`` with the two lines

    # shellcheck source=lib/NAME.sh
    . lib/NAME.sh

which `script` replaces by the part's text: what is sent is one self-contained program.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_INCLUDE = re.compile(r"^# shellcheck source=(lib/[\w.-]+\.sh)\n\. \1\n", re.MULTILINE)


@functools.cache
def script(name: str) -> str:
    """The program ``name`` (e.g. ``"monitor.sh"``), its ``lib/`` parts inlined."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda match: script(match.group(1)), text)
