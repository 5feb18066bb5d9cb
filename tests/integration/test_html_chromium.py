"""The HTML graph in a real browser: Debian's chromium, headless, in a network namespace of
its own (nothing can leave the machine). `--dump-dom` prints the DOM after the page's
script ran; the nodes exist only if the script drew them from the embedded data."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.reporting_data import WEIRD, cgo_analysis
from tracer.reporters.graph import build_graph
from tracer.reporters.html import render_html

pytestmark = pytest.mark.netns


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium not installed (make system-deps as root installs it)")


def dump_dom(page: Path, tmp: Path) -> str:
    """The DOM of `page` after its scripts ran, from headless chromium without network."""
    netns = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-r", "--net"]
    cmd = [*netns, chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", f"--user-data-dir={tmp / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class Nodes(HTMLParser):
    """The drawn graph nodes: data-node -> attributes and the texts inside the <g>."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, dict[str, object]] = {}
        self._stack: list[str | None] = []
        self._text_class: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "g":
            node = a.get("data-node")
            if node is not None:
                self.nodes[node] = {"class": a.get("class") or "",
                                    "expanded": a.get("aria-expanded"), "texts": []}
            self._stack.append(node)
        elif tag == "text":
            self._text_class = a.get("class") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "g" and self._stack:
            self._stack.pop()
        elif tag == "text":
            self._text_class = None

    def handle_data(self, data: str) -> None:
        current = next((n for n in reversed(self._stack) if n), None)
        if current is not None and self._text_class is not None:
            texts = self.nodes[current]["texts"]
            assert isinstance(texts, list)
            texts.append((self._text_class, data))


def parse(dom: str) -> dict[str, dict[str, object]]:
    p = Nodes()
    p.feed(dom)
    return p.nodes


def test_page_draws_every_node(tmp_path: Path) -> None:
    page = tmp_path / "graph.html"
    page.write_text(render_html(cgo_analysis()), encoding="utf-8")
    nodes = parse(dump_dom(page, tmp_path))
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
    nodes = parse(dump_dom(page, tmp_path))
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
    others = [n for k, n in nodes.items() if k != "dep:/etc/nsswitch.conf"]
    assert all(n["expanded"] == "false" for n in others)
    assert not any(c == "frame" for n in others for c, _ in n["texts"])  # type: ignore[attr-defined]
