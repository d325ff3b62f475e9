"""Clear errors (exit 2) before anything starts, and keys: unknown source, unreachable host,
auth failure, unknown or changed host key, passphrase key without and with ssh-agent,
missing python or script, remote_root not writable."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hsmcli import Result, hsm
from tests.integration.ssh_support import make_project, remote
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed]

PASSPHRASE = "correct horse battery staple"


def run_h1(
    tmp_path: Path, bed_host: Host, /, *, extra_env: dict[str, str] | None = None, **overrides: Any
) -> tuple[Path, Result]:
    root = make_project(
        tmp_path / "proj", [bed_host], n=1, remotes={"h1": remote(bed_host, **overrides)}
    )
    return root, hsm("run", "sweep.yaml", "--source", "h1", cwd=root, env=extra_env)


def assert_bad_input(root: Path, result: Result, *needles: str) -> None:
    """Exit 2, one message naming the problem, and no sweep recorded or created."""
    assert result.returncode == 2, result
    assert result.stderr.count("hsm: error:") == 1, result
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    assert not (root / "runs").exists(), result
    assert not (root / ".hsm" / "hsm.db").exists(), result


def direct(host: Host, **extra: Any) -> dict[str, Any]:
    """A remote by IP address, with its own key and known_hosts (no ssh_config alias)."""
    return {"host": host.ip, "user": "root", "known_hosts": str(host.known_hosts), **extra}


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", str(path)],
        check=True,
    )
    return path


@pytest.fixture
def locked_key(tmp_path: Path, testbed_hosts: list[Host]) -> Iterator[Path]:
    """A passphrase-protected key that every test host accepts (for this test only)."""
    key = keygen(tmp_path / "locked_ed25519", PASSPHRASE)
    public = key.with_suffix(".pub").read_text()
    saved = {h: (h.dir / "authorized_keys").read_text() for h in testbed_hosts}
    for host, text in saved.items():
        (host.dir / "authorized_keys").write_text(text + public)
    try:
        yield key
    finally:
        for host, text in saved.items():
            (host.dir / "authorized_keys").write_text(text)


def test_unknown_source(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    root = make_project(tmp_path / "proj", testbed_hosts[:1], n=1)
    result = hsm("run", "sweep.yaml", "--source", "nope", cwd=root)
    assert_bad_input(root, result, "unknown source 'nope'", "h1")


def test_unreachable_host_refused(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    root, result = run_h1(tmp_path, testbed_hosts[0], port=2222)
    assert_bad_input(root, result, "source 'h1'", "cannot connect", "connection refused")


def test_unreachable_host_link_down(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[1]
    host.cut_link()
    start = time.monotonic()
    root, result = run_h1(tmp_path, host)
    elapsed = time.monotonic() - start
    assert_bad_input(root, result, "cannot connect", "no answer within 3 s (connect_timeout)")
    assert elapsed < 8, elapsed


def test_auth_failure(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    key = keygen(tmp_path / "stranger")
    root, result = run_h1(tmp_path, host, **direct(host, ssh_key=str(key)))
    assert_bad_input(root, result, "authentication as 'root' failed", str(key))


def test_unknown_host_key_is_refused_with_a_fix(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    root, result = run_h1(tmp_path, host, known_hosts=str(empty))
    assert_bad_input(
        root,
        result,
        "is not trusted",
        "never accepts an unknown host key",
        f"ssh-keyscan -p 22 {host.ip} >> {empty}",
    )
    assert empty.read_text() == ""  # nothing was added behind the user's back


def test_changed_host_key_is_refused(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[2]
    other = keygen(tmp_path / "other_host_key").with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{host.name},{host.ip} {' '.join(other)}\n")
    root, result = run_h1(tmp_path, host, known_hosts=str(wrong))
    assert_bad_input(root, result, "is not trusted", f"ssh-keygen -R {host.ip}")


def test_passphrase_key_without_agent(
    tmp_path: Path, testbed_hosts: list[Host], locked_key: Path
) -> None:
    host = testbed_hosts[0]
    start = time.monotonic()
    root, result = run_h1(tmp_path, host, **direct(host, ssh_key=str(locked_key)))
    assert_bad_input(
        root,
        result,
        f"The key {locked_key} needs a passphrase",
        "no ssh-agent is running",
        f"ssh-add {locked_key}",
    )
    assert time.monotonic() - start < 10  # no prompt, no hang


def test_ssh_agent_holds_the_passphrase_key(
    tmp_path: Path, testbed_hosts: list[Host], locked_key: Path
) -> None:
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        askpass = tmp_path / "askpass.sh"
        askpass.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
        askpass.chmod(askpass.stat().st_mode | stat.S_IXUSR)
        added = subprocess.run(
            ["ssh-add", str(locked_key)],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
            env={
                **os.environ,
                "SSH_AUTH_SOCK": str(socket),
                "SSH_ASKPASS": str(askpass),
                "SSH_ASKPASS_REQUIRE": "force",
                "DISPLAY": ":0",
            },
        )
        assert added.returncode == 0, added.stderr
        # Both the asyncssh connection and rsync's ssh use the agent.
        hosts = testbed_hosts[:2]
        remotes = {
            f"h{i + 1}": {**remote(h), **direct(h, ssh_key=str(locked_key))}
            for i, h in enumerate(hosts)
        }
        root = make_project(tmp_path / "proj", hosts, n=4, remotes=remotes)
        result = hsm(
            "run",
            "sweep.yaml",
            "--source",
            "h1",
            "--source",
            "h2",
            "--json",
            cwd=root,
            env={"SSH_AUTH_SOCK": str(socket)},
        )
        assert result.returncode == 0, result
        assert result.json()["counts"]["completed"] == 4
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_missing_python(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    root, result = run_h1(tmp_path, testbed_hosts[0], python="python3.99")
    assert_bad_input(
        root, result, "python 'python3.99' is not found", "distributed.remotes.h1.python"
    )


def test_python_from_setup_lines_is_found(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    host = testbed_hosts[0]
    bindir = f"{host.work_dir}/bin"
    setup = [
        f"mkdir -p {bindir} && ln -sf /usr/bin/python3 {bindir}/mypython",
        f"export PATH={bindir}:$PATH",
    ]
    root, result = run_h1(tmp_path, host, python="mypython", setup=setup)
    assert result.returncode == 0, result


def test_missing_script_on_the_host(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    root, result = run_h1(tmp_path, testbed_hosts[0], exclude=["task.py"])
    assert result.returncode == 2, result
    assert re.search(
        r"the script 'task.py' is not in /srv/hsm/root/proj/sweeps/[^/]+/h1/code "
        "after the code push",
        result.stderr,
    ), result
    assert "exclude" in result.stderr


def test_remote_root_not_writable(tmp_path: Path, testbed_hosts: list[Host]) -> None:
    root, result = run_h1(tmp_path, testbed_hosts[0], remote_root="/proc/hsm")
    assert_bad_input(root, result, "remote_root '/proc/hsm' is not writable")
