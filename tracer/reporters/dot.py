"""Graphviz DOT: Go API -> C function -> dependency, left to right, one rank per layer.

`dot -Tsvg report.dot > report.svg` draws it. Dependency nodes are coloured by class
(hidden red, run-time file amber, declared grey) and drawn dashed when missing; edge labels
carry the access count. Node ids are the graph's own (`api:...`, `c:...`, `dep:...`),
quoted, so any path is a valid id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracer.reporters.graph import API, CFUNC, DEP, Graph, Node, build_graph

if TYPE_CHECKING:
    from probes.records import Analysis

_CLASS_COLOUR = {"hidden": "#d62728", "runtime-file": "#e6a100", "declared": "#7f7f7f"}
_LAYER_SHAPE = {API: "box", CFUNC: "ellipse", DEP: "note"}
_LAYER_RANK = {API: "Go API", CFUNC: "C function", DEP: "dependency"}


def quote(text: str) -> str:
    """A DOT double-quoted string: backslash and quote escaped, newlines as \\n."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(analysis: Analysis) -> str:
    """The DOT text of `analysis`'s dependency graph (ends with a newline)."""
    return graph_to_dot(build_graph(analysis))


def graph_to_dot(graph: Graph) -> str:
    lines = ["digraph cgotrace {",
             f"  label={quote(_label(graph))}; labelloc=t;",
             "  rankdir=LR; node [fontname=\"monospace\", fontsize=10];"]
    for layer in (API, CFUNC, DEP):
        members = [n for n in graph.nodes.values() if n.layer == layer]
        if not members:
            continue
        # a plain subgraph (not a cluster): rank=same keeps each layer in one column
        lines.append(f"  subgraph {quote('layer_' + layer)} {{ rank=same;  "
                     f"// {_LAYER_RANK[layer]}")
        lines.extend(f"    {_node_line(n)}" for n in members)
        lines.append("  }")
    for e in graph.edges.values():
        style = ", style=dashed" if e.via not in ("cgo", "go") else ""
        lines.append(f"  {quote(e.src)} -> {quote(e.dst)} "
                     f"[label={quote(_count(e.count))}, tooltip={quote(e.via)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _label(graph: Graph) -> str:
    return graph.title + (f"\n{graph.program_files}" if graph.program_files else "")


def _count(n: int) -> str:
    return f"x{n}" if n != 1 else ""


def _node_line(node: Node) -> str:
    attrs = [f"label={quote(_node_label(node))}", f"shape={_LAYER_SHAPE[node.layer]}"]
    if node.layer == DEP:
        colour = _CLASS_COLOUR.get(node.dependency_class or "", "#7f7f7f")
        attrs.append(f"color={quote(colour)}")
        if node.missing:
            attrs.append("style=dashed")
    sites = "\n".join(" ".join(x for x in (s.user_frame, s.go_api or s.via, f"x{s.count}")
                               if x) for s in node.sites)
    if sites:
        attrs.append(f"tooltip={quote(sites)}")
    return f"{quote(node.id)} [{', '.join(attrs)}];"


def _node_label(node: Node) -> str:
    if node.layer != DEP:
        return node.label
    results = ", ".join(f"{r} x{n}" if n > 1 else r for r, n in sorted(node.results.items()))
    extra = [f"{node.dependency_class}: {results}"]
    if node.findings:
        extra.append(" ".join(node.findings))
    return "\n".join([node.label, *extra])


def render(analysis: Analysis, *, color: bool = False) -> str:
    """The `tracer.reporters.render` entry point (`color` is ignored: a file format)."""
    return render_dot(analysis)
