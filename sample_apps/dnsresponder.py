"""A tiny loopback DNS responder for tests and demos: A, AAAA and PTR from a fixed map.

It answers UDP and TCP queries on 127.0.0.1 (never another address) inside whatever network
namespace it is started in: A/AAAA for the configured names, PTR for their addresses,
NOERROR with no answer for other types of a known name, NXDOMAIN for anything else. It never
forwards a query, so no lookup can leave the machine. Its life is bounded: it stops after
`timeout` seconds, and the command-line form also stops when its parent dies.

    with Responder(port=0) as dns:               # tests: a random high port
        ... dns.port, dns.queries ...
    python -m sample_apps.dnsresponder --port 53 --map svc.cgotrace.test=127.0.0.77

Standard library only; the wire format is RFC 1035 section 4 (header, question, answer RRs).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

DEFAULT_RECORDS: dict[str, tuple[str, ...]] = {"svc.cgotrace.test": ("127.0.0.77",)}
TYPE_A, TYPE_PTR, TYPE_AAAA = 1, 12, 28
CLASS_IN = 1
RCODE_OK, RCODE_FORMERR, RCODE_NXDOMAIN = 0, 1, 3
TTL = 60


class DnsFormatError(ValueError):
    """The packet is not a DNS query we can parse."""


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode("ascii")
            if len(raw) > 63:
                raise DnsFormatError(f"label too long: {label!r}")
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def decode_name(packet: bytes, offset: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at offset -> (name, offset just after it)."""
    labels: list[str] = []
    end = -1
    for _ in range(128):  # bounds pointer loops
        if offset >= len(packet):
            raise DnsFormatError("name runs past the packet")
        n = packet[offset]
        if n == 0:
            return ".".join(labels), (end if end >= 0 else offset + 1)
        if n & 0xC0 == 0xC0:
            if offset + 1 >= len(packet):
                raise DnsFormatError("truncated pointer")
            if end < 0:
                end = offset + 2
            offset = ((n & 0x3F) << 8) | packet[offset + 1]
            continue
        labels.append(packet[offset + 1:offset + 1 + n].decode("ascii", "replace"))
        offset += 1 + n
    raise DnsFormatError("name pointer loop")


def reverse_name(address: str) -> str:
    """127.0.0.77 -> 77.0.0.127.in-addr.arpa (and ip6.arpa for IPv6)."""
    return ipaddress.ip_address(address).reverse_pointer


class Zone:
    """name -> addresses, plus the PTR records they imply. Names are case-insensitive."""

    def __init__(self, records: Mapping[str, Sequence[str]]) -> None:
        self.forward: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
        self.reverse: dict[str, str] = {}
        for name, addresses in records.items():
            key = name.rstrip(".").lower()
            for a in addresses:
                ip = ipaddress.ip_address(a)
                self.forward.setdefault(key, []).append(ip)
                self.reverse.setdefault(ip.reverse_pointer, key)

    def answer(self, qname: str, qtype: int) -> tuple[int, list[tuple[int, bytes]]]:
        """-> (rcode, [(rrtype, rdata)])."""
        key = qname.rstrip(".").lower()
        if key in self.forward:
            want = {TYPE_A: 4, TYPE_AAAA: 6}.get(qtype)
            return RCODE_OK, [(qtype, ip.packed) for ip in self.forward[key]
                              if ip.version == want]
        if key in self.reverse:
            rdata = encode_name(self.reverse[key])
            return RCODE_OK, [(TYPE_PTR, rdata)] if qtype == TYPE_PTR else []
        return RCODE_NXDOMAIN, []


def respond(zone: Zone, query: bytes) -> tuple[bytes, tuple[str, int] | None]:
    """Build the reply to one query -> (reply, (qname, qtype) or None if unparsable)."""
    if len(query) < 12:
        raise DnsFormatError("shorter than a DNS header")
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000:
        raise DnsFormatError("not a query")
    rd = flags & 0x0100
    opcode = flags & 0x7800
    if qdcount < 1 or opcode != 0:
        reply = struct.pack("!HHHHHH", qid, 0x8000 | opcode | rd | RCODE_FORMERR, 0, 0, 0, 0)
        return reply, None
    qname, off = decode_name(query, 12)
    if off + 4 > len(query):
        raise DnsFormatError("truncated question")
    qtype, qclass = struct.unpack("!HH", query[off:off + 4])
    question = query[12:off + 4]
    rcode, answers = zone.answer(qname, qtype) if qclass == CLASS_IN else (RCODE_NXDOMAIN, [])
    # QR, AA and RA set (a resolver treats a non-authoritative, non-recursive empty answer
    # as a lame referral), RD echoed.
    header = struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | 0x0080 | rd | rcode, 1,
                         len(answers), 0, 0)
    body = b"".join(struct.pack("!HHHIH", 0xC00C, rrtype, CLASS_IN, TTL, len(rdata)) + rdata
                    for rrtype, rdata in answers)
    return header + question + body, (qname, qtype)


class Responder:
    """Serve `records` on host:port (UDP and TCP) from a background thread.

    `port=0` picks a free port (read it back from `.port`). The server stops on `close()`,
    on leaving the `with` block, or `timeout` seconds after `start()`. `queries` records
    every (name, type) asked, in order.
    """

    def __init__(self, records: Mapping[str, Sequence[str]] | None = None,
                 host: str = "127.0.0.1", port: int = 53, timeout: float = 60.0,
                 tcp: bool = True) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"dnsresponder binds loopback addresses only, not {host}")
        self.zone = Zone(DEFAULT_RECORDS if records is None else records)
        self.host, self.port, self.timeout, self.tcp = host, port, timeout, tcp
        self.queries: list[tuple[str, int]] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deadline = 0.0

    def start(self) -> Responder:
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((self.host, self.port))
        self.port = self._udp.getsockname()[1]
        if self.tcp:
            self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((self.host, self.port))
            self._tcp.listen(16)
        self._deadline = time.monotonic() + self.timeout
        self._thread = threading.Thread(target=self.serve, name="dnsresponder", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        """Answer queries until close() or the timeout."""
        socks = {s.fileno(): s for s in (self._udp, self._tcp) if s is not None}
        poller = select.poll()  # not select(): it fails on descriptors >= 1024
        for fd in socks:
            poller.register(fd, select.POLLIN)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            for fd, _ev in poller.poll(200):
                s = socks[fd]
                if s is self._udp:
                    self._serve_udp(s)
                else:
                    self._serve_tcp(s)
        self._stop.set()

    def _serve_udp(self, s: socket.socket) -> None:
        data, peer = s.recvfrom(4096)
        reply = self._reply(data)
        if reply is not None:
            s.sendto(reply, peer)

    def _serve_tcp(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2.0)
            try:
                while True:  # a client may send several queries on one connection
                    head = _recv_exact(conn, 2)
                    if head is None:
                        return
                    data = _recv_exact(conn, struct.unpack("!H", head)[0])
                    reply = self._reply(data) if data is not None else None
                    if reply is None:
                        return
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    def _reply(self, data: bytes) -> bytes | None:
        try:
            reply, asked = respond(self.zone, data)
        except DnsFormatError:
            return None
        if asked is not None:
            self.queries.append(asked)
        return reply

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()

    def __enter__(self) -> Responder:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def parse_map(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """["name=addr[,addr...]", ...] -> {name: (addr, ...)}; checks every address."""
    records: dict[str, tuple[str, ...]] = {}
    for item in items:
        name, sep, addrs = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--map wants NAME=ADDR[,ADDR...], got {item!r}")
        records[name] = tuple(str(ipaddress.ip_address(a)) for a in addrs.split(","))
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sample_apps.dnsresponder",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    ap.add_argument("--port", type=int, default=53, help="port (0: any free port)")
    ap.add_argument("--map", action="append", default=[], metavar="NAME=ADDR[,ADDR]",
                    help="records to serve (default svc.cgotrace.test=127.0.0.77)")
    ap.add_argument("--timeout", type=float, default=60.0, help="stop after this many seconds")
    ap.add_argument("--ready-file", help="write 'ready <port>' here once listening")
    args = ap.parse_args(argv)
    try:
        records = parse_map(args.map) if args.map else None
        dns = Responder(records, host=args.host, port=args.port, timeout=args.timeout)
        dns.start()
    except (OSError, ValueError) as e:
        print(f"dnsresponder: {e}", file=sys.stderr)
        return 1
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # SIGTERM: close sockets, exit 0
    print(f"dnsresponder: serving {sorted(dns.zone.forward)} on {args.host}:{dns.port} "
          f"for at most {args.timeout:g} s", flush=True)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(f"ready {dns.port}\n")
    try:
        while dns.running and os.getppid() == parent:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        dns.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
