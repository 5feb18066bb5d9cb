"""The engine-agnostic collector: engine events in, `Access` and `ProcessEvent` records out.

Written once for every engine (docs/architecture.md, "Seams" 1). It never issues a
ptrace request: registers and memory come from the `ThreadView` the engine hands in.

What it does per event:

- entry: decode the call (`EntryDecoder`, one memory read per string), classify it (loader
  phase = the syscall PC lies in the interpreter's mappings read at exec), ask the
  attributor, and keep the draft pending until `on_result`. With a view that has no full
  view (`view.full` False: a seccomp notification not upgraded) it first decides whether
  the call needs one (`Want.FULL`: exec, connect, writing opens, the first sighting and
  every power-of-two repeat of a (pid, syscall, path, flags) key, a walk the attributor's
  keep-policy asks for); otherwise the access is recorded unobserved (`observed=False`)
  with the result last observed for that key (`result_of` names that access).
- result: a restart errno drops the draft (the restarted call is reported by its own
  entry); otherwise the access is emitted. Identical attributions (one object per distinct
  answer, interned by the attributor) become `same_as` the first access that carried them.
- repeats (with `on_repeats`): a call identical to the latest access of its fold key
  (pid, tid, syscall, path, flags, syscall PC) in result, kind, hidden and attribution
  is not a new record but a count on that access (`Access.repeats`), reported through
  `on_repeats` as the run goes (every FLUSH_INTERVAL seconds, when the fold key gets a new
  access, and at the end). With an engine's `RepeatTable` (the native core) the
  collector arms each call it just folded that ran without a stop, so that the engine
  counts its next repetitions alone; it disarms them on whatever could make the next
  repetition differ (a new access or a walk on the same path, exec, exit, a table bound).
- spawn: track the new task; fork/vfork are process events.
- exec: re-key a non-leader exec to the leader's tid, flush the process's other threads
  (killed by the exec) with result "unknown", read the new image's mappings for the
  interpreter and emit the synthesised PT_INTERP record right after the execve's own.
- exit: flush a thread's pending access; the leader's report ends the process, and the
  launched pid's status is the run's.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from tracer.engine.base import RepeatCounts, RepeatTable, ThreadView, Want
from tracer.process.maps import interpreter_ranges, tgid
from tracer.recording.classify import Classifier
from tracer.recording.entry import AccessDraft, EntryDecoder
from tracer.syscalls.decode import RESTART_ERRNOS, result_name
from tracer.syscalls.table import AUDIT_ARCH_X86_64, x86_64_table
from tracer.trace.model import (
    Access,
    AccessKind,
    Attribution,
    ExitStatus,
    ProcessEvent,
    Repeats,
    Via,
)

if TYPE_CHECKING:
    pass

__all__ = ["AccessDraft", "AttributionHook", "CollectorStats", "EventCollector",
           "PendingAttribution", "exit_status"]

MAX_SHARED_ATTRIBUTIONS = 65_536  # bound on the same_as table (cleared when full)
_LAUNCH_EXEC = Attribution(via=Via.EXEC)  # the launched program's exec: no stack of ours
MAX_KEYS = 262_144  # bound on the per-key result table (cleared when full)
MAX_FOLDS = 262_144  # bound on the fold table (flushed and cleared when full)
FLUSH_INTERVAL = 0.5  # seconds of trace time between two reports of pending repeats
_O_WRITE = 0o1 | 0o2 | 0o100  # O_WRONLY | O_RDWR | O_CREAT


class PendingAttribution(Protocol):
    """An access captured at its stop whose walk is still to run (`AttributionHook.capture`)."""

    deferrable: bool  # True: may run after the engine resumed the thread
    misses: int  # after resolve: pages the walk read live (the capture lacked them)

    def resolve(self, resumed: bool) -> Attribution | None:
        """Walk and symbolize; `resumed`: the thread runs on meanwhile."""
        ...


class AttributionHook(Protocol):
    """What the collector asks of attribution (tracer/attribution implements it): name the
    Go code behind an access; registers and memory come from `view`."""

    def __call__(self, view: ThreadView, draft: AccessDraft) -> Attribution | None: ...

    # Optional (the collector calls `__call__` when a hook lacks it):
    # def capture(self, view, draft) -> Attribution | PendingAttribution | None
    # what must happen while the thread is stopped; a PendingAttribution is resolved by
    # the collector, after the engine resumed the thread when it is `deferrable`.

    def wants_walk(self, pid: int, draft: AccessDraft) -> bool:
        """Keep-policy without registers (notify): does this access need a stack walk?"""
        ...

    def reuse(self, pid: int, draft: AccessDraft) -> Attribution | None:
        """The attribution an access that is not walked carries (None if none yet)."""
        ...

    def on_exec(self, pid: int, tid: int, exe: str) -> None: ...

    def on_exit(self, pid: int) -> None: ...


class CollectorStats:
    __slots__ = ("accesses", "attributor_errors", "capture_misses", "deferred", "lost",
                 "native_repeats", "repeats", "stops", "unobserved", "upgrades")

    def __init__(self) -> None:
        self.stops = 0  # kernel reports handled (ptrace stops + notifications; engines add)
        self.accesses = 0  # calls recorded: access records + the repeats folded into them
        self.repeats = 0  # calls folded into an earlier access (no record of their own)
        self.native_repeats = 0  # of those, counted by the engine's RepeatTable alone
        self.lost = 0  # accesses flushed with result "unknown"
        self.unobserved = 0  # accesses let run without a stop (result not seen)
        self.upgrades = 0  # entries answered Want.FULL without a full view
        self.attributor_errors = 0
        self.deferred = 0  # walks run after the engine resumed the thread (`run_deferred`)
        self.capture_misses = 0  # pages those walks read live: not in the capture


def exit_status(status: int, fault: tuple[int, int, int] | None = None) -> ExitStatus:
    """ExitStatus from a waitpid status (and the last fault signal of that process)."""
    import signal

    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name: str | None = signal.Signals(sig).name
        except ValueError:
            name = f"SIG{sig}"
        addr = fault[2] if fault is not None and fault[1] == sig else None
        return ExitStatus(signal=sig, signal_name=name, core_dumped=os.WCOREDUMP(status),
                          fault_address=addr)
    return ExitStatus(code=os.WEXITSTATUS(status))


def _pow2(n: int) -> bool:
    return not n & (n - 1)


def _discard(index: dict[Any, set[int]], key: Any, handle: int) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(handle)
        if not group:
            del index[key]


class _Fold:
    """The latest access of a fold key and the identical calls counted onto it since."""

    __slots__ = ("access", "count", "fid", "first", "flushed", "flushed_unobserved", "last",
                 "unobserved")

    def __init__(self, access: Access) -> None:
        self.access = access
        self.count = 0
        self.unobserved = 0
        self.first = 0.0
        self.last = 0.0
        self.flushed = 0
        self.flushed_unobserved = 0
        self.fid = -1  # its id in the engine's RepeatTable, once armed

    def same(self, result: str, kind: AccessKind, hidden: bool,
             attribution: Attribution | None, draft: AccessDraft) -> bool:
        """Would a call with these answers be this access again?"""
        a = self.access
        return (a.result == result and a.kind is kind and a.hidden == hidden
                and (a.attribution is attribution or a.attribution == attribution)
                and a.argv == draft.argv and a.family == draft.family)

    def add(self, n: int, unobserved: int, first: float, last: float) -> None:
        if not self.count:
            self.first = first
        self.count += n
        self.unobserved += unobserved
        self.last = last


class EventCollector:
    """The `Collector` (tracer/engine/base.py) every engine drives.

    `on_access(Access)` and `on_event(ProcessEvent)` receive records as they complete.
    """

    def __init__(self, *, on_access: Callable[[Access], None],
                 on_event: Callable[[ProcessEvent], None] | None = None,
                 classifier: Classifier | None = None,
                 decoder: EntryDecoder | None = None,
                 attributor: AttributionHook | None = None,
                 interpreter_of: Callable[[str], str | None] | None = None,
                 on_repeats: Callable[[Access, Repeats, Repeats], None] | None = None,
                 debug: bool = False) -> None:
        self.main_pid = 0
        self.tid2pid: dict[int, int] = {}
        self.pending: dict[int, AccessDraft] = {}
        # tid -> the draft of a call answered Want.FULL from a view without registers: the
        # engine's full view of the same call (the upgrade) finishes it, not a new decode
        self._upgrading: dict[int, AccessDraft] = {}
        self.loader: dict[int, tuple[tuple[int, int], ...]] = {}
        self.exe: dict[int, str] = {}
        self.fault: dict[int, tuple[int, int, int]] = {}
        self.status: ExitStatus | None = None
        self.stats = CollectorStats()
        self._on_access = on_access
        self._on_event = on_event or (lambda e: None)
        self._classifier = classifier or Classifier()
        self._decoder = decoder or EntryDecoder()
        self._attributor = attributor
        self._interpreter_of = interpreter_of
        self._main_exec_done = False
        self._interp_after_exec: dict[int, tuple[int, str, str | None]] = {}
        self._seq = 0
        self._attributed: dict[int, tuple[Attribution, int]] = {}  # id -> (it, first seq)
        # (pid, syscall, path, flags) -> [times seen, seq of the record holding the last
        # observed call, its result, rval, RepeatTable slot or -1]
        self._keys: dict[tuple[int, str, str, str | None], list[Any]] = {}
        # on_repeats(access, totals, added): calls folded into `access` (None: no folding)
        self._on_repeats = on_repeats
        # pid -> fold key (pid, tid, syscall, path, flags, PC) -> its fold; a process's
        # folds end at its exec and exit (a new image's calls are records of their own)
        self._folds: dict[int, dict[tuple[int, int, str, str, str | None, int], _Fold]] = {}
        self._nfolds = 0
        self._dirty: dict[int, _Fold] = {}  # seq -> fold with calls not reported yet
        self._flushed_at = 0.0
        self._table: RepeatTable | None = None
        self._fids: dict[int, _Fold] = {}  # RepeatTable fold id -> fold
        self._next_fid = 0
        self._slots: dict[int, list[Any]] = {}  # RepeatTable slot -> self._keys entry
        self._armed: dict[int, tuple[int, int, str]] = {}  # handle -> (pid, tid, path)
        self._armed_paths: dict[tuple[int, str], set[int]] = {}
        self._armed_tids: dict[int, set[int]] = {}
        self._epoch = getattr(attributor, "epoch", 0)
        # capture now, walk once the thread runs on: the hook's `capture`, if it has one
        self._capture = getattr(attributor, "capture", None)
        self._walks: list[tuple[AccessDraft, PendingAttribution]] = []  # captured, not walked
        # tid -> (draft, rval, observed): results whose draft waits for its walk
        self._results: dict[int, tuple[AccessDraft, int | None, bool]] = {}
        self._native = x86_64_table()
        self._t0 = time.monotonic()
        self._debug = debug

    # -- bookkeeping ---------------------------------------------------------------------
    def start(self, pid: int) -> None:
        self.main_pid = pid
        self.tid2pid[pid] = pid

    def adopt(self, pid: int, exe: str) -> None:
        """A process that was running before the tracer came (attach): its own exec is
        behind it, and its executable's closure decides what is hidden."""
        self.exe[pid] = exe
        self._main_exec_done = True

    @property
    def tracing(self) -> bool:
        return bool(self.tid2pid)

    def pid_of(self, tid: int) -> int:
        pid = self.tid2pid.get(tid)
        if pid is None:
            pid = self.tid2pid[tid] = tgid(tid)
        return pid

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def finish(self) -> ExitStatus:
        if self._walks:
            self._settle()
        for tid in list(self.pending):
            self._flush_unknown(tid)
        self._flush_repeats()
        return self.status or ExitStatus(code=None)

    # -- repeats counted by the engine ------------------------------------------------------
    def use_repeat_table(self, table: RepeatTable) -> bool:
        if self._on_repeats is None:
            return False  # nothing is folded, so nothing could be counted alone
        self._table = table
        return True

    def on_repeated(self, counts: list[RepeatCounts]) -> None:
        if self._walks:
            self._settle()
        t0 = self._t0
        last = 0.0
        for fid, slot, slot_count, n, first_ns, last_ns in counts:
            entry = self._slots.get(slot)
            if entry is not None:
                entry[0] = slot_count
            fold = self._fids.get(fid)
            if fold is None:
                continue
            last = last_ns * 1e-9 - t0
            fold.add(n, n, first_ns * 1e-9 - t0, last)
            self._dirty[fold.access.seq] = fold
            self.stats.accesses += n
            self.stats.repeats += n
            self.stats.native_repeats += n
            self.stats.unobserved += n
        if last - self._flushed_at >= FLUSH_INTERVAL:
            self._flush_repeats()

    def _arm(self, draft: AccessDraft, entry: list[Any], fold: _Fold) -> None:
        """Let the engine count the next repetitions of this call (it just ran unstopped
        and was folded into `fold`; nothing has changed since that could make the next one
        differ)."""
        table = self._table
        if table is None or draft.pid in self.loader or not draft.path.startswith("/"):
            return  # the loader phase may end at any call; relative paths follow the cwd
        slot = entry[4]
        if slot < 0:
            slot = table.new_slot(entry[0])
            if slot < 0:
                return
            entry[4] = slot
            self._slots[slot] = entry
        if fold.fid < 0:
            fold.fid = self._next_fid
            self._next_fid += 1
            self._fids[fold.fid] = fold
        handle = table.arm(draft.tid, draft.nr, draft.args, draft.ip,
                           draft.path.encode("utf-8", "surrogateescape"), slot, fold.fid)
        if handle < 0:
            return
        self._armed[handle] = (draft.pid, draft.tid, draft.path)
        self._armed_paths.setdefault((draft.pid, draft.path), set()).add(handle)
        self._armed_tids.setdefault(draft.tid, set()).add(handle)

    def _disarm(self, handles: set[int] | list[int] | None) -> None:
        table = self._table
        if not handles or table is None:
            return
        for handle in list(handles):
            info = self._armed.pop(handle, None)
            if info is None:
                continue
            table.disarm(handle)
            pid, tid, path = info
            _discard(self._armed_paths, (pid, path), handle)
            _discard(self._armed_tids, tid, handle)

    def _disarm_path(self, pid: int, path: str) -> None:
        if self._armed:
            self._disarm(self._armed_paths.get((pid, path)))

    def _disarm_pid(self, pid: int) -> None:
        if self._armed:
            self._disarm([h for h, info in self._armed.items() if info[0] == pid])

    def _disarm_all(self) -> None:
        """Forget every armed call and slot (a table bound was reached)."""
        if self._table is not None:
            self._table.clear()
        for entry in self._slots.values():
            entry[4] = -1
        self._slots.clear()
        self._armed.clear()
        self._armed_paths.clear()
        self._armed_tids.clear()
        self._fids.clear()
        for folds in self._folds.values():
            for fold in folds.values():
                fold.fid = -1

    def _flush_repeats(self) -> None:
        """Report the calls counted onto each access since its last report."""
        on_repeats = self._on_repeats
        if on_repeats is not None:
            for fold in self._dirty.values():
                self._report(on_repeats, fold)
        self._dirty.clear()
        self._flushed_at = self._now()

    @staticmethod
    def _report(on_repeats: Callable[[Access, Repeats, Repeats], None], fold: _Fold) -> None:
        if fold.count == fold.flushed:
            return
        seq = fold.access.seq
        totals = Repeats(seq, fold.count, fold.unobserved, fold.first, fold.last)
        added = Repeats(seq, fold.count - fold.flushed,
                        fold.unobserved - fold.flushed_unobserved, fold.first, fold.last)
        fold.flushed, fold.flushed_unobserved = fold.count, fold.unobserved
        on_repeats(fold.access, totals, added)

    # -- entries -------------------------------------------------------------------------
    def wants_full(self, tid: int, pid: int, nr: int, args: tuple[int, ...],
                   ip: int) -> Want:
        spec = self._native.get(nr)
        if spec is None:
            return Want.FULL  # not a native watched call: let the full path decide
        if spec.cls in ("exec", "connect"):
            return Want.FULL
        if spec.flag_kind == "open" and spec.flags is not None and args[spec.flags] & _O_WRITE:
            return Want.FULL
        if spec.name == "creat":
            return Want.FULL
        return Want.CONTINUE

    def on_entry(self, view: ThreadView, nr: int, arch: int, args: tuple[int, ...],
                 ip: int, sp: int) -> Want:
        if self._walks:
            self._settle()
        tid = view.tid
        pid = view.pid
        if view.full and self._upgrading:
            stashed = self._upgrading.pop(tid, None)
            if stashed is not None and stashed.nr == nr and stashed.args == args \
                    and stashed.pid == pid:
                stashed.sp = sp
                return self._full_entry(view, stashed, pid, tid)
        draft = self._decoder.decode(view, nr, arch, args, ip, sp, time.monotonic() - self._t0)
        if draft is None:
            return Want.CONTINUE
        ranges = self.loader.get(pid)
        loader_phase = False
        if ranges is not None:
            for lo, hi in ranges:
                if lo <= ip < hi:
                    loader_phase = True
                    break
            else:
                del self.loader[pid]
        draft.loader_phase = loader_phase
        kind = draft.kind = self._classifier.kind(
            draft.cls, draft.path, loader_phase,
            args[draft.flag_arg] if draft.flag_arg is not None else 0)
        attributor = self._attributor
        if not view.full:
            if arch != AUDIT_ARCH_X86_64 or self._needs_full(draft, kind):
                self.stats.upgrades += 1
                self._upgrading[tid] = draft
                self._disarm_path(pid, draft.path)
                return Want.FULL
            if attributor is not None and kind is not AccessKind.RUNTIME:
                try:
                    draft.attribution = attributor.reuse(pid, draft)
                except Exception as e:  # noqa: BLE001 - counted, the access is kept
                    self._attributor_failed(e)
            draft.observed = False
            self.pending[tid] = draft
            return Want.CONTINUE
        return self._full_entry(view, draft, pid, tid)

    def _full_entry(self, view: ThreadView, draft: AccessDraft, pid: int, tid: int) -> Want:
        """A decoded, classified entry with a full view: attribute it, await its result."""
        attributor = self._attributor
        kind = draft.kind
        self._disarm_path(pid, draft.path)  # the walk may change what a repeat would carry
        if attributor is None:
            pass
        elif draft.cls == "exec" and pid == self.main_pid and not self._main_exec_done:
            # Still cgotrace's launcher (its Python child, whose last act after the filter
            # is this execve): its stack is the tracer's, never the program's. The exec
            # gets `via: exec` and no stack.
            draft.attribution = _LAUNCH_EXEC
        elif kind is not AccessKind.RUNTIME:
            try:
                if self._capture is None:
                    draft.attribution = attributor(view, draft)
                else:
                    got = self._capture(view, draft)
                    if isinstance(got, Attribution) or got is None:
                        draft.attribution = got
                    elif got.deferrable:
                        self._walks.append((draft, got))  # walked once the thread runs on
                    else:
                        draft.attribution = got.resolve(False)
            except Exception as e:  # noqa: BLE001 - counted, the access is kept
                self._attributor_failed(e)
            self._check_epoch()
        self.pending[tid] = draft
        return Want.RESULT

    def _check_epoch(self) -> None:
        epoch = getattr(self._attributor, "epoch", 0)
        if epoch != self._epoch:  # a keep-policy table was cleared: forget every arm
            self._epoch = epoch
            self._disarm_all()

    def run_deferred(self) -> None:
        """Seam 1, `Collector.run_deferred`: the walk whose access's result has come, and
        its record, now that the engine resumed the thread. A walk whose result has not
        come yet waits for that result's resume (its thread will stop again at the exit
        first), or for any other collector call."""
        if self._results:
            self._settle()

    def _settle(self) -> None:
        """The walks captured at earlier entries, in entry order, then the records whose
        result came while their walk waited. Every other collector call runs this first,
        so decisions and records come in the same order as with the walk at the stop."""
        walks = self._walks
        while walks:
            draft, job = walks.pop(0)
            try:
                draft.attribution = job.resolve(True)
            except Exception as e:  # noqa: BLE001 - counted, the access is kept
                self._attributor_failed(e)
            self.stats.deferred += 1
            self.stats.capture_misses += job.misses
            self._check_epoch()
        if self._results:
            results = list(self._results.values())
            self._results.clear()
            for draft, rval, observed in results:
                self._finish(draft, rval, observed)

    def _needs_full(self, draft: AccessDraft, kind: object) -> bool:
        if draft.cls in ("exec", "connect"):
            return True
        flags = draft.flags
        if flags is not None and ("O_CREAT" in flags or "O_WRONLY" in flags
                                  or "O_RDWR" in flags):
            return True
        entry = self._keys.get((draft.pid, draft.syscall, draft.path, flags))
        if entry is None or _pow2(int(entry[0]) + 1):
            return True
        att = self._attributor
        if att is not None and kind is not AccessKind.RUNTIME:
            try:
                return att.wants_walk(draft.pid, draft)
            except Exception as e:  # noqa: BLE001
                self._attributor_failed(e)
        return False

    def _attributor_failed(self, e: BaseException) -> None:
        self.stats.attributor_errors += 1
        if self._debug and self.stats.attributor_errors == 1:
            print(f"cgotrace: attributor failed: {type(e).__name__}: {e}", file=sys.stderr)

    def on_result(self, tid: int, rval: int | None, observed: bool) -> None:
        walks = self._walks
        if walks and not (len(walks) == 1 and walks[0][0].tid == tid and not self._results):
            self._settle()  # another access's walk or record comes first
        draft = self.pending.pop(tid, None)
        if draft is None:
            return
        if rval is not None and rval < 0 and -rval in RESTART_ERRNOS:
            if walks and walks[0][0] is draft:
                self._settle()  # its walk still counts (keep-policy) as at the stop
            return  # interrupted and restarted: the restarted call is reported by itself
        if walks:
            # only this access's own walk is pending: record it once that has run, after
            # the engine resumed the thread (`run_deferred`)
            self._results[tid] = (draft, rval, observed)
            return
        self._finish(draft, rval, observed)

    # -- process events ------------------------------------------------------------------
    def on_spawn(self, parent_tid: int, new_tid: int, new_pid: int, kind: str) -> None:
        if self._walks or self._results:
            self._settle()
        parent = self.pid_of(parent_tid)
        self.tid2pid[new_tid] = new_pid
        if new_pid != parent:
            if parent in self.exe:
                self.exe.setdefault(new_pid, self.exe[parent])
            self._on_event(ProcessEvent("fork", new_pid, new_tid, self._now(),
                                        {"parent": parent, "parent_tid": parent_tid,
                                         "vfork": kind == "vfork"}))

    def on_exec(self, tid: int, former_tid: int, pid: int) -> None:
        if self._walks or self._results:
            self._settle()
        self._disarm_pid(pid)  # a new image: loader phase, exe, attributor state
        self._end_folds(pid)
        if former_tid != tid:
            # the leader was killed by the exec: a call it was inside never returns
            self._flush_unknown(tid)
            self.tid2pid.pop(former_tid, None)
            draft = self.pending.pop(former_tid, None)
            if draft is not None:
                draft.tid = tid
                self.pending[tid] = draft
        self.tid2pid[tid] = pid
        for other, opid in list(self.tid2pid.items()):
            if opid == pid and other != tid:  # killed by the exec, no exit report owed
                del self.tid2pid[other]
                self._flush_unknown(other)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = self.pending[tid].path if tid in self.pending else "?"
        self.exe[pid] = exe
        interp_mapped, ranges = interpreter_ranges(pid, exe)
        detail: dict[str, object] = {"exe": exe, "former_tid": former_tid}
        if ranges:
            self.loader[pid] = ranges
            if tid in self.pending:  # emitted right after the execve's own record
                self._interp_after_exec[tid] = (pid, exe, interp_mapped)
            else:
                self._emit_interpreter(pid, tid, exe, interp_mapped)
            detail["interpreter"] = interp_mapped
        else:
            self.loader.pop(pid, None)
        self._on_event(ProcessEvent("exec", pid, tid, self._now(), detail))
        if self._attributor is not None:
            try:
                self._attributor.on_exec(pid, tid, exe)
            except Exception:  # noqa: BLE001
                self.stats.attributor_errors += 1

    def on_signal(self, tid: int, sig: int, fault_address: int | None,
                  code: int = 0) -> None:
        if self._walks or self._results:
            self._settle()
        import signal

        pid = self.pid_of(tid)
        addr = fault_address or 0
        self.fault[pid] = (tid, sig, addr)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"SIG{sig}"
        self._on_event(ProcessEvent("signal", pid, tid, self._now(), {
            "signal": sig, "signal_name": name, "si_code": code,
            "fault_address": hex(addr)}))

    def on_exit(self, tid: int, status: int) -> None:
        if self._walks or self._results:
            self._settle()
        self._upgrading.pop(tid, None)
        if self._armed:
            self._disarm(self._armed_tids.get(tid))  # its tid may be reused
        pid = self.tid2pid.pop(tid, None)
        if pid is None:
            return  # not ours (a pid-namespace intermediate), or already dropped at exec
        if tid in self.pending:
            self._flush_unknown(tid)
        if tid != pid:
            return
        es = exit_status(status, self.fault.pop(pid, None))
        self._disarm_pid(pid)
        self._end_folds(pid)
        self.loader.pop(pid, None)
        self.exe.pop(pid, None)
        self._on_event(ProcessEvent("exit", pid, tid, self._now(), es.to_dict()))
        if pid == self.main_pid:
            self.status = es
        if self._attributor is not None:
            try:
                self._attributor.on_exit(pid)
            except Exception:  # noqa: BLE001
                self.stats.attributor_errors += 1

    # -- records ------------------------------------------------------------------------
    def _emit_interpreter(self, pid: int, tid: int, exe: str, mapped: str | None) -> None:
        named = self._interpreter_of(exe) if self._interpreter_of is not None else None
        path = named or mapped or "?"
        hidden = self._classifier.hidden(AccessKind.INTERPRETER, path, "ok", True, exe)
        self._seq += 1
        self._emit(Access(seq=self._seq, time=self._now(), pid=pid, tid=tid, syscall="execve",
                          path=path, result="ok", kind=AccessKind.INTERPRETER, hidden=hidden,
                          host_path=mapped if mapped != path else None, flags="PT_INTERP"))

    def _flush_unknown(self, tid: int) -> None:
        draft = self.pending.pop(tid, None)
        if draft is not None:
            self.stats.lost += 1
            self._finish(draft, None, True)

    def _finish(self, draft: AccessDraft, rval: int | None, observed: bool) -> None:
        pid = draft.pid
        key = (pid, draft.syscall, draft.path, draft.flags)
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()
                self._disarm_all()  # the slots counted for the keys just dropped
            entry = self._keys[key] = [0, None, "unknown", None, -1]
        entry[0] += 1
        if entry[4] >= 0 and self._table is not None:
            self._table.set_count(entry[4], entry[0])
        result_of: int | None = None
        seen = observed and rval is not None
        if observed:
            result = "unknown" if rval is None else result_name(rval)
        else:
            self.stats.unobserved += 1
            result_of = entry[1]
            result = str(entry[2])
            rval = entry[3]
        kind = draft.kind if isinstance(draft.kind, AccessKind) else AccessKind.OTHER
        first_exec = pid == self.main_pid and not self._main_exec_done
        if kind is AccessKind.EXECUTABLE and first_exec and result == "ok":
            self._main_exec_done = True
        hidden = self._classifier.hidden(kind, draft.path, result, draft.loader_phase,
                                         self.exe.get(pid), first_exec)
        attribution = draft.attribution if isinstance(draft.attribution, Attribution) else None
        fkey = (pid, draft.tid, draft.syscall, draft.path, draft.flags, draft.ip)
        if self._on_repeats is not None:
            folds = self._folds.get(pid)
            fold = folds.get(fkey) if folds is not None else None
            if fold is not None and fold.same(result, kind, hidden, attribution, draft):
                self.stats.accesses += 1
                self.stats.repeats += 1
                fold.add(1, not seen, draft.time, draft.time)
                self._dirty[fold.access.seq] = fold
                if seen:
                    entry[1], entry[2], entry[3] = fold.access.seq, result, rval
                if not draft.observed:
                    self._arm(draft, entry, fold)
                self._after_exec(draft)
                if draft.time - self._flushed_at >= FLUSH_INTERVAL:
                    self._flush_repeats()
                return
        self._seq += 1
        seq = self._seq
        if seen:
            entry[1], entry[2], entry[3] = seq, result, rval
        same_as = None
        if attribution is not None:  # the attributor returns one object per distinct answer
            first = self._attributed.get(id(attribution))
            if first is not None and first[0] is attribution:
                same_as = first[1]
            else:
                if len(self._attributed) >= MAX_SHARED_ATTRIBUTIONS:
                    self._attributed.clear()
                self._attributed[id(attribution)] = (attribution, seq)
        access = Access(seq=seq, time=draft.time, pid=pid, tid=draft.tid,
                        syscall=draft.syscall, path=draft.path, result=result, kind=kind,
                        hidden=hidden, flags=draft.flags, retval=rval, argv=draft.argv,
                        family=draft.family, attribution=attribution, same_as=same_as,
                        observed=seen, result_of=result_of)
        self._emit(access)
        if self._on_repeats is not None:
            self._new_fold(fkey, access)
            if not draft.observed:
                self._arm(draft, entry, self._folds[pid][fkey])
        self._after_exec(draft)

    def _new_fold(self, fkey: tuple[int, int, str, str, str | None, int],
                  access: Access) -> None:
        """`access` is now what later calls of its fold key count onto."""
        folds = self._folds.setdefault(access.pid, {})
        old = folds.get(fkey)
        if old is not None:
            if self._dirty.pop(old.access.seq, None) is not None and self._on_repeats:
                self._report(self._on_repeats, old)
            if old.fid >= 0:
                self._fids.pop(old.fid, None)
        elif self._nfolds >= MAX_FOLDS:
            self._flush_repeats()
            self._folds.clear()
            self._nfolds = 0
            self._disarm_all()
            folds = self._folds.setdefault(access.pid, {})
        else:
            self._nfolds += 1
        self._disarm_path(access.pid, access.path)
        folds[fkey] = _Fold(access)

    def _end_folds(self, pid: int) -> None:
        """The process execs or exits: report its folds and start afresh."""
        folds = self._folds.pop(pid, None)
        if not folds:
            return
        self._nfolds -= len(folds)
        for fold in folds.values():
            if self._dirty.pop(fold.access.seq, None) is not None and self._on_repeats:
                self._report(self._on_repeats, fold)
            if fold.fid >= 0:
                self._fids.pop(fold.fid, None)

    def _after_exec(self, draft: AccessDraft) -> None:
        if draft.cls == "exec":
            interp = self._interp_after_exec.pop(draft.tid, None)
            if interp is not None:
                self._emit_interpreter(interp[0], draft.tid, interp[1], interp[2])

    def _emit(self, access: Access) -> None:
        self.stats.accesses += 1
        self._on_access(access)
