"""The static-facts cache: keyed by build id, bounded, and silent when unusable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tracer.binary import factcache
from tracer.recording.header import static_facts

TRUE = shutil.which("true") or "/bin/true"


@pytest.fixture()
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CGOTRACE_NO_CACHE", raising=False)
    return tmp_path / "xdg" / "cgotrace" / "facts"


def test_build_id_is_read_from_the_notes() -> None:
    bid = factcache.build_id(os.path.realpath(TRUE))
    assert bid is not None and bid.startswith("gnu-") and len(bid) > 20
    assert factcache.build_id("/etc/hostname") is None


def test_second_lookup_is_a_hit_with_the_same_facts(cache_home: Path) -> None:
    first = static_facts(TRUE, None, None)
    files = list(cache_home.glob("*.json"))
    assert len(files) == 1
    second = static_facts(TRUE, None, None)
    # the miss inspected the binary; the hit did not (it has no full facts to show)
    assert first.facts is not None and second.facts is None
    static1, closure1 = first.summary, first.closure
    static2, closure2 = second.summary, second.closure
    assert static2 == static1
    assert closure1 is not None and closure2 is not None
    assert (closure2.interpreter, closure2.paths, closure2.names) == \
        (closure1.interpreter, closure1.paths, closure1.names)
    # a different root is a different entry
    static_facts(TRUE, "/", "/bin/true")
    assert len(list(cache_home.glob("*.json"))) == 2


def test_unwritable_cache_degrades_to_no_cache(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails, as root too
    facts = static_facts(TRUE, None, None)
    static, closure = facts.summary, facts.closure
    assert closure is not None and static.get("interpreter")
    factcache.store("k", {"x": 1})
    assert factcache.load("k") is None


def test_corrupt_entry_is_ignored(cache_home: Path) -> None:
    key = factcache.cache_key(TRUE, None, None)
    assert key is not None
    cache_home.mkdir(parents=True)
    (cache_home / f"{key}.json").write_text("{not json")
    facts = static_facts(TRUE, None, None)
    closure = facts.closure
    assert closure is not None
    assert factcache.load(key) is not None  # rewritten by the miss


def test_size_bound_removes_the_oldest(cache_home: Path) -> None:
    cache_home.mkdir(parents=True)
    for i in range(5):
        p = cache_home / f"{i}.json"
        p.write_text("x" * 1000)
        os.utime(p, ns=(i * 10**9, i * 10**9))
    factcache._prune(cache_home, limit=2500)
    assert sorted(p.name for p in cache_home.glob("*.json")) == ["3.json", "4.json"]


def test_no_cache_switch(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CGOTRACE_NO_CACHE", "1")
    static_facts(TRUE, None, None)
    assert not cache_home.exists()


def test_key_follows_the_roots_lookup_configuration(tmp_path: Path) -> None:
    """The header's nsswitch sources come from the root: editing its nsswitch.conf (or its
    ld.so.cache) must not serve facts computed before the edit."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    conf = root / "etc" / "nsswitch.conf"
    conf.write_text("passwd: files\n")
    before = factcache.cache_key(TRUE, str(root), "/bin/true")
    conf.write_text("passwd: files systemd\n")
    os.utime(conf, ns=(1, 1))
    after = factcache.cache_key(TRUE, str(root), "/bin/true")
    assert before is not None and after is not None and before != after
    (root / "etc" / "ld.so.cache").write_bytes(b"x")
    assert factcache.cache_key(TRUE, str(root), "/bin/true") != after


def test_key_follows_the_code_that_computes_the_facts() -> None:
    """Every file of the code stamp exists (a moved module must not silently drop out of
    it: an edited cgotrace would then read entries an older one wrote)."""
    code = Path(factcache.__file__).resolve().parents[1]
    assert [f for f in factcache.CODE_FILES if not (code / f).is_file()] == []
    assert "-" not in factcache._code_stamp().split(",")
