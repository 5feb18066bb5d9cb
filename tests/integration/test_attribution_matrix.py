"""Attribution across sample app x build mode x Go version, against app.toml `[[expect]]`.

One traced run per binary (cached for the module), many assertions: every expectation of
the mode must be met by at least one access to its path, with the expected via, go_api,
c_function and user frame (main.go and the marker's line). Loader accesses must say
"loader", pure-Go accesses "go". dnslookup runs inside a loopback network namespace with
sample_apps.dnsresponder on 127.0.0.1:53 (the sandbox's resolv.conf names 127.0.0.1), plain and
with -ctx (cgo lookups in net's helper goroutine, tied back to the user's call site).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import appinfo
from sample_apps.appinfo import Expectation
from sample_apps.build import GO_VERSIONS
from tracer.attribution import Attributor
from tracer.model import Access, Via
from tracer.symbols.maps import ImageCache, MapsRegistry

pytestmark = [pytest.mark.ptrace, pytest.mark.go]

APPS = ("userlookup", "parallel", "x509roots", "tzload")
MODES = ("cgo", "stripped", "pie", "static", "musl", "pure", "netgo")
_IMAGES = ImageCache()  # libc & co parsed once for the whole matrix
_RUNS: dict[tuple[Path, tuple[str, ...]], tuple[list[Access], int | None, Attributor]] = {}


def _trace(exe: Path, args: tuple[str, ...] = (), network: str | None = None
           ) -> tuple[list[Access], int | None, Attributor]:
    if (exe, args) not in _RUNS:
        from tracer.session.runner import RunOptions, trace_program

        accesses: list[Access] = []
        att = Attributor(MapsRegistry(_IMAGES))
        res = trace_program(RunOptions(argv=[str(exe), *args], attributor=att, network=network,
                                       on_access=accesses.append, forward_signals=False,
                                       env={"PATH": "/usr/bin:/bin", "HOME": "/root"}))
        _RUNS[(exe, args)] = (accesses, res.status.shell_code, att)
    return _RUNS[(exe, args)]


def _dns_trace(exe: Path, args: tuple[str, ...]) -> tuple[list[Access], int | None, Attributor]:
    """A traced run inside a loopback netns with the DNS responder on 127.0.0.1:53."""
    if (exe, args) not in _RUNS:
        from sample_apps.dnsresponder import Responder
        from tracer.session.netns import LoopbackNetwork

        with LoopbackNetwork(service=lambda: Responder(port=53, timeout=120)) as net:
            return _trace(exe, args, network=net.netns_path)
    return _RUNS[(exe, args)]


def _matches(a: Access, e: Expectation) -> bool:
    at = a.attribution
    return (at is not None and at.via.value == e.via and at.go_api == e.go_api
            and (e.c_function is None or at.c_function == e.c_function)
            and at.user_frame is not None and (at.user_frame.file or "").endswith(e.file)
            and at.user_frame.line == e.line)


def _check(accesses: list[Access], expectations: list[Expectation], mode: str,
           exe: Path) -> list[str]:
    """Unmet expectations (described), after the invariants every run must satisfy."""
    failures = []
    for e in expectations:
        seen = [a for a in accesses if os.path.normpath(a.path) == e.path]
        if not any(_matches(a, e) for a in seen):
            failures.append(f"{e.marker} ({e.path}, via={e.via}, api={e.go_api}, "
                            f"c={e.c_function}, {e.file}:{e.line}); saw: "
                            + ("; ".join(_describe(a) for a in seen) or "no access"))
    _invariants(accesses, mode, exe)
    return failures


def _invariants(accesses: list[Access], mode: str, exe: Path) -> None:
    """exec is "exec"; the loader's accesses are "loader" with no frame in the program; a
    pure-Go build never reports cgo; same_as names an earlier access with the same answer."""
    seqs = {a.seq: a for a in accesses}
    for a in accesses:
        at = a.attribution
        if a.same_as is not None:
            first = seqs[a.same_as]
            assert a.same_as < a.seq and first.attribution is at, _describe(a)
        if at is None:
            continue
        if a.syscall in ("execve", "execveat"):
            assert at.via is Via.EXEC
        if mode in ("pure", "netgo"):
            assert at.via is not Via.CGO, _describe(a)
        if a.path in ("/etc/ld.so.cache", "/etc/ld.so.preload") and a.seq < 8:
            assert at.via is Via.LOADER, _describe(a)
            assert not any(f.module == exe.name for f in at.stack), _describe(a)


def _describe(a: Access) -> str:
    at = a.attribution
    if at is None:
        return f"{a.syscall} {a.path}: no attribution"
    uf = at.user_frame
    where = f"{os.path.basename(uf.file or '?')}:{uf.line}" if uf else None
    return (f"{a.syscall} {a.path}: via={at.via.value} api={at.go_api} c={at.c_function} "
            f"user={where} unsym={list(at.unsymbolized)}")


@pytest.mark.parametrize("go", GO_VERSIONS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("app", APPS)
def test_expectations(app: str, mode: str, go: str, sample: Callable[..., Path]) -> None:
    info = appinfo.load(app)
    if mode not in info.modes:
        pytest.skip(f"{app} does not support mode {mode} (app.toml modes)")
    expectations = info.expectations(mode)
    assert expectations, f"{app}/{mode}: app.toml declares no [[expect]] for this mode"
    exe = sample(app, mode, go)
    accesses, status, att = _trace(exe)
    crashed = status != info.runs[0].exit_code
    assert att.calls > 0
    failures = _check(accesses, expectations, mode, exe)
    if failures and crashed and all(f.endswith("saw: no access") for f in failures):
        pytest.xfail(f"{app}/{mode}/go{go}: program failed (exit {status}) before "
                     f"{failures[0]}: a static glibc cannot load NSS modules")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("mode", ["external", "stripped-external"])
def test_userlookup_external_link(mode: str, sample: Callable[..., Path]) -> None:
    """External linking (gcc links the Go object: libc's CFI, no internal-link C wrappers)."""
    info = appinfo.load("userlookup")
    exe = sample("userlookup", mode, GO_VERSIONS[0])
    accesses, status, _att = _trace(exe)
    assert status == 0
    failures = _check(accesses, info.expectations(mode), mode, exe)
    assert not failures, "\n".join(failures)


def _ctx_expectations() -> list[Expectation]:
    """dnslookup -ctx: the cgo LookupPort runs getaddrinfo in net's doBlockingWithCtx helper
    goroutine; the access must still name the user's call site and Resolver method."""
    file, line = appinfo.marker_line("dnslookup", "ctx-lookupport")
    return [Expectation(marker="ctx-lookupport", modes=("cgo",), path="/etc/services",
                        go_api="net.(*Resolver).LookupPort", via="cgo", file=file, line=line,
                        c_function="getaddrinfo")]


@pytest.mark.netns
@pytest.mark.parametrize("mode", ["cgo", "pure"])
def test_dnslookup_in_loopback_netns(mode: str, sample: Callable[..., Path]) -> None:
    info = appinfo.load("dnslookup")
    assert info.needs_dns
    exe = sample("dnslookup", mode, GO_VERSIONS[0])
    accesses, status, _att = _dns_trace(exe, tuple(info.runs[0].argv))
    assert status == 0
    # LookupAddr(127.0.0.1) opens no file (Go's hosts cache is fresh from the LookupHost
    # just before; see app.toml). What LookupAddr does touch is its PTR query for -svc:
    expectations = list(info.expectations(mode))
    file, line = appinfo.marker_line("dnslookup", "svc-lookupaddr")
    expectations.append(Expectation(marker="svc-lookupaddr", modes=(mode,), path="127.0.0.1:53",
                                    go_api="net.(*Resolver).LookupAddr", via="go", file=file,
                                    line=line))
    assert not [a for a in accesses if a.path == "/etc/hosts" and a.attribution is not None
                and a.attribution.go_api == "net.LookupAddr"]
    failures = _check(accesses, expectations, mode, exe)
    assert not failures, "\n".join(failures)
    # The name only the responder knows was asked over the namespace's loopback, by Go code.
    dns = [a for a in accesses if a.syscall == "connect" and a.path == "127.0.0.1:53"]
    assert dns and all(a.attribution is not None and a.attribution.via is Via.GO
                       for a in dns), [_describe(a) for a in dns]


@pytest.mark.netns
def test_dnslookup_ctx_helper_goroutine(sample: Callable[..., Path]) -> None:
    exe = sample("dnslookup", "cgo", GO_VERSIONS[0])
    accesses, status, _att = _dns_trace(exe, ("-ctx", "-svc"))
    assert status == 0
    expectations = _ctx_expectations()
    failures = _check(accesses, expectations, "cgo", exe)
    assert not failures, "\n".join(failures)
    services = [a for a in accesses if a.path == "/etc/services"
                and a.attribution is not None and _matches(a, expectations[0])]
    for a in services:
        at = a.attribution
        assert at is not None and at.parent_goroutine is not None, _describe(a)
        assert at.goroutine != at.parent_goroutine
        assert at.creator_frame is not None
        assert (at.creator_frame.function or "").startswith("net.doBlockingWithCtx")


@pytest.mark.parametrize("go", GO_VERSIONS)
def test_parallel_goroutines_linked_to_creator(go: str, sample: Callable[..., Path]) -> None:
    exe = sample("parallel", "cgo", go)
    accesses, _sig, _att = _trace(exe)
    go_line = next(line for line, text in enumerate(
        (Path(appinfo.APPS_DIR) / "parallel" / "main.go").read_text().splitlines(), start=1)
        if text.strip().startswith("go func("))
    lookups = [a for a in accesses if a.attribution is not None
               and a.attribution.user_frame is not None
               and a.attribution.user_frame.function == "main.lookup"]
    assert len({a.attribution.user_frame.line for a in lookups if a.attribution
                and a.attribution.user_frame}) == 8
    goroutines = {a.attribution.user_frame.line: a.attribution.goroutine for a in lookups
                  if a.attribution and a.attribution.user_frame}
    assert len(set(goroutines.values())) == 8, goroutines
    for a in lookups:
        at = a.attribution
        assert at is not None and at.creator_frame is not None
        assert at.creator_frame.function == "main.main"
        assert at.creator_frame.line == go_line
        assert at.parent_goroutine == 1


@pytest.mark.parametrize("mode", ["cgo", "pie", "stripped"])
def test_loader_accesses(mode: str, sample: Callable[..., Path]) -> None:
    exe = sample("userlookup", mode, GO_VERSIONS[0])
    accesses, _sig, _att = _trace(exe)
    libc = [a for a in accesses if a.path.endswith("/libc.so.6") and a.syscall == "openat"]
    assert libc and all(a.attribution is not None and a.attribution.via is Via.LOADER
                        for a in libc[:1]), [_describe(a) for a in libc]


def test_warm_cost_per_access(sample: Callable[..., Path]) -> None:
    """A repeated call path is served from the memo (or the keep-policy) instead of being
    analysed again. The cost is printed, never asserted (`make bench` measures it)."""
    exe = sample("benchuser", "cgo", GO_VERSIONS[0])
    from tracer.attribution import FULL_PER_PATH, AttributorStats
    from tracer.session.runner import RunOptions, trace_program

    n = 200
    att = Attributor(MapsRegistry(_IMAGES))
    att.keep_all = True  # walk every access: the memo alone must absorb the repeats
    accesses: list[Access] = []
    for _ in range(2):
        att.stats = AttributorStats()
        accesses.clear()
        trace_program(RunOptions(argv=[str(exe), str(n)], attributor=att,
                                 on_access=accesses.append, forward_signals=False,
                                 env={"PATH": "/usr/bin:/bin"}))
    st = att.stats
    print(f"warm attribution cost (full walk, memo): {1000 * st.seconds / st.calls:.3f} ms/access "
          f"over {st.calls} accesses; memo {st.memo_hits} hits / {st.memo_misses} misses")
    passwd = [a for a in accesses if a.path == "/etc/passwd"]
    assert len(passwd) >= n
    assert st.walks + st.loader == st.calls and st.loader > 0  # ld.so's opens: no unwind
    # n lookups from one call site: a handful of distinct chains, every repeat a memo hit.
    assert st.memo_misses <= 40 and st.memo_hits >= st.calls - 40, st
    # Identical answers are one object: all but the first /etc/passwd access say same_as.
    assert sum(a.same_as is not None for a in passwd) >= len(passwd) - 3

    # The keep-policy: after FULL_PER_PATH accesses of a path, known fast keys skip the walk.
    kept = Attributor(MapsRegistry(_IMAGES))
    trace_program(RunOptions(argv=[str(exe), str(n)], attributor=kept,
                             on_access=lambda a: None, forward_signals=False,
                             env={"PATH": "/usr/bin:/bin"}))
    ks = kept.stats
    print(f"keep-policy cost: {1000 * ks.seconds / ks.calls:.3f} ms/access; {ks.walks} walks, "
          f"{ks.reused} reused")
    assert ks.reused > 0 and ks.walks + ks.reused + ks.loader == ks.calls
    assert ks.walks < ks.calls // 4  # repeats are reused, re-sampled only at powers of two
    assert ks.walks >= FULL_PER_PATH


def test_sampling_after_many_accesses_of_one_path(sample: Callable[..., Path]) -> None:
    """Past SAMPLE_AFTER accesses of one path, only power-of-two accesses are walked; the
    rest carry the path's latest attribution, and the trace says so with same_as."""
    from tracer.attribution import SAMPLE_AFTER

    exe = sample("benchopen", "cgo", GO_VERSIONS[0])
    accesses, status, att = _trace(exe, ("2000",))
    assert status == 0
    target = os.path.realpath(exe)
    opens = [a for a in accesses if a.syscall == "openat" and a.path == target]
    assert len(opens) >= 2000
    walked = [a for a in opens if a.same_as is None]
    # 8 full + new fast keys + power-of-two resamples: a few dozen walks for 2000 opens
    assert len(walked) <= 64, len(walked)
    assert att.stats.reused >= len(opens) - 64
    late = opens[SAMPLE_AFTER + 10:]
    assert late and all(a.attribution is not None and a.attribution.via is Via.GO
                        and a.attribution.user_frame is not None
                        and (a.attribution.user_frame.file or "").endswith("main.go")
                        for a in late)
