"""The user's cgotrace cache directory: `$XDG_CACHE_HOME/cgotrace`, else
`~/.cache/cgotrace`. The facts cache (tracer/binary/factcache.py), the parsed rules
(probes/knowledge.py) and, outside a checkout, generated root trees live under it; clear
it with `rm -rf ~/.cache/cgotrace`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cgotrace"


def small_caches_off() -> bool:
    """`CGOTRACE_NO_CACHE=1` turns off the facts and rules caches."""
    return bool(os.environ.get("CGOTRACE_NO_CACHE"))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) for the block: processes and
    threads alike wait for each other (each open is its own lock owner)."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
