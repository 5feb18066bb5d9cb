"""Findings end to end: trace the cgo builds of userlookup, dnslookup and x509roots in the
glibc preset root, write the trace, read it back, analyze, render text and JSON, and compare
with the golden files in tests/golden/findings/ (pids, seq numbers, times, PCs, access
totals and absolute build paths normalised). `CGOTRACE_UPDATE_GOLDEN=1` rewrites them.

The golden files describe a Debian 12 host: the glibc preset root copies the host's glibc,
NSS modules and nsswitch.conf (`passwd: files systemd`), so another distribution needs its
own golden files (regenerate and review).

Also: the must-show facts stated directly (Go API, user frame, hidden dependencies, fix),
the JSON against its shipped schema, and no cgo finding in the pure and netgo builds.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from probes.analysis import analyze_trace
from probes.records import Analysis
from tracer.commands.run import RunOptions, trace_program
from tracer.reporters import render
from tracer.trace.recorder import read_trace

pytestmark = [pytest.mark.ptrace, pytest.mark.go, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "findings"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}
CGO_FINDINGS = {"user-lookup-cgo", "nss-module", "resolver-cgo", "nscd-socket",
                "userdb-socket", "static-glibc-nss", "missing-interpreter", "missing-library"}
_CACHE: dict[tuple[str, str], Analysis] = {}


def traced(app: str, mode: str, binary: Path, tmp: Path, code: int = 0) -> Analysis:
    """One traced run per (app, mode) in the glibc root; dnslookup in a loopback netns
    answered by the local responder (nothing leaves the machine)."""
    if (app, mode) in _CACHE:
        return _CACHE[(app, mode)]
    from tracer.attribution.attributor import Attributor

    out = tmp / f"{app}-{mode}.jsonl"
    argv = [str(binary)] + (["-svc"] if app == "dnslookup" else [])

    def run(network: str | None = None) -> None:
        res = trace_program(RunOptions(argv=argv, output=str(out), rootfs="glibc", env=ENV,
                                       network=network, attributor=Attributor(),
                                       forward_signals=False))
        assert res.status.shell_code == code

    if app == "dnslookup":
        from sample_apps.dnsresponder import Responder
        from tracer.sandbox.netns import LoopbackNetwork

        with LoopbackNetwork(service=lambda: Responder(port=53, timeout=120)) as net:
            run(net.netns_path)
    else:
        run()
    _CACHE[(app, mode)] = analyze_trace(read_trace(out))
    return _CACHE[(app, mode)]


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("findings")


_ROOTFS = re.compile(r"/[^\s\"']*/\.cache/rootfs/[^/\s\"']+")


_SOURCES = re.compile(r"/[^\s\"']*/sample_apps/")  # builds are shared between checkouts


def normalise_text(text: str) -> str:
    text = _SOURCES.sub("<src>/sample_apps/", text)
    text = _ROOTFS.sub("<rootfs>", text)  # before ROOT: the cache may live in this checkout
    text = text.replace(str(ROOT), "<src>")
    text = re.sub(r"\(seq \d+\)", "(seq N)", text)
    text = re.sub(r"\b\d+ accesses\b", "N accesses", text)
    # how many directories glibc searched depends on the CPU: its glibc-hwcaps levels
    # (x86-64-v4 only with AVX-512) each add their subdirectories to the search
    text = re.sub(r"\b\d+ places\b", "N places", text)
    text = re.sub(r"glibc-hwcaps/x86-64-v\d", "glibc-hwcaps/<level>", text)
    return text


# vcs.*: the commit the shared sample build was made from
_VOLATILE = {"seq", "first_seq", "pid", "pc", "time", "start_time", "cgotrace", "vcs.revision",
             "vcs.time", "vcs.modified"}
_VOLATILE_LISTS = {"seqs", "pids"}


def normalise_json(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        out = {}
        # a library glibc searched for: how many places depends on the CPU's hwcaps levels
        searched = bool(value.get("searched"))
        for k, v in value.items():
            if k in ("counts", "accesses", "stats"):  # kernel/runtime-dependent totals
                out[k] = "N" if not isinstance(v, dict) else sorted(v)
            elif searched and k in ("count", "misses"):
                out[k] = "N"
            elif searched and k == "callers":
                out[k] = [{**normalise_json(c), "count": "N"} for c in v]
            else:
                out[k] = normalise_json(v, k)
        return out
    if isinstance(value, list):
        if key in _VOLATILE_LISTS:
            return ["N"] * min(len(value), 1)
        items = [normalise_json(v, key) for v in value]
        if key == "searched":  # one entry per hwcaps level seen as one
            items = list(dict.fromkeys(items))
        return items
    if key in _VOLATILE and value is not None:
        return "N"
    if isinstance(value, str):
        return normalise_text(value)
    return value


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CGOTRACE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"{path} missing: run with CGOTRACE_UPDATE_GOLDEN=1 and review it"
    expected = path.read_text()
    if actual != expected:
        import tempfile

        saved = Path(tempfile.gettempdir()) / f"cgotrace-golden-{name}"
        saved.write_text(actual)
        pytest.fail(f"{name} differs from the golden file: diff {path} {saved} "
                    "(CGOTRACE_UPDATE_GOLDEN=1 rewrites it)")


# app -> (Go API, user frame, hidden dependencies it must name, words of the fix)
MUST_SHOW = {
    "userlookup": ("os/user.LookupId", "main.go:22",
                   ["/etc/nsswitch.conf", "/etc/passwd", "libnss_systemd.so.2"],
                   ["-tags osusergo", "COPY --from=build /etc/passwd /etc/passwd"]),
    "dnslookup": ("net.LookupPort", "main.go:76", ["/etc/nsswitch.conf"],
                  ["-tags netgo", "GODEBUG=netdns=go"]),
    "x509roots": ("crypto/x509.SystemCertPool", "main.go:16",
                  ["/etc/ssl/certs/ca-certificates.crt"], ["SSL_CERT_FILE"]),
}


@pytest.mark.parametrize("app", sorted(MUST_SHOW))
def test_golden_reports_of_the_cgo_builds(app: str, sample: Callable[..., Path],
                                          tmp_dir: Path) -> None:
    a = traced(app, "cgo", sample(app, "cgo"), tmp_dir)
    text = render(a, "text")
    doc = json.loads(render(a, "json"))

    go_api, frame, deps, fix_words = MUST_SHOW[app]
    head = f"{go_api} at {frame}"
    assert head in text, f"{app}: the text report does not name {head}"
    for dep in deps:
        assert dep in text
        assert any(dep in p for f in doc["findings"] for p in f["paths"])
    for word in fix_words:
        assert word in text
        assert any(word in f["fix"] for f in doc["findings"])
    ours = [f for f in doc["findings"] if f["go_api"] == go_api
            and f["user_frame"]["line"] == int(frame.split(":")[1])]
    assert ours and all(f["user_frame"]["file"].endswith(f"/{app}/main.go") for f in ours)

    check_golden(f"{app}-cgo.txt", normalise_text(text))
    check_golden(f"{app}-cgo.json",
                 json.dumps(normalise_json(doc), indent=2, sort_keys=True) + "\n")


def test_userlookup_cgo_names_hidden_nss_and_the_nsswitch_source(
        sample: Callable[..., Path], tmp_dir: Path) -> None:
    a = traced("userlookup", "cgo", sample("userlookup", "cgo"), tmp_dir)
    hidden = {d.path for d in a.dependencies if d.cls.value == "hidden" and d.result == "ok"}
    assert {"/etc/nsswitch.conf", "/etc/passwd", "/etc/group"} <= hidden
    (nss,) = [f for f in a.findings if f.id == "nss-module"]
    passwd = " ".join(a.static["nsswitch"]["passwd"])
    assert f"passwd: {passwd}" in nss.explanation and "source 'systemd'" in nss.explanation
    # the readelf view and the run-time view side by side, in the JSON too
    doc = json.loads(render(a, "json"))
    assert doc["views"]["static"]["needed"] == ["libc.so.6"]
    assert "/etc/nsswitch.conf" in doc["views"]["runtime"]["hidden"]
    assert "/etc/nsswitch.conf" not in doc["views"]["static"]["libraries"]


def test_json_reports_validate_against_the_shipped_schema(sample: Callable[..., Path],
                                                          tmp_dir: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from tracer.reporters.jsonreport import schema

    validator = jsonschema.Draft202012Validator(schema())
    for app in MUST_SHOW:
        doc = json.loads(render(traced(app, "cgo", sample(app, "cgo"), tmp_dir), "json"))
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{app}: {errors[0].message} at {list(errors[0].path)}"
    broken = json.loads(render(traced("userlookup", "cgo", sample("userlookup", "cgo"),
                                      tmp_dir), "json"))
    broken["findings"][0]["severity"] = "fatal"  # the schema does reject a bad document
    assert list(validator.iter_errors(broken))


@pytest.mark.parametrize(("app", "mode"), [("userlookup", "pure"), ("userlookup", "netgo"),
                                           ("dnslookup", "netgo"), ("x509roots", "pure")])
def test_pure_and_netgo_builds_have_no_cgo_findings(app: str, mode: str,
                                                    sample: Callable[..., Path],
                                                    tmp_dir: Path) -> None:
    a = traced(app, mode, sample(app, mode), tmp_dir)
    ids = {f.id for f in a.findings}
    assert not ids & CGO_FINDINGS, f"{app}-{mode}: {sorted(ids & CGO_FINDINGS)}"
    assert not [d for d in a.dependencies if d.cls.value == "hidden"]
    assert any(c.via == "go" for d in a.dependencies for c in d.callers)  # it did run
    expected = {"userlookup": "user-lookup-go", "dnslookup": "resolver-go",
                "x509roots": "ca-roots"}[app]
    assert expected in ids


def test_static_glibc_build_reports_the_nss_crash_hazard(sample: Callable[..., Path],
                                                         tmp_dir: Path) -> None:
    """The userlookup static build dlopens the root's libnss_systemd into its own glibc
    and dies (SIGSEGV, exit 2): the error finding says so and names the modules."""
    a = traced("userlookup", "static", sample("userlookup", "static"), tmp_dir, code=2)
    f = a.findings[0]
    assert f.id == "static-glibc-nss" and f.severity.value == "error"
    assert any(p.endswith("/libnss_systemd.so.2") for p in f.paths)
    assert "This run got SIGSEGV" in f.explanation and "-tags netgo,osusergo" in f.fix
    assert f.go_api == "os/user.LookupId" and f.user_frame and f.user_frame.line == 22
    assert verdict_of(a) == "fails"


def verdict_of(a: Analysis) -> str:
    from probes.records import verdict

    return verdict(a).status
