"""Static facts about a binary: what readelf, ldd, file and `go version -m` could tell,
plus what the knowledge base predicts it will need at run time. The one place static
facts come from: `cgotrace inspect` renders them, the tracing engine classifies accesses
with them (interpreter + NEEDED closure = what readelf-level facts account for).

    facts = inspect_binary("./main", rootfs="/path/to/rootfs")
    facts.interpreter, facts.closure.paths(), facts.static, facts.pie, facts.cgo.linked

Predictions are labelled `prediction: True`: they say what the code *can* touch, the
trace says what it did.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from probes import knowledge
from tracer.binary.cgolinks import build_settings, cgo_links, module_records
from tracer.binary.elf import ElfImage
from tracer.binary.loader import (
    LoaderClosure,
    loader_flavor,
    outside_search_path,
    resolve_closure,
)
from tracer.binary.nsswitch import NSS_BUILTIN, nss_modules, read_nsswitch
from tracer.binary.rootpath import RootFS
from tracer.errors import BadBinaryError, CgotraceError, NotFoundError, NotGoBinaryError

# pclntab names that exist only when runtime/cgo is linked (docs/go-runtime.md). Not
# runtime.cgocall: that one is always present.
CGO_RUNTIME_MARKERS = ("crosscall2", "_cgo_topofstack", "runtime/cgo.set_crosscall2",
                       "x_cgo_init")
_CGO_FUNC = re.compile(r"^(?P<pkg>.+?)\.(?:\(\*?[^)]*\)\.)?_(?:Cfunc|C2func|cgo|Cmacro|Cvar)_")
# Standard packages whose cgo parts are the toolchain's business, not a dependency signal.
_STD_CGO_PLUMBING = ("runtime/cgo", "runtime", "runtime/race", "runtime/msan", "runtime/asan",
                     "syscall", "crypto/internal/boring")
_LIBC_SONAMES = ("libc.so.6",)


@dataclass(frozen=True)
class ElfFacts:
    machine: str
    elfclass: int
    etype: str
    arch_supported: bool
    interpreter: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    soname: str | None
    static: bool
    pie: bool
    stripped: bool
    dwarf: bool
    gnu_build_id: str | None
    go_build_id: str | None
    upx: bool
    libc: str | None  # "glibc", "musl", or None (none linked / unknown)
    imports: tuple[str, ...]  # undefined dynamic symbols
    exports: tuple[str, ...]  # defined dynamic symbols
    sections: int

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class GoFacts:
    version: str | None  # "go1.27.3"
    path: str | None  # main package path
    main: str | None  # main module path
    main_version: str | None
    deps: tuple[tuple[str, str], ...]  # (module path, version)
    settings: dict[str, str]  # each `build KEY=VALUE` line of `go version -m`
    lines: tuple[str, ...]  # the modinfo lines as `go version -m` prints them
    nfunc: int | None
    text_start: int | None
    function_source: str  # "pclntab", ".symtab", or "none"
    # main module and deps with sums and replacements (tracer.binary.cgolinks.module_records)
    modules: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "path": self.path, "main": self.main,
                "main_version": self.main_version,
                "deps": [{"path": p, "version": v} for p, v in self.deps],
                "settings": dict(self.settings), "lines": list(self.lines),
                "nfunc": self.nfunc,
                "text_start": None if self.text_start is None else hex(self.text_start),
                "function_source": self.function_source}


@dataclass(frozen=True)
class CgoFacts:
    linked: bool  # runtime/cgo is in the binary (C code runs in this process)
    evidence: tuple[str, ...]  # the marker functions found
    std_packages: tuple[str, ...]  # standard packages compiled in their cgo form
    third_party: tuple[str, ...]  # other packages with _Cfunc_/_C2func_/_cgo_ functions
    c_imports: tuple[str, ...]  # C library functions the cgo code calls (dynsym, knowledge)
    cgo_enabled: str | None  # the CGO_ENABLED build setting (a setting, not proof of use)

    @property
    def packages(self) -> tuple[str, ...]:
        return self.std_packages + self.third_party

    def to_dict(self) -> dict[str, Any]:
        return {"linked": self.linked, "packages": list(self.packages),
                "std_packages": list(self.std_packages), "third_party": list(self.third_party),
                "evidence": list(self.evidence), "c_imports": list(self.c_imports),
                "cgo_enabled": self.cgo_enabled}


@dataclass(frozen=True)
class Selection:
    """Which implementation a Go feature uses: "cgo", "go", "go+cgo" (Go by default, cgo
    in listed cases), "none" (not linked) or "unknown"."""

    implementation: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"implementation": self.implementation, "reason": self.reason}


@dataclass(frozen=True)
class Prediction:
    path: str
    feature: str
    reason: str
    kind: str = "other"
    prediction: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "feature": self.feature, "kind": self.kind,
                "reason": self.reason, "prediction": self.prediction}


@dataclass(frozen=True)
class FeatureFacts:
    id: str
    title: str
    form: str  # "cgo", "go", "embedded", "absent"
    evidence: tuple[str, ...]
    predictions: tuple[Prediction, ...]
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "form": self.form,
                "evidence": list(self.evidence),
                "predictions": [p.to_dict() for p in self.predictions], "fix": self.fix}


@dataclass(frozen=True)
class StaticFacts:
    path: str
    size: int
    elf: ElfFacts
    is_go: bool
    go: GoFacts | None
    cgo: CgoFacts
    resolver: Selection
    user_lookup: Selection
    features: tuple[FeatureFacts, ...]
    closure: LoaderClosure  # interpreter + NEEDED closure resolved in `rootfs` (or the host)
    rootfs: str | None
    nsswitch: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hazards: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    go_error: str | None = None  # corrupt pclntab/buildinfo (strict=False only)
    # Go package -> NEEDED libraries its cgo calls bind to (tracer.binary.cgolinks)
    cgo_links: dict[str, list[str]] = field(default_factory=dict)

    # --- what the engine reads ------------------------------------------------------------
    @property
    def interpreter(self) -> str | None:
        return self.elf.interpreter

    @property
    def needed(self) -> tuple[str, ...]:
        return self.elf.needed

    @property
    def static(self) -> bool:
        return self.elf.static

    @property
    def pie(self) -> bool:
        return self.elf.pie

    @property
    def stripped(self) -> bool:
        return self.elf.stripped

    @property
    def startup_paths(self) -> frozenset[str]:
        """In-root paths the loader opens before main (interpreter, NEEDED closure, loader
        config): an access to one of these is accounted for by readelf-level facts."""
        return self.closure.paths()

    @property
    def predictions(self) -> tuple[Prediction, ...]:
        return tuple(p for f in self.features for p in f.predictions)

    @property
    def problems(self) -> tuple[str, ...]:
        """Reasons the binary will not start in the root (missing interpreter/libraries)."""
        out: list[str] = []
        c = self.closure
        if c.interpreter and c.interpreter_path is None:
            out.append(f"interpreter {c.interpreter} is not in this root: exec will fail with "
                       "'no such file or directory'")
        for lib in c.missing:
            extra = f"; {lib.problem}" if lib.problem else ""
            outside = outside_search_path(lib, c.flavor, c.search_path)
            if outside is not None:
                what, fix = outside
                out.append(f"{lib.name} (needed by {lib.needed_by}) is {what}: the loader "
                           f"will stop with 'cannot open shared object file'{extra}. Fix: "
                           f"{fix}")
                continue
            where = f" (searched {', '.join(lib.searched[:6])})" if lib.searched else ""
            out.append(f"{lib.name} (needed by {lib.needed_by}) is not in this root: the "
                       f"loader will stop with 'cannot open shared object file'{where}{extra}")
        out.extend(c.problems)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "size": self.size,
            "interpreter": self.interpreter, "needed": list(self.needed),
            "static": self.static, "pie": self.pie, "stripped": self.stripped,
            "is_go": self.is_go,
            "elf": self.elf.to_dict(),
            "go": self.go.to_dict() if self.go else None,
            "cgo": self.cgo.to_dict(),
            "resolver": self.resolver.to_dict(),
            "user_lookup": self.user_lookup.to_dict(),
            "features": [f.to_dict() for f in self.features],
            "predictions": [p.to_dict() for p in self.predictions],
            "nsswitch": {k: list(v) for k, v in self.nsswitch.items()},
            "rootfs": self.rootfs,
            "loader": self.closure.to_dict(),
            "problems": list(self.problems),
            "hazards": list(self.hazards),
            "notes": list(self.notes),
            "go_error": self.go_error,
        }


# === reading the Go tables (tracer/binary/pclntab.py, buildinfo.py; imported on use) =====

def _function_names(img: ElfImage, notes: list[str]) -> tuple[list[str], str, int | None,
                                                               int | None]:
    """Function names from pclntab; from .symtab when pclntab is unusable.

    Returns (names, source, nfunc, text_start). Raises NotGoBinaryError when the image
    has no pclntab, BadBinaryError when it is corrupt."""
    from tracer.binary.pclntab import PclnTable

    table = PclnTable.shared(img)
    # sorted: feature markers are matched on bisected prefix ranges
    return sorted(table.function_names()), "pclntab", int(table.nfunc), int(table.text_start)


def _buildinfo(img: ElfImage) -> Any:
    from tracer.binary.buildinfo import read_buildinfo

    return read_buildinfo(img)


# === the analysis ==========================================================================

def inspect_binary(path: str | os.PathLike[str], rootfs: str | None = None,
                   strict: bool = True, binary_path_in_root: str | None = None) -> StaticFacts:
    """Everything static analysis can know about `path`, resolved in `rootfs` (or the host).

    strict=True raises BadBinaryError for a Go binary whose pclntab or buildinfo is
    corrupt; strict=False records it in `go_error` and carries on with the ELF facts.
    Raises NotFoundError for a missing file or rootfs directory, PermissionDeniedError,
    BadBinaryError for something that is not an ELF file.
    """
    p = os.fspath(path)
    if rootfs is not None and not os.path.isdir(rootfs):
        raise NotFoundError(f"rootfs {rootfs}: no such directory")
    img = ElfImage.open(p)
    notes: list[str] = []
    if img.arch_note:
        notes.append(img.arch_note)

    names: list[str] = []
    source, nfunc, text_start = "none", None, None
    go_error: str | None = None
    is_go = False
    bi: Any = None
    if img.upx_packed:
        notes.append("UPX-packed: pclntab and build info are compressed, so static analysis "
                     "sees only the unpacking stub; a trace still works (the program unpacks "
                     "itself in memory). Unpack with `upx -d` for a full static report")
    try:
        names, source, nfunc, text_start = _function_names(img, notes)
        is_go = True
    except NotGoBinaryError:
        pass
    except BadBinaryError as e:
        if strict:
            raise
        go_error = e.message
        is_go = True
    try:
        bi = _buildinfo(img)
    except BadBinaryError as e:
        if strict:
            raise
        go_error = go_error or e.message
    if bi is not None:
        is_go = True
    if not is_go and img.has_go_sections and not img.upx_packed:
        msg = f"{p}: Go sections present but no readable pclntab or build info"
        if strict:
            raise BadBinaryError(msg)
        go_error = go_error or msg
        is_go = True
    if source == "none" and is_go and not img.stripped:
        names = sorted({n for _, _, n in img.symbols()})
        source = ".symtab"
    if not is_go:
        notes.append("not a Go binary (no pclntab, no Go build info): ELF facts only")

    elf = _elf_facts(img, names)
    go = _go_facts(bi, nfunc, text_start, source) if is_go else None
    settings = go.settings if go else {}
    cgo = _cgo_facts(img, names, settings, go.main if go else None)
    closure = resolve_closure(img, rootfs or "/", binary_path_in_root)
    fs = RootFS(rootfs or "/")
    nsswitch, nss_note = read_nsswitch(fs)
    flavor = elf.libc
    builtin = _nss_builtin(closure)
    features = tuple(_feature_facts(names, cgo, nsswitch, flavor, builtin)) if is_go else ()
    resolver = _resolver_selection(names, cgo, settings, nsswitch, is_go)
    user = _user_selection(names, cgo, settings, is_go, elf.libc)
    hazards = _hazards(elf, cgo, features, nsswitch, builtin)
    if nss_note and any(f.form == "cgo" and f.id in ("nss-user", "resolver") for f in features):
        notes.append(nss_note)
    links = cgo_links(names, elf.imports, closure.libraries) if cgo.linked else {}
    return StaticFacts(path=p, size=len(img.data), elf=elf, is_go=is_go, go=go, cgo=cgo,
                       resolver=resolver, user_lookup=user, features=features, closure=closure,
                       rootfs=rootfs, nsswitch=nsswitch, hazards=tuple(hazards),
                       notes=tuple(notes), go_error=go_error, cgo_links=links)


def _libc_flavor(img: ElfImage) -> str | None:
    interp = img.interpreter
    if interp is not None:
        return "musl" if loader_flavor(interp) == "musl" else "glibc"
    if any(n.startswith("libc.so") for n in img.needed):
        return "glibc"
    if any(n.startswith("libc.musl") for n in img.needed):
        return "musl"
    data = img.data
    if data.find(b"GLIBC_PRIVATE") >= 0 or data.find(b"Fatal glibc error") >= 0:
        return "glibc"
    if not img.stripped and any(name in ("__init_libc", "__libc_start_init", "__dls3")
                                for _, _, name in img.symbols()):
        return "musl"
    if data.find(b"__nscd_query") >= 0 or data.find(b"/etc/ld-musl-") >= 0:
        return "musl"
    return None


def _elf_facts(img: ElfImage, names: list[str]) -> ElfFacts:
    return ElfFacts(
        machine=img.machine, elfclass=img.elfclass, etype=img.etype,
        arch_supported=img.arch_supported, interpreter=img.interpreter, needed=img.needed,
        rpath=img.rpath, runpath=img.runpath, soname=img.soname, static=img.is_static,
        pie=img.is_pie, stripped=img.stripped, dwarf=img.has_dwarf,
        gnu_build_id=img.gnu_build_id, go_build_id=img.go_build_id, upx=img.upx_packed,
        libc=_libc_flavor(img) if (img.is_dynamic or _has_c(names, img)) else None,
        imports=img.imports, exports=img.exports, sections=len(img.sections))


def _has_c(names: list[str], img: ElfImage) -> bool:
    marks = set(CGO_RUNTIME_MARKERS)
    return any(n in marks for n in names) or (not names and not img.stripped and any(
        n in marks for _, _, n in img.symbols()))


def _go_facts(bi: Any, nfunc: int | None, text_start: int | None, source: str) -> GoFacts:
    if bi is None:
        return GoFacts(None, None, None, None, (), {}, (), nfunc, text_start, source)
    main = getattr(bi, "main", None)
    main_path, main_version = _module(main)
    deps = tuple(_module(d) for d in (getattr(bi, "deps", None) or ()))
    return GoFacts(
        version=getattr(bi, "go_version", None), path=getattr(bi, "path", None),
        main=main_path, main_version=main_version,
        deps=tuple((p, v or "") for p, v in deps if p),
        settings=dict(getattr(bi, "settings", None) or {}),
        lines=tuple(getattr(bi, "lines", None) or ()), nfunc=nfunc, text_start=text_start,
        function_source=source, modules=tuple(module_records(bi)))


def _module(m: Any) -> tuple[str | None, str | None]:
    """(path, version) of a module record, whatever shape buildinfo gives it."""
    if m is None:
        return None, None
    if isinstance(m, str):
        return m, None
    if isinstance(m, (tuple, list)):
        return (str(m[0]) if m else None), (str(m[1]) if len(m) > 1 else None)
    return getattr(m, "path", None), getattr(m, "version", None)


# Markers are anchored regexes ('^os/user\._C2?func_'); their literal head narrows the
# search to a bisected range of the sorted function names instead of a scan of all 20k+.
_LITERAL_HEAD = re.compile(r"\^((?:[^\\.^$*+?{}\[\]|()]|\\.)*)")


def _literal_prefix(pattern: re.Pattern[str]) -> str:
    m = _LITERAL_HEAD.match(pattern.pattern)
    if m is None:
        return ""
    head = m.group(1)
    # a quantifier after the last literal makes that literal optional: drop it
    rest = pattern.pattern[m.end():]
    if rest[:1] in ("?", "*", "{") and head:
        head = head[:-2] if head.endswith("\\.") or len(head) > 1 and head[-2] == "\\" \
            else head[:-1]
    return re.sub(r"\\(.)", r"\1", head)


def _with_prefix(names: list[str], prefix: str) -> list[str]:
    """The slice of sorted `names` that starts with `prefix`."""
    lo = bisect.bisect_left(names, prefix)
    hi = bisect.bisect_left(names, prefix + "\U0010ffff") if prefix else len(names)
    return names[lo:hi]


def _all_matches(names: list[str], patterns: tuple[re.Pattern[str], ...]) -> list[str]:
    found: set[str] = set()
    for pat in patterns:
        found.update(n for n in _with_prefix(names, _literal_prefix(pat)) if pat.search(n))
    return sorted(found)


def _first_match(names: list[str], patterns: tuple[re.Pattern[str], ...]) -> str | None:
    for pat in patterns:
        for n in _with_prefix(names, _literal_prefix(pat)):
            if pat.search(n):
                return n
    return None


def _cgo_facts(img: ElfImage, names: list[str], settings: dict[str, str],
               main_module: str | None) -> CgoFacts:
    marks = set(CGO_RUNTIME_MARKERS)
    evidence = sorted({n for n in names if n in marks})
    feats = knowledge.features()
    std: list[str] = []
    for f in feats.values():
        if f.cgo_markers and _first_match(names, f.cgo_markers) is not None:
            std.extend(pkg for pkg in f.go_packages if pkg not in std)
    std_known = set(std)
    third: list[str] = []
    for n in names:
        m = _CGO_FUNC.match(n)
        if m is None:
            continue
        pkg = m.group("pkg")
        if pkg in std_known or pkg in third or pkg in _STD_CGO_PLUMBING:
            continue
        first = pkg.split("/", 1)[0]
        if pkg == "main" or "." in first or (main_module and pkg.startswith(main_module)):
            third.append(pkg)
        elif pkg not in std:
            std.append(pkg)  # a standard package in cgo form the knowledge base lacks
    c_funcs = {c for f in feats.values() for c in f.c_functions}
    imports = set(img.imports)
    c_imports = sorted(c for c in c_funcs if c in imports)
    if evidence and not imports and not img.stripped:  # static cgo: C functions linked in
        defined = img.defined_symbol_names()
        c_imports = sorted(c for c in c_funcs if c in defined)
    return CgoFacts(linked=bool(evidence), evidence=tuple(evidence), std_packages=tuple(std),
                    third_party=tuple(sorted(third)), c_imports=tuple(c_imports),
                    cgo_enabled=settings.get("CGO_ENABLED"))


# === NSS modules built into libc ===========================================================

def _nss_builtin(closure: LoaderClosure) -> tuple[str, ...]:
    """NSS sources built into the root's libc (glibc >= 2.34 has files and dns)."""
    for lib in closure.libraries:
        if lib.name in _LIBC_SONAMES and lib.host_path:
            try:
                exports = ElfImage.open(lib.host_path).exports
            except CgotraceError:
                break
            return tuple(s for s in NSS_BUILTIN if f"_nss_{s}_gethostbyname4_r" in exports
                         or f"_nss_{s}_getpwuid_r" in exports) or ()
    return NSS_BUILTIN


# === features, selections, hazards =========================================================

def _kind(path: str) -> str:
    rule = knowledge.classify_path(path)
    return rule.kind.value if rule else "other"


def _feature_facts(names: list[str], cgo: CgoFacts, nsswitch: dict[str, tuple[str, ...]],
                   libc: str | None, builtin: tuple[str, ...]) -> Iterable[FeatureFacts]:
    for f in knowledge.features().values():
        if not f.go_packages:
            continue
        cgo_ev = _all_matches(names, f.cgo_markers)
        emb_ev = _all_matches(names, f.embedded_markers)
        go_ev = _all_matches(names, f.go_markers)
        if not go_ev and not f.go_markers:
            go_ev = sorted({n for pkg in f.go_packages
                            for n in _with_prefix(names, pkg + ".")})[:3]
        if cgo_ev:
            form, evidence, raw = "cgo", cgo_ev, f.cgo_predicts
        elif go_ev or emb_ev:
            form, evidence, raw = ("embedded" if emb_ev else "go"), emb_ev or go_ev, f.go_predicts
        else:
            continue
        preds: list[Prediction] = []
        reason = f"{f.title}: {form} form ({evidence[0]})"
        for item in raw:
            if item.startswith("libnss_<source>"):
                if libc == "musl":
                    continue  # musl has no NSS modules
                dbs = f.extra.get("nss_databases", [])
                for lib, db in nss_modules(nsswitch, dbs, builtin):
                    preds.append(Prediction(lib, f.id, f"{reason}; nsswitch.conf {db}: names "
                                            f"{lib.removeprefix('libnss_').split('.')[0]}",
                                            "dlopen-library"))
                continue
            if libc == "musl" and item in ("/etc/nsswitch.conf", "/etc/host.conf",
                                           "/etc/gai.conf"):
                continue  # musl reads none of these
            preds.append(Prediction(item, f.id, reason, _kind(item)))
        if form == "embedded":
            preds = [p for p in preds if "zoneinfo" not in p.path] + [
                Prediction("/usr/share/zoneinfo/<name>", f.id, reason + "; embedded tzdata is "
                           "the fallback when the file is missing", "data")]
        if preds:
            yield FeatureFacts(f.id, f.title, form, tuple(evidence[:5]), tuple(preds),
                               _fix_for_form(f, form))


def _fix_for_form(f: knowledge.Feature, form: str) -> str:
    """The feature's fix for the form this binary has: a build tag that selects the form
    it already has changes nothing, so the go and embedded forms have fixes of their own
    (features.toml `fix_go`, `fix_embedded`)."""
    return str(f.extra.get(f"fix_{form}") or f.fix)


def _tags(settings: dict[str, str]) -> set[str]:
    return {t for t in settings.get("-tags", "").replace(",", " ").split() if t}


def _godebug(settings: dict[str, str], key: str) -> str | None:
    for item in settings.get("DefaultGODEBUG", "").split(","):
        k, _, v = item.partition("=")
        if k.strip() == key:
            return v.strip()
    return None


def _resolver_selection(names: list[str], cgo: CgoFacts, settings: dict[str, str],
                        nsswitch: dict[str, tuple[str, ...]], is_go: bool) -> Selection:
    if not is_go:
        return Selection("unknown", "not a Go binary")
    if names and not any(n.startswith("net.") for n in names):
        return Selection("none", "package net is not linked")
    tags = _tags(settings)
    netdns = _godebug(settings, "netdns") or ""
    if "net" not in cgo.std_packages:
        why = ("-tags netgo" if "netgo" in tags else "CGO_ENABLED=0"
               if settings.get("CGO_ENABLED") == "0" else "no cgo resolver in pclntab")
        return Selection("go", f"Go resolver only ({why}); GODEBUG=netdns=cgo is ignored")
    if "go" in netdns.split("+"):
        return Selection("go", "DefaultGODEBUG netdns=go (GODEBUG=netdns=cgo at run time "
                         "switches to getaddrinfo)")
    if "netcgo" in tags or "cgo" in netdns.split("+"):
        return Selection("cgo", "-tags netcgo or netdns=cgo: every lookup calls getaddrinfo")
    odd = [s for s in nsswitch.get("hosts", ()) if s not in ("files", "dns")]
    base = ("Go resolver by default; getaddrinfo (cgo) for LookupPort, and when "
            "LOCALDOMAIN/RES_OPTIONS/HOSTALIASES are set, resolv.conf has unknown options, "
            "or nsswitch hosts: names other sources")
    if odd:
        return Selection("cgo", f"nsswitch.conf hosts: lists {', '.join(odd)}: Go hands "
                         "lookups to getaddrinfo")
    return Selection("go+cgo", base)


def _user_selection(names: list[str], cgo: CgoFacts, settings: dict[str, str],
                    is_go: bool, libc: str | None) -> Selection:
    if not is_go:
        return Selection("unknown", "not a Go binary")
    if names and not any(n.startswith("os/user.") for n in names):
        return Selection("none", "package os/user is not linked")
    if "os/user" in cgo.std_packages:
        how = ("musl reads /etc/passwd and /etc/group itself (nscd as fallback)"
               if libc == "musl" else "glibc NSS: nsswitch.conf decides the sources")
        return Selection("cgo", f"getpwuid_r, getgrgid_r... in libc ({how}); no run-time "
                         "switch")
    why = "-tags osusergo" if "osusergo" in _tags(settings) else (
        "CGO_ENABLED=0" if settings.get("CGO_ENABLED") == "0" else "pure Go form in pclntab")
    return Selection("go", f"reads /etc/passwd and /etc/group in Go ({why}); Current() "
                     "falls back to $USER/$HOME")


def _hazards(elf: ElfFacts, cgo: CgoFacts, features: tuple[FeatureFacts, ...],
             nsswitch: dict[str, tuple[str, ...]], builtin: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    nss_feats = [f for f in features if f.form == "cgo" and f.id in ("nss-user", "resolver")]
    if elf.static and elf.libc == "glibc" and cgo.linked and nss_feats:
        mods = sorted({p.path for f in nss_feats for p in f.predictions
                       if p.path.startswith("libnss_")})
        which = ", ".join(mods) if mods else "libnss_* modules named by nsswitch.conf"
        out.append("static glibc + NSS: this statically linked glibc will dlopen "
                   f"{which} from the target system (found through /etc/ld.so.cache) for "
                   f"{', '.join(f.title for f in nss_feats)}; a module built for another "
                   "glibc version can crash the process (SIGSEGV) or fail lookups. Fix: "
                   "-tags netgo,osusergo, or link dynamically and ship the matching glibc")
    return out


# === the trace header's static facts =======================================================

def static_header(facts: StaticFacts) -> dict[str, Any]:
    """What the findings rules read from static analysis, as recorded in a trace header
    (docs/trace-format.md, the header's `static` object). The first eight keys are the
    version-1 summary; the rest were added for probes.analysis. Compact: no function
    lists, no symbol tables."""
    settings = facts.go.settings if facts.go else {}
    c = facts.closure
    return {
        "interpreter": facts.interpreter, "needed": list(facts.needed),
        "static": facts.static, "pie": facts.pie, "stripped": facts.stripped,
        "go_version": facts.go.version if facts.go else None, "libc": facts.elf.libc,
        "cgo": facts.cgo.linked,
        # the build info's main module path: reports map source files to the repository
        # with it (a -trimpath name is "<module>/<path in module>")
        "main_module": facts.go.main if facts.go else None,
        "is_go": facts.is_go, "upx": facts.elf.upx,
        "cgo_packages": list(facts.cgo.std_packages),
        "third_party_cgo": list(facts.cgo.third_party),
        "cgo_enabled": facts.cgo.cgo_enabled,
        "tags": sorted(_tags(settings)),
        "netdns": _godebug(settings, "netdns"),
        "resolver": facts.resolver.to_dict(), "user_lookup": facts.user_lookup.to_dict(),
        "features": {f.id: f.form for f in facts.features},
        "nsswitch": {k: list(v) for k, v in facts.nsswitch.items()},
        "rootfs": facts.rootfs,
        "loader": {"flavor": c.flavor, "interpreter_path": c.interpreter_path,
                   "libraries": [{"name": lib.name, "path": lib.path,
                                  "needed_by": os.path.basename(lib.needed_by)}
                                 for lib in c.libraries],
                   "missing": [lib.name for lib in c.missing],
                   "config_files": list(c.config_files),
                   **_outside_search_path(c)},
        "problems": list(facts.problems), "hazards": list(facts.hazards),
        "notes": list(facts.notes),
        # for the SBOM (tracer/reporters/cyclonedx.py)
        "go_build": None if facts.go is None else {
            "path": facts.go.path, "modules": list(facts.go.modules),
            "settings": build_settings(facts.go.settings)},
        "cgo_links": dict(facts.cgo_links),
    }


def _outside_search_path(c: LoaderClosure) -> dict[str, Any]:
    """`outside_search_path` for the header, only when some missing library is present
    elsewhere in the root: the findings say where, in the loader's own words."""
    out = []
    for lib in c.missing:
        outside = outside_search_path(lib, c.flavor, c.search_path)
        if outside is not None:
            out.append({"name": lib.name, "path": lib.elsewhere[0], "what": outside[0],
                        "fix": outside[1]})
    return {"outside_search_path": out} if out else {}
