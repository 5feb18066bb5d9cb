"""Attribution across sample app x build mode x Go version, against app.toml `[[expect]]`.

One traced run per binary (cached for the module), many assertions: every expectation of
the mode must be met by at least one access to its path, with the expected via, go_api,
c_function and user frame (main.go and the marker's line). Loader accesses must say
"loader", pure-Go accesses "go". The grid is every (mode, Go version) an app supports
(`_GRID`); dnslookup runs inside a loopback network namespace with sample_apps.dnsresponder
on 127.0.0.1:53 (the sandbox's resolv.conf names 127.0.0.1), plain and with -ctx (cgo
lookups in net's helper goroutine, tied back to the user's call site); server is driven
through its ready-file FIFO: one GET /lookup on 127.0.0.1, then SIGTERM. Some apps add
checks of their own (`_APP_CHECKS`). The grid runs under the ptrace engine; its newest-Go
rows run under the notify engine too (`engine` parameter), which keeps the added time to
about a third of the matrix.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import appinfo
from sample_apps.appinfo import Expectation
from sample_apps.build import GO_VERSIONS, supported_modes
from tracer.attribution import Attributor
from tracer.model import Access, AccessKind, Via
from tracer.process.images import ImageCache, MapsRegistry

pytestmark = [pytest.mark.ptrace, pytest.mark.go]

APPS = ("userlookup", "parallel", "x509roots", "tzload", "tzembed", "dlopen", "execchild",
        "server")
MODES = ("cgo", "stripped", "pie", "static", "musl", "pure", "netgo")
# dnslookup (one loopback netns per run): every mode on the newest Go, the three link kinds
# that change its resolver (cgo, pure, static glibc) on the older ones.
DNS_OLD_GO_MODES = ("cgo", "pure", "static")


def _grid() -> list[object]:
    """(app, mode, go, engine) for every mode in MODES the app supports, on every Go
    version with the ptrace engine, and on the newest Go with the notify engine."""
    out: list[object] = []
    for app in (*APPS, "dnslookup"):
        marks = [pytest.mark.netns] if app == "dnslookup" else []
        for mode in MODES:
            for go in GO_VERSIONS:
                if mode not in supported_modes(app):
                    continue
                if app == "dnslookup" and go != GO_VERSIONS[0] and mode not in DNS_OLD_GO_MODES:
                    continue
                out.append(pytest.param(app, mode, go, "ptrace", marks=marks,
                                        id=f"{app}-{mode}-{go}"))
                if go == GO_VERSIONS[0]:
                    out.append(pytest.param(app, mode, go, "notify", marks=marks,
                                            id=f"{app}-{mode}-{go}-notify"))
    return out


_GRID = _grid()
_IMAGES = ImageCache()  # libc & co parsed once for the whole matrix
_RUNS: dict[tuple[Path, tuple[str, ...], str],
            tuple[list[Access], int | None, Attributor]] = {}


def _trace(exe: Path, args: tuple[str, ...] = (), network: str | None = None,
           argv: list[str] | None = None,
           client: Callable[[list[Access], threading.Event], None] | None = None,
           engine: str = "auto") -> tuple[list[Access], int | None, Attributor]:
    """Trace exe once per (exe, args); `argv` overrides the command line actually run (a
    fresh FIFO path), `client` runs on a thread while the program is traced (the event is
    set once the trace has ended)."""
    if (exe, args, engine) not in _RUNS:
        from tracer.session.runner import RunOptions, trace_program

        accesses: list[Access] = []
        att = Attributor(MapsRegistry(_IMAGES))
        errors: list[BaseException] = []
        finished = threading.Event()

        def drive() -> None:
            assert client is not None
            try:
                client(accesses, finished)
            except BaseException as e:  # re-raised below, after the trace has ended
                errors.append(e)

        thread = threading.Thread(target=drive, daemon=True) if client else None
        if thread:
            thread.start()
        res = trace_program(RunOptions(argv=argv or [str(exe), *args], attributor=att,
                                       network=network, on_access=accesses.append,
                                       forward_signals=False, engine=engine,
                                       env={"PATH": "/usr/bin:/bin", "HOME": "/root"}))
        assert engine == "auto" or res.engine == engine
        finished.set()
        if thread:
            thread.join(timeout=30)
            assert not thread.is_alive(), "the client thread did not finish"
            if errors:
                raise errors[0]
        _RUNS[(exe, args, engine)] = (accesses, res.status.shell_code, att)
    return _RUNS[(exe, args, engine)]


def _dns_trace(exe: Path, args: tuple[str, ...], engine: str = "auto"
               ) -> tuple[list[Access], int | None, Attributor]:
    """A traced run inside a loopback netns with the DNS responder on 127.0.0.1:53."""
    if (exe, args, engine) not in _RUNS:
        from sample_apps.dnsresponder import Responder
        from tracer.session.netns import LoopbackNetwork

        with LoopbackNetwork(service=lambda: Responder(port=53, timeout=120)) as net:
            return _trace(exe, args, network=net.netns_path, engine=engine)
    return _RUNS[(exe, args, engine)]


def _server_trace(exe: Path, args: tuple[str, ...], engine: str = "auto"
                  ) -> tuple[list[Access], int | None, Attributor]:
    """server: wait for "ready <port>" on the FIFO, GET /lookup once, then SIGTERM it."""
    if (exe, args, engine) in _RUNS:
        return _RUNS[(exe, args, engine)]
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "ready.fifo")
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # before the writer: no ENXIO, no hang

        def client(accesses: list[Access], finished: threading.Event) -> None:
            try:
                port = _read_ready(fd, finished)
                assert accesses  # the execve: recorded before main() could write
            except BaseException:
                _end(accesses, finished, signal.SIGKILL)
                raise
            try:
                direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with direct.open(f"http://127.0.0.1:{port}/lookup", timeout=20) as r:
                    assert r.read() == b"root\n"
            finally:
                _end(accesses, finished, signal.SIGTERM)  # exit 0, also after a failure

        try:
            argv = [str(exe), *(a.replace("{ready_file}", fifo) for a in args)]
            return _trace(exe, args, argv=argv, client=client, engine=engine)
        finally:
            os.close(fd)


def _read_ready(fd: int, finished: threading.Event, timeout: float = 30) -> int:
    """The port from the server's one "ready <port>" line. Polls the FIFO in short slices
    only to notice a program that ended (or hangs) without writing it."""
    buf = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        while not poller.poll(200):
            assert not finished.is_set(), f"the program ended before it was ready ({buf!r})"
            assert time.monotonic() < deadline, f"no ready line on the FIFO (got {buf!r})"
        chunk = os.read(fd, 256)
        assert chunk or b"\n" in buf, f"FIFO closed before the ready line (got {buf!r})"
        buf += chunk
    words = buf.decode().split()
    assert words[0] == "ready", buf
    return int(words[1])


def _end(accesses: list[Access], finished: threading.Event, sig: int) -> None:
    """Signal the traced program (ours: the pid of its execve) unless its trace has ended."""
    if accesses and not finished.is_set():
        with contextlib.suppress(ProcessLookupError):
            os.kill(accesses[0].pid, sig)


def _app_trace(info: appinfo.AppInfo, exe: Path, engine: str = "auto"
               ) -> tuple[list[Access], int | None, Attributor]:
    """The app's default run, traced the way it needs to be run."""
    args = tuple(info.runs[0].argv)
    if info.needs_dns:
        return _dns_trace(exe, args, engine)
    if info.lifecycle == "ready-file":
        return _server_trace(exe, args, engine)
    return _trace(exe, args, engine=engine)


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
    pure-Go build never reports cgo, a netgo one only for the program's own C calls; same_as
    names an earlier access with the same answer."""
    seqs = {a.seq: a for a in accesses}
    # ld.so's phase in each process ends with its last startup library (no seq cut-off: a
    # program may dlopen, through the same /etc/ld.so.cache, a few accesses later).
    loader_end = {a.pid: a.seq for a in accesses if a.kind is AccessKind.STARTUP_LIBRARY}
    for a in accesses:
        at = a.attribution
        if a.same_as is not None:
            first = seqs[a.same_as]
            assert a.same_as < a.seq and first.attribution is at, _describe(a)
        if at is None:
            continue
        if a.syscall in ("execve", "execveat"):
            assert at.via is Via.EXEC
        if mode == "pure" or (mode == "netgo" and not (at.go_api or "").startswith(
                "main._Cfunc_")):  # netgo,osusergo: only the program's own C code is cgo
            assert at.via is not Via.CGO, _describe(a)
        if (a.path in ("/etc/ld.so.cache", "/etc/ld.so.preload")
                and a.seq < loader_end.get(a.pid, 0)):
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


@pytest.mark.parametrize(("app", "mode", "go", "engine"), _GRID)
def test_expectations(app: str, mode: str, go: str, engine: str,
                      sample: Callable[..., Path]) -> None:
    info = appinfo.load(app)
    assert mode in info.modes
    expectations = info.expectations(mode)
    assert expectations, f"{app}/{mode}: app.toml declares no [[expect]] for this mode"
    exe = sample(app, mode, go)
    accesses, status, att = _app_trace(info, exe, engine)
    crashed = status != info.runs[0].exit_code
    assert att.calls > 0
    failures = _check(accesses, expectations, mode, exe)
    if failures and crashed and all(f.endswith("saw: no access") for f in failures):
        pytest.xfail(f"{app}/{mode}/go{go}: program failed (exit {status}) before "
                     f"{failures[0]}: a static glibc cannot load NSS modules")
    assert not failures, "\n".join(failures)
    if app in _APP_CHECKS:
        assert not crashed, f"{app}/{mode}/go{go}: exit {status}"
        _APP_CHECKS[app](accesses, info, mode)


def _tzembed_checks(accesses: list[Access], info: appinfo.AppInfo, mode: str) -> None:
    """The embedded tzdata is only the fallback: the one zoneinfo file read is the system's
    (first source, found), and no other zoneinfo directory or zip is tried."""
    zoneinfo = [a for a in accesses if "zoneinfo" in a.path or a.path.startswith(
        ("/usr/lib/locale/TZ", "/etc/localtime"))]
    assert [(os.path.normpath(a.path), a.result) for a in zoneinfo] == [
        ("/usr/share/zoneinfo/Europe/Paris", "ok")], [_describe(a) for a in zoneinfo]


def _dlopen_checks(accesses: list[Access], info: appinfo.AppInfo, mode: str) -> None:
    """The library is a dlopen-library access whose stack runs through libc's dlopen below
    the program's C helper."""
    (e,) = [e for e in info.expectations(mode) if e.path.endswith("/libz.so.1")]
    libz = [a for a in accesses if a.path == e.path and _matches(a, e)]
    for a in libz:
        assert a.kind is AccessKind.DLOPEN_LIBRARY, _describe(a)
        at = a.attribution
        assert at is not None
        names = [f.function or "" for f in at.stack]
        dl = [i for i, n in enumerate(names) if n.lstrip("_") == "dlopen"]
        wrapper = [i for i, n in enumerate(names) if n.endswith("_Cfunc_cgotrace_open")]
        assert dl and wrapper and dl[0] < wrapper[0], names


def _execchild_checks(accesses: list[Access], info: appinfo.AppInfo, mode: str) -> None:
    """The exec and the child's lookup are the child process's, not the parent's."""
    parent = accesses[0].pid
    execs = [a for a in accesses if a.syscall == "execve" and a.path == "/proc/self/exe"]
    assert len(execs) == 1 and execs[0].pid != parent, [_describe(a) for a in execs]
    assert execs[0].argv == ("/proc/self/exe", "child"), execs[0].argv
    child = execs[0].pid
    for e in info.expectations(mode):
        if e.marker == "child-lookupid":
            hits = [a for a in accesses if os.path.normpath(a.path) == e.path and _matches(a, e)]
            assert hits and {a.pid for a in hits} == {child}, [(a.pid, _describe(a))
                                                              for a in hits]


def _server_checks(accesses: list[Access], info: appinfo.AppInfo, mode: str) -> None:
    """The lookup runs in the handler goroutine net/http's Serve started, not in main's."""
    for e in info.expectations(mode):
        for a in accesses:
            at = a.attribution
            if os.path.normpath(a.path) == e.path and _matches(a, e) and at is not None:
                assert at.goroutine not in (None, 1), _describe(a)
                assert at.user_frame is not None
                assert (at.user_frame.function or "").startswith("main.main.func"), \
                    at.user_frame
                assert at.creator_frame is not None, _describe(a)
                assert (at.creator_frame.function or "").startswith(
                    "net/http.(*Server).Serve"), at.creator_frame


def _dnslookup_checks(accesses: list[Access], info: appinfo.AppInfo, mode: str) -> None:
    # LookupAddr(127.0.0.1) opens no file: Go's hosts cache is fresh from the LookupHost
    # just before (see app.toml).
    assert not [a for a in accesses if a.path == "/etc/hosts" and a.attribution is not None
                and a.attribution.go_api == "net.LookupAddr"]
    # The name only the responder knows was asked over the namespace's loopback, by Go code.
    dns = [a for a in accesses if a.syscall == "connect" and a.path == "127.0.0.1:53"]
    assert dns and all(a.attribution is not None and a.attribution.via is Via.GO
                       for a in dns), [_describe(a) for a in dns]


_APP_CHECKS: dict[str, Callable[[list[Access], appinfo.AppInfo, str], None]] = {
    "tzembed": _tzembed_checks, "dlopen": _dlopen_checks, "execchild": _execchild_checks,
    "server": _server_checks, "dnslookup": _dnslookup_checks}


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
