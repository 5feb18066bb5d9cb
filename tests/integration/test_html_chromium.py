"""The HTML graph in a real browser: Debian's chromium, headless, in a network namespace of
its own (nothing can leave the machine). `--dump-dom` prints the DOM after the page's
script ran; the nodes exist only if the script drew them from the embedded data."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from tests.integration.chromium import dump_dom, parse
from tests.reporting_data import WEIRD, cgo_analysis
from tracer.reporters.graph import build_graph
from tracer.reporters.html import render_html

pytestmark = pytest.mark.netns


def edges(dom: str) -> set[tuple[str, str]]:
    """(src, dst) of the highlighted edges in a dumped DOM."""
    out = set()
    for tag in re.findall(r"<path [^>]*>", dom):
        if re.search(r'class="[^"]*\bhot\b', tag):
            src = re.search(r'data-src="([^"]*)"', tag)
            dst = re.search(r'data-dst="([^"]*)"', tag)
            assert src and dst
            out.add((html.unescape(src.group(1)), html.unescape(dst.group(1))))
    return out


def test_page_draws_every_node(tmp_path: Path) -> None:
    page = tmp_path / "graph.html"
    page.write_text(render_html(cgo_analysis()), encoding="utf-8")
    dom = dump_dom(page, tmp_path)
    nodes = parse(dom)
    assert dom.count('class="edge ') == len(build_graph(cgo_analysis()).edges)
    assert edges(dom) == set()
    expected = set(build_graph(cgo_analysis()).nodes)
    assert set(nodes) == expected
    for node_id in ("api:os/user.LookupId", "api:os/user.LookupGroup", "c:getpwuid_r",
                    "c:getgrnam_r", "dep:/etc/nsswitch.conf",
                    "dep:/lib/x86_64-linux-gnu/libnss_systemd.so.2", "dep:" + WEIRD):
        assert node_id in nodes
    assert "layer-cfunc" in str(nodes["c:getpwuid_r"]["class"])
    assert "cls-hidden" in str(nodes["dep:/etc/nsswitch.conf"]["class"])
    assert "missing" in str(nodes["dep:/var/run/nscd/socket"]["class"])
    assert ("label", WEIRD) in nodes["dep:" + WEIRD]["texts"]  # type: ignore[operator]
    assert all(n["expanded"] == "false" for n in nodes.values())


def test_clicking_a_node_shows_its_stacks(tmp_path: Path) -> None:
    """A click (a real DOM event, dispatched by a script appended to a copy of the page)
    expands the node: its call sites and every frame of their stacks appear."""
    click = ("<script>document.querySelector('[data-node=\"dep:/etc/nsswitch.conf\"]')"
             ".dispatchEvent(new MouseEvent('click', {bubbles: true}));</script></body>")
    page = tmp_path / "clicked.html"
    page.write_text(render_html(cgo_analysis()).replace("</body>", click), encoding="utf-8")
    dom = dump_dom(page, tmp_path)
    nodes = parse(dom)
    ns = nodes["dep:/etc/nsswitch.conf"]
    assert ns["expanded"] == "true"
    texts = ns["texts"]
    assert isinstance(texts, list)
    sites = [t for c, t in texts if c == "site"]
    frames = [t for c, t in texts if c == "frame"]
    assert sites == ["main.go:19  os/user.LookupId -> getpwuid_r  x3",
                     "main.go:28  os/user.LookupGroup -> getgrnam_r  x1"]
    assert frames[:5] == ["__GI___open64_nocancel", "getpwuid_r",
                          "runtime.asmcgocall asm_amd64.s:918",
                          "os/user.LookupId cgo_lookup_unix.go:40", "main.main main.go:19"]
    assert "main.main main.go:28" in frames
    # the expanded node's edges are highlighted, and only those
    hot = edges(dom)
    assert hot == {("c:getpwuid_r", "dep:/etc/nsswitch.conf"),
                   ("c:getgrnam_r", "dep:/etc/nsswitch.conf")}
    others = [n for k, n in nodes.items() if k != "dep:/etc/nsswitch.conf"]
    assert all(n["expanded"] == "false" for n in others)
    assert not any(c == "frame" for n in others for c, _ in n["texts"])  # type: ignore[attr-defined]
