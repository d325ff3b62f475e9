"""A real single-node Slurm (munged + slurmctld + slurmd) for hsm's integration tests.

Two modes:

- ``SlurmCluster().start()`` runs the daemons on this machine (root namespace); clients need
  ``env()`` (``SLURM_CONF``).
- ``SlurmCluster(host=bed.host(1)).start()`` runs them inside a test-bed host, entered with
  ``nsenter`` (``/sys/fs/cgroup`` stays visible, which slurmd needs). That host is then a real
  login node: the generated config folder is bind-mounted over ``/etc/slurm`` inside the host's
  mount namespace, so ``sbatch``/``squeue``/``scontrol`` find ``/etc/slurm/slurm.conf`` in every
  SSH session (login or not, any shell, any environment) without ``SLURM_CONF``. Controller and
  node talk over ``127.0.0.1`` inside the host, so ``cut_link()`` on that host does not disturb
  Slurm itself.

All state, spool, log and socket files live in a temp folder; ports and names are configurable
so that several clusters can coexist. Daemons carry ``HSM_TESTBED_OWNER=<prefix>:slurm-<name>``
in their environment; ``stop()`` (and ``cleanup_stale(prefix)``) kill by that tag, and by
``SLURM_CLUSTER_NAME`` for job processes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._util import (
    HOST_PATH,
    MARKER,
    OWNER_ENV,
    TestBedError,
    kill_pids,
    pids_with_env,
    run,
    terminate,
    wait_until,
)

if TYPE_CHECKING:
    from .hosts import Host

__all__ = ["SlurmCluster"]

NAME_RE = re.compile(r"[a-z][a-z0-9]{0,19}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node_hardware() -> dict[str, int]:
    """CPUs, sockets, cores, threads and memory as ``slurmd -C`` reports them."""
    out = run(["slurmd", "-C"]).stdout
    values = dict(re.findall(r"(\w+)=(\d+)", out))
    return {key: int(value) for key, value in values.items()}


class SlurmCluster:
    """One Slurm controller and one node.

    ``prefix`` ties leftovers to a test bed (``cleanup_stale(prefix)`` removes them); ``name``
    tells clusters of one prefix apart (default ``local``, or ``h<i>`` on a host).
    """

    __test__ = False

    def __init__(
        self,
        base_dir: str | Path | None = None,
        *,
        prefix: str = "hsmtb",
        name: str | None = None,
        host: Host | None = None,
        ctld_port: int | None = None,
        slurmd_port: int | None = None,
        real_memory_mb: int = 4096,
        max_array_size: int = 1001,
        kill_wait: int = 5,
    ) -> None:
        self.host = host
        self.prefix = prefix
        self.name = name or (f"h{host.index}" if host is not None else "local")
        if not NAME_RE.fullmatch(self.name):
            raise ValueError(f"name {self.name!r}: use lowercase letters and digits")
        self.cluster_name = f"{prefix}{self.name}"
        self.owner_tag = f"{prefix}:slurm-{self.name}"
        self._own_base_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path()
        # Inside a host nothing else listens, so Slurm's usual ports are fine there.
        self.ctld_port = ctld_port or (6817 if host is not None else _free_port())
        self.slurmd_port = slurmd_port or (6818 if host is not None else _free_port())
        self.real_memory_mb = real_memory_mb
        self.max_array_size = max_array_size
        self.kill_wait = kill_wait
        if host is not None:
            self.hostname = host.name
            self.node_name = host.name
        else:
            self.hostname = socket.gethostname().split(".")[0]
            self.node_name = f"{self.cluster_name}n1"
        self.start_seconds: float | None = None
        self._munged: subprocess.Popen[bytes] | None = None
        self._slurmctld: subprocess.Popen[bytes] | None = None
        self._slurmd: subprocess.Popen[bytes] | None = None
        self._etc_bound = False
        self._started = False

    # -- paths ---------------------------------------------------------------------------

    @property
    def conf_dir(self) -> Path:
        return self.base_dir / "etc"

    @property
    def conf_path(self) -> Path:
        return self.conf_dir / "slurm.conf"

    @property
    def jobcomp_path(self) -> Path:
        return self.base_dir / "jobcomp.txt"

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "log"

    @property
    def munge_socket(self) -> Path:
        return self.base_dir / "munge-run" / "munge.socket"

    def env(self) -> dict[str, str]:
        """Environment that Slurm clients need (``SLURM_CONF``)."""
        return {"SLURM_CONF": str(self.conf_path)}

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "host" if self.host is not None else "local",
            "host": self.host.name if self.host is not None else None,
            "cluster_name": self.cluster_name,
            "node_name": self.node_name,
            "partition": "debug",
            "conf": str(self.conf_path),
            "env": self.env(),
            "jobcomp": str(self.jobcomp_path),
            "log_dir": str(self.log_dir),
            "ctld_port": self.ctld_port,
            "slurmd_port": self.slurmd_port,
            "max_array_size": self.max_array_size,
            "start_seconds": self.start_seconds,
        }

    # -- config --------------------------------------------------------------------------

    def slurm_conf(self) -> str:
        hw = _node_hardware()
        memory = min(self.real_memory_mb, hw.get("RealMemory", self.real_memory_mb))
        base = self.base_dir
        lines = [
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={base / 'state'}",
            f"SlurmdSpoolDir={base / 'spool'}",
            f"SlurmctldPidFile={base / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={base / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
            f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=256",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp_path}",
            "MinJobAge=600",
            "MailProg=/bin/true",
            "ReturnToService=2",
            f"MaxArraySize={self.max_array_size}",
            f"MaxJobCount={max(10000, self.max_array_size * 4)}",
            f"KillWait={self.kill_wait}",
            "InactiveLimit=0",
            "MpiDefault=none",
            "SchedulerParameters=batch_sched_delay=0",
            "SlurmctldTimeout=60",
            "SlurmdTimeout=120",
            (
                f"NodeName={self.node_name} NodeHostname={self.hostname} NodeAddr=127.0.0.1 "
                f"CPUs={hw['CPUs']} Boards={hw.get('Boards', 1)} "
                f"SocketsPerBoard={hw.get('SocketsPerBoard', 1)} "
                f"CoresPerSocket={hw['CoresPerSocket']} ThreadsPerCore={hw['ThreadsPerCore']} "
                f"RealMemory={memory} State=UNKNOWN"
            ),
            f"PartitionName=debug Nodes={self.node_name} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
        return "\n".join(lines)

    def _prepare(self) -> None:
        if self._own_base_dir:
            self.base_dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-slurm-{self.name}-"))
        else:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        (self.base_dir / MARKER).write_text(self.owner_tag + "\n")
        for sub in ("etc", "state", "spool", "log", "run", "munge"):
            (self.base_dir / sub).mkdir(exist_ok=True)
        run_dir = self.munge_socket.parent
        run_dir.mkdir(exist_ok=True)
        os.chmod(run_dir, 0o755)  # munged insists on a non-writable-by-others socket folder
        os.chmod(self.base_dir / "munge", 0o700)
        key = self.base_dir / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.conf_path.write_text(self.slurm_conf())
        self.jobcomp_path.touch()

    # -- processes -----------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {"PATH": HOST_PATH, "HOME": "/root", "LANG": "C.UTF-8", OWNER_ENV: self.owner_tag}
        env.update(self.env())
        return env

    def _popen(self, argv: list[str]) -> subprocess.Popen[bytes]:
        if self.host is not None:
            return self.host.popen(argv, env=self._env())
        return subprocess.Popen(
            argv,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )

    def run(
        self,
        argv: list[str],
        timeout: float = 30.0,
        *,
        check: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command where the cluster lives (this machine or its host)."""
        full_env = dict(self.env())
        if env:
            full_env.update(env)
        if self.host is not None:
            return self.host.run(argv, timeout, check=check, env=full_env)
        merged = {**os.environ, **full_env}
        return run(argv, timeout=timeout, check=check, env=merged)

    def _check_alive(self, proc: subprocess.Popen[bytes] | None, what: str, log: str) -> None:
        if proc is None or proc.poll() is not None:
            path = self.log_dir / log
            tail = path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
            raise TestBedError(f"{what} of Slurm cluster {self.cluster_name} died:\n{tail}")

    def _start_munged(self) -> None:
        munge = self.base_dir / "munge"
        self._munged = self._popen(
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={munge / 'munge.key'}",
                f"--socket={self.munge_socket}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={self.log_dir / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ]
        )
        proc = self._munged
        wait_until(
            lambda: proc.poll() is not None or self.munge_socket.exists(),
            timeout=10,
            what="munged socket",
        )
        self._check_alive(proc, "munged", "munged.log")

    def start_controller(self, *, clean: bool = False, timeout: float = 30.0) -> None:
        argv = ["slurmctld", "-D", "-f", str(self.conf_path)]
        if clean:
            argv.append("-c")
        self._slurmctld = self._popen(argv)
        self.wait_controller(timeout)

    def wait_controller(self, timeout: float = 30.0) -> None:
        proc = self._slurmctld

        def up() -> bool:
            if proc is None or proc.poll() is not None:
                return True
            out = self.run(["scontrol", "ping"], timeout=10).stdout
            return "is UP" in out

        wait_until(up, timeout=timeout, what="slurmctld", interval=0.05)
        self._check_alive(proc, "slurmctld", "slurmctld.log")

    def stop_controller(self) -> None:
        """Stop slurmctld (clients then fail; ``scontrol ping`` fails at once)."""
        terminate(self._slurmctld, timeout=15)
        self._slurmctld = None

    def restart_controller(self, timeout: float = 30.0) -> None:
        """Stop and start slurmctld; it recovers its saved state (jobs survive)."""
        self.stop_controller()
        self.start_controller(timeout=timeout)
        self.wait_node_ready(timeout)

    def node_state(self) -> str:
        out = self.run(["sinfo", "-h", "-n", self.node_name, "-o", "%T"], timeout=10).stdout
        return out.strip()

    def wait_node_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            self._check_alive(self._slurmd, "slurmd", "slurmd.log")
            state = self.node_state()
            return state in ("idle", "mixed", "allocated", "completing")

        wait_until(ready, timeout=timeout, what=f"node {self.node_name} ready", interval=0.05)

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        """Write the config and start munged, slurmctld and slurmd; wait until the node is
        idle. Returns ``self``."""
        if self._started:
            raise TestBedError("cluster already started")
        if os.geteuid() != 0:
            raise TestBedError("needs root: Slurm daemons")
        for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
            if shutil.which(tool) is None:
                raise TestBedError(f"missing {tool} (apt-get install -y slurm-wlm munge)")
        begin = time.monotonic()
        self._started = True
        try:
            self._prepare()
            if self.host is not None:
                self.host.run(["mount", "--bind", str(self.conf_dir), "/etc/slurm"], check=True)
                self._etc_bound = True
            self._start_munged()
            self._slurmctld = self._popen(["slurmctld", "-D", "-c", "-f", str(self.conf_path)])
            self._slurmd = self._popen(
                ["slurmd", "-D", "-f", str(self.conf_path), "-N", self.node_name]
            )
            self.wait_controller(timeout)
            self.wait_node_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - begin
        return self

    def stop(self) -> None:
        """Stop every daemon and job of this cluster and remove its folder. Idempotent."""
        if not self._started:
            return
        for proc in (self._slurmd, self._slurmctld):
            terminate(proc, timeout=10)
        terminate(self._munged)
        self._slurmd = self._slurmctld = self._munged = None
        tag = self.owner_tag
        strays = set(pids_with_env(OWNER_ENV, lambda value: value == tag))
        strays.update(pids_with_env("SLURM_CLUSTER_NAME", lambda v: v == self.cluster_name))
        kill_pids(strays)
        if self._etc_bound and self.host is not None:
            with contextlib.suppress(TestBedError, subprocess.TimeoutExpired):
                self.host.run(["umount", "/etc/slurm"], timeout=10)
            self._etc_bound = False
        if self.base_dir != Path() and self.base_dir.exists():
            if self._own_base_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            else:
                for sub in ("etc", "state", "spool", "log", "run", "munge", "munge-run"):
                    shutil.rmtree(self.base_dir / sub, ignore_errors=True)
                for name in (MARKER, "jobcomp.txt"):
                    with contextlib.suppress(FileNotFoundError):
                        (self.base_dir / name).unlink()
        self._started = False

    def __enter__(self) -> SlurmCluster:
        return self.start() if not self._started else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ---------------------------------------------------------------

    def sbatch(self, args: list[str], timeout: float = 30.0) -> str:
        """Submit with ``sbatch --parsable`` (output to /dev/null unless given); return the id."""
        argv = ["sbatch", "--parsable"]
        if not any(a.startswith(("--output", "-o")) for a in args):
            argv.append("--output=/dev/null")
        out = self.run([*argv, *args], timeout, check=True).stdout.strip()
        return out.split(";")[0]

    def job_state(self, job_id: str) -> str:
        """``JobState`` of one job (for an array, of its first listed task)."""
        out = self.run(["scontrol", "show", "job", job_id], timeout=10).stdout
        match = re.search(r"JobState=(\S+)", out)
        return match.group(1) if match else ""

    def job_states(self, job_id: str) -> list[str]:
        """``JobState`` of every record ``scontrol show job`` lists (all tasks of an array)."""
        out = self.run(["scontrol", "show", "job", job_id], timeout=10).stdout
        return re.findall(r"JobState=(\S+)", out)

    def wait_job(self, job_id: str, timeout: float = 60.0) -> list[str]:
        """Wait until every record of ``job_id`` is in a final state; return the states."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
        states: list[str] = []

        def done() -> bool:
            nonlocal states
            states = self.job_states(job_id)
            return bool(states) and all(s in final for s in states)

        wait_until(done, timeout=timeout, what=f"job {job_id}", interval=0.1)
        return states
