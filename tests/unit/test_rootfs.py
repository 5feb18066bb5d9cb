"""Rootfs sources and the parent half of the sandbox: presets, image extraction (layered
images and flat root filesystem tarballs), path mapping, exec-failure diagnosis. No
namespaces needed."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tracer.binary.ldcache import read_ld_cache
from tracer.binary.nsswitch import nss_services, parse_nsswitch
from tracer.binary.rootpath import RootFS
from tracer.errors import BadImageError, NotFoundError, PermissionDeniedError, SandboxError
from tracer.sandbox import container, presets, roots, trees
from tracer.sandbox.container import Bind, SandboxSpec


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("CGOTRACE_CACHE", str(d))
    return d


def _files(root: Path) -> set[str]:
    return {"/" + str(p.relative_to(root)) for p in root.rglob("*")}


# --- presets ----------------------------------------------------------------------------------


def test_scratch_has_only_mount_points(cache: Path) -> None:
    root = roots.resolve_rootfs("scratch")
    assert root == cache / "rootfs" / "preset-scratch"
    names = {p.name for p in root.iterdir()} - {".cgotrace-rootfs"}
    assert names == set(trees.MOUNT_DIRS)
    assert not (root / "etc").exists()


def test_static_is_distroless_like_without_libc(cache: Path) -> None:
    root = presets.build_preset("static")
    for f in ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", presets.CA_BUNDLE,
              "/usr/share/zoneinfo/UTC", "/usr/share/zoneinfo/Europe/Berlin"):
        assert (root / f.lstrip("/")).is_file(), f
    assert "nonroot:x:65532" in (root / "etc/passwd").read_text()
    files = _files(root)
    assert not [f for f in files if "ld-linux" in f or "libc.so" in f or "ld-musl" in f]
    assert oct((root / "tmp").stat().st_mode & 0o7777) == "0o1777"


def test_musl_is_alpine_like(cache: Path) -> None:
    if not os.path.exists(presets.MUSL_LIBC):
        pytest.skip("Debian's musl package is not installed (make system-deps)")
    root = presets.build_preset("musl")
    loader = root / "lib/ld-musl-x86_64.so.1"
    assert loader.read_bytes()[:4] == b"\x7fELF"
    assert RootFS(root).locate("/lib/libc.musl-x86_64.so.1") == loader
    assert not (root / "etc/nsswitch.conf").exists()
    assert (root / "etc/hosts").read_text().startswith("127.0.0.1")
    assert not [f for f in _files(root) if "ld-linux" in f or "libc.so.6" in f]


def test_glibc_has_loader_libc_and_nss_closure(cache: Path) -> None:
    root = presets.build_preset("glibc")
    interp = RootFS(root).locate("/lib64/ld-linux-x86-64.so.2")
    assert interp.is_file() and str(interp).startswith(str(root))
    wanted = ["libc.so.6", "libm.so.6"]
    host_nss = Path("/etc/nsswitch.conf").read_text() if os.path.exists(
        "/etc/nsswitch.conf") else ""
    if "systemd" in nss_services(parse_nsswitch(host_nss)):
        wanted += ["libnss_systemd.so.2", "libcap.so.2"]  # libnss_systemd NEEDs libcap
    for lib in wanted:
        assert RootFS(root).locate(f"/lib/x86_64-linux-gnu/{lib}").is_file(), lib
    for f in ("etc/nsswitch.conf", "etc/ld.so.cache", "etc/passwd", "etc/group", "etc/hosts",
              "usr/share/zoneinfo/UTC"):
        assert (root / f).is_file(), f
    assert (root / "etc/nsswitch.conf").read_text() == host_nss
    # copies, never hardlinks of host files
    assert (RootFS(root).locate("/lib/x86_64-linux-gnu/libc.so.6")).stat().st_nlink == 1


def test_preset_is_rebuilt_when_missing_or_stale(cache: Path) -> None:
    root = presets.build_preset("static")
    (root / "etc/passwd").unlink()
    assert presets.build_preset("static") == root
    assert not (root / "etc/passwd").exists()  # up to date: not rebuilt
    (root / ".cgotrace-rootfs").write_text("preset static v0\n")
    presets.build_preset("static")
    assert (root / "etc/passwd").is_file()


def test_nss_services() -> None:
    text = "passwd: files systemd\n# hosts: nis\nhosts: files [NOTFOUND=return] dns\nbad\n"
    assert nss_services(parse_nsswitch(text)) == ["files", "systemd", "dns"]
    # glibc allows blanks inside the criteria: they name no source (no module to copy)
    spaced = "hosts: files [ NOTFOUND=return ] dns\n"
    assert nss_services(parse_nsswitch(spaced)) == ["files", "dns"]


def test_glibc_preset_ld_so_cache_names_only_its_own_libraries(cache: Path) -> None:
    root = presets.build_preset("glibc")
    ld_cache = read_ld_cache(str(root / "etc/ld.so.cache"))
    assert ld_cache is not None and ld_cache.entries
    fs = RootFS(root)
    absent = [e.path for e in ld_cache.entries if not fs.is_file(e.path)]
    assert absent == []
    names = {e.soname for e in ld_cache.entries}
    assert {"libc.so.6", "libm.so.6"} <= names
    host = read_ld_cache("/etc/ld.so.cache")
    if host is not None:  # the host's cache names far more than the preset holds
        assert len(ld_cache.entries) < len(host.entries)


def test_unknown_rootfs_names_the_presets(cache: Path) -> None:
    with pytest.raises(NotFoundError) as ei:
        roots.resolve_rootfs("alpine-but-not-here")
    msg = ei.value.message
    assert "\n" not in msg
    for p in presets.PRESETS:
        assert p in msg


# --- paths inside a root (tracer.binary.rootpath) ------------------------------------------------


def test_root_paths_never_leave_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/f").write_text("inside")
    os.symlink("usr/lib", root / "lib")
    os.symlink("/usr/lib/f", root / "abs")
    os.symlink("../../../../../etc/passwd", root / "up")
    assert RootFS(root).locate("/lib/f") == root / "usr/lib/f"
    assert RootFS(root).locate("/abs") == root / "usr/lib/f"
    assert RootFS(root).locate("/up") == root / "etc/passwd"
    assert RootFS(root).locate("/abs", follow_last=False) == root / "abs"
    assert RootFS(root).locate("/usr/new/file") == root / "usr/new/file"  # to be created
    assert RootFS(root).resolve("/up") is None  # resolve: existing files only
    assert RootFS(root).resolve("/abs") == "/usr/lib/f"
    os.symlink("loop", root / "loop")
    with pytest.raises(BadImageError, match="too many levels of symbolic links"):
        RootFS(root).locate("/loop")
    assert RootFS(root).resolve("/loop") is None


# --- images ---------------------------------------------------------------------------------------


def _layer(entries: list[tuple[str, str, str | bytes]]) -> bytes:
    """entries: (kind, name, data-or-linkname); kind in file/dir/sym/hard."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                raw = data.encode() if isinstance(data, str) else data
                info.size, info.mode = len(raw), 0o4755 if name.endswith("suid") else 0o644
                tar.addfile(info, io.BytesIO(raw))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            tar.addfile(info)
    return buf.getvalue()


LOWER = [("dir", "etc", ""), ("file", "etc/passwd", "root:x:0:0::/:/bin/sh\n"),
         ("file", "etc/old", "old"), ("dir", "data", ""), ("file", "data/a", "a"),
         ("file", "data/b", "b"), ("sym", "lib", "usr/lib"), ("dir", "usr/lib", ""),
         ("file", "usr/lib/libx.so", "x"), ("hard", "usr/lib/liby.so", "usr/lib/libx.so"),
         ("file", "bin/suid", "s")]
UPPER = [("file", "etc/.wh.old", ""), ("file", "data/.wh..wh..opq", ""),
         ("file", "data/c", "c"), ("file", "lib/libz.so", "z"),
         ("file", "etc/passwd", "root:x:0:0::/:/sbin/nologin\n")]


def _docker_save(path: Path, layers: list[bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        names = []
        for i, raw in enumerate(layers):
            name = f"{i:02d}abc/layer.tar"
            names.append(name)
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        manifest = json.dumps([{"Config": "c.json", "RepoTags": ["t:1"],
                                "Layers": names}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return path


def _oci_layout(d: Path, layers: list[bytes], *, nested_index: bool = False) -> Path:
    blobs = d / "blobs/sha256"
    blobs.mkdir(parents=True)

    def put(raw: bytes) -> str:
        h = hashlib.sha256(raw).hexdigest()
        (blobs / h).write_bytes(raw)
        return f"sha256:{h}"

    descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
              "digest": put(gzip.compress(raw)), "size": 0} for raw in layers]
    manifest = put(json.dumps({"schemaVersion": 2, "layers": descs}).encode())
    top = {"schemaVersion": 2, "manifests": [
        {"digest": manifest, "platform": {"architecture": "amd64", "os": "linux"}}]}
    if nested_index:
        inner = put(json.dumps(top).encode())
        top = {"schemaVersion": 2, "manifests": [{"digest": inner}]}
    (d / "index.json").write_text(json.dumps(top))
    (d / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return d


def _check_applied(root: Path) -> None:
    assert (root / "etc/passwd").read_text().endswith("/sbin/nologin\n")  # upper wins
    assert not (root / "etc/old").exists()  # .wh.old
    assert sorted(p.name for p in (root / "data").iterdir()) == ["c"]  # opaque dir
    assert (root / "usr/lib/libz.so").read_text() == "z"  # written through lib -> usr/lib
    assert os.readlink(root / "lib") == "usr/lib"
    assert (root / "usr/lib/liby.so").stat().st_ino == (root / "usr/lib/libx.so").stat().st_ino
    assert not (root / "bin/suid").stat().st_mode & 0o6000  # set-id dropped
    for d in trees.MOUNT_DIRS:
        assert (root / d).is_dir()
    assert not list(root.rglob(".wh.*"))


def test_docker_save_tarball_layers_and_whiteouts(cache: Path, tmp_path: Path) -> None:
    tar = _docker_save(tmp_path / "img.tar", [_layer(LOWER), _layer(UPPER)])
    root = roots.resolve_rootfs(str(tar))
    assert root.parent == cache / "rootfs"
    _check_applied(root)
    assert roots.resolve_rootfs(str(tar)) == root  # cached by digest


def test_oci_layout_directory_with_nested_index(cache: Path, tmp_path: Path) -> None:
    d = _oci_layout(tmp_path / "oci", [_layer(LOWER), _layer(UPPER)], nested_index=True)
    _check_applied(roots.resolve_rootfs(str(d)))


def test_oci_layout_in_a_tarball(cache: Path, tmp_path: Path) -> None:
    d = _oci_layout(tmp_path / "oci", [_layer(LOWER), _layer(UPPER)])
    tgz = tmp_path / "oci.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(d, arcname=".")
    _check_applied(roots.resolve_rootfs(str(tgz)))


def test_path_traversal_entry_is_refused(cache: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    evil = _layer([("file", "etc/ok", "ok"), ("file", "../../victim", "pwned")])
    tar = _docker_save(tmp_path / "evil.tar", [evil])
    with pytest.raises(BadImageError, match="path traversal"):
        roots.resolve_rootfs(str(tar))
    assert not victim.exists()
    leftovers = list((cache / "rootfs").iterdir()) if (cache / "rootfs").exists() else []
    assert leftovers == []  # the half-applied tree is gone


def test_symlink_planted_by_a_layer_cannot_redirect_writes(cache: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    lower = _layer([("sym", "esc", str(outside)), ("sym", "rel", "../../../../" + str(outside))])
    upper = _layer([("file", "esc/pwned", "x"), ("file", "rel/pwned2", "y")])
    root = roots.resolve_rootfs(str(_docker_save(tmp_path / "s.tar", [lower, upper])))
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "pwned").read_text() == "x"
    assert (root / str(outside).lstrip("/") / "pwned2").read_text() == "y"


def test_hardlink_to_outside_is_refused(cache: Path, tmp_path: Path) -> None:
    evil = _layer([("hard", "etc/shadow", "../../../etc/shadow")])
    with pytest.raises(BadImageError, match="path traversal"):
        roots.resolve_rootfs(str(_docker_save(tmp_path / "h.tar", [evil])))


def test_not_an_image(cache: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tarball at all" * 100)
    with pytest.raises(BadImageError):
        roots.resolve_rootfs(str(junk))


# --- flat root filesystem tarballs (`podman export`, `tar -C root -cf x.tar .`) -------------------


def test_flat_root_tarball_made_from_a_preset(cache: Path, tmp_path: Path) -> None:
    preset = presets.build_preset("glibc")
    tar = tmp_path / "root.tar"
    subprocess.run(["tar", "-C", str(preset), "-cf", str(tar), "."], check=True)
    root = roots.resolve_rootfs(str(tar))
    assert root.parent == cache / "rootfs" and root != preset
    assert _files(root) == _files(preset)
    assert os.readlink(root / "lib64") == os.readlink(preset / "lib64")  # links kept as links
    assert (root / "etc/passwd").read_text() == (preset / "etc/passwd").read_text()
    libc = RootFS(root).locate("/lib/x86_64-linux-gnu/libc.so.6")
    assert libc.is_file() and str(libc).startswith(str(root))
    assert (root / ".cgotrace-rootfs").read_text().startswith("image ")
    assert roots.resolve_rootfs(str(tar)) == root  # cached by digest


def _flat(path: Path, entries: list[tuple[str, str, str | bytes]]) -> Path:
    path.write_bytes(_layer(entries))
    return path


def test_flat_root_tarball_is_as_safe_as_a_layer(cache: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = roots.resolve_rootfs(str(_flat(tmp_path / "f.tar", [
        ("dir", "etc", ""), ("sym", "etc/esc", str(outside)), ("file", "etc/esc/pwned", "x"),
        ("file", "etc/.wh.passwd", "a file like any other")])))
    assert list(outside.iterdir()) == []  # the link resolved inside the tree
    assert (root / str(outside).lstrip("/") / "pwned").read_text() == "x"
    assert (root / "etc/.wh.passwd").read_text() == "a file like any other"  # no whiteouts
    with pytest.raises(BadImageError, match="path traversal"):
        roots.resolve_rootfs(str(_flat(tmp_path / "evil.tar", [
            ("dir", "etc", ""), ("file", "../../victim", "pwned")])))
    assert not (tmp_path / "victim").exists()


def test_tarball_that_is_neither_image_nor_root_is_refused(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(BadImageError) as ei:
        roots.resolve_rootfs(str(_flat(tmp_path / "notes.tar", [("file", "notes.txt", "hi")])))
    assert "neither manifest.json (docker save), index.json (OCI layout) nor a root " \
           "filesystem" in ei.value.message and "\n" not in ei.value.message


# --- prepare / host_path ------------------------------------------------------------------------


def test_missing_rootfs_is_one_line_not_found(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as ei:
        container.prepare(SandboxSpec(rootfs=tmp_path / "nope"), "/bin/true")
    assert "\n" not in ei.value.message and "nope" in ei.value.message
    assert ei.value.exit_code == 4


def test_prepare_validates_program_network_and_binds(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        container.prepare(SandboxSpec(), tmp_path / "no-program")
    with pytest.raises(SandboxError):
        container.prepare(SandboxSpec(network="bridge"), "/bin/true")
    with pytest.raises(NotFoundError):
        container.prepare(SandboxSpec(network="/proc/999999999/ns/net"), "/bin/true")
    with pytest.raises(NotFoundError):
        container.prepare(SandboxSpec(binds=(Bind(tmp_path / "x", "/x"),)), "/bin/true")


def test_prepare_and_host_path(cache: Path, tmp_path: Path) -> None:
    root = presets.build_preset("glibc")
    data = tmp_path / "data"
    data.mkdir()
    prep = container.prepare(SandboxSpec(rootfs=root, binds=(Bind(data, "/srv/data"),)),
                           "/bin/true")
    assert prep.program_in_root == "/.cgotrace/true"
    assert prep.resolv_conf_file is not None
    assert prep.resolv_conf_file.read_text() == "nameserver 127.0.0.1\n"
    hp = container.host_path
    assert hp(prep, "/.cgotrace/true") == str(Path("/bin/true").resolve())
    assert hp(prep, "/etc/resolv.conf") == str(prep.resolv_conf_file)
    assert hp(prep, "/etc/passwd") == str(root / "etc/passwd")
    assert hp(prep, "/lib64/ld-linux-x86-64.so.2") == str(
        RootFS(root).locate("/lib64/ld-linux-x86-64.so.2"))
    assert hp(prep, "/srv/data/x.txt") == f"{data}/x.txt"
    assert hp(prep, "/tmp/x") is None and hp(prep, "/dev/null") is None
    host = container.prepare(SandboxSpec(network="host"), "/bin/true")
    assert host.resolv_conf_file is None and host.program_in_root == host.program.as_posix()
    assert hp(host, "/etc/passwd") == "/etc/passwd"


def test_child_error_round_trip() -> None:
    for exc in (SandboxError("mount proc on /x failed: EPERM"),
                PermissionDeniedError("ns: permission denied"), NotFoundError("gone")):
        back = container.decode_child_error(container.encode_child_error(exc))
        assert type(back) is type(exc) and back.message == exc.message
    back = container.decode_child_error(container.encode_child_error(OSError(5, "I/O\nerror")))
    assert isinstance(back, SandboxError) and "\n" not in back.message and "I/O" in back.message


# --- exec failure diagnosis ---------------------------------------------------------------------


def test_diagnose_missing_glibc_interpreter(cache: Path) -> None:
    true = Path("/bin/true").resolve()  # a glibc dynamic executable
    for preset in ("musl", "scratch", "static"):
        if preset == "musl" and not os.path.exists(presets.MUSL_LIBC):
            continue
        root = presets.build_preset(preset)
        msg = container.diagnose_exec_failure(root, "/.cgotrace/true", errno.ENOENT,
                                            program_host=true)
        assert msg.startswith(f"interpreter /lib64/ld-linux-x86-64.so.2 (named by PT_INTERP) "
                              f"is not in rootfs {preset}")
        assert "'No such file or directory'" in msg and "CGO_ENABLED=0" in msg
        assert "glibc base image" in msg and "\n" not in msg


def test_diagnose_missing_musl_interpreter(cache: Path, tmp_path: Path) -> None:
    if shutil.which("musl-gcc") is None:
        pytest.skip("musl-gcc not installed (make system-deps)")
    src = tmp_path / "m.c"
    src.write_text("int main(void){return 0;}\n")
    subprocess.run(["musl-gcc", "-o", str(tmp_path / "m"), str(src)], check=True)
    root = presets.build_preset("glibc")
    msg = container.diagnose_exec_failure(root, "/.cgotrace/m", errno.ENOENT,
                                        program_host=tmp_path / "m")
    assert "interpreter /lib/ld-musl-x86_64.so.1 (named by PT_INTERP) is not in rootfs glibc" \
        in msg
    assert "musl (Alpine) base image" in msg


def test_diagnose_wrong_arch_mode_and_missing(cache: Path, tmp_path: Path) -> None:
    raw = bytearray(Path("/bin/true").resolve().read_bytes())
    raw[18:20] = (183).to_bytes(2, "little")  # e_machine = EM_AARCH64
    arm = tmp_path / "arm"
    arm.write_bytes(bytes(raw))
    arm.chmod(0o755)
    root = presets.build_preset("glibc")
    msg = container.diagnose_exec_failure(root, "/.cgotrace/arm", errno.ENOEXEC, program_host=arm)
    assert "wrong architecture (EM_AARCH64" in msg and "GOARCH=amd64" in msg
    plain = tmp_path / "plain"
    shutil.copy(Path("/bin/true").resolve(), plain)
    plain.chmod(0o644)
    msg = container.diagnose_exec_failure(root, "/.cgotrace/plain", errno.EACCES,
                                        program_host=plain)
    assert "not executable (mode -rw-r--r--)" in msg
    msg = container.diagnose_exec_failure(root, "/usr/bin/nothing", errno.ENOENT)
    assert msg.startswith("/usr/bin/nothing does not exist in rootfs glibc")
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    msg = container.diagnose_exec_failure(root, "/.cgotrace/s.sh", errno.ENOENT,
                                        program_host=script)
    assert "script for /bin/sh (named by #!), which is not in rootfs glibc" in msg
