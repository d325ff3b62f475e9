"""A hung ssh-agent (it accepts connections and never answers) on real test-bed hosts: the
key files are still tried, and when nothing works the message names the agent."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hsmcli import hsm
from tests.integration.ssh_support import make_project, remote
from tests.integration.test_ssh_errors import assert_bad_input, direct, keygen, run_h1
from tests.testbed import Host

pytestmark = [pytest.mark.root, pytest.mark.testbed]


@pytest.fixture
def hung_agent(tmp_path: Path) -> Iterator[Path]:
    """A Unix socket that accepts every connection and never sends a byte."""
    path = tmp_path / "hung-agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_a_hung_agent_is_skipped_and_the_key_file_used(
    tmp_path: Path, testbed_hosts: list[Host], hung_agent: Path
) -> None:
    hosts = testbed_hosts[:1]
    root = make_project(tmp_path / "proj", hosts, n=2, remotes={"h1": remote(hosts[0])})
    result = hsm(
        "run",
        "sweep.yaml",
        "--source",
        "h1",
        "--json",
        cwd=root,
        env={"SSH_AUTH_SOCK": str(hung_agent)},
    )
    assert result.returncode == 0, result
    assert result.json()["counts"]["completed"] == 2
    assert "SSH_AUTH_SOCK" in result.stderr  # the skipped agent is reported


def test_when_nothing_works_the_message_names_the_agent(
    tmp_path: Path, testbed_hosts: list[Host], hung_agent: Path
) -> None:
    host = testbed_hosts[0]
    stranger = keygen(tmp_path / "stranger")
    root, result = run_h1(
        tmp_path,
        host,
        **direct(host, ssh_key=str(stranger)),
        extra_env={"SSH_AUTH_SOCK": str(hung_agent)},
    )
    assert_bad_input(
        root,
        result,
        "authentication as 'root' failed",
        f"ssh-agent at {hung_agent} (SSH_AUTH_SOCK)",
        "unset SSH_AUTH_SOCK",
    )
    assert "connect_timeout" not in result.stderr


def test_identity_agent_none_in_the_ssh_config_is_honoured(
    tmp_path: Path, testbed_hosts: list[Host], hung_agent: Path
) -> None:
    host = testbed_hosts[0]
    config = tmp_path / "ssh_config"
    config.write_text(
        host.ssh_config_path.read_text().replace(
            f"Host {host.name}\n", f"Host {host.name}\n    IdentityAgent none\n"
        )
    )
    root = make_project(
        tmp_path / "proj",
        [host],
        n=1,
        remotes={"h1": remote(host)},
        config={"distributed": {"ssh_config": str(config)}},
    )
    result = hsm(
        "run",
        "sweep.yaml",
        "--source",
        "h1",
        "--json",
        cwd=root,
        env={"SSH_AUTH_SOCK": str(hung_agent)},
    )
    assert result.returncode == 0, result
    assert "SSH_AUTH_SOCK" not in result.stderr, result  # the agent was never asked
