"""Addresses of the two servers and what holds a TCP port."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tablesync.errors import InfraError

__all__ = [
    "Endpoint",
    "bootstrap_endpoint",
    "describe_port_holder",
    "dsn_endpoint",
    "free_ports",
    "port_answers",
    "port_free",
]

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def is_local(self) -> bool:
        """Whether tablesync may start a server for this address on this machine."""
        return self.host in _LOCAL_HOSTS

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def bootstrap_endpoint(servers: str) -> Endpoint:
    """The first ``host:port`` of a Kafka bootstrap list."""
    first = servers.split(",", maxsplit=1)[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InfraError(f"kafka_bootstrap_servers {servers!r} is not a list of host:port")
    return Endpoint(host.strip("[]"), int(port))


def dsn_endpoint(dsn: str) -> Endpoint:
    """Host and port of a ``postgresql://`` DSN; an empty host means a Unix socket."""
    parts = urlsplit(dsn)
    try:
        port = parts.port or 5432
    except ValueError as exc:
        raise InfraError(f"the database URL has an invalid port: {exc}") from None
    return Endpoint(parts.hostname or "", port)


def port_answers(endpoint: Endpoint, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``endpoint``."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers bind with SO_REUSEADDR too, so sockets in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise InfraError(f"cannot bind {host}:{port}: {exc}") from exc
    return True


def free_ports(count: int = 1) -> list[int]:
    """Loopback ports nothing listens on right now (held together, so all distinct)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def describe_port_holder(port: int) -> str:
    """``"pid 123 (java)"`` for the process listening on ``port``, or a neutral phrase."""
    inodes = _listening_inodes(port)
    if inodes:
        for pid in _pids_owning_sockets(inodes):
            return f"pid {pid} ({_process_name(pid)})"
    return "another process"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _TCP_LISTEN:
                inodes.add(fields[9])
    return inodes


def _pids_owning_sockets(inodes: set[str]) -> list[int]:
    targets = {f"socket:[{inode}]" for inode in inodes}
    owners: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        if _socket_links(proc) & targets:
            owners.append(int(proc.name))
    return owners


def _socket_links(proc: Path) -> set[str]:
    links: set[str] = set()
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:
        return links
    for fd in fds:
        # A descriptor can close between the listing and the read.
        try:
            links.add(str(fd.readlink()))
        except OSError:
            continue
    return links


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "unknown"
