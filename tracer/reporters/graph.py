"""The dependency graph that the DOT and HTML reporters draw: Go API -> C function ->
dependency, built once from an `Analysis`.

Three layers of nodes: the Go API that made the call (`os/user.LookupId`, or `loader` /
`exec` when no Go code did), the C function for cgo calls (`getpwuid_r`), and the
dependency (a path, with its result counts). A pure-Go access goes straight from its API
to the dependency. Nodes are shared: two APIs reaching `getaddrinfo` meet in one C node.

The program's own files are not drawn (they are counted per directory and shown as one
summary line), nor are /proc, /sys and /dev (runtime-internal, present in every image).
Each node carries what a person expands it to see: the call sites (user frame with a
count) and the stack of each.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracer.trace.model import DependencyClass, Finding, Frame

if TYPE_CHECKING:
    from probes.records import Analysis, Caller, Dependency

API, CFUNC, DEP = "api", "cfunc", "dep"
LAYERS = (API, CFUNC, DEP)
MAX_STACKS = 8  # stacks kept per node: enough to see every call site of a sample program
_SKIPPED_KINDS = frozenset({"runtime"})


@dataclass
class Site:
    """One (Go API, user frame) call site and what it reached: the expandable detail."""

    go_api: str | None
    user_frame: str | None  # main.go:19 (basename:line) or the function name
    via: str
    c_function: str | None
    count: int
    stack: tuple[str, ...]  # "function file:line" per frame, innermost first

    def to_dict(self) -> dict[str, Any]:
        return {"go_api": self.go_api, "user_frame": self.user_frame, "via": self.via,
                "c_function": self.c_function, "count": self.count,
                "stack": list(self.stack)}


@dataclass
class Node:
    id: str
    layer: str  # api | cfunc | dep
    label: str
    count: int = 0
    dependency_class: str | None = None  # dep nodes: declared | hidden | runtime-file
    kind: str | None = None  # dep nodes: AccessKind value
    results: dict[str, int] = field(default_factory=dict)  # dep nodes: result -> count
    missing: bool = False  # dep nodes: a finding says it is absent where the program ran
    findings: list[str] = field(default_factory=list)  # ids of findings naming this node
    severity: str | None = None  # the worst severity among those findings
    sites: list[Site] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "layer": self.layer, "label": self.label, "count": self.count,
                "class": self.dependency_class, "kind": self.kind, "results": self.results,
                "missing": self.missing, "findings": self.findings,
                "severity": self.severity, "sites": [s.to_dict() for s in self.sites]}


@dataclass
class Edge:
    src: str
    dst: str
    count: int
    via: str

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "count": self.count, "via": self.via}


@dataclass
class Graph:
    nodes: dict[str, Node]
    edges: dict[tuple[str, str], Edge]
    title: str
    program_files: str  # one line: "412 program files in 3 directories" or ""
    static: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "program_files": self.program_files,
                "static": self.static,
                "nodes": [n.to_dict() for n in self.nodes.values()],
                "edges": [e.to_dict() for e in self.edges.values()]}


_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}


def frame_text(frame: Frame) -> str:
    """`function file:line` (basename), or the module when nothing was symbolized."""
    name = frame.function or (f"?? in {frame.module}" if frame.module else "??")
    if frame.file:
        where = f"{os.path.basename(frame.file)}:{frame.line}" if frame.line else frame.file
        return f"{name} {where}"
    return name


def site_text(frame: Frame | None) -> str | None:
    """A user frame as people name a call site: `main.go:19`."""
    if frame is None:
        return None
    if frame.file:
        return f"{os.path.basename(frame.file)}:{frame.line}"
    return frame.function


def caller_stack(caller: Caller) -> tuple[Frame, ...]:
    """The stack recorded for a call site (its first access's), innermost first."""
    return caller.stack


def api_name(caller: Caller) -> str:
    """The node an access hangs from when no Go API was named: how it happened."""
    if caller.go_api:
        return caller.go_api
    via = caller.via
    return via if via in ("loader", "exec") else f"({via})"


def build_graph(analysis: Analysis, title: str = "") -> Graph:
    """The graph of `analysis`; see the module docstring for what is left out."""
    graph = Graph(nodes={}, edges={}, title=title or _title(analysis),
                  program_files=program_files_line(analysis), static=dict(analysis.static))
    for dep in analysis.dependencies:
        if _drawn(dep):
            _add_dependency(graph, dep)
    _mark_findings(graph, analysis.findings)
    return graph


def _drawn(dep: Dependency) -> bool:
    return dep.cls != DependencyClass.PROGRAM_FILE and dep.kind not in _SKIPPED_KINDS


def _node(graph: Graph, node_id: str, layer: str, label: str) -> Node:
    node = graph.nodes.get(node_id)
    if node is None:
        node = graph.nodes[node_id] = Node(id=node_id, layer=layer, label=label)
    return node


def _edge(graph: Graph, src: str, dst: str, count: int, via: str) -> None:
    edge = graph.edges.get((src, dst))
    if edge is None:
        graph.edges[(src, dst)] = Edge(src, dst, count, via)
    else:
        edge.count += count


def _add_dependency(graph: Graph, dep: Dependency) -> None:
    dnode = _node(graph, f"dep:{dep.path}", DEP, dep.path)
    # one node per path: a file Go read itself and a cgo caller needed too is hidden
    if dnode.dependency_class is None or dep.cls == DependencyClass.HIDDEN:
        dnode.dependency_class = dep.cls.value
    dnode.kind = dep.kind
    dnode.results[dep.result] = dnode.results.get(dep.result, 0) + dep.count
    dnode.count += dep.count
    if not dep.callers:
        _edge(graph, _node(graph, "api:(unattributed)", API, "(unattributed)").id,
              dnode.id, dep.count, "unknown")
    for caller in dep.callers:
        site = _site(caller)
        api = _node(graph, f"api:{api_name(caller)}", API, api_name(caller))
        api.count += caller.count
        _add_site(api, site)
        _add_site(dnode, site)
        if caller.c_function:
            cnode = _node(graph, f"c:{caller.c_function}", CFUNC, caller.c_function)
            cnode.count += caller.count
            _add_site(cnode, site)
            _edge(graph, api.id, cnode.id, caller.count, site.via)
            _edge(graph, cnode.id, dnode.id, caller.count, site.via)
        else:
            _edge(graph, api.id, dnode.id, caller.count, site.via)


def _site(caller: Caller) -> Site:
    stack = caller_stack(caller)
    return Site(go_api=caller.go_api, user_frame=site_text(caller.user_frame),
                via=caller.via, c_function=caller.c_function, count=caller.count,
                stack=tuple(frame_text(f) for f in stack))


def _add_site(node: Node, site: Site) -> None:
    """Sites fold by (Go API, user frame, C function): counts add, the first stack stays."""
    for known in node.sites:
        if (known.go_api, known.user_frame, known.c_function) == (
                site.go_api, site.user_frame, site.c_function):
            known.count += site.count
            return
    if len(node.sites) < MAX_STACKS:
        node.sites.append(dataclasses.replace(site))


def _mark_findings(graph: Graph, findings: Iterable[Finding]) -> None:
    for f in findings:
        for path in f.paths:
            node = graph.nodes.get(f"dep:{path}")
            if node is None:
                continue
            if f.id not in node.findings:
                node.findings.append(f.id)
            if path in f.missing:
                node.missing = True
            if f.allowed is None and (node.severity is None or _SEVERITY_RANK[
                    f.severity.value] < _SEVERITY_RANK[node.severity]):
                node.severity = f.severity.value


def _title(analysis: Analysis) -> str:
    binary = analysis.binary or (analysis.argv[0] if analysis.argv else None)
    name = os.path.basename(str(binary)) if binary else "program"
    go = analysis.static.get("go_version")
    return f"{name} ({go})" if go else name


def program_files_line(analysis: Analysis) -> str:
    """'412 program files in 3 directories' from Analysis.program_files, or ''."""
    pf = analysis.program_files
    if not pf.files:
        return ""
    files = "1 program file" if pf.files == 1 else f"{pf.files} program files"
    dirs = "1 directory" if len(pf.by_dir) == 1 else f"{len(pf.by_dir)} directories"
    return f"{files} in {dirs} (not drawn)"
