"""Rootfs presets: small roots made from this host's files, for `--rootfs NAME`.

- `scratch`: nothing but the sandbox's mount points;
- `static`: distroless/static-like (passwd, group, nsswitch.conf, CA bundle, zoneinfo);
- `musl`: Alpine-like (musl's loader, which is also its libc);
- `glibc`: Debian-slim-like (glibc's loader and libc, the NSS modules the host's
  nsswitch.conf names, with what they need, and an ld.so.cache of exactly those).

Each is built into `<cache>/rootfs/preset-<name>` (tracer/sandbox/trees.py) when missing or
when its recipe changes (`PRESET_VERSION`). They are small: copies of a handful of host
files (about 10 MB for glibc). Libraries are found the way the host's own loader finds
them (tracer.binary.loader.resolve_libraries), and nsswitch.conf is read by
tracer.binary.nsswitch: the same code that later judges the preset.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
from pathlib import Path

from tracer.binary.loader import GLIBC_INTERPRETER, resolve_libraries
from tracer.binary.nsswitch import NSSWITCH_CONF, nss_module, nss_services, parse_nsswitch
from tracer.cachedir import locked
from tracer.errors import BadImageError, NotFoundError
from tracer.sandbox.trees import building_tree, cache_dir, ensure_dir, read_stamp

PRESETS = ("scratch", "static", "musl", "glibc")
# Bump when a preset recipe changes: presets with another stamp are rebuilt.
# 3: the glibc preset's ld.so.cache is generated for its own libraries (ldconfig -r).
# 4: the glibc preset gets the host's dpkg records of its files (docs/sbom.md).
PRESET_VERSION = "4"
# A subset of /usr/share/zoneinfo: enough for UTC, Local-style lookups and the usual
# examples; a program asking for another zone fails exactly as on a slim image without it.
ZONEINFO_SUBSET = ("UTC", "Etc/UTC", "Etc/GMT", "America/New_York", "Europe/London",
                   "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
MUSL_LIBC = "/lib/x86_64-linux-musl/libc.so"  # Debian's musl package
LDCONFIG_TIMEOUT = 60.0

_PASSWD = ("root:x:0:0:root:/root:/sbin/nologin\n"
           "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
           "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
_GROUP = "root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n"
_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
# the static preset's, and the glibc preset's on a host without one
_FILES_NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"


def build_preset(name: str, *, force: bool = False) -> Path:
    """The preset's tree, built first when missing or made by another recipe version."""
    if name not in PRESETS:
        raise NotFoundError(f"unknown rootfs preset {name!r} (presets: {', '.join(PRESETS)})")
    dest = cache_dir() / "rootfs" / f"preset-{name}"
    stamp = f"preset {name} v{PRESET_VERSION}\n"
    if not force and read_stamp(dest) == stamp:
        return dest
    ensure_dir(dest.parent)
    # One builder at a time (parallel test workers, two cgotrace runs): a second builder
    # that finds the tree done returns it instead of swapping it out from under a sandbox
    # that may already run in it.
    with locked(dest.with_name(f".{dest.name}.lock")):
        if not force and read_stamp(dest) == stamp:
            return dest
        with building_tree(dest, stamp) as tmp:
            {"scratch": _scratch, "static": _static, "musl": _musl, "glibc": _glibc}[name](tmp)
    return dest


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
    _common_etc(root, nsswitch=_FILES_NSSWITCH)
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
    names with their NEEDED closure (libnss_systemd -> libcap, libm), found the way the
    host's own loader finds them (tracer.binary.loader), and an ld.so.cache of exactly
    these libraries."""
    nsswitch = Path(NSSWITCH_CONF).read_text() if os.path.exists(NSSWITCH_CONF) \
        else _FILES_NSSWITCH
    libs = ["libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libresolv.so.2",
            "libcap.so.2"]
    libs += [nss_module(s) for s in nss_services(parse_nsswitch(nsswitch))]
    if os.path.exists(GLIBC_INTERPRETER):
        install_host_file(root, GLIBC_INTERPRETER)
    for lib in resolve_libraries(libs, "/", GLIBC_INTERPRETER).libraries:
        if lib.path is not None:
            install_host_file(root, lib.path)
    _common_etc(root, nsswitch=nsswitch)
    _write(root, "/etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d").mkdir(exist_ok=True)
    write_ld_so_cache(root)
    _write(root, "/etc/host.conf", "multi on\n")
    _write(root, "/etc/os-release", 'ID=debian-slim-like\nNAME="cgotrace glibc preset"\n')
    _certs_and_zoneinfo(root)
    from tracer.sandbox.pkgdb import record_host_packages

    record_host_packages(root)  # the SBOM of a run here names real packages (docs/sbom.md)


def write_ld_so_cache(root: Path) -> None:
    """Generate `root`/etc/ld.so.cache for the libraries in `root` with the host's
    `ldconfig -r ROOT -X` (ROOT's own ld.so.conf and system directories; -X: no soname
    links are changed). Without ldconfig, or when it fails, the tree keeps no cache at all
    (the loader then searches its system directories, where the presets put every
    library), never one that names files the tree lacks."""
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
    ok = False
    if ldconfig is not None:
        try:
            ok = subprocess.run([ldconfig, "-r", str(root), "-X"], capture_output=True,
                                stdin=subprocess.DEVNULL, timeout=LDCONFIG_TIMEOUT,
                                check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
    if not ok:
        (root / "etc/ld.so.cache").unlink(missing_ok=True)


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
