"""The text report: a one-screen summary first, details after.

Summary: what ran and how it ended, the verdict, one line per finding, what readelf/ldd
show beside what the program needed at run time, the program's own files as one line, and
the fixes. Details: per finding, its explanation, then Go API (user frame) -> C function ->
dependency with a count per call site (repeats fold within a site, never across sites),
then the fix with its Dockerfile lines. Colour only when asked (`color=True`: the CLI
asks on a terminal without NO_COLOR).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tracer.reporters import window
from tracer.trace.model import DependencyClass, Finding, Severity

if TYPE_CHECKING:
    from probes.records import Analysis, Caller, Dependency

SUMMARY_FINDINGS = 12  # findings listed in the summary before "... and N more"
VIEW_ROWS = 14  # rows of the side-by-side view
SUMMARY_FIXES = 6  # distinct fixes in the summary
_MARK = {Severity.ERROR: "E", Severity.WARNING: "W", Severity.INFO: "i"}
_COLOR = {Severity.ERROR: "31;1", Severity.WARNING: "33", Severity.INFO: "36"}


class _Paint:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on and text else text

    def bold(self, text: str) -> str:
        return self(text, "1")

    def sev(self, f: Finding, text: str) -> str:
        return self(text, "2" if f.allowed else _COLOR[f.severity])


def render(analysis: Analysis, *, color: bool = False) -> str:
    p = _Paint(color)
    out = _summary(analysis, p)
    details = _details(analysis, p)
    if details:
        out += ["", p.bold("DETAILS"), *details]
    return "\n".join(out) + "\n"


# === summary ================================================================================

def _headline(a: Analysis) -> str:
    s = a.static
    name = os.path.basename(a.binary or (a.argv[0] if a.argv else "?"))
    bits = [b for b in (s.get("go_version"), "cgo" if s.get("cgo") else
                        ("no cgo" if s.get("is_go") else None), s.get("libc"),
                        "static" if s.get("static") else "dynamic" if s else None) if b]
    ex = a.exit or {}
    attached = window.attach_status(a)
    if attached is not None:  # an attach: how it ended, never an exit the program did not make
        status = attached
    elif ex.get("signal_name"):
        status = f"killed by {ex['signal_name']}"
    elif ex:
        status = f"exit {ex.get('exit_code')}"
    else:
        status = "no exit recorded (trace incomplete)"
    where = f", in {a.sandbox}" if a.sandbox else ""
    n = a.accesses
    facts = f" ({', '.join(bits)}{where})" if bits or where else ""
    unseen = (f" ({a.unobserved} ran without a stop: result copied from the same call "
              "seen before, observed: false in the trace)") if a.unobserved else ""
    return (f"cgotrace: {name}{facts}: {status}, {n} "
            f"access{'es' if n != 1 else ''}{unseen}")


def _verdict_line(a: Analysis, p: _Paint) -> str:
    from probes.records import verdict

    v = verdict(a)
    counts = {sev: sum(1 for f in a.findings if f.severity == sev and not f.allowed)
              for sev in Severity}
    allowed = sum(1 for f in a.findings if f.allowed)
    parts = [f"{n} {sev.value}{'s' if n != 1 else ''}" for sev, n in counts.items() if n]
    if allowed:
        parts.append(f"{allowed} allowed")
    tone = {"works": "32", "degraded": "33", "fails": "31;1"}[v.status]
    line = f"verdict: {p(v.status, tone)}; findings: {', '.join(parts) or 'none'}"
    if a.gate is not None:
        g = a.gate
        state = p("FAILED", "31;1") if g.get("failed") else p("passed", "32")
        line += f"; gate --fail-on {g.get('fail_on')}: {state}"
    return line


def _summary(a: Analysis, p: _Paint) -> list[str]:
    out = [p.bold(_headline(a))]
    span = window.attach_window(a)
    if span is not None:
        out.append(span)
    out.append(_verdict_line(a, p))
    from probes.records import verdict

    out += [f"  ({note})" for note in verdict(a).notes]
    if a.truncated and a.attach is None:
        out.append("(the trace is incomplete: the tracer stopped before the program ended)")
    for d in a.diagnoses:
        out.append(f"diagnosis: {d.get('message') or d}")
    if a.findings:
        out += ["", p.bold("FINDINGS")]
        for f in a.findings[:SUMMARY_FINDINGS]:
            tag = f" [allowed: {f.allowed}]" if f.allowed else ""
            out.append(f"  {p.sev(f, _MARK[f.severity] + ' ' + f.id):<24} {f.title}{tag}")
        if len(a.findings) > SUMMARY_FINDINGS:
            out.append(f"  ... and {len(a.findings) - SUMMARY_FINDINGS} more (details below)")
    out += ["", p.bold("READELF/LDD vs RUN TIME"), *_side_by_side(a)]
    out.append(_program_files_line(a))
    traffic = window.traffic_line(a)
    if traffic is not None:
        out.append(f"  {traffic}")
    fixes = _fixes(a.findings)
    if fixes:
        out += ["", p.bold("FIX")]
        out += [f"  - {f}" for f in fixes[:SUMMARY_FIXES]]
        if len(fixes) > SUMMARY_FIXES:
            out.append(f"  ... and {len(fixes) - SUMMARY_FIXES} more (details below)")
    return out


def _side_by_side(a: Analysis) -> list[str]:
    sv = a.static_view()
    left = []
    if sv["static"]:
        left.append("statically linked: nothing")
    if sv["interpreter"]:
        left.append(f"interp {sv['interpreter']}")
    left += [f"needed {n}" for n in sv["needed"]]
    if not left:
        left.append("(no static facts in the trace)")
    right = [f"{d.path}{_absent_mark(d)}" for d in a.of_class(DependencyClass.HIDDEN)]
    right = list(dict.fromkeys(right)) or ["nothing hidden"]
    run_files = list(dict.fromkeys(d.path + _absent_mark(d)
                                   for d in a.of_class(DependencyClass.RUNTIME_FILE)))
    width = max(34, *(len(x) for x in left[:VIEW_ROWS])) + 2
    rows = [f"  {'readelf/ldd show':<{width}}needed at run time, hidden from them"]
    n = max(len(left), len(right))
    for i in range(min(n, VIEW_ROWS)):
        lc = left[i] if i < len(left) else ""
        rc = right[i] if i < len(right) else ""
        rows.append(f"  {lc:<{width}}{rc}".rstrip())
    if n > VIEW_ROWS:
        rows.append(f"  {'':<{width}}... and {n - VIEW_ROWS} more")
    if run_files:
        shown = ", ".join(run_files[:6]) + (f" and {len(run_files) - 6} more"
                                            if len(run_files) > 6 else "")
        rows.append(f"  run-time files read by Go itself (not hidden): {shown}")
    return rows


def _absent_mark(d: Dependency) -> str:
    if d.searched and d.result == "ok":
        return ""
    if d.searched:
        return f" ({d.result}, {len(d.searched)} places)"
    return f" ({d.result})" if d.result != "ok" else ""


def _program_files_line(a: Analysis) -> str:
    pf = a.program_files
    if not pf.files:
        return "  program files: none"
    dirs = ", ".join(f"{d} {n}" for d, n in pf.by_dir[:4])
    more = f", {len(pf.by_dir) - 4} more dirs" if len(pf.by_dir) > 4 else ""
    written = f", {pf.written} written" if pf.written else ""
    return (f"  program files: {pf.files} ({dirs}{more}{written}; the program's own, "
            "not dependencies)")


def _fixes(findings: Iterable[Finding]) -> list[str]:
    """The first line of each distinct fix, errors first (Dockerfile lines in details)."""
    out: dict[str, None] = {}
    for f in findings:
        if f.allowed:
            continue
        out.setdefault(f.fix.splitlines()[0])
    return list(out)


# === details ================================================================================

def _details(a: Analysis, p: _Paint) -> list[str]:
    out: list[str] = []
    by_id: dict[str, list[Finding]] = {}
    for f in a.findings:
        by_id.setdefault(f.id, []).append(f)
    # a path may be two dependencies (its Go callers' and its cgo callers', each in its
    # class): an evidence seq names the caller, and so the dependency
    deps: dict[tuple[str, str], list[Dependency]] = {}
    for d in a.dependencies:
        deps.setdefault((d.path, d.result), []).append(d)
    for fid, group in by_id.items():
        f0 = group[0]
        out += ["", p.sev(f0, f"[{f0.severity.value}] {fid}") + f": {len(group)} site"
                f"{'s' if len(group) != 1 else ''}"]
        for f in group:
            out += _finding_detail(f, deps, p)
    out += _other_dependencies(a, p)
    if a.unsymbolized:
        out += ["", "unsymbolized: " + "; ".join(a.unsymbolized)]
    return out


def _finding_detail(f: Finding, deps: dict[tuple[str, str], list[Dependency]],
                    p: _Paint) -> list[str]:
    site = _frame(f)
    head = f"  {f.go_api or ('(from static facts)' if not f.evidence else '(no Go call)')}" \
        + (f" at {site}" if site else "")
    out = [p.bold(head) + (f"  [allowed: {f.allowed}]" if f.allowed else "")]
    out += _wrap(f.explanation, "    ")
    # evidence -> (Go API, user frame) -> C function -> dependency, counts per site
    tree: dict[tuple[str | None, str], dict[str, list[tuple[Dependency, Caller]]]] = {}
    for e in f.evidence:
        found = next(((d, c) for d in deps.get((e.path, e.result), ()) for c in d.callers
                      if c.first_seq == e.seq), None)
        if found is None:
            continue
        d, c = found
        tree.setdefault((c.go_api, c.site), {}).setdefault(
            c.c_function or c.via, []).append((d, c))
    for (api, csite), by_cfn in tree.items():
        indent = "    "
        if (api, csite) != (f.go_api, site) or len(tree) > 1:
            api = api or "(no Go call)"
            out.append(f"    {api}" + (f" at {csite}" if csite else ""))
            indent = "      "
        for cfn, items in by_cfn.items():
            out.append(f"{indent}{cfn}")
            width = max(len(d.path) for d, _ in items)
            for d, c in items:
                out.append(f"{indent}  {d.path:<{width}}  {_status(d, c.count)}  "
                           f"(seq {c.first_seq})")
    if f.missing:
        out.append(f"    missing: {', '.join(f.missing)}")
    fix_lines = f.fix.splitlines()
    out.append(f"    fix: {fix_lines[0]}")
    out += [f"      {line}" for line in fix_lines[1:]]
    return out


def _frame(f: Finding) -> str:
    uf = f.user_frame
    if uf is None:
        return ""
    return f"{os.path.basename(uf.file)}:{uf.line}" if uf.file else (uf.function or "")


def _status(d: Dependency, count: int) -> str:
    times = f" x{count}" if count > 1 else ""
    if d.searched and d.result != "ok":
        return f"{d.result}: not found in {len(d.searched)} places"
    if d.searched:
        return f"{d.result}{times} (after {d.misses} misses)"
    return f"{d.result}{times}"


def _other_dependencies(a: Analysis, p: _Paint) -> list[str]:
    """Hidden dependencies and run-time files no finding covers, by Go API and site."""
    covered = {(e.path, e.result, e.seq) for f in a.findings for e in f.evidence}
    rest = [d for d in a.dependencies
            if not any((d.path, d.result, c.first_seq) in covered for c in d.callers)
            and d.cls in (DependencyClass.HIDDEN, DependencyClass.RUNTIME_FILE)]
    if not rest:
        return []
    out = ["", p.bold("OTHER DEPENDENCIES (no finding)")]
    groups: dict[tuple[str, str, str], list[tuple[Dependency, Caller]]] = {}
    for d in rest:
        for c in d.callers:
            key = (c.go_api or f"({c.via})", c.site, c.c_function or c.via)
            groups.setdefault(key, []).append((d, c))
    for (api, site, cfn), items in groups.items():
        out.append(f"  {api}" + (f" at {site}" if site else "") + f" -> {cfn}")
        for d, c in items:
            out.append(f"      {d.cls.value:<12} {d.path}  {_status(d, c.count)}")
    return out


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=False) or [indent.rstrip()]
