"""From a stopped thread to an `Attribution`: which Go code caused this access, and how.

`Attributor` is the hook `tracer.loop` calls at the entry stop of every kept access
(docs/architecture.md, "Attributor hook"). Per call: read the registers, walk the stack
(`tracer.unwind.stack`), name the frames, then pick:

* `via`: exec for execve; go when the syscall PC is in Go code; cgo when it is in C code
  with Go frames further out; loader when there are no Go frames and the PC is in the ELF
  interpreter (or the loop saw it before the entry point);
* `user_frame`: the innermost frame of the main module (package main or the main module's
  packages), skipping cgo's generated `_Cfunc_` wrappers;
* `go_api`: the frame just inside the user frame: what the program called
  (`os/user.LookupId`, `net.(*Resolver).LookupHost`, `main._Cfunc_sqlite3_open`);
* `c_function`: the C function the cgo wrapper called (getpwuid_r, getaddrinfo) from the C
  frames' names, or from the wrapper's name when C frames are unnamed or skipped;
* for a goroutine started by a `go` statement, `parent_goroutine` and `creator_frame`
  (g.parentGoid, g.gopc); when such a goroutine has no user frame (net's lookup helper
  goroutine in doBlockingWithCtx), the creator goroutine is found in `runtime.allgs`, its
  parked stack is walked, and its user frame and API are used.

Costs: names are cached per (image, pc); the analysis is memoised per (pid, PC chain), so a
repeated call path costs its memory reads (a few pages, cached per stop) plus a dict lookup.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from tracer.model import Attribution, Frame, Via
from tracer.symbols.maps import LoadedImage, MapsRegistry, Module, ProcessMaps
from tracer.unwind.stack import (
    MemoryError_,
    PagedReader,
    RawFrame,
    Reader,
    Registers,
    Stack,
    Unwinder,
    word,
)

EXEC_SYSCALLS: Final = frozenset({"execve", "execveat"})
_WRAPPER = re.compile(r"(?:^|\.)_C2?func_(\w+)$")
_C_WRAPPER = re.compile(r"^_cgo_[0-9a-f]+_C2?func_(\w+)$")
_C_PLUMBING = re.compile(r"^(_cgo_|x_cgo_|crosscall|_rt0_|__libc_start|_start$|"
                         r"runtime\.|start_thread$|clone3?$)")
_G_WAITING: Final = 4
_G_SYSCALL: Final = 3
MAX_PARENT_DEPTH: Final = 4
MAX_ALLGS: Final = 100_000


@dataclass(frozen=True, slots=True)
class _Named:
    """A symbolized frame and what kind of code it is ("go", "c", "unknown")."""

    frame: Frame
    kind: str


def package_of(function: str) -> str:
    """'net.(*Resolver).LookupHost' -> 'net'; 'example.com/x/y.F.func1' -> 'example.com/x/y'."""
    slash = function.rfind("/")
    dot = function.find(".", slash + 1)
    return function[:dot] if dot >= 0 else function


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
            hit = (self._frames(mod.image, rel, raw), raw.kind)
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


class _ProcessState:
    def __init__(self, pid: int, maps: ProcessMaps, read: Reader) -> None:
        self.pid = pid
        self.maps = maps
        self.read = read
        self.unwinder = Unwinder(maps)
        self.goids: dict[int, int] = {}  # goid -> g address (from allgs)
        self.parents: dict[tuple[int, int], tuple[int | None, Frame | None,
                                                   _Analysis | None]] = {}
        self.interpreters: set[str] | None = None


class Attributor:
    """The loop's attributor hook. One instance serves every traced process."""

    def __init__(self, registry: MapsRegistry | None = None, *,
                 get_regs: Callable[[int], Registers] | None = None,
                 reader_for: Callable[[int], Reader] | None = None) -> None:
        self.registry = registry or MapsRegistry()
        self._get_regs = get_regs
        self._reader_for = reader_for
        self.symbolizer = Symbolizer()
        self._procs: dict[int, _ProcessState] = {}
        self._memo: dict[tuple[int, tuple[int, ...], str, bool], _Analysis] = {}
        self.calls = 0
        self.seconds = 0.0

    # --- the hook -----------------------------------------------------------------------
    def __call__(self, pid: int, tid: int, draft: Any) -> Attribution | None:
        t0 = time.perf_counter()
        try:
            if self._get_regs is None:
                from tracer import ptrace

                regs: Registers = ptrace.get_regs(tid)
            else:
                regs = self._get_regs(tid)
        except Exception:  # noqa: BLE001 - thread gone (ESRCH): nothing to attribute
            return None
        try:
            return self.attribute(pid, regs, str(getattr(draft, "syscall", "")),
                                  loader_phase=bool(getattr(draft, "loader_phase", False)))
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - t0

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
            if self._reader_for is None:
                from tracer import ptrace

                read = ptrace.memory_reader(pid)
            else:
                read = self._reader_for(pid)
            st = _ProcessState(pid, self.registry.for_pid(pid), read)
            self._procs[pid] = st
        return st

    # --- the work -----------------------------------------------------------------------
    def attribute(self, pid: int, regs: Registers, syscall: str, *,
                  loader_phase: bool = False) -> Attribution:
        """Attribution for thread registers `regs` of process `pid`, stopped at `syscall`."""
        st = self._state(pid)
        st.maps.epoch += 1
        read = PagedReader(st.read)
        stack = st.unwinder.unwind(regs, read)
        key = (pid, tuple(f.pc for f in stack.frames), syscall, loader_phase)
        analysis = self._memo.get(key)
        if analysis is None:
            analysis = self._analyse(st, stack, syscall, loader_phase)
            self._memo[key] = analysis
        goroutine = parent = None
        creator: Frame | None = None
        user_frame, go_api = analysis.user_frame, analysis.go_api
        ctx = st.unwinder.go_context(read, regs.fs_base)
        if stack.g is not None and ctx is not None:
            lay = ctx.rt.layout
            try:
                goroutine = word(read, stack.g + lay.g_goid)
                if analysis.started_by_go:
                    parent, creator, parent_analysis = self._creator(st, read, stack.g,
                                                                     goroutine, regs.fs_base)
                    if user_frame is None and parent_analysis is not None:
                        user_frame = parent_analysis.user_frame
                        go_api = parent_analysis.go_api or go_api
            except MemoryError_:
                pass
        return Attribution(via=analysis.via, go_api=go_api, user_frame=user_frame,
                           c_function=analysis.c_function, stack=analysis.stack,
                           goroutine=goroutine, parent_goroutine=parent,
                           creator_frame=creator, unsymbolized=analysis.unsymbolized)

    def _analyse(self, st: _ProcessState, stack: Stack, syscall: str,
                 loader_phase: bool) -> _Analysis:
        named: list[_Named] = []
        for raw in stack.frames:
            named.extend(self.symbolizer.name(raw))
        frames = tuple(n.frame for n in named)
        go_rt = next((m.image.goruntime for m in st.maps.go_modules()
                      if m.image is not None), None)
        main_path = go_rt.main_module if go_rt is not None else None
        user_i = next((i for i, n in enumerate(named)
                       if n.kind == "go" and _is_user(n.frame, main_path)), None)
        user_frame = named[user_i].frame if user_i is not None else None
        go_api = _go_api(named, user_i)
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
                         _unsymbolized(stack), started)

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
        parent_goid = word(read, g + lay.g_parent_goid) or None
        creator = None
        if gopc:
            raw = RawFrame(gopc, st.maps.module_for(gopc), "go", True)
            names = self.symbolizer.name(raw)
            creator = names[0].frame if names and names[0].frame.function else None
        if creator is None or package_of(creator.function or "") == "runtime":
            # runtime.main's goroutine (created by rt0_go) and runtime-internal workers
            return None, None, None
        parent_analysis = None
        if parent_goid is not None and depth < MAX_PARENT_DEPTH:
            parent_analysis = self._parent_analysis(st, read, parent_goid, fs_base, depth)
        result = (parent_goid, creator, parent_analysis)
        st.parents[(g, goid)] = result
        return result

    def _parent_analysis(self, st: _ProcessState, read: Reader, goid: int, fs_base: int,
                         depth: int) -> _Analysis | None:
        ctx = st.unwinder.go_context(read, fs_base)
        if ctx is None:
            return None
        g = self._find_g(st, read, goid, fs_base)
        if g is None:
            return None
        lay = ctx.rt.layout
        status = word(read, g + lay.g_atomicstatus) & 0xFFFF
        if status == _G_SYSCALL:
            sp, pc = word(read, g + lay.g_syscallsp), word(read, g + lay.g_syscallpc)
        elif status == _G_WAITING or status == 1:
            sp, pc = word(read, g + lay.g_sched), word(read, g + lay.g_sched + 8)
        else:
            return None  # running on another thread: its saved context is stale
        stack = st.unwinder.unwind_goroutine(pc, sp, read, fs_base)
        analysis = self._analyse(st, stack, "", False)
        if analysis.user_frame is None and analysis.started_by_go:
            _, _, grand = self._creator(st, read, g, goid, fs_base, depth + 1)
            return grand
        return analysis

    def _find_g(self, st: _ProcessState, read: Reader, goid: int, fs_base: int) -> int | None:
        g = st.goids.get(goid)
        if g is not None:
            return g
        ctx = st.unwinder.go_context(read, fs_base)
        if ctx is None or ctx.rt.allgs is None:
            return None
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


def _is_user(frame: Frame, main_module: str | None) -> bool:
    fn = frame.function
    if not fn:
        return False
    if fn.startswith("main."):
        rest = fn[5:]
        return not rest.startswith(("_Cfunc_", "_C2func_", "_cgo", "_cgoexp"))
    return bool(main_module) and (fn.startswith(f"{main_module}/") or
                                  fn.startswith(f"{main_module}."))


def _go_api(named: list[_Named], user_i: int | None) -> str | None:
    """The function the user frame called; without a user frame, the outermost non-runtime
    Go function (package init, a library's own goroutine)."""
    if user_i is not None:
        for n in reversed(named[:user_i]):
            if n.kind == "go" and n.frame.function:
                return n.frame.function
            if n.kind == "c" and n.frame.function:  # internal-link wrapper in pclntab
                m = _C_WRAPPER.match(n.frame.function)
                if m:
                    return n.frame.function
        return None
    for n in reversed(named):
        fn = n.frame.function
        if n.kind == "go" and fn and package_of(fn) not in ("runtime", "internal/runtime"):
            return fn
    outer = next((n.frame.function for n in reversed(named) if n.kind == "go"), None)
    return outer


def _c_function(named: list[_Named]) -> str | None:
    """The C function behind the innermost cgo call (see the module docstring)."""
    c_frames: list[str] = []
    wrapper: str | None = None
    for n in named:
        fn = n.frame.function
        if n.kind == "go":
            if fn and (m := _WRAPPER.search(fn)):
                wrapper = m.group(1)
                if package_of(fn) == "os/user":
                    wrapper = wrapper.removeprefix("my")
            if fn and not fn.startswith("runtime."):
                break
            continue
        if fn:
            m = _C_WRAPPER.match(fn)
            if m:
                wrapper = wrapper or m.group(1)
                continue
            c_frames.append(fn.split("@", 1)[0])
    if wrapper is not None:
        for fn in reversed(c_frames):
            if fn.lstrip("_") == wrapper:
                return wrapper
        return wrapper
    for fn in reversed(c_frames):
        if not _C_PLUMBING.match(fn):
            return fn
    return None


def _unsymbolized(stack: Stack) -> tuple[str, ...]:
    out: dict[str, str] = {}
    for raw in stack.frames:
        mod: Module | None = raw.module
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
