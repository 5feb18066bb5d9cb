"""The OS package database of a root: which installed package owns a file.

Read from the files themselves, never through dpkg or apk (a root may be another
distribution's image, and the host may have neither tool):

- Debian/Ubuntu: `/var/lib/dpkg/status` (stanzas whose Status ends in "installed") and
  `/var/lib/dpkg/info/<name>.list`, or `<name>:<arch>.list` for Multi-Arch packages;
  distroless-style `/var/lib/dpkg/status.d/<name>` stanzas with `<name>.md5sums`.
- Alpine: `/lib/apk/db/installed` (P: name, V: version, A: arch, o: origin, L: license,
  F: directory, R: file in the last F).
- The distribution: `/etc/os-release` (or `/usr/lib/os-release`), for the purl `distro`.

A package lists the path it installed (`/lib/x86_64-linux-gnu/libc.so.6`); a program may
reach that file by another name (`/usr/lib/...` through the merged-/usr symlink `/lib ->
usr/lib`, `/lib64/ld-linux-x86-64.so.2` -> the loader). Ownership therefore compares
paths with their directories resolved inside the root (`RootFS.locate`), and a path
that is a symlink is owned by the owners of the link and of its final target.
Not handled: dpkg diversions and alternatives' targets outside any package list.
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import os
import posixpath
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tracer.binary.rootpath import RootFS
from tracer.errors import CgotraceError
from tracer.trace.inventory import OsPackage, UsedFile

DPKG_DIR = "/var/lib/dpkg"
APK_INSTALLED = "/lib/apk/db/installed"
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


# === os-release ==============================================================================


def os_release(root: Path) -> dict[str, str]:
    """The root's os-release fields (ID, VERSION_ID, ID_LIKE, PRETTY_NAME...); {} if none."""
    for name in OS_RELEASE:
        with contextlib.suppress(OSError, CgotraceError, UnicodeDecodeError):
            return parse_os_release(RootFS(root).locate(name).read_text())
    return {}


def parse_os_release(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def distro_qualifier(release: dict[str, str], family: str) -> str | None:
    """`debian-12`, `ubuntu-22.04`, `alpine-3.19.1`: the distribution the packages come
    from. A derived root (ID=debian-slim-like, ID_LIKE=debian) is named by its family."""
    version = release.get("VERSION_ID")
    ids = [release.get("ID", "")] + release.get("ID_LIKE", "").split()
    name = next((i for i in ids if i == family), None) or next((i for i in ids if i), None)
    if not name:
        return None
    return f"{name}-{version}" if version else name


def purl_namespace(release: dict[str, str], manager: str) -> str:
    """The purl namespace of the root's packages: ubuntu for Ubuntu (and its derivatives),
    alpine for apk, else debian for dpkg."""
    if manager == "apk":
        return "alpine"
    ids = [release.get("ID", "")] + release.get("ID_LIKE", "").split()
    return "ubuntu" if "ubuntu" in ids else "debian"


# === databases ===============================================================================


@dataclass(frozen=True)
class _Entry:
    package: OsPackage
    raw: str  # the stanza as the database holds it (dpkg), for copying
    lists: tuple[Path, ...]  # files that list the package's paths (host paths)


class PackageDb:
    """One root's installed packages and the files they list."""

    def __init__(self, root: Path, manager: str, entries: list[_Entry],
                 apk_files: dict[str, list[str]] | None = None) -> None:
        self.root = root
        self.manager = manager
        self.entries = entries
        self._apk_files = apk_files or {}
        self._dirs: dict[str, str] = {}

    @property
    def packages(self) -> dict[str, OsPackage]:
        return {e.package.key: e.package for e in self.entries}

    # --- ownership -----------------------------------------------------------------------
    def owners(self, paths: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Each absolute in-root path -> the keys of the packages that own it (possibly
        none). One pass over the package lists, keeping only lines whose file name is one
        of the names asked about."""
        asked = {p: self._names_of(p) for p in dict.fromkeys(paths)}
        wanted = {posixpath.basename(n) for names in asked.values() for n in names}
        index: dict[str, list[str]] = {}
        for key, listed in self._listed(wanted):
            name = self.canonical(listed)
            if not self._is_dir(name):  # directories are shared by many packages, not owned
                index.setdefault(name, []).append(key)
        return {p: tuple(dict.fromkeys(k for n in names for k in index.get(n, ())))
                for p, names in asked.items()}

    def canonical(self, path: str) -> str:
        """`path` with its directory resolved inside the root; the last name kept."""
        path = posixpath.normpath("/" + path.lstrip("/"))
        head, base = posixpath.split(path)
        return posixpath.join(self._canonical_dir(head), base)

    def _is_dir(self, path: str) -> bool:
        return (self.root / path.lstrip("/")).is_dir()

    def _canonical_dir(self, d: str) -> str:
        hit = self._dirs.get(d)
        if hit is None:
            try:
                hit = in_root_path(self.root, RootFS(self.root).locate(d))
            except (CgotraceError, ValueError):
                hit = d
            self._dirs[d] = hit
        return hit

    def _names_of(self, path: str) -> tuple[str, ...]:
        """The canonical names a path is owned under: the link itself and its target."""
        names = [self.canonical(path)]
        with contextlib.suppress(CgotraceError, ValueError):
            final = RootFS(self.root).locate(path)
            names.append(self.canonical(in_root_path(self.root, final)))
        return tuple(dict.fromkeys(names))

    def _listed(self, wanted: set[str]) -> Iterator[tuple[str, str]]:
        """(package key, listed path) for every listed path whose file name is wanted."""
        if self.manager == "apk":
            for e in self.entries:
                for p in self._apk_files.get(e.package.key, ()):
                    if posixpath.basename(p) in wanted:
                        yield e.package.key, p
            return
        for e in self.entries:
            for lst in e.lists:
                for p in _list_lines(lst):
                    if posixpath.basename(p) in wanted:
                        yield e.package.key, p


def open_db(root: Path) -> PackageDb | None:
    """The package database of `root` (dpkg first, then apk), or None when it has none."""
    release = os_release(root)
    db = _open_dpkg(root, release)
    return db if db is not None else _open_apk(root, release)


def in_root_path(root: Path, host: Path) -> str:
    """A host path under `root` as the root's own absolute path (`/usr/lib`)."""
    rel = str(host.relative_to(root))
    return "/" if rel == "." else "/" + rel


def _in_root(root: Path, path: str) -> Path | None:
    try:
        return RootFS(root).locate(path)
    except CgotraceError:
        return None


def _open_dpkg(root: Path, release: dict[str, str]) -> PackageDb | None:
    base = _in_root(root, DPKG_DIR)
    if base is None:
        return None
    status, status_d = base / "status", base / "status.d"
    namespace = purl_namespace(release, "dpkg")
    distro = distro_qualifier(release, namespace)
    entries: list[_Entry] = []
    if status.is_file():
        for raw in _stanzas(status.read_text(errors="replace")):
            entry = _dpkg_entry(raw, base / "info", namespace, distro)
            if entry is not None:
                entries.append(entry)
    if status_d.is_dir():  # distroless: one stanza per file, paths in <name>.md5sums
        for f in sorted(status_d.iterdir()):
            if f.suffix == ".md5sums" or not f.is_file():
                continue
            for raw in _stanzas(f.read_text(errors="replace")):
                entry = _dpkg_entry(raw, None, namespace, distro)
                if entry is not None:
                    sums = f.with_name(f.name + ".md5sums")
                    entries.append(replace(entry, lists=(sums,) if sums.is_file() else ()))
    if not entries:
        return None
    return PackageDb(root, "dpkg", entries)


def _stanzas(text: str) -> Iterator[str]:
    for block in text.split("\n\n"):
        if block.strip():
            yield block.strip("\n") + "\n"


def _fields(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    key = None
    for line in raw.splitlines():
        if line[:1] in (" ", "\t") and key is not None:
            out[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            out[key] = value.strip()
    return out


def _dpkg_entry(raw: str, info: Path | None, namespace: str,
                distro: str | None) -> _Entry | None:
    f = _fields(raw)
    name, version = f.get("Package"), f.get("Version")
    status = f.get("Status", "install ok installed")  # status.d stanzas carry none
    if not name or not version or not status.endswith(" installed"):
        return None
    arch = f.get("Architecture") or None
    source, source_version = None, None
    if f.get("Source"):
        source, _, rest = f["Source"].partition(" ")
        source_version = rest.strip(" ()") or None
    pkg = OsPackage(manager="dpkg", name=name, version=version, arch=arch, source=source,
                    source_version=source_version, namespace=namespace, distro=distro)
    lists: tuple[Path, ...] = ()
    if info is not None:
        candidates = [info / f"{name}:{arch}.list", info / f"{name}.list"] if arch \
            else [info / f"{name}.list"]
        found = next((p for p in candidates if p.is_file()), None)
        lists = (found,) if found is not None else ()
    return _Entry(pkg, raw, lists)


def _list_lines(path: Path) -> Iterator[str]:
    """Paths a list file names: `info/*.list` lines, or the path column of `*.md5sums`."""
    try:
        text = path.read_text(errors="surrogateescape")
    except OSError:
        return
    md5 = path.suffix == ".md5sums"
    for line in text.splitlines():
        if md5:
            parts = line.split(None, 1)
            if len(parts) == 2:
                yield "/" + parts[1].lstrip("/")
        elif line.startswith("/") and line != "/.":
            yield line


def _open_apk(root: Path, release: dict[str, str]) -> PackageDb | None:
    db = _in_root(root, APK_INSTALLED)
    if db is None or not db.is_file():
        return None
    distro = distro_qualifier(release, "alpine")
    entries: list[_Entry] = []
    files: dict[str, list[str]] = {}
    for raw in _stanzas(db.read_text(errors="replace")):
        pkg, paths = _apk_entry(raw, distro)
        if pkg is not None:
            entries.append(_Entry(pkg, raw, ()))
            files[pkg.key] = paths
    return PackageDb(root, "apk", entries, files) if entries else None


def _apk_entry(raw: str, distro: str | None) -> tuple[OsPackage | None, list[str]]:
    values: dict[str, str] = {}
    paths: list[str] = []
    directory = ""
    for line in raw.splitlines():
        if len(line) < 2 or line[1] != ":":
            continue
        tag, value = line[0], line[2:]
        if tag == "F":
            directory = value.strip("/")
        elif tag == "R":
            paths.append("/" + posixpath.join(directory, value) if directory else "/" + value)
        elif tag not in values:
            values[tag] = value
    if not values.get("P") or not values.get("V"):
        return None, []
    origin = values.get("o")
    pkg = OsPackage(manager="apk", name=values["P"], version=values["V"],
                    arch=values.get("A") or None,
                    source=origin if origin and origin != values["P"] else None,
                    namespace="alpine", distro=distro, license=values.get("L") or None)
    return pkg, paths


# === used files ==============================================================================


def describe(root: Path, path: str, owners: tuple[str, ...], *,
             hash_unowned: bool = True) -> UsedFile:
    """What `path` is in `root` now: kind, size, SHA-256 (regular files no package owns),
    and where a symlink chain ends."""
    try:
        host = RootFS(root).locate(path, follow_last=False)
    except CgotraceError:
        return UsedFile(path=path, owners=owners)
    if not os.path.lexists(host):
        return UsedFile(path=path, owners=owners)
    target = None
    if host.is_symlink():
        with contextlib.suppress(CgotraceError, ValueError):
            final = RootFS(root).locate(path)
            target = in_root_path(root, final)
            host = final
    try:
        st = host.stat()
    except OSError:
        return UsedFile(path=path, owners=owners, kind="symlink", target=target)
    kind = "file" if host.is_file() else "directory" if host.is_dir() else "other"
    if target is not None:
        kind = "symlink" if kind != "directory" else "directory"
    digest = sha256_file(host) if kind in ("file", "symlink") and host.is_file() \
        and hash_unowned and not owners else None
    return UsedFile(path=path, owners=owners, kind=kind, sha256=digest,
                    size=st.st_size if host.is_file() else None, target=target)


def sha256_file(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


# === presets: the host's records for the files a preset copied =============================


def record_host_packages(root: Path, host: Path = Path("/")) -> list[str]:
    """Give a preset built from host files the host's dpkg records of those files: the
    status stanzas (verbatim) and `info/*.list` files of every package that owns a file
    the preset holds with the host's exact content (a file the preset writes itself, such
    as its passwd, is owned by nobody). Also names the host's distribution in the preset's
    os-release (`ID_LIKE`, `VERSION_ID`), which the SBOM's purls need. Returns the package
    names recorded (none when the host has no dpkg database)."""
    db = _open_dpkg(host, os_release(host))
    if db is None:
        return []
    paths = [p for p in _tree_paths(root) if not p.startswith(DPKG_DIR + "/")]
    owners = db.owners(paths)
    keys: set[str] = set()
    for path, pkg_keys in owners.items():
        if pkg_keys and _same_as_host(root, host, path):
            keys.update(pkg_keys)
    chosen = [e for e in db.entries if e.package.key in keys]
    if not chosen:
        return []
    dpkg = root / DPKG_DIR.lstrip("/")
    (dpkg / "info").mkdir(parents=True, exist_ok=True)
    (dpkg / "status").write_text("\n".join(e.raw for e in chosen))
    for e in chosen:
        for lst in e.lists:
            shutil.copyfile(lst, dpkg / "info" / lst.name)
    _name_host_release(root, os_release(host))
    return [e.package.name for e in chosen]


def _tree_paths(root: Path) -> Iterator[str]:
    for dirpath, _dirnames, filenames in os.walk(root):
        rel = in_root_path(root, Path(dirpath))
        for name in filenames:  # (os.walk lists a symlink to a directory as a directory)
            yield posixpath.join(rel, name)


def _same_as_host(root: Path, host: Path, path: str) -> bool:
    mine = root / path.lstrip("/")
    theirs = host / path.lstrip("/")
    try:
        if mine.is_symlink() or theirs.is_symlink():
            return mine.is_symlink() and theirs.is_symlink() and \
                os.readlink(mine) == os.readlink(theirs)
        return filecmp.cmp(mine, theirs, shallow=False)
    except OSError:
        return False


def _name_host_release(root: Path, host_release: dict[str, str]) -> None:
    release = root / "etc" / "os-release"
    if not host_release.get("ID") or not release.is_file() or release.is_symlink():
        return
    mine = parse_os_release(release.read_text())
    like = " ".join(dict.fromkeys([host_release["ID"], *host_release.get("ID_LIKE", "").split()]))
    extra = [f"# the packages in {DPKG_DIR} are this host's "
             f"({host_release.get('PRETTY_NAME', host_release['ID'])})"]
    if "ID_LIKE" not in mine:
        extra.append(f"ID_LIKE={like}")
    for key in ("VERSION_ID", "VERSION_CODENAME"):
        if key in host_release and key not in mine:
            extra.append(f'{key}="{host_release[key]}"')
    with open(release, "a") as f:
        f.write("\n".join(extra) + "\n")
