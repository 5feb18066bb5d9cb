"""Loader search replayed in a fabricated root: symlinks (absolute ones stay in the root),
RUNPATH $ORIGIN, ld.so.cache, the root's own system search path (read from its ld.so and
checked against `ld.so --help`), a library present outside that path, musl's path file, a
missing interpreter. Plus ELF facts of the same small C programs (compiled with the host
cc)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import preflight
from tracer.binary.elf import ElfImage
from tracer.binary.facts import inspect_binary
from tracer.binary.ldcache import NEW_MAGIC
from tracer.binary.loader import (
    GLIBC_FALLBACK_DIRS,
    glibc_system_dirs,
    resolve_closure,
    resolve_libraries,
)
from tracer.binary.nsswitch import nss_modules, parse_nsswitch
from tracer.binary.rootpath import RootFS

CC = shutil.which("cc") or shutil.which("gcc")
HOST_LD_SO = "/lib64/ld-linux-x86-64.so.2"
pytestmark = pytest.mark.skipif(CC is None, reason=preflight.tool_reason("cc") or "")


@pytest.fixture(scope="module")
def cbuild(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """cbuild(name, *ldflags) -> a small C program needing libfoo.so.1 (and libc)."""
    d = tmp_path_factory.mktemp("c")
    (d / "foo.c").write_text("int foo(void){return 1;}\n")
    (d / "main.c").write_text("int foo(void); int main(void){return foo();}\n")
    assert CC is not None
    subprocess.run([CC, "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o", str(d / "libfoo.so.1"),
                    str(d / "foo.c")], check=True)

    def build(name: str, *ldflags: str) -> Path:
        out = d / name
        if not out.exists():
            assert CC is not None
            subprocess.run([CC, "-o", str(out), str(d / "main.c"), f"-L{d}", "-l:libfoo.so.1",
                            *ldflags], check=True)
        return out

    build.libfoo = d / "libfoo.so.1"  # type: ignore[attr-defined]
    return build


def _glibc_root(root: Path) -> None:
    """A root with ld.so and libc copied from the host, reached through an ABSOLUTE symlink
    (/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2)."""
    libdir = root / "lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    host_ld = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
    shutil.copy(host_ld, libdir / "ld-linux-x86-64.so.2")
    shutil.copy(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6"), libdir / "libc.so.6")
    (root / "lib64").mkdir()
    os.symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", root / "lib64/ld-linux-x86-64.so.2")


def test_absolute_symlink_resolves_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    # /etc/passwd exists on the host, not in this root: the link must NOT resolve to the host
    os.symlink("/etc/passwd", root / "etc/pw")
    (root / "data").mkdir()
    (root / "data/real").write_text("x")
    os.symlink("/data/real", root / "etc/abs")
    os.symlink("../data/real", root / "etc/rel")
    os.symlink("../../../../../data/real", root / "etc/climb")  # .. stops at the root
    fs = RootFS(str(root))
    assert fs.resolve("/etc/pw") is None
    assert fs.resolve("/etc/abs") == "/data/real"
    assert fs.resolve("/etc/rel") == "/data/real"
    assert fs.resolve("/etc/climb") == "/data/real"
    os.symlink("loop2", root / "etc/loop1")
    os.symlink("loop1", root / "etc/loop2")
    assert fs.resolve("/etc/loop1") is None


def test_runpath_origin_and_symlinked_interpreter(tmp_path: Path,
                                                  cbuild: Callable[..., Path]) -> None:
    prog = cbuild("prog", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib")
    root = tmp_path / "root"
    _glibc_root(root)
    (root / "app/bin").mkdir(parents=True)
    (root / "app/lib").mkdir()
    shutil.copy(prog, root / "app/bin/prog")
    shutil.copy(cbuild.libfoo, root / "app/lib/libfoo.so.1")  # type: ignore[attr-defined]
    img = ElfImage.open(root / "app/bin/prog")
    assert img.runpath == ("$ORIGIN/../lib",)
    c = resolve_closure(img, str(root), "/app/bin/prog")
    assert c.flavor == "glibc"
    assert c.interpreter_path == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    libs = {lib.name: lib for lib in c.libraries}
    assert libs["libfoo.so.1"].path == "/app/lib/libfoo.so.1"
    assert libs["libfoo.so.1"].via == "runpath"
    assert libs["libc.so.6"].path == "/lib/x86_64-linux-gnu/libc.so.6"
    assert libs["libc.so.6"].via == "default-dirs"
    assert c.search_path is not None and c.search_path.source == "ld.so"
    assert c.search_path.dirs == host_system_dirs()
    assert not c.missing
    assert "/lib64/ld-linux-x86-64.so.2" in c.paths()
    assert "/app/lib/libfoo.so.1" in c.paths()


def host_system_dirs() -> tuple[str, ...]:
    """The test oracle: what the host's ld.so says its system search path is."""
    out = subprocess.run([HOST_LD_SO, "--help"], capture_output=True, text=True,
                         check=True).stdout
    return tuple(line.split()[0] for line in out.splitlines()
                 if line.strip().endswith("(system search path)"))


def test_system_dirs_read_from_ld_so_match_its_help() -> None:
    want = host_system_dirs()
    assert want  # glibc >= 2.33 prints them
    rodata = ElfImage.open(os.path.realpath(HOST_LD_SO)).section_data(".rodata")
    assert rodata is not None and glibc_system_dirs(rodata) == want
    if os.path.exists("/etc/debian_version"):  # Debian's ld.so never searches lib64
        assert "/lib64" not in want and "/usr/lib64" not in want


def test_system_dirs_string_table_shapes() -> None:
    fedora = b"/lib64/\0/usr/lib64/\0"
    lengths = struct.pack("<2Q", 7, 10)
    assert glibc_system_dirs(b"\x01\x02" + lengths + fedora + b"\0\0") == (
        "/lib64", "/usr/lib64")
    # without the length array: one list is taken, two different ones are not guessed
    assert glibc_system_dirs(b"\0junk\0" + fedora + b"\x07") == ("/lib64", "/usr/lib64")
    other = b"/usr/lib/\0"
    assert glibc_system_dirs(b"\0" + fedora + b"\x07\0" + other + b"\x07") is None
    assert glibc_system_dirs(b"\0/etc/ld.so.cache\0/usr/share/\0") is None  # no lib dirs


def test_unreadable_interpreter_falls_back_and_says_so(tmp_path: Path,
                                                       cbuild: Callable[..., Path]) -> None:
    prog = cbuild("prog-plain")
    root = tmp_path / "root"
    (root / "lib64").mkdir(parents=True)
    (root / "lib64/ld-linux-x86-64.so.2").write_bytes(b"\x7fELF not really")
    c = resolve_closure(ElfImage.open(prog), str(root), "/prog")
    assert c.search_path is not None and c.search_path.source == "glibc-defaults"
    assert c.search_path.dirs == GLIBC_FALLBACK_DIRS
    assert "/lib64/ld-linux-x86-64.so.2 is not readable" in c.search_path.detail


def test_library_outside_the_search_path_is_missing_and_located(
        tmp_path: Path, cbuild: Callable[..., Path]) -> None:
    prog = cbuild("prog-plain")
    root = tmp_path / "root"
    _glibc_root(root)
    (root / "usr/lib64").mkdir(parents=True)
    shutil.copy(cbuild.libfoo, root / "usr/lib64/libfoo.so.1")  # type: ignore[attr-defined]
    c = resolve_closure(ElfImage.open(prog), str(root), "/prog")
    assert [lib.name for lib in c.missing] == ["libfoo.so.1"]
    foo = c.missing[0]
    assert foo.elsewhere == ("/usr/lib64/libfoo.so.1",)
    assert "/usr/lib64/libfoo.so.1" not in foo.searched
    problems = inspect_binary(prog, rootfs=str(root), binary_path_in_root="/prog").problems
    dirs = ", ".join(host_system_dirs())
    assert problems == (
        "libfoo.so.1 (needed by /prog) is present at /usr/lib64/libfoo.so.1, outside the "
        "loader's search path: the loader will stop with 'cannot open shared object file'. "
        f"Fix: move it into a directory the loader searches ({dirs}), or add /usr/lib64 to "
        "/etc/ld.so.conf and run ldconfig",)
    # a file of that name that is no loadable library is no answer
    (root / "usr/lib64/libfoo.so.1").write_bytes(b"not an ELF file")
    assert resolve_closure(ElfImage.open(prog), str(root), "/prog").missing[0].elsewhere == ()


def test_host_lookup_follows_the_hosts_own_loader() -> None:
    c = resolve_libraries(["libc.so.6", "libnosuch-cgotrace.so.9"])
    libs = {lib.name: lib for lib in c.libraries}
    assert libs["libc.so.6"].via == "ld.so.cache" and libs["libc.so.6"].found
    assert not libs["libnosuch-cgotrace.so.9"].found
    assert libs["libnosuch-cgotrace.so.9"].needed_by == "(requested)"
    assert "ld-linux-x86-64.so.2" in libs  # libc's own NEEDED, followed


def _cache_bytes(key: str, value: str) -> bytes:
    strings_base = 48 + 24
    strings = key.encode() + b"\0" + value.encode() + b"\0"
    head = NEW_MAGIC + struct.pack("<IIB3xI12x", 1, len(strings), 2, 0)
    entry = struct.pack("<iIIIQ", 0x303, strings_base, strings_base + len(key) + 1, 0, 0)
    return head + entry + strings


def test_ld_so_cache_of_the_root_is_used(tmp_path: Path, cbuild: Callable[..., Path]) -> None:
    prog = cbuild("prog-plain")
    root = tmp_path / "root"
    _glibc_root(root)
    (root / "weird/dir").mkdir(parents=True)
    shutil.copy(cbuild.libfoo, root / "weird/dir/libfoo.so.1")  # type: ignore[attr-defined]
    (root / "etc").mkdir()
    (root / "etc/ld.so.cache").write_bytes(_cache_bytes("libfoo.so.1",
                                                        "/weird/dir/libfoo.so.1"))
    c = resolve_closure(ElfImage.open(prog), str(root), "/prog")
    libs = {lib.name: lib for lib in c.libraries}
    assert libs["libfoo.so.1"].via == "ld.so.cache"
    assert libs["libfoo.so.1"].path == "/weird/dir/libfoo.so.1"
    assert "/etc/ld.so.cache" in c.config_files


def test_missing_interpreter_and_library_are_reported(tmp_path: Path,
                                                      cbuild: Callable[..., Path]) -> None:
    prog = cbuild("prog-plain")
    root = tmp_path / "empty"
    root.mkdir()
    facts = inspect_binary(prog, rootfs=str(root))
    assert facts.closure.interpreter_path is None
    assert {lib.name for lib in facts.closure.missing} == {"libfoo.so.1", "libc.so.6"}
    assert any("interpreter /lib64/ld-linux-x86-64.so.2 is not in this root: exec will fail "
               "with 'no such file or directory'" in p for p in facts.problems)
    assert facts.to_dict()["loader"]["interpreter_found"] is False


def test_musl_path_file_and_builtin_libc(tmp_path: Path, cbuild: Callable[..., Path]) -> None:
    prog = cbuild("mprog", "-Wl,--dynamic-linker=/lib/ld-musl-x86_64.so.1")
    root = tmp_path / "alpine"
    (root / "lib").mkdir(parents=True)
    # any x86-64 ELF will do as the loader file; the closure only checks it is there
    shutil.copy(os.path.realpath("/lib64/ld-linux-x86-64.so.2"), root / "lib/ld-musl-x86_64.so.1")
    (root / "opt/lib").mkdir(parents=True)
    shutil.copy(cbuild.libfoo, root / "opt/lib/libfoo.so.1")  # type: ignore[attr-defined]
    (root / "etc").mkdir()
    (root / "etc/ld-musl-x86_64.path").write_text("/nonexistent\n/opt/lib:/usr/lib\n")
    c = resolve_closure(ElfImage.open(prog), str(root), "/prog")
    assert c.flavor == "musl"
    libs = {lib.name: lib for lib in c.libraries}
    assert libs["libfoo.so.1"].path == "/opt/lib/libfoo.so.1"
    assert libs["libfoo.so.1"].via == "musl-path"
    assert libs["libc.so.6"].via == "musl-builtin"  # musl answers libc.* itself
    assert "/etc/ld-musl-x86_64.path" in c.config_files
    # without the path file musl searches /lib:/usr/local/lib:/usr/lib only
    (root / "etc/ld-musl-x86_64.path").unlink()
    c2 = resolve_closure(ElfImage.open(prog), str(root), "/prog")
    missing = {lib.name: lib for lib in c2.missing}
    assert missing["libfoo.so.1"].searched == ("/lib/libfoo.so.1", "/usr/local/lib/libfoo.so.1",
                                               "/usr/lib/libfoo.so.1")


def test_elf_facts_of_a_c_program(cbuild: Callable[..., Path]) -> None:
    prog = cbuild("prog", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib")
    img = ElfImage.open(prog)
    preflight.require("readelf")
    readelf = subprocess.run(["readelf", "-lW", str(prog)], capture_output=True, text=True)
    pie = "DYN (" in readelf.stdout
    assert img.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert img.needed == ("libfoo.so.1", "libc.so.6")
    assert img.is_pie == pie and not img.is_static
    assert "foo" in img.imports and "main" not in img.imports
    assert img.gnu_build_id is None or len(img.gnu_build_id) == 40
    assert img.go_build_id is None and not img.upx_packed
    main = next(a for a, _, n in img.symbols() if n == "main")
    assert img.symbol_for(main + 1) == ("main", 1)
    assert img.arch_supported and img.arch_note is None
    lib = ElfImage.open(cbuild.libfoo)  # type: ignore[attr-defined]
    assert lib.soname == "libfoo.so.1" and lib.is_shared_library and "foo" in lib.exports


def test_upx_marker_and_other_arch(tmp_path: Path, cbuild: Callable[..., Path]) -> None:
    data = bytearray(cbuild("prog-plain").read_bytes())
    data[-64:-60] = b"UPX!"
    packed = tmp_path / "packed"
    packed.write_bytes(bytes(data))
    assert ElfImage.open(packed).upx_packed
    data = bytearray(cbuild("prog-plain").read_bytes())
    data[18:20] = struct.pack("<H", 183)  # e_machine = EM_AARCH64
    arm = tmp_path / "arm"
    arm.write_bytes(bytes(data))
    img = ElfImage.open(arm)
    assert not img.arch_supported
    assert img.arch_note is not None and "x86-64 only" in img.arch_note


def test_nsswitch_parsing_and_modules() -> None:
    ns = parse_nsswitch("# c\npasswd:  files systemd\ngroup: files [SUCCESS=merge] sss\n"
                        "hosts: files mdns4_minimal [NOTFOUND=return] dns myhostname\n")
    assert ns["passwd"] == ("files", "systemd")
    assert ns["group"] == ("files", "sss")
    assert nss_modules(ns, ["passwd", "group"]) == [("libnss_systemd.so.2", "passwd"),
                                                     ("libnss_sss.so.2", "group")]
    assert [m for m, _ in nss_modules(ns, ["hosts"])] == ["libnss_mdns4_minimal.so.2",
                                                          "libnss_myhostname.so.2"]
    # a libc without built-in files (glibc < 2.34) dlopens libnss_files too
    assert nss_modules(ns, ["passwd"], builtin=())[0] == ("libnss_files.so.2", "passwd")
