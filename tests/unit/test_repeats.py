"""Repeats folded into the access they repeat (trace format 2), and the collector's side of
the engine's RepeatTable: what it arms, what disarms it, and how drained counts land.

Driven by the scripted engine of test_collector (no processes)."""

from __future__ import annotations

import errno
from typing import Any

from tests.unit.test_collector import PID, FakeEngine, OneAnswer
from tracer.engine.base import RepeatCounts, Want
from tracer.recording.collector import EventCollector
from tracer.trace.model import Access, Repeats


class Sink:
    """Records and repeats reports as `run` consumes them."""

    def __init__(self) -> None:
        self.accesses: list[Access] = []
        self.totals: dict[int, Repeats] = {}
        self.added: dict[int, int] = {}

    def on_repeats(self, a: Access, totals: Repeats, added: Repeats) -> None:
        assert totals.of == a.seq == added.of
        self.totals[a.seq] = totals
        self.added[a.seq] = self.added.get(a.seq, 0) + added.count

    def calls(self) -> int:
        return sum(1 + self.added.get(a.seq, 0) for a in self.accesses)


def make(attributor: Any = None) -> tuple[FakeEngine, Sink]:
    sink = Sink()
    c = EventCollector(on_access=sink.accesses.append, attributor=attributor,
                       on_repeats=sink.on_repeats)
    return FakeEngine(c), sink


def notify_open(eng: FakeEngine, path: str, tid: int = PID, rval: int = 3) -> Want:
    """One openat as the notify engine reports it: upgraded when the collector asks."""
    want = eng.openat(tid, path, full=False)
    if want is Want.FULL:
        assert eng.openat(tid, path, full=True) is Want.RESULT
        eng.c.on_result(tid, rval, True)
    else:
        eng.c.on_result(tid, None, False)
    return want


def test_repeats_are_counts_on_the_access_they_repeat() -> None:
    eng, sink = make(OneAnswer())
    for _ in range(1000):
        notify_open(eng, "/etc/localtime")
    eng.c.finish()
    (a,) = sink.accesses  # every repeat, sampled (observed) or not, is identical
    assert a.observed and a.result == "ok" and a.seq == 1
    assert sink.totals[1].count == 999 and sink.calls() == 1000
    # the samples at 2, 4, ..., 512 were observed; the other 989 copied their result
    assert sink.totals[1].unobserved == 999 - 9
    assert eng.c.stats.accesses == 1000 and eng.c.stats.repeats == 999


def test_a_different_result_or_thread_is_a_new_access() -> None:
    eng, sink = make(OneAnswer())
    notify_open(eng, "/etc/hosts")
    notify_open(eng, "/etc/hosts", rval=-errno.ENOENT)  # the 2nd call is a sample: seen
    notify_open(eng, "/etc/hosts")  # unobserved: the result copied is ENOENT, folded
    notify_open(eng, "/etc/hosts", rval=-errno.ENOENT)  # the 4th: a sample, folded
    eng.c.on_spawn(PID, PID + 1, PID, "clone")
    notify_open(eng, "/etc/hosts", tid=PID + 1)  # the 5th, unobserved, another thread
    eng.c.finish()
    assert [(a.tid, a.result, a.observed) for a in sink.accesses] == [
        (PID, "ok", True), (PID, "ENOENT", True), (PID + 1, "ENOENT", False)]
    second, third = sink.accesses[1:]
    assert (sink.totals[second.seq].count, sink.totals[second.seq].unobserved) == (2, 1)
    assert third.result_of == second.seq  # the record that holds the observed ENOENT
    assert sink.calls() == 5


def test_without_on_repeats_every_call_is_a_record() -> None:
    c = EventCollector(on_access=(got := []).append, attributor=OneAnswer())
    eng = FakeEngine(c)
    for _ in range(5):
        notify_open(eng, "/etc/localtime")
    assert len(got) == 5
    assert not c.use_repeat_table(FakeTable())


class FakeTable:
    """The RepeatTable protocol, recording what the collector asks of it."""

    def __init__(self) -> None:
        self.armed: dict[int, tuple[int, int, int, bytes, int, int]] = {}
        self.slots: list[int] = []
        self.next = 0

    def arm(self, tid: int, nr: int, args: tuple[int, ...], ip: int, path: bytes, slot: int,
            fold: int) -> int:
        for h, k in self.armed.items():
            if k[:4] == (tid, nr, ip, path):
                self.armed[h] = (tid, nr, ip, path, slot, fold)
                return h
        self.next += 1
        self.armed[self.next] = (tid, nr, ip, path, slot, fold)
        return self.next

    def disarm(self, handle: int) -> None:
        del self.armed[handle]

    def new_slot(self, count: int) -> int:
        self.slots.append(count)
        return len(self.slots) - 1

    def set_count(self, slot: int, count: int) -> None:
        self.slots[slot] = count

    def clear(self) -> None:
        self.armed.clear()
        self.slots.clear()

    def drain(self) -> list[RepeatCounts]:
        return []

    def count(self, handle: int, n: int) -> list[RepeatCounts]:
        """What the engine drains after counting `n` calls of `handle` alone."""
        tid, nr, ip, path, slot, fold = self.armed[handle]
        self.slots[slot] += n
        return [(fold, slot, self.slots[slot], n, 10**9, 2 * 10**9)]


def armed_collector() -> tuple[FakeEngine, Sink, FakeTable]:
    eng, sink = make(OneAnswer())
    table = FakeTable()
    assert eng.c.use_repeat_table(table)
    return eng, sink, table


def test_a_folded_unstopped_call_is_armed_and_drained_counts_land_on_its_access() -> None:
    eng, sink, table = armed_collector()
    for _ in range(3):  # 1, 2: first sighting and a sample; 3: unstopped, folded, armed
        notify_open(eng, "/etc/passwd")
    (handle,) = table.armed
    assert table.armed[handle][3] == b"/etc/passwd"
    assert table.slots[table.armed[handle][4]] == 3  # the key's count, shared
    # the engine counts 4 more alone: the key's count is 7, the next (8th) is a sample
    eng.c.on_repeated(table.count(handle, 4))
    assert eng.c.stats.native_repeats == 4 and eng.c.stats.accesses == 7
    assert notify_open(eng, "/etc/passwd") is Want.FULL
    assert not table.armed  # the sample's walk disarmed the path
    eng.c.finish()
    (a,) = sink.accesses
    assert sink.totals[a.seq].count == 7 and sink.calls() == 8


def test_events_that_may_change_a_repeat_disarm_it() -> None:
    eng, _, table = armed_collector()
    for _ in range(3):
        notify_open(eng, "/etc/passwd")
    assert len(table.armed) == 1
    eng.openat(PID, "/etc/passwd", flags=1, full=True)  # a writing open of that path: walked
    assert not table.armed
    eng.c.on_result(PID, 3, True)
    for _ in range(3):
        notify_open(eng, "/etc/group")
    assert len(table.armed) == 1
    eng.c.on_exec(PID, PID, PID)  # a new image
    assert not table.armed
    for _ in range(3):
        notify_open(eng, "/etc/group")
    eng.c.on_spawn(PID, PID + 1, PID, "clone")
    # calls 7-9 of the key (the 8th a sample, which disarms the path), then the 10th
    for _ in range(3):
        notify_open(eng, "/etc/group", tid=PID + 1)
    notify_open(eng, "/etc/group")
    assert {k[0] for k in table.armed.values()} == {PID, PID + 1}
    eng.c.on_exit(PID + 1, 0)  # its tid may come back as another thread
    assert {k[0] for k in table.armed.values()} == {PID}


def test_loader_phase_and_relative_paths_are_never_armed() -> None:
    eng, _, table = armed_collector()
    eng.c.loader[PID] = ((0x401000, 0x402000),)  # the calls' PC lies in the interpreter
    for _ in range(3):
        notify_open(eng, "/etc/ld.so.cache")
    assert not table.armed
