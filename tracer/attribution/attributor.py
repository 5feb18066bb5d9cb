"""From a stopped thread to an `Attribution`: which Go code caused this access, and how.

`Attributor` is the hook the collector (tracer/recording/collector.py `AttributionHook`)
calls at the entry of every kept access with the engine's `ThreadView` of the thread
(docs/architecture.md, "Seams" 2): registers and memory come only from that view.
Per access:

1. the keep-policy (tracer/attribution/policy.py) may answer with an earlier Attribution;
2. else the stack is walked (`tracer.unwind.stack`) and what its frames say (via, go_api,
   user_frame, origin, c_function: tracer/attribution/frames.py) is memoised per (pid, PC
   chain);
3. for a goroutine started by a `go` statement, its creator chain
   (tracer/attribution/creator.py) adds `parent_goroutine` and `creator_frame`, and the
   user frame when the goroutine's own stack has none;
4. identical answers are interned: one object, so the collector writes `same_as`.

What is kept per process is in tracer/attribution/state.py. Costs: names are cached per
(image, pc); a repeated call path costs its memory reads (a few pages, cached per stop)
plus a dict lookup.

Capture, then walk (docs/attribution.md, "Capture"): `capture(view, draft)` is what must
happen while the thread is stopped: the keep-policy's answer without registers, or a copy
of the registers and the memory the walk will read (tracer/unwind/capture.py), returned as
a `PendingWalk` the collector resolves once the engine has resumed the thread. Every walk
reads the capture; a page it lacks is read live and counted. A goroutine whose creator
chain is not known yet (its parent's stack must be walked as it is now) is walked at once,
with the thread still stopped (`PendingWalk.deferrable` False). `__call__` is capture and
resolve in one.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from tracer.attribution.appcode import package_of
from tracer.attribution.creator import CreatorChain, from_creator
from tracer.attribution.frames import EXEC_SYSCALLS, StackAttribution, attribute_stack
from tracer.attribution.modules import MapsRegistry
from tracer.attribution.policy import FAST_FRAMES, MAX_KEYS, PathKey, site_key
from tracer.attribution.state import AttributorStats, ProcessState, no_memory
from tracer.attribution.symbolize import Symbolizer
from tracer.trace.model import Attribution, Frame, Via
from tracer.unwind.capture import NO_HINT, Capture, take_capture
from tracer.unwind.stack import MemoryError_, PagedReader, Reader, Stack, word

if TYPE_CHECKING:
    from tracer.engine.base import ProcessMemory, Registers, ThreadView

_LOADER: Final = Attribution(via=Via.LOADER)
# what a goroutine adds to a stack's answer: go_api, user_frame, goroutine, parent_goroutine,
# creator_frame, via_goroutine, no_user_frame, origin
_Goroutine = tuple[str | None, Frame | None, int | None, int | None, Frame | None, bool,
                   str | None, str | None]


class Attributor:
    """The loop's attributor hook. One instance serves every traced process."""

    def __init__(self, registry: MapsRegistry | None = None) -> None:
        self.registry = registry or MapsRegistry()
        self.symbolizer = Symbolizer()
        self._stats = AttributorStats()
        self.creators = CreatorChain(self.symbolizer, self._stats)
        self._procs: dict[int, ProcessState] = {}
        self._memo: dict[tuple[int, tuple[int, ...], str, bool], StackAttribution] = {}
        self._last_pcs: tuple[int, ...] = ()
        self.keep_all = False  # True: walk every access (no keep-policy)
        self._dropped_clears = 0  # keep-policy clears of processes gone (see `epoch`)

    @property
    def stats(self) -> AttributorStats:
        """What the attributor did; assigning new counters (tests, the bench) resets them."""
        return self._stats

    @stats.setter
    def stats(self, value: AttributorStats) -> None:
        self._stats = self.creators.stats = value

    @property
    def epoch(self) -> int:
        """Grows whenever a keep-policy table was cleared at its bound: what `wants_walk`
        and `reuse` answered for paths not accessed since may change then, so the
        collector forgets the repeats it let the engine count alone (a process's own
        state goes at its exec and exit, which the collector sees itself)."""
        return self._dropped_clears + sum(st.keep.cleared for st in self._procs.values())

    @property
    def calls(self) -> int:
        return self.stats.calls

    @property
    def seconds(self) -> float:
        return self.stats.seconds

    # --- the hook -----------------------------------------------------------------------
    def __call__(self, view: ThreadView, draft: Any) -> Attribution | None:
        """The hook: registers and memory come from the engine's `view` of the thread."""
        got = self.capture(view, draft)
        return got.resolve(False) if isinstance(got, PendingWalk) else got

    def capture(self, view: ThreadView, draft: Any) -> Attribution | PendingWalk | None:
        """What must be done while the thread is stopped: the keep-policy's answer when
        it needs no registers, else the thread's capture, to be walked by
        `PendingWalk.resolve` (after the thread was resumed when `deferrable`)."""
        t0 = time.perf_counter()
        if not self.keep_all:
            sampled = self._sampled(view.pid, draft)
            if sampled is not None:
                self.stats.calls += 1
                self.stats.reused += 1
                self.stats.seconds += time.perf_counter() - t0
                return sampled
        regs = view.regs()
        if regs is None:
            return None  # thread gone, or the engine has no registers for it
        st = self._state(view.pid)
        memory = _memory_of(view)
        tid = view.tid
        if getattr(draft, "loader_phase", False):
            # ld.so: no walk (or a short one for the keep-policy): nothing worth capturing
            cap = None
        else:
            # the module map knows the syscall's PC while /proc/PID/maps can be read: the
            # process may be gone when the walk runs (a miss re-reads the maps then)
            st.maps.epoch += 1
            st.maps.module_for(int(regs.rip))
            cap = take_capture(regs, memory.read, memory.read_pages, st.unwinder.runtime(),
                               st.hints.get(tid, NO_HINT), getattr(memory, "pid", None))
            if len(st.hints) >= MAX_KEYS:
                st.hints.clear()
            st.hints[tid] = cap.hint
            self.stats.captures += 1
            self.stats.capture_calls += cap.reader.calls
        walked: Registers = regs if cap is None else cap.regs
        job = PendingWalk(self, st, tid, cap, walked, draft, memory, view.regs_of)
        job.deferrable = cap is not None and self._creator_known(st, cap)
        self.stats.seconds += time.perf_counter() - t0
        return job

    def wants_walk(self, pid: int, draft: Any) -> bool:
        """The keep-policy without registers (notify engine): does this access need a
        stop for a walk? (`KeepPolicy.wants_walk`; True in a process not seen yet.)"""
        st = self._procs.get(pid)
        return st is None or st.keep.wants_walk(draft)

    def reuse(self, pid: int, draft: Any) -> Attribution | None:
        """The attribution an access let run without a walk carries (`KeepPolicy.reuse`)."""
        st = self._procs.get(pid)
        if st is None:
            return None
        self.stats.calls += 1
        self.stats.reused += 1
        return st.keep.reuse(draft)

    def on_exec(self, pid: int, tid: int, exe: str) -> None:
        """A new image: what was known of the process is dropped."""
        self._drop(pid)

    def on_exit(self, pid: int) -> None:
        """The process is gone: what was known of it is dropped."""
        self._drop(pid)

    # --- the keep-policy --------------------------------------------------------------------
    def _sampled(self, pid: int, draft: Any) -> Attribution | None:
        st = self._procs.get(pid)
        return st.keep.sampled(draft) if st is not None else None

    def _creator_known(self, st: ProcessState, cap: Capture) -> bool:
        """Whether a walk of the captured thread can wait until it runs on: its goroutine
        (from the capture alone) needs no creator chain, or has one cached. A creator's
        parent must be walked as it is while this thread waits (it may move on once this
        thread returns), so such an access is walked at once."""
        rt = st.unwinder.runtime()
        if rt is None:
            return True  # no Go runtime: no goroutine, no creator
        peek, lay = cap.reader.peek, rt.layout
        g = peek(cap.regs.fs_base + rt.tls_g_offset) if cap.regs.fs_base else None
        if not g:
            return False  # a thread without a g (yet): the walk may still find one
        m = peek(g + lay.g_m)
        if m and peek(m + lay.m_g0) == g:
            g = peek(m + lay.m_curg)
            if not g:
                return True  # runtime work on g0 with no user goroutine
        goid, gopc = peek(g + lay.g_goid), peek(g + lay.g_gopc)
        if goid is None or gopc is None:
            return False
        if not gopc or (g, goid) in st.creators.parents:
            return True
        frame = self.creators.go_statement(st, gopc)
        return frame is None or package_of(frame.function or "") == "runtime"

    def _bind(self, st: ProcessState, memory: ProcessMemory,
              regs_of: Any) -> ProcessState:
        """The process's state, reading its memory live through `memory` (what the
        capture lacks, other goroutines) and other threads' registers through `regs_of`."""
        st.read, st.read_pages = memory.read, memory.read_pages
        st.regs_of = regs_of
        return st

    def _kept(self, st: ProcessState, tid: int, regs: Registers, draft: Any,
              reader: PagedReader | None = None) -> Attribution:
        """A walked answer, or the keep-policy's earlier one for an access of a path."""
        syscall = str(getattr(draft, "syscall", ""))
        loader_phase = bool(getattr(draft, "loader_phase", False))
        path = getattr(draft, "path", None)
        if self.keep_all or not isinstance(path, str):
            return self.attribute(st.pid, regs, syscall, loader_phase=loader_phase, tid=tid,
                                  reader=reader)
        found = self._keep(st, tid, regs, (syscall, path), loader_phase, reader)
        st.keep.remember_site(site_key(draft), found)
        return found

    def _keep(self, st: ProcessState, tid: int, regs: Registers, key: PathKey,
              loader_phase: bool, reader: PagedReader | None = None) -> Attribution:
        """A full walk, or the Attribution of an earlier access with the same (syscall,
        path, fast key)."""
        earlier = st.keep.earlier(key, lambda: self._first_pcs(st, regs, reader))
        if earlier is not None:
            self.stats.reused += 1
            return earlier
        attribution = self.attribute(st.pid, regs, key[0], loader_phase=loader_phase, tid=tid,
                                     reader=reader)
        st.keep.remember(key, attribution, self._last_pcs)
        return attribution

    @staticmethod
    def _first_pcs(st: ProcessState, regs: Registers,
                   reader: PagedReader | None = None) -> tuple[int, ...]:
        """The fast key's PCs: a walk of FAST_FRAMES frames."""
        st.maps.epoch += 1
        read: Reader = reader if reader is not None else PagedReader(st.read)
        short = st.unwinder.unwind(regs, read, max_frames=FAST_FRAMES)
        return tuple(f.pc for f in short.frames)

    # --- per-process state --------------------------------------------------------------
    def _drop(self, pid: int) -> None:
        self.registry.forget(pid)
        st = self._procs.pop(pid, None)
        if st is not None:
            self._dropped_clears += st.keep.cleared
        for key in [k for k in self._memo if k[0] == pid]:
            del self._memo[key]

    def _state(self, pid: int) -> ProcessState:
        st = self._procs.get(pid)
        if st is None:
            st = ProcessState(pid, self.registry.for_pid(pid), no_memory)
            self._procs[pid] = st
        return st

    # --- the work -----------------------------------------------------------------------
    def attribute(self, pid: int, regs: Registers, syscall: str, *,
                  loader_phase: bool = False, tid: int | None = None,
                  reader: PagedReader | None = None) -> Attribution:
        """Attribution for thread registers `regs` of process `pid`, stopped at `syscall`;
        memory from `reader` (a capture) or, without one, read live with a prefetch of
        the pages this thread's previous walk touched."""
        st = self._state(pid)
        st.maps.epoch += 1
        read = reader
        if read is None:
            read = PagedReader(st.read, st.read_pages)
            if tid is not None:
                read.prefetch(st.pages.get(tid, []))
        st.tid, st.creators.stopped = tid, None
        try:
            return self._attribute(st, read, regs, syscall, loader_phase)
        finally:
            st.creators.stopped = None
            if tid is not None and reader is None:
                st.pages[tid] = read.touched

    def _attribute(self, st: ProcessState, read: PagedReader, regs: Registers, syscall: str,
                   loader_phase: bool) -> Attribution:
        if loader_phase and syscall not in EXEC_SYSCALLS:
            # ld.so before the program's entry point: nothing of the program's code is on
            # the stack, so skip the unwind (it would load ld.so's CFI for every program).
            self.stats.loader += 1
            return _LOADER
        stack = st.unwinder.unwind(regs, read)
        self._last_pcs = tuple(f.pc for f in stack.frames)
        self.stats.walks += 1
        analysis = self._analysed(st, stack, syscall, loader_phase)
        return self._with_goroutine(st, read, regs, stack, analysis)

    def _analysed(self, st: ProcessState, stack: Stack, syscall: str,
                  loader_phase: bool) -> StackAttribution:
        """What the stack's frames say, memoised per (pid, PC chain, syscall, phase)."""
        key = (st.pid, self._last_pcs, syscall, loader_phase)
        analysis = self._memo.get(key)
        if analysis is None:
            self.stats.memo_misses += 1
            analysis = attribute_stack(st, self.symbolizer, stack, syscall, loader_phase)
            self._memo[key] = analysis
        else:
            self.stats.memo_hits += 1
        return analysis

    def _with_goroutine(self, st: ProcessState, read: PagedReader, regs: Registers,
                        stack: Stack, analysis: StackAttribution) -> Attribution:
        """The stack's answer with the goroutine's id and, for one a `go` statement started,
        its creator; the user frame from the creator chain when the stack has none."""
        goroutine = parent = None
        creator: Frame | None = None
        user_frame, go_api = analysis.user_frame, analysis.go_api
        via_goroutine, no_user, origin = False, analysis.no_user_frame, analysis.origin
        ctx = st.unwinder.go_context(read, regs.fs_base)
        if stack.g is not None and ctx is not None:
            try:
                goroutine = word(read, stack.g + ctx.rt.layout.g_goid)
                if analysis.started_by_go:
                    parent, creator, parent_analysis = self.creators.creator(
                        st, read, stack.g, goroutine, regs.fs_base)
                    if user_frame is None:
                        user_frame, go_api, via_goroutine, no_user = from_creator(
                            st, creator, parent_analysis, go_api, no_user)
                    if origin is None and parent_analysis is not None:
                        origin = parent_analysis.origin  # decided by the creator
            except MemoryError_:
                pass
        return _interned(st, analysis, (go_api, user_frame, goroutine, parent, creator,
                                        via_goroutine, no_user, origin))


class _LiveMemory:
    """`ProcessMemory` from a view that has no `process_memory` (test doubles): its own
    readers, valid only while the thread is stopped (such a walk is never deferred)."""

    __slots__ = ("read", "read_pages")

    def __init__(self, view: ThreadView) -> None:
        self.read = view.read
        self.read_pages = view.read_pages


def _memory_of(view: ThreadView) -> ProcessMemory:
    get = getattr(view, "process_memory", None)
    return get() if get is not None else _LiveMemory(view)


class PendingWalk:
    """A captured access waiting for its walk (the `PendingAttribution` of the collector's
    hook seam). `resolve(resumed)` walks it once and returns its Attribution; `misses`
    then counts the pages the walk read live because the capture lacked them."""

    __slots__ = ("attributor", "cap", "deferrable", "draft", "memory", "misses", "regs",
                 "regs_of", "st", "tid")

    def __init__(self, attributor: Attributor, st: ProcessState, tid: int,
                 cap: Capture | None, regs: Registers, draft: Any, memory: ProcessMemory,
                 regs_of: Any) -> None:
        self.attributor = attributor
        self.st = st
        self.tid = tid
        self.cap = cap
        self.regs = regs
        self.draft = draft
        self.memory = memory
        self.regs_of = regs_of
        self.deferrable = False  # True: may be resolved after the thread was resumed
        self.misses = 0

    def resolve(self, resumed: bool) -> Attribution | None:
        """Walk and symbolize (once). `resumed`: the thread runs on now, so a page read
        live may have changed since the stop (counted apart)."""
        att = self.attributor
        stats = att.stats
        t0 = time.perf_counter()
        st = att._bind(self.st, self.memory, self.regs_of)  # noqa: SLF001 - its own job
        reader = self.cap.reader if self.cap is not None else None
        try:
            return att._kept(st, self.tid, self.regs, self.draft, reader)  # noqa: SLF001
        finally:
            if reader is not None:
                self.misses = reader.misses
                if resumed:
                    stats.deferred += 1
                    stats.capture_misses += reader.misses
                else:
                    stats.capture_misses_stopped += reader.misses
            stats.calls += 1
            stats.seconds += time.perf_counter() - t0


def _interned(st: ProcessState, analysis: StackAttribution, g: _Goroutine) -> Attribution:
    """One object per distinct answer in a process, so the loop can record `same_as`."""
    ikey = (id(analysis), *g)
    found = st.interned.get(ikey)
    if found is None:
        go_api, user_frame, goroutine, parent, creator, via_goroutine, no_user, origin = g
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
