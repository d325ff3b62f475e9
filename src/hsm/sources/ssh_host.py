"""Getting an SSH host ready for a sweep: checks, folders, the job wrapper, the code push.

Each sweep gets its own snapshot of the code on each host (see :func:`push_snapshot`).

Each step is one round trip (or one rsync), and each failure is a SourceUnavailableError
(exit 2) that says what is wrong on which host and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hsm.errors import SourceUnavailableError
from hsm.jobscript import wrapper_text
from hsm.sources import ssh_scripts as scripts
from hsm.sources.gpus import parse_gpu_indices
from hsm.sources.process import CommandError
from hsm.sources.remote import script
from hsm.sources.transport import ConnectError, RemoteError, SshTransport, check_remote

# Always excluded from the code push (the project's own state and output folders are added).
PUSH_EXCLUDE = (".git/", "__pycache__/", "*.pyc", "/.hsm/")

CHECK_ERRORS = {
    11: "the code folder {code} is missing",
    12: "python {python!r} is not found (after the setup lines); set "
    "distributed.remotes.{name}.python or add a setup line that provides it",
    13: "a setup line fails: {err}",
    14: "the command {cmd!r} is not found (after the setup lines)",
    15: "the script {script!r} is not in {code} after the code push; is it excluded by "
    ".gitignore or distributed.remotes.{name}.exclude?",
    16: "gpus: all, but nvidia-smi fails: {err}",
}


async def preflight(
    transport: SshTransport,
    where: str,
    *,
    name: str,
    remote_root: str,
    project_name: str,
    python: str,
    setup: Sequence[str],
) -> None:
    """Before anything is written: the host is trusted and reachable (the connection), the
    root is writable, python is there."""
    try:
        result = await transport.run_script(
            scripts.PREFLIGHT, [remote_root, project_name, python, *setup], name="hsm-preflight"
        )
    except ConnectError:
        raise
    except RemoteError as exc:
        raise SourceUnavailableError(f"{where}: {exc.message}") from None
    err = result.stderr.strip()
    if result.returncode == 11:
        raise SourceUnavailableError(f"{where}: remote_root {remote_root!r} is not writable: {err}")
    if result.returncode == 12:
        raise SourceUnavailableError(
            f"{where}: "
            + CHECK_ERRORS[12].format(python=python, name=name)
            + (f" ({err})" if err else "")
        )
    check_remote(result, f"{where}: checking the host")


async def setup(
    transport: SshTransport,
    where: str,
    *,
    remote_root: str,
    project_name: str,
    sweep_id: str,
    source: str,
    wrapper_name: str,
) -> tuple[str, str, Snapshot]:
    """Create the folders and install the wrapper (once per version). Returns the remote
    $HOME, the absolute remote root and the state of the sweep's code snapshot (see
    `Snapshot`), all in one round trip."""
    result = await transport.run_script(
        scripts.SETUP_HOST,
        [remote_root, project_name, sweep_id, source, wrapper_name],
        name="hsm-setup",
        input=wrapper_text().encode(),
    )
    if result.returncode == 11:
        raise SourceUnavailableError(
            f"{where}: remote_root {remote_root!r} is not writable: {result.stderr.strip()}"
        )
    check_remote(result, f"{where}: preparing {remote_root}")
    home, root, snapshot = [*result.stdout.split("\0"), "", ""][:3]
    done = snapshot == "done"
    previous = snapshot.removeprefix("new:") if snapshot.startswith("new:") else ""
    return home, root, Snapshot(done=done, previous=previous or None)


@dataclass(frozen=True)
class Snapshot:
    """The sweep's code snapshot on the host: complete (an earlier run of the sweep pushed
    it), or not yet, with the folder of the project's latest snapshot to link against."""

    done: bool
    previous: str | None = None


SNAPSHOT_DONE = script("snapshot_done.sh")  # mark it complete, point "latest" to it


async def push_snapshot(
    transport: SshTransport,
    *,
    project_root: str,
    code_dir: str,
    latest: str,
    exclude: Sequence[str],
    snapshot: Snapshot,
) -> bool:
    """Give the sweep its own copy of the code in ``code_dir``, once: a sweep that was pushed
    before (a resume: ``snapshot.done``) keeps the code it started with. The copy is made
    with ``--link-dest`` against the project's latest snapshot (``latest``, a symlink), so
    files that did not change are hard links and cost no space. Returns whether it pushed;
    `mark_pushed` then records it complete."""
    if snapshot.done:
        return False
    await push_code(
        transport,
        project_root=project_root,
        code_dir=code_dir,
        exclude=exclude,
        link_dest=snapshot.previous,
    )
    return True


async def mark_pushed(transport: SshTransport, *, code_dir: str, latest: str) -> None:
    """Record the sweep's snapshot complete; the project's latest snapshot points to it."""
    done = await transport.run_script(SNAPSHOT_DONE, [code_dir, latest], name="hsm-snapshot")
    check_remote(done, f"recording the code snapshot {code_dir}")


async def push_code(
    transport: SshTransport,
    *,
    project_root: str,
    code_dir: str,
    exclude: Sequence[str],
    link_dest: str | None = None,
) -> None:
    """rsync the project to ``code_dir``: incremental, ``--delete`` of files gone here, with
    each folder's .gitignore and the excludes. Deletions come after the transfer, so that a
    .gitignore pushed now already protects the host's own ignored files (data, venvs).
    Files equal to those in ``link_dest`` (a folder on the host) become hard links to them."""
    # Times compared to the nanosecond (rsync >= 3.1.3 on the host): a file changed within
    # the second of the last push, at the same size, is still seen as changed.
    args = ["-a", "--delete-after", "--mkpath", "--modify-window=-1", "--filter=:- .gitignore"]
    if link_dest is not None:
        args.append(f"--link-dest={link_dest.rstrip('/')}/")
    args += [f"--exclude={e}" for e in (*PUSH_EXCLUDE, *exclude)]
    args += [f"{project_root.rstrip('/')}/", transport.rsync_remote(code_dir + "/")]
    try:
        await transport.rsync(args, what="pushing the code with rsync")
    except CommandError as exc:
        raise SourceUnavailableError(exc.message) from None


async def check(
    transport: SshTransport,
    where: str,
    *,
    name: str,
    code_dir: str,
    python: str,
    argv: Sequence[str],
    setup: Sequence[str],
    probe_gpus: bool,
) -> list[int]:
    """In the code folder, after the setup lines, as a task would: python, the script or
    command of ``argv``, and (``gpus: all``) the GPUs nvidia-smi lists, which it returns."""
    cmd = script = ""
    if argv[0] != python:
        cmd = argv[0]
    elif len(argv) > 1 and not argv[1].startswith("-"):
        script = argv[1]
    result = await transport.run_script(
        scripts.CHECK,
        [code_dir, python, cmd, script, str(int(probe_gpus)), *setup],
        name="hsm-check",
    )
    template = CHECK_ERRORS.get(result.returncode)
    if template is not None:
        err = result.stderr.strip() or "no output"
        raise SourceUnavailableError(
            f"{where}: "
            + template.format(
                code=code_dir, python=python, name=name, cmd=cmd, script=script, err=err
            )
        )
    check_remote(result, f"{where}: checking the host")
    return parse_gpu_indices(result.stdout) if probe_gpus else []
