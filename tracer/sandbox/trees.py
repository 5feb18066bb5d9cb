"""Root trees cgotrace generates (presets, unpacked images): where they live, how a
finished one is stamped and swapped into place, the mount points each has, its label.

`<cache>/rootfs/<name>` is a tree; `<name>/.cgotrace-rootfs` (the stamp) says what it was
built from, so a tree whose recipe or source changed is rebuilt and an unchanged one never
is. The cache is `$CGOTRACE_CACHE`, the checkout's `.cache`, or the user's cache
(tracer/cachedir.py): always from the TRACER's environment, never the traced program's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tracer.errors import PermissionDeniedError

STAMP_FILE = ".cgotrace-rootfs"
LABEL_FILE = ".cgotrace-label"
# Mount points the sandbox needs; every generated tree has them (a read-only rootfs would
# otherwise need an overlay to create them).
MOUNT_DIRS = ("proc", "dev", "tmp", "run", ".cgotrace")


def cache_dir() -> Path:
    """Where generated trees live: $CGOTRACE_CACHE, the checkout's .cache, or XDG cache."""
    env = os.environ.get("CGOTRACE_CACHE")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    # The checkout's cache only for a user who may write it (root in CI; a developer's own
    # clone): anyone else gets their own cache, not an "internal error".
    if (checkout / "pyproject.toml").exists() and _writable(checkout / ".cache"):
        return checkout / ".cache"
    from tracer.cachedir import user_cache

    return user_cache()


def _writable(p: Path) -> bool:
    target = p if p.exists() else p.parent
    return os.access(target, os.W_OK | os.X_OK)


def ensure_dir(path: Path) -> Path:
    """Create a cache directory; one line and exit 5 when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        ok = os.access(path, os.W_OK | os.X_OK)
        reason = "permission denied"
    except OSError as e:
        ok, reason = False, (e.strerror or str(e)).lower()
    if not ok:
        raise PermissionDeniedError(
            f"cannot create cache directory {path}: {reason}",
            help="set CGOTRACE_CACHE or XDG_CACHE_HOME to a writable directory")
    return path


def rootfs_label(root: Path | None) -> str:
    """Short name for messages: the preset name, else the path."""
    if root is None:
        return "the host"
    with contextlib.suppress(OSError):  # `--image NAME` trees say which image they hold
        return (root / LABEL_FILE).read_text().strip()
    name = root.name
    return name.removeprefix("preset-") if name.startswith("preset-") else str(root)


def read_stamp(dest: Path) -> str | None:
    """What the tree at `dest` was built from (None: no finished tree there)."""
    try:
        return (dest / STAMP_FILE).read_text()
    except OSError:
        return None


@contextlib.contextmanager
def building_tree(dest: Path, stamp: str) -> Iterator[Path]:
    """A fresh temporary tree next to `dest` to fill; when the block ends without an
    error it gets the mount points and `stamp`, and replaces `dest`. Always cleaned up."""
    ensure_dir(dest.parent)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for d in MOUNT_DIRS:
            (tmp / d).mkdir(exist_ok=True)
        (tmp / "tmp").chmod(0o1777)
        (tmp / STAMP_FILE).write_text(stamp)
        _replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Swap a finished tree into place; a concurrent builder's identical tree may win."""
    old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
    if dest.exists():
        with contextlib.suppress(OSError):
            os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError:
        if read_stamp(dest) is None:
            raise
    shutil.rmtree(old, ignore_errors=True)
