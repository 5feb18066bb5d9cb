"""From a stopped thread to an `Attribution`: which Go code caused this access, and how.

`Attributor` is the hook the collector (tracer/recording/collector.py) calls at the entry of
every kept access with the engine's `ThreadView` of the thread (docs/architecture.md,
"Seams" 2): registers and memory come only from that view. Per call: walk the stack
(`tracer.unwind.stack`), name the frames, then pick:

* `via`: exec for execve; go when the syscall PC is in Go code; cgo when it is in C code
  with Go frames further out; loader when there are no Go frames and the PC is in the ELF
  interpreter (or the loop saw it before the entry point);
* `user_frame`, `go_api`, `origin`, `no_user_frame`: chosen by `tracer.attribution.appcode` (what is
  the application's code: its main module; innermost application frame; the outermost
  non-application frame below it; the knowledge base's deciding function);
* `c_function`: the C API the Go code called (getpwuid_r, getaddrinfo): the function the
  innermost cgo wrapper names, found also when the C frames are unnamed or skipped; without
  a wrapper, the outermost named C frame that is not cgo plumbing;
* for a goroutine started by a `go` statement, `parent_goroutine` and `creator_frame`
  (g.parentGoid, g.gopc); when such a goroutine has no application frame (net's lookup
  helper goroutine in doBlockingWithCtx, a library's worker goroutine), the creator chain
  gives it: the `go` statement itself when it is application code, else the creator
  goroutine, found in `runtime.allgs`, whose parked stack is walked (or, running on a thread
  in a ptrace-stop, that thread's stack; recursively, up to MAX_PARENT_DEPTH);
  `via_goroutine` then says the user frame is the creator's.

Costs: names are cached per (image, pc); the analysis is memoised per (pid, PC chain), so a
repeated call path costs its memory reads (a few pages, cached per stop) plus a dict lookup.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, cast

from probes.knowledge import origin_functions
from tracer.attribution.appcode import AppCode, choose, goroutine_note, package_of
from tracer.attribution.modules import LoadedImage, MapsRegistry, Module, ProcessMaps
from tracer.errors import CgotraceError
from tracer.trace.model import Attribution, Frame, Via
from tracer.unwind.creator import Search, find_creator
from tracer.unwind.stack import (
    GoContext,
    MemoryError_,
    PagedReader,
    PagesReader,
    RawFrame,
    Reader,
    Stack,
    Unwinder,
    word,
)

if TYPE_CHECKING:
    from tracer.engine.base import Registers, ThreadView

EXEC_SYSCALLS: Final = frozenset({"execve", "execveat"})
_WRAPPER = re.compile(r"(?:^|\.)_C2?func_(\w+)$")
_C_WRAPPER = re.compile(r"^_cgo_[0-9a-f]+_C2?func_(\w+)$")
_C_PLUMBING = re.compile(r"^(_cgo_|x_cgo_|crosscall|_rt0_|__libc_start|_start$|"
                         r"runtime\.|start_thread$|clone3?$)")
_G_WAITING: Final = 4
_G_SYSCALL: Final = 3
_G_RUNNING: Final = 2
_G_PREEMPTED: Final = 9
_G_SCAN: Final = 0x1000  # the GC is scanning the stack: the status underneath still holds
# A creator still running (on another thread, e.g. between its `go` statement and the wait
# that parks it) has no saved context to walk. When its thread is in a ptrace-stop (a
# signal such as the scheduler's SIGURG, a clone event, a syscall of its own) it waits for
# this tracer: its stack is walked from that thread's registers, at once. When it really
# runs, look again, PARK_WAIT seconds apart (doubling up to 8 ms), for at most PARK_TIMEOUT
# seconds, before giving up; once per goroutine (later accesses look without waiting). The
# traced thread stays stopped meanwhile; on a loaded host the creator may wait for a CPU.
PARK_WAIT: Final = 0.0005
PARK_TIMEOUT: Final = 0.1
_G_COPYSTACK: Final = 8  # the stack is being moved: transient, like running
MAX_PARENT_DEPTH: Final = 4
MAX_ALLGS: Final = 100_000
# Keep-policy (docs/attribution.md): the first FULL_PER_PATH accesses of each
# (pid, syscall, path) are walked in full; after that an access is walked only when its fast
# key (syscall PC + the first FAST_FRAMES frame PCs) is new for that path, or when the key's
# count reaches a power of two (re-sampling); otherwise the earlier Attribution is reused.
FULL_PER_PATH: Final = 8
FAST_FRAMES: Final = 4
# Past SAMPLE_AFTER accesses of one (pid, syscall, path) even the fast key is only taken at
# power-of-two counts; the accesses between reuse that path's latest Attribution. A
# 20,000-open loop then pays for ~23 walks, not 20,000 (the registers are not even read).
SAMPLE_AFTER: Final = 256
MAX_KEYS: Final = 65_536  # per-process table bounds: cleared when exceeded


@dataclass(slots=True)
class AttributorStats:
    """What the attributor did (tests assert on these; `make bench` prints them)."""

    calls: int = 0  # hook calls with a live thread
    walks: int = 0  # full unwinds
    loader: int = 0  # loader-phase accesses: via "loader" without an unwind
    reused: int = 0  # keep-policy: no full unwind, an earlier Attribution reused
    memo_hits: int = 0  # full unwinds whose PC chain was analysed before
    memo_misses: int = 0  # ... and those analysed now (symbolized, classified)
    seconds: float = 0.0  # time inside the hook
    creator_waits: int = 0  # creator goroutines polled until they parked
    creator_misses: int = 0  # creator goroutines whose stack could not be walked
    creator_stopped: int = 0  # running creators walked from their stopped thread's registers


@dataclass(frozen=True, slots=True)
class _Named:
    """A symbolized frame and what kind of code it is ("go", "c", "unknown")."""

    frame: Frame
    kind: str


class Symbolizer:
    """Names frames; results cached per (image, link-time pc, return-address flag)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, bool], tuple[tuple[Frame, ...], str]] = {}

    def name(self, raw: RawFrame) -> list[_Named]:
        mod = raw.module
        if mod is None or mod.image is None:
            name = mod.name if mod is not None else None
            return [_Named(Frame(None, module=name, pc=raw.pc), raw.kind)]
        rel = raw.pc - mod.bias
        key = (id(mod.image), rel, raw.is_return)
        hit = self._cache.get(key)
        if hit is None:
            hit = (self._frames(cast(LoadedImage, mod.image), rel, raw), raw.kind)
            self._cache[key] = hit
        frames, kind = hit
        return [_Named(replace(f, pc=raw.pc, module=mod.name), kind) for f in frames]

    @staticmethod
    def _frames(img: LoadedImage, rel: int, raw: RawFrame) -> tuple[Frame, ...]:
        pcln = img.pcln
        if pcln is not None:
            try:
                found = pcln.frames(rel, is_return_address=raw.is_return)
            except Exception:  # noqa: BLE001 - a corrupt line table must not lose the stack
                found = []
            if found:
                return tuple(found)
        look = rel - 1 if raw.is_return else rel
        return (Frame(img.symbol_for(look)),)


@dataclass(frozen=True, slots=True)
class _Analysis:
    """The part of an Attribution that depends only on the PC chain (memoisable)."""

    via: Via
    go_api: str | None
    user_frame: Frame | None
    c_function: str | None
    stack: tuple[Frame, ...]
    unsymbolized: tuple[str, ...]
    started_by_go: bool  # the stack ends at runtime.goexit (a `go` statement started it)
    origin: str | None = None
    no_user_frame: str | None = None
    via_goroutine: bool = False  # user_frame is a creator's (set on parent analyses)


class _ProcessState:
    def __init__(self, pid: int, maps: ProcessMaps, read: Reader,
                 read_pages: PagesReader | None = None) -> None:
        self.pid = pid
        self.maps = maps
        self.read = read
        self.read_pages = read_pages
        self.pages: dict[int, list[int]] = {}  # tid -> pages its last walk touched
        self.per_path: dict[tuple[str, str], int] = {}  # (syscall, path) -> accesses seen
        self.fast: dict[tuple[str, str, tuple[int, ...]], list[Any]] = {}  # -> [attr, n]
        self.latest: dict[tuple[str, str], Attribution] = {}  # (syscall, path) -> last attr
        self.interned: dict[tuple[Any, ...], Attribution] = {}
        self.unwinder = Unwinder(maps)
        self.goids: dict[int, int] = {}  # goid -> g address (from allgs)
        self.parents: dict[tuple[int, int], tuple[int | None, Frame | None,
                                                   _Analysis | None]] = {}
        self.interpreters: set[str] | None = None
        self.appcode: AppCode | None = None
        # (syscall, path, syscall PC) -> the latest walked Attribution (notify keep-policy)
        self.by_site: dict[tuple[str, str, int], Attribution] = {}
        self.tid: int | None = None  # the thread of the access being attributed
        # registers of another thread of this process in a ptrace-stop (the engine's view)
        self.regs_of: Callable[[int], Registers | None] = _no_regs
        self.stopped: dict[int, Stack] | None = None  # this stop: g -> stack (other threads)
        self.gave_up: set[tuple[int, int]] = set()  # (g, goid) whose creator poll timed out


_LOADER: Final = Attribution(via=Via.LOADER)


def _no_memory(addr: int, n: int) -> bytes:
    """The reader of a process no engine view is bound to (nothing is readable)."""
    return b""


def _no_regs(tid: int) -> Registers | None:
    """Other threads' registers, before an engine view is bound: none."""
    return None


class Attributor:
    """The loop's attributor hook. One instance serves every traced process."""

    def __init__(self, registry: MapsRegistry | None = None) -> None:
        self.registry = registry or MapsRegistry()
        self.symbolizer = Symbolizer()
        self._procs: dict[int, _ProcessState] = {}
        self._memo: dict[tuple[int, tuple[int, ...], str, bool], _Analysis] = {}
        self.stats = AttributorStats()
        self._last_pcs: tuple[int, ...] = ()
        self.keep_all = False  # True: walk every access (no keep-policy)

    @property
    def calls(self) -> int:
        return self.stats.calls

    @property
    def seconds(self) -> float:
        return self.stats.seconds

    # --- the hook -----------------------------------------------------------------------
    def __call__(self, view: ThreadView, draft: Any) -> Attribution | None:
        """The hook: registers and memory come from the engine's `view` of the thread."""
        pid, tid = view.pid, view.tid
        t0 = time.perf_counter()
        if not self.keep_all:
            sampled = self._sampled(pid, draft)
            if sampled is not None:
                self.stats.calls += 1
                self.stats.reused += 1
                self.stats.seconds += time.perf_counter() - t0
                return sampled
        regs = view.regs()
        if regs is None:
            return None  # thread gone, or the engine has no registers for it
        st = self._state(pid)
        st.read, st.read_pages = view.read, view.read_pages
        st.regs_of = view.regs_of
        stats = self.stats
        try:
            syscall = str(getattr(draft, "syscall", ""))
            loader_phase = bool(getattr(draft, "loader_phase", False))
            path = getattr(draft, "path", None)
            if self.keep_all or not isinstance(path, str):
                return self.attribute(pid, regs, syscall, loader_phase=loader_phase, tid=tid)
            found = self._keep(pid, tid, regs, syscall, path, loader_phase)
            if len(st.by_site) >= MAX_KEYS:
                st.by_site.clear()
            st.by_site[(syscall, path, int(getattr(draft, "ip", 0)))] = found
            return found
        finally:
            stats.calls += 1
            stats.seconds += time.perf_counter() - t0

    # --- keep-policy without registers (the notify engine) ----------------------------------
    def wants_walk(self, pid: int, draft: Any) -> bool:
        """The keep-policy without registers (notify engine): True for the first
        FULL_PER_PATH accesses of each (syscall, path) in `pid`, as the ptrace engine walks
        them, and for a (syscall, path, syscall PC) not walked yet. The collector adds
        first sightings and power-of-two repeats of every key."""
        st = self._procs.get(pid)
        if st is None:
            return True
        syscall = str(getattr(draft, "syscall", ""))
        path = str(getattr(draft, "path", ""))
        if st.per_path.get((syscall, path), 0) < FULL_PER_PATH:
            return True
        return (syscall, path, int(getattr(draft, "ip", 0))) not in st.by_site

    def reuse(self, pid: int, draft: Any) -> Attribution | None:
        """The attribution an access let run without a walk carries: the latest walked one
        of the same (syscall, path, syscall PC), else of the same (syscall, path)."""
        st = self._procs.get(pid)
        if st is None:
            return None
        syscall = str(getattr(draft, "syscall", ""))
        path = str(getattr(draft, "path", ""))
        self.stats.calls += 1
        self.stats.reused += 1
        return (st.by_site.get((syscall, path, int(getattr(draft, "ip", 0))))
                or st.latest.get((syscall, path)))

    def _sampled(self, pid: int, draft: Any) -> Attribution | None:
        """The latest Attribution of a path accessed more than SAMPLE_AFTER times, unless
        this access is a power-of-two sample (then None: walk it)."""
        st = self._procs.get(pid)
        path = getattr(draft, "path", None)
        if st is None or not isinstance(path, str):
            return None
        key = (str(getattr(draft, "syscall", "")), path)
        n = st.per_path.get(key, 0) + 1
        if n <= SAMPLE_AFTER or not n & (n - 1):
            return None
        latest = st.latest.get(key)
        if latest is not None:
            st.per_path[key] = n
        return latest

    def _keep(self, pid: int, tid: int, regs: Registers, syscall: str, path: str,
              loader_phase: bool) -> Attribution:
        """The keep-policy: a full walk, or the Attribution of an earlier access with the
        same (syscall, path, fast key)."""
        st = self._state(pid)
        n = st.per_path.get((syscall, path), 0) + 1
        if len(st.per_path) >= MAX_KEYS:
            st.per_path.clear()
        st.per_path[(syscall, path)] = n
        if n > FULL_PER_PATH:
            st.maps.epoch += 1
            short = st.unwinder.unwind(regs, PagedReader(st.read), max_frames=FAST_FRAMES)
            fkey = (syscall, path, tuple(f.pc for f in short.frames))
            entry = st.fast.get(fkey)
            if entry is not None:
                entry[1] += 1
                count = entry[1]
                if count & (count - 1):  # not a power of two: reuse
                    self.stats.reused += 1
                    st.latest[(syscall, path)] = entry[0]
                    return cast(Attribution, entry[0])
        attribution = self.attribute(pid, regs, syscall, loader_phase=loader_phase, tid=tid)
        pcs = self._last_pcs[:FAST_FRAMES]
        fkey = (syscall, path, pcs)
        if len(st.fast) >= MAX_KEYS:
            st.fast.clear()
        old = st.fast.get(fkey)
        st.fast[fkey] = [attribution, old[1] if old is not None else 1]
        if len(st.latest) >= MAX_KEYS:
            st.latest.clear()
        st.latest[(syscall, path)] = attribution
        return attribution

    def on_exec(self, pid: int, tid: int, exe: str) -> None:
        self._drop(pid)

    def on_exit(self, pid: int) -> None:
        self._drop(pid)

    def _drop(self, pid: int) -> None:
        self.registry.forget(pid)
        self._procs.pop(pid, None)
        for key in [k for k in self._memo if k[0] == pid]:
            del self._memo[key]

    def _state(self, pid: int) -> _ProcessState:
        st = self._procs.get(pid)
        if st is None:
            st = _ProcessState(pid, self.registry.for_pid(pid), _no_memory)
            self._procs[pid] = st
        return st

    # --- the work -----------------------------------------------------------------------
    def attribute(self, pid: int, regs: Registers, syscall: str, *,
                  loader_phase: bool = False, tid: int | None = None) -> Attribution:
        """Attribution for thread registers `regs` of process `pid`, stopped at `syscall`."""
        st = self._state(pid)
        st.maps.epoch += 1
        read = PagedReader(st.read, st.read_pages)
        if tid is not None:
            read.prefetch(st.pages.get(tid, []))
        st.tid, st.stopped = tid, None
        try:
            return self._attribute(st, read, regs, syscall, loader_phase)
        finally:
            st.stopped = None
            if tid is not None:
                st.pages[tid] = read.touched

    def _attribute(self, st: _ProcessState, read: PagedReader, regs: Registers, syscall: str,
                   loader_phase: bool) -> Attribution:
        pid = st.pid
        if loader_phase and syscall not in EXEC_SYSCALLS:
            # ld.so before the program's entry point: nothing of the program's code is on
            # the stack, so skip the unwind (it would load ld.so's CFI for every program).
            self.stats.loader += 1
            return _LOADER
        stack = st.unwinder.unwind(regs, read)
        pcs = tuple(f.pc for f in stack.frames)
        self._last_pcs = pcs
        self.stats.walks += 1
        key = (pid, pcs, syscall, loader_phase)
        analysis = self._memo.get(key)
        if analysis is None:
            self.stats.memo_misses += 1
            analysis = self._analyse(st, stack, syscall, loader_phase)
            self._memo[key] = analysis
        else:
            self.stats.memo_hits += 1
        goroutine = parent = None
        creator: Frame | None = None
        user_frame, go_api = analysis.user_frame, analysis.go_api
        via_goroutine, no_user, origin = False, analysis.no_user_frame, analysis.origin
        ctx = st.unwinder.go_context(read, regs.fs_base)
        if stack.g is not None and ctx is not None:
            lay = ctx.rt.layout
            try:
                goroutine = word(read, stack.g + lay.g_goid)
                if analysis.started_by_go:
                    parent, creator, parent_analysis = self._creator(st, read, stack.g,
                                                                     goroutine, regs.fs_base)
                    if user_frame is None:
                        user_frame, go_api, via_goroutine, no_user = _from_creator(
                            st, creator, parent_analysis, go_api, no_user)
                    if origin is None and parent_analysis is not None:
                        origin = parent_analysis.origin  # decided by the creator
            except MemoryError_:
                pass
        # Identical attributions are one object, so the loop can record `same_as`.
        ikey = (id(analysis), go_api, user_frame, goroutine, parent, creator, via_goroutine,
                no_user, origin)
        found = st.interned.get(ikey)
        if found is None:
            found = Attribution(via=analysis.via, go_api=go_api, user_frame=user_frame,
                                c_function=analysis.c_function, stack=analysis.stack,
                                goroutine=goroutine, parent_goroutine=parent,
                                creator_frame=creator, unsymbolized=analysis.unsymbolized,
                                origin=origin, via_goroutine=via_goroutine,
                                no_user_frame=no_user)
            if len(st.interned) >= MAX_KEYS:
                st.interned.clear()
            st.interned[ikey] = found
        return found

    def _analyse(self, st: _ProcessState, stack: Stack, syscall: str,
                 loader_phase: bool) -> _Analysis:
        named: list[_Named] = []
        for raw in stack.frames:
            named.extend(self.symbolizer.name(raw))
        frames = tuple(n.frame for n in named)
        choice = choose(frames, [n.kind for n in named], _appcode(st), origin_functions())
        user_frame, go_api = choice.user_frame, choice.go_api
        has_go = any(n.kind == "go" for n in named)
        innermost = named[0].kind if named else "unknown"
        if syscall in EXEC_SYSCALLS:
            via = Via.EXEC
        elif innermost == "go":
            via = Via.GO
        elif has_go:
            via = Via.CGO
        elif loader_phase or self._in_interpreter(st, stack):
            via = Via.LOADER
        else:
            via = Via.UNKNOWN
        c_function = _c_function(named) if via in (Via.CGO, Via.EXEC) and has_go else None
        outer = next((n for n in reversed(named) if n.kind == "go"), None)
        started = (outer is not None and outer.frame.function == "runtime.goexit"
                   and stack.end == "root")
        return _Analysis(via, go_api, user_frame, c_function, frames,
                         _unsymbolized(stack), started, choice.origin, choice.no_user_frame)

    def _in_interpreter(self, st: _ProcessState, stack: Stack) -> bool:
        if not stack.frames or stack.frames[0].module is None:
            return False
        if st.interpreters is None:
            interps: set[str] = set()
            for m in st.maps.modules:
                elf = m.image.elf if m.image is not None else None
                if elf is not None:
                    try:
                        if elf.interpreter:
                            interps.add(elf.interpreter)
                    except Exception:  # noqa: BLE001 - a bad PT_INTERP names no loader
                        continue
            st.interpreters = interps
        mod = stack.frames[0].module
        return mod.path in st.interpreters or mod.name in {i.rsplit("/", 1)[-1]
                                                           for i in st.interpreters}

    # --- goroutine creators -----------------------------------------------------------------
    def _creator(self, st: _ProcessState, read: Reader, g: int, goid: int,
                 fs_base: int, depth: int = 0) -> tuple[int | None, Frame | None,
                                                         _Analysis | None]:
        """(parent goid, the `go` statement's frame, the parent's analysis) for goroutine g."""
        cached = st.parents.get((g, goid))
        if cached is not None:
            return cached
        ctx = st.unwinder.go_context(read, fs_base)
        if ctx is None:
            return None, None, None
        lay = ctx.rt.layout
        gopc = word(read, g + lay.g_gopc)
        parent_goid = (word(read, g + lay.g_parent_goid) or None
                       if lay.g_parent_goid is not None else None)
        creator = None
        if gopc:
            raw = RawFrame(gopc, st.maps.module_for(gopc), "go", True)
            names = self.symbolizer.name(raw)
            creator = names[0].frame if names and names[0].frame.function else None
        if creator is None or package_of(creator.function or "") == "runtime":
            # runtime.main's goroutine (created by rt0_go) and runtime-internal workers
            return None, None, None
        if lay.g_parent_goid is None and depth < MAX_PARENT_DEPTH:
            parent_goid, read = self._search_parent(st, ctx, read, fs_base, gopc, g, goid)
        parent_analysis = None
        if parent_goid is not None and depth < MAX_PARENT_DEPTH:
            parent_analysis = self._parent_analysis(st, read, parent_goid, fs_base, depth)
        result = (parent_goid, creator, parent_analysis)
        # A miss may be a busy parent: looked for again at the goroutine's next access.
        busy = (g, goid) in st.gave_up or (parent_goid is not None and parent_analysis is None)
        if not busy:
            st.parents[(g, goid)] = result
        return result

    def _search_parent(self, st: _ProcessState, ctx: GoContext, read: Reader, fs_base: int,
                       gopc: int, g: int, goid: int) -> tuple[int | None, Reader]:
        """Go 1.19-1.20 (no g.parentGoid): the parent's goid, found by the function it is in
        (tracer/unwind/creator.py), and the reader to go on with (fresh after a poll). A
        miss while some goroutine runs unseen may be a creator not parked yet: looked for
        again as PARK_WAIT/PARK_TIMEOUT say."""
        def search(rd: Reader) -> Search:
            running = {k: [f.pc - f.is_return for f in v.frames]
                       for k, v in self._stopped_goroutines(st, rd).items()}
            return find_creator(st.unwinder, ctx, rd, fs_base, gopc, exclude=g,
                                running=running)

        found = search(read)
        if found.g is None and found.unseen and (g, goid) not in st.gave_up:
            self.stats.creator_waits += 1
            wait, deadline = PARK_WAIT, time.monotonic() + PARK_TIMEOUT
            while found.g is None and found.unseen and time.monotonic() < deadline:
                time.sleep(wait)
                wait = min(2 * wait, 0.008)
                st.stopped = None
                read = PagedReader(st.read)  # the cached pages of this stop are stale now
                found = search(read)
            if found.g is None:
                self.stats.creator_misses += 1
                st.gave_up.add((g, goid))
        if found.g is None:
            return None, read
        if st.stopped and found.g in st.stopped:
            self.stats.creator_stopped += 1
        parent_goid = word(read, found.g + ctx.rt.layout.g_goid)
        st.goids[parent_goid] = found.g
        return parent_goid, read

    def _stopped_goroutines(self, st: _ProcessState, read: Reader) -> dict[int, Stack]:
        """The goroutines running on the other threads of this process that are in a
        ptrace-stop now (they wait for this tracer, so waiting for them to park is in vain):
        g -> its stack, walked from the thread's registers. Once per stop."""
        if st.stopped is not None:
            return st.stopped
        st.stopped = {}
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{st.pid}/task")]
        except (OSError, ValueError):
            return st.stopped
        for tid in tids:
            if tid == st.tid:
                continue
            regs = st.regs_of(tid)
            if regs is None:  # running (not in a ptrace-stop), or gone
                continue
            try:
                stack = st.unwinder.unwind(regs, read)
            except (MemoryError_, CgotraceError):
                continue
            if stack.g is not None:
                st.stopped[stack.g] = stack
        return st.stopped

    def _parent_analysis(self, st: _ProcessState, read: Reader, goid: int, fs_base: int,
                         depth: int) -> _Analysis | None:
        ctx = st.unwinder.go_context(read, fs_base)
        if ctx is None:
            return None
        g = self._find_g(st, read, goid, fs_base)
        if g is None:
            return None
        stack, read = self._parent_stack(st, ctx, read, g, goid, fs_base)
        if stack is None:
            return None
        analysis = self._analyse(st, stack, "", False)
        if analysis.user_frame is None and analysis.started_by_go:
            _, creator, grand = self._creator(st, read, g, goid, fs_base, depth + 1)
            user_frame, go_api, via_goroutine, _note = _from_creator(
                st, creator, grand, analysis.go_api, None)
            if user_frame is None:
                return None
            return replace(analysis, user_frame=user_frame, go_api=go_api,
                           via_goroutine=via_goroutine,
                           origin=analysis.origin or (grand.origin if grand else None))
        return analysis

    def _parent_stack(self, st: _ProcessState, ctx: GoContext, read: Reader, g: int, goid: int,
                      fs_base: int) -> tuple[Stack | None, Reader]:
        """The creator's stack: from its saved context when parked; from its thread's
        registers when it runs on a thread in a ptrace-stop; else polled until it parks
        (once per goroutine, see PARK_TIMEOUT). And the reader to go on with."""
        lay = ctx.rt.layout
        status = word(read, g + lay.g_atomicstatus) & 0xFFFF & ~_G_SCAN
        wait, deadline = PARK_WAIT, time.monotonic() + PARK_TIMEOUT
        polled = False
        # A running g's g.sched is no evidence: asmcgocall saves it and does not clear it on
        # return, so after any cgo call it holds a stale context (systemstack's is cleared).
        # A running creator is walked only from its stopped thread's registers (on the
        # system stack, the unwinder goes on from g.sched, then valid), or polled.
        while status in (_G_RUNNING, _G_COPYSTACK):
            stopped = self._stopped_goroutines(st, read).get(g)
            if stopped is not None and stopped.end == "root":  # else: wait for it to park
                self.stats.creator_stopped += 1
                return stopped, read
            if (g, goid) in st.gave_up or time.monotonic() >= deadline:
                self.stats.creator_misses += 1  # still running on another thread
                st.gave_up.add((g, goid))
                return None, read
            if not polled:
                self.stats.creator_waits += 1
                polled = True
            time.sleep(wait)
            wait = min(2 * wait, 0.008)
            read = PagedReader(st.read)  # the cached pages of this stop are stale now
            st.stopped = None
            status = word(read, g + lay.g_atomicstatus) & 0xFFFF & ~_G_SCAN
        if status == _G_SYSCALL:
            sp, pc = word(read, g + lay.g_syscallsp), word(read, g + lay.g_syscallpc)
        elif status in (_G_WAITING, 1, _G_PREEMPTED):  # parked or runnable
            sp, pc = word(read, g + lay.g_sched), word(read, g + lay.g_sched + 8)
        else:  # dead, or a status this tracer does not know
            self.stats.creator_misses += 1
            return None, read
        return st.unwinder.unwind_goroutine(pc, sp, read, fs_base), read

    def _find_g(self, st: _ProcessState, read: Reader, goid: int, fs_base: int) -> int | None:
        ctx = st.unwinder.go_context(read, fs_base)
        if ctx is None or ctx.rt.allgs is None:
            return None
        g = st.goids.get(goid)
        # A dead goroutine's g is reused for a new goroutine with a new goid: check first.
        if g is not None and word(read, g + ctx.rt.layout.g_goid) == goid:
            return g
        st.goids.clear()
        base = ctx.rt.allgs + ctx.module.bias
        ptr, n = word(read, base), word(read, base + 8)
        if not ptr or n > MAX_ALLGS:
            return None
        data = read(ptr, 8 * n)
        lay = ctx.rt.layout
        for i in range(len(data) // 8):
            gp = int.from_bytes(data[8 * i:8 * i + 8], "little")
            if gp:
                try:
                    st.goids[word(read, gp + lay.g_goid)] = gp
                except MemoryError_:
                    continue
        return st.goids.get(goid)


def _appcode(st: _ProcessState) -> AppCode:
    """What is application code in this process (tracer.attribution.appcode), decided once
    per exec."""
    if st.appcode is None:
        mod = next((m for m in st.maps.go_modules() if m.image is not None), None)
        img = mod.image if mod is not None else None
        rt = img.goruntime if img is not None else None
        pcln = img.pcln if img is not None else None

        def lookup_file(name: str) -> str | None:
            fn = pcln.lookup_function(name) if pcln is not None else None
            if pcln is None or fn is None:
                return None
            frames = pcln.frames(fn.entry)
            return frames[-1].file if frames else None

        st.appcode = AppCode.detect(rt.main_module if rt is not None else None,
                                    rt.main_path if rt is not None else None, lookup_file)
    return st.appcode


def _from_creator(st: _ProcessState, creator: Frame | None, parent: _Analysis | None,
                  go_api: str | None, no_user: str | None
                  ) -> tuple[Frame | None, str | None, bool, str | None]:
    """(user_frame, go_api, via_goroutine, no_user_frame) for a goroutine without an
    application frame: the `go` statement when it is application code, else the creator
    goroutine's user frame and API, else a note naming the creator."""
    if creator is not None and _appcode(st).is_app(creator):
        return creator, go_api, True, None
    if parent is not None and parent.user_frame is not None:
        return parent.user_frame, parent.go_api or go_api, True, None
    return None, go_api, False, no_user or goroutine_note(creator)


def c_name(symbol: str) -> str:
    """A C symbol as an API name: 'getpwuid_r@@GLIBC_2.2.5' -> 'getpwuid_r'."""
    return symbol.split("@", 1)[0]


def _c_function(named: list[_Named]) -> str | None:
    """The C API the Go code called in the innermost cgo call.

    That is the function cgo's wrapper names (`_Cfunc_getaddrinfo`; os/user's `my` helpers
    stripped: `_Cfunc_mygetpwuid_r` -> `getpwuid_r`), whether or not the walk could name the
    C frames (static musl libc has no CFI: they are skipped). Without a wrapper (C code
    reached some other way) it is the outermost named C frame of the call that is not cgo
    plumbing. tests/integration/test_attribution_matrix.py checks the answer against the C
    frames of the stack whenever the walk reached the wrapper through them.
    """
    c_frames: list[str] = []  # innermost first
    c_wrapper: str | None = None  # the C half of the wrapper (internal link)
    for n in named:
        fn = n.frame.function
        if n.kind == "go":
            if fn and (m := _WRAPPER.search(fn)):
                wrapper = m.group(1)
                return wrapper.removeprefix("my") if package_of(fn) == "os/user" else wrapper
            if fn and not fn.startswith("runtime."):
                break
            continue
        if fn:
            m = _C_WRAPPER.match(fn)
            if m:
                c_wrapper = c_wrapper or m.group(1)
            elif not _C_PLUMBING.match(fn):
                c_frames.append(c_name(fn))
    return c_wrapper or (c_frames[-1] if c_frames else None)


def _unsymbolized(stack: Stack) -> tuple[str, ...]:
    out: dict[str, str] = {}
    for raw in stack.frames:
        mod = cast("Module | None", raw.module)  # the process layer's Module
        if mod is None:
            out.setdefault(f"{raw.pc:#x}", "no mapping")
        elif mod.image is None:
            if mod.name != "[vdso]":
                out.setdefault(mod.name, "not an ELF file")
        elif (reason := mod.image.unsymbolized_reason()) is not None:
            out.setdefault(mod.name, reason)
    if stack.end in ("scan-failed", "cfa-expression", "unreadable", "bad-symbols"):
        last = stack.frames[-1].module if stack.frames else None
        name = last.name if last is not None else "stack"
        detail = {"scan-failed": "C code without CFI and no asmcgocall return within 64 KiB",
                  "cfa-expression": "CFI uses an expression (PLT or signal frame)",
                  "unreadable": "stack memory unreadable",
                  "bad-symbols": "corrupt symbol tables"}[stack.end]
        out.setdefault(name, f"stack ends: {detail}")
    return tuple(f"{name} ({reason})" for name, reason in out.items())
