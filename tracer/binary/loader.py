"""Where the dynamic loader will find a binary's interpreter and libraries, inside a root.

Nothing is executed: the search is replayed from the files, the way ld.so (glibc) or
ld-musl would do it, in a root directory (`/` for the host, or an unpacked image).
Symlinks are followed INSIDE the root: an absolute target is relative to the root,
never to the host, and `..` never climbs above it.

glibc order for a name without a slash (elf/dl-load.c): DT_RPATH of the needing object
and its ancestors (only when the needing object has no DT_RUNPATH), LD_LIBRARY_PATH (not
modelled: it is the environment's), DT_RUNPATH of the needing object, /etc/ld.so.cache,
then the default directories. musl (ldso/dynlink.c): RPATH/RUNPATH of the needing object
and its ancestors, then the lines of /etc/ld-musl-<arch>.path, else
/lib:/usr/local/lib:/usr/lib; `libc.so`, `libpthread.so`... are musl itself.
"""

from __future__ import annotations

import os
import posixpath
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tracer.binary.elf import ElfImage
from tracer.binary.ldcache import LdCache, read_ld_cache
from tracer.errors import CgotraceError

GLIBC_DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64",
                      "/usr/lib64", "/lib", "/usr/lib")
MUSL_DEFAULT_DIRS = ("/lib", "/usr/local/lib", "/usr/lib")
# musl answers these itself (ldso/dynlink.c "reserved" names): no file is opened.
MUSL_BUILTIN_LIBS = ("c", "pthread", "rt", "m", "dl", "util", "xnet")
_MAX_SYMLINKS = 40


class RootFS:
    """A directory seen as `/` by the program; maps in-root paths to host paths."""

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.abspath(root)

    def host(self, path: str) -> str:
        """Host path of an in-root absolute path (no symlink resolution)."""
        rel = posixpath.normpath("/" + path).lstrip("/")
        return os.path.join(self.root, rel) if rel else self.root

    def resolve(self, path: str) -> str | None:
        """Canonical in-root path of `path` after following every symlink inside the root,
        or None if some component does not exist (or symlinks loop)."""
        todo = deque(p for p in path.split("/") if p and p != ".")
        cur = "/"
        hops = 0
        while todo:
            comp = todo.popleft()
            if comp == "..":
                cur = posixpath.dirname(cur) if cur != "/" else "/"
                continue
            cand = posixpath.join(cur, comp)
            host = self.host(cand)
            if os.path.islink(host):
                hops += 1
                if hops > _MAX_SYMLINKS:
                    return None
                try:
                    target = os.readlink(host)
                except OSError:
                    return None
                parts = [p for p in target.split("/") if p and p != "."]
                todo.extendleft(reversed(parts))
                if target.startswith("/"):
                    cur = "/"
                continue
            if not os.path.lexists(host):
                return None
            if todo and not os.path.isdir(host):
                return None
            cur = cand
        return cur

    def exists(self, path: str) -> bool:
        return self.resolve(path) is not None

    def is_file(self, path: str) -> bool:
        real = self.resolve(path)
        return real is not None and os.path.isfile(self.host(real))


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
                "libraries": [lib.to_dict() for lib in self.libraries],
                "missing": [lib.name for lib in self.missing],
                "config_files": list(self.config_files),
                "problems": list(self.problems)}


def loader_flavor(interpreter: str | None) -> str:
    if interpreter is None:
        return "none"
    return "musl" if "ld-musl" in posixpath.basename(interpreter) else "glibc"


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
    def __init__(self, fs: RootFS, binary: ElfImage, binary_path: str, flavor: str) -> None:
        self.fs = fs
        self.binary = binary
        self.flavor = flavor
        self.binary_path = binary_path
        self.problems: list[str] = []
        self.config_files: list[str] = []
        self._cache: LdCache | None = None
        self._cache_loaded = False
        self._musl_dirs: tuple[str, ...] | None = None

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

    def musl_dirs(self, interpreter: str) -> tuple[str, ...]:
        if self._musl_dirs is None:
            arch = posixpath.basename(interpreter).removeprefix("ld-musl-").split(".so")[0]
            # The path file sits under the prefix two levels above the loader (dynlink.c).
            prefix = posixpath.dirname(posixpath.dirname(interpreter)).rstrip("/")
            path_file = f"{prefix}/etc/ld-musl-{arch}.path"
            real = self.fs.resolve(path_file)
            if real is not None and os.path.isfile(self.fs.host(real)):
                self.config_files.append(path_file)
                with open(self.fs.host(real), encoding="utf-8", errors="replace") as f:
                    text = f.read()
                self._musl_dirs = tuple(d for line in text.splitlines()
                                        for d in line.split(":") if d)
            else:
                self._musl_dirs = MUSL_DEFAULT_DIRS
        return self._musl_dirs

    # --- one lookup ------------------------------------------------------------------------
    def candidates(self, name: str, obj: _Obj, interpreter: str) -> list[tuple[str, str]]:
        """(directory, via) pairs in the loader's order."""
        out: list[tuple[str, str]] = []

        def add(dirs: tuple[str, ...], o: _Obj, via: str) -> None:
            origin = posixpath.dirname(o.path)
            out.extend((_expand(d, origin), via) for d in dirs)

        img = obj.image
        if self.flavor == "musl":
            o: _Obj | None = obj
            while o is not None:
                if o.image is not None:
                    add(o.image.runpath or o.image.rpath, o, "rpath")
                o = o.parent
            out.extend((d, "musl-path") for d in self.musl_dirs(interpreter))
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
        if cache is not None:
            hit = cache.lookup(name)
            if hit is not None:
                out.append((posixpath.dirname(hit) + "\0" + posixpath.basename(hit),
                            "ld.so.cache"))
        out.extend((d, "default-dirs") for d in GLIBC_DEFAULT_DIRS)
        return out

    def find(self, name: str, obj: _Obj, interpreter: str) -> LibraryLookup:
        if "/" in name:
            path = name if name.startswith("/") else posixpath.join(
                posixpath.dirname(obj.path), name)
            return self._probe(name, obj, [(path, "direct")])
        tries = []
        for d, via in self.candidates(name, obj, interpreter):
            if "\0" in d:  # an ld.so.cache hit carries its own file name
                dirname, fname = d.split("\0")
                tries.append((posixpath.join(dirname, fname), via))
            else:
                tries.append((posixpath.join(d, name), via))
        return self._probe(name, obj, tries)

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
            problem = self._check_arch(host)
            if problem is not None:  # the loaders skip a wrong-class file and search on
                skipped = f"{path}: {problem}"
                continue
            return LibraryLookup(name, obj.path, path, real, host, via)
        return LibraryLookup(name, obj.path, None, searched=tuple(dict.fromkeys(searched)),
                             problem=skipped)

    def _check_arch(self, host: str) -> str | None:
        try:
            img = ElfImage.open(host)
        except CgotraceError as e:
            return f"not loadable ({e.message})"
        if img.machine != self.binary.machine or img.elfclass != self.binary.elfclass:
            return f"wrong architecture ({img.machine}, {img.elfclass}-bit)"
        return None


def resolve_closure(binary: ElfImage, root: str = "/", binary_path: str | None = None
                    ) -> LoaderClosure:
    """Resolve PT_INTERP and the DT_NEEDED closure of `binary` inside `root`.

    `binary_path` is where the program sits inside the root (for $ORIGIN); by default the
    binary's own path. Missing pieces are reported in the result, never raised.
    """
    fs = RootFS(root)
    interp = binary.interpreter
    flavor = loader_flavor(interp)
    me = binary_path or os.path.abspath(binary.path)
    if flavor == "none" and not binary.needed:
        return LoaderClosure(fs.root, flavor, None, None)
    r = _Resolver(fs, binary, me, flavor)
    interp_real = fs.resolve(interp) if interp else None
    if interp and (interp_real is None or not os.path.isfile(fs.host(interp_real))):
        interp_real = None
    interp_soname: str | None = None
    if interp_real is not None:
        try:
            interp_soname = ElfImage.open(fs.host(interp_real)).soname
        except CgotraceError as e:
            r.problems.append(f"interpreter {interp} is not a usable ELF file: {e.message}")

    libs: list[LibraryLookup] = []
    loaded: dict[str, LibraryLookup] = {}  # name or soname -> lookup
    loaded_real: set[str] = set()
    queue: deque[_Obj] = deque([_Obj(me, binary, None)])
    while queue:
        obj = queue.popleft()
        if obj.image is None:
            continue
        for name in obj.image.needed:
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
            lookup = r.find(name, obj, interp or "")
            loaded[name] = lookup
            libs.append(lookup)
            if lookup.real_path is None or lookup.real_path in loaded_real:
                continue
            loaded_real.add(lookup.real_path)
            try:
                child = ElfImage.open(lookup.host_path or fs.host(lookup.real_path))
                soname = child.soname
                if soname and soname not in loaded:
                    loaded[soname] = lookup
                queue.append(_Obj(lookup.path or lookup.real_path, child, obj))
            except CgotraceError as e:
                r.problems.append(f"{lookup.path}: {e.message}")
    return LoaderClosure(fs.root, flavor, interp, interp_real, tuple(libs),
                         tuple(dict.fromkeys(r.config_files)), tuple(r.problems))
