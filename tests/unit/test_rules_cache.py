"""The packaged rules files are parsed once per edit: a JSON copy in the user's cache
(probes/knowledge.py), keyed by the TOML file's size, mtime and inode."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from probes import knowledge


@pytest.fixture
def rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CGOTRACE_NO_CACHE", raising=False)
    copy = tmp_path / "rules"
    shutil.copytree(knowledge.RULES_DIR, copy)
    monkeypatch.setattr(knowledge, "RULES_DIR", copy)
    return copy


def _cached(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "xdg" / "cgotrace" / "rules").glob("paths.toml-*.json"))


def test_a_second_load_reads_the_parsed_copy_and_an_edit_replaces_it(
        rules: Path, tmp_path: Path) -> None:
    first = knowledge._load("paths.toml")
    assert first["path"] and first["path"][0]["pattern"].startswith("/")
    (copy,) = _cached(tmp_path)
    assert json.loads(copy.read_text()) == first
    copy.write_text(json.dumps({"path": [], "marker": True}))
    assert knowledge._load("paths.toml") == {"path": [], "marker": True}  # read, not parsed
    toml = rules / "paths.toml"
    toml.write_text(toml.read_text() + "\n")  # an edit: another size and mtime
    os.utime(toml, ns=(1, 1))
    again = knowledge._load("paths.toml")
    assert "marker" not in again and again == first
    assert len(_cached(tmp_path)) == 1  # the stale copy is gone


def test_no_cache_switch_parses_every_time(rules: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CGOTRACE_NO_CACHE", "1")
    assert knowledge._load("paths.toml")["path"]
    assert _cached(tmp_path) == []


def test_an_unwritable_cache_still_gives_the_rules(rules: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert knowledge._load("paths.toml")["path"]
