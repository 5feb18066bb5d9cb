"""The engine-agnostic collector driven by a scripted fake engine: events in, records out.

No ptrace and no processes: the fake `ThreadView` serves memory from a dict, and the pids
are above pid_max so every /proc lookup the collector makes finds nothing.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from tracer.engine.base import ThreadView, Want
from tracer.recording.collector import EventCollector
from tracer.recording.entry import EntryDecoder
from tracer.syscalls.table import AUDIT_ARCH_X86_64, X86_64_NUMBERS
from tracer.trace.model import Access, Attribution, ProcessEvent, Via

PID = 4_190_000  # above any pid_max: /proc/PID/* does not exist
AT_FDCWD = (1 << 64) - 100
OPENAT = X86_64_NUMBERS["openat"]
EXECVE = X86_64_NUMBERS["execve"]
O_RDONLY, O_WRONLY, O_CREAT = 0, 1, 0o100
ERESTARTSYS = 512


class FakeView:
    """A ThreadView over a dict of strings; `full` says whether registers exist."""

    def __init__(self, memory: dict[int, bytes], tid: int, pid: int, full: bool = True):
        self.memory = memory
        self.tid = tid
        self.pid = pid
        self.full = full

    def regs(self) -> Any:
        return object() if self.full else None

    def read(self, addr: int, n: int) -> bytes:
        for base, data in self.memory.items():
            if base <= addr < base + len(data):
                return data[addr - base:addr - base + n]
        return b""

    def read_cstring(self, addr: int, limit: int) -> bytes | None:
        data = self.read(addr, limit)
        return data.split(b"\0", 1)[0] if data else None

    def read_pages(self, pages: list[int]) -> list[bytes]:
        return [b""] * len(pages)


class FakeEngine:
    """Scripted engine: each method is one kernel report, delivered as an engine would."""

    def __init__(self, collector: EventCollector, pid: int = PID):
        self.c = collector
        self.memory: dict[int, bytes] = {}
        self.next_addr = 0x10000
        collector.start(pid)

    def string(self, text: str) -> int:
        addr = self.next_addr
        self.memory[addr] = text.encode() + b"\0"
        self.next_addr += 0x1000
        return addr

    def entry(self, tid: int, nr: int, args: tuple[int, ...], full: bool = True) -> Want:
        view: ThreadView = FakeView(self.memory, tid, self.c.pid_of(tid), full)
        return self.c.on_entry(view, nr, AUDIT_ARCH_X86_64, args, 0x401000, 0x7ff000)

    def openat(self, tid: int, path: str, flags: int = O_RDONLY, full: bool = True) -> Want:
        return self.entry(tid, OPENAT, (AT_FDCWD, self.string(path), flags, 0, 0, 0), full)

    def execve(self, tid: int, path: str) -> Want:
        return self.entry(tid, EXECVE, (self.string(path), 0, 0, 0, 0, 0))


class Recorder:
    def __init__(self) -> None:
        self.accesses: list[Access] = []
        self.events: list[ProcessEvent] = []


def make(attributor: Any = None) -> tuple[FakeEngine, Recorder]:
    rec = Recorder()
    c = EventCollector(on_access=rec.accesses.append, on_event=rec.events.append,
                       attributor=attributor)
    return FakeEngine(c), rec


def test_entry_and_result_make_one_observed_access() -> None:
    eng, rec = make()
    assert eng.openat(PID, "/etc/passwd") is Want.RESULT
    assert rec.accesses == []  # nothing before the result
    eng.c.on_result(PID, 3, True)
    (a,) = rec.accesses
    assert (a.syscall, a.path, a.result, a.retval, a.observed) == ("openat", "/etc/passwd",
                                                                   "ok", 3, True)
    assert a.to_dict().get("observed", True) is True


def test_restart_errno_is_recorded_once_by_the_restarted_call() -> None:
    eng, rec = make()
    eng.openat(PID, "/etc/hosts")
    eng.c.on_result(PID, -ERESTARTSYS, True)  # interrupted by a signal, will be restarted
    assert rec.accesses == []
    eng.openat(PID, "/etc/hosts")
    eng.c.on_result(PID, -errno.ENOENT, True)
    assert [(a.path, a.result) for a in rec.accesses] == [("/etc/hosts", "ENOENT")]


def test_exec_from_a_thread_rekeys_to_the_leader_and_flushes_the_others() -> None:
    eng, rec = make()
    eng.c.on_spawn(PID, PID + 1, PID, "clone")
    eng.c.on_spawn(PID, PID + 2, PID, "clone")
    eng.openat(PID, "/etc/group")  # the leader is inside a call when the exec happens
    eng.execve(PID + 1, "/bin/child")
    eng.c.on_exec(PID, PID + 1, PID)  # the exec reports under the leader's tid
    flushed = [a for a in rec.accesses if a.path == "/etc/group"]
    assert [(a.result, a.observed) for a in flushed] == [("unknown", False)]
    assert eng.c.pid_of(PID) == PID and PID + 2 not in eng.c.tid2pid
    eng.c.on_result(PID, 0, True)  # the execve's exit stop, now under the leader's tid
    (ex,) = [a for a in rec.accesses if a.syscall == "execve"]
    assert (ex.tid, ex.path, ex.result) == (PID, "/bin/child", "ok")
    (event,) = [e for e in rec.events if e.event == "exec"]
    assert event.detail["former_tid"] == PID + 1


def test_exit_flushes_pending_and_the_leader_sets_the_status() -> None:
    eng, rec = make()
    eng.c.on_spawn(PID, PID + 1, PID, "clone")
    eng.openat(PID + 1, "/etc/resolv.conf")
    eng.c.on_exit(PID + 1, 0)  # killed by exit_group inside the call
    assert [(a.path, a.result) for a in rec.accesses] == [("/etc/resolv.conf", "unknown")]
    assert eng.c.stats.lost == 1
    assert eng.c.tracing
    eng.c.on_exit(PID, 3 << 8)  # exit(3)
    assert not eng.c.tracing
    assert eng.c.finish().code == 3
    assert [e.event for e in rec.events] == ["exit"]


def test_fork_is_a_process_event_and_its_exit_is_not_the_run_status() -> None:
    eng, rec = make()
    eng.c.on_spawn(PID, PID + 5, PID + 5, "fork")
    eng.c.on_exit(PID + 5, 9)  # killed by SIGKILL
    eng.c.on_exit(PID, 0)
    assert [e.event for e in rec.events] == ["fork", "exit", "exit"]
    assert rec.events[1].detail["signal"] == 9
    assert eng.c.finish().code == 0


class OneAnswer:
    """An attributor that returns one interned object per path (as the real one does)."""

    def __init__(self) -> None:
        self.by_path: dict[str, Attribution] = {}
        self.full_calls = 0

    def __call__(self, view: ThreadView, draft: Any) -> Attribution:
        assert view.regs() is not None
        self.full_calls += 1
        return self.by_path.setdefault(draft.path, Attribution(via=Via.GO, go_api=draft.path))

    def wants_walk(self, pid: int, draft: Any) -> bool:
        return draft.path not in self.by_path

    def reuse(self, pid: int, draft: Any) -> Attribution | None:
        return self.by_path.get(draft.path)

    def on_exec(self, pid: int, tid: int, exe: str) -> None: ...

    def on_exit(self, pid: int) -> None: ...


def test_same_as_points_at_the_first_access_with_that_attribution() -> None:
    eng, rec = make(OneAnswer())
    for path in ("/etc/a", "/etc/a", "/etc/b", "/etc/a"):
        eng.openat(PID, path)
        eng.c.on_result(PID, 3, True)
    a1, a2, b, a3 = rec.accesses
    assert a1.same_as is None and b.same_as is None
    assert a2.same_as == a1.seq and a3.same_as == a1.seq
    assert "via" not in a2.to_dict() and a2.to_dict()["same_as"] == a1.seq


def test_notify_view_first_sighting_and_powers_of_two_need_a_full_view() -> None:
    att = OneAnswer()
    eng, rec = make(att)
    wants = []
    for _ in range(9):
        w = eng.openat(PID, "/etc/localtime", full=False)
        wants.append(w)
        if w is Want.FULL:  # the engine upgrades, then reports the same call again
            assert eng.openat(PID, "/etc/localtime", full=True) is Want.RESULT
            eng.c.on_result(PID, 3, True)
        else:
            eng.c.on_result(PID, None, False)
    # accesses 1, 2, 4, 8 are seen in full; the others run without a stop
    assert [w is Want.FULL for w in wants] == [True, True, False, True, False, False, False,
                                               True, False]
    assert att.full_calls == 4
    observed = [a for a in rec.accesses if a.observed]
    unobserved = [a for a in rec.accesses if not a.observed]
    assert len(observed) == 4 and len(unobserved) == 5
    first = observed[0]
    for a in unobserved:  # honest: never presented as observed, result from an observed one
        assert a.result == "ok" and a.result_of in {o.seq for o in observed}
        assert a.to_dict()["observed"] is False
        assert a.same_as == first.seq  # the walked attribution is reused
    assert eng.c.stats.unobserved == 5


@pytest.mark.parametrize("flags", [O_WRONLY, O_CREAT, 2])
def test_notify_writing_opens_always_get_a_full_view(flags: int) -> None:
    eng, rec = make()
    args = (AT_FDCWD, eng.string("/tmp/out"), flags, 0o644, 0, 0)
    assert eng.c.wants_full(PID, PID, OPENAT, args, 0) is Want.FULL
    for _ in range(3):
        assert eng.openat(PID, "/tmp/out", flags, full=False) is Want.FULL


def test_notify_exec_is_full_and_reads_are_decided_by_on_entry() -> None:
    eng, _ = make()
    exec_args = (eng.string("/bin/true"), 0, 0, 0, 0, 0)
    assert eng.c.wants_full(PID, PID, EXECVE, exec_args, 0) is Want.FULL
    read_args = (AT_FDCWD, eng.string("/etc/hosts"), O_RDONLY, 0, 0, 0)
    assert eng.c.wants_full(PID, PID, OPENAT, read_args, 0) is Want.CONTINUE


def test_unobserved_repeat_of_a_failed_open_carries_that_errno() -> None:
    eng, rec = make()
    for _ in range(3):
        if eng.openat(PID, "/etc/missing", full=False) is Want.FULL:
            eng.openat(PID, "/etc/missing", full=True)
            eng.c.on_result(PID, -errno.ENOENT, True)
        else:
            eng.c.on_result(PID, None, False)
    assert [(a.result, a.observed) for a in rec.accesses] == [
        ("ENOENT", True), ("ENOENT", True), ("ENOENT", False)]
    assert rec.accesses[2].result_of == rec.accesses[1].seq


def test_the_launchers_own_exec_is_not_unwound_but_later_execs_are() -> None:
    att = OneAnswer()
    eng, rec = make(att)
    eng.execve(PID, "/bin/prog")  # made by the launcher: its stack is the tracer's
    eng.c.on_result(PID, 0, True)
    eng.execve(PID, "/bin/other")  # the program exec'ing something
    eng.c.on_result(PID, 0, True)
    first, second = rec.accesses
    # the launcher's exec: `via: exec`, no stack (the attributor never ran for it)
    assert first.attribution is not None and first.attribution.via is Via.EXEC
    assert not first.attribution.stack and second.attribution is not first.attribution
    assert att.full_calls == 1


class CountingDecoder(EntryDecoder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().decode(*args, **kwargs)


def test_an_upgrade_finishes_the_draft_of_its_notification_without_a_second_decode() -> None:
    rec = Recorder()
    decoder = CountingDecoder()
    c = EventCollector(on_access=rec.accesses.append, decoder=decoder)
    eng = FakeEngine(c)
    args = (AT_FDCWD, eng.string("/etc/hosts"), O_RDONLY, 0, 0, 0)
    assert eng.entry(PID, OPENAT, args, full=False) is Want.FULL
    eng.memory.clear()  # the full view could not read the path again: it need not
    assert eng.entry(PID, OPENAT, args, full=True) is Want.RESULT
    c.on_result(PID, 3, True)
    assert decoder.calls == 1
    (a,) = rec.accesses
    assert (a.path, a.result, a.observed) == ("/etc/hosts", "ok", True)


def test_a_full_entry_of_another_call_does_not_take_a_stale_upgrade_draft() -> None:
    rec = Recorder()
    decoder = CountingDecoder()
    c = EventCollector(on_access=rec.accesses.append, decoder=decoder)
    eng = FakeEngine(c)
    assert eng.openat(PID, "/etc/hosts", full=False) is Want.FULL
    # the upgrade was abandoned (a group-stop took the thread); another call comes in full
    assert eng.openat(PID, "/etc/services", full=True) is Want.RESULT
    c.on_result(PID, -errno.ENOENT, True)
    assert decoder.calls == 2
    assert [(a.path, a.result) for a in rec.accesses] == [("/etc/services", "ENOENT")]


def test_paths_are_normalised_when_decoded() -> None:
    """Go's time package asks for /usr/share/zoneinfo//Europe/Berlin when ZONEINFO ends in
    a slash: one file, one dependency, one spelling in the trace."""
    view = FakeView({0x1000: b"/usr/share/zoneinfo//Europe/./Berlin\0",
                     0x2000: b"//etc/passwd\0"}, PID, PID)
    dec = EntryDecoder()
    for addr, want in ((0x1000, "/usr/share/zoneinfo/Europe/Berlin"),
                       (0x2000, "/etc/passwd")):
        draft = dec.decode(view, OPENAT, AUDIT_ARCH_X86_64,
                           (AT_FDCWD, addr, O_RDONLY, 0, 0, 0), 0, 0, 0.0)
        assert draft is not None and draft.path == want
