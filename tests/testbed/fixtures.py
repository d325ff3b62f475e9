"""pytest fixtures for the test bed. Import them from a conftest.py::

    from tests.testbed.fixtures import *  # noqa: F403

or list ``"tests.testbed.fixtures"`` in ``pytest_plugins`` of the root conftest.py.

- ``testbed`` (session): a :class:`TestBed` with 3 hosts; skipped when not root.
- ``testbed_hosts`` (function): the hosts of ``testbed``, reset before and after the test
  (sshd thawed and running, link up, disk freed and emptied, normal load and memory).
- ``slurm_local`` (session): a :class:`SlurmCluster` on this machine; use ``.env()``.
- ``slurm_on_host`` (session): a :class:`SlurmCluster` inside ``testbed.hosts[0]``, which is then
  a login node: ``sbatch`` over SSH works without any environment.

Every pytest process gets its own prefix (``hsmtb<pid>``) and a free subnet, so parallel runs
(pytest-xdist workers, several checkouts) do not collide; leftovers of killed runs are removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._util import TestBedError, pid_alive
from .hosts import Host, TestBed, cleanup_stale, pick_free_subnet
from .slurm import SlurmCluster

__all__ = ["slurm_local", "slurm_on_host", "testbed", "testbed_hosts", "testbed_prefix"]

_PID_PREFIX_RE = re.compile(r"(hsmt[a-z])(\d+)-")


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")


def _reap_orphans() -> None:
    """Remove leftovers of pytest processes that are gone (prefixes ``hsmt<letter><pid>``)."""
    names: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        names += os.listdir("/run/netns")
    names += [p.name for p in Path(tempfile.gettempdir()).glob("hsmt*-*")]
    found = {(m.group(1), int(m.group(2))) for n in names if (m := _PID_PREFIX_RE.match(n))}
    for stem, pid in sorted(found):
        if pid != os.getpid() and not pid_alive(pid):
            # TestBedError: a live process holds the prefix (the pid was reused).
            with contextlib.suppress(TestBedError, ValueError):
                cleanup_stale(f"{stem}{pid}")


@pytest.fixture(scope="session")
def testbed_prefix() -> str:
    """Name prefix of this pytest process's test bed and Slurm clusters."""
    return f"hsmtb{os.getpid()}"


@pytest.fixture(scope="session")
def testbed(testbed_prefix: str) -> Iterator[TestBed]:
    _require_root()
    _reap_orphans()
    bed: TestBed | None = None
    for _attempt in range(5):
        candidate = TestBed(prefix=testbed_prefix, subnet=pick_free_subnet())
        try:
            candidate.up(3)
        except TestBedError as exc:
            if "subnet" not in str(exc):
                raise
            continue  # another process took the subnet between pick and up
        bed = candidate
        break
    if bed is None:
        raise TestBedError("could not find a free subnet for the test bed")
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture
def testbed_hosts(testbed: TestBed) -> Iterator[list[Host]]:
    testbed.reset_hosts()
    yield testbed.hosts
    testbed.reset_hosts(clear_work_dir=False)


@pytest.fixture(scope="session")
def slurm_local(testbed_prefix: str) -> Iterator[SlurmCluster]:
    _require_root()
    _reap_orphans()
    cluster = SlurmCluster(prefix=testbed_prefix, name="local").start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_on_host(testbed: TestBed) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(prefix=testbed.prefix, host=testbed.hosts[0]).start()
    try:
        yield cluster
    finally:
        cluster.stop()
