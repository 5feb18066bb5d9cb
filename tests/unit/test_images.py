"""`--image` engine errors, cache directories, and the loader diagnosis, without an engine
or a tracee (fake engines are shell scripts on a private PATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracer.errors import CgotraceError
from tracer.sandbox import images
from tracer.sandbox.diagnosis import Diagnosis, diagnose_loader
from tracer.trace.model import Access, ExitStatus


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def fake_engine(tmp_path: Path, name: str, script: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)
    return {**os.environ, "PATH": str(bin_dir), "CGOTRACE_CACHE": str(tmp_path / "cache")}


def test_no_engine_installed_is_one_line_exit_4(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "bin")}
    r = cli("inspect", "--image", "alpine", "/bin/true", env=env)
    assert r.returncode == 4
    assert r.stderr.strip() == ("cgotrace: --image needs a container engine: neither podman "
                                "nor docker is installed (apt-get install podman runc uidmap, "
                                "or pass the image as a tarball with --rootfs (podman save -o "
                                "image.tar NAME))")


def test_unknown_image_and_failing_engine(tmp_path: Path) -> None:
    env = fake_engine(tmp_path, "podman",
                      'echo "Error: inspecting object: $5: image not known" >&2; exit 125\n')
    r = cli("inspect", "--image", "localhost/nope", "/bin/true", env=env)
    assert r.returncode == 4 and "image 'localhost/nope' is not in the local podman" in r.stderr
    env = fake_engine(tmp_path, "podman",
                      'echo "Error: cannot set up namespace: resource temporarily unavailable"'
                      ' >&2; exit 125\n')
    r = cli("inspect", "--image", "localhost/x", "/bin/true", env=env)
    assert r.returncode == 125 and len(r.stderr.strip().splitlines()) == 1
    assert "podman image inspect failed: Error: cannot set up namespace" in r.stderr
    assert "ulimit -n 1024; ulimit -u 4096" in r.stderr


def test_docker_without_daemon_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = fake_engine(tmp_path, "docker", 'echo "Cannot connect to the Docker daemon at '
                      'unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1\n')
    monkeypatch.setenv("PATH", env["PATH"])
    with pytest.raises(CgotraceError) as e:
        images.image_rootfs("alpine")
    assert e.value.exit_code == 125 and "daemon is not running" in e.value.message


def test_rootfs_and_image_together_is_a_usage_error() -> None:
    with pytest.raises(CgotraceError) as e:
        images.resolve_source("glibc", "alpine")
    assert e.value.exit_code == 2


def test_uncreatable_cache_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**os.environ, "CGOTRACE_CACHE": str(blocker / "cache")}
    r = cli("inspect", "--rootfs", "scratch", "/bin/true", env=env)
    assert r.returncode == 5
    assert r.stderr.strip() == (f"cgotrace: cannot create cache directory {blocker}/cache/"
                                "rootfs: not a directory (set CGOTRACE_CACHE or XDG_CACHE_HOME"
                                " to a writable directory)")


def _lib(seq: int, path: str, result: str) -> Access:
    return Access(seq=seq, time=0.0, pid=1, tid=1, syscall="openat", path=path, result=result,
                  kind="startup-library", hidden=False)


def test_loader_diagnosis_from_the_traces_failed_opens() -> None:
    acc = [_lib(1, "/lib/x86_64-linux-gnu/libc.so.6", "ok"),
           _lib(2, "/lib/x86_64-linux-gnu/libfoo.so.1", "ENOENT"),
           _lib(3, "/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libfoo.so.1", "ENOENT"),
           _lib(4, "/usr/lib/libfoo.so.1", "ENOENT")]
    d = diagnose_loader(ExitStatus(code=127), acc, None, "/.cgotrace/app")
    assert d is not None and d.kind == "missing-library" and d.missing == "libfoo.so.1"
    assert d.searched == tuple(a.path for a in acc[1:])
    assert "the loader looked in /lib/x86_64-linux-gnu, /usr/lib and their subdirectories " \
           "(3 places)" in d.message
    assert Diagnosis.from_dict(d.to_dict()) == d
    assert diagnose_loader(ExitStatus(code=1), acc, None, "/app") is None
    assert diagnose_loader(ExitStatus(code=127), acc[:1], None, "/app") is None


def test_refused_user_namespace_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from tracer.errors import SandboxError
    from tracer.sandbox import netns

    class NoUserns:
        def unshare(self, flags: object) -> int:
            import ctypes

            ctypes.set_errno(errno.EPERM)
            return -1

    monkeypatch.setattr(netns, "libc", lambda: NoUserns())
    monkeypatch.setattr(netns, "_read_setting", lambda path: {
        "/proc/sys/kernel/unprivileged_userns_clone": "0"}.get(path))
    with pytest.raises(SandboxError) as e:
        netns.unshare(netns.CLONE_NEWUSER | netns.CLONE_NEWNS)
    assert "cannot create a user namespace" in e.value.message
    assert "(kernel.unprivileged_userns_clone=0)" in e.value.message


def test_inspect_rootfs_takes_a_preset() -> None:
    r = cli("inspect", "--rootfs", "musl", "/bin/true", env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert "Rootfs check (" in r.stdout and "preset-musl)" in r.stdout
    assert "interpreter   /lib64/ld-linux-x86-64.so.2 -> MISSING" in r.stdout
