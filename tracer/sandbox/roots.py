"""What `--rootfs` accepts, as one directory to use as the sandbox's root.

`resolve_rootfs(value) -> Path`:

- `scratch`, `static`, `musl`, `glibc`: presets made from this host's files
  (tracer/sandbox/presets.py);
- a directory: used as is (an OCI image layout directory is unpacked first);
- a tarball: a `docker save` or an OCI layout in a tar, or a flat root filesystem
  (`podman export`, `tar -C root -cf x.tar .`), optionally compressed, unpacked into the
  cache (tracer/sandbox/unpack.py).
"""

from __future__ import annotations

from pathlib import Path

from tracer.errors import NotFoundError
from tracer.sandbox.presets import PRESETS, build_preset
from tracer.sandbox.unpack import unpack_image


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
        help="pass a directory, an OCI layout, a `docker save` or root filesystem "
             "(`podman export`) tarball, or a preset name")
