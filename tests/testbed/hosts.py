"""SSH hosts on this machine: one network + mount + UTS namespace and one sshd per host.

Layout of one host ``<prefix>-h<i>`` (i = 1..n):

- network namespace ``/run/netns/<prefix>-h<i>`` with ``eth0`` at ``<subnet>.<10+i>/24``, the
  peer of veth ``<prefix>-<i>`` which is a port of bridge ``<prefix>-br`` in the root namespace;
  the root namespace has ``<subnet>.1/24`` on the bridge, so the controller reaches every host;
- a *holder* process (``sleep infinity``) that owns the host's mount and UTS namespaces. It is
  started as ``nsenter --net=/run/netns/NAME unshare --mount --uts``; every later command enters
  the host with ``nsenter --target=<holder> --net --mount --uts`` (``ip netns exec`` would remount
  ``/sys`` and hide ``/sys/fs/cgroup``, which slurmd needs);
- inside the host's mount namespace: a tiny tmpfs over ``/srv`` (so nothing is created on the
  real disk), the host's work disk (a tmpfs of ``disk_size``, mounted in the root namespace at
  ``<base_dir>/<name>/disk`` and bind-mounted at ``work_dir``, default ``/srv/hsm``), an empty
  folder over ``/root``, per-host copies bound over ``/proc/loadavg``, ``/proc/meminfo`` and
  ``/etc/hosts`` (which names every host), and a private tmpfs over ``/run`` with ``/run/sshd``;
- its own sshd (key-only, root login with keys) logging to ``<base_dir>/<name>/sshd.log``.

Fault injection and fake load/memory live on :class:`~tests.testbed.host.Host`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._util import (
    MARKER,
    OWNER_ENV,
    TestBedError,
    hold_name,
    kill_pids,
    mounts,
    pid_alive,
    pids_in_netns,
    pids_with_env,
    run,
)
from .host import NORMAL_LOAD, Host, real_meminfo

__all__ = ["Host", "TestBed", "TestBedError", "cleanup_stale", "pick_free_subnet"]

PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,11}")
SUBNET_RE = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
MAX_HOSTS = 99

# Runs inside the new mount + UTS namespace (argv: name, host dir, work dir), then becomes the
# holder process. Values arrive as positional arguments; the script text is constant.
_HOLDER_SCRIPT = r"""
set -eu
name=$1 dir=$2 work=$3
hostname "$name"
mount -t tmpfs -o size=1m,mode=755 "$name-srv" /srv
mkdir -p "$work"
mount --bind "$dir/disk" "$work"
mount --bind "$dir/home" /root
mount --bind "$dir/loadavg" /proc/loadavg
mount --bind "$dir/meminfo" /proc/meminfo
mount --bind "$dir/hosts" /etc/hosts
mount -t tmpfs -o size=16m,mode=755 "$name-run" /run
mkdir -m 755 /run/sshd
echo ready
exec sleep infinity </dev/null >/dev/null 2>&1
"""


def _parse_size(size: str) -> int:
    match = re.fullmatch(r"(\d+)([kmgKMG]?)", size)
    if not match:
        raise ValueError(f"bad size {size!r}; use e.g. '64m'")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(match.group(1)) * scale


def _check_prefix(prefix: str) -> None:
    if not PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"prefix {prefix!r} must be 1-12 lowercase letters/digits starting with a letter "
            "(it becomes part of interface names, which are limited to 15 characters)"
        )


def _addresses_in_use() -> set[str]:
    out = run(["ip", "-o", "-4", "addr", "show"]).stdout
    return set(re.findall(r"inet (\d+\.\d+\.\d+)\.\d+/", out))


def pick_free_subnet(first: int = 8, last: int = 250, base: str = "10.231") -> str:
    """A ``base.X`` /24 not used by any address on this machine (nor by a live test bed)."""
    used = _addresses_in_use()
    for third in range(first, last + 1):
        subnet = f"{base}.{third}"
        if subnet in used:
            continue
        lock = hold_name(f"subnet/{subnet}")
        if lock is not None:
            lock.close()
            return subnet
    raise TestBedError(f"no free subnet in {base}.{first}..{last}")


def cleanup_stale(prefix: str, *, force: bool = False) -> list[str]:
    """Remove every leftover of test beds (and their Slurm clusters) with ``prefix``.

    Kills processes in the ``<prefix>-h*`` namespaces and processes tagged with the prefix,
    deletes the namespaces, veths, bridge, disk mounts and the marked temp folders. Refuses
    (unless ``force``) if a live test bed in another process holds the prefix. Returns what was
    removed.
    """
    _check_prefix(prefix)
    lock = hold_name(f"prefix/{prefix}")
    if lock is None and not force:
        raise TestBedError(f"a running test bed holds prefix {prefix!r}; stop it or use force=True")
    try:
        return _cleanup(prefix)
    finally:
        if lock is not None:
            lock.close()


def _cleanup(prefix: str) -> list[str]:
    removed: list[str] = []
    ns_re = re.compile(rf"{prefix}-h\d+")
    try:
        namespaces = sorted(n for n in os.listdir("/run/netns") if ns_re.fullmatch(n))
    except FileNotFoundError:
        namespaces = []

    # Job processes of this prefix's Slurm clusters are named <prefix><letter>...
    cluster_re = re.compile(rf"{prefix}[a-z][a-z0-9]*")

    def ours() -> set[int]:
        pids: set[int] = set()
        for ns in namespaces:
            pids.update(pids_in_netns(f"/run/netns/{ns}"))
        tagged = pids_with_env(OWNER_ENV, lambda v: v == prefix or v.startswith(prefix + ":"))
        pids.update(tagged)
        pids.update(pids_with_env("SLURM_CLUSTER_NAME", lambda v: bool(cluster_re.fullmatch(v))))
        return {pid for pid in pids if pid_alive(pid)}

    killed: set[int] = set()
    for _round in range(5):  # again, in case something forked while we were killing
        pids = ours()
        if not pids:
            break
        kill_pids(pids)
        killed |= pids
    if killed:
        removed.append(f"{len(killed)} processes")

    for ns in namespaces:
        run(["ip", "netns", "delete", ns], check=False)
        removed.append(f"netns {ns}")

    link_re = re.compile(rf"{prefix}-(\d+|br)")
    links = sorted(
        (n for n in os.listdir("/sys/class/net") if link_re.fullmatch(n)),
        key=lambda n: n.endswith("-br"),
    )
    for link in links:
        if os.path.exists(f"/sys/class/net/{link}"):
            run(["ip", "link", "delete", "dev", link], check=False)
            removed.append(f"link {link}")

    mount_re = re.compile(rf"{prefix}-h\d+-disk")
    for source, target, _fstype in reversed(mounts()):
        if mount_re.fullmatch(source):
            if run(["umount", target], check=False).returncode != 0:
                run(["umount", "-l", target], check=False)
            removed.append(f"mount {target}")

    tmp = Path(tempfile.gettempdir())
    candidates = [p for p in tmp.glob(f"{prefix}-*") if p.is_dir()]
    for folder in candidates:
        marker = folder / MARKER
        try:
            owner = marker.read_text().strip()
        except OSError:
            continue
        if owner == prefix or owner.startswith(prefix + ":"):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(f"folder {folder}")
    return removed


class TestBed:
    """A set of SSH hosts on this machine. Needs root.

    ``prefix`` names everything (namespaces ``<prefix>-h<i>``, bridge ``<prefix>-br``, veths
    ``<prefix>-<i>``, temp folder ``/tmp/<prefix>-*``); ``subnet`` is the first three octets of
    a /24. Two test beds with different prefixes and subnets can run at the same time.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        prefix: str = "hsmtb",
        subnet: str = "10.231.7",
        base_dir: str | Path | None = None,
        *,
        work_dir: str = "/srv/hsm",
    ) -> None:
        _check_prefix(prefix)
        if not SUBNET_RE.fullmatch(subnet) or any(int(x) > 255 for x in subnet.split(".")):
            raise ValueError(f"subnet {subnet!r} must look like '10.231.7'")
        if not work_dir.startswith("/srv/") or work_dir.rstrip("/") == "/srv":
            raise ValueError("work_dir must be a folder below /srv (a tmpfs covers /srv)")
        self.prefix = prefix
        self.subnet = subnet
        self.work_dir = work_dir.rstrip("/")
        self._own_base_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path()
        self.bridge = f"{prefix}-br"
        self.bridge_ip = f"{subnet}.1"
        self.hosts: list[Host] = []
        self.bring_up_seconds: float | None = None
        self._locks: list[socket.socket] = []

    # Paths that exist once base_dir is known.
    @property
    def key_path(self) -> Path:
        return self.base_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.base_dir / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        return self.base_dir / "ssh_config"

    def __enter__(self) -> TestBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def host(self, key: int | str) -> Host:
        """A host by index (1-based, as in its name) or by name."""
        for host in self.hosts:
            if key in (host.index, host.name):
                return host
        raise KeyError(key)

    # -- bring-up ------------------------------------------------------------------------

    def up(self, n_hosts: int = 3, disk_size: str = "64m") -> list[Host]:
        """Create ``n_hosts`` hosts with a ``disk_size`` tmpfs work disk each; return them."""
        if self.hosts:
            raise TestBedError("test bed is already up")
        if not 1 <= n_hosts <= MAX_HOSTS:
            raise ValueError(f"n_hosts must be within 1..{MAX_HOSTS}")
        if os.geteuid() != 0:
            raise TestBedError("needs root: network namespaces")
        _check_tools()
        disk_bytes = _parse_size(disk_size)
        start = time.monotonic()
        self._acquire_locks()
        try:
            _cleanup(self.prefix)  # leftovers of a crashed run with this prefix
            self._prepare_dirs()
            self.hosts = [Host(self, i) for i in range(1, n_hosts + 1)]
            keygens = self._start_keygens()
            self._create_network()
            for host in self.hosts:
                self._prepare_host_dir(host, disk_size)
                host.disk_bytes = disk_bytes
            for proc in keygens:
                _wait_ok(proc, "ssh-keygen")
            self._write_client_files()
            for host in self.hosts:
                host._holder = self._start_holder(host)
            for host in self.hosts:
                self._wait_holder(host)
            for host in self.hosts:
                host._launch_sshd()
            for host in self.hosts:
                host.wait_sshd()
        except BaseException:
            self.down()
            raise
        self.bring_up_seconds = time.monotonic() - start
        return list(self.hosts)

    def _acquire_locks(self) -> None:
        lock = hold_name(f"prefix/{self.prefix}")
        if lock is None:
            raise TestBedError(f"another running test bed uses prefix {self.prefix!r}")
        self._locks.append(lock)
        lock = hold_name(f"subnet/{self.subnet}")
        if lock is None:
            self._release_locks()
            raise TestBedError(f"another running test bed uses subnet {self.subnet}")
        self._locks.append(lock)
        if self.subnet in _addresses_in_use():
            self._release_locks()
            raise TestBedError(f"subnet {self.subnet}.0/24 is already used on this machine")

    def _release_locks(self) -> None:
        for lock in self._locks:
            lock.close()
        self._locks.clear()

    def _prepare_dirs(self) -> None:
        if self._own_base_dir:
            self.base_dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        else:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        (self.base_dir / MARKER).write_text(self.prefix + "\n")

    def _start_keygens(self) -> list[subprocess.Popen[bytes]]:
        def keygen(path: Path, comment: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )

        for host in self.hosts:
            host.dir.mkdir()
        procs = [keygen(self.key_path, f"{self.prefix}-client")]
        procs += [keygen(host.host_key, host.name) for host in self.hosts]
        return procs

    def _create_network(self) -> None:
        lines = [f"netns add {host.netns}" for host in self.hosts]
        lines += [
            f"link add {self.bridge} type bridge",
            f"addr add {self.bridge_ip}/24 dev {self.bridge}",
            f"link set {self.bridge} up",
        ]
        for host in self.hosts:
            lines += [
                f"link add {host.veth} type veth peer name eth0 netns {host.netns}",
                f"link set {host.veth} master {self.bridge}",
                f"link set {host.veth} up",
            ]
        run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")

        def configure(host: Host) -> None:
            inner = [
                "link set lo up",
                f"addr add {host.ip}/24 dev eth0",
                "link set eth0 up",
            ]
            run(["ip", "-n", host.netns, "-batch", "-"], input="\n".join(inner) + "\n")

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(configure, self.hosts))

    def _prepare_host_dir(self, host: Host, disk_size: str) -> None:
        host.disk_dir.mkdir()
        run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={disk_size},mode=755",
                f"{host.name}-disk",
                str(host.disk_dir),
            ]
        )
        (host.dir / "home").mkdir(mode=0o700)
        host.loadavg_path.write_text(f"{NORMAL_LOAD:.2f} " * 3 + "1/100 1\n")
        host.meminfo_path.write_text(real_meminfo())
        hosts_lines = ["127.0.0.1\tlocalhost", f"{self.bridge_ip}\t{self.prefix}-controller"]
        hosts_lines += [f"{other.ip}\t{other.name}" for other in self.hosts]
        (host.dir / "hosts").write_text("\n".join(hosts_lines) + "\n")
        host.sshd_config.write_text(host.sshd_config_text())

    def _write_client_files(self) -> None:
        public = (self.base_dir / "id_ed25519.pub").read_text()
        known = []
        for host in self.hosts:
            (host.dir / "authorized_keys").write_text(public)
            key_type, key_data = (host.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            known.append(f"{host.name},{host.ip} {key_type} {key_data}\n")
        self.known_hosts.write_text("".join(known))
        config = []
        for host in self.hosts:
            config += [
                f"Host {host.name}",
                f"    HostName {host.ip}",
                f"    Port {host.port}",
                f"    User {host.user}",
                f"    IdentityFile {self.key_path}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {self.known_hosts}",
                "    GlobalKnownHostsFile /dev/null",
                "    StrictHostKeyChecking yes",
                "    UpdateHostKeys no",
                "    PasswordAuthentication no",
                "    BatchMode yes",
                "    LogLevel ERROR",
                "",
            ]
        self.ssh_config_path.write_text("\n".join(config))

    def _start_holder(self, host: Host) -> subprocess.Popen[bytes]:
        argv = [
            "nsenter",
            f"--net={host.netns_file}",
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            _HOLDER_SCRIPT,
            "holder",
            host.name,
            str(host.dir),
            self.work_dir,
        ]
        return subprocess.Popen(
            argv,
            env=host.host_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            start_new_session=True,
        )

    def _wait_holder(self, host: Host, timeout: float = 10.0) -> None:
        proc = host._holder
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + timeout
        out = b""
        while b"ready\n" not in out:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TestBedError(f"{host.name}: namespace setup timed out")
            ready, _, _ = select.select([proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
        if b"ready\n" not in out:
            err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
            raise TestBedError(f"{host.name}: namespace setup failed: {err.strip()}")
        proc.stdout.close()
        proc.stderr.close()

    # -- teardown ------------------------------------------------------------------------

    def down(self) -> None:
        """Remove everything this test bed created. Safe to call more than once."""
        if not self._locks:
            return  # never came up, or already down
        for host in self.hosts:
            host.thaw_sshd()
        _cleanup(self.prefix)
        for host in self.hosts:
            for proc in (host._sshd, host._holder):
                if proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)
            host._sshd = None
            host._holder = None
        if self.base_dir != Path() and self.base_dir.exists():
            if self._own_base_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            else:
                for host in self.hosts:
                    shutil.rmtree(host.dir, ignore_errors=True)
                for name in (MARKER, "id_ed25519", "id_ed25519.pub", "known_hosts", "ssh_config"):
                    with contextlib.suppress(FileNotFoundError):
                        (self.base_dir / name).unlink()
        self.hosts = []
        self._release_locks()

    # -- helpers -------------------------------------------------------------------------

    def reset_hosts(self, *, clear_work_dir: bool = True) -> None:
        for host in self.hosts:
            host.reset(clear_work_dir=clear_work_dir)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the running test bed."""
        return {
            "prefix": self.prefix,
            "subnet": self.subnet,
            "controller_ip": self.bridge_ip,
            "base_dir": str(self.base_dir),
            "key": str(self.key_path),
            "known_hosts": str(self.known_hosts),
            "ssh_config": str(self.ssh_config_path),
            "bring_up_seconds": self.bring_up_seconds,
            "hosts": [
                {
                    "name": host.name,
                    "ip": host.ip,
                    "port": host.port,
                    "user": host.user,
                    "key": str(host.key_path),
                    "known_hosts": str(host.known_hosts),
                    "ssh_config": str(host.ssh_config_path),
                    "work_dir": host.work_dir,
                    "disk_dir": str(host.disk_dir),
                    "disk_bytes": host.disk_bytes,
                    "loadavg_file": str(host.loadavg_path),
                    "meminfo_file": str(host.meminfo_path),
                    "sshd_log": str(host.sshd_log),
                    "holder_pid": host.holder_pid,
                }
                for host in self.hosts
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.describe(), indent=2)


def _check_tools() -> None:
    missing = [
        tool
        for tool in ("ip", "nsenter", "unshare", "mount", "ssh-keygen", "/usr/sbin/sshd")
        if shutil.which(tool) is None
    ]
    if not os.path.exists("/usr/bin/python3"):
        missing.append("/usr/bin/python3 (apt-get install -y python3)")
    if missing:
        raise TestBedError(f"missing tools: {', '.join(missing)}")


def _wait_ok(proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise TestBedError(f"{what} failed: {err.decode(errors='replace').strip()}")
