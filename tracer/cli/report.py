"""`cgotrace report TRACE`: re-read a saved trace and print the run summary (or --json)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

import click

from tracer.model import Access, Attribution, ExitStatus


def caller_of(at: Attribution) -> dict[str, Any]:
    """What the summary says about the code behind an access (first access of each kind)."""
    uf = at.user_frame
    return {"via": at.via.value, "go_api": at.go_api, "c_function": at.c_function,
            "user_frame": (f"{os.path.basename(uf.file)}:{uf.line}" if uf and uf.file
                           else (uf.function if uf else None))}


def hidden_entry(path: str, result: str, kind: str, count: int,
                 caller: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": path, "result": result, "kind": kind, "count": count}
    if caller is not None:
        entry["caller"] = caller
    return entry


def summarize(accesses: Iterable[Access], status: ExitStatus | None,
              truncated: bool = False) -> dict[str, Any]:
    """Counts by kind, and the hidden dependencies: (path, result) -> times seen, with the
    Go API / via / user frame of the first access that carries an attribution."""
    by_kind: Counter[str] = Counter()
    hidden: Counter[tuple[str, str, str]] = Counter()
    callers: dict[tuple[str, str, str], dict[str, Any]] = {}
    unsymbolized: dict[str, None] = {}
    total = 0
    for a in accesses:
        total += 1
        by_kind[a.kind.value] += 1
        if a.hidden:
            key = (a.path, a.result, a.kind.value)
            hidden[key] += 1
            if key not in callers and a.attribution is not None:
                callers[key] = caller_of(a.attribution)
        if a.attribution is not None and a.same_as is None:
            for note in a.attribution.unsymbolized:
                unsymbolized.setdefault(note)
    return {
        "accesses": total,
        "by_kind": dict(sorted(by_kind.items())),
        "hidden": [hidden_entry(p, r, k, n, callers.get((p, r, k)))
                   for (p, r, k), n in sorted(hidden.items(), key=lambda x: (x[0][2], x[0][0]))],
        "unsymbolized": list(unsymbolized),
        "exit": status.to_dict() if status is not None else None,
        "truncated": truncated,
    }


def describe_caller(caller: dict[str, Any] | None) -> str:
    """'<- os/user.LookupId via cgo getpwuid_r at main.go:17' (empty without attribution)."""
    if not caller:
        return ""
    via = caller.get("via")
    if via == "loader":
        return "<- loader"
    if via == "exec":
        return ""
    parts = ["<-", caller.get("go_api") or "?", "via", str(via)]
    if caller.get("c_function"):
        parts.append(caller["c_function"])
    if caller.get("user_frame"):
        parts += ["at", caller["user_frame"]]
    return " ".join(parts)


def render_summary(summary: dict[str, Any], limit: int = 40) -> str:
    lines = []
    kinds = ", ".join(f"{k} {n}" for k, n in summary["by_kind"].items()) or "none"
    lines.append(f"cgotrace: {summary['accesses']} accesses ({kinds})")
    hidden = summary["hidden"]
    if hidden:
        lines.append(f"cgotrace: {len(hidden)} hidden dependencies (readelf does not show them):")
        shown = hidden[:limit]
        width = max(len(h["path"]) for h in shown)
        for h in shown:
            times = f"x{h['count']}" if h["count"] > 1 else ""
            status = f"{h['result']} {times}".rstrip()
            line = f"  {h['kind']:<15} {h['path']:<{width}}  {status:<10} "
            lines.append((line + describe_caller(h.get("caller"))).rstrip())
        if len(hidden) > limit:
            lines.append(f"  ... and {len(hidden) - limit} more (--json, or the trace file)")
    else:
        lines.append("cgotrace: no hidden dependencies")
    for note in summary.get("unsymbolized", []):
        lines.append(f"cgotrace: unsymbolized: {note}")
    ex = summary.get("exit")
    if ex is not None and "signal" in ex:
        where = f" at {ex['fault_address']}" if ex.get("fault_address") else ""
        lines.append(f"cgotrace: program killed by {ex.get('signal_name')}{where}")
    if summary.get("truncated"):
        lines.append("cgotrace: the trace is incomplete (the tracer stopped before the program "
                     "ended)")
    return "\n".join(lines)


@click.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def report(trace: str, as_json: bool) -> None:
    """Re-read a saved trace file (from `cgotrace run --output`) and summarize it."""
    from tracer.recorder import exit_status, read_trace

    t = read_trace(trace)
    summary = summarize(t.accesses, exit_status(t), t.truncated)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(render_summary(summary))
