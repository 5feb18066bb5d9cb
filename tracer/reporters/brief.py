"""The short run summary: access counts by kind and the hidden dependencies, one line each
(the dict built by `tracer.recording.summary.SummaryBuilder`)."""

from __future__ import annotations

from typing import Any


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
    elif caller.get("no_user_frame"):
        parts += ["in", caller["no_user_frame"]]
    return " ".join(parts)


def _status(h: dict[str, Any]) -> str:
    times = f" x{h['count']}" if h["count"] > 1 and not h.get("not_found") else ""
    if h.get("not_found"):
        return f"{h['result']}: not found in {len(h['searched'])} places"
    if h.get("misses"):
        return f"{h['result']}{times} (after {h['misses']} misses)"
    if h.get("unobserved"):
        return f"{h['result']}{times} ({h['unobserved']} repeats unstopped)"
    return f"{h['result']}{times}"


def render_summary(summary: dict[str, Any], limit: int = 40) -> str:
    lines = []
    kinds = ", ".join(f"{k} {n}" for k, n in summary["by_kind"].items()) or "none"
    lines.append(f"cgotrace: {summary['accesses']} accesses ({kinds})")
    if summary.get("unobserved"):
        lines.append(f"cgotrace: {summary['unobserved']} of them are repeats that ran without "
                     "a stop: result copied from an observed access (observed: false)")
    hidden = summary["hidden"]
    if hidden:
        lines.append(f"cgotrace: {len(hidden)} hidden dependencies (readelf does not show them):")
        shown = hidden[:limit]
        width = max(len(h["path"]) for h in shown)
        swidth = max(len(_status(h)) for h in shown)
        for h in shown:
            line = f"  {h['kind']:<15} {h['path']:<{width}}  {_status(h):<{swidth}}  "
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
