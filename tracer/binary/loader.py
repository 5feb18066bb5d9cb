"""Where the dynamic loader will find a binary's interpreter and libraries, inside a root:
the one library lookup of cgotrace (static facts, the rootfs presets and the run-time
diagnosis all ask it).

Nothing is executed: the search is replayed from the files, the way ld.so (glibc) or
ld-musl would do it, in a root directory (`/` for the host, or an unpacked image), with
paths resolved inside the root (tracer/binary/rootpath.py).

glibc order for a name without a slash (elf/dl-load.c): DT_RPATH of the needing object
and its ancestors (only when the needing object has no DT_RUNPATH), LD_LIBRARY_PATH (not
modelled: it is the environment's), DT_RUNPATH of the needing object, /etc/ld.so.cache,
then the system search path. musl (ldso/dynlink.c): RPATH/RUNPATH of the needing object
and its ancestors, then the lines of /etc/ld-musl-<arch>.path, else
/lib:/usr/local/lib:/usr/lib; `libc.so`, `libpthread.so`... are musl itself.

The system search path is the ROOT's OWN, not upstream glibc's: each build compiles its
list into ld.so (`system_dirs` in elf/dl-load.c, e.g. Debian's /lib/x86_64-linux-gnu,
/usr/lib/x86_64-linux-gnu, /lib, /usr/lib, which never include /lib64 or /usr/lib64), and
`ld.so --help` prints it. It is read from the interpreter's read-only data
(`glibc_system_dirs`); only when that fails are documented defaults used, and
`LoaderClosure.search_path` says which.
"""

from __future__ import annotations

import os
import posixpath
import re
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tracer.binary.elf import ElfImage
from tracer.binary.ldcache import LdCache, read_ld_cache
from tracer.binary.rootpath import RootFS
from tracer.errors import CgotraceError

GLIBC_INTERPRETER = "/lib64/ld-linux-x86-64.so.2"  # PT_INTERP of x86-64 glibc programs
# Used only when the root's ld.so cannot be read: Debian's multiarch directories and
# upstream glibc's x86-64 slibdir/libdir (/lib64, /usr/lib64), then /lib and /usr/lib. A
# guess that covers both layouts; `SearchPath.source` is then "glibc-defaults".
GLIBC_FALLBACK_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64",
                       "/usr/lib64", "/lib", "/usr/lib")
MUSL_DEFAULT_DIRS = ("/lib", "/usr/local/lib", "/usr/lib")  # musl's built-in sys_path
# musl answers these itself (ldso/dynlink.c "reserved" names): no file is opened.
MUSL_BUILTIN_LIBS = ("c", "pthread", "rt", "m", "dl", "util", "xnet")
# Where a library the loader does not find is looked for elsewhere in the root (to say
# "present at ..., outside the loader's search path"): the top-level library trees, minus
# /usr's trees that hold no libraries, within a budget of directories (a big host /usr has
# ~11,000 directories below these: about a second).
LIBRARY_TREES = ("lib", "lib32", "lib64", "libx32", "usr", "opt")
_NOT_LIBRARY_TREES = frozenset({"/usr/share", "/usr/include", "/usr/src", "/usr/bin",
                                "/usr/sbin", "/usr/games"})
_ELSEWHERE_DIR_BUDGET = 5000


@dataclass(frozen=True)
class SearchPath:
    """The directories a loader searches after RPATH/RUNPATH and its cache.

    source: "ld.so" (read from the root's glibc interpreter), "glibc-defaults" (it could
    not be read: GLIBC_FALLBACK_DIRS), "musl-path" (the root's /etc/ld-musl-<arch>.path),
    "musl-defaults" (no path file: musl's built-in /lib:/usr/local/lib:/usr/lib).
    """

    dirs: tuple[str, ...]
    source: str
    detail: str  # where the list came from, in words

    def to_dict(self) -> dict[str, Any]:
        return {"dirs": list(self.dirs), "source": self.source, "detail": self.detail}


# One system directory in ld.so's string table: absolute, ending in "/", NUL-terminated.
_SYSTEM_DIR = rb"/(?:[A-Za-z0-9._+-]+/)+\x00"
_SYSTEM_DIRS_RUN = re.compile(rb"(?:" + _SYSTEM_DIR + rb")+")


def glibc_system_dirs(rodata: bytes) -> tuple[str, ...] | None:
    """glibc's compiled-in system search path, from the read-only data of its ld.so.

    dl-load.c keeps it as `system_dirs`, the directories back to back ("/lib/x86_64-linux-
    gnu/\\0/usr/lib/x86_64-linux-gnu/\\0/lib/\\0/usr/lib/"), next to `system_dirs_len`, a
    size_t array of their lengths. A run of such strings whose lengths sit beside it as
    that array is the list; without the array, a run is taken only when every run of
    library directories in the file names the same list. None when neither holds.
    """
    runs: list[tuple[tuple[str, ...], bool]] = []
    for m in _SYSTEM_DIRS_RUN.finditer(rodata):
        start = m.start()
        if start > 0 and (rodata[start - 1:start].isalnum() or rodata[start - 1] in b"/._+-"):
            continue  # the tail of a longer string, not a list of its own
        dirs = tuple(d.decode() for d in m.group().split(b"\x00") if d)
        if not all("lib" in d for d in dirs):
            continue
        runs.append((dirs, _lengths_beside(rodata, start, m.end(), dirs)))
    for wanted in (True, False):
        lists = {dirs for dirs, signed in runs if signed or not wanted}
        if len(lists) == 1:
            return tuple(d.rstrip("/") or "/" for d in lists.pop())
        if lists:
            return None  # several different lists: do not guess
    return None


def _lengths_beside(data: bytes, start: int, end: int, dirs: tuple[str, ...]) -> bool:
    """`system_dirs_len` (the u64 lengths of `dirs`) right before the string run, or right
    after it, allowing for alignment padding."""
    want = struct.pack(f"<{len(dirs)}Q", *(len(d) for d in dirs))
    for pad in range(16):
        at = start - pad - len(want)
        if at >= 0 and data[at:at + len(want)] == want and not any(data[start - pad:start]):
            return True
    after = (end + 7) & ~7
    return data[after:after + len(want)] == want


@dataclass(frozen=True)
class LibraryLookup:
    """One DT_NEEDED entry and where the loader finds it (or not)."""

    name: str  # the DT_NEEDED string
    needed_by: str  # in-root path of the object whose DT_NEEDED named it
    path: str | None  # in-root path the loader opens; None when missing
    real_path: str | None = None  # `path` after symlinks, inside the root
    host_path: str | None = None  # where the tracer can read it
    via: str = "missing"  # rpath, runpath, ld.so.cache, default-dirs, musl-path, musl-builtin,
    # interpreter (already loaded), direct (name with a slash), missing
    searched: tuple[str, ...] = ()  # directories tried, for a missing library
    problem: str | None = None  # e.g. "wrong architecture", "unreadable"
    # a missing library's copies elsewhere in the root (in-root paths, outside the search
    # path, right architecture): present, but where this loader never looks
    elsewhere: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return self.path is not None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "needed_by": self.needed_by,
                             "path": self.path, "real_path": self.real_path, "via": self.via}
        if self.host_path and self.host_path != self.real_path:
            d["host_path"] = self.host_path
        if not self.found:
            d["searched"] = list(self.searched)
            d["elsewhere"] = list(self.elsewhere)
        if self.problem:
            d["problem"] = self.problem
        return d


@dataclass(frozen=True)
class LoaderClosure:
    """Interpreter + NEEDED closure of a binary resolved inside a root."""

    root: str
    flavor: str  # "glibc", "musl", or "none" (static binary)
    interpreter: str | None  # as named by PT_INTERP
    interpreter_path: str | None  # real in-root path, None if missing
    libraries: tuple[LibraryLookup, ...] = ()
    config_files: tuple[str, ...] = ()  # loader config it reads: /etc/ld.so.cache, musl path
    problems: tuple[str, ...] = field(default_factory=tuple)
    search_path: SearchPath | None = None  # the loader's system search path (None: static)

    @property
    def missing(self) -> tuple[LibraryLookup, ...]:
        return tuple(lib for lib in self.libraries if not lib.found)

    @property
    def interpreter_found(self) -> bool:
        return self.interpreter is None or self.interpreter_path is not None

    def paths(self) -> frozenset[str]:
        """Every in-root path the loader opens before main: interpreter, libraries (as
        named and after symlinks) and its config files. The engine's "accounted for" set."""
        out: set[str] = set(self.config_files)
        if self.interpreter:
            out.add(self.interpreter)
        if self.interpreter_path:
            out.add(self.interpreter_path)
        for lib in self.libraries:
            for p in (lib.path, lib.real_path):
                if p:
                    out.add(p)
        return frozenset(out)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "flavor": self.flavor, "interpreter": self.interpreter,
                "interpreter_path": self.interpreter_path,
                "interpreter_found": self.interpreter_found,
                "search_path": self.search_path.to_dict() if self.search_path else None,
                "libraries": [lib.to_dict() for lib in self.libraries],
                "missing": [lib.name for lib in self.missing],
                "config_files": list(self.config_files),
                "problems": list(self.problems)}


def loader_flavor(interpreter: str | None) -> str:
    if interpreter is None:
        return "none"
    return "musl" if "ld-musl" in posixpath.basename(interpreter) else "glibc"


def outside_search_path(lib: LibraryLookup, flavor: str,
                        search_path: SearchPath | None) -> tuple[str, str] | None:
    """For a missing library that is present elsewhere in the root: (what, fix), e.g.
    ("present at /usr/lib64/libcrypto.so.3, outside the loader's search path", "move it
    ..."). The one wording of this case: `inspect`, the run-time diagnosis and the
    findings all say it so. None when the library is nowhere in the root."""
    if lib.found or not lib.elsewhere:
        return None
    where = lib.elsewhere[0]
    what = f"present at {where}, outside the loader's search path"
    directory = posixpath.dirname(where)
    dirs = ", ".join(search_path.dirs) if search_path and search_path.dirs else "?"
    if flavor == "musl":
        add = f"add {directory} to /etc/ld-musl-x86_64.path"
    else:
        add = f"add {directory} to /etc/ld.so.conf and run ldconfig"
    return what, f"move it into a directory the loader searches ({dirs}), or {add}"


def _expand(entry: str, origin: str) -> str:
    for token in ("${ORIGIN}", "$ORIGIN"):
        entry = entry.replace(token, origin)
    for token in ("${LIB}", "$LIB"):
        entry = entry.replace(token, "lib64")
    for token in ("${PLATFORM}", "$PLATFORM"):
        entry = entry.replace(token, "x86_64")
    return entry


def _musl_builtin(name: str) -> bool:
    """musl's `lib<reserved>.<anything>` rule, plus its own loader name."""
    if name.startswith("ld-musl-"):
        return True
    if not name.startswith("lib"):
        return False
    stem, dot, _ = name[3:].partition(".")
    return bool(dot) and stem in MUSL_BUILTIN_LIBS


@dataclass
class _Obj:
    path: str  # in-root path as opened
    image: ElfImage | None
    parent: _Obj | None


class _Resolver:
    """One root's loader: its search-path sources, read once, and single lookups."""

    def __init__(self, fs: RootFS, flavor: str, interpreter: str | None,
                 interpreter_real: str | None, machine: str, elfclass: int) -> None:
        self.fs = fs
        self.flavor = flavor
        self.interpreter = interpreter or ""
        self.interpreter_real = interpreter_real
        self.machine = machine
        self.elfclass = elfclass
        self.problems: list[str] = []
        self.config_files: list[str] = []
        self._cache: LdCache | None = None
        self._cache_loaded = False
        self._search: SearchPath | None = None

    # --- search-path sources -------------------------------------------------------------
    def ld_cache(self) -> LdCache | None:
        if not self._cache_loaded:
            self._cache_loaded = True
            real = self.fs.resolve("/etc/ld.so.cache")
            if real is not None:
                self.config_files.append("/etc/ld.so.cache")
                try:
                    self._cache = read_ld_cache(self.fs.host(real))
                except CgotraceError as e:
                    self.problems.append(f"/etc/ld.so.cache unreadable: {e.message}")
        return self._cache

    def search_path(self) -> SearchPath:
        if self._search is None:
            self._search = (self._musl_search_path() if self.flavor == "musl"
                            else self._glibc_search_path())
        return self._search

    def _glibc_search_path(self) -> SearchPath:
        interp = self.interpreter_real
        if interp is None:
            why = f"the interpreter {self.interpreter or '(none)'} is not in the root"
        else:
            try:
                dirs = glibc_system_dirs(_rodata(ElfImage.open(self.fs.host(interp))))
            except CgotraceError as e:
                dirs, why = None, f"{interp} is not readable ({e.message})"
            else:
                why = f"no system directory list found in {interp}"
            if dirs:
                return SearchPath(dirs, "ld.so", f"read from {interp}")
        return SearchPath(GLIBC_FALLBACK_DIRS, "glibc-defaults",
                          f"{why}: glibc's documented defaults (Debian's and upstream's)")

    def _musl_search_path(self) -> SearchPath:
        interp = self.interpreter
        arch = posixpath.basename(interp).removeprefix("ld-musl-").split(".so")[0]
        # The path file sits under the prefix two levels above the loader (dynlink.c).
        prefix = posixpath.dirname(posixpath.dirname(interp)).rstrip("/")
        path_file = f"{prefix}/etc/ld-musl-{arch}.path"
        real = self.fs.resolve(path_file)
        if real is not None and os.path.isfile(self.fs.host(real)):
            self.config_files.append(path_file)
            with open(self.fs.host(real), encoding="utf-8", errors="replace") as f:
                text = f.read()
            dirs = tuple(d for line in text.splitlines() for d in line.split(":") if d)
            return SearchPath(dirs, "musl-path", f"read from {path_file}")
        return SearchPath(MUSL_DEFAULT_DIRS, "musl-defaults",
                          f"no {path_file}: musl's built-in default")

    # --- one lookup ------------------------------------------------------------------------
    def candidates(self, name: str, obj: _Obj) -> list[tuple[str, str]]:
        """(path, via) pairs in the loader's order."""
        out: list[tuple[str, str]] = []

        def add(dirs: tuple[str, ...], o: _Obj, via: str) -> None:
            origin = posixpath.dirname(o.path)
            out.extend((posixpath.join(_expand(d, origin), name), via) for d in dirs)

        img = obj.image
        if self.flavor == "musl":
            o: _Obj | None = obj
            while o is not None:
                if o.image is not None:
                    add(o.image.runpath or o.image.rpath, o, "rpath")
                o = o.parent
            add(self.search_path().dirs, obj, "musl-path")
            return out
        if img is None or not img.runpath:
            o = obj
            while o is not None:
                if o.image is not None and not o.image.runpath:
                    add(o.image.rpath, o, "rpath")
                o = o.parent
        if img is not None and img.runpath:
            add(img.runpath, obj, "runpath")
        cache = self.ld_cache()
        hit = cache.lookup(name) if cache is not None else None
        if hit is not None:
            out.append((hit, "ld.so.cache"))
        add(self.search_path().dirs, obj, "default-dirs")
        return out

    def find(self, name: str, obj: _Obj) -> LibraryLookup:
        if "/" in name:
            path = name if name.startswith("/") else posixpath.join(
                posixpath.dirname(obj.path), name)
            return self._probe(name, obj, [(path, "direct")])
        return self._probe(name, obj, self.candidates(name, obj))

    def _probe(self, name: str, obj: _Obj, tries: list[tuple[str, str]]) -> LibraryLookup:
        searched: list[str] = []
        skipped: str | None = None
        for path, via in tries:
            path = posixpath.normpath(path)
            searched.append(path)
            real = self.fs.resolve(path)
            if real is None or not os.path.isfile(self.fs.host(real)):
                continue
            host = self.fs.host(real)
            problem = self.check_arch(host)
            if problem is not None:  # the loaders skip a wrong-class file and search on
                skipped = f"{path}: {problem}"
                continue
            return LibraryLookup(name, obj.path, path, real, host, via)
        return LibraryLookup(name, obj.path, None, searched=tuple(dict.fromkeys(searched)),
                             problem=skipped)

    def check_arch(self, host: str) -> str | None:
        try:
            img = ElfImage.open(host)
        except CgotraceError as e:
            return f"not loadable ({e.message})"
        if img.machine != self.machine or img.elfclass != self.elfclass:
            return f"wrong architecture ({img.machine}, {img.elfclass}-bit)"
        return None

    # --- a missing library elsewhere in the root -------------------------------------------
    def elsewhere(self, name: str) -> tuple[str, ...]:
        """In-root paths of loadable files called `name` outside the search path (and its
        glibc-hwcaps/tls subdirectories, which glibc searches too)."""
        searched = {r for d in self.search_path().dirs if (r := self.fs.resolve(d))}
        found: list[str] = []
        for directory in _library_dirs(self.fs):
            if directory in searched or any(directory.startswith(s.rstrip("/") + "/")
                                            for s in searched):
                continue
            path = posixpath.join(directory, name)
            real = self.fs.resolve(path)
            if real is not None and os.path.isfile(self.fs.host(real)) \
                    and self.check_arch(self.fs.host(real)) is None:
                found.append(path)
        return tuple(found)


def _rodata(img: ElfImage) -> bytes:
    """The read-only data of an image: .rodata, or without section headers the file bytes
    of its read-only, non-executable PT_LOAD segments."""
    data = img.section_data(".rodata")
    if data is not None:
        return data
    return b"".join(bytes(img.data[s.offset:s.offset + s.filesz]) for s in img.load_segments()
                    if not s.executable and not s.writable)


def _library_dirs(fs: RootFS) -> list[str]:
    """Canonical in-root directories under LIBRARY_TREES, breadth first, symlinked
    directories not followed (a merged /lib -> usr/lib is walked once, as /usr/lib), at
    most _ELSEWHERE_DIR_BUDGET of them."""
    queue = deque(f"/{top}" for top in LIBRARY_TREES)
    out: list[str] = []
    while queue and len(out) < _ELSEWHERE_DIR_BUDGET:
        d = queue.popleft()
        host = fs.host(d)
        if d in _NOT_LIBRARY_TREES or os.path.islink(host) or not os.path.isdir(host):
            continue
        out.append(d)
        try:
            with os.scandir(host) as it:
                subdirs = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
        queue.extend(posixpath.join(d, sub) for sub in subdirs)
    return out


def resolve_closure(binary: ElfImage, root: str = "/", binary_path: str | None = None
                    ) -> LoaderClosure:
    """Resolve PT_INTERP and the DT_NEEDED closure of `binary` inside `root`.

    `binary_path` is where the program sits inside the root (for $ORIGIN); by default the
    binary's own path. Missing pieces are reported in the result, never raised; a missing
    library that is present elsewhere in the root says where (`LibraryLookup.elsewhere`).
    """
    fs = RootFS(root)
    interp = binary.interpreter
    flavor = loader_flavor(interp)
    if flavor == "none" and not binary.needed:
        return LoaderClosure(fs.root, flavor, None, None)
    me = _Obj(binary_path or os.path.abspath(binary.path), binary, None)
    return _closure(fs, flavor, interp, binary.machine, binary.elfclass,
                    [(name, me) for name in binary.needed], elsewhere=True)


def resolve_libraries(names: Sequence[str], root: str = "/",
                      interpreter: str = GLIBC_INTERPRETER) -> LoaderClosure:
    """What the root's own loader (`interpreter`, x86-64) loads for these library names
    and everything they need, as for a program whose DT_NEEDED lists them. The rootfs
    presets ask it which host files to copy; the diagnosis, where this host has a library
    an image lacks."""
    fs = RootFS(root)
    requested = _Obj("(requested)", None, None)
    return _closure(fs, loader_flavor(interpreter), interpreter, "EM_X86_64", 64,
                    [(name, requested) for name in names], elsewhere=False)


def _interpreter(fs: RootFS, interp: str | None) -> tuple[str | None, str | None, str | None]:
    """(real in-root path, soname, problem) of the interpreter inside the root."""
    real = fs.resolve(interp) if interp else None
    if real is None or not os.path.isfile(fs.host(real)):
        return None, None, None
    try:
        return real, ElfImage.open(fs.host(real)).soname, None
    except CgotraceError as e:
        return real, None, f"interpreter {interp} is not a usable ELF file: {e.message}"


def _closure(fs: RootFS, flavor: str, interp: str | None, machine: str, elfclass: int,
             first: list[tuple[str, _Obj]], *, elsewhere: bool) -> LoaderClosure:
    """Breadth-first over DT_NEEDED, as ld.so loads: `first` are the initial (name, needing
    object) pairs."""
    interp_real, interp_soname, problem = _interpreter(fs, interp)
    r = _Resolver(fs, flavor, interp, interp_real, machine, elfclass)
    if problem:
        r.problems.append(problem)
    libs: list[LibraryLookup] = []
    loaded: dict[str, LibraryLookup] = {}  # name or soname -> lookup
    loaded_real: set[str] = set()
    queue: deque[tuple[str, _Obj]] = deque(first)
    while queue:
        name, obj = queue.popleft()
        if name in loaded:
            continue
        base = posixpath.basename(name)
        if interp and (base == posixpath.basename(interp) or name == interp_soname) or (
                flavor == "musl" and _musl_builtin(base)):
            lookup = LibraryLookup(name, obj.path, interp if interp_real else None,
                                   interp_real, fs.host(interp_real) if interp_real else None,
                                   "musl-builtin" if flavor == "musl" else "interpreter")
            loaded[name] = lookup
            libs.append(lookup)
            continue
        lookup = r.find(name, obj)
        if not lookup.found and elsewhere:
            lookup = replace(lookup, elsewhere=r.elsewhere(name))
        loaded[name] = lookup
        libs.append(lookup)
        if lookup.real_path is None or lookup.real_path in loaded_real:
            continue
        loaded_real.add(lookup.real_path)
        try:
            child = ElfImage.open(lookup.host_path or fs.host(lookup.real_path))
        except CgotraceError as e:
            r.problems.append(f"{lookup.path}: {e.message}")
            continue
        if child.soname and child.soname not in loaded:
            loaded[child.soname] = lookup
        child_obj = _Obj(lookup.path or lookup.real_path, child, obj)
        queue.extend((n, child_obj) for n in child.needed)
    search = r.search_path() if flavor != "none" else None
    return LoaderClosure(fs.root, flavor, interp, interp_real, tuple(libs),
                         tuple(dict.fromkeys(r.config_files)), tuple(r.problems), search)
