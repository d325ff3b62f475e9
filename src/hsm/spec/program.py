"""Up-front checks of the program a sweep runs on this machine: is it there at all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hsm.spec.errors import problem
from hsm.spec.sweep import SweepSpec
from hsm.spec.yamlload import YamlDocument, load_yaml


def _document(spec: SweepSpec) -> YamlDocument:
    if spec.path is not None and spec.path.is_file():
        return load_yaml(spec.path, allow_empty=False)
    return YamlDocument(path=spec.path or Path("sweep.yaml"), data=spec.raw)


def check_local_program(spec: SweepSpec, project_root: Path) -> None:
    """Raise a ``ConfigError`` naming ``command[0]`` when the program of a ``command`` sweep
    cannot be found on this machine: neither on ``PATH`` nor, for a path, as an executable
    file (relative paths are taken from the project folder, where tasks start)."""
    if not spec.command:
        return
    program = spec.command[0]
    if "/" in program:
        path = Path(program).expanduser()
        if not path.is_absolute():
            path = project_root / path
        if path.is_file() and os.access(path, os.X_OK):
            return
        why = "is not an executable file" if path.exists() else "does not exist"
        text = f"{program!r} {why} (looked at {path})"
    else:
        if shutil.which(program) is not None:
            return
        text = (
            f"{program!r} is not on PATH on this machine; install it, give its full path,"
            " or fix the name"
        )
    doc = _document(spec)
    loc = ("command", 0) if isinstance(doc.data.get("command"), list) else ("command",)
    raise problem(doc, loc, text, line_loc=loc)
