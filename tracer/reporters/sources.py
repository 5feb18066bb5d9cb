"""Where the program's Go source files are in the user's repository: the Go module root.

Report formats that point at source lines (SARIF) name files relative to the module root
(`go.mod`), whatever the working directory of the run or of `cgotrace report`, and whether
the program ran in a `--rootfs` (its recorded cwd is then `/`). The root is, in order:

1. `--source-root DIR`, when given: files under DIR are relative to it; a `-trimpath`
   name (`<module path>/<path in module>`) is placed under the directory (DIR, or one up
   to `SCAN_DEPTH` levels below it) whose go.mod declares that module;
2. the go.mod above an application source file (the findings' user frames), when it
   declares the binary's main module (`static.main_module`, from its build info);
3. for `-trimpath` names, or sources built on another machine: the go.mod of the main
   module found from the working directory of `cgotrace report` (upward, then up to
   `SCAN_DEPTH` levels down), then from the run's own working directory;
4. without any go.mod: the run's working directory, when it is not `/` (as before).

A file outside the root that exists on this machine keeps its absolute path; a `-trimpath`
name of another module (the standard library's `os/user/lookup.go`) has no place on disk.
Reads go.mod files only (no process, no trace).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from probes.records import Analysis

SCAN_DEPTH = 3  # directory levels searched below a starting directory for go.mod files
_SKIP_DIRS = frozenset({"vendor", "node_modules", "testdata"})


@dataclass(frozen=True)
class SourceRoot:
    """The directory source files are named relative to (SARIF's SRCROOT)."""

    root: str  # absolute, no trailing slash (except "/")
    how: str  # where it came from, one phrase (SARIF's description of SRCROOT)
    # module path -> its directory relative to `root` ("" for root itself)
    modules: dict[str, str] = field(default_factory=dict)

    def relative(self, file: str) -> str | None:
        """`file` relative to the root, or None when it has no place under it."""
        if file.startswith("/"):
            rel = _under(file, self.root)
            if rel is None and not os.path.exists(file):
                rel = _suffix_under(file, self.root)  # built elsewhere, same tree here
            return rel
        for module in sorted(self.modules, key=len, reverse=True):
            if file.startswith(module + "/"):
                return posixpath.join(self.modules[module], file[len(module) + 1:])
        return None


def _under(path: str, root: str) -> str | None:
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def _suffix_under(path: str, root: str) -> str | None:
    """The longest tail of `path` (two components at least) that is a file under root."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) - 1):
        tail = "/".join(parts[i:])
        if os.path.isfile(os.path.join(root, tail)):
            return tail
    return None


def module_of(gomod: str) -> str | None:
    """The `module` line of a go.mod file (None when unreadable or absent)."""
    try:
        with open(gomod, encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = raw.split("//", 1)[0].strip()
                if line.startswith("module"):
                    rest = line[len("module"):].strip().strip('"').strip("`")
                    if rest:
                        return rest
    except OSError:
        return None
    return None


def gomod_above(start: str, module: str | None) -> tuple[str, str] | None:
    """(directory, module) of the nearest go.mod at or above `start` (a directory), when it
    declares `module` (any module when None). A nearer go.mod of another module ends the
    search: the files there belong to it."""
    d = os.path.abspath(start)
    while True:
        gomod = os.path.join(d, "go.mod")
        if os.path.isfile(gomod):
            declared = module_of(gomod)
            if declared is None or (module is not None and declared != module):
                return None
            return d, declared
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def gomods_below(start: str, depth: int = SCAN_DEPTH) -> Iterator[tuple[str, str]]:
    """(directory, module) of every go.mod at most `depth` levels below `start`."""
    start = os.path.abspath(start)
    for d, dirs, files in os.walk(start):
        level = 0 if d == start else d[len(start):].count("/")
        dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x not in _SKIP_DIRS
                         and level < depth)
        if "go.mod" in files:
            declared = module_of(os.path.join(d, "go.mod"))
            if declared:
                yield d, declared


def _app_files(analysis: Analysis) -> list[str]:
    """Source files of application frames: the findings' user frames, then the callers'."""
    files = [f.user_frame.file for f in analysis.findings if f.user_frame and f.user_frame.file]
    files += [c.user_frame.file for d in analysis.dependencies for c in d.callers
              if c.user_frame is not None and c.user_frame.file]
    return list(dict.fromkeys(files))


def _explicit(directory: str) -> SourceRoot:
    root = os.path.abspath(directory).rstrip("/") or "/"
    modules: dict[str, str] = {}
    for d, declared in gomods_below(root):
        rel = os.path.relpath(d, root)
        modules.setdefault(declared, "" if rel == "." else rel)
    return SourceRoot(root, "--source-root", modules)


def _from_directory(start: str, module: str | None, trimmed: list[str]) -> SourceRoot | None:
    """The main module's root found from `start`: upward, then below it (not below `/`).
    Without a module path or `-trimpath` names to check a go.mod against, none."""
    if module is None and not trimmed:
        return None

    def wanted(declared: str) -> bool:
        if module is not None:
            return declared == module
        return any(f.startswith(declared + "/") for f in trimmed)

    above = gomod_above(start, module)
    found = [above] if above is not None and wanted(above[1]) else []
    if not found and os.path.abspath(start) != "/":
        found = [(d, m) for d, m in gomods_below(start) if wanted(m)][:1]
    if not found:
        return None
    d, declared = found[0]
    return SourceRoot(d, f"the Go module root (go.mod of {declared})", {declared: ""})


def find_source_root(analysis: Analysis, explicit: str | None = None,
                     cwd: str | None = None) -> SourceRoot | None:
    """The source root for `analysis` (module docstring); `cwd` is where `report` runs
    (default: the current directory)."""
    module = analysis.static.get("main_module") or None
    if module == "command-line-arguments":
        module = None
    if explicit is not None:
        return _explicit(explicit)
    files = _app_files(analysis)
    for f in files:
        if f.startswith("/") and os.path.isfile(f):
            found = gomod_above(os.path.dirname(f), module)
            if found is not None:
                return SourceRoot(found[0], f"the Go module root (go.mod of {found[1]})",
                                  {found[1]: ""})
    trimmed = [f for f in files if not f.startswith("/")]
    starts: Iterable[str | None] = (cwd or os.getcwd(),
                                    analysis.cwd if analysis.cwd != "/" else None)
    for start in starts:
        if start and os.path.isdir(start):
            root = _from_directory(start, module, trimmed)
            if root is not None:
                return root
    run_cwd = analysis.cwd
    if run_cwd and run_cwd != "/" and run_cwd.startswith("/"):
        return SourceRoot(run_cwd.rstrip("/"), "the working directory of the run")
    return None
