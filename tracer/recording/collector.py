"""The engine-agnostic collector: engine events in, `Access` and `ProcessEvent` records out.

Written once for every engine (docs/architecture.md, "Shared seams §1"). It never issues a
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
from typing import TYPE_CHECKING, Protocol

from tracer.engine.base import ThreadView, Want
from tracer.process.maps import interpreter_ranges, tgid
from tracer.recording.classify import Classifier
from tracer.recording.entry import AccessDraft, EntryDecoder
from tracer.syscalls.decode import RESTART_ERRNOS, result_name
from tracer.syscalls.table import AUDIT_ARCH_X86_64, x86_64_table
from tracer.trace.model import Access, AccessKind, Attribution, ExitStatus, ProcessEvent, Via

if TYPE_CHECKING:
    pass

__all__ = ["AccessDraft", "AttributionHook", "CollectorStats", "EventCollector", "exit_status"]

MAX_SHARED_ATTRIBUTIONS = 65_536  # bound on the same_as table (cleared when full)
_LAUNCH_EXEC = Attribution(via=Via.EXEC)  # the launched program's exec: no stack of ours
MAX_KEYS = 262_144  # bound on the per-key result table (cleared when full)
_O_WRITE = 0o1 | 0o2 | 0o100  # O_WRONLY | O_RDWR | O_CREAT


class AttributionHook(Protocol):
    """What the collector asks about an access: which Go code caused it. Registers and
    memory come from `view`. tracer/attribution/ implements it (`Attributor`, and
    `LazyAttributor` that builds one on first use)."""

    def __call__(self, view: ThreadView, draft: AccessDraft) -> Attribution | None: ...

    def wants_walk(self, pid: int, draft: AccessDraft) -> bool:
        """Keep-policy without registers (notify): does this access need a stack walk?"""
        ...

    def reuse(self, pid: int, draft: AccessDraft) -> Attribution | None:
        """The attribution an access that is not walked carries (None if none yet)."""
        ...

    def on_exec(self, pid: int, tid: int, exe: str) -> None: ...

    def on_exit(self, pid: int) -> None: ...


class CollectorStats:
    __slots__ = ("accesses", "attributor_errors", "lost", "stops", "unobserved", "upgrades")

    def __init__(self) -> None:
        self.stops = 0  # kernel reports handled (ptrace stops + notifications; engines add)
        self.accesses = 0
        self.lost = 0  # accesses flushed with result "unknown"
        self.unobserved = 0  # accesses let run without a stop (result not seen)
        self.upgrades = 0  # entries answered Want.FULL without a full view
        self.attributor_errors = 0


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
        # (pid, syscall, path, flags) -> [times seen, seq of last observed, its result, rval]
        self._keys: dict[tuple[int, str, str, str | None], list[object]] = {}
        self._native = x86_64_table()
        self._t0 = time.monotonic()
        self._debug = debug

    # -- bookkeeping ---------------------------------------------------------------------
    def start(self, pid: int) -> None:
        self.main_pid = pid
        self.tid2pid[pid] = pid

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
        for tid in list(self.pending):
            self._flush_unknown(tid)
        return self.status or ExitStatus(code=None)

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
        if attributor is None:
            pass
        elif draft.cls == "exec" and pid == self.main_pid and not self._main_exec_done:
            # Still cgotrace's launcher (its Python child, whose last act after the filter
            # is this execve): its stack is the tracer's, never the program's. The exec
            # gets `via: exec` and no stack.
            draft.attribution = _LAUNCH_EXEC
        elif kind is not AccessKind.RUNTIME:
            try:
                draft.attribution = attributor(view, draft)
            except Exception as e:  # noqa: BLE001 - counted, the access is kept
                self._attributor_failed(e)
        self.pending[tid] = draft
        return Want.RESULT

    def _needs_full(self, draft: AccessDraft, kind: object) -> bool:
        if draft.cls in ("exec", "connect"):
            return True
        flags = draft.flags
        if flags is not None and ("O_CREAT" in flags or "O_WRONLY" in flags
                                  or "O_RDWR" in flags):
            return True
        entry = self._keys.get((draft.pid, draft.syscall, draft.path, flags))
        if entry is None or _pow2(int(entry[0]) + 1):  # type: ignore[call-overload]
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
        draft = self.pending.pop(tid, None)
        if draft is None:
            return
        if rval is not None and rval < 0 and -rval in RESTART_ERRNOS:
            return  # interrupted and restarted: the restarted call is reported by itself
        self._finish(draft, rval, observed)

    # -- process events ------------------------------------------------------------------
    def on_spawn(self, parent_tid: int, new_tid: int, new_pid: int, kind: str) -> None:
        parent = self.pid_of(parent_tid)
        self.tid2pid[new_tid] = new_pid
        if new_pid != parent:
            if parent in self.exe:
                self.exe.setdefault(new_pid, self.exe[parent])
            self._on_event(ProcessEvent("fork", new_pid, new_tid, self._now(),
                                        {"parent": parent, "parent_tid": parent_tid,
                                         "vfork": kind == "vfork"}))

    def on_exec(self, tid: int, former_tid: int, pid: int) -> None:
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
        self._upgrading.pop(tid, None)
        pid = self.tid2pid.pop(tid, None)
        if pid is None:
            return  # not ours (a pid-namespace intermediate), or already dropped at exec
        if tid in self.pending:
            self._flush_unknown(tid)
        if tid != pid:
            return
        es = exit_status(status, self.fault.pop(pid, None))
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
        self._seq += 1
        seq = self._seq
        key = (pid, draft.syscall, draft.path, draft.flags)
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()
            entry = self._keys[key] = [0, None, "unknown", None]
        entry[0] = int(entry[0]) + 1  # type: ignore[call-overload]
        result_of: int | None = None
        if observed:
            result = "unknown" if rval is None else result_name(rval)
            if rval is not None:
                entry[1], entry[2], entry[3] = seq, result, rval
        else:
            self.stats.unobserved += 1
            result_of = entry[1]  # type: ignore[assignment]
            result = str(entry[2])
            rval = entry[3]  # type: ignore[assignment]
        kind = draft.kind if isinstance(draft.kind, AccessKind) else AccessKind.OTHER
        first_exec = pid == self.main_pid and not self._main_exec_done
        if kind is AccessKind.EXECUTABLE and first_exec and result == "ok":
            self._main_exec_done = True
        hidden = self._classifier.hidden(kind, draft.path, result, draft.loader_phase,
                                         self.exe.get(pid), first_exec)
        attribution = draft.attribution if isinstance(draft.attribution, Attribution) else None
        same_as = None
        if attribution is not None:  # the attributor returns one object per distinct answer
            first = self._attributed.get(id(attribution))
            if first is not None and first[0] is attribution:
                same_as = first[1]
            else:
                if len(self._attributed) >= MAX_SHARED_ATTRIBUTIONS:
                    self._attributed.clear()
                self._attributed[id(attribution)] = (attribution, seq)
        self._emit(Access(seq=seq, time=draft.time, pid=pid, tid=draft.tid,
                          syscall=draft.syscall, path=draft.path, result=result, kind=kind,
                          hidden=hidden, flags=draft.flags, retval=rval, argv=draft.argv,
                          family=draft.family, attribution=attribution, same_as=same_as,
                          observed=observed and rval is not None, result_of=result_of))
        if draft.cls == "exec":
            interp = self._interp_after_exec.pop(draft.tid, None)
            if interp is not None:
                self._emit_interpreter(interp[0], draft.tid, interp[1], interp[2])

    def _emit(self, access: Access) -> None:
        self.stats.accesses += 1
        self._on_access(access)
