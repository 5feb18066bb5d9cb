"""Paths inside a root directory: the one place symlinks are resolved as the program sees
them, never as the host does.

A root is a directory the program sees as `/` (an unpacked image, a preset, or `/` itself).
Symlinks are followed INSIDE it: an absolute target restarts at the root, `..` never climbs
above it, so a link planted by an image (`/etc/x -> /etc/shadow`, `../../../host`) can
neither be read through nor written through onto the host.

    fs = RootFS("/path/to/root")
    fs.resolve("/lib64/ld-linux-x86-64.so.2")  # canonical in-root path, or None if absent
    fs.locate("/usr/lib/new/file")             # host path to create, symlinks resolved

Users: the loader replay (tracer/binary/loader.py), nsswitch.conf reading
(tracer/binary/nsswitch.py), image unpacking and the sandbox (tracer/sandbox/).
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections import deque
from pathlib import Path

from tracer.errors import BadImageError

MAX_SYMLINKS = 40  # Linux's own limit (ELOOP) for one path lookup


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


class RootFS:
    """A directory seen as `/` by the program; maps in-root paths to host paths."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = os.path.abspath(os.fspath(root))

    def host(self, path: str) -> str:
        """Host path of an in-root absolute path (no symlink resolution)."""
        rel = posixpath.normpath("/" + path).lstrip("/")
        return os.path.join(self.root, rel) if rel else self.root

    def resolve(self, path: str, *, follow_last: bool = True) -> str | None:
        """Canonical in-root path of `path` after following every symlink inside the root,
        or None if some component does not exist, a non-directory is walked through, or
        symlinks loop."""
        return self._walk(path, follow_last=follow_last, strict=True)

    def locate(self, path: str, *, follow_last: bool = True) -> Path:
        """Host path for `path`, existing symlinks resolved inside the root; components that
        do not exist yet are kept as named (the caller may create them). Raises
        BadImageError when symlinks loop."""
        real = self._walk(path, follow_last=follow_last, strict=False)
        assert real is not None  # strict=False never answers None
        return Path(self.host(real))

    def exists(self, path: str) -> bool:
        return self.resolve(path) is not None

    def is_file(self, path: str) -> bool:
        real = self.resolve(path)
        return real is not None and os.path.isfile(self.host(real))

    def _walk(self, path: str, *, follow_last: bool, strict: bool) -> str | None:
        todo = deque(_parts(path))
        cur = "/"
        hops = 0
        while todo:
            comp = todo.popleft()
            if comp == "..":
                cur = posixpath.dirname(cur)
                continue
            cand = posixpath.join(cur, comp)
            host = self.host(cand)
            if os.path.islink(host) and (todo or follow_last):
                hops += 1
                try:
                    if hops > MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, "too many levels of symbolic links")
                    target = os.readlink(host)
                except OSError as e:
                    if strict:
                        return None
                    raise BadImageError(f"{path}: {e.strerror} at {cand} in {self.root}"
                                        ) from None
                todo.extendleft(reversed(_parts(target)))
                if target.startswith("/"):
                    cur = "/"
                continue
            if strict and (not os.path.lexists(host) or todo and not os.path.isdir(host)):
                return None
            cur = cand
        return cur
