"""The inventory an SBOM needs: each path the run used, looked up in the package database
of the root it ran in (docs/sbom.md).

Reporters read only the Analysis (tracer/reporters/__init__.py), so ownership is resolved
here, before rendering, and attached as `Analysis.inventory`: `run --report
cyclonedx=FILE`, `report --format cyclonedx` and `matrix --sbom DIR` all call
`attach_inventory`. The root is the one the trace header names (`static.rootfs`; the host
for a run without a root); `--rootfs` points at it when it moved.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tracer.errors import NotFoundError
from tracer.trace.inventory import Inventory
from tracer.trace.model import DependencyClass

if TYPE_CHECKING:
    from probes.records import Analysis


def attach_inventory(analysis: Analysis, rootfs: str | None = None) -> Analysis:
    """`analysis` with its `inventory` filled in (unchanged when it already has one)."""
    if analysis.inventory is not None and rootfs is None:
        return analysis
    return dataclasses.replace(analysis, inventory=inventory_of(analysis, rootfs))


def run_root(analysis: Analysis, rootfs: str | None = None) -> tuple[Path, str]:
    """The directory the run's files are in, and its label. A root that is gone is one
    line, exit 4."""
    if rootfs is not None:
        from tracer.sandbox.roots import resolve_rootfs
        from tracer.sandbox.trees import rootfs_label

        root = resolve_rootfs(rootfs)
        return root, rootfs_label(root)
    recorded = analysis.static.get("rootfs")
    if not recorded:
        return Path("/"), "the host"
    root = Path(str(recorded))
    label = analysis.sandbox or str(root)
    if not root.is_dir():
        raise NotFoundError(
            f"the root this trace ran in ({label}: {root}) no longer exists: the SBOM needs "
            "its package database", help="pass the root with --rootfs DIR")
    return root, label


def used_paths(analysis: Analysis) -> list[str]:
    """Every absolute path of a dependency (not sockets, not the program's own files)."""
    out: dict[str, None] = {}
    for d in analysis.dependencies:
        if d.cls == DependencyClass.PROGRAM_FILE or d.kind == "socket":
            continue
        if d.path.startswith("/"):
            out.setdefault(d.path)
    return list(out)


def inventory_of(analysis: Analysis, rootfs: str | None = None) -> Inventory:
    """Look every used path up in the root's package database; hash what no package owns."""
    from tracer.sandbox import pkgdb

    root, label = run_root(analysis, rootfs)
    db = pkgdb.open_db(root)
    paths = used_paths(analysis)
    owners = db.owners(paths) if db is not None else {}
    files = [pkgdb.describe(root, p, owners.get(p, ())) for p in paths]
    keys = {k for f in files for k in f.owners}
    packages = tuple(p for k, p in (db.packages.items() if db is not None else ())
                     if k in keys)
    return Inventory(root=str(root), label=label, os=pkgdb.os_release(root),
                     manager=db.manager if db is not None else None, packages=packages,
                     files=tuple(files), program_sha256=_program_hash(analysis))


def _program_hash(analysis: Analysis) -> str | None:
    """SHA-256 of the traced binary, when it is still where the trace says."""
    from tracer.sandbox.pkgdb import sha256_file

    binary = analysis.binary
    if not binary or not os.path.isfile(binary):
        return None
    return sha256_file(Path(binary))

