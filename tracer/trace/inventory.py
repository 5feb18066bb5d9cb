"""What a run used, by OS package: the records the SBOM reporter reads.

Produced before rendering (`tracer.commands.sbom.attach_inventory`, from the package
database of the root the run used, `tracer.sandbox.pkgdb`) and carried on
`probes.analysis.Analysis.inventory`, so reporters never read a root themselves.
Plain data, like tracer/trace/model.py: no behaviour beyond (de)serialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OsPackage:
    """One installed OS package, as its database records it."""

    manager: str  # "dpkg" | "apk"
    name: str
    version: str
    arch: str | None = None
    source: str | None = None  # Debian source package, Alpine origin
    source_version: str | None = None  # when the source's version differs (binNMU, ...)
    namespace: str = "debian"  # purl namespace: debian, ubuntu, alpine
    distro: str | None = None  # purl `distro` qualifier: debian-12, alpine-3.19.1
    license: str | None = None  # Alpine records one; dpkg does not

    @property
    def key(self) -> str:
        """Unique within one root: manager, name and architecture."""
        return f"{self.manager}:{self.name}:{self.arch or ''}"

    def to_dict(self) -> dict[str, Any]:
        return {"manager": self.manager, "name": self.name, "version": self.version,
                "arch": self.arch, "source": self.source,
                "source_version": self.source_version, "namespace": self.namespace,
                "distro": self.distro, "license": self.license}


@dataclass(frozen=True)
class UsedFile:
    """A path the run used, as found in the root afterwards."""

    path: str  # as the program saw it
    owners: tuple[str, ...] = ()  # OsPackage.key of every package that owns it
    kind: str = "absent"  # file | directory | symlink | other | absent
    sha256: str | None = None  # regular files no package owns
    size: int | None = None
    target: str | None = None  # the in-root path a symlink chain ends at

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "owners": list(self.owners), "kind": self.kind,
                "sha256": self.sha256, "size": self.size, "target": self.target}


@dataclass(frozen=True)
class Inventory:
    """The root a run used, its OS and package manager, and each used path's owners."""

    root: str  # the directory read ("/" for a run on the host)
    label: str  # the root as messages name it (glibc, image localhost/app:1, the host)
    os: dict[str, str] = field(default_factory=dict)  # os-release fields (ID, VERSION_ID...)
    manager: str | None = None  # the package database found: dpkg, apk, or None
    packages: tuple[OsPackage, ...] = ()  # only those that own a used file
    files: tuple[UsedFile, ...] = ()
    program_sha256: str | None = None  # the traced binary, when it was still readable

    def package(self, key: str) -> OsPackage | None:
        return next((p for p in self.packages if p.key == key), None)

    def file(self, path: str) -> UsedFile | None:
        return next((f for f in self.files if f.path == path), None)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "label": self.label, "os": dict(self.os),
                "manager": self.manager, "packages": [p.to_dict() for p in self.packages],
                "files": [f.to_dict() for f in self.files],
                "program_sha256": self.program_sha256}
