"""Rootfs sources: a directory, an OCI image layout or `docker save` tarball, or a preset.

`resolve_rootfs(value) -> Path` is what `--rootfs` accepts:

- `scratch`, `static`, `musl`, `glibc`: presets made from this host's files into
  `<cache>/rootfs/preset-<name>` (rebuilt when missing or when their recipe changes).
  They are small: copies of a handful of host files (about 10 MB for glibc).
- a directory: used as is (an OCI image layout directory is unpacked first);
- a tarball (`docker save` or an OCI layout in a tar, optionally gzip): its layers are
  applied in order with whiteouts into `<cache>/rootfs/<digest>`.

Extraction never writes outside the target tree: entries with `..` are refused (the whole
image is refused, `BadImageError`), and existing symlinks are resolved inside the tree, never
on the host, so an absolute or `../..` symlink planted by one layer cannot redirect a later
write. Device nodes are skipped, set-id bits dropped, ownership is not restored.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tracer.errors import BadImageError, NotFoundError, PermissionDeniedError

PRESETS = ("scratch", "static", "musl", "glibc")
# Bump when a preset recipe changes: presets with another stamp are rebuilt.
PRESET_VERSION = "2"
_STAMP = ".cgotrace-rootfs"
LABEL_FILE = ".cgotrace-label"
# Mount points the sandbox needs; every generated tree has them (a read-only rootfs would
# otherwise need an overlay to create them).
MOUNT_DIRS = ("proc", "dev", "tmp", "run", ".cgotrace")
# A subset of /usr/share/zoneinfo: enough for UTC, Local-style lookups and the usual
# examples; a program asking for another zone fails exactly as on a slim image without it.
ZONEINFO_SUBSET = ("UTC", "Etc/UTC", "Etc/GMT", "America/New_York", "Europe/London",
                   "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
MUSL_LIBC = "/lib/x86_64-linux-musl/libc.so"  # Debian's musl package
_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
             "/lib", "/usr/lib")

_PASSWD = ("root:x:0:0:root:/root:/sbin/nologin\n"
           "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
           "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
_GROUP = "root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n"
_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
_STATIC_NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"


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


def resolve_rootfs(value: str) -> Path:
    """A `--rootfs` value -> a directory to use as the sandbox's root."""
    if value in PRESETS:
        return build_preset(value)
    p = Path(value)
    if p.is_dir():
        if (p / "oci-layout").is_file() and (p / "index.json").is_file():
            return unpack_image(p)
        return p.resolve()
    if p.is_file():
        return unpack_image(p)
    raise NotFoundError(
        f"rootfs {value!r}: no such directory, image tarball or preset "
        f"(presets: {', '.join(PRESETS)})",
        help="pass a directory, an OCI layout, a `docker save` tarball, or a preset name")


# === presets ================================================================================


def build_preset(name: str, *, force: bool = False) -> Path:
    if name not in PRESETS:
        raise NotFoundError(f"unknown rootfs preset {name!r} (presets: {', '.join(PRESETS)})")
    dest = cache_dir() / "rootfs" / f"preset-{name}"
    stamp = f"preset {name} v{PRESET_VERSION}\n"
    if not force and _read_stamp(dest) == stamp:
        return dest
    ensure_dir(dest.parent)
    # One builder at a time (parallel test workers, two cgotrace runs): a second builder
    # that finds the tree done returns it instead of swapping it out from under a sandbox
    # that may already run in it.
    with _locked(dest.with_name(f".{dest.name}.lock")):
        if not force and _read_stamp(dest) == stamp:
            return dest
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _mount_dirs(tmp)
            {"scratch": _scratch, "static": _static, "musl": _musl, "glibc": _glibc}[name](tmp)
            (tmp / _STAMP).write_text(stamp)
            _replace_dir(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) for the block."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_stamp(dest: Path) -> str | None:
    try:
        return (dest / _STAMP).read_text()
    except OSError:
        return None


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Swap a finished tree into place; a concurrent builder's identical tree may win."""
    old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
    if dest.exists():
        with contextlib.suppress(OSError):
            os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError:
        if _read_stamp(dest) is None:
            raise
    shutil.rmtree(old, ignore_errors=True)


def _mount_dirs(root: Path) -> None:
    for d in MOUNT_DIRS:
        (root / d).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def _scratch(root: Path) -> None:
    """Nothing but mount points: no /etc, so no resolv.conf, passwd or CA bundle."""


def _common_etc(root: Path, *, nsswitch: str | None) -> None:
    # An empty resolv.conf is the mount point for the sandbox's override (images have one;
    # a container engine replaces it the same way).
    _write(root, "/etc/resolv.conf", "")
    _write(root, "/etc/passwd", _PASSWD)
    _write(root, "/etc/group", _GROUP)
    _write(root, "/etc/hosts", _HOSTS)
    if nsswitch is not None:
        _write(root, "/etc/nsswitch.conf", nsswitch)


def _certs_and_zoneinfo(root: Path, *, zoneinfo: bool = True) -> None:
    if os.path.exists(CA_BUNDLE):
        install_host_file(root, CA_BUNDLE)
    if zoneinfo:
        for zone in ZONEINFO_SUBSET:
            host = f"/usr/share/zoneinfo/{zone}"
            if os.path.exists(host):
                install_host_file(root, host)


def _static(root: Path) -> None:
    """distroless/static-like: passwd, group, nsswitch.conf, CA bundle, zoneinfo, no libc."""
    _common_etc(root, nsswitch=_STATIC_NSSWITCH)
    _certs_and_zoneinfo(root)


def _musl(root: Path) -> None:
    """Alpine-like: musl's loader (which is also its libc), no nsswitch.conf, no glibc."""
    if not os.path.exists(MUSL_LIBC):
        raise NotFoundError(f"rootfs preset musl needs {MUSL_LIBC}",
                            help="apt-get install musl (make system-deps)")
    lib = root / "lib"
    lib.mkdir(exist_ok=True)
    _copy(MUSL_LIBC, lib / "ld-musl-x86_64.so.1")
    os.symlink("ld-musl-x86_64.so.1", lib / "libc.musl-x86_64.so.1")
    _common_etc(root, nsswitch=None)
    _write(root, "/etc/os-release", 'ID=alpine-like\nNAME="cgotrace musl preset"\n')
    _certs_and_zoneinfo(root, zoneinfo=False)


def _glibc(root: Path) -> None:
    """Debian-slim-like: glibc's loader and libc, the NSS modules the host's nsswitch.conf
    names with their NEEDED closure (libnss_systemd -> libcap, libm), ld.so.cache."""
    nsswitch = Path("/etc/nsswitch.conf").read_text() if os.path.exists(
        "/etc/nsswitch.conf") else "passwd: files\ngroup: files\nhosts: files dns\n"
    libs = ["libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libresolv.so.2",
            "libcap.so.2"]
    libs += [f"libnss_{s}.so.2" for s in nss_services(nsswitch)]
    for path in library_closure(libs):
        install_host_file(root, path)
    for interp in ("/lib64/ld-linux-x86-64.so.2",):
        if os.path.exists(interp):
            install_host_file(root, interp)
    if os.path.exists("/etc/ld.so.cache"):
        # The cache names host paths; every library in the preset sits at its host path, so
        # hits resolve, and misses fall back to the default directories as usual.
        install_host_file(root, "/etc/ld.so.cache")
    _common_etc(root, nsswitch=nsswitch)
    _write(root, "/etc/host.conf", "multi on\n")
    _write(root, "/etc/os-release", 'ID=debian-slim-like\nNAME="cgotrace glibc preset"\n')
    _certs_and_zoneinfo(root)


def nss_services(nsswitch_text: str) -> list[str]:
    """Service names an nsswitch.conf uses (`files systemd [NOTFOUND=return] dns` ...)."""
    out: list[str] = []
    for line in nsswitch_text.splitlines():
        line = line.split("#", 1)[0]
        if ":" not in line:
            continue
        for word in line.split(":", 1)[1].split():
            if not word.startswith("[") and word not in out:
                out.append(word)
    return out


def find_library(name: str) -> str | None:
    for d in _LIB_DIRS:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    return None


def library_closure(names: list[str]) -> list[str]:
    """Host paths of the named libraries (those that exist) and everything they NEED."""
    from tracer.binary.elf import ElfImage
    from tracer.errors import BadBinaryError

    todo, seen, out = list(names), set(), []
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        path = find_library(name)
        if path is None:
            continue
        out.append(path)
        try:
            todo.extend(ElfImage.open(path).needed)
        except BadBinaryError:
            continue  # a linker script (libc.so) or similar: nothing to follow
    return out


def install_host_file(root: Path, host_path: str, _depth: int = 0) -> None:
    """Put a host file into `root` at the same path, recreating every symlink on the way
    (/lib -> usr/lib, /lib64/ld-linux... -> /lib/x86_64-linux-gnu/...) so both the link
    names and the targets exist inside the tree."""
    if _depth > 16:
        raise BadImageError(f"{host_path}: too many levels of symbolic links")
    parts = Path(host_path).parts[1:]
    cur = "/"
    for i, part in enumerate(parts):
        hp = os.path.join(cur, part)
        rp = root / hp.lstrip("/")
        if os.path.islink(hp):
            target = os.readlink(hp)
            if not rp.is_symlink() and not rp.exists():
                os.symlink(target, rp)
            resolved = target if target.startswith("/") else posixpath.normpath(
                posixpath.join(cur, target))
            install_host_file(root, posixpath.join(resolved, *parts[i + 1:]), _depth + 1)
            return
        if i == len(parts) - 1:
            if not rp.exists():
                _copy(hp, rp)
        else:
            if rp.is_symlink():  # created by an earlier install: follow it inside the tree
                resolved = os.readlink(rp)
                resolved = resolved if resolved.startswith("/") else posixpath.normpath(
                    posixpath.join(cur, resolved))
                install_host_file(root, posixpath.join(resolved, *parts[i + 1:]), _depth + 1)
                return
            rp.mkdir(exist_ok=True)
        cur = hp


def _copy(src: str, dst: Path) -> None:
    # Copies, not hardlinks: a hardlinked tree would let a write into the preset (a bind
    # fallback, a careless test) modify the host's own libc.
    shutil.copy2(src, dst)


# === images =================================================================================


def unpack_image(source: Path, key: str | None = None) -> Path:
    """Apply an OCI layout (directory or tar) or `docker save` tarball into the cache, as
    `<cache>/rootfs/<key>` (default: the archive's digest; `--image` passes the image ID)."""
    with _ImageReader.open(source) as reader:
        layers = reader.layers()
        digest = key or reader.digest()
        dest = ensure_dir(cache_dir() / "rootfs") / (key or digest[:24])
        stamp = f"image {digest}\n"
        if _read_stamp(dest) == stamp:
            return dest
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for name in layers:
                with reader.open_blob(name) as raw:
                    apply_layer(tmp, raw, label=f"{source.name}:{name}")
            _mount_dirs(tmp)
            (tmp / _STAMP).write_text(stamp)
            _replace_dir(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


class _ImageReader:
    """Blobs by name from an OCI layout directory or from a tarball (OCI or docker-save)."""

    def __init__(self, source: Path, tar: tarfile.TarFile | None) -> None:
        self.source = source
        self.tar = tar

    @classmethod
    def open(cls, source: Path) -> _ImageReader:
        if source.is_dir():
            return cls(source, None)
        try:
            return cls(source, tarfile.open(source, "r:*"))
        except (tarfile.TarError, OSError):
            # tarfile's message lists every compression it tried, one per line
            raise BadImageError(f"{source}: not a directory or an image tarball (tar, tar.gz "
                                "or tar.bz2 of an OCI layout or a `docker save`)") from None

    def __enter__(self) -> _ImageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tar is not None:
            self.tar.close()

    def _read(self, name: str) -> bytes | None:
        name = _entry_path(name, str(self.source))
        if self.tar is None:
            p = self.source / name
            return p.read_bytes() if p.is_file() and not p.is_symlink() else None
        for candidate in (name, "./" + name):
            try:
                f = self.tar.extractfile(candidate)
            except KeyError:
                continue
            return f.read() if f is not None else None
        return None

    def _json(self, name: str) -> Any:
        raw = self._read(name)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise BadImageError(f"{self.source}: {name} is not valid JSON") from None

    def digest(self) -> str:
        h = hashlib.sha256()
        if self.tar is None:
            h.update(self._read("index.json") or b"")
        else:
            with open(self.source, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()

    def layers(self) -> list[str]:
        """Layer blob names, bottom first."""
        manifest = self._json("manifest.json")
        if isinstance(manifest, list) and manifest and isinstance(manifest[0], dict) \
                and "Layers" in manifest[0]:
            return [str(x) for x in manifest[0]["Layers"]]
        index = self._json("index.json")
        if not isinstance(index, dict):
            raise BadImageError(f"{self.source}: neither manifest.json (docker save) nor "
                                "index.json (OCI layout) found")
        return self._oci_layers(index, 0)

    def _oci_layers(self, index: dict[str, Any], depth: int) -> list[str]:
        manifests = index.get("manifests") or []
        if not manifests or depth > 4:
            raise BadImageError(f"{self.source}: OCI index lists no manifest")
        chosen = next((m for m in manifests
                       if (m.get("platform") or {}).get("architecture") == "amd64"),
                      manifests[0])
        doc = self._json(_blob_path(str(chosen.get("digest", ""))))
        if not isinstance(doc, dict):
            raise BadImageError(f"{self.source}: manifest {chosen.get('digest')} is missing")
        if "manifests" in doc:  # an image index: pick a manifest from it
            return self._oci_layers(doc, depth + 1)
        out = []
        for layer in doc.get("layers", []):
            media = str(layer.get("mediaType", ""))
            if "zstd" in media:
                raise BadImageError(f"{self.source}: zstd layers are not supported "
                                    f"({layer.get('digest')})")
            out.append(_blob_path(str(layer.get("digest", ""))))
        return out

    @contextlib.contextmanager
    def open_blob(self, name: str) -> Iterator[IO[bytes]]:
        raw = self._read(name)
        if raw is None:
            raise BadImageError(f"{self.source}: layer {name} is missing")
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        yield io.BytesIO(raw)


def _blob_path(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if not hexpart or "/" in hexpart or ".." in hexpart or "/" in algo:
        raise BadImageError(f"bad blob digest {digest!r}")
    return f"blobs/{algo}/{hexpart}"


def _entry_path(name: str, label: str) -> str:
    """A layer entry's path, normalised relative to the root; refuses traversal."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadImageError(f"{label}: refusing path traversal entry {name!r}")
    return "/".join(parts)


def resolve_in_tree(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """`path` as seen from inside `root` -> host path, every symlink resolved inside root.

    Absolute link targets restart at `root`, `..` stops at `root`: nothing escapes.
    """
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink() and (todo or follow_last):
            hops += 1
            if hops > 40:
                raise BadImageError(f"{path}: too many levels of symbolic links in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return root.joinpath(*done)


def apply_layer(root: Path, fileobj: IO[bytes], *, label: str = "layer") -> None:
    """Apply one layer tar onto `root`: whiteouts first (they hide lower layers only),
    then the entries."""
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r:*")  # noqa: SIM115 (closed by `with` below)
    except tarfile.TarError as e:
        raise BadImageError(f"{label}: not a tar layer ({e})") from None
    with tar:
        members = tar.getmembers()
        for m in members:
            rel = _entry_path(m.name, label)
            base = posixpath.basename(rel)
            if not base.startswith(".wh."):
                continue
            parent = resolve_in_tree(root, posixpath.dirname(rel))
            if base == ".wh..wh..opq":
                if parent.is_dir() and not parent.is_symlink():
                    for child in parent.iterdir():
                        _remove(child)
            else:
                _remove(parent / base[len(".wh."):])
        for m in members:
            rel = _entry_path(m.name, label)
            if not rel or posixpath.basename(rel).startswith(".wh."):
                continue
            _extract(root, tar, m, rel, label)


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


def _extract(root: Path, tar: tarfile.TarFile, m: tarfile.TarInfo, rel: str, label: str) -> None:
    parent = resolve_in_tree(root, posixpath.dirname(rel))
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / posixpath.basename(rel)
    mode = m.mode & 0o1777  # no set-id bits in a cache tree
    if m.isdir():
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            _remove(target)
        target.mkdir(exist_ok=True)
        target.chmod(mode | 0o700)
        return
    if target.is_symlink() or target.exists():
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    if m.issym():
        os.symlink(m.linkname, target)
    elif m.islnk():
        src = resolve_in_tree(root, _entry_path(m.linkname, label), follow_last=False)
        if not src.exists() or src.is_symlink():
            raise BadImageError(f"{label}: hard link {m.name!r} -> {m.linkname!r} has no "
                                "target inside the image")
        os.link(src, target)
    elif m.isreg():
        f = tar.extractfile(m)
        if f is None:
            raise BadImageError(f"{label}: cannot read {m.name!r}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(f, out)
        os.chmod(target, mode)
    # Device nodes and FIFOs are skipped: the sandbox mounts its own /dev.


def is_executable_file(p: Path) -> bool:
    try:
        st = p.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)
