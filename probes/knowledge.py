"""The rules in probes/rules/*.toml, loaded once and queried by path or by feature.

Pure data access: no I/O beyond reading the packaged TOML files (and their parsed copies
in the user's cache), no imports from the tracer except `tracer.trace.model` and
`tracer.cachedir`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer.trace.model import AccessKind

RULES_DIR = Path(__file__).resolve().parent / "rules"


@dataclass(frozen=True)
class PathRule:
    pattern: str
    kind: AccessKind
    feature: str


@dataclass(frozen=True)
class Feature:
    id: str
    title: str
    fix: str
    go_packages: tuple[str, ...] = ()
    cgo_markers: tuple[re.Pattern[str], ...] = ()
    go_markers: tuple[re.Pattern[str], ...] = ()
    embedded_markers: tuple[re.Pattern[str], ...] = ()
    cgo_predicts: tuple[str, ...] = ()
    go_predicts: tuple[str, ...] = ()
    c_functions: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()  # functions that decide the dependency (exact pclntab names)
    extra: dict[str, Any] = field(default_factory=dict)


def _load(name: str) -> dict[str, Any]:
    """A packaged rules file, parsed; kept as JSON in the facts cache's directory (keyed by
    the file's size, mtime and inode), since importing tomllib and parsing cost a few ms of
    every run's start."""
    import json
    import os

    from tracer.cachedir import small_caches_off, user_cache

    path = RULES_DIR / name
    cached = None
    if not small_caches_off():
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}"
            cached = user_cache() / "rules" / f"{name}-{stamp}.json"
            data = json.loads(cached.read_text())
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
    import tomllib

    with open(path, "rb") as f:
        data = tomllib.load(f)
    if cached is not None:
        with contextlib.suppress(OSError, TypeError, ValueError):
            cached.parent.mkdir(parents=True, exist_ok=True)
            for old in cached.parent.glob(f"{name}-*.json"):  # an edited file's entries
                old.unlink()
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, cached)
    return data


@functools.cache
def path_rules() -> tuple[PathRule, ...]:
    return tuple(PathRule(r["pattern"], AccessKind(r["kind"]), r["feature"])
                 for r in _load("paths.toml")["path"])


@functools.cache
def features() -> dict[str, Feature]:
    out: dict[str, Feature] = {}
    known = {"id", "title", "fix", "go_packages", "cgo_markers", "go_markers", "embedded_markers",
             "cgo_predicts", "go_predicts", "c_functions", "origins"}
    for r in _load("features.toml")["feature"]:
        out[r["id"]] = Feature(
            id=r["id"], title=r["title"], fix=r["fix"],
            go_packages=tuple(r.get("go_packages", ())),
            cgo_markers=tuple(re.compile(p) for p in r.get("cgo_markers", ())),
            go_markers=tuple(re.compile(p) for p in r.get("go_markers", ())),
            embedded_markers=tuple(re.compile(p) for p in r.get("embedded_markers", ())),
            cgo_predicts=tuple(r.get("cgo_predicts", ())),
            go_predicts=tuple(r.get("go_predicts", ())),
            c_functions=tuple(r.get("c_functions", ())),
            origins=tuple(r.get("origins", ())),
            extra={k: v for k, v in r.items() if k not in known},
        )
    return out


@functools.cache
def origin_functions() -> dict[str, str]:
    """Every feature's `origins` entry -> the feature id (the functions that decide a
    dependency; an access's `origin` is the innermost frame named here)."""
    return {fn: f.id for f in features().values() for fn in f.origins}


@functools.cache
def _matchers() -> tuple[tuple[PathRule, str, bool], ...]:
    """(rule, the pattern's literal prefix, whether the pattern is all literal): a glob is
    compiled (fnmatch) only for a path that starts with its prefix, so a short run pays
    for the few patterns its paths can match, not for all of them."""
    out = []
    for rule in path_rules():
        cut = min((i for i, c in enumerate(rule.pattern) if c in "*?["),
                  default=len(rule.pattern))
        out.append((rule, rule.pattern[:cut], cut == len(rule.pattern)))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def classify_path(path: str) -> PathRule | None:
    """The first path rule whose glob matches `path`, or None."""
    for rule, prefix, literal in _matchers():
        if literal:
            if path == prefix:
                return rule
        elif path.startswith(prefix) and fnmatch.fnmatchcase(path, rule.pattern):
            return rule
    return None
