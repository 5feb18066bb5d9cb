"""Headless Chromium as the oracle for the HTML graph: `dump_dom(page)` is the DOM after the
page's scripts ran; `parse(dom)` gives the drawn nodes. Chromium runs in a network
namespace of its own, so nothing can leave the machine whatever the page does."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest


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
