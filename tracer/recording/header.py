"""What a recording's header holds before the first access, from one place: the static facts
(the summary the findings rules read, so `cgotrace report` works without the binary, and the
classifier's loader closure: what readelf/ldd would show, so the rest is "hidden") and the
few environment variables that change which files Go reads.

`run` takes them from the facts cache (tracer/binary/factcache.py) when this binary was
traced before; `attach`, `snapshot` and a failed start's diagnosis inspect afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracer.recording.classify import Closure

# Environment variables that change which files a Go program reads (resolver, zoneinfo,
# CA roots): recorded in the header so findings can say why, and nothing else of the env.
RECORDED_ENV = ("GODEBUG", "LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES", "ZONEINFO", "TZ",
                "SSL_CERT_FILE", "SSL_CERT_DIR", "LD_LIBRARY_PATH", "LD_PRELOAD")


@dataclass(frozen=True)
class RunFacts:
    """What a recording knows about its binary before the first access."""

    summary: dict[str, Any]  # the trace header's "static" (docs/trace-format.md)
    closure: Closure | None  # None: the binary could not be inspected
    facts: Any = None  # tracer.binary.facts.StaticFacts when inspected now (None: cached)


def recorded_env(env: dict[str, str]) -> dict[str, str]:
    """The part of an environment the trace header keeps (RECORDED_ENV)."""
    return {k: env[k] for k in RECORDED_ENV if k in env}


def resolv_conf(host_file: str, seen_as: str = "/etc/resolv.conf") -> dict[str, Any] | None:
    """The header's `resolv_conf`: the name servers of the resolv.conf the program will
    read (`host_file` is where cgotrace can read it: the file bound over it in a sandbox,
    /proc/PID/root/etc/resolv.conf for a running process). A missing file records the
    resolvers' defaults (127.0.0.1 and ::1) with `found` false; an unreadable one records
    nothing (any port 53 then counts as a name server). Read once, at the start: a file
    changed while the program runs is not followed."""
    from probes.knowledge import parse_nameservers

    try:
        with open(host_file, encoding="utf-8", errors="replace") as f:
            text = f.read(65536)
        found = True
    except (FileNotFoundError, NotADirectoryError):
        text, found = "", False
    except OSError:
        return None
    return {"path": seen_as, "found": found, "nameservers": list(parse_nameservers(text))}


def inspect_or_none(path: str, rootfs: str | None = None,
                    path_in_root: str | None = None) -> Any:
    """`inspect_binary`, resolved inside `rootfs` when given; None when the binary cannot be
    inspected (the recording goes on without static facts)."""
    try:
        from tracer.binary.facts import inspect_binary

        return inspect_binary(path, rootfs=rootfs, strict=False,
                              binary_path_in_root=path_in_root)
    except Exception:
        return None


def header_summary(facts: Any) -> dict[str, Any]:
    """The header's static summary of inspected facts ({} without facts)."""
    if facts is None:
        return {}
    from tracer.binary.facts import static_header

    return static_header(facts)


def static_facts(program: str, root: str | None = None, path_in_root: str | None = None,
                 *, cached: bool = True) -> RunFacts:
    """The static facts of `program` (inside `root`, where it is `path_in_root`). With
    `cached`, a binary traced before is answered from the facts cache and a new one is
    stored there."""
    key = None
    if cached:
        from tracer.binary import factcache

        key = factcache.cache_key(program, root, path_in_root)
        hit = factcache.load(key) if key is not None else None
        if hit is not None:
            return RunFacts(dict(hit.get("static") or {}), _closure(hit.get("closure")))
    facts = inspect_or_none(program, root, path_in_root)
    out = RunFacts(header_summary(facts),
                      Closure.from_facts(facts) if facts is not None else None, facts)
    if key is not None and facts is not None and out.closure is not None:
        c = out.closure
        factcache.store(key, {"static": out.summary, "closure": {
            "interpreter": c.interpreter, "paths": sorted(c.paths), "names": sorted(c.names)}})
    return out


def _closure(c: Any) -> Closure | None:
    if not isinstance(c, dict):
        return None
    return Closure(c["interpreter"], frozenset(c["paths"]), frozenset(c["names"]))
