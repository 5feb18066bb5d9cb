"""probes.analysis, probes.ruleset, tracer.gate and the text/JSON reporters on synthetic
traces: classes of dependencies, program files, folding per call site, every built-in rule,
rule-file validation, the gate and the allow-list, colour."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from probes.analysis import analyze
from probes.records import RuleError, verdict
from probes.ruleset import load_file, load_rules
from tracer.gate import (
    AllowEntry,
    AllowList,
    AllowListError,
    FailOn,
    GateSpecError,
    apply_gate,
    load_allow,
    parse_fail_on,
)
from tracer.reporters import available, render, want_color
from tracer.trace.model import (
    Access,
    AccessKind,
    Attribution,
    ExitStatus,
    Frame,
    ProcessEvent,
    Via,
)

GLIBC = {"interpreter": "/lib64/ld-linux-x86-64.so.2", "needed": ["libc.so.6"],
         "static": False, "libc": "glibc", "cgo": True, "is_go": True,
         "nsswitch": {"passwd": ["files", "systemd"], "group": ["files", "systemd"]},
         "loader": {"interpreter_path": "/lib64/ld-linux-x86-64.so.2", "missing": [],
                    "libraries": [{"name": "libc.so.6",
                                   "path": "/lib/x86_64-linux-gnu/libc.so.6"}],
                    "config_files": ["/etc/ld.so.cache"]},
         "user_lookup": {"implementation": "cgo", "reason": "glibc NSS"}}
_seq = 0


def acc(path: str, kind: AccessKind, *, result: str = "ok", hidden: bool = False,
        via: Via | None = None, api: str | None = None, line: int | None = None,
        cfn: str | None = None, flags: str | None = None, syscall: str = "openat",
        pid: int = 100) -> Access:
    global _seq
    _seq += 1
    at = None
    if via is not None:
        at = Attribution(via=via, go_api=api, c_function=cfn,
                         user_frame=Frame("main.main", "/src/app/main.go", line) if line else None)
    return Access(seq=_seq, time=0.0, pid=pid, tid=pid, syscall=syscall, path=path,
                  result=result, kind=kind, hidden=hidden, flags=flags, attribution=at)


def header(static: dict[str, Any] | None = None, cwd: str = "/home/u/site",
           argv: tuple[str, ...] = ("./app",)) -> dict[str, Any]:
    return {"argv": list(argv), "binary": "/home/u/site/app", "cwd": cwd,
            "static": GLIBC if static is None else static, "env": {}}


def cgo_user_trace() -> list[Access]:
    lookup = {"via": Via.CGO, "api": "os/user.LookupId", "cfn": "getpwuid_r"}
    return [
        acc("/home/u/site/app", AccessKind.EXECUTABLE, syscall="execve", via=Via.EXEC),
        acc("/lib64/ld-linux-x86-64.so.2", AccessKind.INTERPRETER, syscall="execve"),
        acc("/lib/x86_64-linux-gnu/libc.so.6", AccessKind.STARTUP_LIBRARY),
        acc("/proc/self/maps", AccessKind.RUNTIME),
        acc("/var/run/nscd/socket", AccessKind.SOCKET, result="ENOENT", hidden=True,
            syscall="connect", line=19, **lookup),
        acc("/etc/nsswitch.conf", AccessKind.CONFIG, hidden=True, line=19, **lookup),
        acc("/etc/passwd", AccessKind.CONFIG, hidden=True, line=19, **lookup),
        *[acc("/etc/passwd", AccessKind.CONFIG, hidden=True, line=22, **lookup)
          for _ in range(5)],
        acc("/lib/x86_64-linux-gnu/libnss_systemd.so.2", AccessKind.DLOPEN_LIBRARY,
            hidden=True, line=22, **lookup),
        acc("/lib/x86_64-linux-gnu/libcap.so.2", AccessKind.DLOPEN_LIBRARY, hidden=True,
            line=22, **lookup),
        *[acc(f"{d}/4242.user", AccessKind.CONFIG, result="ENOENT", hidden=True, line=22,
              **lookup) for d in ("/etc/userdb", "/run/userdb", "/usr/lib/userdb")],
    ]


def test_classes_fold_per_call_site_and_never_across() -> None:
    a = analyze(header(), cgo_user_trace())
    by = {(d.path, d.result): d for d in a.dependencies}
    passwd = by[("/etc/passwd", "ok")]
    assert passwd.cls.value == "hidden" and passwd.count == 6
    assert [(c.site, c.count) for c in passwd.callers] == [("main.go:19", 1), ("main.go:22", 5)]
    assert by[("/lib/x86_64-linux-gnu/libc.so.6", "ok")].cls.value == "declared"
    assert by[("/lib64/ld-linux-x86-64.so.2", "ok")].cls.value == "declared"
    folded = by[("4242.user", "ENOENT")]  # three directories: one entry, places listed
    assert folded.absent and len(folded.searched) == 3 and folded.misses == 3
    assert not any(d.path.startswith("/proc") for d in a.dependencies)
    assert a.program_files.files == 1  # its own executable
    assert a.static_view()["needed"] == ["libc.so.6"]
    assert "/etc/nsswitch.conf" in a.runtime_view()["hidden"]


def test_cgo_user_lookup_findings_name_site_sources_and_fix() -> None:
    a = analyze(header(), cgo_user_trace())
    ids = [f.id for f in a.findings]
    assert ids.count("user-lookup-cgo") == 2  # main.go:19 and main.go:22
    f22 = next(f for f in a.findings if f.id == "user-lookup-cgo" and f.user_frame
               and f.user_frame.line == 22)
    assert f22.go_api == "os/user.LookupId" and f22.c_function == "getpwuid_r"
    assert "-tags osusergo" in f22.fix
    assert "COPY --from=build /etc/passwd /etc/passwd" in f22.dockerfile
    assert {e.seq for e in f22.evidence} and all(e.via == "cgo" for e in f22.evidence)
    (nss,) = [f for f in a.findings if f.id == "nss-module"]
    assert "passwd: files systemd" in nss.explanation and "libcap.so.2" in nss.explanation
    assert "nscd-socket" in ids and "userdb-socket" in ids
    assert verdict(a).status == "works"


def test_missing_passwd_is_missing_and_degrades() -> None:
    """No /etc/passwd and no other source loaded (nsswitch.conf names systemd, but its
    module is not there): the lookup failed for want of a source. The fix ships one;
    osusergo would open the same absent file."""
    lookup = {"hidden": True, "via": Via.CGO, "api": "os/user.LookupId", "cfn": "getpwuid_r",
              "line": 7}
    trace = [acc("/etc/passwd", AccessKind.CONFIG, result="ENOENT", **lookup),
             acc("/lib/x86_64-linux-gnu/libnss_systemd.so.2", AccessKind.DLOPEN_LIBRARY,
                 result="ENOENT", **lookup)]
    a = analyze(header(), trace, exit={"exit_code": 0, "code": 0})
    (f,) = [f for f in a.findings if f.id == "user-lookup-cgo"]
    assert f.missing == ("/etc/passwd",)
    v = verdict(a)
    assert v.status == "degraded" and "user-lookup-cgo" in v.reasons[0]
    assert f.fix.startswith("Ship /etc/passwd with the users and groups the program looks up")
    assert "RUN adduser" in f.fix and "(USER app)" in f.fix
    assert "-tags osusergo (or CGO_ENABLED=0) does not help here" in f.fix


def test_absent_passwd_answered_by_a_loaded_nss_module_is_not_missing() -> None:
    """passwd: files systemd, /etc/passwd absent, libnss_systemd loaded: glibc asked it and
    it answered, so nothing is missing (the program works, as under chroot); the finding
    says who answered, and that osusergo would make these lookups fail."""
    lookup = {"hidden": True, "via": Via.CGO, "api": "os/user.LookupId", "cfn": "getpwuid_r"}
    trace = [acc("/etc/passwd", AccessKind.CONFIG, result="ENOENT", line=19, **lookup),
             acc("/lib/x86_64-linux-gnu/libnss_systemd.so.2", AccessKind.DLOPEN_LIBRARY,
                 line=19, **lookup),
             acc("/etc/passwd", AccessKind.CONFIG, result="ENOENT", line=22, **lookup)]
    a = analyze(header(), trace, exit={"exit_code": 0, "code": 0})
    users = [f for f in a.findings if f.id == "user-lookup-cgo"]
    assert len(users) == 2 and all(f.missing == () for f in users)  # 22: loaded before
    assert verdict(a).status == "works"
    assert ("'systemd' (libnss_systemd.so.2, loaded), which answered in its place"
            in users[0].explanation)
    assert users[0].fix.startswith("Build with -tags osusergo")
    assert "with osusergo Go asks no such source, so these lookups fail" in users[0].fix
    # a source not on the passwd line does not stand in for /etc/passwd
    only_files = {**GLIBC, "nsswitch": {"passwd": ["files"], "group": ["files", "systemd"]}}
    a = analyze(header(static=only_files), trace, exit={"exit_code": 0, "code": 0})
    assert verdict(a).status == "degraded"


def test_program_files_cwd_argv_writes_tmp_and_pure_go_runtime_files() -> None:
    go = {"via": Via.GO, "api": "os.ReadFile", "line": 30}
    trace = [acc(f"/home/u/site/content/p{i}.md", AccessKind.OTHER, hidden=True, **go)
             for i in range(40)]
    trace += [acc(f"/srv/out/p{i}.html", AccessKind.OTHER, hidden=True,
                  flags="O_WRONLY|O_CREAT|O_TRUNC", **go) for i in range(3)]
    trace += [acc("/tmp/x", AccessKind.OTHER, hidden=True, **go),
              acc("/data/in.csv", AccessKind.OTHER, hidden=True, **go),
              acc("/etc/passwd", AccessKind.CONFIG, hidden=True, via=Via.GO,
                  api="os/user.LookupId", line=9)]
    a = analyze(header(static={"static": True, "is_go": True},
                       argv=("./app", "/data/in.csv")), trace)
    pf = a.program_files
    assert pf.files == 45 and pf.written == 3
    assert dict(pf.by_dir)["./content/"] == 40
    assert dict(pf.by_reason) == {"argv": 1, "cwd": 40, "tmp": 1, "written": 3}
    deps = {d.path: d for d in a.dependencies}
    assert list(deps) == ["/etc/passwd"] and deps["/etc/passwd"].cls.value == "runtime-file"
    assert [f.id for f in a.findings] == ["user-lookup-go"]
    text = render(a, "text")
    assert sum("program files" in line for line in text.splitlines()) == 1
    assert "p1.md" not in text


def test_cwd_root_is_not_a_program_directory() -> None:
    trace = [acc("/etc/ssl/certs/ca-certificates.crt", AccessKind.DATA, hidden=True,
                 via=Via.GO, api="crypto/x509.SystemCertPool", line=16)]
    a = analyze(header(cwd="/"), trace)
    assert a.program_files.files == 0
    (f,) = a.findings
    assert f.id == "ca-roots" and "/etc/ssl/certs/ca-certificates.crt" in f.title


def test_ca_roots_missing_and_zoneinfo_missing() -> None:
    x509 = {"via": Via.GO, "api": "crypto/x509.SystemCertPool", "line": 16}
    tz = {"via": Via.GO, "api": "time.LoadLocation", "line": 8}
    trace = [acc(p, AccessKind.DATA, result="ENOENT", hidden=True, **x509)
             for p in ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem")]
    trace += [acc("/usr/share/zoneinfo/Europe/Paris", AccessKind.DATA, result="ENOENT",
                  hidden=True, **tz)]
    a = analyze(header(static={"static": True, "is_go": True}), trace,
                exit={"exit_code": 0, "code": 0})
    ids = {f.id: f for f in a.findings}
    assert ids["ca-roots-missing"].severity.value == "error"
    assert "/etc/ssl/certs/ca-certificates.crt" in ids["ca-roots-missing"].missing
    assert "time/tzdata" in ids["zoneinfo-missing"].fix
    assert verdict(a).status == "fails"
    embedded = analyze(header(static={"static": True, "is_go": True,
                                      "features": {"zoneinfo": "embedded"}}), trace[2:])
    assert [f.id for f in embedded.findings] == ["zoneinfo"]
    assert "embeds tzdata" in embedded.findings[0].explanation


def test_static_glibc_nss_hazard_exec_child_dlopen_upx_third_party() -> None:
    static = {**GLIBC, "static": True, "interpreter": None, "needed": [], "upx": True,
              "third_party_cgo": ["github.com/mattn/go-sqlite3"], "loader": {}}
    trace = [
        acc("/app", AccessKind.EXECUTABLE, syscall="execve", via=Via.EXEC),
        acc("/lib/x86_64-linux-gnu/libnss_systemd.so.2", AccessKind.DLOPEN_LIBRARY,
            hidden=True, via=Via.CGO, api="os/user.LookupId", cfn="getpwuid_r", line=22),
        acc("/usr/lib/libplugin.so", AccessKind.DLOPEN_LIBRARY, hidden=True, via=Via.CGO,
            api="main._Cfunc_open_plugin", cfn="dlopen", line=40),
        acc("/bin/true", AccessKind.EXECUTABLE, hidden=True, syscall="execve",
            via=Via.GO, api="os/exec.(*Cmd).Run", line=50),
    ]
    events = [ProcessEvent("signal", 100, 100, 0.1, {"signal": 11, "signal_name": "SIGSEGV"})]
    a = analyze(header(static=static), trace, events,
                exit={"exit_code": 139, "signal": 11, "signal_name": "SIGSEGV"})
    ids = {f.id: f for f in a.findings}
    assert "This run got SIGSEGV after loading them." in ids["static-glibc-nss"].explanation
    assert ids["dlopen"].paths == ("/usr/lib/libplugin.so",)
    assert ids["exec-child"].go_api == "os/exec.(*Cmd).Run"
    assert "upx-packed" in ids and "go-sqlite3" in ids["third-party-cgo"].title
    assert a.findings[0].severity.value == "error"  # sorted by severity
    v = verdict(a)
    assert v.status == "fails" and "killed by SIGSEGV" in v.reasons


def test_missing_interpreter_and_library_from_static_facts() -> None:
    static = {**GLIBC, "loader": {"interpreter_path": None, "missing": ["libc.so.6"]}}
    trace = [acc("/app", AccessKind.EXECUTABLE, result="ENOENT", syscall="execve",
                 via=Via.EXEC)]
    a = analyze(header(static=static), trace, exit={"exit_code": 127, "code": 127})
    ids = [f.id for f in a.findings]
    assert ids == ["missing-interpreter", "missing-library"]
    assert a.findings[0].missing == ("/lib64/ld-linux-x86-64.so.2",)
    assert verdict(a).status == "fails"


def _interpreter_fix(**static: Any) -> str:
    facts = {**GLIBC, "loader": {"interpreter_path": None, "missing": []}, **static}
    trace = [acc("/app", AccessKind.EXECUTABLE, result="ENOENT", syscall="execve",
                 via=Via.EXEC)]
    a = analyze(header(static=facts), trace, exit={"exit_code": 127, "code": 127})
    (f,) = [f for f in a.findings if f.id == "missing-interpreter"]
    return f.fix


def test_missing_interpreter_fix_is_derived_from_the_binarys_cgo() -> None:
    """Tags only for the cgo packages present; a third-party package's C code rules out
    "build without cgo" and names the libraries the image must add; static glibc only
    together with the tags that keep NSS out."""
    third = _interpreter_fix(needed=["libcrypto.so.3", "libc.so.6"],
                             cgo_packages=["os/user", "net"],
                             third_party_cgo=["github.com/rfjakob/gocryptfs/internal/stupidgcm"])
    assert "add libcrypto.so.3 to it" in third and "libc.so.6" not in third
    assert "Building without cgo is not enough here" in third
    assert "add -tags netgo,osusergo too: a static glibc must not load NSS" in third
    user = _interpreter_fix(cgo_packages=["os/user"])
    assert "-tags osusergo gives os/user" in user
    assert "netgo" not in user and "statically" not in user and "add " not in user
    runtime_only = _interpreter_fix(cgo_packages=[])
    assert "CGO_ENABLED=0" in runtime_only and "change nothing" in runtime_only
    sqlite = _interpreter_fix(needed=["libsqlite3.so.0", "libc.so.6"], third_party_cgo=["main"])
    assert "the main package has C code of its own" in sqlite
    assert "Or link statically (-ldflags '-linkmode external -extldflags -static', with " \
        "static archives of libsqlite3.so.0)" in sqlite
    musl = _interpreter_fix(libc="musl", interpreter="/lib/ld-musl-x86_64.so.1",
                            cgo_packages=["net"])
    assert "base image with musl" in musl and "-tags netgo gives net" in musl


# --- rule files ------------------------------------------------------------------------------

RULE = """
[[finding]]
id = "{id}"
severity = "{sev}"
title = "{title}"
explanation = "x"
fix = "y"
[finding.match]
{match}
"""


def write_rule(tmp_path: Path, **kw: str) -> Path:
    vals = {"id": "my-rule", "sev": "warning", "title": "t {go_api}",
            "match": 'path = ["/etc/passwd"]'} | kw
    p = tmp_path / "mine.toml"
    p.write_text(RULE.format(**vals))
    return p


@pytest.mark.parametrize(("kw", "key"), [
    ({"sev": "fatal"}, "'severity'"), ({"title": "t {nope}"}, "'title'"),
    ({"match": 'colour = ["x"]'}, "'match.colour'"), ({"match": 'class = ["secret"]'},
                                                        "'match.class'"),
    ({"id": "bad id!"}, "'id'"), ({"match": 'result = "maybe"'}, "'match.result'"),
])
def test_bad_rule_files_give_one_line_naming_file_rule_and_key(tmp_path: Path,
                                                               kw: dict[str, str],
                                                               key: str) -> None:
    p = write_rule(tmp_path, **kw)
    with pytest.raises(RuleError) as e:
        load_file(p)
    msg = e.value.message
    assert "\n" not in msg and str(p) in msg and key in msg
    assert e.value.exit_code == 3


def test_fix_missing_param_is_checked_like_fix(tmp_path: Path) -> None:
    p = tmp_path / "mine.toml"
    p.write_text('[[finding]]\nid = "r"\nseverity = "info"\ntitle = "t"\n'
                 'explanation = "x"\nfix = "y"\ncheck = "cgo_feature"\n'
                 '[finding.params]\nfix_missing = "ship {nope}"\n')
    with pytest.raises(RuleError, match="'params.fix_missing': unknown placeholder"):
        load_file(p)


def test_user_rule_from_probes_dir_matches(tmp_path: Path) -> None:
    write_rule(tmp_path, match='path = ["/etc/pass*"]\nvia = ["cgo"]')
    rules = load_rules((str(tmp_path),))
    a = analyze(header(), cgo_user_trace(), rules=rules)
    mine = [f for f in a.findings if f.id == "my-rule"]
    assert [f.user_frame.line for f in mine if f.user_frame] == [19, 22]
    assert mine[0].title == "t os/user.LookupId"
    with pytest.raises(RuleError, match="no such probes directory"):
        load_rules((str(tmp_path / "nope"),))


# --- gate --------------------------------------------------------------------------------------

def test_parse_fail_on() -> None:
    f = parse_fail_on("hidden, warning,nss-*")
    assert f.hidden and not f.cgo and f.severity is not None and f.ids == ("nss-*",)
    for bad in ("", "hidden,$x"):
        with pytest.raises(GateSpecError):
            parse_fail_on(bad)


@pytest.mark.parametrize(("spec", "nearest"), [
    ("hiden", "'hidden'"), ("warnings", "'warning'"), ("user-lookup-cg", "'user-lookup-cgo'"),
    ("resolver-cg", "'resolver-cgo'"), ("misssing", "'missing'"),
])
def test_a_typo_in_fail_on_is_a_usage_error_naming_the_nearest_word(spec: str,
                                                                     nearest: str) -> None:
    """Taken as a finding id, a typo matched nothing and the gate passed (exit 0)."""
    with pytest.raises(GateSpecError) as e:
        parse_fail_on(f"error,{spec}")
    assert e.value.exit_code == 2
    assert f"did you mean {nearest}?" in e.value.message and spec in e.value.message


def test_fail_on_globs_and_ids_are_checked_against_the_loaded_rules(tmp_path: Path) -> None:
    with pytest.raises(GateSpecError, match="'resolvr-\\*' matches no finding id"):
        parse_fail_on("resolvr-*")
    assert parse_fail_on("resolver-*").ids == ("resolver-*",)
    write_rule(tmp_path, match='path = ["/etc/pass*"]')
    ids = {r.id for r in load_rules((str(tmp_path),))}
    assert parse_fail_on("my-rule", ids).ids == ("my-rule",)  # --probes extras are known
    with pytest.raises(GateSpecError, match="did you mean 'my-rule'"):
        parse_fail_on("my-rul", ids)


def test_an_incomplete_trace_fails_every_gate() -> None:
    """A trace without its exit (the tracer was killed) passed `--fail-on hidden` of a
    program that used nothing hidden yet; now it fails, whatever is allowed."""
    pure = [acc("/etc/passwd", AccessKind.CONFIG, via=Via.GO, api="os/user.LookupId", line=3)]
    complete = analyze(header(), pure, exit={"exit_code": 0, "code": 0})
    assert not apply_gate(complete, parse_fail_on("hidden")).failed
    cut = analyze(header(), pure, truncated=True)
    for spec in ("hidden", "error", "nss-module"):
        r = apply_gate(cut, parse_fail_on(spec))
        assert r.failed and [f.rule for f in r.failing] == ["incomplete"]
        assert "gate failed: incomplete: the trace ends before" in r.summary_line()
    allow = AllowList((AllowEntry("*", "all"), AllowEntry("hidden", "all")))
    assert apply_gate(cut, parse_fail_on("hidden"), allow).failed
    # --allow alone is no gate: it marks findings and fails on nothing
    assert not apply_gate(cut, FailOn(spec=""), allow).failed


def test_gate_severity_threshold_ids_and_allow(tmp_path: Path) -> None:
    a = analyze(header(), cgo_user_trace())
    assert not apply_gate(a, parse_fail_on("error")).failed
    assert apply_gate(a, parse_fail_on("warning")).failed
    r = apply_gate(a, parse_fail_on("cgo"))
    assert r.failed and {x.rule for x in r.failing} == {"cgo"}
    allow = tmp_path / "allow.toml"
    allow.write_text('[[allow]]\nid = "cgo"\npath = "*"\nreason = "we ship glibc"\n')
    assert not apply_gate(a, parse_fail_on("cgo"), load_allow(allow)).failed
    allow.write_text('[[allow]]\nid = "user-lookup-cgo"\nreason = "known"\n'
                     '[[allow]]\nid = "nss-module"\nreason = "known"\n')
    r = apply_gate(a, parse_fail_on("hidden"), load_allow(allow))
    # every hidden file is covered by an allowed finding, except the socket-only ones
    marked = {f.id: f.allowed for f in r.analysis.findings}
    assert marked["user-lookup-cgo"] == "known" and marked["nscd-socket"] is None
    assert not r.failed, r.failing
    doc = json.loads(render(r.analysis, "json"))
    assert doc["gate"]["failed"] is False


@pytest.mark.parametrize(("text", "words"), [
    ('[[allow]]\nid = "nss-modul"\nreason = "r"\n',
     "key 'id': 'nss-modul' is not a known finding id (did you mean 'nss-module'?)"),
    ('[[allow]]\nid = "hiden"\nreason = "r"\n', "(did you mean 'hidden'?)"),
    ('[[allow]]\nid = "resolvr-*"\nreason = "r"\n', "'resolvr-*' matches no finding id"),
    ('[[allow]]\nid = "x"\n', "key 'reason' is required"),
    ('[[allow]]\nid = "x"\nreason = "r"\ncolour = 1\n', "unknown key 'colour'"),
    ("allow = 3\n", "array of tables"),
    ("[[allow\n", "not valid TOML"),
])
def test_bad_allow_lists(tmp_path: Path, text: str, words: str) -> None:
    p = tmp_path / "a.toml"
    p.write_text(text)
    with pytest.raises(AllowListError) as e:
        load_allow(p)
    assert words in e.value.message and str(p) in e.value.message


# --- reporters ------------------------------------------------------------------------------------

def test_colour_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    a = analyze(header(), cgo_user_trace())
    assert "\x1b[" in render(a, "text", color=True)
    assert "\x1b[" not in render(a, "text")

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert want_color(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not want_color(Tty())


def test_text_summary_first_then_details_grouped_by_api_and_c_function() -> None:
    text = render(analyze(header(), cgo_user_trace()), "text")
    assert text.index("FINDINGS") < text.index("READELF/LDD vs RUN TIME") < \
        text.index("DETAILS")
    summary = text[:text.index("DETAILS")]
    assert len(summary.splitlines()) < 40  # one screen
    detail = text[text.index("[warning] user-lookup-cgo"):]
    block = detail[detail.index("os/user.LookupId at main.go:22"):]
    import re

    assert block.index("getpwuid_r\n") < re.search(r"/etc/passwd +ok x5", block).start()
    assert not re.search(r"/etc/passwd +ok x6", text)  # never folded across call sites
    assert set(available()) >= {"text", "json"}


def test_resolver_reason_names_the_run_time_switch() -> None:
    trace = [acc("/etc/hosts", AccessKind.CONFIG, hidden=True, via=Via.CGO,
                 api="net.(*Resolver).LookupHost", cfn="getaddrinfo", line=12)]
    h = header() | {"env": {"GODEBUG": "netdns=cgo+1"}}
    (f,) = [f for f in analyze(h, trace).findings if f.id == "resolver-cgo"]
    assert "GODEBUG=netdns=cgo was set at run time" in f.explanation
    assert "GODEBUG=netdns=cgo+1" in f.explanation  # the recorded environment
    h = header() | {"env": {"RES_OPTIONS": "ndots:2"}}
    (f,) = [f for f in analyze(h, trace).findings if f.id == "resolver-cgo"]
    assert "RES_OPTIONS set at run time" in f.explanation
    go = [acc("/etc/resolv.conf", AccessKind.CONFIG, hidden=True, via=Via.GO,
              api="net.LookupHost", line=5)]
    static = GLIBC | {"resolver": {"implementation": "go", "reason": "-tags netgo"}}
    (f,) = analyze(header(static=static), go).findings
    assert f.id == "resolver-go" and "-tags netgo" in f.explanation


def test_report_cli_with_user_rules_and_a_bad_rule_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tracer.trace.recorder import TraceWriter

    trace = tmp_path / "t.jsonl"
    with TraceWriter(str(trace)) as w:
        w.header(argv=["./app"], binary="/home/u/site/app", static=GLIBC, cwd="/home/u/site")
        for a in cgo_user_trace():
            w.access(a)
        w.exit(ExitStatus(code=0))
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, match='path = ["/etc/passwd"]')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tracer", "report", *args], text=True,
                              capture_output=True, timeout=60, env={"NO_COLOR": "1"})

    r = cli("--probes", str(rules), "--format", "json", str(trace))
    assert r.returncode == 0, r.stderr
    assert "my-rule" in {f["id"] for f in json.loads(r.stdout)["findings"]}
    r = cli("--probes", str(rules), "--fail-on", "my-rule", str(trace))
    assert r.returncode == 1 and "gate failed: my-rule" in r.stderr
    # a --probes rule's id is known only with --probes: without it, a usage error
    r = cli("--fail-on", "my-rule", str(trace))
    assert r.returncode == 2 and r.stdout == "" and "'my-rule' is not a known" in r.stderr
    write_rule(rules, sev="fatal")
    r = cli("--probes", str(rules), str(trace))
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "rule 'my-rule': key 'severity'" in r.stderr
    r = cli("--format", "yaml", str(trace))
    assert r.returncode == 2 and "unknown format" in r.stderr


def test_openssl_style_roots_through_cgo_count_as_found() -> None:
    trace = [acc("/usr/lib/ssl/cert.pem", AccessKind.DATA, hidden=True, via=Via.CGO,
                 api="main._Cfunc_tls_init", cfn="SSL_CTX_set_default_verify_paths", line=9)]
    (f,) = [f for f in analyze(header(), trace).findings if f.id.startswith("ca-roots")]
    assert f.id == "ca-roots" and "/usr/lib/ssl/cert.pem" in f.title


def test_re_executing_itself_is_exec_self_not_a_hidden_child() -> None:
    trace = [acc("/home/u/site/app", AccessKind.EXECUTABLE, syscall="execve", via=Via.EXEC),
             acc("/proc/self/exe", AccessKind.EXECUTABLE, hidden=True, syscall="execve",
                 via=Via.EXEC, api="os/exec.(*Cmd).Run", line=28, pid=101),  # the child
             acc("/etc/passwd", AccessKind.CONFIG, hidden=True, via=Via.CGO, pid=101,
                 api="os/user.LookupId", cfn="getpwuid_r", line=18)]
    a = analyze(header(), trace)
    ids = [f.id for f in a.findings]
    assert "exec-self" in ids and "exec-child" not in ids
    (f,) = [f for f in a.findings if f.id == "exec-self"]
    assert "101" in f.explanation and "/etc/passwd" in f.explanation
    assert "/proc/self/exe" not in a.runtime_view()["hidden"]


def test_pure_go_user_lookup_without_passwd_is_missing_and_degraded() -> None:
    """os/user in pure Go on a root without /etc/passwd: the lookup failed, so the file is
    `missing` and the run degraded; with the file present it is an info, and works."""
    pure = {"static": True, "is_go": True, "cgo": False,
            "user_lookup": {"implementation": "go", "reason": "reads /etc/passwd"}}
    lookup = {"via": Via.GO, "api": "os/user.LookupId"}
    a = analyze(header(static=pure), [
        acc("/etc/passwd", AccessKind.CONFIG, result="ENOENT", hidden=True, line=19, **lookup),
        acc("/etc/group", AccessKind.CONFIG, result="ENOENT", hidden=True, via=Via.GO,
            api="os/user.LookupGroup", line=28)])
    assert [(f.id, f.missing, f.severity.value) for f in a.findings] == [
        ("user-lookup-go-missing", ("/etc/passwd",), "warning"),
        ("user-lookup-go-missing", ("/etc/group",), "warning")]
    assert "open error" in a.findings[0].explanation  # what Go did then
    v = verdict(a)
    assert v.status == "degraded" and "/etc/passwd missing" in v.reasons[0]

    a = analyze(header(static=pure), [
        acc("/etc/passwd", AccessKind.CONFIG, hidden=True, line=19, **lookup)])
    assert [(f.id, f.missing) for f in a.findings] == [("user-lookup-go", ())]
    assert verdict(a).status == "works"


def test_a_child_that_is_not_installed_is_not_a_missing_interpreter() -> None:
    """podman probes for rpm with exec.Command("rpm").Output(): execve fails with ENOENT
    because /usr/bin/rpm does not exist. The program itself started: no missing-interpreter
    error; the child is an exec-child that is not there."""
    trace = [acc("/home/u/site/app", AccessKind.EXECUTABLE, syscall="execve", via=Via.EXEC),
             acc("/lib64/ld-linux-x86-64.so.2", AccessKind.INTERPRETER, syscall="execve"),
             acc("/usr/bin/rpm", AccessKind.EXECUTABLE, result="ENOENT", hidden=True,
                 syscall="execve", via=Via.GO, api="os/exec.(*Cmd).Output", line=152,
                 pid=101)]
    a = analyze(header(), trace, exit={"exit_code": 0, "code": 0})
    ids = [f.id for f in a.findings]
    assert "missing-interpreter" not in ids, ids
    (child,) = [f for f in a.findings if f.id == "exec-child"]
    assert child.title == ("os/exec.(*Cmd).Output runs nothing (tried, not found: "
                           "/usr/bin/rpm) at main.go:152")
    assert "tried /usr/bin/rpm, which is not there" in child.explanation
    assert "rpm" not in child.fix and child.missing == ()
    assert verdict(a).status == "works"  # it got ENOENT and carried on


def test_a_site_without_an_application_frame_says_so_in_words() -> None:
    """A lookup made by a library's goroutine has no user frame: the title ended in a bare
    "at" ("net.cgoLookupIP.func1 resolved names with glibc (cgo getaddrinfo) at")."""
    trace = [acc("/etc/nsswitch.conf", AccessKind.CONFIG, hidden=True, via=Via.CGO,
                 api="net.(*Dialer).DialContext", cfn="getaddrinfo"),
             acc("/lib/x86_64-linux-gnu/libnss_db.so.2", AccessKind.DLOPEN_LIBRARY,
                 result="ENOENT", hidden=True, via=Via.CGO, api="net.(*Dialer).DialContext",
                 cfn="getaddrinfo")]
    static = GLIBC | {"nsswitch": {"hosts": ["files", "db"]}}
    found = {f.id: f for f in analyze(header(static=static), trace).findings}
    assert found["resolver-cgo"].title == (
        "net.(*Dialer).DialContext resolved names with glibc (cgo getaddrinfo) "
        "(no application frame on the stack)")
    assert found["nss-module"].title.startswith(
        "glibc looked for NSS modules at run time for net.(*Dialer).DialContext "
        "(no application frame on the stack): libnss_db.so.2")
    for f in found.values():
        assert not f.title.endswith(" at") and " at :" not in f.title and " at (" not in f.title
    text = render(analyze(header(static=static), trace), "text")
    assert " at\n" not in text


# --- connects: name servers vs the program's own traffic ----------------------------------

def _dial(result: str = "EINPROGRESS", kind: AccessKind = AccessKind.SOCKET,
          path: str = "127.0.0.1:8080") -> Access:
    """A reverse proxy's connect to its upstream as cgotrace before the name-server rule
    recorded it: kind socket, hidden."""
    return acc(path, kind, result=result, hidden=kind is AccessKind.SOCKET,
               syscall="connect", via=Via.GO, api="net.(*Dialer).DialContext", line=88)


def test_a_connect_to_an_upstream_is_traffic_not_a_name_server() -> None:
    static = GLIBC | {"resolver": {"implementation": "go+cgo", "reason": "default"}}
    trace = [_dial() for _ in range(2219)] + [_dial("ECONNREFUSED", path="127.0.0.1:8081")]
    a = analyze(header(static=static), trace)
    assert not [d for d in a.dependencies if d.path.startswith("127.0.0.1:")]
    assert not [f for f in a.findings if any("127.0.0.1" in p for p in f.paths)]
    assert a.counts == {"network": 2220}
    assert [(c.address, c.count, c.results) for c in a.connections] == [
        ("127.0.0.1:8080", 2219, (("ok", 2219),)),  # EINPROGRESS: normal, not an error
        ("127.0.0.1:8081", 1, (("ECONNREFUSED", 1),))]
    text = render(a, "text")
    assert "run-time files" not in text and "EINPROGRESS" not in text
    assert ("program traffic: 2220 connects to 2 addresses: 127.0.0.1:8080 x2219, "
            "127.0.0.1:8081 x1 (ECONNREFUSED x1)") in text
    doc = json.loads(render(a, "json"))
    assert doc["connections"][0] == {"address": "127.0.0.1:8080", "count": 2219,
                                     "results": {"ok": 2219}}


def test_cgo_lookup_then_dial_at_one_site_is_resolver_cgo_only() -> None:
    """GODEBUG=netdns=cgo: getaddrinfo resolves the upstream's name, then Go dials it. Go's
    resolver never ran, so no resolver-go at that site."""
    site = {"via": Via.CGO, "api": "net.(*Dialer).DialContext", "cfn": "getaddrinfo",
            "line": 88}
    trace = [acc("/etc/nsswitch.conf", AccessKind.CONFIG, hidden=True, **site),
             acc("/etc/hosts", AccessKind.CONFIG, hidden=True, **site),
             _dial(), _dial()]
    h = header() | {"env": {"GODEBUG": "netdns=cgo"}}
    ids = [f.id for f in analyze(h, trace).findings]
    assert "resolver-cgo" in ids and "resolver-go" not in ids
    # Go read only what decides the resolver (resolv.conf, nsswitch.conf), then cgo ran
    decide = [acc(p, AccessKind.CONFIG, hidden=True, via=Via.GO,
                  api="net.(*Dialer).DialContext", line=88)
              for p in ("/etc/resolv.conf", "/etc/nsswitch.conf")]
    ids = [f.id for f in analyze(header(), decide + trace).findings]
    assert "resolver-cgo" in ids and "resolver-go" not in ids
    # where Go's resolver did the lookup (a query to the name server), it is resolver-go
    go = decide + [acc("127.0.0.1:53", AccessKind.SOCKET, hidden=True, syscall="connect",
                       via=Via.GO, api="net.(*Dialer).DialContext", line=88), _dial()]
    (f,) = [f for f in analyze(header(), go).findings if f.id == "resolver-go"]
    assert f.paths == ("/etc/resolv.conf", "/etc/nsswitch.conf", "127.0.0.1:53")


def test_name_servers_are_those_of_the_resolv_conf_in_force() -> None:
    h = header() | {"resolv_conf": {"path": "/etc/resolv.conf", "found": True,
                                    "nameservers": ["10.0.0.2"]}}
    q = {"syscall": "connect", "via": Via.GO, "api": "net.(*Resolver).LookupHost", "line": 4}
    trace = [acc("10.0.0.2:53", AccessKind.SOCKET, result="EINPROGRESS", hidden=True, **q),
             acc("203.0.113.53:53", AccessKind.SOCKET, hidden=True, **q)]  # its own DNS client
    a = analyze(h, trace)
    (dep,) = a.dependencies
    assert (dep.path, dep.result, dep.feature) == ("10.0.0.2:53", "ok", "resolver")
    assert [c.address for c in a.connections] == ["203.0.113.53:53"]


# --- attach: the window, and a verdict about the program -----------------------------------

def _attach_header(start: float = 1_700_000_000.0) -> dict[str, Any]:
    return header() | {"mode": "attach", "attach": {"pid": 4242, "nspid": [4242],
                                                    "name": "caddy", "start_time": start}}


def test_attach_whose_tracer_died_is_not_a_failing_program() -> None:
    trace = [acc("/etc/passwd", AccessKind.CONFIG, hidden=True, via=Via.GO,
                 api="os/user.LookupId", line=9)]
    trace[0] = Access(**{**trace[0].__dict__, "time": 12.5})
    a = analyze(_attach_header(), trace, exit=None, truncated=True)  # no exit line
    v = verdict(a)
    assert v.status == "works" and "cgotrace died while attached" in v.notes[0]
    assert a.attach is not None and a.attach["tracer_died"] is True
    assert a.attach["last_seen"] == 1_700_000_012.5
    text = render(a, "text")
    assert "verdict: works" in text and "fails" not in text
    assert "attached to pid 4242 (caddy) from 2023-11-14T22:13:20Z to an unknown end " \
           "(last record 2023-11-14T22:13:32Z)" in text
    assert "cgotrace died while attached" in text.splitlines()[0]
    html = render(a, "html")
    assert "attached to pid 4242 (caddy)" in html and "cgotrace died while attached" in html
    doc = json.loads(render(a, "json"))
    assert doc["attach"]["tracer_died"] is True and doc["verdict"]["verdict"] == "works"


def test_attach_that_detached_says_still_running_and_no_exit_code() -> None:
    from tracer.trace.model import ExitStatus

    ended = {"end_time": 1_700_000_003.0, "ended": "duration of 3 s over, detached",
             "detached": True}
    a = analyze(_attach_header(), [], exit={**ExitStatus(code=None).to_dict(),
                                            "attach": ended})
    assert a.exit is not None and a.exit["exit_code"] is None  # not 0: it never exited
    text = render(a, "text")
    assert "still running at detach (duration of 3 s over, detached)" in text.splitlines()[0]
    assert "from 2023-11-14T22:13:20Z to 2023-11-14T22:13:23Z (3.0 s)" in text
    assert verdict(a).status == "works" and "still running at detach" in verdict(a).notes[0]
    assert "still running at detach" in render(a, "html")
    doc = json.loads(render(a, "json"))
    assert doc["exit"]["exit_code"] is None and doc["attach"]["detached"] is True
    # a process that exited during the attach is judged by its status, as a run is
    exited = analyze(_attach_header(), [], exit={"exit_code": 3, "code": 3, "attach": {
        "end_time": 1_700_000_002.0, "ended": "process exited with code 3",
        "detached": False}})
    assert verdict(exited).reasons == ("exit status 3",)
    assert "process exited with code 3" in render(exited, "text").splitlines()[0]


def test_the_report_json_validates_for_attach_and_traffic() -> None:
    import jsonschema

    from tracer.reporters.jsonreport import schema

    a = analyze(_attach_header(), [_dial()], exit=None, truncated=True)
    jsonschema.validate(json.loads(render(a, "json")), schema())


def test_fixes_never_copy_what_the_container_runtime_mounts() -> None:
    site = {"via": Via.CGO, "api": "net.LookupHost", "cfn": "getaddrinfo", "line": 12}
    trace = [acc(p, AccessKind.CONFIG, hidden=True, **site)
             for p in ("/etc/nsswitch.conf", "/etc/hosts", "/etc/resolv.conf")]
    (f,) = [f for f in analyze(header(), trace).findings if f.id == "resolver-cgo"]
    assert f.dockerfile == ("COPY --from=build /etc/nsswitch.conf /etc/nsswitch.conf",)
    assert "COPY --from=build /etc/hosts" not in f.fix
    assert "Not copied: /etc/hosts and /etc/resolv.conf: container runtimes" in f.fix
    only = [t for t in trace if t.path != "/etc/nsswitch.conf"]
    (f,) = [f for f in analyze(header(), only).findings if f.id == "resolver-cgo"]
    assert f.dockerfile == () and "COPY" not in f.fix and "Or ship" not in f.fix
    assert "Not copied: /etc/hosts and /etc/resolv.conf" in f.fix


def test_ca_roots_missing_needs_a_root_load() -> None:
    """A trust-store tool probing a directory of the feature (caddy's smallstep truststore
    stats /etc/pki/ca-trust/source/anchors/ at init) is no evidence of an empty pool: no
    error, and no 'missing' path that was never probed."""
    init = {"via": Via.GO, "api": "github.com/smallstep/truststore.init.0", "line": 3}
    probe = [acc("/etc/pki/ca-trust/source/anchors/", AccessKind.DATA, result="ENOENT",
                 hidden=True, **init)]
    a = analyze(header(cwd="/"), probe, exit={"exit_code": 0, "code": 0})
    assert not [f for f in a.findings if f.id.startswith("ca-roots")]
    x509 = {"via": Via.GO, "api": "crypto/x509.SystemCertPool", "line": 16}
    load = probe + [acc(p, AccessKind.DATA, result="ENOENT", hidden=True, **x509)
                    for p in ("/etc/ssl/cert.pem", "/etc/ssl/certs")]
    (f,) = [f for f in analyze(header(cwd="/"), load).findings if f.id == "ca-roots-missing"]
    assert f.missing == ("/etc/ssl/cert.pem", "/etc/ssl/certs")
