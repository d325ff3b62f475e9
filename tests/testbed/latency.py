"""Network latency for the SSH test bed: a TCP proxy per host that holds every chunk for half a
round trip in each direction (this kernel has no netem).

    python -m tests.testbed.latency --rtt 0.04 LISTEN_PORT:HOST:PORT [...]

listens on 127.0.0.1 and forwards each port to its host, then prints ``ready``. Order is kept:
a chunk read at time t is written at t + rtt/2, after every chunk read before it. The
``LatencyProxies`` context manager runs it for a :class:`~tests.testbed.TestBed` and writes an
ssh config and a known_hosts file that reach every host through its proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hosts import TestBed


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def feed() -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(1 << 16):
                queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((loop.time() + delay, b""))

    async def drain() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            with contextlib.suppress(OSError):
                await writer.drain()

    await asyncio.gather(feed(), drain())


async def _serve(routes: list[tuple[int, str, int]], rtt: float) -> None:
    async def handler(
        host: str, port: int, cr: asyncio.StreamReader, cw: asyncio.StreamWriter
    ) -> None:
        try:
            sr, sw = await asyncio.open_connection(host, port)
        except OSError:
            cw.close()
            return
        for w in (cw, sw):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(cr, sw, rtt / 2), _pipe(sr, cw, rtt / 2))
        for w in (cw, sw):
            w.close()

    servers = []
    for listen, host, port in routes:

        async def handle(
            cr: asyncio.StreamReader, cw: asyncio.StreamWriter, host: str = host, port: int = port
        ) -> None:
            await handler(host, port, cr, cw)

        servers.append(await asyncio.start_server(handle, "127.0.0.1", listen))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LatencyProxies:
    """Every host of ``bed`` behind a proxy with this round trip (seconds); ``ssh_config`` and
    ``known_hosts`` reach the hosts by their names through it."""

    def __init__(self, bed: TestBed, rtt: float) -> None:
        self.bed, self.rtt = bed, rtt
        tag = f"rtt{round(rtt * 1000)}"
        self.ssh_config: Path = bed.base_dir / f"ssh_config_{tag}"
        self.known_hosts: Path = bed.base_dir / f"known_hosts_{tag}"
        self.ports = {host.name: free_port() for host in bed.hosts}
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> LatencyProxies:
        routes = [f"{self.ports[h.name]}:{h.ip}:{h.port}" for h in self.bed.hosts]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.testbed.latency", "--rtt", str(self.rtt), *routes],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":
            self._proc.kill()
            raise RuntimeError("the latency proxy did not start")
        known, config = [], []
        for host in self.bed.hosts:
            key_type, key_data = (host.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            known.append(f"[127.0.0.1]:{self.ports[host.name]} {key_type} {key_data}\n")
        self.known_hosts.write_text("".join(known))
        for line in self.bed.ssh_config_path.read_text().splitlines():
            key = line.strip().split(" ", 1)[0]
            if key == "Host":
                name = line.split()[1]
            if key == "HostName":
                line = "    HostName 127.0.0.1"
            elif key == "Port":
                line = f"    Port {self.ports[name]}"
            elif key == "UserKnownHostsFile":
                line = f"    UserKnownHostsFile {self.known_hosts}"
            config.append(line)
        self.ssh_config.write_text("\n".join(config) + "\n")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        for path in (self.ssh_config, self.known_hosts):
            path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", type=float, required=True, help="round trip, seconds")
    parser.add_argument("routes", nargs="+", metavar="LISTEN_PORT:HOST:PORT")
    args = parser.parse_args()
    routes = []
    for route in args.routes:
        listen, host, port = route.split(":")
        routes.append((int(listen), host, int(port)))
    asyncio.run(_serve(routes, args.rtt))


if __name__ == "__main__":
    main()
