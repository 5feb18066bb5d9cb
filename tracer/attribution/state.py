"""What the attributor keeps per traced process, and what it counts over all of them.

A `ProcessState` lives from a process's first attributed access to its exec or exit (the
attributor drops it then: a new image means new modules, new application code). It holds
the engine's view of the stopped thread (memory readers, other threads' registers), the
unwinder over the process's modules, and the tables each part of the attribution keeps:
the keep-policy's counts (tracer/attribution/policy.py), the creator chain's
(tracer/attribution/creator.py), the interned answers, and what is decided once per exec
(the application's code, the ELF interpreter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracer.attribution.appcode import AppCode
from tracer.attribution.creator import CreatorMemory
from tracer.attribution.modules import ProcessMaps
from tracer.attribution.policy import KeepPolicy
from tracer.trace.model import Attribution
from tracer.unwind.capture import Hint
from tracer.unwind.stack import PagesReader, Reader, Stack, Unwinder

if TYPE_CHECKING:
    from tracer.engine.base import Registers


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
    captures: int = 0  # threads captured for a walk (tracer/unwind/capture.py)
    capture_calls: int = 0  # read_pages calls (process_vm_readv) those captures made
    deferred: int = 0  # walks run after the thread was resumed
    capture_misses: int = 0  # pages those read live: not in the capture (may be stale)
    capture_misses_stopped: int = 0  # pages walks on a capture read live, thread stopped


def no_memory(addr: int, n: int) -> bytes:
    """The reader of a process no engine view is bound to (nothing is readable)."""
    return b""


def no_regs(tid: int) -> Registers | None:
    """Other threads' registers, before an engine view is bound: none."""
    return None


class ProcessState:
    """One traced process, as the attributor knows it (see the module docstring)."""

    def __init__(self, pid: int, maps: ProcessMaps, read: Reader,
                 read_pages: PagesReader | None = None) -> None:
        self.pid = pid
        self.maps = maps
        self.read = read
        self.read_pages = read_pages
        # registers of another thread of this process in a ptrace-stop (the engine's view)
        self.regs_of: Callable[[int], Registers | None] = no_regs
        self.tid: int | None = None  # the thread of the access being attributed
        self.unwinder = Unwinder(maps)
        self.pages: dict[int, list[int]] = {}  # tid -> pages its last walk touched
        self.hints: dict[int, Hint] = {}  # tid -> what its last capture found
        self.keep = KeepPolicy()
        self.creators = CreatorMemory()
        self.interned: dict[tuple[Any, ...], Attribution] = {}
        self.interpreters: set[str] | None = None
        self.appcode: AppCode | None = None

    def app_code(self) -> AppCode:
        """What is application code in this process (tracer.attribution.appcode), decided
        once per exec."""
        if self.appcode is None:
            self.appcode = self._detect_app_code()
        return self.appcode

    def _detect_app_code(self) -> AppCode:
        mod = next((m for m in self.maps.go_modules() if m.image is not None), None)
        img = mod.image if mod is not None else None
        rt = img.goruntime if img is not None else None
        pcln = img.pcln if img is not None else None

        def lookup_file(name: str) -> str | None:
            fn = pcln.lookup_function(name) if pcln is not None else None
            if pcln is None or fn is None:
                return None
            frames = pcln.frames(fn.entry)
            return frames[-1].file if frames else None

        return AppCode.detect(rt.main_module if rt is not None else None,
                              rt.main_path if rt is not None else None, lookup_file)

    def in_interpreter(self, stack: Stack) -> bool:
        """Whether the innermost frame of `stack` is in the ELF interpreter (ld.so) that
        one of this process's modules names."""
        if not stack.frames or stack.frames[0].module is None:
            return False
        interpreters = self._interpreters()
        mod = stack.frames[0].module
        return mod.path in interpreters or mod.name in {i.rsplit("/", 1)[-1]
                                                        for i in interpreters}

    def _interpreters(self) -> set[str]:
        if self.interpreters is None:
            found: set[str] = set()
            for m in self.maps.modules:
                elf = m.image.elf if m.image is not None else None
                if elf is not None:
                    try:
                        if elf.interpreter:
                            found.add(elf.interpreter)
                    except Exception:  # noqa: BLE001 - a bad PT_INTERP names no loader
                        continue
            self.interpreters = found
        return self.interpreters
