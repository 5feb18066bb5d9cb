"""Built-in detectors named by `check = "..."` in probes/rules/findings.toml.

Each is a pure function `(rule, ctx) -> list[Finding]` over the classified dependencies,
the static facts of the trace header and the process events. The words a user reads
(title, explanation, fix) come from the rule; a detector only decides *whether* and fills
the placeholders. docs/findings.md documents every id.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import string
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from probes import knowledge
from probes.records import Analysis, Caller, Dependency, Rule
from tracer.trace.model import DependencyClass, Evidence, Finding, ProcessEvent

Item = tuple[Dependency, Caller]
HIDDEN, RUNTIME = DependencyClass.HIDDEN, DependencyClass.RUNTIME_FILE
_FILE_KINDS = ("config", "data", "dlopen-library", "startup-library", "interpreter", "other")
# Where Go's crypto/x509 looks for a bundle on Linux, in order (docs/findings.md ca-roots).
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
              "/etc/ssl/ca-bundle.pem", "/etc/pki/tls/cacert.pem",
              "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/ssl/cert.pem")
CA_DIRS = ("/etc/ssl/certs", "/etc/pki/tls/certs")
# Where OpenSSL-style C code (cgo) looks: its OPENSSLDIR's cert.pem and certs/.
OPENSSL_ROOTS = ("/usr/lib/ssl/cert.pem", "/usr/lib/ssl/certs", "/usr/local/ssl/cert.pem",
                 "/usr/local/ssl/certs")


@dataclass(frozen=True)
class Context:
    analysis: Analysis
    events: tuple[ProcessEvent, ...]

    @property
    def static(self) -> dict[str, Any]:
        return self.analysis.static

    def deps(self, *classes: DependencyClass) -> list[Dependency]:
        return [d for d in self.analysis.dependencies if not classes or d.cls in classes]


# === formatting ============================================================================

class _Vars(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


# `{user_frame}` of a finding whose call site has no frame of the application's code (a
# library's goroutine, a package initializer): said in words, never a bare "at".
NO_USER_FRAME = "(no application frame on the stack)"


def _fmt(text: str, values: dict[str, str]) -> str:
    if not values.get("user_frame") and "{user_frame}" in text:
        text = text.replace(" at {user_frame}", " {user_frame}")
        values = {**values, "user_frame": NO_USER_FRAME}
    return string.Formatter().vformat(text, (), _Vars(values)).strip()


def _join(items: Iterable[str], limit: int = 12) -> str:
    items = list(dict.fromkeys(i for i in items if i))
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# Files every container runtime (docker, podman, Kubernetes) bind-mounts over the image's own
# at start: a COPY of them is never seen, so a fix names them instead of copying them.
RUNTIME_MOUNTED = ("/etc/resolv.conf", "/etc/hosts", "/etc/hostname")
MOUNTED_NOTE = ("Not copied: {paths}: container runtimes (docker, podman, Kubernetes) mount "
                "their own over the image's in every container; check the runtime's DNS and "
                "host settings instead.")


def _dockerfile(deps: Iterable[Dependency]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(COPY lines for exactly the files seen, from a build stage that has them at the same
    paths; the files seen that the container runtime mounts, RUNTIME_MOUNTED). Never
    sockets, never the absent; a directory is left out when a file under it is copied."""
    paths = list(dict.fromkeys(posixpath.normpath(d.path) for d in deps
                               if d.result == "ok" and not d.absent
                               and d.kind in _FILE_KINDS and d.path.startswith("/")))
    mounted = tuple(p for p in paths if p in RUNTIME_MOUNTED)
    keep = [p for p in paths if p not in RUNTIME_MOUNTED
            and not any(q != p and q.startswith(p.rstrip("/") + "/") for q in paths)]
    return tuple(f"COPY --from=build {p} {p}" for p in keep), mounted


def make_finding(rule: Rule, items: list[Item], values: dict[str, str] | None = None,
                 missing: Iterable[str] = (), dockerfile: bool = True,
                 extra_deps: Iterable[Dependency] = ()) -> Finding:
    """One finding over (dependency, caller) pairs of one call site (or of the whole rule)."""
    deps = list(dict.fromkeys([d for d, _ in items] + list(extra_deps)))
    first = min((c for _, c in items), key=lambda c: c.first_seq, default=None)
    found = [d.path for d in deps if d.result == "ok"]
    tried = [d.path + (f" ({d.result})" if d.result != "ok" else "") for d in deps
             if d.result != "ok"]
    missing = tuple(dict.fromkeys(missing))
    cfns = [c.c_function for _, c in items if c.c_function]
    v = {"go_api": (first.go_api or "") if first else "",
         "user_frame": first.site if first else "",
         "c_function": Counter(cfns).most_common(1)[0][0] if cfns else "",  # ties: first
         "paths": _join(found + [t for t in tried]), "found": _join(found) or "none",
         "tried": _join(tried), "missing": _join(missing), "count": str(len(deps)),
         "first": found[0] if found else "", "pids": _join(str(p) for d in deps for p in d.pids)}
    v.update(values or {})
    docker, mounted = _dockerfile(deps) if dockerfile else ((), ())
    v["dockerfile"] = "\n".join(docker)
    evidence = tuple(sorted(
        {Evidence(seq=c.first_seq, path=d.path, result=d.result, via=c.via,
                  c_function=c.c_function, pid=c.pid) for d, c in items},
        key=lambda e: e.seq))
    fix = _fmt(rule.fix, v)
    while not docker and fix.endswith(":"):  # "Or ship these:" with nothing to ship
        fix = fix.rsplit("\n", 1)[0] if "\n" in fix else fix.rstrip(":")
    if mounted and "{dockerfile}" in rule.fix:
        fix += "\n" + MOUNTED_NOTE.format(paths=" and ".join(mounted))
    return Finding(id=rule.id, severity=rule.severity, title=_fmt(rule.title, v),
                   explanation=_fmt(rule.explanation, v), fix=fix,
                   go_api=first.go_api if first else None,
                   user_frame=first.user_frame if first else None,
                   origin=first.origin if first else None,
                   c_function=v["c_function"] or None,
                   paths=tuple(dict.fromkeys(d.path for d in deps)), missing=missing,
                   evidence=evidence, dockerfile=docker)


def by_site(rule: Rule, items: list[Item]) -> list[list[Item]]:
    """Group by (Go API, user frame), the order of first appearance; one group for
    `per = "rule"`. Repeats fold within a site, never across sites."""
    if rule.per == "rule":
        return [items] if items else []
    groups: dict[tuple[str | None, str], list[Item]] = {}
    for d, c in sorted(items, key=lambda it: it[1].first_seq):
        groups.setdefault((c.go_api, c.site), []).append((d, c))
    return list(groups.values())


def _glob(value: str | None, patterns: Iterable[str]) -> bool:
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _api_of(c: Caller) -> str | None:
    """The stdlib function that decides a dependency: `origin` when the attributor names
    it, else the Go API."""
    return c.origin or c.go_api


def _feature_c_functions(feature: str) -> tuple[str, ...]:
    f = knowledge.features().get(feature)
    return f.c_functions if f else ()


def _nss_c_functions() -> tuple[str, ...]:
    return _feature_c_functions("nss-user") + _feature_c_functions("resolver")


# === detectors =============================================================================

def check_cgo_feature(rule: Rule, ctx: Context) -> list[Finding]:
    """Hidden dependencies reached through cgo by one feature's Go APIs (params.go_api
    globs, params.feature's C functions). Fills {reason} from the static selection."""
    apis = rule.params.get("go_api", [])
    cfns = _feature_c_functions(str(rule.params.get("feature", "")))
    items = [(d, c) for d in ctx.deps(HIDDEN) for c in d.callers
             if c.via == "cgo" and (_glob(_api_of(c), apis) or c.c_function in cfns)]
    sel = ctx.static.get(str(rule.params.get("selection", "")), {}) or {}
    out = []
    for group in by_site(rule, items):
        absent = [d.path for d, _ in group if d.absent
                  and _glob(d.path, rule.params.get("needs", []))]
        answered = {p: _sources_that_answered(ctx, rule, p) for p in absent}
        needed = [p for p in absent if not answered[p]]
        reason = str(sel.get("reason", ""))
        if rule.params.get("selection") == "resolver":
            reason = _resolver_reason(ctx, group[0][1].go_api, reason)
        values = {"reason": reason, "env": _env(ctx, rule),
                  **_answered_values({p: s for p, s in answered.items() if s})}
        # a lookup that failed for want of a source gets the fix that ships the source
        used = replace(rule, fix=str(rule.params["fix_missing"])) \
            if needed and rule.params.get("fix_missing") else rule
        out.append(make_finding(used, group, values, missing=needed))
    return out


# NSS sources that read the very file that is absent: they cannot stand in for it
_FILE_SOURCES = ("files", "compat")


def _sources_that_answered(ctx: Context, rule: Rule, path: str) -> list[str]:
    """The nsswitch.conf sources of the database `path` backs (params.databases) that glibc
    asked in this run besides the files: each module named there that loaded. A lookup
    whose file is absent fails for want of a source only when this is empty: with a loaded
    module glibc went on to it, and it answered (the user, or not found)."""
    db = (rule.params.get("databases") or {}).get(path)
    listed = (ctx.static.get("nsswitch") or {}).get(db, ()) if db else ()
    loaded = {_nss_source(d.path) for d in ctx.deps(HIDDEN)
              if d.kind == "dlopen-library" and d.result == "ok"}
    return [s for s in listed if s not in _FILE_SOURCES and s in loaded]


def _answered_values(answered: dict[str, list[str]]) -> dict[str, str]:
    """{answered} (explanation) and {osusergo_effect} (fix) for files that were absent
    while another NSS source answered; both empty when there is none."""
    if not answered:
        return {"answered": "", "osusergo_effect": ""}
    files = _join(answered)
    mods = _join(f"'{s}' (libnss_{s}.so.2, loaded)" for srcs in answered.values()
                 for s in srcs)
    return {"answered": f" {files} is absent here, and nsswitch.conf sends the lookup on "
                        f"to {mods}, which answered in its place: nothing the lookup "
                        "needed was missing.",
            "osusergo_effect": f" Here {files} is absent and {mods} answered: with "
                               f"osusergo Go asks no such source, so these lookups fail "
                               f"('open {files}: no such file or directory') unless the "
                               f"image also ships {files} with the users."}


def _resolver_reason(ctx: Context, go_api: str | None, static_reason: str) -> str:
    """Why this lookup went to getaddrinfo: the run-time switch when one is recorded, the
    LookupPort rule, else the static choice (docs/go-runtime.md: GODEBUG netdns, build tags,
    resolv.conf options and nsswitch.conf decide; docs/findings.md resolver-cgo)."""
    env = ctx.analysis.env
    godebug = {k.strip(): v for k, _, v in (i.partition("=") for i in
                                            env.get("GODEBUG", "").split(",")) if k}
    if "cgo" in godebug.get("netdns", "").split("+"):
        return "GODEBUG=netdns=cgo was set at run time"
    tags = ctx.static.get("tags") or []
    if "netcgo" in tags:
        return "built with -tags netcgo: every lookup calls getaddrinfo"
    set_vars = [k for k in ("LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES") if k in env]
    if set_vars:
        return f"{', '.join(set_vars)} set at run time: Go hands lookups to the C library"
    if go_api and go_api.endswith("LookupPort"):
        return ("net.LookupPort calls getaddrinfo whenever the cgo resolver is compiled in "
                f"(static: {static_reason})")
    return static_reason


def check_go_feature(rule: Rule, ctx: Context) -> list[Finding]:
    """Run-time files pure Go code read for a feature (params.go_api globs or
    params.features; a name server's connect has feature `resolver`). params.needs (globs)
    names the files the feature cannot do without; params.when = "found" keeps the sites
    that read a file, "missing" the sites where a needed file was absent (it is then
    `missing`: the verdict is degraded). params.decides (globs) names the files Go reads
    only to choose between itself and the C library: a site that read nothing else, where
    params.cgo_feature's C functions then ran, handed the work to cgo (no finding here)."""
    apis = rule.params.get("go_api", [])
    feats = rule.params.get("features", [])
    items = [(d, c) for d in ctx.deps(RUNTIME) for c in d.callers
             if c.via == "go" and _glob(_api_of(c), apis) and (not feats or d.feature in feats)]
    sel = ctx.static.get(str(rule.params.get("selection", "")), {}) or {}
    when = rule.params.get("when")
    decides = rule.params.get("decides", [])
    out = []
    for group in by_site(rule, items):
        if decides and all(_glob(d.path, decides) for d, _ in group) and _cgo_ran_at(
                ctx, group[0][1], str(rule.params.get("cgo_feature", ""))):
            continue
        missing = [d.path for d, _ in group if d.absent
                   and _glob(d.path, rule.params.get("needs", []))]
        if when == "missing" and not missing:
            continue
        if when == "found" and not any(d.result == "ok" for d, _ in group):
            continue
        out.append(make_finding(rule, group, {"reason": str(sel.get("reason", "")),
                                              "env": _env(ctx, rule)},
                                missing=missing if when == "missing" else ()))
    return out


def _cgo_ran_at(ctx: Context, site: Caller, feature: str) -> bool:
    """Whether the C functions of `feature` ran through cgo at the (Go API, user frame) of
    `site`."""
    cfns = _feature_c_functions(feature)
    return any(c.via == "cgo" and c.c_function in cfns and (c.go_api, c.site)
               == (site.go_api, site.site) for d in ctx.deps(HIDDEN) for c in d.callers)


def _env(ctx: Context, rule: Rule) -> str:
    """The recorded environment variables this rule names in params.env (all if unset)."""
    keys = rule.params.get("env")
    env = {k: v for k, v in ctx.analysis.env.items() if keys is None or k in keys}
    return ", ".join(f"{k}={v}" for k, v in sorted(env.items())) or (
        f"{', '.join(keys)} not set" if keys else "none recorded")


def _nss_source(path: str) -> str | None:
    base = os.path.basename(path)
    if not base.startswith("libnss_"):
        return None
    return base.removeprefix("libnss_").split(".so", 1)[0]


def check_nss_modules(rule: Rule, ctx: Context) -> list[Finding]:
    """NSS modules glibc dlopen'd, with the nsswitch.conf lines that named each source, and
    the libraries each module pulled in (its NEEDED closure, dlopen'd with it)."""
    nss = ctx.static.get("nsswitch") or {}
    nss_cfns = _nss_c_functions()
    items: list[Item] = []
    for d in ctx.deps(HIDDEN):
        if d.kind != "dlopen-library":
            continue
        for c in d.callers:
            if _nss_source(d.path) is not None or c.c_function in nss_cfns:
                items.append((d, c))
    out = []
    for group in by_site(rule, items):
        modules = list(dict.fromkeys(d for d, _ in group if _nss_source(d.path)))
        if not modules:
            continue
        lines = []
        for m in modules:
            src = _nss_source(m.path) or ""
            dbs = [f"{db}: {' '.join(srcs)}" for db, srcs in nss.items() if src in srcs]
            state = "loaded" if m.result == "ok" else (
                f"not found in {len(m.searched)} places, so glibc skipped the source"
                if m.searched else f"{m.result}, so glibc skipped the source")
            lines.append(f"{os.path.basename(m.path)} ({state}) for source '{src}' in "
                         f"nsswitch.conf ({'; '.join(dbs) or 'line not recorded'})")
        libs = [os.path.basename(d.path) for d, _ in group if not _nss_source(d.path)
                and d.result == "ok"]
        names = [os.path.basename(m.path) + ("" if m.result == "ok" else " (not found)")
                 for m in modules]
        out.append(make_finding(rule, group, {
            "modules": _join(names), "sources": "; ".join(lines),
            "libraries": _join(libs) or "none"}))
    return out


def check_sockets(rule: Rule, ctx: Context) -> list[Finding]:
    """Connects (or opens) of the daemon sockets named by params.paths globs."""
    pats = rule.params.get("paths", [])
    items = [(d, c) for d in ctx.deps(HIDDEN, RUNTIME) for c in d.callers
             if _glob(d.path, pats) or any(_glob(s, pats) for s in d.searched)]
    return [make_finding(rule, g, dockerfile=False) for g in by_site(rule, items)]


def check_ca_roots(rule: Rule, ctx: Context) -> list[Finding]:
    """Which CA bundle paths were probed and which was found (params.when = found|missing)."""
    items = [(d, c) for d in ctx.deps(HIDDEN, RUNTIME) for c in d.callers
             if d.feature == "tls-roots"]
    if not items:
        return []
    env = {k: v for k, v in ctx.analysis.env.items() if k.startswith("SSL_CERT")}
    found = list(dict.fromkeys(
        d for d, _ in items if d.result == "ok" and (
            d.path in CA_BUNDLES or d.path in env.values()
            or d.path.endswith((".crt", ".pem")))))
    when = rule.params.get("when", "found")
    if (when == "found") != bool(found):
        return []
    # A root load shows as a probe of a place roots are loaded from. Other paths of the
    # feature (a trust-store tool probing /etc/pki/ca-trust/source/anchors/, say) are no
    # evidence that the pool came out empty, and `missing` names only what was probed.
    sources = {*CA_BUNDLES, *CA_DIRS, *OPENSSL_ROOTS, *env.values()}
    tried = list(dict.fromkeys(d.path.rstrip("/") or "/" for d, _ in items
                               if d.path.rstrip("/") in sources))
    if not found and not tried:
        return []
    missing = () if found else tuple(tried)
    loads = [(d, c) for d, c in items if d.path.rstrip("/") in sources or d in found]
    return [make_finding(rule, g, {"found": found[0].path if found else "none",
                                   "env": _env(ctx, rule)}, missing=missing)
            for g in by_site(rule, loads)]


def check_zoneinfo(rule: Rule, ctx: Context) -> list[Finding]:
    """Time zone files: which were read, whether the embedded tzdata backs them up."""
    items = [(d, c) for d in ctx.deps(HIDDEN, RUNTIME) for c in d.callers
             if d.feature == "zoneinfo"]
    if not items:
        return []
    embedded = (ctx.static.get("features") or {}).get("zoneinfo") == "embedded"
    ok = [d for d, _ in items if d.result == "ok" and not d.path.endswith("/localtime")]
    absent = [d.path for d, _ in items if d.absent and "zoneinfo" in d.path]
    when = rule.params.get("when", "found")
    if when == "missing" and (ok or embedded or not absent):
        return []
    if when == "found" and not ok and not embedded:
        return []
    note = ("the binary embeds tzdata (time/tzdata): it is the fallback when a file is "
            "missing" if embedded else "no embedded tzdata: a missing file makes "
            "time.LoadLocation fail")
    return [make_finding(rule, g, {"reason": note, "env": _env(ctx, rule)},
                         missing=absent if when == "missing" else ())
            for g in by_site(rule, items)]


def check_static_glibc_nss(rule: Rule, ctx: Context) -> list[Finding]:
    """A statically linked glibc that dlopens NSS modules built for another glibc."""
    s = ctx.static
    if not (s.get("static") and s.get("libc") == "glibc"):
        return []
    items = [(d, c) for d in ctx.deps(HIDDEN) for c in d.callers
             if d.kind == "dlopen-library"]
    if not items and not s.get("hazards"):
        return []
    crash = [e for e in ctx.events if e.event == "signal"]
    sig = ""
    ex = ctx.analysis.exit or {}
    if ex.get("signal_name") or crash:
        sig = str(ex.get("signal_name") or crash[0].detail.get("signal_name") or "")
    text = {"signal": (f"This run got {sig} after loading them." if sig else
                       "This run survived; modules from another glibc may not."),
            "reason": "; ".join(s.get("hazards") or ())}
    if not items:
        f = make_finding(rule, [], text)
        return [f]
    return [make_finding(rule, items, text, dockerfile=False)]


def check_third_party_cgo(rule: Rule, ctx: Context) -> list[Finding]:
    pkgs = list(ctx.static.get("third_party_cgo") or ())
    if not pkgs:
        return []
    return [make_finding(rule, [], {"packages": _join(pkgs)})]


def check_dlopen(rule: Rule, ctx: Context) -> list[Finding]:
    """Libraries dlopen'd by the program's own C code (not NSS, not the loader)."""
    nss_cfns = _nss_c_functions()
    items = [(d, c) for d in ctx.deps(HIDDEN) for c in d.callers
             if d.kind == "dlopen-library" and _nss_source(d.path) is None
             and c.c_function not in nss_cfns and c.via != "loader"]
    out = []
    for g in by_site(rule, items):
        missing = [d.path for d, _ in g if d.absent]
        names = [os.path.basename(d.path) + ("" if d.result == "ok" else " (not found)")
                 for d, _ in g]
        out.append(make_finding(rule, g, {"libraries": _join(names)}, missing=missing))
    return out


def check_upx(rule: Rule, ctx: Context) -> list[Finding]:
    return [make_finding(rule, [])] if ctx.static.get("upx") else []


def _is_self(ctx: Context, path: str) -> bool:
    return path == "/proc/self/exe" or path in ctx.analysis.executables


def check_exec_child(rule: Rule, ctx: Context) -> list[Finding]:
    """Programs executed (params.self: the program re-executing itself, or others): each
    has its own dependencies (traced under its pid). Fills `children` (those that ran),
    `not_found` and `not_found_note` (those execve did not find; empty when none)."""
    want_self = bool(rule.params.get("self", False))
    # a child that is not there (execve ENOENT: podman trying rpm, then dpkg) is named
    # "(not found)" but not `missing`, as an NSS module that is not there: the program got
    # ENOENT and carried on, which is what it does in any image without that program
    items = [(d, c) for d in ctx.deps(HIDDEN, DependencyClass.DECLARED) for c in d.callers
             if d.kind == "executable" and (d.result == "ok" or d.absent)
             and c.go_api is not None
             and _is_self(ctx, d.path) == want_self]  # go_api None: the program's own exec
    out = []
    for g in by_site(rule, items):
        pids = {p for d, _ in g for p in d.pids if d.result == "ok"}
        own = [d for d in ctx.deps(HIDDEN) if set(d.pids) & pids and d.kind != "executable"]
        absent = _join(d.path for d, _ in g if d.result != "ok")
        out.append(make_finding(rule, g, {
            "children": _join(d.path for d, _ in g if d.result == "ok") or "nothing",
            "not_found": f" (tried, not found: {absent})" if absent else "",
            "not_found_note": f" It also tried {absent}, which is not there (execve: "
                              "ENOENT); it went on without it." if absent else "",
            "libraries": _join(d.path for d in own) or "none"},
            extra_deps=()))
    return out


# Libraries a base image of that C library has: the rest of DT_NEEDED is the image's to add.
LIBC_LIBRARIES = {
    "glibc": frozenset({"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
                        "libresolv.so.2", "libutil.so.1", "libanl.so.1", "libmvec.so.1",
                        "libBrokenLocale.so.1", "libthread_db.so.1", "libc_malloc_debug.so.0",
                        "ld-linux-x86-64.so.2"}),
    "musl": frozenset({"libc.so", "libc.musl-x86_64.so.1", "ld-musl-x86_64.so.1"}),
}
BASE_IMAGES = {"glibc": "glibc (e.g. debian-slim or distroless/base)", "musl": "musl (e.g. alpine)"}
# the build tag that gives a standard package its pure-Go form (no cgo, no NSS)
PURE_GO_TAGS = {"net": "netgo", "os/user": "osusergo"}
_STATIC_LINK = "-ldflags '-linkmode external -extldflags -static'"


def _libc_of(static: dict[str, Any]) -> str:
    libc = static.get("libc")
    if libc in LIBC_LIBRARIES:
        return str(libc)
    return "musl" if "ld-musl" in str(static.get("interpreter") or "") else "glibc"


def start_fix_values(static: dict[str, Any]) -> dict[str, str]:
    """{base_image}, {image_libraries} and {rebuild} for a program that cannot start in a
    root: derived from the binary's own facts, so the advice fits it. The base image must
    add the NEEDED libraries its libc lacks; a build tag is named only for a cgo package
    it removes; a third-party package's own C code rules out "build without cgo"; static
    glibc is never advised while net or os/user are in their cgo (NSS) form."""
    libc = _libc_of(static)
    extra = [n for n in static.get("needed") or () if n not in LIBC_LIBRARIES[libc]]
    them = "them" if len(extra) > 1 else "it"
    libs = (f"; add {_join(extra)} to it (NEEDED by the program, not part of {libc}: install "
            f"the package that ships {them})") if extra else ""
    return {"base_image": BASE_IMAGES[libc], "image_libraries": libs,
            "rebuild": _rebuild(static, libc, extra) if static.get("is_go") else ""}


def _rebuild(static: dict[str, Any], libc: str, extra: list[str]) -> str:
    std = list(static.get("cgo_packages") or ())
    tags = sorted(PURE_GO_TAGS[p] for p in std if p in PURE_GO_TAGS)
    others = [p for p in std if p not in PURE_GO_TAGS]
    third = list(static.get("third_party_cgo") or ())
    archives = f", with static archives of {_join(extra)}" if extra else ""
    if third:
        names = _join("the main package" if p == "main" else p for p in third)
        one = len(third) == 1
        text = (f" Building without cgo is not enough here: {names} "
                f"{'has C code of its own' if one else 'have C code of their own'}; the "
                f"netgo and osusergo tags do not touch {'it' if one else 'them'}, and "
                "CGO_ENABLED=0 builds a package like that only if it ships a pure-Go "
                "variant (see its build tags).")
        if libc == "musl":
            return text + f" Or link statically (CC=musl-gcc {_STATIC_LINK}{archives})."
        if tags:
            return text + (f" To link statically ({_STATIC_LINK}{archives}), add -tags "
                           f"{','.join(tags)} too: a static glibc must not load NSS modules "
                           "(static-glibc-nss).")
        return text + f" Or link statically ({_STATIC_LINK}{archives})."
    if others:
        return (f" Or build with CGO_ENABLED=0 for a static binary (it also drops the cgo "
                f"form of {_join(others)}).")
    if tags:
        pkgs = _join(p for p in std if p in PURE_GO_TAGS)
        only = "the only cgo package here, its" if len(tags) == 1 else \
            "the only cgo packages here, their"
        return (f" Or build a static binary: -tags {','.join(tags)} gives {pkgs}, {only} "
                "pure-Go form (as CGO_ENABLED=0 does).")
    return (" Or build with CGO_ENABLED=0 for a static binary: no package here needs cgo, so "
            "the netgo and osusergo tags would change nothing.")


def check_missing_interpreter(rule: Rule, ctx: Context) -> list[Finding]:
    s = ctx.static
    interp = s.get("interpreter")
    loader = s.get("loader") or {}
    if not interp:
        return []
    # Only the program's own exec is evidence: a child the program tries to run that is
    # not installed (podman probing for rpm) fails with ENOENT too, for want of the file.
    own = set(ctx.analysis.executables)
    exec_fail = [(d, c) for d in ctx.analysis.dependencies for c in d.callers
                 if d.kind in ("executable", "interpreter") and d.result == "ENOENT"
                 and (d.path in own or (d.host_path is not None and d.host_path in own))]
    absent_static = "interpreter_path" in loader and loader.get("interpreter_path") is None
    if not exec_fail and not absent_static:
        return []
    return [make_finding(rule, exec_fail, {"interpreter": interp, **start_fix_values(s)},
                         missing=(interp,), dockerfile=False)]


def check_missing_library(rule: Rule, ctx: Context) -> list[Finding]:
    loader = ctx.static.get("loader") or {}
    names = list(loader.get("missing") or ())
    if not names:
        return []
    # present in the root but outside the loader's search path: the header carries the
    # loader's own words for it (tracer.binary.loader.outside_search_path)
    outside = [o for o in loader.get("outside_search_path") or () if isinstance(o, dict)]
    elsewhere = "".join(f"; {o.get('name')} is {o.get('what')}" for o in outside)
    elsewhere_fix = "".join(f"{o.get('name')}: {o.get('fix')}.\n" for o in outside)
    return [make_finding(rule, [], {"libraries": _join(names), "elsewhere": elsewhere,
                                    "elsewhere_fix": elsewhere_fix,
                                    **start_fix_values(ctx.static)},
                         missing=names, dockerfile=False)]


def check_match(rule: Rule, ctx: Context) -> list[Finding]:
    """The declarative form: `[finding.match]` path/kind/via/class/result/go_api globs."""
    m = rule.match
    classes = [DependencyClass(c) for c in m.get("class", ("hidden", "runtime-file"))]
    result = m.get("result", "any")
    items: list[Item] = []
    for d in ctx.deps(*classes):
        if "path" in m and not _glob(d.path, m["path"]):
            continue
        if "kind" in m and d.kind not in m["kind"]:
            continue
        if result == "ok" and d.result != "ok" or result == "error" and d.result == "ok" \
                or result == "absent" and not d.absent:
            continue
        for c in d.callers:
            if "via" in m and c.via not in m["via"]:
                continue
            if "go_api" in m and not _glob(_api_of(c), m["go_api"]):
                continue
            if "c_function" in m and not _glob(c.c_function, m["c_function"]):
                continue
            items.append((d, c))
    return [make_finding(rule, g, missing=[d.path for d, _ in g if d.absent])
            for g in by_site(rule, items)]


CHECKS: dict[str, Callable[[Rule, Context], list[Finding]]] = {
    "cgo_feature": check_cgo_feature, "go_feature": check_go_feature,
    "nss_modules": check_nss_modules, "sockets": check_sockets, "ca_roots": check_ca_roots,
    "zoneinfo": check_zoneinfo, "static_glibc_nss": check_static_glibc_nss,
    "third_party_cgo": check_third_party_cgo, "dlopen": check_dlopen, "upx": check_upx,
    "exec_child": check_exec_child, "missing_interpreter": check_missing_interpreter,
    "missing_library": check_missing_library,
}

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def run_rules(rules: Iterable[Rule], analysis: Analysis,
              events: tuple[ProcessEvent, ...]) -> list[Finding]:
    """Every rule over one analysis; findings sorted by severity, then rule order."""
    ctx = Context(analysis, events)
    out: list[tuple[int, int, Finding]] = []
    for i, rule in enumerate(rules):
        fn = CHECKS[rule.check] if rule.check else check_match
        for f in fn(rule, ctx):
            out.append((_SEVERITY_ORDER[f.severity.value], i, f))
    out.sort(key=lambda t: (t[0], t[1]))
    return [f for _, _, f in out]
