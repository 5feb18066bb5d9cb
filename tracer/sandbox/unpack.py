"""Container images as root trees: an OCI image layout (directory or tar), a `docker
save` tarball, or a flat root filesystem tarball (`podman export`, `docker export`,
`tar -C root -cf x.tar .`), optionally gzip- or bzip2-compressed.

`unpack_image(source)` applies the image's layers in order, whiteouts included, into
`<cache>/rootfs/<digest>` (tracer/sandbox/trees.py); a flat root is one layer without
whiteouts (it has no lower layer to hide anything in).

Extraction never writes outside the target tree: entries with `..` are refused (the whole
image is refused, `BadImageError`), and existing symlinks are resolved inside the tree,
never on the host (tracer.binary.rootpath), so an absolute or `../..` symlink planted by
one entry or layer cannot redirect a later write. Device nodes are skipped, set-id bits
dropped, ownership is not restored.
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
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tracer.binary.rootpath import RootFS
from tracer.errors import BadImageError
from tracer.sandbox.trees import building_tree, cache_dir, ensure_dir, read_stamp

# Files that make a tarball an image (docker save, OCI layout) rather than a flat root.
IMAGE_METADATA = frozenset({"manifest.json", "index.json", "oci-layout"})
# Top-level directories that make a tarball without image metadata a root filesystem.
ROOT_MARKERS = ("etc", "usr", "bin", "lib")


def unpack_image(source: Path, key: str | None = None) -> Path:
    """Apply an OCI layout (directory or tar), a `docker save` tarball or a flat root
    filesystem tarball into the cache, as `<cache>/rootfs/<key>` (default: the archive's
    digest; `--image` passes the image ID)."""
    with _ImageReader.open(source) as reader:
        layers = reader.layers()
        digest = key or reader.digest()
        dest = ensure_dir(cache_dir() / "rootfs") / (key or digest[:24])
        stamp = f"image {digest}\n"
        if read_stamp(dest) == stamp:
            return dest
        with building_tree(dest, stamp) as tmp:
            if layers is None:
                assert reader.tar is not None  # only a tarball is a flat root
                apply_tar(tmp, reader.tar, label=source.name, whiteouts=False)
            for name in layers or ():
                with reader.open_blob(name) as raw:
                    apply_layer(tmp, raw, label=f"{source.name}:{name}")
    return dest


def _top_level_names(tar: tarfile.TarFile) -> set[str]:
    """Top-level file names of a tarball (`./x` and `x` alike)."""
    return {n for n in (m.name.removeprefix("./") for m in tar.getmembers()) if "/" not in n}


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

    def layers(self) -> list[str] | None:
        """Layer blob names, bottom first; None for a flat root filesystem tarball."""
        manifest = self._json("manifest.json")
        if isinstance(manifest, list) and manifest and isinstance(manifest[0], dict) \
                and "Layers" in manifest[0]:
            return [str(x) for x in manifest[0]["Layers"]]
        index = self._json("index.json")
        if isinstance(index, dict):
            return self._oci_layers(index, 0)
        if self._is_flat_root():
            return None
        raise BadImageError(f"{self.source}: neither manifest.json (docker save), index.json "
                            "(OCI layout) nor a root filesystem (no "
                            f"{', '.join(d + '/' for d in ROOT_MARKERS)} at the top) found")

    def _is_flat_root(self) -> bool:
        """A tarball of a root filesystem (`podman export`, `tar -C root -cf x.tar .`): no
        image metadata, and a top-level directory every root has."""
        if self.tar is None or _top_level_names(self.tar) & IMAGE_METADATA:
            return False
        tops = {_entry_path(m.name, str(self.source)).split("/", 1)[0]
                for m in self.tar.getmembers()}
        return bool(tops & set(ROOT_MARKERS))

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


def apply_layer(root: Path, fileobj: IO[bytes], *, label: str = "layer") -> None:
    """Apply one layer tar onto `root`: whiteouts first (they hide lower layers only),
    then the entries."""
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r:*")  # noqa: SIM115 (closed by `with` below)
    except tarfile.TarError as e:
        raise BadImageError(f"{label}: not a tar layer ({e})") from None
    with tar:
        apply_tar(root, tar, label=label, whiteouts=True)


def apply_tar(root: Path, tar: tarfile.TarFile, *, label: str, whiteouts: bool) -> None:
    """Extract `tar` onto `root`, never outside it. With `whiteouts`, `.wh.` entries hide
    lower layers' files; without (a flat root filesystem has no lower layer), every entry
    is a file like any other."""
    fs = RootFS(root)
    members = tar.getmembers()
    for m in members if whiteouts else ():
        rel = _entry_path(m.name, label)
        base = posixpath.basename(rel)
        if not base.startswith(".wh."):
            continue
        parent = fs.locate(posixpath.dirname(rel))
        if base == ".wh..wh..opq":
            if parent.is_dir() and not parent.is_symlink():
                for child in parent.iterdir():
                    _remove(child)
        else:
            _remove(parent / base[len(".wh."):])
    for m in members:
        rel = _entry_path(m.name, label)
        if not rel or whiteouts and posixpath.basename(rel).startswith(".wh."):
            continue
        _extract(fs, tar, m, rel, label)


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


def _extract(fs: RootFS, tar: tarfile.TarFile, m: tarfile.TarInfo, rel: str, label: str
             ) -> None:
    parent = fs.locate(posixpath.dirname(rel))
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
        src = fs.locate(_entry_path(m.linkname, label), follow_last=False)
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
