"""OS package databases read from a root's files (tracer/sandbox/pkgdb.py): dpkg status and
lists (multi-arch names, merged /usr, symlinks), distroless status.d, Alpine's installed
database, os-release, and the preset's copy of the host's records."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tracer.sandbox import pkgdb

STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u7
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: libcap2
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: libcap2 (1:2.66-4)
Version: 1:2.66-4+b1

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def _write(root: Path, path: str, text: str = "x") -> Path:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def debian_root(root: Path) -> Path:
    """A merged-/usr root (/lib -> usr/lib) whose packages list /lib paths."""
    (root / "usr" / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (root / "usr" / "lib64").mkdir()
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/lib64", root / "lib64")
    _write(root, "/usr/lib/x86_64-linux-gnu/libc.so.6", "libc")
    _write(root, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "ld")
    os.symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
               root / "usr" / "lib64" / "ld-linux-x86-64.so.2")
    _write(root, "/usr/lib/x86_64-linux-gnu/libcap.so.2.66", "cap")
    os.symlink("libcap.so.2.66", root / "usr" / "lib" / "x86_64-linux-gnu" / "libcap.so.2")
    _write(root, "/usr/share/zoneinfo/UTC", "TZif")
    _write(root, "/usr/lib/x86_64-linux-gnu/libold.so.1", "old")
    _write(root, "/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    _write(root, "/etc/os-release", 'ID=debian-slim-like\nID_LIKE="debian"\nVERSION_ID="12"\n')
    _write(root, "/var/lib/dpkg/status", STATUS)
    _write(root, "/var/lib/dpkg/info/libc6:amd64.list",
           "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n"
           "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n/lib64\n"
           "/lib64/ld-linux-x86-64.so.2\n/usr/share/doc/libc6/copyright\n")
    _write(root, "/var/lib/dpkg/info/tzdata.list", "/.\n/usr/share/zoneinfo/UTC\n")
    _write(root, "/var/lib/dpkg/info/libcap2:amd64.list",
           "/lib/x86_64-linux-gnu/libcap.so.2.66\n/lib/x86_64-linux-gnu/libcap.so.2\n")
    _write(root, "/var/lib/dpkg/info/oldpkg:amd64.list", "/lib/x86_64-linux-gnu/libold.so.1\n")
    return root


def test_dpkg_owners_through_merged_usr_symlinks_and_multiarch_lists(tmp_path: Path) -> None:
    db = pkgdb.open_db(debian_root(tmp_path))
    assert db is not None and db.manager == "dpkg"
    asked = ["/lib/x86_64-linux-gnu/libc.so.6",  # as listed
             "/usr/lib/x86_64-linux-gnu/libc.so.6",  # the same file by its real name
             "/lib64/ld-linux-x86-64.so.2",  # a link listed by libc6, to a libc6 file
             "/lib/x86_64-linux-gnu/libcap.so.2",  # a link inside one package
             "/usr/share/zoneinfo/UTC", "/etc/passwd",  # unowned
             "/lib/x86_64-linux-gnu/libold.so.1",  # only in a removed package's list
             "/lib/x86_64-linux-gnu"]  # a directory every package lists: owned by none
    owners = db.owners(asked)
    assert owners == {
        "/lib/x86_64-linux-gnu/libc.so.6": ("dpkg:libc6:amd64",),
        "/usr/lib/x86_64-linux-gnu/libc.so.6": ("dpkg:libc6:amd64",),
        "/lib64/ld-linux-x86-64.so.2": ("dpkg:libc6:amd64",),
        "/lib/x86_64-linux-gnu/libcap.so.2": ("dpkg:libcap2:amd64",),
        "/usr/share/zoneinfo/UTC": ("dpkg:tzdata:all",),
        "/etc/passwd": (),
        "/lib/x86_64-linux-gnu/libold.so.1": (),
        "/lib/x86_64-linux-gnu": (),
    }
    libc = db.packages["dpkg:libc6:amd64"]
    assert (libc.version, libc.arch, libc.source, libc.namespace, libc.distro) == (
        "2.36-9+deb12u7", "amd64", "glibc", "debian", "debian-12")
    cap = db.packages["dpkg:libcap2:amd64"]
    assert (cap.source, cap.source_version) == ("libcap2", "1:2.66-4")
    assert "dpkg:oldpkg:amd64" not in db.packages


def test_distroless_status_d(tmp_path: Path) -> None:
    _write(tmp_path, "/usr/lib/x86_64-linux-gnu/libssl.so.3")
    _write(tmp_path, "/var/lib/dpkg/status.d/libssl3",
           "Package: libssl3\nVersion: 3.0.11-1~deb12u2\nArchitecture: amd64\n"
           "Source: openssl\n")
    _write(tmp_path, "/var/lib/dpkg/status.d/libssl3.md5sums",
           "0123abcd  usr/lib/x86_64-linux-gnu/libssl.so.3\n")
    _write(tmp_path, "/etc/os-release", "ID=debian\nVERSION_ID=12\n")
    db = pkgdb.open_db(tmp_path)
    assert db is not None
    assert db.owners(["/usr/lib/x86_64-linux-gnu/libssl.so.3"]) == {
        "/usr/lib/x86_64-linux-gnu/libssl.so.3": ("dpkg:libssl3:amd64",)}


APK = (Path(__file__).resolve().parents[1] / "data" / "apk-installed").read_text()


def test_apk_installed_database(tmp_path: Path) -> None:
    _write(tmp_path, "/lib/ld-musl-x86_64.so.1", "musl")
    os.symlink("ld-musl-x86_64.so.1", tmp_path / "lib" / "libc.musl-x86_64.so.1")
    _write(tmp_path, "/etc/passwd")
    _write(tmp_path, "/etc/os-release", 'ID=alpine\nVERSION_ID=3.19.1\n')
    _write(tmp_path, "/lib/apk/db/installed", APK)
    db = pkgdb.open_db(tmp_path)
    assert db is not None and db.manager == "apk"
    owners = db.owners(["/lib/libc.musl-x86_64.so.1", "/etc/passwd", "/etc/hosts"])
    assert owners == {"/lib/libc.musl-x86_64.so.1": ("apk:musl:x86_64",),
                      "/etc/passwd": ("apk:alpine-baselayout-data:x86_64",), "/etc/hosts": ()}
    musl = db.packages["apk:musl:x86_64"]
    assert (musl.version, musl.license, musl.source, musl.distro, musl.namespace) == (
        "1.2.4-r2", "MIT", None, "alpine-3.19.1", "alpine")
    assert db.packages["apk:alpine-baselayout-data:x86_64"].source == "alpine-baselayout"


def test_no_database(tmp_path: Path) -> None:
    _write(tmp_path, "/etc/passwd")
    assert pkgdb.open_db(tmp_path) is None


def test_os_release_and_distro() -> None:
    rel = pkgdb.parse_os_release('# c\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n'
                                 "PRETTY_NAME='Ubuntu 22.04'\nbroken line\n")
    assert rel == {"ID": "ubuntu", "ID_LIKE": "debian", "VERSION_ID": "22.04",
                   "PRETTY_NAME": "Ubuntu 22.04"}
    assert pkgdb.purl_namespace(rel, "dpkg") == "ubuntu"
    assert pkgdb.distro_qualifier(rel, "ubuntu") == "ubuntu-22.04"
    like = {"ID": "debian-slim-like", "ID_LIKE": "debian", "VERSION_ID": "12"}
    assert pkgdb.distro_qualifier(like, "debian") == "debian-12"
    assert pkgdb.distro_qualifier({}, "debian") is None


def test_describe_hashes_unowned_files_and_follows_links(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    f = pkgdb.describe(root, "/etc/passwd", ())
    assert f.kind == "file" and f.sha256 == hashlib.sha256(
        b"root:x:0:0::/root:/bin/sh\n").hexdigest() and f.size == 26
    owned = pkgdb.describe(root, "/lib/x86_64-linux-gnu/libc.so.6", ("dpkg:libc6:amd64",))
    assert owned.sha256 is None and owned.kind == "file"  # the package names it
    link = pkgdb.describe(root, "/lib64/ld-linux-x86-64.so.2", ())
    assert (link.kind, link.target) == ("symlink", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    assert pkgdb.describe(root, "/etc/nope", ()).kind == "absent"


def test_preset_records_only_packages_whose_files_it_holds_unchanged(tmp_path: Path) -> None:
    host = debian_root(tmp_path / "host")
    _write(host, "/etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12"\nID=debian\n'
           'VERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    preset = tmp_path / "preset"
    (preset / "usr" / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    os.symlink("usr/lib", preset / "lib")
    _write(preset, "/usr/lib/x86_64-linux-gnu/libc.so.6", "libc")  # the host's content
    _write(preset, "/usr/share/zoneinfo/UTC", "not the host's")  # changed: not tzdata's
    _write(preset, "/etc/os-release", "ID=debian-slim-like\n")
    names = pkgdb.record_host_packages(preset, host)
    assert names == ["libc6"]
    status = (preset / "var/lib/dpkg/status").read_text()
    assert status.startswith("Package: libc6\nStatus: install ok installed\n")
    assert "tzdata" not in status
    assert (preset / "var/lib/dpkg/info/libc6:amd64.list").read_text() == (
        host / "var/lib/dpkg/info/libc6:amd64.list").read_text()
    rel = pkgdb.os_release(preset)
    assert (rel["ID"], rel["ID_LIKE"], rel["VERSION_ID"]) == ("debian-slim-like", "debian", "12")
    db = pkgdb.open_db(preset)
    assert db is not None and db.packages["dpkg:libc6:amd64"].distro == "debian-12"
