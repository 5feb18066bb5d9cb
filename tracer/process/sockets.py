"""The sockets a live process holds, read from its own network namespace.

`/proc/PID/net/{tcp,tcp6,udp,udp6,unix}` are the tables of the namespace PID lives in (the
`/proc/net` of the reader would be the reader's own: a process in a container or any other
network namespace would show none of its sockets). A socket belongs to the process when
its inode is the target of one of the process's `/proc/PID/fd/*` links (`socket:[INODE]`).
Nothing here stops or traces the process.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass

# include/net/tcp_states.h
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
              10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
_UNIX_ACCEPTCON = 0x10000  # __SO_ACCEPTCON: a listening unix socket
_UNIX_CONNECTED = 3  # SS_CONNECTED
INET_TABLES = (("tcp", "AF_INET"), ("tcp6", "AF_INET6"), ("udp", "AF_INET"),
               ("udp6", "AF_INET6"))


@dataclass(frozen=True)
class ProcSocket:
    """One socket of the process: `local`/`remote` as "1.2.3.4:80", "[::1]:53" or a unix path
    ("@name" abstract, "" unnamed); `remote` None when not connected."""

    fd: int
    family: str  # AF_INET, AF_INET6, AF_UNIX
    proto: str  # tcp, udp, unix
    local: str
    remote: str | None
    status: str | None  # LISTEN, ESTABLISHED, ... (udp: ESTABLISHED when connected)


def socket_fds(pid: int) -> dict[int, int]:
    """socket inode -> fd for every socket `pid` holds (OSError when /proc/PID/fd cannot be
    read: permission, or the process is gone)."""
    out: dict[int, int] = {}
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:[") and target.endswith("]"):
            out.setdefault(int(target[8:-1]), int(name))
    return out


def _inet_address(hex_addr: str) -> str:
    """'0100007F:0035' -> '127.0.0.1:53'; the IPv6 form in brackets. The kernel prints the
    address as 32-bit words in host (little-endian) order, the port in plain hex."""
    addr, _, port = hex_addr.partition(":")
    raw = bytes.fromhex(addr)
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    packed = struct.pack(f">{len(words)}I", *words)
    ip = ipaddress.ip_address(packed)
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{host}:{int(port, 16)}"


def _unspecified(address: str) -> bool:
    return address.rsplit(":", 1)[-1] == "0" and address.rsplit(":", 1)[0] in (
        "0.0.0.0", "[::]")


def parse_inet(text: str, proto: str, family: str, fds: dict[int, int]) -> list[ProcSocket]:
    """The rows of one /proc/PID/net/{tcp,udp}[6] table whose inode is in `fds`."""
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or not cols[9].isdigit():
            continue
        fd = fds.get(int(cols[9]))
        if fd is None:
            continue
        local, remote = _inet_address(cols[1]), _inet_address(cols[2])
        state = int(cols[3], 16)
        connected = not _unspecified(remote)
        if proto == "udp":
            status = "ESTABLISHED" if state == 1 else None
        else:
            status = TCP_STATES.get(state)
        out.append(ProcSocket(fd, family, proto, local, remote if connected else None, status))
    return out


def parse_unix(text: str, fds: dict[int, int]) -> list[ProcSocket]:
    """The rows of /proc/PID/net/unix whose inode is in `fds` (peer paths are not in this
    table: a connected client shows the path only when it bound one)."""
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split(None, 7)
        if len(cols) < 7 or not cols[6].isdigit():
            continue
        fd = fds.get(int(cols[6]))
        if fd is None:
            continue
        path = cols[7].strip() if len(cols) > 7 else ""
        flags, state = int(cols[3], 16), int(cols[5], 16)
        status = "LISTEN" if flags & _UNIX_ACCEPTCON else (
            "CONNECTED" if state == _UNIX_CONNECTED else None)
        out.append(ProcSocket(fd, "AF_UNIX", "unix", path, None, status))
    return out


def process_sockets(pid: int) -> list[ProcSocket]:
    """Every inet and unix socket `pid` holds, from its own namespace's tables, by fd.
    OSError when its fds or tables cannot be read."""
    fds = socket_fds(pid)
    out: list[ProcSocket] = []
    if not fds:
        return out
    for name, family in INET_TABLES:
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                text = f.read()
        except FileNotFoundError:
            continue  # no IPv6 in this kernel
        out += parse_inet(text, name.rstrip("6"), family, fds)
    with open(f"/proc/{pid}/net/unix") as f:
        out += parse_unix(f.read(), fds)
    return sorted(out, key=lambda s: s.fd)
