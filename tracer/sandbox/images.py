"""`--image NAME`: a root taken from a local container engine (podman, else docker).

The engine is the only outside program cgotrace drives. It is asked two things:

- the image's ID (`image inspect --format {{.Id}}`): the cache key, so a tag that moves to
  another image is unpacked again and an unchanged one never is;
- the image itself (`save -o archive.tar NAME`, a `docker save` archive), which the
  image reader (`tracer.sandbox.unpack.unpack_image`) applies layer by layer, whiteouts
  included, into `<cache>/rootfs/image-<id>`.

Nothing is pulled: a name the local store does not hold is an error (one line, exit 4), as
is a machine with no engine at all. When the engine itself fails, its last line is shown
with the usual cause on small VMs: podman needs `ulimit -n 1024; ulimit -u 4096` there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tracer.errors import BadImageError, CgotraceError, ExitCode, NotFoundError
from tracer.sandbox.trees import LABEL_FILE, STAMP_FILE, cache_dir, ensure_dir
from tracer.sandbox.unpack import unpack_image

ENGINES = ("podman", "docker")
ENGINE_TIMEOUT = 600.0  # seconds for one `save` of a large image on a slow disk
_ULIMIT_HINT = ("podman needs `ulimit -n 1024; ulimit -u 4096` on some machines: run those, "
                "then retry")
_UNKNOWN_IMAGE = re.compile(r"no such image|image not known|not found|unknown image|"
                            r"no such object", re.IGNORECASE)


class ImageEngineError(CgotraceError):
    """The container engine failed while exporting an image."""

    exit_code = ExitCode.TRACER_FAILED


def find_engine() -> str:
    """Path of podman, else docker; NotFoundError (one line) when neither is installed."""
    for name in ENGINES:
        path = shutil.which(name)
        if path is not None:
            return path
    raise NotFoundError("--image needs a container engine: neither podman nor docker is "
                        "installed", help="apt-get install podman runc uidmap, or pass the "
                        "image as a tarball with --rootfs (podman save -o image.tar NAME)")


def resolve_source(rootfs: str | None, image: str | None) -> Path | None:
    """`--rootfs SOURCE` or `--image NAME` (at most one) -> the root directory, or None."""
    if rootfs is not None and image is not None:
        raise CgotraceError("--rootfs and --image both name a root: pass one",
                            exit_code=ExitCode.USAGE)
    if image is not None:
        return image_rootfs(image)
    if rootfs is not None:
        from tracer.sandbox.roots import resolve_rootfs

        return resolve_rootfs(rootfs)
    return None


def image_rootfs(name: str) -> Path:
    """The image `name` from the local engine, unpacked (cached by image ID)."""
    if not name or name.startswith("-"):
        raise CgotraceError(f"--image {name!r}: not an image name",
                            exit_code=ExitCode.USAGE)
    engine = find_engine()
    image_id = _image_id(engine, name)
    key = "image-" + image_id.removeprefix("sha256:")[:24]
    dest = cache_dir() / "rootfs" / key
    if dest.is_dir() and (dest / STAMP_FILE).is_file():
        (dest / LABEL_FILE).write_text(f"image {name}\n")
        return dest
    work = ensure_dir(cache_dir() / "rootfs")
    with tempfile.TemporaryDirectory(prefix="export-", dir=work) as tmp:
        archive = Path(tmp) / "image.tar"
        _run(engine, ["save", "-o", str(archive), name], name)
        if not archive.is_file():
            raise ImageEngineError(f"{_engine_name(engine)} save {name} wrote no archive")
        root = unpack_image(archive, key=key)
    (root / LABEL_FILE).write_text(f"image {name}\n")
    return root


def _image_id(engine: str, name: str) -> str:
    out = _run(engine, ["image", "inspect", "--format", "{{.Id}}", name], name).strip()
    image_id = out.splitlines()[0].strip() if out else ""
    if not re.fullmatch(r"(sha256:)?[0-9a-f]{12,64}", image_id):
        raise BadImageError(f"{_engine_name(engine)} image inspect {name}: unexpected ID "
                            f"{image_id!r}")
    return image_id


def _engine_name(engine: str) -> str:
    return os.path.basename(engine)


def _run(engine: str, args: list[str], image: str) -> str:
    """Run the engine; its failures become one-line errors naming the cause."""
    label = _engine_name(engine)
    try:
        proc = subprocess.run([engine, *args], capture_output=True, text=True,
                              timeout=ENGINE_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ImageEngineError(f"{label} {args[0]} {image}: no answer in "
                               f"{ENGINE_TIMEOUT:.0f} s") from None
    except OSError as e:
        raise ImageEngineError(f"cannot run {engine}: {e.strerror}") from None
    if proc.returncode == 0:
        return proc.stdout
    last = _last_line(proc.stderr) or f"exit status {proc.returncode}"
    if "cannot connect to the docker daemon" in last.lower():
        raise ImageEngineError(f"docker is installed but its daemon is not running ({last})",
                               help="start dockerd, or install podman (no daemon needed)")
    if _UNKNOWN_IMAGE.search(last):
        raise NotFoundError(f"image {image!r} is not in the local {label} store ({last})",
                            help=f"`{label} images` lists what is there; cgotrace never "
                                 "pulls")
    raise ImageEngineError(f"{label} {' '.join(args[:2])} failed: {last}",
                           help=_ULIMIT_HINT if label == "podman" else None)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
