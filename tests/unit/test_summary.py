"""The run summary folds search-path misses and keeps everything else as it was seen."""

from __future__ import annotations

from tracer.recording.summary import summarize
from tracer.reporters.brief import render_summary
from tracer.trace.model import Access, AccessKind

LIB_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"]


def _a(seq: int, path: str, result: str, kind: AccessKind) -> Access:
    return Access(seq=seq, time=0.0, pid=1, tid=1, syscall="openat", path=path,
                  result=result, kind=kind, hidden=True)


def test_misses_of_a_library_never_found_fold_into_one_not_found_entry() -> None:
    accesses = [_a(i, f"{d}/libnss_db.so.2", "ENOENT", AccessKind.DLOPEN_LIBRARY)
                for i, d in enumerate(LIB_DIRS)]
    accesses.append(_a(9, "/etc/passwd", "ok", AccessKind.CONFIG))
    s = summarize(accesses, None)
    assert [h["path"] for h in s["hidden"]] == ["/etc/passwd", "libnss_db.so.2"]
    folded = s["hidden"][1]
    assert folded["not_found"] and folded["count"] == 4 and len(folded["searched"]) == 4
    assert "not found in 4 places" in render_summary(s)


def test_misses_before_a_hit_fold_into_the_hit() -> None:
    accesses = [_a(i, f"{d}/libcap.so.2", "ENOENT", AccessKind.DLOPEN_LIBRARY)
                for i, d in enumerate(LIB_DIRS[1:])]
    accesses.append(_a(8, "/lib/x86_64-linux-gnu/libcap.so.2", "ok",
                       AccessKind.DLOPEN_LIBRARY))
    (entry,) = summarize(accesses, None)["hidden"]
    assert entry["path"] == "/lib/x86_64-linux-gnu/libcap.so.2" and entry["misses"] == 3


def test_a_miss_in_one_or_two_places_stays_visible() -> None:
    accesses = [_a(1, "/etc/services", "ENOENT", AccessKind.CONFIG),
                _a(2, "/etc/services", "ENOENT", AccessKind.CONFIG),
                _a(3, "/usr/etc/services", "ENOENT", AccessKind.CONFIG)]
    hidden = summarize(accesses, None)["hidden"]
    assert [(h["path"], h["count"]) for h in hidden] == [("/etc/services", 2),
                                                       ("/usr/etc/services", 1)]
