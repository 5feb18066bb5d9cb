"""Give each access a `kind` and say whether static analysis would have found it (`hidden`).

Rules, in order:

1. The interpreter (synthesised at exec from the process's own mappings) is `interpreter`,
   accounted for by PT_INTERP.
2. execve/execveat: `executable`. The traced program's own first exec is accounted for;
   any other program it runs is hidden.
3. A shared object opened during the process's *loader phase* is a `startup-library`;
   after it, a `dlopen-library`. The loader phase of a process image starts at exec and
   ends at the first watched syscall whose instruction pointer lies outside the
   interpreter's mappings (ld.so makes every loader-phase call; the Go runtime opens
   /sys/kernel/mm/transparent_hugepage/hpage_pmd_size from its own text in osinit, before
   any user code can dlopen). A static binary has no loader phase. Limitation: a C program
   whose first watched call after start is itself a dlopen would have that dlopen counted
   as startup.
4. connect: `probes.knowledge.connect_kind` decides. `socket` only for a name server
   (port 53 of an address the resolv.conf in force names, as recorded in the trace header's
   `resolv_conf`; any port 53 when none is recorded) and the daemon sockets of the path
   rules (nscd, systemd-userdb); `runtime` for /dev sockets; every other connect is
   `network`: the program's own traffic (an upstream, a database, a peer), counted by the
   findings, never a dependency.
5. Otherwise `probes.knowledge.classify_path` decides (config, data, socket, runtime...);
   stat/access/readlink without a rule is `probe`.

Hidden: interpreter and NEEDED closure (`StaticFacts.startup_paths`, or a basename among
the closure's libraries) are not; failed loader-phase lookups (search-path probes such as
glibc-hwcaps directories) are not; config, data, socket and dlopen accesses always are;
runtime (/proc, /sys, /dev), `network` (the program's own connections) and `probe`
(stat/access/readlink, O_PATH/O_DIRECTORY opens: checks and directory walks, not uses)
never; a path in the static closure (e.g. /etc/ld.so.cache re-read by dlopen) never;
`other` is hidden when it succeeded (a file the program really uses that no static tool
lists).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from probes.knowledge import classify_path, connect_kind
from tracer.trace.model import AccessKind

_SHARED_OBJECT = re.compile(r"\.so(\.[0-9][0-9.]*)?$")
_DIR_OR_PATH = 0o200000 | 0o10000000  # O_DIRECTORY | O_PATH: walking a tree, not reading
_ALWAYS_HIDDEN = frozenset({AccessKind.CONFIG, AccessKind.DATA, AccessKind.SOCKET,
                            AccessKind.DLOPEN_LIBRARY})
_NEVER_HIDDEN = frozenset({AccessKind.RUNTIME, AccessKind.PROBE, AccessKind.NETWORK})


def is_shared_object(path: str) -> bool:
    return _SHARED_OBJECT.search(path) is not None


class Closure:
    """What static facts account for in one binary: interpreter + NEEDED closure paths."""

    def __init__(self, interpreter: str | None, paths: frozenset[str],
                 names: frozenset[str]):
        self.interpreter = interpreter
        self.paths = paths
        self.names = names  # basenames of the closure's libraries, as named and resolved

    def accounts_for(self, path: str) -> bool:
        return path in self.paths or os.path.basename(path) in self.names

    @classmethod
    def from_facts(cls, facts: Any) -> Closure:
        """From `tracer.binary.facts.StaticFacts`: interpreter, needed, closure."""
        paths: set[str] = set(getattr(facts, "startup_paths", ()) or ())
        names: set[str] = set(getattr(facts, "needed", ()) or ())
        closure = getattr(facts, "closure", None)
        for lib in getattr(closure, "libraries", ()) or ():
            for p in (lib.name, lib.path, lib.real_path):
                if p:
                    names.add(os.path.basename(p))
        interp = getattr(facts, "interpreter", None)
        if interp:
            paths.add(interp)
        return cls(interp, frozenset(paths), frozenset(names))


def load_closure(path: str, rootfs: str | None = None) -> Closure | None:
    """Static facts for `path` via tracer.binary.facts (lazy import: it pulls in pyelftools).

    None when the binary cannot be inspected; classification then treats loader-phase
    libraries as accounted for (the loader opens exactly the NEEDED closure).
    """
    try:
        from tracer.binary.facts import inspect_binary

        return Closure.from_facts(inspect_binary(path, rootfs=rootfs, strict=False))
    except Exception:
        return None


class Classifier:
    """kind at the entry stop (cheap, cached per path), hidden at the exit stop.

    `closure_for(exe)` supplies static facts per executed image (cached here per path);
    `nameservers` are those of the resolv.conf in force (None: not known, any port 53 is a
    name server).
    """

    def __init__(self, closure_for: Callable[[str], Closure | None] = load_closure,
                 nameservers: tuple[str, ...] | None = None):
        self._closure_for = closure_for
        self.nameservers = nameservers
        self._closures: dict[str, Closure | None] = {}
        self._path_kind: dict[str, AccessKind | None] = {}

    def closure(self, exe: str) -> Closure | None:
        if exe not in self._closures:
            self._closures[exe] = self._closure_for(exe)
        return self._closures[exe]

    def path_kind(self, path: str) -> AccessKind | None:
        kind = self._path_kind.get(path, AccessKind.OTHER)
        if kind is AccessKind.OTHER and path not in self._path_kind:
            rule = classify_path(path)
            kind = rule.kind if rule is not None else None
            if len(self._path_kind) < 65536:
                self._path_kind[path] = kind
        return kind

    def seed(self, exe: str, closure: Closure | None) -> None:
        """Static facts already computed for `exe` (the launched program)."""
        self._closures[exe] = closure

    def kind(self, cls: str, path: str, loader_phase: bool, flags: int = 0) -> AccessKind:
        """`flags` are the raw open flags (O_DIRECTORY/O_PATH opens are probes)."""
        if cls == "exec":
            return AccessKind.EXECUTABLE
        if cls == "connect":
            return connect_kind(path, self.nameservers)
        by_rule = self.path_kind(path)
        if cls == "open" and is_shared_object(path):
            if loader_phase:
                return AccessKind.STARTUP_LIBRARY
            return AccessKind.DLOPEN_LIBRARY
        if by_rule is not None:
            if by_rule is AccessKind.DLOPEN_LIBRARY and loader_phase:
                return AccessKind.STARTUP_LIBRARY
            return by_rule
        if cls == "probe" or (cls == "open" and flags & _DIR_OR_PATH):
            if is_shared_object(path):
                return AccessKind.STARTUP_LIBRARY if loader_phase else AccessKind.DLOPEN_LIBRARY
            return AccessKind.PROBE
        return AccessKind.OTHER

    def hidden(self, kind: AccessKind, path: str, result: str, loader_phase: bool,
               exe: str | None, first_exec: bool = False) -> bool:
        if kind is AccessKind.INTERPRETER:
            closure = self.closure(exe) if exe else None
            return closure is not None and closure.interpreter not in (None, path)
        if kind is AccessKind.EXECUTABLE:
            return not first_exec
        if kind in _NEVER_HIDDEN:
            return False
        if exe and kind is not AccessKind.DLOPEN_LIBRARY:
            closure = self.closure(exe)
            if closure is not None and path in closure.paths:
                return False
        if loader_phase:
            if result != "ok":
                return False
            closure = self.closure(exe) if exe else None
            return closure is not None and not closure.accounts_for(path)
        if kind in _ALWAYS_HIDDEN:
            return True
        return result == "ok"
