"""The loopback DNS responder answers real UDP/TCP queries on a random high loopback port.

Queries are built here byte by byte (RFC 1035 section 4), independently of the module's own
encoder, so an encoding bug cannot cancel itself out.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sample_apps.dnsresponder import Responder, decode_name, parse_map, reverse_name

ROOT = Path(__file__).resolve().parents[2]


def query(name: str, qtype: int, qid: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    # RD set, one question; an EDNS OPT record in the additional section, as Go sends.
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1) + labels + b"\0" + \
        struct.pack("!HH", qtype, 1) + opt


def parse(reply: bytes) -> tuple[int, int, int, list[tuple[int, bytes]]]:
    """-> (id, flags, rcode, [(type, rdata)]) of a reply with one question."""
    qid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", reply[:12])
    assert qd == 1
    _, off = decode_name(reply, 12)
    off += 4
    answers = []
    for _ in range(an):
        _, off = decode_name(reply, off)
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", reply[off:off + 10])
        off += 10
        answers.append((rtype, reply[off:off + rdlen]))
        off += rdlen
    return qid, flags, flags & 0xF, answers


def udp(port: int, packet: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(packet, ("127.0.0.1", port))
        return s.recv(4096)


def tcp(port: int, packet: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(struct.pack("!H", len(packet)) + packet)
        n = struct.unpack("!H", s.recv(2))[0]
        data = b""
        while len(data) < n:
            data += s.recv(n - len(data))
        return data


@pytest.fixture
def dns() -> Responder:
    with Responder(port=0, timeout=30) as d:
        yield d


def test_a_record_over_udp(dns: Responder) -> None:
    qid, flags, rcode, answers = parse(udp(dns.port, query("svc.cgotrace.test", 1, 0xBEEF)))
    assert qid == 0xBEEF and flags & 0x8000 and flags & 0x0400  # reply, authoritative
    assert rcode == 0
    assert answers == [(1, bytes([127, 0, 0, 77]))]
    assert dns.queries == [("svc.cgotrace.test", 1)]


def test_names_are_case_insensitive(dns: Responder) -> None:
    assert parse(udp(dns.port, query("SVC.CgoTrace.test", 1)))[3] == [(1, bytes([127, 0, 0, 77]))]


def test_ptr_for_the_configured_address(dns: Responder) -> None:
    _, _, rcode, answers = parse(udp(dns.port, query("77.0.0.127.in-addr.arpa", 12)))
    assert rcode == 0 and len(answers) == 1 and answers[0][0] == 12
    assert decode_name(answers[0][1], 0)[0] == "svc.cgotrace.test"


def test_aaaa_of_known_name_is_nodata(dns: Responder) -> None:
    _, _, rcode, answers = parse(udp(dns.port, query("svc.cgotrace.test", 28)))
    assert (rcode, answers) == (0, [])


def test_unknown_name_is_nxdomain(dns: Responder) -> None:
    _, _, rcode, answers = parse(udp(dns.port, query("other.cgotrace.test", 1)))
    assert (rcode, answers) == (3, [])
    _, _, rcode, _ = parse(udp(dns.port, query("1.0.0.127.in-addr.arpa", 12)))
    assert rcode == 3


def test_tcp_query(dns: Responder) -> None:
    assert parse(tcp(dns.port, query("svc.cgotrace.test", 1)))[3] == [(1, bytes([127, 0, 0, 77]))]


def test_garbage_gets_no_reply_and_server_survives(dns: Responder) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(b"\x01\x02", ("127.0.0.1", dns.port))
        with pytest.raises(socket.timeout):
            s.recv(512)
    assert parse(udp(dns.port, query("svc.cgotrace.test", 1)))[2] == 0


def test_custom_map_with_ipv6() -> None:
    with Responder({"a.test": ["127.0.0.5", "::1"]}, port=0, timeout=30) as d:
        assert parse(udp(d.port, query("a.test", 28)))[3] == [(28, bytes(15) + b"\1")]
        assert parse(udp(d.port, query("svc.cgotrace.test", 1)))[2] == 3
        ptr = parse(udp(d.port, query(reverse_name("::1").rstrip("."), 12)))[3]
        assert decode_name(ptr[0][1], 0)[0] == "a.test"


def test_refuses_non_loopback_bind() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Responder(host="192.0.2.1", port=0)


def test_lifetime_is_bounded() -> None:
    d = Responder(port=0, timeout=0.3).start()
    try:
        deadline = time.monotonic() + 3
        while d.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not d.running
    finally:
        d.close()


def test_parse_map_rejects_bad_input() -> None:
    assert parse_map(["x.test=127.0.0.9,::1"]) == {"x.test": ("127.0.0.9", "::1")}
    with pytest.raises(ValueError):
        parse_map(["x.test"])
    with pytest.raises(ValueError):
        parse_map(["x.test=not-an-ip"])


def test_command_line_ready_file_and_query(tmp_path: Path) -> None:
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sample_apps.dnsresponder", "--port", "0", "--timeout", "20",
         "--map", "cli.test=127.0.0.9", "--ready-file", str(fifo)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd) as f:
            deadline = time.monotonic() + 10
            line = ""
            while not line and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
                line = f.readline()
        assert line.startswith("ready "), (line, proc.poll())
        port = int(line.split()[1])
        assert parse(udp(port, query("cli.test", 1)))[3] == [(1, bytes([127, 0, 0, 9]))]
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "serving ['cli.test'] on 127.0.0.1:" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_command_line_exits_when_its_parent_dies(tmp_path: Path) -> None:
    fifo = tmp_path / "ready"
    os.mkfifo(fifo)
    # An intermediate parent starts the responder, waits for "ready", prints its pid, exits.
    parent_code = (
        "import subprocess,sys\n"
        f"p=subprocess.Popen([sys.executable,'-m','sample_apps.dnsresponder','--port','0',"
        f"'--timeout','30','--ready-file',{str(fifo)!r}],stdout=subprocess.DEVNULL)\n"
        f"open({str(fifo)!r}).read()\n"
        "print(p.pid)\n"
    )
    out = subprocess.run([sys.executable, "-c", parent_code], cwd=ROOT, capture_output=True,
                         text=True, timeout=20).stdout
    pid = int(out)

    def alive() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")

    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not alive(), "responder outlived its parent"
    finally:
        if alive():
            os.kill(pid, 9)  # our grandchild, by the pid it reported
