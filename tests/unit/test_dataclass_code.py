"""The CLI's table of compiled dataclass methods (tracer/cli/dataclass_code.py): same methods,
one compile per source text, kept across runs, and a bad file costs nothing but the compile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tracer.cli.dataclass_code import CodeCache

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "def __create_fn__(x):\n def f(self):\n  return self + x\n return f"


def test_a_source_is_compiled_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "code.marshal"
    first = CodeCache(path)
    ns: dict[str, object] = {}
    first.exec(SOURCE, {}, ns)
    assert first.added and SOURCE in first.codes
    code = first.codes[SOURCE]
    ns2: dict[str, object] = {}
    first.exec(SOURCE, {}, ns2)
    assert first.codes[SOURCE] is code  # no second compile
    first.save()

    again = CodeCache(path)
    assert set(again.codes) == {SOURCE}
    ns3: dict[str, object] = {}
    again.exec(SOURCE, {}, ns3)
    assert not again.added
    make = ns3["__create_fn__"]
    assert make(2)(40) == 42  # type: ignore[operator]


def test_an_unreadable_file_is_an_empty_table(tmp_path: Path) -> None:
    path = tmp_path / "code.marshal"
    path.write_bytes(b"not marshal data")
    assert CodeCache(path).codes == {}
    assert CodeCache(tmp_path / "missing").codes == {}


def test_nothing_new_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "code.marshal"
    CodeCache(path).save()
    assert not path.exists()


_PROGRAM = """
from tracer.cli.dataclass_code import install
cache = install()
from dataclasses import dataclass, field, replace

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default=())

p = Point(1, tags=("a",))
print(repr(p), p == Point(1, 0, ("a",)), hash(p) == hash(Point(1, 0, ("a",))),
      replace(p, y=5).y, len(cache.used) > 0, cache.added)
try:
    p.x = 3
except Exception as e:
    print(type(e).__name__)
"""


def test_dataclasses_behave_the_same_from_the_table(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("CGOTRACE_NO_CACHE", None)

    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", _PROGRAM], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout
        return out.splitlines()

    cold, warm = run(), run()
    expected = "Point(x=1, y=0, tags=('a',)) True True 5 True"
    assert cold == [f"{expected} True", "FrozenInstanceError"]
    assert warm == [f"{expected} False", "FrozenInstanceError"]  # nothing compiled anew
    assert list((tmp_path / "cgotrace" / "code").glob("dataclasses-*.marshal"))
