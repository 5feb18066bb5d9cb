"""Layers point one way (docs/architecture.md): read every module's imports from its AST."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "tracer"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _modules(package: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT.parent)): _imports(p)
            for p in sorted((ROOT / package).rglob("*.py"))}


def _offenders(package: str, forbidden: tuple[str, ...],
               allow: tuple[str, ...] = ()) -> list[str]:
    return [f"{mod} imports {imp}" for mod, imps in _modules(package).items()
            if not mod.endswith(allow) for imp in imps if imp.startswith(forbidden)]


def test_only_engines_and_launch_call_ptrace() -> None:
    users = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = str(path.relative_to(ROOT.parent))
        if rel.startswith(("tracer/ptrace/", "tracer/engine/")) and "collector" not in rel:
            continue
        if any(i == "tracer.ptrace" or i.startswith("tracer.ptrace.")
               for i in _imports(path)):
            users.append(rel)
    assert users == ["tracer/session/launch.py"]


def test_unwind_and_symbols_do_not_import_upwards() -> None:
    upward = ("tracer.process", "tracer.engine", "tracer.attribution", "tracer.ptrace",
              "tracer.session", "tracer.loop")
    assert _offenders("unwind", upward) == []
    # symbols/maps.py is the compatibility alias of the moved module
    assert _offenders("symbols", upward, allow=("symbols/maps.py",)) == []
    assert _offenders("unwind", ("tracer.symbols.maps",)) == []


def test_process_layer_does_not_import_engines_or_the_attributor() -> None:
    assert _offenders("process", ("tracer.engine", "tracer.attribution", "tracer.ptrace",
                                  "tracer.session")) == []


def test_one_maps_parser() -> None:
    # a module naming a maps file and calling the builtin open() parses it itself
    opens_maps = re.compile(r"/maps\"[\s\S]*(?<![.\w])open\(|(?<![.\w])open\([\s\S]*/maps\"")
    readers = [str(p.relative_to(ROOT.parent)) for p in sorted(ROOT.rglob("*.py"))
               if opens_maps.search(p.read_text())]
    assert readers == ["tracer/process/maps.py"]
