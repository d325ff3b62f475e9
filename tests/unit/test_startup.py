"""Start-up cost: the CLI and a local-only sweep load no SSH or cluster backend.

Each check runs a fresh interpreter, so modules other tests imported do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Loaded only when a sweep or command uses an SSH host or a cluster.
REMOTE_MODULES = (
    "hsm.sources.ssh",
    "hsm.sources.transport",
    "hsm.sources.login",
    "hsm.sources.queue",
    "hsm.sources.slurm",
    "hsm.sources.pbs",
)


def loaded_after(code: str, cwd: Path | None = None) -> list[str]:
    """The modules loaded after running ``code`` in a fresh interpreter."""
    script = code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=True,
        timeout=60,
    )
    modules: list[str] = json.loads(result.stdout.splitlines()[-1])
    return modules


def remote(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith("asyncssh") or m in REMOTE_MODULES]


def test_importing_the_cli_loads_no_asyncssh() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import hsm.cli.main, sys; "
            "print(sorted(m for m in sys.modules if m.startswith('asyncssh')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[]"


def test_importing_the_cli_loads_no_remote_backend() -> None:
    assert remote(loaded_after("import hsm.cli.main")) == []


def test_local_sources_load_no_remote_backend(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path\n"
        "from hsm.sources.registry import build_sources\n"
        "from hsm.spec.config import load_config\n"
        "build_sources(load_config(None, Path.cwd()), ['local'], parallel=2)"
    )
    assert remote(loaded_after(code, cwd=tmp_path)) == []


def test_an_ssh_remote_still_builds_its_source(tmp_path: Path) -> None:
    (tmp_path / "hsm_config.yaml").write_text(
        "distributed:\n  remotes:\n    blossom: {host: blossom.example, max_parallel_jobs: 3}\n"
    )
    code = (
        "from pathlib import Path\n"
        "from hsm.sources.registry import build_sources\n"
        "from hsm.spec.config import load_config\n"
        "s = build_sources(load_config(None, Path.cwd()), ['local', 'blossom'], "
        "parallel=2)['blossom']\n"
        "assert type(s).__name__ == 'SshSource' and s.slots == 3, s"
    )
    assert "asyncssh" in loaded_after(code, cwd=tmp_path)
