"""Base images through the `cgotrace` CLI only (subprocess `python -m tracer ...`):
interpreter and loader diagnoses, pure-Go and musl behaviour in presets, the static-glibc
NSS hazard, `matrix` (+ its JSON schema), `--image` on a locally imported podman image,
what the sandbox forbids, and unprivileged operation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.tracing_helpers import cgotrace_cmd, compile_c

# podman mounts in this machine's mount table, which test_sandbox.py watches: one worker
pytestmark = [pytest.mark.ptrace, pytest.mark.netns, pytest.mark.go,
              pytest.mark.xdist_group("host-mount-table")]

Sample = Callable[..., Path]
GLIBC_INTERP = "/lib64/ld-linux-x86-64.so.2"
MUSL_INTERP = "/lib/ld-musl-x86_64.so.1"
SCHEMA = Path(__file__).resolve().parents[2] / "tracer" / "schemas" / "matrix.schema.json"
# Go reads SSL_CERT_FILE/SSL_CERT_DIR instead of its own list: keep them out of the runs.
_ENV = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}


def cgotrace(*args: str, env: dict[str, str] | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cgotrace_cmd(*args), capture_output=True, text=True,
                          timeout=timeout, env=_ENV if env is None else env,
                          stdin=subprocess.DEVNULL)


def trace_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def accesses(lines: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [x for x in lines if x["type"] == "access" and x["path"] == path]


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """cgotrace's own error: the last line on stderr, after any report."""
    lines = r.stderr.splitlines()
    assert lines and lines[-1].startswith("cgotrace: ") and "Traceback" not in r.stderr, \
        r.stderr
    return lines[-1]


# --- interpreters and loaders ---------------------------------------------------------------


@pytest.mark.parametrize("preset", ["musl", "scratch"])
def test_glibc_cgo_binary_fails_naming_the_interpreter(sample: Sample, tmp_path: Path,
                                                       preset: str) -> None:
    out = tmp_path / "t.jsonl"
    r = cgotrace("run", "-o", str(out), "--rootfs", preset, "--",
                 str(sample("userlookup", "cgo")))
    assert r.returncode == 127
    assert (f"interpreter {GLIBC_INTERP} (named by PT_INTERP) is not in rootfs {preset}: "
            "exec fails") in one_line_error(r)
    lines = trace_lines(out)
    diag = [x for x in lines if x["type"] == "diagnosis"]
    assert [d["kind"] for d in diag] == ["missing-interpreter"]
    assert diag[0]["missing"] == GLIBC_INTERP and lines[-1]["type"] == "exit"
    report = cgotrace("report", str(out))
    assert report.returncode == 0
    assert f"diagnosis: interpreter {GLIBC_INTERP} (named by PT_INTERP)" in report.stdout


def test_glibc_cgo_binary_runs_on_glibc(sample: Sample) -> None:
    r = cgotrace("run", "--rootfs", "glibc", "--", str(sample("userlookup", "cgo")))
    assert r.returncode == 0, r.stderr
    assert "LookupId(0): root <nil>" in r.stdout
    assert "/etc/nsswitch.conf" in r.stderr and "(cgo getpwuid_r) at main.go:" in r.stderr


def test_missing_needed_library_names_it_and_where_the_loader_looked(sample: Sample,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    r = cgotrace("run", "-q", "-o", str(out), "--rootfs", "glibc", "--",
                 str(sample("sqlite", "cgo")))
    assert r.returncode == 127
    assert "error while loading shared libraries: libsqlite3.so.0" in r.stderr  # ld.so's own
    line = one_line_error(r)
    assert line.startswith("cgotrace: libsqlite3.so.0 (NEEDED by /.cgotrace/sqlite-cgo) is "
                           "not in rootfs glibc: the loader looked in /lib/x86_64-linux-gnu, "
                           "/usr/lib/x86_64-linux-gnu")
    assert "Fix: add it to the image" in line
    lines = trace_lines(out)
    diag = [x for x in lines if x["type"] == "diagnosis"]
    assert len(diag) == 1 and diag[0]["kind"] == "missing-library"
    # where it looked is the trace's own failed opens, in order
    failed = [x["path"] for x in lines if x["type"] == "access" and x["result"] == "ENOENT"
              and x["path"].endswith("/libsqlite3.so.0")]
    assert diag[0]["searched"] == list(dict.fromkeys(failed))
    assert "/lib/x86_64-linux-gnu/libsqlite3.so.0" in diag[0]["searched"]
    assert "diagnosis: libsqlite3.so.0 (NEEDED by" in cgotrace("report", str(out)).stdout


def ld_so_system_dirs() -> list[str]:
    """The oracle: the system search path the host's ld.so prints (the glibc preset's is a
    copy of it)."""
    out = subprocess.run([GLIBC_INTERP, "--help"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip().endswith("(system search path)")]


def test_library_outside_the_loaders_search_path(sample: Sample, tmp_path: Path) -> None:
    """A library in /usr/lib64 of a Debian-like root is there, and ld.so never looks there:
    the run exits 127, and inspect, run and matrix all say so (not "found", not "absent")."""
    from tracer.sandbox.presets import build_preset

    root = tmp_path / "root"
    shutil.copytree(build_preset("glibc"), root, symlinks=True)
    (root / "usr/lib64").mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.realpath("/lib/x86_64-linux-gnu/libsqlite3.so.0"),
                root / "usr/lib64/libsqlite3.so.0")
    binary = str(sample("sqlite", "cgo"))
    dirs = ld_so_system_dirs()
    assert "/usr/lib64" not in dirs
    what = ("libsqlite3.so.0 (NEEDED by /.cgotrace/sqlite-cgo) is present at "
            "/usr/lib64/libsqlite3.so.0, outside the loader's search path")
    fix = (f"Fix: move it into a directory the loader searches ({', '.join(dirs)}), or add "
           "/usr/lib64 to /etc/ld.so.conf and run ldconfig")
    r = cgotrace("run", "-q", "--rootfs", str(root), "--", binary)
    assert r.returncode == 127  # the real loader's verdict
    assert "error while loading shared libraries: libsqlite3.so.0" in r.stderr
    line = one_line_error(r)
    assert line.startswith(f"cgotrace: {what}: the loader looked in {dirs[0]}"), line
    assert line.endswith(fix), line
    r = cgotrace("inspect", "--json", "--rootfs", str(root), binary)
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    loader = facts["loader"]
    assert loader["missing"] == ["libsqlite3.so.0"]  # not "found via default-dirs"
    assert loader["search_path"]["dirs"] == dirs and loader["search_path"]["source"] == "ld.so"
    sqlite = next(lib for lib in loader["libraries"] if lib["name"] == "libsqlite3.so.0")
    assert sqlite["elsewhere"] == ["/usr/lib64/libsqlite3.so.0"]
    assert any(p.startswith(f"libsqlite3.so.0 (needed by {binary}) is present at "
                            "/usr/lib64/libsqlite3.so.0, outside the loader's search path")
               and p.endswith(fix) for p in facts["problems"]), facts["problems"]
    r = cgotrace("matrix", "--json", "--rootfs", str(root), binary)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)["roots"][0]
    assert not row["starts"] and row["exit_code"] == 127
    assert [d["message"].startswith(what) for d in row["diagnoses"]] == [True]
    assert "missing-library" in row["findings"]
    # the fix it gives works: the directory in ld.so.conf, the cache regenerated
    with open(root / "etc/ld.so.conf", "a") as f:
        f.write("/usr/lib64\n")
    subprocess.run(["ldconfig", "-r", str(root), "-X"], check=True)
    r = cgotrace("run", "-q", "--rootfs", str(root), "--", binary)
    assert r.returncode == 0 and "SELECT sum(v) = 6" in r.stdout, r.stderr
    loader = json.loads(cgotrace("inspect", "--json", "--rootfs", str(root), binary).stdout)[
        "loader"]
    sqlite = next(lib for lib in loader["libraries"] if lib["name"] == "libsqlite3.so.0")
    assert sqlite["via"] == "ld.so.cache" and sqlite["path"] == "/usr/lib64/libsqlite3.so.0"


def test_musl_dynamic_sample_runs_on_musl_and_fails_on_glibc(sample: Sample,
                                                            tmp_path: Path) -> None:
    binary = sample("userlookup", "musl-dynamic")
    out = tmp_path / "t.jsonl"
    r = cgotrace("run", "-o", str(out), "--rootfs", "musl", "--", str(binary))
    assert r.returncode == 0, r.stderr
    lines = trace_lines(out)
    interp = [x for x in lines if x["type"] == "access" and x.get("flags") == "PT_INTERP"]
    assert interp and interp[0]["path"] == MUSL_INTERP
    passwd = accesses(lines, "/etc/passwd")
    assert any(a["syscall"] == "open" and a["result"] == "ok" for a in passwd), passwd
    r = cgotrace("run", "--rootfs", "glibc", "--", str(binary))
    assert r.returncode == 127
    assert f"interpreter {MUSL_INTERP} (named by PT_INTERP) is not in rootfs glibc" in \
        one_line_error(r)


# --- what programs do in minimal roots ------------------------------------------------------


def test_pure_go_userlookup_on_scratch(sample: Sample, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    r = cgotrace("run", "-o", str(out), "--rootfs", "scratch", "--",
                 str(sample("userlookup", "pure")))
    assert r.returncode == 0
    assert "LookupId(0): <nil> open /etc/passwd: no such file or directory" in r.stdout
    passwd = accesses(trace_lines(out), "/etc/passwd")
    assert passwd and all(a["result"] == "ENOENT" for a in passwd)
    assert {a.get("via") for a in passwd} == {"go"}
    assert passwd[0]["go_api"] == "os/user.LookupId"
    report = cgotrace("report", "--format", "json", str(out))
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    # what Go did: os/user looked for the files itself, in pure Go (no NSS), found none, and
    # the lookups failed: the files are missing and the run is degraded
    assert doc["verdict"]["verdict"] == "degraded"
    passwd = [f for f in doc["findings"] if f["missing"] == ["/etc/passwd"]]
    assert passwd and {f["id"] for f in passwd} == {"user-lookup-go-missing"}
    assert passwd[0]["go_api"] == "os/user.LookupId"
    assert "user.Current()" in passwd[0]["explanation"]  # and the fallback it takes
    text = cgotrace("report", str(out))
    assert "/etc/passwd (ENOENT)" in text.stdout and "verdict: degraded" in text.stdout
    # the matrix says the same: it starts, exits 0, /etc/passwd and /etc/group missing
    r = cgotrace("matrix", "--json", "--rootfs", "scratch", "--",
                 str(sample("userlookup", "pure")))
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["roots"]
    assert row["starts"] and row["exit_code"] == 0 and row["verdict"] == "degraded"
    assert {"/etc/passwd", "/etc/group"} <= set(row["missing"])
    assert "user-lookup-go-missing" in row["findings"]


def test_x509roots_on_scratch_records_the_missing_ca_paths(sample: Sample,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    r = cgotrace("run", "-q", "-o", str(out), "--rootfs", "scratch", "--",
                 str(sample("x509roots", "pure")))
    assert r.returncode == 0 and "SystemCertPool: 0 certificates" in r.stdout
    from tracer.trace.recorder import read_trace  # fills in `same_as` attributions

    missing = {a.path for a in read_trace(out).accesses if a.result == "ENOENT"
               and a.attribution is not None
               and a.attribution.go_api == "crypto/x509.SystemCertPool"}
    # Go's own list of bundles and directories, each tried and absent
    assert {"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/certs"} <= missing, missing


@pytest.fixture(scope="module")
def glibc_root_sends_passwd_to_systemd() -> Path:
    """The glibc preset root copies the host's nsswitch.conf and NSS modules; on a host
    whose passwd line names `systemd` (Debian 12 default) with libnss_systemd installed,
    an unknown uid reaches that module. The tests below are about exactly that."""
    from tracer.sandbox import roots

    root = roots.resolve_rootfs("glibc")
    conf = root / "etc" / "nsswitch.conf"
    passwd = [line.split(":", 1)[1].split() for line in
              (conf.read_text().splitlines() if conf.exists() else [])
              if line.startswith("passwd:")]
    if not passwd or "systemd" not in passwd[0]:
        pytest.skip(f"{conf}: the passwd line names no systemd source ({passwd})")
    if not any((root / d / "libnss_systemd.so.2").exists()
               for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")):
        pytest.skip(f"libnss_systemd.so.2 is not in {root} (the host has none)")
    return root


def test_static_glibc_unknown_uid_shows_nss_accesses_and_crash(
        sample: Sample, tmp_path: Path, glibc_root_sends_passwd_to_systemd: Path) -> None:
    out = tmp_path / "t.jsonl"
    r = cgotrace("run", "-o", str(out), "--rootfs", "glibc", "--",
                 str(sample("userlookup", "static")))
    lines = trace_lines(out)
    nss = [x for x in lines if x["type"] == "access" and x["result"] == "ok"
           and x["kind"] == "dlopen-library" and "/libnss_" in x["path"]]
    assert accesses(lines, "/etc/nsswitch.conf") and nss
    assert all(a.get("c_function") == "getpwuid_r" for a in nss)
    # the unknown uid goes to libnss_systemd, built for the shared glibc: the static one
    # crashes in it (Go reports the SIGSEGV and exits 2)
    assert any(a["path"].endswith("/libnss_systemd.so.2") for a in nss), nss
    assert r.returncode == 2 and "SIGSEGV" in r.stderr
    signals = [x for x in lines if x["type"] == "event" and x["event"] == "signal"]
    assert signals and signals[0]["signal_name"] == "SIGSEGV"


# --- matrix ---------------------------------------------------------------------------------


def test_matrix_of_cgo_userlookup_over_the_presets(sample: Sample) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    binary = str(sample("userlookup", "cgo"))
    r = cgotrace("matrix", binary, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:5]}
    assert list(rows) == ["scratch", "static", "musl", "glibc"]
    for preset in ("scratch", "static", "musl"):
        assert f"no: interpreter {GLIBC_INTERP} missing" in rows[preset]
        assert rows[preset].rstrip().endswith("fails")
    assert rows["glibc"].split()[1] == "yes"
    assert rows["glibc"].rstrip().split()[-1] in ("works", "degraded")
    r = cgotrace("matrix", "--json", "-j", "2", "--rootfs", "glibc,scratch", "--", binary,
                 timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    by_root = {row["root"]: row for row in doc["roots"]}
    assert by_root["scratch"]["starts"] is False and by_root["scratch"]["exit_code"] == 127
    assert by_root["scratch"]["missing"][0] == GLIBC_INTERP
    glibc = by_root["glibc"]
    assert glibc["starts"] and glibc["exit_code"] == 0 and glibc["hidden"] > 0
    assert "/etc/nsswitch.conf" in glibc["hidden_paths"] and glibc["findings"]


def test_matrix_text_says_what_a_failing_program_said(sample: Sample) -> None:
    """A program that starts and fails on its own: the text matrix shows its last words
    (a Go panic's message line, not the dump's last frame), not only "fails"."""
    r = cgotrace("matrix", "--rootfs", "glibc", "--", str(sample("crash", "cgo")), "panic")
    assert r.returncode == 0, r.stderr
    assert "glibc: exit 2: panic: cgotrace deliberate panic" in r.stdout.splitlines()
    r = cgotrace("matrix", "--json", "--rootfs", "glibc", "--", str(sample("crash", "cgo")),
                 "panic")
    assert json.loads(r.stdout)["roots"][0]["stderr_line"] == "panic: cgotrace deliberate panic"
    # nothing on stderr: its last stdout line says why
    r = cgotrace("matrix", "--rootfs", "glibc", "--", str(sample("tzload", "pure")),
                 "Nowhere/Zone")
    assert r.returncode == 0, r.stderr
    assert ("glibc: exit 1: nothing on stderr; last on stdout: LoadLocation: unknown time "
            "zone Nowhere/Zone") in r.stdout.splitlines()


def _fix_line(stdout: str, root: str) -> str:
    (line,) = [x for x in stdout.splitlines() if x.startswith(f"{root}: interpreter ")]
    return line.split(". Fix: ", 1)[1]


def test_matrix_fix_fits_the_binarys_cgo(sample: Sample) -> None:
    """The one-line fix under a root the program cannot start in comes from that binary's
    facts: a third-party cgo program (sqlite: its own C code and libsqlite3) gets the
    library its base image must add and no build tag; a program whose only cgo is os/user
    gets -tags osusergo, not netgo, and never "link statically" (static-glibc-nss)."""
    r = cgotrace("matrix", "--rootfs", "scratch", "--", str(sample("sqlite", "cgo")))
    fix = _fix_line(r.stdout, "scratch")
    assert "Use a base image with glibc" in fix and "add libsqlite3.so.0 to it" in fix
    assert "Building without cgo is not enough here: the main package has C code" in fix
    assert "netgo,osusergo" not in fix and "-tags osusergo" not in fix
    r = cgotrace("matrix", "--rootfs", "scratch", "--", str(sample("userlookup", "cgo")))
    fix = _fix_line(r.stdout, "scratch")
    assert "-tags osusergo gives os/user, the only cgo package here" in fix
    assert "netgo" not in fix and "statically" not in fix and "add " not in fix
    # `run` prints the same line
    r = cgotrace("run", "-q", "--rootfs", "scratch", "--", str(sample("userlookup", "cgo")))
    assert r.returncode == 127 and one_line_error(r).endswith(fix)


def _glibc_root_without_passwd(tmp_path: Path, passwd_sources: str) -> Path:
    """The glibc preset, copied, without /etc/passwd, nsswitch.conf naming `passwd_sources`."""
    from tracer.sandbox.roots import build_preset

    root = tmp_path / "root"
    shutil.copytree(build_preset("glibc"), root, symlinks=True)
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "nsswitch.conf").write_text(
        f"passwd: {passwd_sources}\ngroup: files systemd\nhosts: files dns\n")
    return root


def test_absent_passwd_with_an_nss_source_that_answers_works(sample: Sample,
                                                             tmp_path: Path) -> None:
    """passwd: files systemd, no /etc/passwd: glibc goes on to libnss_systemd, which knows
    root; the program works (as under chroot or podman), so nothing is missing."""
    root = _glibc_root_without_passwd(tmp_path, "files systemd")
    assert list((root / "lib" / "x86_64-linux-gnu").glob("libnss_systemd.so.2")), \
        "the glibc preset carries libnss_systemd (the host's nsswitch.conf names systemd)"
    binary = str(sample("userlookup", "cgo"))
    report = tmp_path / "report.json"
    r = cgotrace("run", "--json", str(report), "--rootfs", str(root), "--", binary)
    assert r.returncode == 0, r.stderr
    assert "LookupId(0): root <nil>" in r.stdout and "Current: root <nil>" in r.stdout
    assert "verdict: works" in r.stderr
    doc = json.loads(report.read_text())
    users = [f for f in doc["findings"] if f["id"] == "user-lookup-cgo"]
    assert users and all(f["missing"] == [] for f in users)
    first = users[0]
    assert "/etc/passwd (ENOENT)" in first["explanation"]
    assert "'systemd' (libnss_systemd.so.2, loaded), which answered in its place" in \
        first["explanation"]
    # the osusergo advice says what it would change here: the lookups would then fail
    assert "with osusergo Go asks no such source, so these lookups fail" in first["fix"]
    r = cgotrace("matrix", "--json", "--rootfs", str(root), "--", binary)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["roots"]
    assert row["exit_code"] == 0 and row["missing"] == [] and row["verdict"] == "works"
    assert "nss-module" in row["findings"]  # still a hidden dependency, and named


def test_absent_passwd_with_no_other_source_is_missing_and_the_fix_ships_it(
        sample: Sample, tmp_path: Path) -> None:
    """passwd: files, no /etc/passwd: no source answers, so /etc/passwd is missing, and the
    fix ships it (osusergo would read the same absent file)."""
    root = _glibc_root_without_passwd(tmp_path, "files")
    binary = str(sample("userlookup", "cgo"))
    r = cgotrace("matrix", "--json", "--rootfs", str(root), "--", binary)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["roots"]
    assert row["verdict"] == "degraded" and row["missing"] == ["/etc/passwd"]
    report = tmp_path / "report.json"
    r = cgotrace("run", "-q", "--json", str(report), "--rootfs", str(root), "--", binary)
    assert r.returncode == 0, r.stderr
    assert "LookupId(0): <nil> user: unknown userid 0" in r.stdout  # no source knew root
    missing = [f for f in json.loads(report.read_text())["findings"]
               if f["id"] == "user-lookup-cgo" and f["missing"]]
    assert missing and missing[0]["missing"] == ["/etc/passwd"]
    fix = missing[0]["fix"]
    assert fix.startswith("Ship /etc/passwd with the users") and "adduser" in fix
    assert "USER app" in fix
    assert "-tags osusergo (or CGO_ENABLED=0) does not help here" in fix
    assert not fix.startswith("Build with -tags osusergo")


# --- the program's environment is not cgotrace's --------------------------------------------


def _program_env(home: Path) -> dict[str, str]:
    """An environment that would move every cache cgotrace has, were it cgotrace's."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CACHE_HOME": str(home / "xdg"),
            "CGOTRACE_CACHE": str(home / "cache")}


def test_run_env_sets_the_programs_environment_only(tmp_path: Path) -> None:
    home = tmp_path / "program-home"
    env_file = tmp_path / "env0"
    env_file.write_bytes(b"".join(f"{k}={v}".encode() + b"\0"
                                  for k, v in _program_env(home).items()))
    r = cgotrace("run", "-q", "--rootfs", "glibc", "--env-file", str(env_file),
                 "--env", "EXTRA=a=b", "--", "/usr/bin/env")
    assert r.returncode == 0, r.stderr
    seen = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert seen == {**_program_env(home), "EXTRA": "a=b"}  # exactly the file, plus --env
    assert not home.exists()  # no cache, no preset went where the program's HOME points
    r = cgotrace("run", "-q", "--env", "HOME", "--", "/usr/bin/env")
    assert r.returncode == 2 and "--env 'HOME': expected NAME=VALUE" in one_line_error(r)
    r = cgotrace("run", "-q", "--env-file", str(tmp_path / "nope"), "--", "/usr/bin/env")
    assert r.returncode == 4 and "nope" in one_line_error(r)
    env_file.write_bytes(b"PATH=/bin\0just-a-word\0")
    r = cgotrace("run", "-q", "--env-file", str(env_file), "--", "/usr/bin/env")
    assert r.returncode == 3 and "'just-a-word' is not a NAME=VALUE entry" in one_line_error(r)


def test_matrix_env_is_the_programs_not_cgotraces(tmp_path: Path) -> None:
    from tracer.commands.matrix import MatrixOptions, RootSource, run_matrix

    home = tmp_path / "program-home"
    rows = run_matrix(MatrixOptions(binary="/usr/bin/env", args=[],
                                    roots=[RootSource("glibc")], env=_program_env(home)))
    assert rows[0].exit_code == 0, rows[0].stderr_tail
    assert f"HOME={home}" in rows[0].stdout_tail and f"CGOTRACE_CACHE={home}/cache" in \
        rows[0].stdout_tail
    assert not home.exists()


# --- --image --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman_image() -> Iterator[str]:
    """A local image made from the glibc preset with `podman import` (nothing is pulled)."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (make system-deps)")
    from tracer.sandbox.presets import build_preset

    root = build_preset("glibc")
    name = f"localhost/cgotrace-test-glibc-{os.getpid()}:latest"
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "root.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
        subprocess.run(["podman", "import", str(tar), name], check=True, capture_output=True)
    image_id = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", name],
                              capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["podman", "rmi", "-f", name], capture_output=True, check=False)
        from tracer.sandbox.trees import cache_dir  # the unpacked copy: a new ID every run

        shutil.rmtree(cache_dir() / "rootfs" / f"image-{image_id.removeprefix('sha256:')[:24]}",
                      ignore_errors=True)


def test_run_inspect_and_matrix_on_a_podman_image(sample: Sample, podman_image: str) -> None:
    binary = str(sample("userlookup", "cgo"))
    r = cgotrace("run", "--image", podman_image, "--", binary)
    assert r.returncode == 0, r.stderr
    assert "LookupId(0): root <nil>" in r.stdout
    assert f"in image {podman_image}" in r.stderr and "(cgo getpwuid_r) at main.go:" in r.stderr
    r = cgotrace("inspect", "--image", podman_image, binary)
    assert r.returncode == 0 and f"interpreter   {GLIBC_INTERP}" in r.stdout
    assert "MISSING" not in r.stdout
    r = cgotrace("matrix", "--json", "--image", podman_image, "--rootfs", "scratch", binary,
                 timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {row["root"]: row for row in json.loads(r.stdout)["roots"]}
    assert rows[f"image {podman_image}"]["starts"] and rows["scratch"]["starts"] is False


def test_run_in_a_podman_export(sample: Sample, podman_image: str, tmp_path: Path) -> None:
    """`podman export` of a container: a flat root filesystem tarball, taken as a root."""
    container = subprocess.run(["podman", "create", podman_image, "/bin/true"],
                               capture_output=True, text=True, check=True).stdout.strip()
    try:
        tar = tmp_path / "export.tar"
        subprocess.run(["podman", "export", "-o", str(tar), container], check=True,
                       capture_output=True)
    finally:
        subprocess.run(["podman", "rm", "-f", container], capture_output=True, check=False)
    with tarfile.open(tar) as t:  # no image metadata: a plain tree
        assert not {"manifest.json", "index.json"} & set(t.getnames())
    binary = str(sample("userlookup", "cgo"))
    r = cgotrace("run", "--rootfs", str(tar), "--", binary)
    assert r.returncode == 0, r.stderr
    assert "LookupId(0): root <nil>" in r.stdout and "(cgo getpwuid_r) at main.go:" in r.stderr
    r = cgotrace("inspect", "--rootfs", str(tar), binary)
    assert r.returncode == 0 and "ok: the loader finds everything it needs" in r.stdout


def test_unknown_image_is_one_line(sample: Sample, podman_image: str) -> None:
    r = cgotrace("run", "--image", "localhost/cgotrace-no-such-image", "--",
                 str(sample("userlookup", "cgo")))
    assert r.returncode == 4
    assert "image 'localhost/cgotrace-no-such-image' is not in the local podman store" in \
        one_line_error(r)


# --- the sandbox ----------------------------------------------------------------------------

_PROBE_C = r"""
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

static void try_write(const char *path) {
    int fd = open(path, O_WRONLY | O_APPEND);
    if (fd < 0 || write(fd, "cgotrace-was-here\n", 18) != 18)
        printf("write %s: %s\n", path, strerror(errno));
    else
        printf("write %s: ok\n", path);
    if (fd >= 0) close(fd);
}

int main(int argc, char **argv) {
    struct statfs fs;
    printf("pid %d\n", (int)getpid());
    printf("run-fs 0x%lx\n", statfs("/run", &fs) == 0 ? (unsigned long)fs.f_type : 0UL);
    /* a node for the disk the root lives on: with it, the disk could be mounted and written */
    if (strcmp(argv[3], "-") == 0)
        ;
    else if (mknod("/tmp/disk", S_IFBLK | 0600, (dev_t)strtoull(argv[3], NULL, 10)) == 0)
        printf("mknod: ok\n");
    else
        printf("mknod: %s\n", strerror(errno));
    for (int i = 4; i < argc; i++) try_write(argv[i]);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) printf("connect: ok\n");
    else printf("connect: %s\n", strerror(errno));
    return 0;
}
"""
TMPFS_MAGIC = 0x01021994
WRITES = ("/etc/passwd", "/lib/x86_64-linux-gnu/libc.so.6")


def _host_address() -> str:
    """A non-loopback IPv4 address of this machine (nothing leaves it)."""
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    pytest.skip("this machine has no non-loopback IPv4 address")


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_sandbox_cannot_reach_the_network_or_change_the_root() -> None:
    from tracer.sandbox.presets import build_preset

    probe = compile_c(_PROBE_C)
    root = build_preset("glibc")
    before = {p: _digest(root / p.lstrip("/")) for p in WRITES}
    addr = _host_address()
    with socket.socket() as listener:
        listener.bind((addr, 0))
        listener.listen(4)
        port = str(listener.getsockname()[1])
        disk = str(os.stat(root).st_dev)
        host = cgotrace("run", "-q", "--", str(probe), addr, port, "-")  # oracle: reachable
        assert host.returncode == 0 and "connect: ok" in host.stdout, host.stdout
        r = cgotrace("run", "-q", "--rootfs", "glibc", "--", str(probe), addr, port, disk,
                     *WRITES)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert "pid 1" in out  # its own pid namespace
    assert f"run-fs {hex(TMPFS_MAGIC)}" in out  # /run is a tmpfs
    assert "connect: Network is unreachable" in out
    assert "mknod: Operation not permitted" in out  # root in its own user namespace only
    # Writes land in the sandbox's tmpfs layer (or are refused), never in the root itself.
    assert before == {p: _digest(root / p.lstrip("/")) for p in WRITES}
    for p in WRITES:
        assert b"cgotrace-was-here" not in (root / p.lstrip("/")).read_bytes()


# --- not root -------------------------------------------------------------------------------


def _unprivileged_python() -> list[str]:
    """A Python uid 65534 may run with this checkout's packages (a venv under /root is
    unreachable to it): the same interpreter version from /usr/bin, with PYTHONPATH."""
    for candidate in (os.path.realpath(sys.executable),
                      f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        # setpriv itself may still reach a path the Python it starts cannot: ask that Python
        # whether it can run itself again (matrix starts `sys.executable -m tracer run`).
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                                "--clear-groups", candidate, "-c",
                                "import os, sys; sys.exit(not os.access(sys.executable, os.X_OK))"],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return [candidate]
    pytest.skip("no Python interpreter that uid 65534 can run")


@contextlib.contextmanager
def _nobody_env() -> Iterator[tuple[list[str], dict[str, str], Path]]:
    if os.geteuid() != 0:
        pytest.skip("dropping to uid 65534 needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed (util-linux)")
    import site

    checkout = str(Path(__file__).resolve().parents[2])
    cache = Path(tempfile.mkdtemp(prefix="cgotrace-nobody-"))
    try:
        cache.chmod(0o777)
        env = {**_ENV, "HOME": "/nonexistent", "XDG_CACHE_HOME": str(cache),
               "PYTHONPATH": os.pathsep.join([checkout, *site.getsitepackages()])}
        env.pop("CGOTRACE_CACHE", None)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
               *_unprivileged_python(), "-m", "tracer"]
        yield cmd, env, cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _as_nobody(cmd: list[str], env: dict[str, str], *args: str
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=300,
                          stdin=subprocess.DEVNULL, cwd="/")


def test_unprivileged_run_keeps_attribution_in_a_rootfs(sample: Sample) -> None:
    binary = str(sample("userlookup", "cgo"))
    with _nobody_env() as (cmd, env, cache):
        r = _as_nobody(cmd, env, "run", "--rootfs", "glibc", "--", binary)
        assert r.returncode == 0, r.stderr
        assert "LookupId(0): root <nil>" in r.stdout
        assert "os/user.LookupId goes through glibc NSS (cgo getpwuid_r) at main.go:" in r.stderr
        assert "unsymbolized" not in r.stderr and "map_files" not in r.stderr
        assert (cache / "cgotrace" / "rootfs" / "preset-glibc").is_dir()  # its own cache
        r = _as_nobody(cmd, env, "matrix", "--rootfs", "glibc,scratch", binary)
        assert r.returncode == 0, r.stderr
        assert "glibc    yes" in r.stdout and f"no: interpreter {GLIBC_INTERP}" in r.stdout


def test_unprivileged_bad_output_and_cache_are_one_line(sample: Sample) -> None:
    binary = str(sample("userlookup", "pure"))
    with _nobody_env() as (cmd, env, _cache):
        r = _as_nobody(cmd, env, "run", "-o", "/etc/cgotrace-trace.jsonl", "--", binary)
        assert r.returncode == 5
        assert one_line_error(r) == ("cgotrace: cannot write /etc/cgotrace-trace.jsonl: "
                                     "permission denied (choose a directory you can write)")
        no_cache = {k: v for k, v in env.items() if k != "XDG_CACHE_HOME"}
        r = _as_nobody(cmd, no_cache, "run", "--rootfs", "scratch", "--", binary)
        assert r.returncode == 5
        assert one_line_error(r).startswith(
            "cgotrace: cannot create cache directory /nonexistent/.cache/cgotrace")


def test_matrix_shows_progress_on_a_terminal() -> None:
    import pty
    import select

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cgotrace_cmd("matrix", "-j", "2", "--rootfs", "scratch,static",
                                             "/bin/true"), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave, env=_ENV, text=True)
        os.close(slave)
        slave = -1
        out, _ = proc.communicate(timeout=180)
        progress = b""
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            progress += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    lines = progress.decode().splitlines()
    assert sorted(line.split()[0] for line in lines) == ["[1/2]", "[2/2]"]
    assert {line.split()[1] for line in lines} == {"scratch:", "static:"}
    assert all("fails (exit 127" in line for line in lines)
    assert "[1/2]" not in out  # the table itself has no progress lines


def test_matrix_gate_applies_per_root(sample: Sample, tmp_path: Path,
                                      glibc_root_sends_passwd_to_systemd: Path) -> None:
    binary = str(sample("userlookup", "cgo"))
    r = cgotrace("matrix", "--fail-on", "nss-module", "--rootfs", "glibc,scratch", binary)
    assert r.returncode == 1
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:3]}
    assert rows["glibc"].endswith("works (gate)")  # found libnss_systemd: the gate fails here
    assert rows["scratch"].endswith("fails")  # no NSS at all: this root passes the gate
    allow = tmp_path / "allow.toml"
    allow.write_text('[[allow]]\nid = "nss-module"\nreason = "the image ships it"\n')
    r = cgotrace("matrix", "--json", "--fail-on", "nss-module", "--allow", str(allow),
                 "--rootfs", "glibc", "--traces", str(tmp_path / "traces"), binary)
    assert r.returncode == 0
    row = json.loads(r.stdout)["roots"][0]
    assert row["gate"] == {"failed": False, "failing": []} and "nss-module" in row["findings"]
    assert row["trace"] == str(tmp_path / "traces" / "glibc.jsonl")
    assert cgotrace("report", row["trace"]).returncode == 0  # kept traces re-read
