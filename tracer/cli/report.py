"""`cgotrace report TRACE`: re-read a saved trace and print the run summary (or --json)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import click

from tracer.model import Access, ExitStatus


def summarize(accesses: Iterable[Access], status: ExitStatus | None,
              truncated: bool = False) -> dict[str, Any]:
    """Counts by kind, and the hidden dependencies: (path, result) -> times seen."""
    by_kind: Counter[str] = Counter()
    hidden: Counter[tuple[str, str, str]] = Counter()
    total = 0
    for a in accesses:
        total += 1
        by_kind[a.kind.value] += 1
        if a.hidden:
            hidden[(a.path, a.result, a.kind.value)] += 1
    return {
        "accesses": total,
        "by_kind": dict(sorted(by_kind.items())),
        "hidden": [{"path": p, "result": r, "kind": k, "count": n}
                   for (p, r, k), n in sorted(hidden.items(), key=lambda x: (x[0][2], x[0][0]))],
        "exit": status.to_dict() if status is not None else None,
        "truncated": truncated,
    }


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
            lines.append(f"  {h['kind']:<15} {h['path']:<{width}}  {h['result']} {times}".rstrip())
        if len(hidden) > limit:
            lines.append(f"  ... and {len(hidden) - limit} more (--json, or the trace file)")
    else:
        lines.append("cgotrace: no hidden dependencies")
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
