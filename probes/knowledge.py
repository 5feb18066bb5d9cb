"""The rules in probes/rules/*.toml, loaded once and queried by path or by feature.

Pure data access: no I/O beyond reading the packaged TOML files (and their parsed copies
in the user's cache), no imports from the tracer except `tracer.trace.model` and
`tracer.cachedir`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer.trace.model import AccessKind

RULES_DIR = Path(__file__).resolve().parent / "rules"


@dataclass(frozen=True)
class PathRule:
    pattern: str
    kind: AccessKind
    feature: str


@dataclass(frozen=True)
class Feature:
    id: str
    title: str
    fix: str
    go_packages: tuple[str, ...] = ()
    cgo_markers: tuple[re.Pattern[str], ...] = ()
    go_markers: tuple[re.Pattern[str], ...] = ()
    embedded_markers: tuple[re.Pattern[str], ...] = ()
    cgo_predicts: tuple[str, ...] = ()
    go_predicts: tuple[str, ...] = ()
    c_functions: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()  # functions that decide the dependency (exact pclntab names)
    extra: dict[str, Any] = field(default_factory=dict)


def _load(name: str) -> dict[str, Any]:
    """A packaged rules file, parsed; kept as JSON in the facts cache's directory (keyed by
    the file's size, mtime and inode), since importing tomllib and parsing cost a few ms of
    every run's start."""
    import json
    import os

    from tracer.cachedir import small_caches_off, user_cache

    path = RULES_DIR / name
    cached = None
    if not small_caches_off():
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}"
            cached = user_cache() / "rules" / f"{name}-{stamp}.json"
            data = json.loads(cached.read_text())
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
    import tomllib

    with open(path, "rb") as f:
        data = tomllib.load(f)
    if cached is not None:
        with contextlib.suppress(OSError, TypeError, ValueError):
            cached.parent.mkdir(parents=True, exist_ok=True)
            for old in cached.parent.glob(f"{name}-*.json"):  # an edited file's entries
                old.unlink()
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, cached)
    return data


@functools.cache
def path_rules() -> tuple[PathRule, ...]:
    return tuple(PathRule(r["pattern"], AccessKind(r["kind"]), r["feature"])
                 for r in _load("paths.toml")["path"])


@functools.cache
def features() -> dict[str, Feature]:
    out: dict[str, Feature] = {}
    known = {"id", "title", "fix", "go_packages", "cgo_markers", "go_markers", "embedded_markers",
             "cgo_predicts", "go_predicts", "c_functions", "origins"}
    for r in _load("features.toml")["feature"]:
        out[r["id"]] = Feature(
            id=r["id"], title=r["title"], fix=r["fix"],
            go_packages=tuple(r.get("go_packages", ())),
            cgo_markers=tuple(re.compile(p) for p in r.get("cgo_markers", ())),
            go_markers=tuple(re.compile(p) for p in r.get("go_markers", ())),
            embedded_markers=tuple(re.compile(p) for p in r.get("embedded_markers", ())),
            cgo_predicts=tuple(r.get("cgo_predicts", ())),
            go_predicts=tuple(r.get("go_predicts", ())),
            c_functions=tuple(r.get("c_functions", ())),
            origins=tuple(r.get("origins", ())),
            extra={k: v for k, v in r.items() if k not in known},
        )
    return out


@functools.cache
def origin_functions() -> dict[str, str]:
    """Every feature's `origins` entry -> the feature id (the functions that decide a
    dependency; an access's `origin` is the innermost frame named here)."""
    return {fn: f.id for f in features().values() for fn in f.origins}


@functools.cache
def _matchers() -> tuple[tuple[PathRule, str, bool], ...]:
    """(rule, the pattern's literal prefix, whether the pattern is all literal): a glob is
    compiled (fnmatch) only for a path that starts with its prefix, so a short run pays
    for the few patterns its paths can match, not for all of them."""
    out = []
    for rule in path_rules():
        cut = min((i for i, c in enumerate(rule.pattern) if c in "*?["),
                  default=len(rule.pattern))
        out.append((rule, rule.pattern[:cut], cut == len(rule.pattern)))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def classify_path(path: str) -> PathRule | None:
    """The first path rule whose glob matches `path`, or None."""
    for rule, prefix, literal in _matchers():
        if literal:
            if path == prefix:
                return rule
        elif path.startswith(prefix) and fnmatch.fnmatchcase(path, rule.pattern):
            return rule
    return None


# === connect(): name servers and the program's own traffic ==================================

NAME_SERVER_PORT = 53
# What Go's resolver and glibc query when resolv.conf is absent or names no name server
# (Go: defaultNS in net/dnsconfig_unix.go; glibc: the loopback address).
DEFAULT_NAMESERVERS = ("127.0.0.1", "::1")
MAX_NAMESERVERS = 3  # glibc's MAXNS; Go's resolver reads the same first three


def parse_nameservers(text: str) -> tuple[str, ...]:
    """The `nameserver` addresses of a resolv.conf as glibc and Go read them: the first
    three, a zone (`%eth0`) dropped; DEFAULT_NAMESERVERS when it names none."""
    import ipaddress

    out: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            addr = ipaddress.ip_address(words[1].split("%", 1)[0])
        except ValueError:
            continue  # not an address: both resolvers skip the line
        out.append(str(addr))
        if len(out) == MAX_NAMESERVERS:
            break
    return tuple(out) or DEFAULT_NAMESERVERS


def nameservers_of(header: dict[str, Any]) -> tuple[str, ...] | None:
    """The name servers a trace header recorded (`resolv_conf`, docs/trace-format.md);
    None when it recorded none (an older trace, an unreadable resolv.conf)."""
    rc = header.get("resolv_conf")
    if not isinstance(rc, dict) or not isinstance(rc.get("nameservers"), list):
        return None
    return tuple(str(x) for x in rc["nameservers"])


def split_address(address: str) -> tuple[str, int] | None:
    """("1.2.3.4", 53) for "1.2.3.4:53", ("::1", 53) for "[::1]:53" (the trace's spelling of
    an AF_INET/AF_INET6 connect); None for a unix path or anything else."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        host = host[1:-1]
    elif ":" in host or "/" in host:
        return None
    return host, int(port)


def _same_ip(a: str, b: str) -> bool:
    """Equal addresses, an IPv4-mapped IPv6 address equal to its IPv4 form."""
    import ipaddress

    try:
        x, y = ipaddress.ip_address(a.split("%", 1)[0]), ipaddress.ip_address(b)
    except ValueError:
        return False
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped is not None:
        x = x.ipv4_mapped
    if isinstance(y, ipaddress.IPv6Address) and y.ipv4_mapped is not None:
        y = y.ipv4_mapped
    return x == y


def is_name_server(address: str, nameservers: tuple[str, ...] | None = None) -> bool:
    """A connect to port 53 of a name server of the resolv.conf in force (`nameservers`,
    recorded in the trace header), or to any port 53 when none was recorded."""
    hp = split_address(address)
    if hp is None or hp[1] != NAME_SERVER_PORT:
        return False
    return nameservers is None or any(_same_ip(hp[0], ns) for ns in nameservers)


def connect_kind(address: str, nameservers: tuple[str, ...] | None = None) -> AccessKind:
    """What a connect() is: SOCKET for a name server (`is_name_server`) or a daemon socket
    the path rules name (nscd, systemd-userdb), RUNTIME for /dev sockets, NETWORK for
    everything else (the program's own traffic: an upstream, a database, a peer)."""
    if address.startswith("/"):
        rule = classify_path(address)
        return rule.kind if rule is not None else AccessKind.NETWORK
    return AccessKind.SOCKET if is_name_server(address, nameservers) else AccessKind.NETWORK


def connect_feature(address: str, kind: str) -> str | None:
    """The feature of a connect the findings keep: `resolver` for a name server."""
    if kind == AccessKind.SOCKET.value and split_address(address) is not None:
        return "resolver"
    rule = classify_path(address) if address.startswith("/") else None
    return rule.feature if rule is not None else None


def access_result(syscall: str, result: str) -> str:
    """The result the findings use: a non-blocking connect's EINPROGRESS is "ok" (the
    connection is under way, as for every non-blocking socket; its outcome is not a
    syscall result), everything else as recorded."""
    return "ok" if syscall == "connect" and result == "EINPROGRESS" else result


def godebug(env: dict[str, str], key: str) -> str | None:
    """The value of `key` in GODEBUG (the last setting wins, as in Go), or None."""
    value = None
    for item in env.get("GODEBUG", "").split(","):
        k, sep, v = item.partition("=")
        if sep and k.strip() == key:
            value = v.strip()
    return value


def run_time_resolver(cgo_resolver_linked: bool, env: dict[str, str]
                      ) -> tuple[str, str] | None:
    """(implementation, why) when a process's environment overrides the binary's static
    resolver choice, else None. Go's net/conf.go: GODEBUG=netdns=go wins; without the cgo
    resolver compiled in nothing else counts; netdns=cgo, or LOCALDOMAIN, RES_OPTIONS or
    HOSTALIASES set, send lookups to getaddrinfo."""
    netdns = (godebug(env, "netdns") or "").split("+")
    if "go" in netdns:
        return "go", "GODEBUG=netdns=go in its environment"
    asks_cgo = "cgo" in netdns
    # LOCALDOMAIN counts even when empty; the other two only when not
    set_vars = [k for k in ("LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES")
                if env.get(k) or (k == "LOCALDOMAIN" and k in env)]
    if not asks_cgo and not set_vars:
        return None
    why = "GODEBUG=netdns=cgo" if asks_cgo else ", ".join(set_vars) + " set"
    if not cgo_resolver_linked:
        return "go", f"{why} in its environment is ignored: no cgo resolver in this binary"
    return "cgo", f"{why} in its environment: every lookup calls getaddrinfo"
