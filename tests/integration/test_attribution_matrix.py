"""Attribution across sample app x build mode x Go version, against app.toml `[[expect]]`.

One traced run per binary (cached for the module), many assertions:

* the run ends as the mode's first `[[run]]` of app.toml says (a declared crash, such as
  static glibc loading NSS modules, is an exit code there; anything else fails);
* the attributor raised nothing (`attributor_errors == 0`), and no walk run after its
  thread resumed read a page its capture lacked (`capture_misses == 0`);
* every expectation of the mode is met by at least one access to its path, and EVERY access
  to a path some expectation names (keep-policy reuses, `same_as`, included) matches one of
  that path's expectations: via, go_api, c_function (also found among the C frames of the
  stack when any are named), user frame (file and the marker's line) or `no_user_frame`,
  and, where app.toml gives them, origin and via_goroutine;
* no frame of any access lies in a module only cgotrace's own process maps (the launcher);
  loader accesses carry no stack, pure-Go builds report no cgo.

The grid (`_GRID`) is every mode an app supports on the newest Go and, on the older ones,
the modes whose attribution differs per Go version (OLD_GO_MODES: the comment there says
what each row left out protected and what still does). dnslookup and inventory run
inside a loopback network namespace with sample_apps.dnsresponder on 127.0.0.1:53 (the
sandbox's resolv.conf names 127.0.0.1), dnslookup plain and with -ctx (cgo lookups in net's
helper goroutine, tied back to the user's call site); server is driven through its
ready-file FIFO: one GET /lookup on 127.0.0.1, then SIGTERM. Some apps add checks of their
own (`_APP_CHECKS`). `test_loader_accesses` compares the loader's opens with what the
root's own loader says it loads (`ld.so --list`). Every row runs under both engines
(`engine` parameter), and the notify engine's record must equal the ptrace engine's: the
same accesses, results and attributions, counted (`_compare_engines`).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import appinfo
from sample_apps.appinfo import Expectation
from sample_apps.build import GO_VERSIONS, OLDER_GO_APPS, apps, supported_modes
from tests.integration.tracing_helpers import with_repeats
from tracer.attribution.attributor import Attributor
from tracer.attribution.frames import c_name
from tracer.attribution.modules import ImageCache, MapsRegistry
from tracer.trace.model import Access, AccessKind, Attribution, Frame, Repeats, Via

pytestmark = [pytest.mark.ptrace, pytest.mark.go]

APPS = ("userlookup", "parallel", "x509roots", "tzload", "tzembed", "dlopen", "execchild",
        "server")
# needs_dns apps, in a loopback netns (inventory: cgo, pure, stripped, pie).
DNS_APPS = ("dnslookup", "inventory")
MODES = ("cgo", "stripped", "pie", "static", "musl", "pure", "netgo")
# The newest Go (GO_VERSIONS[0]) runs every app in every mode of MODES it supports. The older
# ones (1.24, 1.21, 1.19) run what differs per Go version: the runtime's layout and its cgo
# stack switch (asmcgocall pushes RBP from 1.21), pclntab's format, the standard library's
# call paths (os/user's and net's cgo wrappers, 1.19's Go reads of nsswitch.conf, net's
# helper goroutine from 1.21) and goroutine creators. Those show in three link kinds, for
# every app: cgo (internal link), static glibc (TLS g at -96, C code linked in) and pure (no
# cgo at all), which test_sample_apps.py and test_inspect_oracle.py build on every version
# anyway (OLD_GO_MODES). Beyond them, on the older Go:
# * userlookup keeps stripped, pie and musl (the builds test_symbols_oracle.py and
#   test_unwind_toolchains.py make on every version): asmcgocall's facts decoded without a
#   symbol table, the load bias and pclntab of a PIE (in .data.rel.ro.gopclntab up to 1.24,
#   in gopclntab on 1.27), the no-CFI scan from static musl's C back to asmcgocall;
# * parallel keeps musl: that scan on eight threads at once, goroutines tied to main's `go`.
# Left out there (each a build no other test makes on that version, and two traced runs):
# * netgo: for the apps without C code of their own the netgo,osusergo binary has the pure
#   build's functions (readelf -s: the same names and sizes, net.initConfVal aside), so it
#   is traced as the pure row (kept); dlopen's netgo adds only its own C call, as in its cgo
#   row (kept). inventory has no netgo mode; dnslookup's older rows were cgo, pure, static.
# * stripped, pie, musl of the other apps: their Go accesses (x509roots, tzload, tzembed,
#   execchild's exec, server's handler goroutine, inventory's helper goroutines) and C
#   calls are the ones their cgo and static rows check on the same version (kept); what
#   those link kinds change (no .symtab, the load bias, no CFI in libc) is per binary, not
#   per app, and stays covered on every version by userlookup's rows above,
#   test_cgo_crossing.py (callback in cgo, stripped, pie, static: both directions of the
#   crossing, traced), test_unwind_toolchains.py (userlookup's asmcgocall facts in cgo,
#   pie, static, musl, stripped) and test_symbols_oracle.py (pclntab of stripped and pie
#   builds against addr2line). The newest Go still runs all of them, so every app's
#   expectations are checked in every mode.
OLD_GO_MODES = ("cgo", "static", "pure")
OLD_GO_EXTRA_MODES = {"userlookup": ("stripped", "pie", "musl"), "parallel": ("musl",)}


def _on_older_go(app: str, mode: str) -> bool:
    """Whether the (app, mode) row also runs on the older Go versions (see OLD_GO_MODES)."""
    return mode in OLD_GO_MODES or mode in OLD_GO_EXTRA_MODES.get(app, ())


def _grid() -> list[object]:
    """(app, mode, go, engine) for every mode in MODES the app supports, on the newest Go,
    and the OLD_GO_MODES subset on the older versions, under each engine: the ptrace
    engine's row first, then the notify engine's, which also compares its record with the
    ptrace row's (one xdist group per binary, so both run on one worker and the ptrace run
    is traced once)."""
    out: list[object] = []
    for app in (*APPS, *DNS_APPS):
        for mode in MODES:
            for go in GO_VERSIONS:
                if mode not in supported_modes(app):
                    continue
                if go != GO_VERSIONS[0] and not _on_older_go(app, mode):
                    continue
                marks = [pytest.mark.xdist_group(f"{app}-{mode}-{go}")]
                if app in DNS_APPS:
                    marks.append(pytest.mark.netns)
                out.append(pytest.param(app, mode, go, "ptrace", marks=marks,
                                        id=f"{app}-{mode}-{go}"))
                out.append(pytest.param(app, mode, go, "notify", marks=marks,
                                        id=f"{app}-{mode}-{go}-notify"))
    return out


_GRID = _grid()


def test_older_go_apps_cover_the_grid() -> None:
    """The apps the grid traces on the older Go are among the ones test_sample_apps.py and
    test_inspect_oracle.py build there (sample_apps.build.OLDER_GO_APPS): the builds stay
    shared, and OLDER_GO_APPS names only apps that exist."""
    assert {*APPS, *DNS_APPS} <= OLDER_GO_APPS <= set(apps())


_IMAGES = ImageCache()  # libc & co parsed once for the whole matrix
_RUNS: dict[tuple[Path, tuple[str, ...], str],
            tuple[list[Access], int | None, Attributor]] = {}
_ERRORS: dict[tuple[Path, tuple[str, ...], str], int] = {}  # attributor_errors of each run


def _trace(exe: Path, args: tuple[str, ...] = (), network: str | None = None,
           argv: list[str] | None = None,
           client: Callable[[list[Access], threading.Event], None] | None = None,
           engine: str = "auto") -> tuple[list[Access], int | None, Attributor]:
    """Trace exe once per (exe, args); `argv` overrides the command line actually run (a
    fresh FIFO path), `client` runs on a thread while the program is traced (the event is
    set once the trace has ended)."""
    if (exe, args, engine) not in _RUNS:
        from tracer.commands.run import RunOptions, trace_program

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
        totals: dict[int, Repeats] = {}
        res = trace_program(RunOptions(argv=argv or [str(exe), *args], attributor=att,
                                       network=network, on_access=accesses.append,
                                       on_repeats=lambda a, t, _: totals.__setitem__(a.seq, t),
                                       forward_signals=False, engine=engine,
                                       env={"PATH": "/usr/bin:/bin", "HOME": "/root"}))
        assert engine == "auto" or res.engine == engine
        accesses[:] = with_repeats(accesses, totals)  # a record counts its repeats (calls)
        finished.set()
        if thread:
            thread.join(timeout=30)
            assert not thread.is_alive(), "the client thread did not finish"
            if errors:
                raise errors[0]
        _RUNS[(exe, args, engine)] = (accesses, res.status.shell_code, att)
        _ERRORS[(exe, args, engine)] = int(res.stats.get("attributor_errors", -1))
    assert _ERRORS[(exe, args, engine)] == 0, f"{exe.name} {args}: the attributor raised"
    return _RUNS[(exe, args, engine)]


def _dns_trace(exe: Path, args: tuple[str, ...], engine: str = "auto"
               ) -> tuple[list[Access], int | None, Attributor]:
    """A traced run inside a loopback netns with the DNS responder on 127.0.0.1:53."""
    if (exe, args, engine) not in _RUNS:
        from sample_apps.dnsresponder import Responder
        from tracer.sandbox.netns import LoopbackNetwork

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


def _app_trace(info: appinfo.AppInfo, exe: Path, mode: str, engine: str = "auto"
               ) -> tuple[list[Access], int | None, Attributor]:
    """The mode's first run of app.toml, traced the way it needs to be run."""
    args = tuple(info.runs_for(mode)[0].argv)
    if info.needs_dns:
        return _dns_trace(exe, args, engine)
    if info.lifecycle == "ready-file":
        return _server_trace(exe, args, engine)
    return _trace(exe, args, engine=engine)


_C_WRAPPER_FRAME = re.compile(r"^_cgo_[0-9a-f]+_C2?func_(\w+)$")


def _c_frames(at: Attribution) -> list[str] | None:
    """Names of the C frames of the innermost cgo call, when the walk reached cgo's C
    wrapper through them (CFI all the way: none skipped), ending with the function the
    wrapper names (a static C helper is inlined into it); None otherwise (static musl has
    no CFI, the scan jumps from the innermost C frame to asmcgocall)."""
    out = []
    for f in at.stack:
        name = c_name(f.function or "")
        if f.file is not None:  # a Go frame: the C call's frames are all inside it
            if out or not name.startswith("runtime."):
                break
            continue
        if m := _C_WRAPPER_FRAME.match(name):
            return [*out, m.group(1)]
        if name:
            out.append(name)
    return None


def _c_on_stack(c_function: str, named: list[str]) -> bool:
    """`getpwuid_r` is on the stack as getpwuid_r, or as glibc's internal alias of it in a
    static binary (`__new_getpwuid_r`, `___dlopen`)."""
    return any(n == c_function or n.endswith("_" + c_function) for n in named)


def _matches(a: Access, e: Expectation) -> bool:
    at = a.attribution
    if at is None or at.via.value != e.via or at.go_api != e.go_api:
        return False
    if e.c_function is not None:
        named = _c_frames(at)
        if at.c_function != e.c_function or (named is not None
                                             and not _c_on_stack(e.c_function, named)):
            return False
    if e.origin and at.origin not in e.origin:
        return False
    if e.via_goroutine is not None and at.via_goroutine != e.via_goroutine:
        return False
    if e.no_user_frame is not None:
        return at.user_frame is None and at.no_user_frame == e.no_user_frame
    if e.via == "loader":
        return at.user_frame is None and not at.stack
    return (at.user_frame is not None and e.file is not None
            and (at.user_frame.file or "").endswith(e.file) and at.user_frame.line == e.line)


def _describe_e(e: Expectation) -> str:
    where = e.no_user_frame or f"{e.file}:{e.line}"
    return (f"{e.marker} ({e.path}, via={e.via}, api={e.go_api}, c={e.c_function}, "
            f"origin={list(e.origin) or '-'}, via_goroutine={e.via_goroutine}, {where})")


def _check(accesses: list[Access], expectations: list[Expectation], mode: str,
           exe: Path) -> list[str]:
    """Unmet expectations and unexpected accesses to expected paths (described), after the
    invariants every run must satisfy."""
    failures = []
    by_path: dict[str, list[Expectation]] = {}
    for e in expectations:
        by_path.setdefault(e.path, []).append(e)
    for path, exps in by_path.items():
        # runtime-kind accesses (/proc, /sys, /dev) are never attributed, by design
        seen = [a for a in accesses if os.path.normpath(a.path) == path
                and a.kind is not AccessKind.RUNTIME]
        for e in exps:
            if e.required and not any(_matches(a, e) for a in seen):
                failures.append(f"unmet {_describe_e(e)}; saw: "
                                + ("; ".join(_describe(a) for a in seen) or "no access"))
        for a in seen:
            if not any(_matches(a, e) for e in exps):
                failures.append(f"seq {a.seq} (same_as={a.same_as}) matches none of "
                                f"{[e.marker for e in exps]}: {_describe(a)}")
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
        if at.via is Via.LOADER:  # never unwound: no stack, no Go code named
            assert not at.stack and at.user_frame is None and at.go_api is None, _describe(a)
    _no_launcher_frames(accesses)


def _launcher_modules() -> frozenset[str]:
    """Basenames of the files this (the launcher's) process maps."""
    names = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                names.add(os.path.basename(parts[5].strip()))
    return frozenset(names)


def _no_launcher_frames(accesses: list[Access]) -> None:
    """No frame lies in a module only cgotrace's process maps: a module the program mapped
    itself was opened by it (an access) or is its own executable/interpreter."""
    own = {os.path.basename(a.path) for a in accesses}
    own |= {os.path.basename(a.host_path) for a in accesses if a.host_path}
    launcher = _launcher_modules() - own
    assert launcher, "this process maps nothing of its own?"
    for a in accesses:
        at = a.attribution
        if at is None:
            continue
        bad = [f.module for f in at.stack if f.module in launcher]
        assert not bad, f"launcher frames {bad} in {_describe(a)}"
        if a.syscall == "execve" and a.seq == 1:  # the launched program's own exec
            assert not at.stack, _describe(a)


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
    expectations = info.expectations(mode, go)
    assert expectations, f"{app}/{mode}: app.toml declares no [[expect]] for this mode"
    exe = sample(app, mode, go)
    accesses, status, att = _app_trace(info, exe, mode, engine)
    run = info.runs_for(mode)[0]
    assert status == run.exit_code, (f"{app}/{mode}/go{go}/{engine}: exit {status}, app.toml "
                                     f"run {run.name!r} expects {run.exit_code}")
    assert att.calls > 0
    # walks after the thread resumed read only what its capture held (docs/attribution.md,
    # "Capture"): a page read live then could have changed since the stop
    assert att.stats.capture_misses == 0, att.stats
    failures = _check(accesses, expectations, mode, exe)
    assert not failures, "\n".join([*failures, f"attributor: {att.stats}"])
    if app in _APP_CHECKS:
        _APP_CHECKS[app](accesses, info, mode)
    if engine != "ptrace":  # the same run under the ptrace engine (cached) must agree
        reference, ref_status, _ = _app_trace(info, exe, mode, "ptrace")
        assert ref_status == status
        _compare_engines(reference, accesses, counted=app not in CONCURRENT)


# Apps where scheduling decides which goroutine does shared work: parallel's eight
# goroutines share glibc's NSS state (how often it is re-read depends on who gets there
# first; the strace oracle, test_trace_oracle.py, sees the same) and os/user's cached
# Current(), run by whichever lookup comes first. There the engines must record the same
# set of accesses and results; which call site each is attributed to, and how often, may
# differ between any two runs (app.toml's expectations check each one).
CONCURRENT = frozenset({"parallel"})
_SCHEDULING_DEPENDENT = frozenset({"/sys/devices/system/cpu/online"})
_TMP = re.compile(r"^/tmp/tmp[^/]+/")  # the server's ready-file FIFO, one per run


def _frame_key(f: Frame | None) -> tuple[str | None, int | None] | None:
    return None if f is None else (f.function, f.line)


def _engine_key(a: Access, process: int) -> tuple[object, ...]:
    """What both engines must record the same way for one access: the process (by order of
    appearance, pids differ between runs), the call, path, result, kind, and the
    attribution's answer (not its stack, whose depth may differ with the stop)."""
    at = a.attribution
    answer = None if at is None else (
        at.via.value, at.go_api, at.c_function, _frame_key(at.user_frame), at.origin,
        at.via_goroutine, at.no_user_frame, _frame_key(at.creator_frame))
    return (process, a.syscall, _TMP.sub("/tmp/T/", os.path.normpath(a.path)), a.result,
            a.kind.value, answer)


def _engine_view(accesses: list[Access], attributed: bool) -> Counter[tuple[object, ...]]:
    """Calls per key: a record counts itself and its repeats."""
    processes: dict[int, int] = {}
    view: Counter[tuple[object, ...]] = Counter()
    for a in accesses:
        if a.path not in _SCHEDULING_DEPENDENT:
            view[_engine_key(a, processes.setdefault(a.pid, len(processes)))[
                :None if attributed else -1]] += a.calls
    return view


def _compare_engines(reference: list[Access], other: list[Access], counted: bool) -> None:
    """The ptrace engine's record (`reference`) and another engine's: the same accesses,
    results and attributions, counted; for a CONCURRENT app the same accesses and results
    (a set)."""
    want, got = _engine_view(reference, counted), _engine_view(other, counted)
    diff = "\n".join(f"  {k}: ptrace {want[k]}, other {got[k]}"
                     for k in sorted(set(want) | set(got), key=repr) if want[k] != got[k])
    assert set(want) == set(got), "the engines record different accesses:\n" + diff
    if counted:
        assert want == got, "the engines count accesses differently:\n" + diff


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
    # Go's LookupAddr(127.0.0.1) opens no file: its hosts cache is fresh from the
    # LookupHost just before (see app.toml; glibc's getnameinfo, when nsswitch.conf hands it
    # the lookup, reads the file itself).
    assert not [a for a in accesses if a.path == "/etc/hosts" and a.attribution is not None
                and a.attribution.go_api == "net.LookupAddr" and a.attribution.via is Via.GO]
    # The name only the responder knows was asked over the namespace's loopback, by Go code.
    dns = [a for a in accesses if a.syscall == "connect" and a.path == "127.0.0.1:53"
           and a.attribution is not None
           and a.attribution.go_api == "net.(*Resolver).LookupHost"]
    assert dns and all(a.attribution is not None and a.attribution.via is Via.GO
                       for a in dns), [_describe(a) for a in dns]
    # The reverse query reaches the responder in every mode but static musl (whose
    # getnameinfo sends without connect): by Go's resolver or by glibc's (app.toml).
    ptr = [a for a in accesses if a.syscall == "connect" and a.path == "127.0.0.1:53"
           and a.attribution is not None
           and a.attribution.go_api == "net.(*Resolver).LookupAddr"]
    assert ptr or mode == "musl", [_describe(a) for a in accesses if a.path == "127.0.0.1:53"]


def _inventory_checks(accesses: list[Access], info: appinfo.AppInfo, mode: str) -> None:
    """The helper's goroutines: started by workpool's Group.Go (or by net inside one), each
    a child of another goroutine; the user frame is the application's call of the helper,
    always in internal/, never in the third-party module or in main."""
    helper = [a for a in accesses if a.attribution is not None and a.attribution.via_goroutine]
    assert len({a.path for a in helper}) >= 5, [_describe(a) for a in helper]
    for a in helper:
        at = a.attribution
        assert at is not None and at.user_frame is not None and at.creator_frame is not None
        assert (at.user_frame.function or "").startswith("corp.test/inventory/internal/"), \
            _describe(a)
        assert "/internal/" in (at.user_frame.file or ""), _describe(a)
        assert at.parent_goroutine is not None and at.parent_goroutine != at.goroutine
        creator = at.creator_frame.function or ""
        assert creator.startswith(("vendor.test/workpool.(*Group).Go", "net.")), _describe(a)
        assert (at.go_api or "").startswith("vendor.test/workpool."), _describe(a)


_APP_CHECKS: dict[str, Callable[[list[Access], appinfo.AppInfo, str], None]] = {
    "inventory": _inventory_checks,
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
    lines = {a.attribution.user_frame.line for a in lookups if a.attribution
             and a.attribution.user_frame}
    # Go 1.19-1.20 read /etc/services and nsswitch.conf in Go, once for both LookupPort
    # calls (app.toml): one of the two port call sites may open nothing.
    assert len(lines) in ((8,) if tuple(int(x) for x in go.split(".")[:2]) >= (1, 21)
                          else (7, 8)), lines
    goroutines = {a.attribution.user_frame.line: a.attribution.goroutine for a in lookups
                  if a.attribution and a.attribution.user_frame}
    assert len(set(goroutines.values())) == len(lines), goroutines
    for a in lookups:
        at = a.attribution
        assert at is not None and at.creator_frame is not None
        assert at.creator_frame.function == "main.main"
        assert at.creator_frame.line == go_line
        assert at.parent_goroutine == 1


def _loader_oracle(exe: Path) -> tuple[set[str], set[str]]:
    """(every file the root's ld.so tries to open for exe's NEEDED libraries, the cache
    included; the ones it found), from the loader itself: `LD_DEBUG=libs ld.so --list`
    (here the host is the root the program runs in)."""
    import subprocess

    interp = _pt_interp(exe)
    p = subprocess.run([interp, "--list", str(exe)], env={"LD_DEBUG": "libs"},
                       capture_output=True, text=True, timeout=30, check=True)
    caches = set(re.findall(r"search cache=(\S+)", p.stderr))
    tried = set(re.findall(r"trying file=(\S+)", p.stderr))
    found = set(re.findall(r"=> (/\S+) \(0x", p.stdout))
    assert found and found <= tried, (p.stdout, p.stderr)
    return tried | caches, found | caches


def _pt_interp(exe: Path) -> str:
    """PT_INTERP of exe, read with readelf (an outside oracle, not cgotrace's ELF code)."""
    import subprocess

    out = subprocess.run(["readelf", "-lW", str(exe)], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"\[Requesting program interpreter: ([^]]+)\]", out)
    assert m, out
    return m.group(1)


@pytest.mark.parametrize("mode", ["cgo", "pie", "stripped", "dlopen-cgo"])
def test_loader_accesses(mode: str, sample: Callable[..., Path]) -> None:
    """What the attributor calls "loader" is exactly what the root's own loader says it
    opens (`LD_DEBUG=libs ld.so --list`: the cache, then each library, every file it tries),
    each without a stack; nothing the program does later (dlopen's own opens of the cache
    and of libz) is "loader"."""
    app, mode = ("dlopen", "cgo") if mode == "dlopen-cgo" else ("userlookup", mode)
    exe = sample(app, mode, GO_VERSIONS[0])
    info = appinfo.load(app)
    accesses, status, _att = _trace(exe, tuple(info.runs_for(mode)[0].argv))
    assert status == 0
    tried, found = _loader_oracle(exe)
    main = accesses[0].pid
    loader = [a for a in accesses if a.pid == main and a.attribution is not None
              and a.attribution.via is Via.LOADER]
    opens = [a for a in loader if a.syscall in ("open", "openat")]
    assert {os.path.normpath(a.path) for a in opens if a.result == "ok"} == found, \
        [_describe(a) for a in loader]
    assert {os.path.normpath(a.path) for a in opens} == tried, [_describe(a) for a in loader]
    for a in loader:
        assert a.attribution is not None and not a.attribution.stack, _describe(a)
    last_loader = max(a.seq for a in loader)
    first_go = min(a.seq for a in accesses if a.attribution is not None
                   and a.attribution.via in (Via.GO, Via.CGO))
    assert last_loader < first_go
    later = [a for a in accesses if a.seq >= first_go and a.attribution is not None]
    assert later and all(a.attribution is not None and a.attribution.via is not Via.LOADER
                         for a in later), [_describe(a) for a in later]
    if app == "dlopen":  # dlopen re-reads the cache and opens libz: the program's, not ld.so's
        cache = [a for a in later if a.path == "/etc/ld.so.cache"]
        assert cache and all(a.attribution is not None and a.attribution.via is Via.CGO
                             for a in cache), [_describe(a) for a in cache]


def test_warm_cost_per_access(sample: Callable[..., Path],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated call path is served from the memo (or the keep-policy) instead of being
    analysed again. The cost is printed, never asserted (`make bench` measures it)."""
    exe = sample("benchuser", "cgo", GO_VERSIONS[0])
    from tracer.attribution.policy import FULL_PER_PATH
    from tracer.attribution.state import AttributorStats
    from tracer.commands.run import RunOptions, trace_program

    n = 200
    att = Attributor(MapsRegistry(_IMAGES))
    att.keep_all = True  # walk every access: the memo alone must absorb the repeats
    accesses: list[Access] = []
    # the pure-Python per-call path: every call reaches the attributor and its counters
    # (the native core counts most repeats without asking it)
    monkeypatch.setenv("CGOTRACE_NATIVE", "0")
    totals: dict[int, Repeats] = {}
    for _ in range(2):
        att.stats = AttributorStats()
        accesses.clear()
        totals.clear()
        trace_program(RunOptions(argv=[str(exe), str(n)], attributor=att,
                                 on_access=accesses.append, forward_signals=False,
                                 on_repeats=lambda a, t, _: totals.__setitem__(a.seq, t),
                                 env={"PATH": "/usr/bin:/bin"}))
    accesses = with_repeats(accesses, totals)
    st = att.stats
    print(f"warm attribution cost (full walk, memo): {1000 * st.seconds / st.calls:.3f} ms/access "
          f"over {st.calls} accesses; memo {st.memo_hits} hits / {st.memo_misses} misses")
    passwd = [a for a in accesses if a.path == "/etc/passwd"]
    calls = sum(a.calls for a in passwd)
    assert calls >= n
    assert st.walks + st.loader == st.calls and st.loader > 0  # ld.so's opens: no unwind
    # n lookups from one call site: a handful of distinct chains, every repeat a memo hit.
    assert st.memo_misses <= 40 and st.memo_hits >= st.calls - 40, st
    # Identical answers are one object: all but the first /etc/passwd calls say same_as or
    # are repeats of a record (the same attribution, counted onto it).
    assert sum(a.repeats + (a.same_as is not None) for a in passwd) >= calls - 3

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
    from tracer.attribution.policy import SAMPLE_AFTER

    exe = sample("benchopen", "cgo", GO_VERSIONS[0])
    accesses, status, att = _trace(exe, ("2000",))
    assert status == 0
    target = os.path.realpath(exe)
    opens = [a for a in accesses if a.syscall == "openat" and a.path == target]
    assert sum(a.calls for a in opens) >= 2000
    walked = [a for a in opens if a.same_as is None]
    # 8 full + new fast keys + power-of-two resamples: a few dozen walks for 2000 opens
    assert len(walked) <= 64, len(walked)
    assert att.stats.walks <= 64, att.stats
    file, line = appinfo.marker_line("benchopen", "benchopen")
    # the calls past SAMPLE_AFTER are there, each in a record (its own or as a repeat)
    assert sum(a.calls for a in opens) > SAMPLE_AFTER + 10
    for a in opens:  # every one, reused or walked: the loop's open at the marker line
        at = a.attribution
        assert at is not None and at.via is Via.GO and at.user_frame is not None, _describe(a)
        assert (at.user_frame.file or "").endswith(file) and at.user_frame.line == line, \
            _describe(a)
        assert at.go_api == "syscall.Open", _describe(a)


@pytest.mark.netns
def test_inventory_without_build_info(sample: Callable[..., Path], tmp_path: Path) -> None:
    """With its build info blob destroyed, the application's code is found from pclntab's
    file names (tracer/attribution/appcode.py, heuristic 3): the same user frames in
    internal/..., the
    replaced third-party module (outside the application's directory) still not one."""
    from tracer.binary.buildinfo import MAGIC, read_buildinfo
    from tracer.binary.elf import ElfImage

    src = sample("inventory", "cgo", GO_VERSIONS[0])
    exe = tmp_path / "inventory-nobuildinfo"
    data = bytearray(src.read_bytes())
    at = data.find(MAGIC)
    assert at >= 0 and data.find(MAGIC, at + 1) < 0
    data[at:at + len(MAGIC)] = b"\0" * len(MAGIC)
    exe.write_bytes(bytes(data))
    exe.chmod(0o755)
    assert read_buildinfo(ElfImage.open(exe)) is None
    info = appinfo.load("inventory")
    accesses, status, _att = _dns_trace(exe, ())
    assert status == 0
    failures = _check(accesses, info.expectations("cgo"), "cgo", exe)
    assert not failures, "\n".join(failures)


def test_cli_trace_has_no_launcher_frames(sample: Callable[..., Path], tmp_path: Path) -> None:
    """`cgotrace run --output`: the launched program's exec (made by cgotrace's own forked
    Python process) has no stack, and no access anywhere names a frame in a module of a
    Python process (the launcher's interpreter, libpython, extension modules)."""
    import subprocess
    import sys

    from tracer.trace.recorder import read_trace

    exe = sample("userlookup", "cgo", GO_VERSIONS[0])
    out = tmp_path / "t.jsonl"
    proc = subprocess.run([sys.executable, "-m", "tracer", "run", "-q", "--output", str(out),
                           "--", str(exe)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    trace = read_trace(out)
    first = trace.accesses[0]
    assert first.syscall == "execve" and first.attribution is not None
    assert first.attribution.via is Via.EXEC and not first.attribution.stack
    frames = [(a.seq, f.module, f.function) for a in trace.accesses if a.attribution
              for f in a.attribution.stack]
    assert frames  # the run was unwound at all
    assert not [f for f in frames if "_PyEval" in (f[2] or "")], frames
    # modules only a Python process maps (this one stands for the launcher's)
    _no_launcher_frames(list(trace.accesses))


@pytest.mark.parametrize("mode", ["cgo", "pure"])
def test_keep_policy_reuses_are_checked(mode: str, sample: Callable[..., Path]) -> None:
    """500 lookups from one call site: most /etc/passwd accesses are keep-policy reuses
    (`same_as`, no unwind of their own), and every one of them must match app.toml."""
    info = appinfo.load("benchuser")
    exe = sample("benchuser", mode, GO_VERSIONS[0])
    accesses, status, att = _trace(exe, tuple(info.runs_for(mode)[0].argv))
    assert status == 0
    passwd = [a for a in accesses if a.path == "/etc/passwd"]
    # most calls carry an earlier answer: same_as, or a repeat counted onto a record
    assert sum(a.calls for a in passwd) >= 500
    assert sum(a.repeats + (a.same_as is not None) for a in passwd) >= 400
    assert att.stats.reused > 0
    failures = _check(accesses, info.expectations(mode), mode, exe)
    assert not failures, "\n".join(failures[:10])
