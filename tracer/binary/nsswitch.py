"""/etc/nsswitch.conf, read as glibc reads it: the one parser of that file.

Users: static facts (tracer/binary/facts.py: which NSS modules a cgo lookup will dlopen,
which resolver Go picks), the glibc rootfs preset (tracer/sandbox/presets.py: which
modules to copy), and, through the trace header's `static.nsswitch`, the findings rules.

    config = parse_nsswitch(text)       # {"passwd": ("files", "systemd"), ...}
    nss_services(config)                # ["files", "systemd", "dns", ...]
    nss_modules(config, ["passwd"])     # [("libnss_systemd.so.2", "passwd")]

A line is `database: source [STATUS=action] source ...`; `#` starts a comment. The
`[...]` criteria only steer the lookup and name no module, so they are dropped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from tracer.binary.rootpath import RootFS

NSSWITCH_CONF = "/etc/nsswitch.conf"
# glibc >= 2.34 has these NSS sources inside libc.so.6: no libnss_*.so is dlopen'd for them.
NSS_BUILTIN = ("files", "dns")
_CRITERIA = re.compile(r"\[[^\]]*\]")

NsswitchConfig = dict[str, tuple[str, ...]]


def parse_nsswitch(text: str) -> NsswitchConfig:
    """database -> sources, without the [STATUS=action] criteria."""
    out: NsswitchConfig = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        db, _, rest = line.partition(":")
        out[db.strip()] = tuple(_CRITERIA.sub(" ", rest).split())
    return out


def nss_services(config: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Every source the configuration names, once each, in the order they first appear."""
    return list(dict.fromkeys(s for sources in config.values() for s in sources))


def read_nsswitch(fs: RootFS) -> tuple[NsswitchConfig, str | None]:
    """The root's nsswitch.conf, parsed, and a note when it is missing or unreadable
    (glibc then uses its built-in defaults)."""
    real = fs.resolve(NSSWITCH_CONF)
    where = "this root" if fs.root != "/" else "this host"
    if real is None or not os.path.isfile(fs.host(real)):
        return {}, (f"{NSSWITCH_CONF} is missing in {where}: glibc then uses its built-in "
                    "defaults (files; hosts: dns files) and Go's resolver uses files,dns")
    try:
        with open(fs.host(real), encoding="utf-8", errors="replace") as f:
            return parse_nsswitch(f.read()), None
    except OSError as e:
        return {}, f"{NSSWITCH_CONF} unreadable in {where}: {e.strerror}"


def nss_modules(config: Mapping[str, tuple[str, ...]], databases: Iterable[str],
                builtin: tuple[str, ...] = NSS_BUILTIN) -> list[tuple[str, str]]:
    """(libnss_<source>.so.2, database) glibc will dlopen for these databases."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for db in databases:
        for src in config.get(db, ()):
            if src in builtin or src in seen:
                continue
            seen.add(src)
            out.append((nss_module(src), db))
    return out


def nss_module(source: str) -> str:
    """The library glibc dlopens for a source (`systemd` -> `libnss_systemd.so.2`)."""
    return f"libnss_{source}.so.2"
