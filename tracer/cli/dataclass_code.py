"""Compiled dataclass methods kept across runs, so `cgotrace` does not compile them at every
start.

`@dataclass` writes the source of a class's `__init__`, `__repr__`, `__eq__`, `__hash__`
(and, frozen, `__setattr__`/`__delattr__`) and compiles it with `exec()`: 0.5-1 ms a class
on a 2-core machine, most of it the compile, for the ~25 classes `run -- /bin/true` imports
and as many again on the way to a Go program's first stack walk. `install` shadows the
builtin `exec` in the dataclasses module with `CodeCache.exec`, which looks the source text
up in a table of code objects before compiling it. The text is the key, so a changed class
is compiled anew, and the methods are what `exec` of that text makes: only the compile is
skipped. The table lives under the user cache (tracer/cachedir.py), one marshal file per
bytecode version, written at exit when a run compiled something new.

Only the command line installs it (`tracer.cli.main`): importing tracer as a library or the
pytest plugin leaves the dataclasses module of the host process alone.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import marshal
import os
import sys
from pathlib import Path
from types import CodeType
from typing import Any

from tracer.cachedir import small_caches_off, user_cache

MAX_ENTRIES = 4096  # past this, a save keeps only what the run used (edited classes age out)


class CodeCache:
    """Source text -> code object, read from and written back to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.codes = self._read(path)
        self.used: dict[str, CodeType] = {}
        self.added = False
        self.pid = os.getpid()  # a forked child that exits through Python does not write

    @staticmethod
    def _read(path: Path) -> dict[str, CodeType]:
        try:
            data = marshal.loads(path.read_bytes())
        except (OSError, ValueError, EOFError, TypeError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, CodeType)}

    def exec(self, source: Any, globals: dict[str, Any] | None = None,
             locals: Any = None, /) -> None:
        """`exec` with the compile of a source string taken from the table."""
        if globals is None:  # as the builtin: the caller's globals (the dataclasses module)
            globals = vars(dataclasses)
        if not isinstance(source, str):
            exec(source, globals, locals)
            return
        code = self.codes.get(source)
        if code is None:
            code = compile(source, "<string>", "exec")
            self.codes[source] = code
            self.added = True
        self.used[source] = code
        exec(code, globals, locals)

    def save(self) -> None:
        """Write the table when this run compiled something new (atomically: concurrent
        runs each write a whole file, the last one stays)."""
        if not self.added or os.getpid() != self.pid:
            return
        keep = self.codes if len(self.codes) <= MAX_ENTRIES else self.used
        with contextlib.suppress(OSError, ValueError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(marshal.dumps(keep))
            os.replace(tmp, self.path)


def cache_file() -> Path:
    """The table's file: one per interpreter and bytecode version."""
    from importlib.util import MAGIC_NUMBER

    tag = f"{sys.implementation.cache_tag}-{MAGIC_NUMBER.hex()}"
    return user_cache() / "code" / f"dataclasses-{tag}.marshal"


def install() -> CodeCache | None:
    """Serve the dataclasses module's `exec` from the table, saved at exit; None when the
    small caches are off (CGOTRACE_NO_CACHE) or it is installed already."""
    if small_caches_off() or "exec" in vars(dataclasses):
        return None
    cache = CodeCache(cache_file())
    dataclasses.exec = cache.exec  # type: ignore[attr-defined]  # shadows the builtin
    atexit.register(cache.save)
    return cache
