"""DOT and HTML reporters on a hand-built cgo user-lookup analysis (tests/reporting_data.py).
The HTML page is also rendered in a real browser: tests/integration/test_html_chromium.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.reporting_data import WEIRD, cgo_analysis, empty_analysis
from tracer.reporters.dot import quote, render_dot
from tracer.reporters.graph import build_graph
from tracer.reporters.html import render_html

_DOT_ID = r'"(?:[^"\\]|\\.)*"'


def test_graph_layers_and_edges() -> None:
    g = build_graph(cgo_analysis())
    layers = {n.id: n.layer for n in g.nodes.values()}
    assert layers["api:os/user.LookupId"] == "api"
    assert layers["c:getpwuid_r"] == "cfunc"
    assert layers["dep:/etc/nsswitch.conf"] == "dep"
    assert layers["api:loader"] == "api"
    # runtime-internal files are not drawn; the loader's files hang from `loader`
    assert "dep:/proc/self/maps" not in layers
    assert ("api:os/user.LookupId", "c:getpwuid_r") in g.edges
    assert ("c:getpwuid_r", "dep:/lib/x86_64-linux-gnu/libnss_systemd.so.2") in g.edges
    assert ("c:getgrnam_r", "dep:/etc/nsswitch.conf") in g.edges
    assert ("api:loader", "dep:/lib64/ld-linux-x86-64.so.2") in g.edges
    assert g.edges[("c:getpwuid_r", "dep:/etc/nsswitch.conf")].count == 3
    assert g.program_files == "12 program files in 2 directories (not drawn)"


def test_graph_sites_keep_call_sites_apart() -> None:
    g = build_graph(cgo_analysis())
    api = g.nodes["api:os/user.LookupId"]
    assert [(s.user_frame, s.count) for s in api.sites] == [("main.go:19", 12),
                                                            ("main.go:22", 1)]
    ns = g.nodes["dep:/etc/nsswitch.conf"]
    assert [(s.user_frame, s.go_api, s.c_function) for s in ns.sites] == [
        ("main.go:19", "os/user.LookupId", "getpwuid_r"),
        ("main.go:28", "os/user.LookupGroup", "getgrnam_r")]
    assert ns.sites[0].stack[-1] == "main.main main.go:19"
    assert ns.findings == ["nss-modules"] and ns.severity == "warning"
    nscd = g.nodes["dep:/var/run/nscd/socket"]
    assert nscd.missing and nscd.severity is None  # the only finding on it is allowed


def test_dot_structure() -> None:
    text = render_dot(cgo_analysis())
    assert text.startswith("digraph cgotrace {") and text.endswith("}\n")
    declared = set(re.findall(rf"^\s+({_DOT_ID}) \[label=", text, re.M))
    edges = re.findall(rf"^\s+({_DOT_ID}) -> ({_DOT_ID}) \[", text, re.M)
    assert len(edges) == len(build_graph(cgo_analysis()).edges)
    for src, dst in edges:
        assert src in declared and dst in declared
    assert quote("dep:" + WEIRD) in declared
    assert '"dep:/etc/we\\"ird</script><b>\u00e9.conf"' in declared
    assert text.count("{") == text.count("}")


def test_dot_quote() -> None:
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="graphviz not installed (make system-deps as root)")
def test_graphviz_accepts_dot() -> None:
    """Graphviz itself as the oracle: it parses the file and draws every node."""
    proc = subprocess.run(["dot", "-Tsvg"], input=render_dot(cgo_analysis()),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not even a warning
    assert proc.stdout.count('class="node"') == len(build_graph(cgo_analysis()).nodes)
    assert "getpwuid_r" in proc.stdout


def _embedded(page: str) -> dict[str, object]:
    m = re.search(r'<script type="application/json" id="cgotrace-data">(.*?)</script>',
                  page, re.S)
    assert m is not None
    data: dict[str, object] = json.loads(m.group(1))
    return data


def test_html_is_self_contained() -> None:
    page = render_html(cgo_analysis())
    # nothing to fetch: no src/href attributes, no URL but the SVG namespace name
    assert not re.search(r"\b(src|href)\s*=", page)
    urls = set(re.findall(r"[a-z]+://[^\s\"'<>)]*", page))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in page  # the CSP forbids loading anything anyway
    assert "@import" not in page and "url(" not in page


def test_html_escapes_the_data() -> None:
    page = render_html(cgo_analysis())
    # `</script>` in a path must not close the data element: exactly two closings plus
    # the page's own script
    assert page.count("</script>") == 2
    data = _embedded(page)
    labels = {n["label"] for n in data["nodes"]}  # type: ignore[attr-defined,index]
    assert WEIRD in labels
    assert "&lt;title&gt;" in page and "<title>\"" not in page  # finding title escaped


def test_html_findings_without_script() -> None:
    page = render_html(cgo_analysis())
    assert 'data-finding="nss-modules"' in page
    assert "Fix: build with -tags osusergo (or CGO_ENABLED=0)" in page
    assert "allowed: no nscd in our images" in page


def test_empty_analysis_renders() -> None:
    assert "digraph" in render_dot(empty_analysis())
    page = render_html(empty_analysis())
    assert _embedded(page)["nodes"] == []
    assert "No findings." in page
