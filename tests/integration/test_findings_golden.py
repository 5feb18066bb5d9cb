"""Findings end to end: trace the cgo builds of userlookup, dnslookup and x509roots in the
glibc preset root under each engine (ptrace, notify), write the trace, read it back,
analyze, render text and JSON, and compare with the golden files in tests/golden/findings/.
Both engines must give the same golden file.

What is normalised, and nothing else: pids, seq numbers, times, PCs, access totals by kind
(the Go runtime's own /proc and /sys reads vary) and absolute build paths; and what depends
on the CPU: glibc searches one glibc-hwcaps subdirectory per level the CPU supports
(x86-64-v4 only with AVX-512). The levels come from an oracle, the root's own ld.so
(`ld.so --help`: "x86-64-v3 (supported, searched)"); every hwcaps directory of a folded
search must list exactly those levels once, then all but the first level's entries are
dropped and exactly their accesses (counted in the trace) are subtracted from the places,
misses and counts (`CpuShare`). Every other number stays exact, the user-database
"6 places" included.

`CGOTRACE_UPDATE_GOLDEN=1` rewrites the golden files and fails the run (review the diff,
then rerun without it); it is refused under CGOTRACE_REQUIRE_PRIV=1 (CI).

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
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from probes.analysis import analyze_trace
from probes.records import Analysis
from tracer.commands.run import RunOptions, trace_program
from tracer.reporters import render
from tracer.trace.model import Access
from tracer.trace.recorder import read_trace

# one xdist worker for the module: its traced runs are cached for all its tests
pytestmark = [pytest.mark.ptrace, pytest.mark.go, pytest.mark.netns,
              pytest.mark.xdist_group("findings-golden")]

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "findings"
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}
ENGINES = ("ptrace", "notify")
CGO_FINDINGS = {"user-lookup-cgo", "nss-module", "resolver-cgo", "nscd-socket",
                "userdb-socket", "static-glibc-nss", "missing-interpreter", "missing-library"}
_CACHE: dict[tuple[str, str, str], tuple[Analysis, list[Access]]] = {}


def traced(app: str, mode: str, binary: Path, tmp: Path, code: int = 0,
           engine: str = "ptrace") -> Analysis:
    """One traced run per (app, mode, engine) in the glibc root; dnslookup in a loopback
    netns answered by the local responder (nothing leaves the machine)."""
    return traced_with_accesses(app, mode, binary, tmp, code, engine)[0]


def traced_with_accesses(app: str, mode: str, binary: Path, tmp: Path, code: int = 0,
                         engine: str = "ptrace") -> tuple[Analysis, list[Access]]:
    """traced(), and the accesses of the trace it analysed (as read back)."""
    key = (app, mode, engine)
    if key in _CACHE:
        return _CACHE[key]
    from tracer.attribution.attributor import Attributor

    out = tmp / f"{app}-{mode}-{engine}.jsonl"
    argv = [str(binary)] + (["-svc"] if app == "dnslookup" else [])

    def run(network: str | None = None) -> None:
        res = trace_program(RunOptions(argv=argv, output=str(out), rootfs="glibc", env=ENV,
                                       network=network, attributor=Attributor(),
                                       forward_signals=False, engine=engine))
        assert res.engine == engine
        assert res.status.shell_code == code

    if app == "dnslookup":
        from sample_apps.dnsresponder import Responder
        from tracer.sandbox.netns import LoopbackNetwork

        with LoopbackNetwork(service=lambda: Responder(port=53, timeout=120)) as net:
            run(net.netns_path)
    else:
        run()
    trace = read_trace(out)
    _CACHE[key] = (analyze_trace(trace), list(trace.accesses))
    return _CACHE[key]


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("findings")


# --- what depends on the CPU: glibc-hwcaps levels ------------------------------------------

HWCAPS = re.compile(r"/glibc-hwcaps/(x86-64-v\d+)/")
LEVEL = "/glibc-hwcaps/<level>/"


def in_root(root: Path, path: str) -> Path:
    """`path` inside `root`, following symlinks as the root sees them (absolute links
    resolve inside the root)."""
    parts = [p for p in path.split("/") if p]
    here = root
    for _ in range(64):
        if not parts:
            return here
        step = here / parts.pop(0)
        if step.is_symlink():
            link = os.readlink(step)
            base = root if link.startswith("/") else here
            parts = [p for p in link.split("/") if p] + parts
            here = base
            continue
        here = step
    raise AssertionError(f"{path}: too many symlinks in {root}")


# glibc 2.36 also searches legacy HWCAP subdirectories (tls, AT_PLATFORM, x86_64 and their
# combinations; gone in 2.37). They depend on the CPU too (AT_PLATFORM is "haswell" on Intel
# CPUs from Haswell on, avx512_1 is an Intel AVX-512 hwcap), and the golden files list
# them as the golden host's ld.so searches them: exactly these lines of `ld.so --help`.
GOLDEN_LEGACY = ("x86_64 (AT_PLATFORM; supported, searched)", "tls (supported, searched)",
                 "avx512_1", "x86_64 (supported, searched)")


def _help_section(text: str, head: str) -> list[str]:
    assert head in text, f"ld.so --help has no section {head!r}:\n{text}"
    return [line.strip() for line in text.split(head, 1)[1].split("\n\n", 1)[0]
            .splitlines()[1:] if line.strip()]


@cache
def hwcaps_levels(root: Path) -> tuple[str, ...]:
    """The glibc-hwcaps subdirectories the root's own ld.so searches on this CPU, in its
    priority order, from `ld.so --help` (glibc 2.33+); fails when the CPU's legacy HWCAP
    subdirectories differ from the golden host's (the golden files then do not apply)."""
    ld = in_root(root, "/lib64/ld-linux-x86-64.so.2")
    text = subprocess.run([str(ld), "--help"], capture_output=True, text=True, timeout=30,
                          check=True).stdout
    legacy = _help_section(text, "Legacy HWCAP subdirectories")
    if tuple(legacy) != GOLDEN_LEGACY:
        pytest.fail(f"{ld} searches the legacy HWCAP subdirectories {legacy}, the golden "
                    f"host {list(GOLDEN_LEGACY)}: the golden files describe another CPU "
                    "class (regenerate them on this one to compare here)")
    section = _help_section(text, "Subdirectories of glibc-hwcaps directories")
    levels = tuple(m[1] for line in section
                   if (m := re.fullmatch(r"(x86-64-v\d+) \(supported, searched\)", line)))
    assert levels, f"{ld}: this CPU supports no glibc-hwcaps level: {section}"
    return levels


def _caller_key(c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["via"], c["go_api"], c["c_function"], c["origin"], c["user_frame"])


def _access_caller_key(a: Access) -> tuple[Any, ...]:
    at = a.attribution
    assert at is not None, f"seq {a.seq} {a.path}: no attribution"
    uf = at.user_frame
    frame = (f"{os.path.basename(uf.file)}:{uf.line}" if uf.file else uf.function) \
        if uf else None
    return (at.via.value, at.go_api, at.c_function, at.origin, frame)


@dataclass
class CpuShare:
    """The share of a report that depends on the CPU's glibc-hwcaps levels, taken out.

    `levels` is the oracle (the root's ld.so). For each folded search (a dependency with
    `searched`), the glibc-hwcaps entries must be exactly `levels` in every hwcaps
    directory, each once; the entries of all levels but the first are dropped and their
    accesses (from the trace) subtracted from `count` (for a name never found, whose count
    is its misses), `misses` and each caller's `count`. `places`/`misses` map the text's
    numbers (len(searched), misses) to the normalised ones.
    """

    levels: tuple[str, ...]
    accesses: list[Access]
    places: dict[int, int] = field(default_factory=dict)
    misses: dict[int, int] = field(default_factory=dict)
    _exact_places: set[int] = field(default_factory=set)

    def dependency(self, d: dict[str, Any]) -> dict[str, Any]:
        """The dependency with the CPU's share taken out (a copy; others unchanged)."""
        searched: list[str] = d.get("searched") or []
        if not searched:
            return d
        assert len(set(searched)) == len(searched), f"{d['path']}: an entry searched twice"
        hw = {p: m.group(1) for p in searched if (m := HWCAPS.search(p))}
        if not hw:
            self._note_places(len(searched), len(searched))
            return d
        dirs: dict[str, list[str]] = {}
        for p, level in hw.items():
            dirs.setdefault(HWCAPS.sub(LEVEL, p), []).append(level)
        for template, seen in dirs.items():
            assert sorted(seen) == sorted(self.levels), (
                f"{template}: searched for levels {sorted(seen)}, the root's ld.so searches "
                f"{list(self.levels)}")
        extra = {p for p, level in hw.items() if level != self.levels[0]}
        share = [a for a in self.accesses if a.path in extra and a.result == d["result"]
                 and a.kind.value == d["kind"]]
        assert {a.path for a in share} == extra, "a searched entry with no access in the trace"
        by_caller = Counter(_access_caller_key(a) for a in share)
        out = dict(d)
        out["searched"] = [HWCAPS.sub(LEVEL, p) for p in searched if p not in extra]
        out["misses"] = d["misses"] - len(share)
        if d["result"] != "ok":  # a name never found: its count is its misses
            out["count"] = d["count"] - len(share)
            out["callers"] = [{**c, "count": c["count"] - by_caller.pop(_caller_key(c), 0)}
                              for c in d["callers"]]
            assert not by_caller, f"accesses of no caller of {d['path']}: {by_caller}"
        if d.get("host_path") and (m := HWCAPS.search(d["host_path"])):
            assert m.group(1) == self.levels[0], d["host_path"]  # the first place searched
            out["host_path"] = HWCAPS.sub(LEVEL, d["host_path"])
        self._note_places(len(searched), len(out["searched"]))
        if d["misses"] != out["misses"]:
            assert self.misses.setdefault(d["misses"], out["misses"]) == out["misses"]
        return out

    def _note_places(self, raw: int, normalised: int) -> None:
        """The text gives each search its place count: map the raw count to the normalised
        one, refusing a number two searches would map apart."""
        if raw == normalised:
            self._exact_places.add(raw)
        else:
            self.places[raw] = normalised
        assert not self._exact_places & set(self.places), "ambiguous place counts in the text"

    def text(self, text: str) -> str:
        text = re.sub(r"\b(\d+) places\b",
                      lambda m: f"{self.places.get(int(m[1]), int(m[1]))} places", text)
        text = re.sub(r"\bafter (\d+) misses\b",
                      lambda m: f"after {self.misses.get(int(m[1]), int(m[1]))} misses", text)
        return text


def cpu_share(doc: dict[str, Any], accesses: list[Access]) -> CpuShare:
    """The CpuShare of one report: every folded search seen, so the text maps know all."""
    from tracer.sandbox import roots

    share = CpuShare(hwcaps_levels(roots.resolve_rootfs("glibc")), accesses)
    doc["dependencies"] = [share.dependency(d) for d in doc["dependencies"]]
    return share


# --- everything else that varies between runs -----------------------------------------------

_ROOTFS = re.compile(r"/[^\s\"']*/\.cache/rootfs/[^/\s\"']+")


_SOURCES = re.compile(r"/[^\s\"']*/sample_apps/")  # builds are shared between checkouts


def normalise_text(text: str, share: CpuShare | None = None) -> str:
    text = _SOURCES.sub("<src>/sample_apps/", text)
    text = _ROOTFS.sub("<rootfs>", text)  # before ROOT: the cache may live in this checkout
    text = text.replace(str(ROOT), "<src>")
    text = re.sub(r"\(seq \d+\)", "(seq N)", text)
    text = re.sub(r"\b\d+ accesses\b", "N accesses", text)
    if share is not None:
        text = share.text(text)
    return text


# vcs.*: the commit the shared sample build was made from
_VOLATILE = {"seq", "first_seq", "pid", "pc", "time", "start_time", "cgotrace", "vcs.revision",
             "vcs.time", "vcs.modified"}
_VOLATILE_LISTS = {"seqs", "pids"}


def normalise_json(value: Any, share: CpuShare | None = None, key: str = "") -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("counts", "accesses", "stats"):  # kernel/runtime-dependent totals
                out[k] = "N" if not isinstance(v, dict) else sorted(v)
            else:
                out[k] = normalise_json(v, share, k)
        return out
    if isinstance(value, list):
        if key in _VOLATILE_LISTS:
            return ["N"] * min(len(value), 1)
        return [normalise_json(v, share, key) for v in value]
    if key in _VOLATILE and value is not None:
        return "N"
    if isinstance(value, str):
        return normalise_text(value, share)
    return value


def check_goldens(files: dict[str, str]) -> None:
    """Compare each (name -> actual text) with tests/golden/findings/NAME; with
    CGOTRACE_UPDATE_GOLDEN=1 write them all instead, and fail."""
    if os.environ.get("CGOTRACE_UPDATE_GOLDEN") == "1":
        if os.environ.get("CGOTRACE_REQUIRE_PRIV") == "1":
            pytest.fail("CGOTRACE_UPDATE_GOLDEN=1 is refused under CGOTRACE_REQUIRE_PRIV=1: "
                        "a CI run compares, it never rewrites")
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, actual in files.items():
            (GOLDEN / name).write_text(actual)
        pytest.fail(f"rewrote {', '.join(files)} in {GOLDEN}: review the diff, then rerun "
                    "without CGOTRACE_UPDATE_GOLDEN (an update run never passes)")
    differ = []
    for name, actual in files.items():
        path = GOLDEN / name
        assert path.exists(), f"{path} missing: run with CGOTRACE_UPDATE_GOLDEN=1, review it"
        if actual != path.read_text():
            import tempfile

            saved = Path(tempfile.gettempdir()) / f"cgotrace-golden-{os.getpid()}-{name}"
            saved.write_text(actual)
            differ.append(f"diff {path} {saved}")
    if differ:
        pytest.fail("differs from the golden file (CGOTRACE_UPDATE_GOLDEN=1 rewrites it): "
                    + "; ".join(differ))


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


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("app", sorted(MUST_SHOW))
def test_golden_reports_of_the_cgo_builds(app: str, engine: str, sample: Callable[..., Path],
                                          tmp_dir: Path) -> None:
    a, accesses = traced_with_accesses(app, "cgo", sample(app, "cgo"), tmp_dir, engine=engine)
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

    # the notify engine counts its notifications and upgrades too (and the repeats its
    # native core answered): only that may differ
    notify_only = {"notifications", "upgrades", "lost_upgrades", "native_repeats",
                   "native_dropped", "native_upgrades"}
    stats = doc["exit"]["stats"]
    assert (notify_only <= set(stats)) == (engine == "notify"), stats
    doc["exit"]["stats"] = {k: v for k, v in stats.items() if k not in notify_only}
    share = cpu_share(doc, accesses)
    check_goldens({
        f"{app}-cgo.json": json.dumps(normalise_json(doc, share), indent=2, sort_keys=True)
        + "\n",
        f"{app}-cgo.txt": normalise_text(text, share)})


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
