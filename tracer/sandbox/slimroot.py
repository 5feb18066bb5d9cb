"""Building a minimal root from another one, path by path (`cgotrace slim`, docs/slim.md).

`copy_path` puts one path of a source root into a new root at the same place: every
symlink met on the way is recreated as the same link (its text unchanged) and then
followed inside the source root, so `/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/
ld-linux-x86-64.so.2` with `/lib -> usr/lib` yields both links and the one file. Nothing is
ever resolved on the host: absolute link targets restart at the source root, and the new
root is written only where the source has real directories.

Also here: the loader cache regenerated for the new root (`ldconfig -r`), sizes, the flat
tarball (`podman import`) and the `FROM scratch` Dockerfile.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tracer.errors import BadImageError, output_error

MAX_LINKS = 40
LD_CACHE = "/etc/ld.so.cache"
_LD_CONF = "/.cgotrace-ld.so.conf"  # ldconfig's config for the new root, removed after use


@dataclass(frozen=True)
class TreeEntry:
    """One thing in a root: a file, a directory or a symlink."""

    path: str  # absolute, in the root
    type: str  # file | dir | symlink | other
    size: int = 0  # regular files
    target: str | None = None  # symlink text
    mode: int = 0


def copy_path(src: Path, dst: Path, path: str, *, follow_last: bool = True) -> bool:
    """Copy in-root `path` from root `src` into root `dst`, symlinks on the way recreated
    and followed. False when the path (or a link's target) is not in `src`."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    cur: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if cur:
                cur.pop()
            continue
        here = "/".join([*cur, part])
        s, d = src / here, dst / here
        if s.is_symlink():
            if not os.path.lexists(d):
                os.symlink(os.readlink(s), d)
            if not todo and not follow_last:
                return True
            hops += 1
            if hops > MAX_LINKS:
                raise BadImageError(f"{path}: too many levels of symbolic links in {src}")
            target = os.readlink(s)
            cur = [] if target.startswith("/") else cur
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        try:
            st = s.lstat()
        except OSError:
            return False
        if todo and not stat.S_ISDIR(st.st_mode):
            return False
        _place(s, d, st)
        cur.append(part)
    return True


def _place(s: Path, d: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        if not os.path.lexists(d):
            d.mkdir()
            os.chmod(d, stat.S_IMODE(st.st_mode))
    elif stat.S_ISREG(st.st_mode) and not os.path.lexists(d):
        shutil.copy2(s, d)  # a copy, never a hard link: the source root stays untouched


def make_dir(src: Path, dst: Path, path: str) -> bool:
    """The directory `path` (and its parents) as in `src`, without its contents."""
    return copy_path(src, dst, path)


def regenerate_ld_cache(root: Path, library_dirs: Iterable[str]) -> str | None:
    """`ldconfig -r ROOT` for the libraries now in `root`, told which directories hold
    them (as the program named them) and never to create links (-X). Returns None, or
    why it could not run (then the caller keeps the source root's cache)."""
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
    if ldconfig is None:
        return "ldconfig is not installed"
    conf = root / _LD_CONF.lstrip("/")
    conf.write_text("".join(f"{d}\n" for d in dict.fromkeys(library_dirs)))
    try:
        proc = subprocess.run([ldconfig, "-X", "-r", str(root), "-f", _LD_CONF, "-C", LD_CACHE],
                              capture_output=True, text=True, check=False)
    except OSError as e:
        return f"ldconfig: {e.strerror}"
    finally:
        conf.unlink(missing_ok=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return f"ldconfig failed: {lines[-1] if lines else proc.returncode}"
    return None


def walk(root: Path, *, skip: Iterable[str] = ()) -> Iterator[TreeEntry]:
    """Every entry under `root` (not following symlinks), sorted; `skip`: in-root
    directories left out (with what is under them)."""
    skipped = {posixpath.normpath(s) for s in skip}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        base = "/" if rel == "." else "/" + rel
        dirnames[:] = sorted(d for d in dirnames if posixpath.join(base, d) not in skipped)
        for name in sorted(dirnames + filenames):
            yield entry(root, posixpath.join(base, name))


def entry(root: Path, path: str) -> TreeEntry:
    p = root / path.lstrip("/")
    st = p.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return TreeEntry(path, "symlink", target=os.readlink(p), mode=mode)
    if stat.S_ISDIR(st.st_mode):
        return TreeEntry(path, "dir", mode=mode)
    if stat.S_ISREG(st.st_mode):
        return TreeEntry(path, "file", size=st.st_size, mode=mode)
    return TreeEntry(path, "other", mode=mode)


def size_of(entries: Iterable[TreeEntry]) -> tuple[int, int]:
    """(files, bytes): regular files and symlinks counted, regular files' bytes summed."""
    files = nbytes = 0
    for e in entries:
        if e.type in ("file", "symlink"):
            files += 1
            nbytes += e.size
    return files, nbytes


def write_tar(root: Path, path: str) -> None:
    """A flat tarball of `root` (`podman import FILE`): relative names, owner root, modes
    and symlinks kept."""
    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    try:
        with tarfile.open(path, "w") as tar:
            for e in walk(root):
                tar.add(root / e.path.lstrip("/"), arcname=e.path.lstrip("/"),
                        recursive=False, filter=as_root)
    except OSError as e:
        raise output_error(path, e) from None


def write_dockerfile(path: str, root: Path, entrypoint: list[str],
                     comments: Iterable[str]) -> None:
    """A `FROM scratch` Dockerfile whose COPY takes the new root whole (a COPY of the
    directory keeps its symlinks; one COPY per top-level link would copy the link's target
    instead). The build context is the Dockerfile's directory."""
    context = Path(path).resolve().parent
    rel = os.path.relpath(root.resolve(), context)
    lines = [f"# {c}" for c in comments]
    if rel.startswith(".."):
        lines.append(f"# build with the context {root.resolve().parent}: COPY reads {rel}")
    lines += ["FROM scratch", f"COPY {rel}/ /"]
    import json

    lines.append(f"ENTRYPOINT {json.dumps(entrypoint)}")
    try:
        Path(path).write_text("\n".join(lines) + "\n")
    except OSError as e:
        raise output_error(path, e) from None
