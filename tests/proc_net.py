"""Listening TCP sockets of a set of processes, read from /proc (no ss, lsof or procps needed)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # TCP state in /proc/net/tcp*


@dataclass(frozen=True)
class Listener:
    pid: int
    process: str  # argv[0]'s name (Ray renames its workers: ray::IDLE, ray::DashboardAgent, …)
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    @property
    def shown(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The address, an IPv4-mapped one (::ffff:127.0.0.1, how a v6 socket binds an IPv4 address) as IPv4."""
        return getattr(self.ip, "ipv4_mapped", None) or self.ip

    @property
    def loopback(self) -> bool:
        return self.shown.is_loopback


def _address(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The kernel prints each 32-bit word of the address in host (little-endian) order."""
    raw = bytes.fromhex(hex_ip)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


def listening_inodes() -> dict[str, tuple]:
    """Socket inode → (ip, port) of every listening TCP socket, v4 and v6."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == LISTEN:
                ip, port = f[1].split(":")
                out[f[9]] = (_address(ip), int(port, 16))
    return out


def _stat(pid_dir: Path) -> tuple[int, int]:
    """(parent pid, process group) from /proc/PID/stat."""
    f = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
    return int(f[1]), int(f[2])


def service_processes(pgid: int) -> list[int]:
    """A setsid-started service: its process group and everything under it (even in sessions of their own)."""
    parent, out = {}, set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid, group = _stat(d)
            except (OSError, IndexError, ValueError):
                continue
            parent[int(d.name)] = ppid
            if group == pgid:
                out.add(int(d.name))
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in out} - out
        out |= more
        grew = bool(more)
    return sorted(out)


def listeners(pids: list[int]) -> list[Listener]:
    socks, out = listening_inodes(), []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").rsplit("/", 1)[-1]
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in socks:
                    out.append(Listener(pid, name, *socks[link[8:-1]]))
        except OSError:  # gone, or not ours to read
            continue
    return out
