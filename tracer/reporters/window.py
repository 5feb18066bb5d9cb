"""What the text and HTML reports say around the findings: how the trace came to be (an
attach's window and how it ended) and the program's own network traffic.

An attach sees a program that was already running, for a while: its report names the
process, the window (start, end, how it ended), and says "still running at detach" or that
cgotrace died while attached, so nobody reads the end of the attach as the program's exit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from probes.records import Analysis

TRAFFIC_ADDRESSES = 4  # addresses named on the traffic line


def stamp(t: Any) -> str:
    """Unix seconds as UTC ISO 8601 ('2024-05-01T12:00:01Z'); '?' when not known."""
    if not isinstance(t, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def attach_status(analysis: Analysis) -> str | None:
    """How an attach ended, for the headline: 'still running at detach (...)', 'cgotrace
    died while attached ...', 'process exited with code 3'; None for a launched program."""
    a = analysis.attach
    if a is None:
        return None
    ended = str(a.get("ended") or "ended")
    if a.get("tracer_died"):
        return ended
    if a.get("detached"):
        return f"still running at detach ({ended})"
    return ended


def attach_window(analysis: Analysis) -> str | None:
    """'attached to pid 4242 (caddy) from 2024-...Z to 2024-...Z (3.0 s)'; for a trace without
    an exit line the window ends at the last record seen."""
    a = analysis.attach
    if a is None:
        return None
    start, end = a.get("start_time"), a.get("end_time")
    name = f" ({a['name']})" if a.get("name") else ""
    if isinstance(end, (int, float)):
        span = f" ({end - start:.1f} s)" if isinstance(start, (int, float)) else ""
        until = f"to {stamp(end)}{span}"
    else:
        until = f"to an unknown end (last record {stamp(a.get('last_seen'))})"
    return f"attached to pid {a.get('pid')}{name} from {stamp(start)} {until}"


def traffic_line(analysis: Analysis) -> str | None:
    """'program traffic: 2219 connects to 1 address: 127.0.0.1:8080 x2219 (...)': the
    program's own connects (kind `network`), which are not dependencies; None without any."""
    conns = analysis.connections
    if not conns:
        return None
    total = sum(c.count for c in conns) + analysis.connections_more
    addrs = len(conns)
    parts = []
    for c in conns[:TRAFFIC_ADDRESSES]:
        errs = ", ".join(f"{r} x{n}" for r, n in c.failures)
        parts.append(f"{c.address} x{c.count}" + (f" ({errs})" if errs else ""))
    more = len(conns) - TRAFFIC_ADDRESSES
    tail = (f" and {more} more" if more > 0 else "") + (
        f"; {analysis.connections_more} more to addresses not kept"
        if analysis.connections_more else "")
    return (f"program traffic: {total} connect{'s' if total != 1 else ''} to "
            f"{'more than ' if analysis.connections_more else ''}{addrs} "
            f"address{'es' if addrs != 1 else ''}: {', '.join(parts)}{tail} "
            "(the program's own connections, not dependencies)")
