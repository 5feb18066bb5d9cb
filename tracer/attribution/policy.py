"""Which accesses the attributor works on, and how much: the keep-policy, and lazy building.

Keep-policy (docs/attribution.md, "Keep-policy"): a stack walk costs ~0.1 ms, and a
program may open one file 20,000 times from one call site. So per process (`KeepPolicy`,
one per traced process, held by its `ProcessState`):

* the first FULL_PER_PATH accesses of each (syscall, path) are walked in full;
* after that a short walk (the syscall PC and the first FAST_FRAMES frame PCs) gives a
  fast key: a key new for that path gets a full walk, a known one reuses the earlier
  Attribution, except when the key's count reaches a power of two (re-sampled);
* past SAMPLE_AFTER accesses of one (syscall, path) even the fast key is only taken at
  power-of-two counts; the accesses between reuse that path's latest Attribution without a
  register read. A 20,000-open loop then pays for ~23 walks, not 20,000;
* without registers (the notify engine lets most calls run without a stop) `wants_walk`
  says which accesses need a stop for a walk, and `reuse` what the others carry.

`LazyAttributor` builds the attributor at the first access that needs a stack, so a program
that never runs its own code (`run -- /bin/true`) never imports the unwinder. This module
imports nothing heavy for that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from tracer.trace.model import Attribution

if TYPE_CHECKING:
    from tracer.attribution.attributor import Attributor
    from tracer.engine.base import ThreadView

FULL_PER_PATH: Final = 8
FAST_FRAMES: Final = 4
SAMPLE_AFTER: Final = 256
MAX_KEYS: Final = 65_536  # per-process table bounds: cleared when exceeded

PathKey = tuple[str, str]  # (syscall, path)
SiteKey = tuple[str, str, int]  # (syscall, path, syscall PC)


def _path_key(draft: Any) -> PathKey:
    return str(getattr(draft, "syscall", "")), str(getattr(draft, "path", ""))


def site_key(draft: Any) -> SiteKey:
    """(syscall, path, syscall PC) of an access."""
    return (*_path_key(draft), int(getattr(draft, "ip", 0)))


def _power_of_two(n: int) -> bool:
    return not n & (n - 1)


def _bounded_set(table: dict[Any, Any], key: Any, value: Any) -> bool:
    """table[key] = value; True when the table was full and cleared first."""
    cleared = len(table) >= MAX_KEYS
    if cleared:
        table.clear()
    table[key] = value
    return cleared


class KeepPolicy:
    """The keep-policy's counts for one process, and its decisions."""

    def __init__(self) -> None:
        self.per_path: dict[PathKey, int] = {}  # accesses seen
        self.fast: dict[tuple[str, str, tuple[int, ...]], list[Any]] = {}  # -> [attr, n]
        self.latest: dict[PathKey, Attribution] = {}  # the last attribution of a path
        self.by_site: dict[SiteKey, Attribution] = {}  # the latest walked one of a site
        # tables `wants_walk`/`reuse` read cleared at their bound so far (Attributor.epoch)
        self.cleared = 0

    def wants_walk(self, draft: Any) -> bool:
        """The keep-policy without registers (notify engine): True for the first
        FULL_PER_PATH accesses of each (syscall, path), as the ptrace engine walks them,
        and for a (syscall, path, syscall PC) not walked yet. The collector adds first
        sightings and power-of-two repeats of every key."""
        if self.per_path.get(_path_key(draft), 0) < FULL_PER_PATH:
            return True
        return site_key(draft) not in self.by_site

    def reuse(self, draft: Any) -> Attribution | None:
        """The attribution an access let run without a walk carries: the latest walked one
        of the same (syscall, path, syscall PC), else of the same (syscall, path)."""
        return self.by_site.get(site_key(draft)) or self.latest.get(_path_key(draft))

    def sampled(self, draft: Any) -> Attribution | None:
        """The latest Attribution of a path accessed more than SAMPLE_AFTER times, unless
        this access is a power-of-two sample (then None: walk it)."""
        path = getattr(draft, "path", None)
        if not isinstance(path, str):
            return None
        key = (str(getattr(draft, "syscall", "")), path)
        n = self.per_path.get(key, 0) + 1
        if n <= SAMPLE_AFTER or _power_of_two(n):
            return None
        latest = self.latest.get(key)
        if latest is not None:
            self.per_path[key] = n
        return latest

    def earlier(self, key: PathKey, fast_key: Callable[[], tuple[int, ...]]
                ) -> Attribution | None:
        """Counts this access of `key`; past FULL_PER_PATH, the Attribution of an earlier
        access with the same fast key (`fast_key()`: the PCs of a short walk), unless that
        key's count is now a power of two. None: walk in full."""
        n = self.per_path.get(key, 0) + 1
        self.cleared += _bounded_set(self.per_path, key, n)
        if n <= FULL_PER_PATH:
            return None
        entry = self.fast.get((*key, fast_key()))
        if entry is None:
            return None
        entry[1] += 1
        if _power_of_two(entry[1]):
            return None
        self.latest[key] = entry[0]
        return cast(Attribution, entry[0])

    def remember(self, key: PathKey, attribution: Attribution, pcs: tuple[int, ...]) -> None:
        """A full walk's answer, under the fast key its first PCs make."""
        fkey = (*key, pcs[:FAST_FRAMES])
        if len(self.fast) >= MAX_KEYS:
            self.fast.clear()
        old = self.fast.get(fkey)
        self.fast[fkey] = [attribution, old[1] if old is not None else 1]
        self.cleared += _bounded_set(self.latest, key, attribution)

    def remember_site(self, site: SiteKey, attribution: Attribution) -> None:
        """The answer at one call site (what `reuse` gives the notify engine)."""
        self.cleared += _bounded_set(self.by_site, site, attribution)


class LazyAttributor:
    """The attributor, imported and built at the first access that needs a stack.

    Loader-phase accesses (ld.so before the program's entry point: nothing of the program
    is on the stack) are answered `via=loader` without it, as the attributor itself does,
    so a program that ends before it runs any of its own code (`run -- /bin/true`) never
    pays for importing the unwinder (~0.1-0.2 s on a loaded 2-CPU machine).
    """

    def __init__(self) -> None:
        self._real: Attributor | None = None
        self._loader: Attribution | None = None

    def _get(self) -> Attributor:
        if self._real is None:
            from tracer.attribution.attributor import Attributor

            self._real = Attributor()
        return self._real

    def _loader_answer(self, draft: Any) -> Attribution | None:
        if self._real is not None or not draft.loader_phase or draft.cls == "exec":
            return None
        if self._loader is None:
            from tracer.trace.model import Via

            self._loader = Attribution(via=Via.LOADER)
        return self._loader

    def __call__(self, view: ThreadView, draft: Any) -> Attribution | None:
        """The attributor hook (tracer/recording/collector.py `AttributionHook`)."""
        return self._loader_answer(draft) or self._get()(view, draft)

    def capture(self, view: ThreadView, draft: Any) -> Any:
        """The hook's capture (`Attributor.capture`): `via=loader` at once for a
        loader-phase access, else the attributor's answer or pending walk."""
        return self._loader_answer(draft) or self._get().capture(view, draft)

    def wants_walk(self, pid: int, draft: Any) -> bool:
        """No walk for a loader-phase access; else as the attributor's keep-policy says."""
        if self._loader_answer(draft) is not None:
            return False
        return bool(self._get().wants_walk(pid, draft))

    def reuse(self, pid: int, draft: Any) -> Attribution | None:
        """`via=loader` for a loader-phase access; else the attributor's reuse."""
        return self._loader_answer(draft) or self._get().reuse(pid, draft)

    @property
    def epoch(self) -> int:
        """The attributor's `epoch` (0 before it exists)."""
        return self._real.epoch if self._real is not None else 0

    def on_exec(self, pid: int, tid: int, exe: str) -> None:
        """Passed on once the attributor exists (before, it has nothing to drop)."""
        if self._real is not None:
            self._real.on_exec(pid, tid, exe)

    def on_exit(self, pid: int) -> None:
        """Passed on once the attributor exists (before, it has nothing to drop)."""
        if self._real is not None:
            self._real.on_exit(pid)
