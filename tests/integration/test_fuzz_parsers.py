"""Hostile input: mutated Go binaries through ElfImage + PclnTable + read_buildinfo.

The only acceptable failure is a tracer.errors subclass (BadBinaryError, NotGoBinaryError);
IndexError, struct.error, ValueError, RecursionError or a hang are bugs. Mutations aim at
the bytes that matter (ELF/program/section headers, pclntab header, function table,
_func records, pcvalue tables, build info, moduledata) as well as anywhere.

10,000 cases in all: a deterministic seeded loop plus a hypothesis property test.
"""

from __future__ import annotations

import random
import signal
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.binary.buildinfo import read_buildinfo
from tracer.binary.elf import ElfImage
from tracer.binary.pclntab import PclnTable
from tracer.errors import CgotraceError

pytestmark = pytest.mark.go

LOOP_CASES = 9_600
HYPOTHESIS_CASES = 400
CASE_BUDGET_S = 2.0
INTERESTING_U32 = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
                   0xFFFFFFFF)


class Hang(Exception):
    pass


@contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"case took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Target:
    """A real small Go binary and the byte ranges worth mutating."""

    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes()
        img = ElfImage(self.data)
        table = PclnTable.from_image(img)
        main = table.lookup_function("main.main")
        assert main is not None
        h = img.header
        pcl = img.sections[".gopclntab"]
        bi = img.sections[".go.buildinfo"]
        lay = table._layout
        functab = pcl.offset + lay.functab_off
        nf = table.nfunc
        first_rec = pcl.offset + lay.functab_off + table._funcoffs[0]
        md = table._moduledata
        assert md is not None
        md_off = img.vaddr_to_offset(md)
        assert md_off is not None
        self.regions: list[tuple[int, int]] = [
            (0, 64),
            (int(h["e_phoff"]), int(h["e_phoff"]) + int(h["e_phnum"]) * 56),
            (int(h["e_shoff"]), int(h["e_shoff"]) + int(h["e_shnum"]) * 64),
            (pcl.offset, pcl.offset + 80),
            (functab, functab + (nf + 1) * 8),
            (first_rec, first_rec + 44 * nf),
            (pcl.offset + main.record, pcl.offset + main.record + 64),
            (pcl.offset + lay.pctab_off + main.pcln, pcl.offset + lay.pctab_off + main.pcln + 64),
            (pcl.offset + lay.pctab_off, pcl.offset + lay.functab_off),
            (bi.offset, bi.offset + bi.size),
            (md_off, md_off + 400),
            (0, len(self.data)),
        ]
        self.pcs = [main.entry, main.entry + 17, main.end - 1, table.text_start,
                    table.text_start + 0x1234, 0, 2**64 - 1]


@pytest.fixture(scope="module")
def target(sample: Callable[..., Path]) -> Target:
    return Target(sample("hello", "stripped", "1.27.3"))


def mutate(data: bytes, regions: list[tuple[int, int]], rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        lo, hi = rng.choice(regions)
        hi = min(hi, len(buf))
        if hi <= lo:
            continue
        at = rng.randrange(lo, hi)
        op = rng.randrange(6)
        if op == 0:  # bit flip
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 1:  # interesting byte
            buf[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif op == 2 and at + 4 <= len(buf):  # interesting u32 (offsets, counts)
            struct.pack_into("<I", buf, at - at % 4, rng.choice(INTERESTING_U32))
        elif op == 3 and len(buf) > 64:  # splice: copy a chunk from elsewhere in the file
            n = rng.randrange(1, 64)
            src = rng.randrange(0, len(buf) - n)
            buf[at:at + n] = buf[src:src + n]
        elif op == 4:  # random bytes
            n = rng.randrange(1, 16)
            buf[at:at + n] = bytes(rng.randrange(256) for _ in range(n))
        else:  # truncate inside a region that matters
            del buf[at:]
            break
    return bytes(buf)


def exercise(data: bytes, pcs: list[int], names: bool = True) -> None:
    """Everything a caller does with a binary; only CgotraceError may escape. `names`:
    also build the name index (the costliest step, so the loop does it in 1 case of 4)."""
    try:
        img = ElfImage(data)
    except CgotraceError:
        return
    with suppress(CgotraceError):
        read_buildinfo(img)
    try:
        table = PclnTable.from_image(img)
    except CgotraceError:
        return
    for pc in pcs:
        try:
            table.frames(pc)
            table.frames(pc, is_return_address=True)
            f = table.func_for_pc(pc)
            if f is not None:
                table.sp_delta(f, pc)
        except CgotraceError:
            pass
    if names:
        with suppress(CgotraceError):
            table.lookup_function("main.main")


def run_case(data: bytes, pcs: list[int], names: bool = True) -> str | None:
    """None if the case behaved, else what went wrong."""
    try:
        with time_budget(CASE_BUDGET_S):
            exercise(data, pcs, names)
    except Hang as e:
        return f"hang: {e}"
    except Exception as e:  # noqa: BLE001 - the point of the test
        return f"{type(e).__name__}: {e}"
    return None


def test_unmutated_binary_works(target: Target) -> None:
    assert run_case(target.data, target.pcs) is None
    table = PclnTable.from_image(ElfImage(target.data))
    assert table.frames(target.pcs[1])[-1].function == "main.main"


def test_seeded_mutations(target: Target) -> None:
    rng = random.Random(20_251_127)
    failures = []
    for case in range(LOOP_CASES):
        data = mutate(target.data, target.regions, rng)
        problem = run_case(data, target.pcs, names=case % 4 == 0)
        if problem is not None:
            failures.append((case, problem))
    assert not failures, f"{len(failures)} of {LOOP_CASES} cases failed, first: {failures[:5]}"


@settings(max_examples=HYPOTHESIS_CASES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), region=st.integers(0, 11),
       offset=st.integers(0, 2**20), value=st.binary(min_size=1, max_size=16),
       truncate=st.booleans())
def test_property_mutations(target: Target, seed: int, region: int, offset: int, value: bytes,
                            truncate: bool) -> None:
    lo, hi = target.regions[region]
    at = lo + offset % max(1, hi - lo)
    buf = bytearray(target.data)
    buf[at:at + len(value)] = value
    if truncate:
        del buf[at + len(value):]
    data = mutate(bytes(buf), target.regions, random.Random(seed))
    assert run_case(data, target.pcs) is None


def test_truncations_everywhere(target: Target) -> None:
    """Every prefix length class: header-only, mid-pclntab, mid-buildinfo."""
    step = max(1, len(target.data) // 97)
    for n in [0, 1, 15, 16, 63, 64, 100, *range(0, len(target.data), step)]:
        assert run_case(target.data[:n], target.pcs) is None, n
