"""The capture of a stopped thread (tracer/unwind/capture.py) and the collector's deferred
walk (EventCollector.run_deferred), on hand-built memory: no process is traced."""

from __future__ import annotations

import ctypes
import os
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.test_collector import PID, make
from tracer import ptrace
from tracer.engine.base import Want
from tracer.trace.model import Attribution, Via
from tracer.unwind.capture import (
    MAX_WINDOW,
    NO_HINT,
    CaptureReader,
    native_capture,
    take_capture,
)
from tracer.unwind.goruntime import layout_for
from tracer.unwind.stack import PAGE, MemoryError_, Unwinder, word


class Memory:
    """Sparse process memory by page; counts the reads a walk or capture makes."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.batches: list[list[int]] = []
        self.live: list[tuple[int, int]] = []

    def put(self, addr: int, data: bytes) -> None:
        for i, b in enumerate(data):
            page = (addr + i) & ~(PAGE - 1)
            self.pages.setdefault(page, bytearray(PAGE))[(addr + i) - page] = b

    def put_word(self, addr: int, value: int) -> None:
        self.put(addr, struct.pack("<Q", value))

    def map(self, lo: int, hi: int) -> None:
        for page in range(lo & ~(PAGE - 1), hi, PAGE):
            self.pages.setdefault(page, bytearray(PAGE))

    def read(self, addr: int, n: int) -> bytes:
        """Live read: short at the first unmapped page."""
        self.live.append((addr, n))
        out = b""
        while n > 0:
            page = addr & ~(PAGE - 1)
            data = self.pages.get(page)
            if data is None:
                break
            take = min(n, page + PAGE - addr)
            out += bytes(data[addr - page:addr - page + take])
            addr, n = addr + take, n - take
        return out

    def read_pages(self, pages: list[int]) -> list[bytes]:
        """As process_vm_readv: stops at the first unreadable page."""
        self.batches.append(list(pages))
        out: list[bytes] = []
        for page in pages:
            data = self.pages.get(page)
            if data is None:
                break
            out.append(bytes(data))
        return out + [b""] * (len(pages) - len(out))


def reader_over(mem: Memory, pages: list[int]) -> CaptureReader:
    r = CaptureReader(mem.read, mem.read_pages)
    r.fill(pages)
    mem.live.clear()
    return r


def test_reads_inside_the_capture_are_hits() -> None:
    mem = Memory()
    mem.put_word(0x10008, 0x1122334455667788)
    r = reader_over(mem, [0x10000])
    assert word(r, 0x10008) == 0x1122334455667788
    assert r(0x10008, 4) == bytes.fromhex("88776655")
    assert (r.misses, mem.live) == (0, [])


def test_a_page_not_captured_is_read_live_and_counted_once() -> None:
    mem = Memory()
    mem.put_word(0x20010, 42)
    r = reader_over(mem, [0x10000])
    mem.map(0x10000, 0x11000)
    assert word(r, 0x20010) == 42
    assert word(r, 0x20018) == 0  # the same page again: cached, not a second miss
    assert r.misses == 1 and r.missed == [0x20000]
    assert len(mem.live) == 1


def test_a_read_across_pages_is_assembled_from_the_capture() -> None:
    mem = Memory()
    mem.put(0x10ffc, b"abcdefgh")  # four bytes on each side of the boundary
    r = reader_over(mem, [0x10000, 0x11000])
    assert r(0x10ffc, 8) == b"abcdefgh"
    assert word(r, 0x10ffc) == int.from_bytes(b"abcdefgh", "little")
    assert (r.misses, mem.live) == (0, [])


def test_a_read_across_into_a_page_not_captured_misses_that_page() -> None:
    mem = Memory()
    mem.put(0x10ffc, b"abcdefgh")
    r = reader_over(mem, [0x10000])
    assert r(0x10ffc, 8) == b"abcdefgh"
    assert r.missed == [0x11000]


def test_unreadable_pages_stay_unreadable_and_the_batch_goes_on_after_them() -> None:
    mem = Memory()
    mem.map(0x10000, 0x11000)
    mem.map(0x12000, 0x13000)  # 0x11000 is unmapped
    r = CaptureReader(mem.read, mem.read_pages)
    r.fill([0x10000, 0x11000, 0x12000])
    assert mem.batches == [[0x10000, 0x11000, 0x12000], [0x12000]]
    mem.live.clear()
    assert r(0x11000, 8) == b""
    try:
        word(r, 0x11008)
        raise AssertionError("an unreadable word must raise")
    except MemoryError_:
        pass
    assert r(0x12000, 8) == bytes(8)
    assert (r.misses, mem.live) == (0, [])  # known unreadable: no live read, no miss


# --- a Go thread in C code on the system stack ------------------------------------------
LAY = layout_for((1, 27))
TLS_OFF = -8
FS = 0x7f00_0000_1000
G0, M, CURG = 0xc000_1000, 0xc000_5000, 0xc000_9000
G0_SP, G0_HI = 0x7f00_0100_0000, 0x7f00_0100_3000
CURG_SP, CURG_HI = 0xc010_0f00, 0xc010_4000


def go_thread() -> tuple[Memory, Any, Any]:
    mem = Memory()
    mem.map(G0_SP, G0_HI)
    mem.map(CURG_SP - 0x100, CURG_HI)
    mem.put_word(FS + TLS_OFF, G0)
    mem.put_word(G0 + LAY.g_stack_hi, G0_HI)
    mem.put_word(G0 + LAY.g_m, M)
    mem.put_word(M + LAY.m_g0, G0)
    mem.put_word(M + LAY.m_curg, CURG)
    mem.put_word(CURG + LAY.g_sched, CURG_SP)
    mem.put_word(CURG + LAY.g_stack_hi, CURG_HI)
    mem.put_word(CURG + LAY.g_goid, 7)
    regs = SimpleNamespace(rip=0x401000, rsp=G0_SP, rbp=0, rbx=0, r12=0, r13=0, r14=0, r15=0,
                           fs_base=FS)
    rt = SimpleNamespace(layout=LAY, tls_g_offset=TLS_OFF)
    return mem, regs, rt


def test_capture_takes_both_stacks_and_the_runtime_words() -> None:
    mem, regs, rt = go_thread()
    cap = take_capture(regs, mem.read, mem.read_pages, rt)
    r = cap.reader
    for addr in (FS + TLS_OFF, G0 + LAY.g_m, M + LAY.m_curg, CURG + LAY.g_goid,
                 G0_SP, G0_HI - 8, CURG_SP, CURG_HI - 8):
        word(r, addr)
    assert r.misses == 0
    assert (cap.regs.rsp, cap.regs.fs_base) == (G0_SP, FS)
    structs = {G0 & ~(PAGE - 1), M & ~(PAGE - 1), CURG & ~(PAGE - 1)}
    assert structs <= set(cap.hint.pages)
    assert (cap.hint.stack_lo, cap.hint.stack_hi) == (0, G0_HI)  # g0.stack.lo left 0 here
    assert r.calls == len(mem.batches) <= 5
    # the next capture of this thread starts from what this one found: one round trip
    mem.batches.clear()
    again = take_capture(regs, mem.read, mem.read_pages, rt, cap.hint)
    assert again.reader.calls == 1 < r.calls
    assert all(again.reader.has(p) for p in cap.reader.touched)  # every readable one


def test_capture_extends_a_goroutine_stack_to_its_top_and_no_further() -> None:
    mem, regs, rt = go_thread()
    regs.rsp = CURG_HI - 0xa100  # 40 KiB of stack in use: more than the first window
    mem.map(regs.rsp, CURG_HI + MAX_WINDOW)  # memory above the stack: not captured
    mem.put_word(FS + TLS_OFF, CURG)  # in Go code: TLS g is the goroutine
    mem.put_word(CURG + LAY.g_m, M)
    cap = take_capture(regs, mem.read, mem.read_pages, rt)
    pages = {p for batch in mem.batches for p in batch}
    assert CURG_HI - PAGE in pages and CURG_HI not in pages
    assert word(cap.reader, CURG_HI - 8) == 0 and word(cap.reader, regs.rsp) == 0
    assert cap.reader.misses == 0


# --- the collector defers a captured walk until the thread was resumed --------------------
class Job:
    def __init__(self, log: list[str], name: str, deferrable: bool = True) -> None:
        self.log, self.name, self.deferrable, self.misses = log, name, deferrable, 0
        self.answer = Attribution(via=Via.CGO, c_function=name)

    def resolve(self, resumed: bool) -> Attribution:
        self.log.append(f"walk {self.name} {'resumed' if resumed else 'stopped'}")
        self.misses = 2 if resumed else 0
        return self.answer


class CapturingHook:
    def __init__(self, deferrable: bool = True) -> None:
        self.log: list[str] = []
        self.deferrable = deferrable

    def __call__(self, view: Any, draft: Any) -> Attribution | None:
        raise AssertionError("the collector must use capture")

    def capture(self, view: Any, draft: Any) -> Job:
        self.log.append(f"capture {draft.path}")
        return Job(self.log, draft.path, self.deferrable)

    def wants_walk(self, pid: int, draft: Any) -> bool:
        return True

    def reuse(self, pid: int, draft: Any) -> None:
        return None

    def on_exec(self, pid: int, tid: int, exe: str) -> None: ...

    def on_exit(self, pid: int) -> None: ...


def test_the_walk_runs_after_the_resume_and_the_record_keeps_its_attribution() -> None:
    hook = CapturingHook()
    eng, rec = make(hook)
    eng.c.on_spawn(PID, PID, PID, "clone")
    assert eng.openat(PID, "/etc/passwd") is Want.RESULT
    assert hook.log == ["capture /etc/passwd"]  # nothing walked while the thread waits
    eng.c.run_deferred()  # resumed into the call: it stops at the exit first, walk then
    assert hook.log == ["capture /etc/passwd"]
    eng.c.on_result(PID, 3, True)
    assert rec.accesses == []  # its own walk is all that is pending: the record waits
    eng.c.run_deferred()  # the engine resumed the thread
    assert hook.log == ["capture /etc/passwd", "walk /etc/passwd resumed"]
    (a,) = rec.accesses
    assert a.attribution is not None and a.attribution.c_function == "/etc/passwd"
    assert (eng.c.stats.deferred, eng.c.stats.capture_misses) == (1, 2)


def test_any_other_event_runs_pending_walks_first_in_order() -> None:
    hook = CapturingHook()
    eng, rec = make(hook)
    eng.c.on_spawn(PID, PID + 1, PID, "clone")
    eng.openat(PID, "/etc/passwd")
    eng.c.on_result(PID, 3, True)
    eng.openat(PID + 1, "/etc/group")  # another thread's entry: the first walk and record first
    assert hook.log == ["capture /etc/passwd", "walk /etc/passwd resumed", "capture /etc/group"]
    assert [a.path for a in rec.accesses] == ["/etc/passwd"]
    eng.c.on_result(PID + 1, 4, True)
    eng.c.finish()
    assert [a.path for a in rec.accesses] == ["/etc/passwd", "/etc/group"]


def test_a_walk_that_cannot_wait_runs_at_the_stop() -> None:
    hook = CapturingHook(deferrable=False)
    eng, rec = make(hook)
    eng.openat(PID, "/etc/passwd")
    assert hook.log == ["capture /etc/passwd", "walk /etc/passwd stopped"]
    eng.c.on_result(PID, 3, True)
    assert [a.path for a in rec.accesses] == ["/etc/passwd"]
    assert eng.c.stats.deferred == 0


# --- the native capture takes what the Python one takes -----------------------------------
def test_native_capture_equals_the_python_capture_on_real_memory() -> None:
    """A fake Go thread laid out in this process's own memory, captured through
    process_vm_readv by both implementations: the same pages, bytes and hint."""
    if native_capture() is None:
        pytest.skip("the native core is not built")  # under REQUIRE_PRIV: a failure
    buf = ctypes.create_string_buffer(64 * PAGE)
    base = (ctypes.addressof(buf) + PAGE - 1) & ~(PAGE - 1)

    def put(addr: int, value: int) -> None:
        ctypes.c_uint64.from_address(addr).value = value

    fs, g0, m, curg = base + 0x1000, base + 0x2000, base + 0x3000, base + 0x4000
    g0_sp, g0_hi = base + 0x8100, base + 0xb000
    curg_sp, curg_hi = base + 0x20f00, base + 0x24000
    put(fs + TLS_OFF, g0)
    put(g0, base + 0x6000)
    put(g0 + LAY.g_stack_hi, g0_hi)
    put(g0 + LAY.g_m, m)
    put(m + LAY.m_g0, g0)
    put(m + LAY.m_curg, curg)
    put(curg + LAY.g_sched, curg_sp)
    put(curg + LAY.g_stack_hi, curg_hi)
    regs = SimpleNamespace(rip=0, rsp=g0_sp, rbp=0, rbx=0, r12=0, r13=0, r14=0, r15=0,
                           fs_base=fs)
    rt = SimpleNamespace(layout=LAY, tls_g_offset=TLS_OFF)
    pid = os.getpid()

    def read(addr: int, n: int) -> bytes:
        return ptrace.read_memory(pid, addr, n)

    def read_pages(pages: list[int]) -> list[bytes]:
        return ptrace.read_pages(pid, pages)

    hint = NO_HINT
    for _ in range(2):  # cold, then with the hint the first capture left
        py = take_capture(regs, read, read_pages, rt, hint)  # type: ignore[arg-type]
        c = take_capture(regs, read, read_pages, rt, hint, pid)  # type: ignore[arg-type]
        assert py.hint == c.hint
        assert sorted(py.reader.touched) == sorted(c.reader.touched)
        for page in py.reader.touched:
            assert py.reader(page, PAGE) == c.reader(page, PAGE)
        assert c.reader.calls == py.reader.calls
        assert curg_hi - PAGE in c.reader.touched and g0_sp & ~(PAGE - 1) in c.reader.touched
        hint = c.hint
    assert c.reader.calls == 1


# --- a Go-only stack seen before costs a word per frame, not a walk -----------------------
class _Pcln:
    """Three Go functions: (name, entry, end, pcsp delta)."""

    FUNCS = (("main.leaf", 0x1000, 0x1100, 0x10), ("main.caller", 0x2000, 0x2100, 0x20),
             ("runtime.goexit", 0x3000, 0x3100, 0))

    def func_for_pc(self, pc: int) -> Any:
        for name, lo, hi, delta in self.FUNCS:
            if lo <= pc < hi:
                return SimpleNamespace(name=name, entry=lo, has_pcsp=True, flag=0, func_id=0,
                                       delta=delta)
        return None

    def sp_delta(self, fn: Any, pc: int) -> int:
        return int(fn.delta)


class _Maps:
    generation = 0
    modules = ()
    module = SimpleNamespace(name="prog", path="/prog", bias=0,
                             image=SimpleNamespace(pcln=_Pcln(), cfi=None, goruntime=None,
                                                   elf=None))

    def module_for(self, pc: int) -> Any:
        return self.module


def test_a_go_stack_seen_before_is_checked_not_walked() -> None:
    mem = Memory()
    sp = 0x10000
    mem.put_word(sp + 0x10, 0x2050)  # main.leaf's return into main.caller
    mem.put_word(sp + 0x18 + 0x20, 0x3010)  # main.caller's into runtime.goexit
    regs = SimpleNamespace(rip=0x1020, rsp=sp, rbp=0, rbx=0, r12=0, r13=0, r14=0, r15=0,
                           fs_base=0)
    unw = Unwinder(_Maps())  # type: ignore[arg-type]
    mem.map(sp, sp + 0x1000)
    first = unw.unwind(regs, reader_over(mem, [sp]))  # type: ignore[arg-type]
    assert [f.pc for f in first.frames] == [0x1020, 0x2050, 0x3010] and first.end == "root"
    built = unw.steps_built
    again = unw.unwind(regs, reader_over(mem, [sp]))  # type: ignore[arg-type]
    assert (unw.seen_hits, unw.steps_built) == (1, built)
    assert again.frames == first.frames and again.end == "root"
    mem.put_word(sp + 0x10, 0x2060)  # another return address: walked again
    other = unw.unwind(regs, reader_over(mem, [sp]))  # type: ignore[arg-type]
    assert unw.seen_hits == 1 and [f.pc for f in other.frames][1] == 0x2060
    shallow = reader_over(mem, [])  # nothing held: checked against nothing, walked live
    assert unw.unwind(regs, shallow).frames == other.frames  # type: ignore[arg-type]
    assert unw.seen_hits == 1
    mem.put_word(sp + 0x18 + 0x20, 0x1050)  # no longer ends at a root: never kept
    odd = unw.unwind(regs, reader_over(mem, [sp]))  # type: ignore[arg-type]
    assert odd.end != "root"
    assert unw.unwind(regs, reader_over(mem, [sp])).frames == odd.frames  # type: ignore[arg-type]
    assert unw.seen_hits == 1
