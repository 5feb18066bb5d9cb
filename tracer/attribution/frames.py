"""What the frames of one walked stack say: via, go_api, user_frame, origin, c_function.

This is the part of an `Attribution` that depends only on the stack's PC chain, so the
attributor memoises it per (pid, PC chain). The frames are named (tracer/attribution/
symbolize.py), then:

* `via`: exec for execve; go when the syscall PC is in Go code; cgo when it is in C code
  with Go frames further out; loader when there are no Go frames and the PC is in the ELF
  interpreter (or the loop saw it before the entry point);
* `user_frame`, `go_api`, `origin`, `no_user_frame`: chosen by `tracer.attribution.appcode`
  (what is the application's code: its main module; innermost application frame; the
  outermost non-application frame below it; the knowledge base's deciding function);
* `c_function`: the C API the Go code called (getpwuid_r, getaddrinfo): the function the
  innermost cgo wrapper names, found also when the C frames are unnamed or skipped; without
  a wrapper, the outermost named C frame that is not cgo plumbing;
* `unsymbolized`: the modules the walk could not name, and why the walk ended early.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast

from probes.knowledge import origin_functions
from tracer.attribution.appcode import choose, package_of
from tracer.attribution.symbolize import NamedFrame, Symbolizer
from tracer.trace.model import Frame, Via
from tracer.unwind.stack import Stack

if TYPE_CHECKING:
    from tracer.attribution.modules import Module
    from tracer.attribution.state import ProcessState

EXEC_SYSCALLS: Final = frozenset({"execve", "execveat"})
_WRAPPER = re.compile(r"(?:^|\.)_C2?func_(\w+)$")
_C_WRAPPER = re.compile(r"^_cgo_[0-9a-f]+_C2?func_(\w+)$")
_C_PLUMBING = re.compile(r"^(_cgo_|x_cgo_|crosscall|_rt0_|__libc_start|_start$|"
                         r"runtime\.|start_thread$|clone3?$)")
_STACK_ENDS: Final = {"scan-failed": "C code without CFI and no asmcgocall return within 64 KiB",
                      "cfa-expression": "CFI uses an expression (PLT or signal frame)",
                      "unreadable": "stack memory unreadable",
                      "bad-symbols": "corrupt symbol tables"}


@dataclass(frozen=True, slots=True)
class StackAttribution:
    """The part of an Attribution that depends only on the PC chain (memoisable)."""

    via: Via
    go_api: str | None
    user_frame: Frame | None
    c_function: str | None
    stack: tuple[Frame, ...]
    unsymbolized: tuple[str, ...]
    started_by_go: bool  # the stack ends at runtime.goexit (a `go` statement started it)
    origin: str | None = None
    no_user_frame: str | None = None
    via_goroutine: bool = False  # user_frame is a creator's (set on parent analyses)


def attribute_stack(st: ProcessState, symbolizer: Symbolizer, stack: Stack, syscall: str,
                    loader_phase: bool) -> StackAttribution:
    """What the frames of `stack`, walked in process `st` at `syscall`, say."""
    named: list[NamedFrame] = []
    for raw in stack.frames:
        named.extend(symbolizer.name(raw))
    frames = tuple(n.frame for n in named)
    choice = choose(frames, [n.kind for n in named], st.app_code(), origin_functions())
    has_go = any(n.kind == "go" for n in named)
    via = _via(st, stack, named, syscall, loader_phase)
    c_func = c_function(named) if via in (Via.CGO, Via.EXEC) and has_go else None
    outer = next((n for n in reversed(named) if n.kind == "go"), None)
    started = (outer is not None and outer.frame.function == "runtime.goexit"
               and stack.end == "root")
    return StackAttribution(via, choice.go_api, choice.user_frame, c_func, frames,
                            unsymbolized(stack), started, choice.origin,
                            choice.no_user_frame)


def _via(st: ProcessState, stack: Stack, named: list[NamedFrame], syscall: str,
         loader_phase: bool) -> Via:
    innermost = named[0].kind if named else "unknown"
    if syscall in EXEC_SYSCALLS:
        return Via.EXEC
    if innermost == "go":
        return Via.GO
    if any(n.kind == "go" for n in named):
        return Via.CGO
    if loader_phase or st.in_interpreter(stack):
        return Via.LOADER
    return Via.UNKNOWN


def c_name(symbol: str) -> str:
    """A C symbol as an API name: 'getpwuid_r@@GLIBC_2.2.5' -> 'getpwuid_r'."""
    return symbol.split("@", 1)[0]


def c_function(named: list[NamedFrame]) -> str | None:
    """The C API the Go code called in the innermost cgo call.

    That is the function cgo's wrapper names (`_Cfunc_getaddrinfo`; os/user's `my` helpers
    stripped: `_Cfunc_mygetpwuid_r` -> `getpwuid_r`), whether or not the walk could name the
    C frames (static musl libc has no CFI: they are skipped). Without a wrapper (C code
    reached some other way) it is the outermost named C frame of the call that is not cgo
    plumbing. tests/integration/test_attribution_matrix.py checks the answer against the C
    frames of the stack whenever the walk reached the wrapper through them.
    """
    c_frames: list[str] = []  # innermost first
    c_wrapper: str | None = None  # the C half of the wrapper (internal link)
    for n in named:
        fn = n.frame.function
        if n.kind == "go":
            if fn and (m := _WRAPPER.search(fn)):
                wrapper = m.group(1)
                return wrapper.removeprefix("my") if package_of(fn) == "os/user" else wrapper
            if fn and not fn.startswith("runtime."):
                break
            continue
        if fn:
            m = _C_WRAPPER.match(fn)
            if m:
                c_wrapper = c_wrapper or m.group(1)
            elif not _C_PLUMBING.match(fn):
                c_frames.append(c_name(fn))
    return c_wrapper or (c_frames[-1] if c_frames else None)


def unsymbolized(stack: Stack) -> tuple[str, ...]:
    """'module (reason)' for each module of `stack` the walk could not name, and for a
    walk that ended early, why."""
    out: dict[str, str] = {}
    for raw in stack.frames:
        mod = cast("Module | None", raw.module)  # the process layer's Module
        if mod is None:
            out.setdefault(f"{raw.pc:#x}", "no mapping")
        elif mod.image is None:
            if mod.name != "[vdso]":
                out.setdefault(mod.name, "not an ELF file")
        elif (reason := mod.image.unsymbolized_reason()) is not None:
            out.setdefault(mod.name, reason)
    if stack.end in _STACK_ENDS:
        last = stack.frames[-1].module if stack.frames else None
        name = last.name if last is not None else "stack"
        out.setdefault(name, f"stack ends: {_STACK_ENDS[stack.end]}")
    return tuple(f"{name} ({reason})" for name, reason in out.items())
