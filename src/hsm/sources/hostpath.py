"""Folders on a host as the config names them: the one rule for ``~``.

A root folder as configured (an SSH host's ``remote_root``, a cluster's work folder) is
``~`` (the home folder), ``~/x`` (below it), ``/x`` (itself) or ``x`` (below the home folder
too: where an SSH login starts); trailing slashes are cut. ``remote/lib/expand_root.sh`` states
the rule for the bash programs hsm runs on a host, `expand_root` the same rule for Python.
"""

from __future__ import annotations


def expand_root(path: str, home: str) -> str:
    """``path`` as configured, made absolute with the host's home folder ``home``."""
    if path == "~":
        root = home
    elif path.startswith("~/"):
        root = home + path[1:]
    elif path.startswith("/"):
        root = path
    else:
        root = f"{home}/{path}"
    while len(root) > 1 and root.endswith("/"):
        root = root[:-1]
    return root
