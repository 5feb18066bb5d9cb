"""A self-contained HTML page that draws the dependency graph (Go API -> C function ->
dependency) and lets a person expand a node to see its call sites and stacks.

Everything is inline: the graph as JSON in a `<script type="application/json">`, the
drawing code (plain DOM + SVG, no library) and the style. The page loads nothing: no
network, no CDN, no fonts. The findings are also written as plain HTML, so the page says
what matters even with scripts off. `tests/integration/test_html_chromium.py` renders it
in headless Chromium and checks the drawn nodes and the expansion.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from tracer.reporters import window
from tracer.reporters.graph import Graph, build_graph, site_text
from tracer.trace.model import Finding

if TYPE_CHECKING:
    from probes.records import Analysis


def render_html(analysis: Analysis) -> str:
    """The page for `analysis` (UTF-8 text, ends with a newline)."""
    graph = build_graph(analysis)
    return page(graph, analysis.findings, run_lines(analysis))


def run_lines(analysis: Analysis) -> list[str]:
    """How the trace came to be and the verdict: an attach's window and how it ended
    ("still running at detach"), or the program's exit; the verdict with its reasons and
    notes; the program's own traffic."""
    from probes.records import verdict

    out = []
    span = window.attach_window(analysis)
    if span is not None:
        out.append(f"{span}: {window.attach_status(analysis)}")
    elif analysis.exit:
        ex = analysis.exit
        out.append(f"killed by {ex['signal_name']}" if ex.get("signal_name")
                   else f"exit {ex.get('exit_code')}")
    v = verdict(analysis)
    out.append(f"verdict: {v.status}" + (f" ({'; '.join(v.reasons)})" if v.reasons else ""))
    out += list(v.notes)
    traffic = window.traffic_line(analysis)
    if traffic is not None:
        out.append(traffic)
    return out


def embed_json(data: Any) -> str:
    """JSON safe inside a <script> element: no `<` (so no `</script>`), ASCII only."""
    return json.dumps(data, ensure_ascii=True, sort_keys=True).replace("<", "\\u003c")


def page(graph: Graph, findings: tuple[Finding, ...], run: list[str] | None = None) -> str:
    esc = html.escape
    return _TEMPLATE.format(
        title=esc(graph.title),
        facts=esc(_facts(graph.static)),
        run="".join(f"<p class=\"run\">{esc(line)}</p>\n" for line in run or ()),
        program_files=esc(graph.program_files),
        findings=_findings_html(findings),
        data=embed_json(graph.to_dict()),
        style=_STYLE,
        script=_SCRIPT,
    )


def _facts(static: dict[str, Any]) -> str:
    parts = []
    if "cgo" in static:
        parts.append("cgo" if static.get("cgo") else "no cgo")
    if static.get("interpreter"):
        parts.append(f"interpreter {static['interpreter']}")
    needed = static.get("needed")
    if needed is not None:
        parts.append("NEEDED " + (", ".join(needed) if needed else "none"))
    if static.get("static"):
        parts.append("statically linked")
    return "; ".join(parts)


def _findings_html(findings: tuple[Finding, ...]) -> str:
    if not findings:
        return "<p class=\"none\">No findings.</p>"
    esc = html.escape
    items = []
    for f in findings:
        where = " ".join(x for x in (f.go_api, site_text(f.user_frame)) if x)
        allowed = (f" <span class=\"allowed\">allowed: {esc(f.allowed)}</span>"
                   if f.allowed else "")
        paths = "".join(f"<li><code>{esc(p)}</code>{' (missing)' if p in f.missing else ''}"
                        "</li>" for p in f.paths)
        items.append(
            f"<li class=\"finding sev-{esc(f.severity.value)}\" data-finding=\"{esc(f.id)}\">"
            f"<span class=\"sev\">{esc(f.severity.value)}</span> <b>{esc(f.id)}</b> "
            f"{esc(f.title)}{allowed}"
            + (f"<div class=\"where\">{esc(where)}</div>" if where else "")
            + f"<div class=\"explain\">{esc(f.explanation)}</div>"
            f"<div class=\"fix\">Fix: {esc(f.fix)}</div>"
            + (f"<ul class=\"paths\">{paths}</ul>" if paths else "")
            + "</li>")
    return "<ol class=\"findings\">" + "".join(items) + "</ol>"


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
.facts, .pf, .run { color: #555; margin: 0; }
#controls { margin: .6em 0; }
#graph { border: 1px solid #ddd; background: #fcfcfc; }
.node rect { stroke: #888; fill: #fff; rx: 4; cursor: pointer; }
.node.layer-api rect { fill: #e8f0fe; }
.node.layer-cfunc rect { fill: #f1f8e9; }
.node.cls-hidden rect { stroke: #d62728; stroke-width: 2; }
.node.cls-runtime-file rect { stroke: #e6a100; stroke-width: 2; }
.node.missing rect { stroke-dasharray: 5 3; }
.node:focus rect { outline: none; stroke: #1a73e8; stroke-width: 3; }
.node text { font: 12px monospace; fill: #222; pointer-events: none; }
.node text.site { fill: #1a5276; }
.node text.frame { fill: #555; font-size: 11px; }
.edge { fill: none; stroke: #999; }
.edge.via-cgo { stroke: #d62728; }
.edge.via-loader, .edge.via-exec { stroke-dasharray: 4 3; }
.edge.hot { stroke: #1a73e8; stroke-width: 3; }
.colhead { font: bold 12px system-ui, sans-serif; fill: #555; }
.findings li { margin: .4em 0; }
.sev { font-weight: bold; text-transform: uppercase; font-size: .8em; }
.sev-error .sev { color: #b00020; } .sev-warning .sev { color: #b26a00; }
.sev-info .sev { color: #1a5276; }
.where, .fix { font-family: monospace; } .fix { white-space: pre-wrap; }
.explain { color: #444; }
.allowed { color: #2e7d32; }
"""

# Layout: three columns (API, C function, dependency); rows ordered by the mean row of a
# node's parents so edges cross little. A node's height grows when it is expanded.
_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("cgotrace-data").textContent);
  var SVG = "http://www.w3.org/2000/svg";
  var LAYERS = ["api", "cfunc", "dep"], HEAD = {api: "Go API", cfunc: "C function",
    dep: "dependency"};
  var CH = 7.3, LINE = 15, PAD = 8, GAP = 10, COLGAP = 80, TOP = 30, INDENT = 16;
  var expanded = {};
  var byId = {};
  data.nodes.forEach(function (n) { byId[n.id] = n; });
  var parents = {};
  data.edges.forEach(function (e) { (parents[e.dst] = parents[e.dst] || []).push(e.src); });

  function order() {
    var row = {}, cols = {};
    LAYERS.forEach(function (layer) {
      var ns = data.nodes.filter(function (n) { return n.layer === layer; });
      ns.forEach(function (n) {
        var ps = (parents[n.id] || []).filter(function (p) { return p in row; });
        n._key = ps.length ? ps.reduce(function (s, p) { return s + row[p]; }, 0) / ps.length
                           : -1;
      });
      ns.sort(function (a, b) { return a._key - b._key || (a.label < b.label ? -1 : 1); });
      ns.forEach(function (n, i) { row[n.id] = i; });
      cols[layer] = ns;
    });
    return cols;
  }

  function lines(n) {
    var out = [{cls: "label", text: n.label}];
    if (n.layer === "dep") {
      var rs = Object.keys(n.results).sort().map(function (r) {
        return n.results[r] > 1 ? r + " x" + n.results[r] : r; });
      out.push({cls: "meta", text: (n["class"] || "") + ": " + rs.join(", ") +
                (n.findings.length ? "  [" + n.findings.join(" ") + "]" : "")});
    } else if (n.count > 1) {
      out[0].text += "  x" + n.count;
    }
    if (expanded[n.id]) {
      n.sites.forEach(function (s) {
        var head = (s.user_frame || "?") + "  " + (s.go_api || s.via) +
                   (s.c_function ? " -> " + s.c_function : "") + "  x" + s.count;
        out.push({cls: "site", text: head});
        if (!s.stack.length) out.push({cls: "frame", text: "(no stack recorded)"});
        s.stack.forEach(function (f) { out.push({cls: "frame", text: f}); });
      });
      if (!n.sites.length) out.push({cls: "frame", text: "(no attributed call)"});
    }
    return out;
  }

  function el(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }

  function draw() {
    var svg = document.getElementById("graph");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var cols = order(), x = PAD, pos = {}, height = 0;
    LAYERS.forEach(function (layer) {
      var ns = cols[layer];
      if (!ns.length) return;
      var width = 0;
      ns.forEach(function (n) {
        n._lines = lines(n);
        n._lines.forEach(function (l) {
          width = Math.max(width, l.text.length * CH + (l.cls === "frame" ? INDENT : 0)); });
      });
      width = Math.min(Math.max(width + 2 * PAD, 120), 720);
      var t = el("text", {x: x, y: TOP - 12, "class": "colhead"}, svg);
      t.textContent = HEAD[layer];
      var y = TOP;
      ns.forEach(function (n) {
        var h = n._lines.length * LINE + PAD;
        pos[n.id] = {x: x, y: y, w: width, h: h};
        y += h + GAP;
      });
      height = Math.max(height, y);
      x += width + COLGAP;
    });
    var edges = el("g", {"class": "edges"}, svg);
    data.edges.forEach(function (e) {
      var a = pos[e.src], b = pos[e.dst];
      if (!a || !b) return;
      var x1 = a.x + a.w, y1 = a.y + LINE * 0.7, x2 = b.x, y2 = b.y + LINE * 0.7;
      var hot = expanded[e.src] || expanded[e.dst];
      var p = el("path", {d: "M" + x1 + "," + y1 + " C" + (x1 + COLGAP / 2) + "," + y1 +
        " " + (x2 - COLGAP / 2) + "," + y2 + " " + x2 + "," + y2,
        "class": "edge via-" + e.via + (hot ? " hot" : ""), "data-src": e.src,
        "data-dst": e.dst,
        "stroke-width": 1 + Math.min(3, Math.log(e.count) / Math.LN10)}, edges);
      el("title", {}, p).textContent = e.via + " x" + e.count;
    });
    LAYERS.forEach(function (layer) {
      cols[layer].forEach(function (n) {
        var r = pos[n.id];
        var g = el("g", {"class": "node layer-" + n.layer + (n["class"] ? " cls-" +
          n["class"] : "") + (n.missing ? " missing" : "") + (expanded[n.id] ?
          " expanded" : ""), "data-node": n.id, tabindex: 0, role: "button",
          "aria-expanded": expanded[n.id] ? "true" : "false"}, svg);
        el("rect", {x: r.x, y: r.y, width: r.w, height: r.h}, g);
        n._lines.forEach(function (l, i) {
          var t = el("text", {x: r.x + PAD + (l.cls === "frame" ? INDENT : 0),
                              y: r.y + LINE * (i + 1) - 2,
                              "class": l.cls}, g);
          t.textContent = l.text;
        });
        g.addEventListener("click", function () { toggle(n.id); });
        g.addEventListener("keydown", function (ev) {
          if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(n.id); }
        });
      });
    });
    svg.setAttribute("width", x);
    svg.setAttribute("height", height + PAD);
    document.getElementById("counts").textContent = data.nodes.length + " nodes, " +
      data.edges.length + " edges";
  }

  function toggle(id) {
    if (expanded[id]) delete expanded[id]; else expanded[id] = true;
    draw();
    var again = document.querySelector('[data-node="' + CSS.escape(id) + '"]');
    if (again) again.focus();
  }

  document.getElementById("expand-all").addEventListener("click", function () {
    data.nodes.forEach(function (n) { expanded[n.id] = true; }); draw(); });
  document.getElementById("collapse-all").addEventListener("click", function () {
    expanded = {}; draw(); });
  window.cgotraceToggle = toggle;
  draw();
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>cgotrace: {title}</title>
<style>{style}</style>
</head>
<body>
<h1>cgotrace: {title}</h1>
<p class="facts">{facts}</p>
{run}<p class="pf">{program_files}</p>
<div id="controls"><button id="expand-all" type="button">Expand all</button>
<button id="collapse-all" type="button">Collapse all</button>
<span id="counts"></span> &middot; click a node to see its call sites and stacks</div>
<noscript><p>The graph needs JavaScript; the findings below do not.</p></noscript>
<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="0" height="0"></svg>
<h2>Findings</h2>
{findings}
<script type="application/json" id="cgotrace-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def render(analysis: Analysis, *, color: bool = False) -> str:
    """The `tracer.reporters.render` entry point (`color` is ignored: a file format)."""
    return render_html(analysis)
