"""Which Go package linked which shared library, and the Go modules of a build, as static
facts for the trace header (`cgo_links`, `go_build`; docs/trace-format.md).

A cgo call `C.sqlite3_open(...)` in package `vendor.test/sqlkv` compiles to a wrapper
`vendor.test/sqlkv._Cfunc_sqlite3_open`; in a dynamically linked binary `sqlite3_open` is
then an undefined dynamic symbol, and the first library of the loader's NEEDED closure
that exports it is the one that package linked. Calls made only from the package's own C
code (a static helper in the preamble) leave no wrapper with the library's name: such a
package links nothing by this evidence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tracer.binary.elf import ElfImage
from tracer.binary.loader import LibraryLookup
from tracer.errors import CgotraceError

_CFUNC = re.compile(r"^(?P<pkg>.+?)\._C2?func_(?P<fn>[A-Za-z_]\w*)$")
# Settings of `go version -m` worth carrying into an SBOM (the rest is flags and paths).
GO_BUILD_SETTINGS = ("GOOS", "GOARCH", "GOAMD64", "CGO_ENABLED", "-buildmode", "-tags",
                     "vcs", "vcs.revision", "vcs.time", "vcs.modified")


def cgo_links(names: Iterable[str], imports: Iterable[str],
              libraries: Iterable[LibraryLookup]) -> dict[str, list[str]]:
    """Go package -> the NEEDED libraries (DT_NEEDED names) its cgo calls resolve to."""
    imported = set(imports)
    calls: dict[str, set[str]] = {}
    for n in names:
        m = _CFUNC.match(n)
        if m is not None and m.group("fn") in imported:
            calls.setdefault(m.group("fn"), set()).add(m.group("pkg"))
    if not calls:
        return {}
    links: dict[str, list[str]] = {}
    todo = set(calls)
    for lib in libraries:
        if not todo or not lib.host_path:
            continue
        try:
            exports = set(ElfImage.open(lib.host_path).exports)
        except (CgotraceError, OSError):
            continue
        for fn in sorted(todo & exports):
            todo.discard(fn)  # the loader binds a symbol to the first library defining it
            for pkg in calls[fn]:
                if lib.name not in links.setdefault(pkg, []):
                    links[pkg].append(lib.name)
    return {pkg: sorted(libs) for pkg, libs in sorted(links.items())}


def module_records(bi: Any) -> list[dict[str, Any]]:
    """The main module and every dependency of a BuildInfo, with checksums and
    replacements: [{path, version, sum, main, replace: {path, version, sum} | None}]."""
    out: list[dict[str, Any]] = []
    main = getattr(bi, "main", None)
    for m, is_main in ([(main, True)] if main is not None else []) + [
            (d, False) for d in getattr(bi, "deps", ()) or ()]:
        rep = getattr(m, "replace", None)
        out.append({"path": m.path, "version": m.version, "sum": m.sum or None,
                    "main": is_main,
                    "replace": None if rep is None else {
                        "path": rep.path, "version": rep.version, "sum": rep.sum or None}})
    return out


def build_settings(settings: dict[str, str]) -> dict[str, str]:
    return {k: settings[k] for k in GO_BUILD_SETTINGS if k in settings}
