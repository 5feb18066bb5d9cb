"""Place and miss counts of a folded library search, against a hand-built loader search.

glibc 2.36's dlopen of a name without a slash tries, in each library directory, every
glibc-hwcaps level the CPU supports and then the legacy HWCAP subdirectories (tls, the
platform, x86_64 and their combinations, where AT_PLATFORM "x86_64" equals the hwcap
"x86_64", so `tls/x86_64` and `x86_64` are tried twice). The numbers a report prints are
counted here by hand from that search: places = distinct paths, misses = failed opens, count
= every access of the name (the analysis: probes/analysis.py fold_search_paths, the
reporters: tracer/reporters/text.py, probes/checks.py; the run summary:
tracer/recording/summary.py, tracer/reporters/brief.py).

Also the run summary's "repeats unstopped" lines: the notify engine's repeats, counted.
"""

from __future__ import annotations

import json
import re
from typing import Any

from probes.analysis import analyze
from tracer.recording.summary import summarize
from tracer.reporters import render
from tracer.reporters.brief import render_summary
from tracer.trace.model import Access, AccessKind, Attribution, Frame, Via

LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib")
LEVELS = ("glibc-hwcaps/x86-64-v3", "glibc-hwcaps/x86-64-v2")
# the legacy order of glibc 2.36 with AT_PLATFORM x86_64 and hwcap x86_64 ("" is the dir)
LEGACY = ("tls/x86_64/x86_64", "tls/x86_64", "tls/x86_64", "tls", "x86_64/x86_64", "x86_64",
          "x86_64", "")
STATIC = {"interpreter": "/lib64/ld-linux-x86-64.so.2", "needed": ["libc.so.6"],
          "static": False, "libc": "glibc", "cgo": True, "is_go": True,
          "nsswitch": {"services": ["db", "files"]},
          "loader": {"interpreter_path": "/lib64/ld-linux-x86-64.so.2", "missing": [],
                     "libraries": [{"name": "libc.so.6",
                                    "path": "/lib/x86_64-linux-gnu/libc.so.6"}],
                     "config_files": ["/etc/ld.so.cache"]}}


class Trace:
    """Accesses in order, each from the cgo getaddrinfo of net.LookupPort at a line."""

    def __init__(self) -> None:
        self.accesses: list[Access] = []

    def add(self, path: str, result: str, kind: AccessKind, line: int = 76,
            observed: bool = True, result_of: int | None = None) -> Access:
        at = Attribution(via=Via.CGO, go_api="net.LookupPort", c_function="getaddrinfo",
                         user_frame=Frame("main.main", "/src/app/main.go", line))
        a = Access(seq=len(self.accesses) + 1, time=0.0, pid=10, tid=10, syscall="openat",
                   path=path, result=result, kind=kind, hidden=True, attribution=at,
                   observed=observed, result_of=result_of)
        self.accesses.append(a)
        return a

    def search(self, name: str, found_in: str | None = None, line: int = 76) -> int:
        """One dlopen search for `name` (every level, every legacy subdirectory, every
        directory in LIB_DIRS order) until `found_in`; the number of failed opens."""
        misses = 0
        for d in LIB_DIRS:
            for sub in (*LEVELS, *LEGACY):
                path = "/".join(p for p in (d, sub, name) if p)
                if path == found_in:
                    self.add(path, "ok", AccessKind.DLOPEN_LIBRARY, line)
                    return misses
                self.add(path, "ENOENT", AccessKind.DLOPEN_LIBRARY, line)
                misses += 1
        return misses


def _deps(accesses: list[Access]) -> dict[str, dict[str, Any]]:
    doc = json.loads(render(analyze({"argv": ["./app"], "binary": "/src/app/app", "cwd": "/",
                                     "static": STATIC, "env": {}}, accesses), "json"))
    return {d["path"]: d for d in doc["dependencies"]}


def test_a_name_never_found_counts_places_misses_and_accesses() -> None:
    t = Trace()
    misses = t.search("libnss_db.so.2")
    places = len({a.path for a in t.accesses})
    # by hand: 4 directories x (2 levels + 6 distinct legacy subdirectories, the directory
    # itself included) = 32 places; tls/x86_64 and x86_64 are tried twice in each: 40 opens
    assert (places, misses) == (4 * (2 + 6), 4 * (2 + 8)) == (32, 40)

    d = _deps(t.accesses)["libnss_db.so.2"]
    assert len(d["searched"]) == len(set(d["searched"])) == 32
    assert set(d["searched"]) == {a.path for a in t.accesses}
    assert (d["count"], d["misses"], d["result"]) == (40, 40, "ENOENT")
    assert [c["count"] for c in d["callers"]] == [40]

    analysis = analyze({"argv": ["./app"], "binary": "/src/app/app", "cwd": "/",
                        "static": STATIC, "env": {}}, t.accesses)
    text = render(analysis, "text")
    assert "libnss_db.so.2 (ENOENT, 32 places)" in text
    assert re.search(r"libnss_db\.so\.2\s+ENOENT: not found in 32 places\s", text), text
    assert set(re.findall(r"\b([0-9]+) places\b", text)) == {"32"}, "another place count"

    summary = summarize(t.accesses, None)
    (entry,) = summary["hidden"]
    assert (entry["count"], len(entry["searched"])) == (40, 32)
    assert "libnss_db.so.2  ENOENT: not found in 32 places" in render_summary(summary)


def test_a_name_found_after_misses_counts_them_per_search() -> None:
    t = Trace()
    hit = "/usr/lib/x86_64-linux-gnu/libcap.so.2"
    first = t.search("libcap.so.2", found_in=hit, line=22)
    second = t.search("libcap.so.2", found_in=hit, line=22)
    # by hand: the whole of /lib/x86_64-linux-gnu (10 opens), then in
    # /usr/lib/x86_64-linux-gnu the 2 levels and the 7 legacy opens before the directory
    # itself: 19 per search
    assert first == second == 10 + 2 + 7 == 19

    d = _deps(t.accesses)[hit]
    assert (d["result"], d["count"], d["misses"]) == ("ok", 2, 38)
    assert len(d["searched"]) == 8 + 7  # distinct places missed in the two directories
    assert [c["count"] for c in d["callers"]] == [2]  # the hit's own accesses only

    analysis = analyze({"argv": ["./app"], "binary": "/src/app/app", "cwd": "/",
                        "static": STATIC, "env": {}}, t.accesses)
    assert re.search(rf"{re.escape(hit)}\s+ok x2 \(after 38 misses\)",
                     render(analysis, "text"))
    (entry,) = summarize(t.accesses, None)["hidden"]
    assert (entry["count"], entry["misses"], len(entry["searched"])) == (2, 38, 15)
    assert "ok x2 (after 38 misses)" in render_summary(summarize(t.accesses, None))


def test_misses_in_two_directories_stay_apart() -> None:
    t = Trace()
    t.add("/etc/services", "ENOENT", AccessKind.CONFIG)
    t.add("/usr/etc/services", "ENOENT", AccessKind.CONFIG)
    t.add("/etc/services", "ENOENT", AccessKind.CONFIG)
    deps = _deps(t.accesses)
    assert (deps["/etc/services"]["count"], deps["/etc/services"]["searched"]) == (2, [])
    assert deps["/usr/etc/services"]["count"] == 1


def test_repeats_unstopped_are_counted_in_the_run_summary() -> None:
    """The notify engine lets repeats of a key run without a stop (observed: false, the
    result copied from `result_of`): the summary counts them, overall and per dependency."""
    t = Trace()
    first = t.add("/etc/passwd", "ok", AccessKind.CONFIG, line=22)
    for _ in range(6):
        t.add("/etc/passwd", "ok", AccessKind.CONFIG, line=22, observed=False,
              result_of=first.seq)
    t.add("/etc/group", "ok", AccessKind.CONFIG, line=28)
    t.add("/etc/group", "ok", AccessKind.CONFIG, line=28, observed=False, result_of=None)
    summary = summarize(t.accesses, None)
    # a flushed access (no result_of: its result is "unknown" in a real trace) is not a
    # copied repeat
    assert summary["unobserved"] == 6
    text = render_summary(summary)
    assert ("cgotrace: 6 of them are repeats that ran without a stop: result copied from an "
            "observed access (observed: false)") in text
    assert re.search(r"config\s+/etc/passwd\s+ok x7 \(6 repeats unstopped\)", text), text
    assert re.search(r"config\s+/etc/group\s+ok x2\s+<-", text), text

    observed = summarize([a for a in t.accesses if a.observed], None)
    assert observed["unobserved"] == 0 and "repeats" not in render_summary(observed)
