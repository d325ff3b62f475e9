"""The bash programs hsm runs on an SSH host: each is a file of ``hsm/sources/remote/``, where
its arguments and its protocol are described (the host monitor's in ``monitor.sh``).
"""

from __future__ import annotations

from hsm.sources.remote import script

PREFLIGHT = script("preflight.sh")  # is the root writable, is python there?
SETUP_HOST = script("setup_host.sh")  # the folders and the job wrapper
CHECK = script("check.sh")  # after the code push: python, the command or script, GPUs
MONITOR = script("monitor.sh")  # starts wrappers, reports their status files
CANCEL = script("cancel.sh")  # stops attempts by their wrappers' pids
CLEAN = script("clean.sh")  # removes this source's folder of a sweep
PULLER = script("puller.sh")  # tar archives of task folders, on one channel


def printf_escape(data: bytes) -> str:
    """``data`` as an argument of bash's ``printf %b`` (which writes it back byte for byte,
    NUL bytes included): printable ASCII stays, everything else becomes ``\\xHH``."""
    out = []
    for byte in data:
        if 0x20 <= byte < 0x7F and byte != 0x5C:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)
