"""Who started a goroutine, and what the creator's own stack says.

For a goroutine started by a `go` statement the attribution names `parent_goroutine` and
`creator_frame` (g.parentGoid, g.gopc). When such a goroutine has no application frame
(net's lookup helper goroutine in doBlockingWithCtx, a library's worker goroutine), the
creator chain gives it: the `go` statement itself when it is application code, else the
creator goroutine, found in `runtime.allgs` (on Go 1.19-1.20, which record no parent, by
tracer/attribution/parent_search.py), whose parked stack is walked (or, running on a thread
in a ptrace-stop, that thread's stack; recursively, up to MAX_PARENT_DEPTH);
`via_goroutine` then says the user frame is the creator's.

A creator still running (on another thread, e.g. between its `go` statement and the wait
that parks it) has no saved context to walk. When its thread is in a ptrace-stop (a signal
such as the scheduler's SIGURG, a clone event, a syscall of its own) it waits for this
tracer: its stack is walked from that thread's registers, at once. When it really runs,
look again, PARK_WAIT seconds apart (doubling up to MAX_WAIT), for at most PARK_TIMEOUT
seconds, before giving up; once per goroutine (later accesses look without waiting). The
traced thread stays stopped meanwhile; on a loaded host the creator may wait for a CPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, NamedTuple

from tracer.attribution.appcode import goroutine_note, package_of
from tracer.attribution.frames import StackAttribution, attribute_stack
from tracer.attribution.goroutines import RUNNING, allgs, resume_point, status
from tracer.attribution.parent_search import Search, find_creator
from tracer.attribution.symbolize import Symbolizer
from tracer.errors import CgotraceError
from tracer.trace.model import Frame
from tracer.unwind.stack import GoContext, MemoryError_, PagedReader, RawFrame, Reader, Stack, word

if TYPE_CHECKING:
    from tracer.attribution.state import AttributorStats, ProcessState
    from tracer.unwind.goruntime import RuntimeLayout

PARK_WAIT: Final = 0.0005
MAX_WAIT: Final = 0.008
PARK_TIMEOUT: Final = 0.5  # a loaded 2-CPU host was seen to need more than 0.1 s
MAX_PARENT_DEPTH: Final = 4
MAX_ALLGS: Final = 100_000


class Creator(NamedTuple):
    """The parent goroutine's id, the `go` statement's frame, and what the parent's stack
    says (each None when not known)."""

    parent_goid: int | None
    frame: Frame | None
    parent: StackAttribution | None


NO_CREATOR: Final = Creator(None, None, None)


@dataclass(slots=True)
class CreatorMemory:
    """The creator chain's tables for one process."""

    goids: dict[int, int] = field(default_factory=dict)  # goid -> g address (from allgs)
    parents: dict[tuple[int, int], Creator] = field(default_factory=dict)  # (g, goid) ->
    stopped: dict[int, Stack] | None = None  # this stop: g -> stack (other threads)
    gave_up: set[tuple[int, int]] = field(default_factory=set)  # (g, goid) polled in vain
    statements: dict[int, Frame] = field(default_factory=dict)  # gopc -> its `go` frame


class _Backoff:
    """Sleeps PARK_WAIT, doubling up to MAX_WAIT; expired PARK_TIMEOUT after it was made."""

    def __init__(self) -> None:
        self.wait = PARK_WAIT
        self.deadline = time.monotonic() + PARK_TIMEOUT

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def sleep(self) -> None:
        time.sleep(self.wait)
        self.wait = min(2 * self.wait, MAX_WAIT)


def _fresh_reader(st: ProcessState) -> PagedReader:
    """After a wait the cached pages of this stop are stale: read anew."""
    st.creators.stopped = None
    return PagedReader(st.read)


class CreatorChain:
    """Follows a goroutine's creators; counts its waits and misses in `stats`."""

    def __init__(self, symbolizer: Symbolizer, stats: AttributorStats) -> None:
        self.symbolizer = symbolizer
        self.stats = stats

    def creator(self, st: ProcessState, read: Reader, g: int, goid: int, fs_base: int,
                depth: int = 0) -> Creator:
        """The creator of goroutine g (whose id is `goid`)."""
        cached = st.creators.parents.get((g, goid))
        if cached is not None:
            return cached
        ctx = st.unwinder.go_context(read, fs_base)
        if ctx is None:
            return NO_CREATOR
        lay = ctx.rt.layout
        gopc = word(read, g + lay.g_gopc)
        parent_goid = _recorded_parent(read, g, lay)
        frame = self.go_statement(st, gopc)
        if frame is None or package_of(frame.function or "") == "runtime":
            # runtime.main's goroutine (created by rt0_go) and runtime-internal workers
            return NO_CREATOR
        if lay.g_parent_goid is None and depth < MAX_PARENT_DEPTH:
            parent_goid, read = self._search_parent(st, ctx, read, fs_base, gopc, g, goid)
        parent = None
        if parent_goid is not None and depth < MAX_PARENT_DEPTH:
            parent = self._parent_analysis(st, read, parent_goid, fs_base, depth)
        return _remember(st, (g, goid), Creator(parent_goid, frame, parent))

    def go_statement(self, st: ProcessState, gopc: int) -> Frame | None:
        """The named frame of the `go` statement at `gopc` (None when unnamed); named
        once per PC for the process's image."""
        if not gopc:
            return None
        known = st.creators.statements
        frame = known.get(gopc)
        if frame is None:
            frame = self._name_go_statement(st, gopc)
            if frame is not None:  # unnamed: a module not mapped yet may name it later
                if len(known) >= MAX_ALLGS:
                    known.clear()
                known[gopc] = frame
        return frame

    def _name_go_statement(self, st: ProcessState, gopc: int) -> Frame | None:
        names = self.symbolizer.name(RawFrame(gopc, st.maps.module_for(gopc), "go", True))
        return names[0].frame if names and names[0].frame.function else None

    def _search_parent(self, st: ProcessState, ctx: GoContext, read: Reader, fs_base: int,
                       gopc: int, g: int, goid: int) -> tuple[int | None, Reader]:
        """Go 1.19-1.20 (no g.parentGoid): the parent's goid, found by the function it is in
        (tracer/attribution/parent_search.py), and the reader to go on with (fresh after a
        poll). A miss while some goroutine runs unseen may be a creator not parked yet:
        looked for again as PARK_WAIT/PARK_TIMEOUT say."""
        def search(rd: Reader) -> Search:
            running = {k: [f.pc - f.is_return for f in v.frames]
                       for k, v in self._stopped_goroutines(st, rd).items()}
            return find_creator(st.unwinder, ctx, rd, fs_base, gopc, exclude=g,
                                running=running)

        found = search(read)
        if found.g is None and found.unseen and (g, goid) not in st.creators.gave_up:
            found, read = self._poll_search(st, search, found, read, (g, goid))
        if found.g is None:
            return None, read
        if st.creators.stopped and found.g in st.creators.stopped:
            self.stats.creator_stopped += 1
        parent_goid = word(read, found.g + ctx.rt.layout.g_goid)
        st.creators.goids[parent_goid] = found.g
        return parent_goid, read

    def _poll_search(self, st: ProcessState, search: Callable[[Reader], Search],
                     found: Search, read: Reader, key: tuple[int, int]
                     ) -> tuple[Search, Reader]:
        """Searches again until the parent is found, every goroutine is seen, or time is up."""
        self.stats.creator_waits += 1
        poll = _Backoff()
        while found.g is None and found.unseen and not poll.expired():
            poll.sleep()
            read = _fresh_reader(st)
            found = search(read)
        if found.g is None:
            self.stats.creator_misses += 1
            st.creators.gave_up.add(key)
        return found, read

    def _stopped_goroutines(self, st: ProcessState, read: Reader) -> dict[int, Stack]:
        """The goroutines running on the other threads of this process that are in a
        ptrace-stop now (they wait for this tracer, so waiting for them to park is in vain):
        g -> its stack, walked from the thread's registers. Once per stop."""
        if st.creators.stopped is not None:
            return st.creators.stopped
        stopped: dict[int, Stack] = {}
        st.creators.stopped = stopped
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{st.pid}/task")]
        except (OSError, ValueError):
            return stopped
        for tid in tids:
            stack = _stopped_thread_stack(st, tid, read) if tid != st.tid else None
            if stack is not None and stack.g is not None:
                stopped[stack.g] = stack
        return stopped

    def _parent_analysis(self, st: ProcessState, read: Reader, goid: int, fs_base: int,
                         depth: int) -> StackAttribution | None:
        """What the stack of goroutine `goid` says; when it has no application frame, with
        the user frame its own creator chain gives."""
        ctx = st.unwinder.go_context(read, fs_base)
        if ctx is None:
            return None
        g = self._find_g(st, read, goid, fs_base)
        if g is None:
            return None
        stack, read = self._parent_stack(st, ctx, read, g, goid, fs_base)
        if stack is None:
            return None
        analysis = attribute_stack(st, self.symbolizer, stack, "", False)
        if analysis.user_frame is None and analysis.started_by_go:
            grand = self.creator(st, read, g, goid, fs_base, depth + 1)
            return _through_creator(st, analysis, grand)
        return analysis

    def _parent_stack(self, st: ProcessState, ctx: GoContext, read: Reader, g: int, goid: int,
                      fs_base: int) -> tuple[Stack | None, Reader]:
        """The creator's stack: from its saved context when parked; from its thread's
        registers when it runs on a thread in a ptrace-stop; else polled until it parks
        (once per goroutine, see PARK_TIMEOUT). And the reader to go on with."""
        lay = ctx.rt.layout
        g_status = status(read, g, lay)
        if g_status in RUNNING:
            stack, read, g_status = self._until_parked(st, read, g, goid, lay, g_status)
            if g_status in RUNNING:
                return stack, read
        resume = resume_point(read, g, lay, g_status)
        if resume is None:  # dead, or a status this tracer does not know
            self.stats.creator_misses += 1
            return None, read
        pc, sp = resume
        return st.unwinder.unwind_goroutine(pc, sp, read, fs_base), read

    def _until_parked(self, st: ProcessState, read: Reader, g: int, goid: int,
                      lay: RuntimeLayout, g_status: int) -> tuple[Stack | None, Reader, int]:
        """For a running creator: its stack from its stopped thread (status still running),
        or None (gave up, status still running), or its status once it no longer runs."""
        # A running g's g.sched is no evidence: asmcgocall saves it and does not clear it on
        # return, so after any cgo call it holds a stale context (systemstack's is cleared).
        # A running creator is walked only from its stopped thread's registers (on the
        # system stack, the unwinder goes on from g.sched, then valid), or polled.
        poll = _Backoff()
        polled = False
        while g_status in RUNNING:
            stopped = self._stopped_goroutines(st, read).get(g)
            if stopped is not None and stopped.end == "root":  # else: wait for it to park
                self.stats.creator_stopped += 1
                return stopped, read, g_status
            if (g, goid) in st.creators.gave_up or poll.expired():
                self.stats.creator_misses += 1  # still running on another thread
                st.creators.gave_up.add((g, goid))
                return None, read, g_status
            if not polled:
                self.stats.creator_waits += 1
                polled = True
            poll.sleep()
            read = _fresh_reader(st)
            g_status = status(read, g, lay)
        return None, read, g_status

    def _find_g(self, st: ProcessState, read: Reader, goid: int, fs_base: int) -> int | None:
        """The address of goroutine `goid`'s g (cached; the cache is checked before use)."""
        ctx = st.unwinder.go_context(read, fs_base)
        if ctx is None or ctx.rt.allgs is None:
            return None
        goids = st.creators.goids
        g = goids.get(goid)
        # A dead goroutine's g is reused for a new goroutine with a new goid: check first.
        if g is not None and word(read, g + ctx.rt.layout.g_goid) == goid:
            return g
        goids.clear()
        for gp in allgs(ctx, read, MAX_ALLGS):
            try:
                goids[word(read, gp + ctx.rt.layout.g_goid)] = gp
            except MemoryError_:
                continue
        return goids.get(goid)


def _recorded_parent(read: Reader, g: int, lay: RuntimeLayout) -> int | None:
    """g.parentGoid (Go 1.21+; None before, or when 0)."""
    if lay.g_parent_goid is None:
        return None
    return word(read, g + lay.g_parent_goid) or None


def _remember(st: ProcessState, key: tuple[int, int], found: Creator) -> Creator:
    # A miss may be a busy parent: looked for again at the goroutine's next access.
    busy = key in st.creators.gave_up or (found.parent_goid is not None
                                          and found.parent is None)
    if not busy:
        st.creators.parents[key] = found
    return found


def _stopped_thread_stack(st: ProcessState, tid: int, read: Reader) -> Stack | None:
    """The stack of thread `tid` walked from its registers; None when it is not in a
    ptrace-stop (running, or gone) or its walk fails."""
    regs = st.regs_of(tid)
    if regs is None:
        return None
    try:
        return st.unwinder.unwind(regs, read)
    except (MemoryError_, CgotraceError):
        return None


def _through_creator(st: ProcessState, analysis: StackAttribution, grand: Creator
                     ) -> StackAttribution | None:
    """A creator's analysis without an application frame, completed by its own creator
    (None when that gives no user frame either)."""
    user_frame, go_api, via_goroutine, _note = from_creator(
        st, grand.frame, grand.parent, analysis.go_api, None)
    if user_frame is None:
        return None
    origin = analysis.origin or (grand.parent.origin if grand.parent else None)
    return replace(analysis, user_frame=user_frame, go_api=go_api,
                   via_goroutine=via_goroutine, origin=origin)


def from_creator(st: ProcessState, creator: Frame | None, parent: StackAttribution | None,
                 go_api: str | None, no_user: str | None
                 ) -> tuple[Frame | None, str | None, bool, str | None]:
    """(user_frame, go_api, via_goroutine, no_user_frame) for a goroutine without an
    application frame: the `go` statement when it is application code, else the creator
    goroutine's user frame and API, else a note naming the creator."""
    if creator is not None and st.app_code().is_app(creator):
        return creator, go_api, True, None
    if parent is not None and parent.user_frame is not None:
        return parent.user_frame, parent.go_api or go_api, True, None
    # no application frame anywhere: the creator's API is what the application called (a
    # helper goroutine's own go_api is an internal closure such as doBlockingWithCtx.func1),
    # when the creator's walk reached its goroutine's root (a cut walk names no API)
    whole = parent is not None and parent.started_by_go and parent.go_api
    api = parent.go_api if whole and parent is not None else go_api
    return None, api, False, no_user or goroutine_note(creator)
