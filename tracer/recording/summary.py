"""The run summary: counts by kind and the hidden dependencies, built incrementally while a
trace runs (memory grows with distinct hidden (path, result) pairs, not with accesses) or
from a saved trace, and rendered for the terminal.

Failed lookups of one file name along a search path (glibc's dlopen tries a dozen
directories for libnss_db.so.2; libnss_systemd probes six userdb directories) are folded
into one entry: the name, where it was found (if it was), and how many places missed.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from probes.knowledge import access_result
from tracer.trace.model import Access, Attribution, ExitStatus, Repeats

FOLD_MIN_DIRS = 3  # fold failed lookups of one name once they span this many directories


def caller_of(at: Attribution) -> dict[str, Any]:
    """What the summary says about the code behind an access (first attributed access)."""
    uf = at.user_frame
    out: dict[str, Any] = {
        "via": at.via.value, "go_api": at.go_api, "c_function": at.c_function,
        "user_frame": (f"{os.path.basename(uf.file)}:{uf.line}" if uf and uf.file
                       else (uf.function if uf else None))}
    if at.no_user_frame:  # no application frame at all: say why ("init of corp.test/lib")
        out["no_user_frame"] = at.no_user_frame
    return out


class SummaryBuilder:
    def __init__(self) -> None:
        self.total = 0
        self.by_kind: Counter[str] = Counter()
        self.hidden: Counter[tuple[str, str, str]] = Counter()
        self.callers: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.unsymbolized: dict[str, None] = {}
        # repeats the notify engine let run without a stop: their result was copied from
        # an observed access of the same key (docs/trace-format.md), never seen itself
        self.unobserved = 0
        self.hidden_unobserved: Counter[tuple[str, str, str]] = Counter()

    def add(self, a: Access) -> None:
        """One access record (itself and the repeats already counted onto it)."""
        self.total += a.calls
        self.by_kind[a.kind.value] += a.calls
        copied = (not a.observed and a.result_of is not None) + _copied(a, a.repeats_unobserved)
        self.unobserved += copied
        if a.hidden:
            key = (a.path, access_result(a.syscall, a.result), a.kind.value)
            self.hidden[key] += a.calls
            self.hidden_unobserved[key] += copied
            if key not in self.callers and a.attribution is not None:
                self.callers[key] = caller_of(a.attribution)
        if a.attribution is not None and a.same_as is None:
            for note in a.attribution.unsymbolized:
                self.unsymbolized.setdefault(note)

    def add_repeats(self, a: Access, added: Repeats) -> None:
        """More calls folded into access `a` (added before)."""
        self.total += added.count
        self.by_kind[a.kind.value] += added.count
        copied = _copied(a, added.unobserved)
        self.unobserved += copied
        if a.hidden:
            key = (a.path, access_result(a.syscall, a.result), a.kind.value)
            self.hidden[key] += added.count
            self.hidden_unobserved[key] += copied

    def summary(self, status: ExitStatus | None, truncated: bool = False) -> dict[str, Any]:
        hidden = []
        for (p, r, k), n in self.hidden.items():
            entry = _entry(p, r, k, n, self.callers.get((p, r, k)))
            if self.hidden_unobserved[(p, r, k)]:
                entry["unobserved"] = self.hidden_unobserved[(p, r, k)]
            hidden.append(entry)
        return {
            "accesses": self.total,
            "unobserved": self.unobserved,
            "by_kind": dict(sorted(self.by_kind.items())),
            "hidden": fold_search_paths(hidden),
            "unsymbolized": list(self.unsymbolized),
            "exit": status.to_dict() if status is not None else None,
            "truncated": truncated,
        }


def _copied(a: Access, unobserved: int) -> int:
    """Of `unobserved` repeats of `a`, those whose result was copied from an observed call
    (the others' is unknown)."""
    return unobserved if a.result != "unknown" else 0


def summarize(accesses: Iterable[Access], status: ExitStatus | None,
              truncated: bool = False) -> dict[str, Any]:
    builder = SummaryBuilder()
    for a in accesses:
        builder.add(a)
    return builder.summary(status, truncated)


def _entry(path: str, result: str, kind: str, count: int,
           caller: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": path, "result": result, "kind": kind, "count": count}
    if caller is not None:
        entry["caller"] = caller
    return entry


def fold_search_paths(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold the failed lookups of one (kind, file name) that span FOLD_MIN_DIRS or more
    directories: into the successful entry of that name (as `misses`), or into one
    `not found` entry listing the places searched. Sorted by kind, then path."""
    failed: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for e in entries:
        key = (e["kind"], os.path.basename(e["path"].rstrip("/")))
        if e["result"] == "ok":
            found.setdefault(key, e)
        elif e["result"] not in ("unknown",):
            failed[key].append(e)
    out = [e for e in entries if e["result"] == "ok" or e["result"] == "unknown"]
    for key, misses in failed.items():
        dirs = {os.path.dirname(e["path"].rstrip("/")) for e in misses}
        if len(dirs) < FOLD_MIN_DIRS:
            out.extend(misses)
            continue
        searched = sorted(e["path"] for e in misses)
        count = sum(e["count"] for e in misses)
        hit = found.get(key)
        if hit is not None:
            hit["misses"] = count
            hit["searched"] = searched
            continue
        folded = _entry(key[1], misses[0]["result"], key[0], count,
                        next((e["caller"] for e in misses if "caller" in e), None))
        folded["not_found"] = True
        folded["searched"] = searched
        out.append(folded)
    return sorted(out, key=lambda e: (e["kind"], e["path"]))


