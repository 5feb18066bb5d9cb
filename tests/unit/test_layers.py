"""Layers point one way (docs/architecture.md, "Rooms"): every module's imports, read from its
AST, checked against one table of which room may import which."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# room -> the rooms it may import. A room is a package under tracer/ (or probes/), or one of
# the few loose modules. Everything not listed for a room is an arrow upward or sideways.
_BASE = {"tracer.errors", "tracer.cachedir"}
ALLOWED: dict[str, set[str]] = {
    "tracer.cli": {"tracer.commands", "tracer.gate", "tracer.reporters", "tracer.sandbox",
                   "tracer.attribution", "tracer.process", "tracer.binary", "probes",
                   "tracer.trace"},
    "tracer.pytest_plugin": {"tracer.gate", "tracer.reporters", "probes", "tracer.trace"},
    "tracer.commands": {"tracer.gate", "tracer.reporters", "tracer.sandbox",
                        "tracer.recording", "tracer.attribution", "tracer.engine",
                        "tracer.process", "tracer.binary", "probes", "tracer.trace"},
    "tracer.gate": {"tracer.reporters", "probes", "tracer.trace"},
    "tracer.reporters": {"probes", "tracer.trace"},
    "tracer.sandbox": {"tracer.ptrace", "tracer.syscalls", "tracer.binary", "tracer.trace"},
    "tracer.recording": {"tracer.attribution", "tracer.engine", "tracer.syscalls",
                         "tracer.process", "tracer.binary", "probes", "tracer.trace"},
    "tracer.attribution": {"tracer.unwind", "tracer.engine", "tracer.process",
                           "tracer.binary", "probes", "tracer.trace"},
    "tracer.unwind": {"tracer.engine", "tracer.binary"},
    "tracer.engine": {"tracer.ptrace", "tracer.syscalls", "tracer.process", "tracer.trace"},
    "tracer.ptrace": set(),
    "tracer.syscalls": set(),
    "tracer.process": set(),
    "tracer.binary": {"probes", "tracer.trace"},
    "probes": {"tracer.trace"},
    "tracer.trace": set(),
    "tracer.errors": set(),
    "tracer.cachedir": set(),
}
LOOSE = {"gate", "pytest_plugin", "errors", "cachedir"}


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "probes":
        return "probes"
    if parts[0] != "tracer" or len(parts) == 1:
        return None
    return f"tracer.{parts[1]}" if parts[1] not in ("__main__",) else None


def _modules() -> dict[str, Path]:
    out = {}
    for top in ("tracer", "probes"):
        for p in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = p
    return out


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) per absolute import; relative imports are refused outright."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            out.append((node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def _target(module: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The modules an import statement reaches (`from tracer import gate` reaches tracer.gate)."""
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
    return subs or [module]


def test_every_room_is_in_the_table() -> None:
    rooms = {_room(m) for m in _modules()} - {None, "tracer.__init__"}
    assert rooms <= set(ALLOWED), rooms - set(ALLOWED)
    loose = {p.stem for p in (ROOT / "tracer").glob("*.py")} - {"__init__", "__main__"}
    assert loose == LOOSE  # a new loose module is a decision: put it in a room instead


def test_imports_follow_the_table() -> None:
    known = _modules()
    wrong = []
    for mod, path in known.items():
        here = _room(mod)
        if here is None or here == "tracer.__init__":
            continue
        for module, names in _imports(path):
            for target in _target(module, names, known):
                there = _room(target)
                if there in (None, here, "tracer.__init__") or there in _BASE:
                    continue
                if there not in ALLOWED[here]:
                    wrong.append(f"{mod} imports {target} ({here} -> {there})")
    assert wrong == []


def test_no_circles_between_rooms() -> None:
    # the table itself must be a DAG, so no set of allowed arrows can close a loop
    seen: dict[str, int] = {}

    def visit(room: str, path: tuple[str, ...]) -> None:
        assert room not in path, " -> ".join((*path, room))
        if seen.get(room):
            return
        for nxt in ALLOWED[room]:
            visit(nxt, (*path, room))
        seen[room] = 1

    for room in ALLOWED:
        visit(room, ())


def test_no_private_names_across_modules() -> None:
    known = _modules()
    wrong = []
    for mod, path in known.items():
        for module, names in _imports(path):
            if module.startswith(("tracer", "probes")) and module != mod:
                wrong += [f"{mod} imports {module}.{n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
    assert wrong == []


def test_only_engines_and_launch_call_ptrace() -> None:
    users = []
    for mod, path in _modules().items():
        if _room(mod) in ("tracer.ptrace", "tracer.engine"):
            continue
        for module, names in _imports(path):
            if any(t == "tracer.ptrace" or t.startswith("tracer.ptrace.")
                   for t in _target(module, names, _modules())):
                users.append(mod)
    assert users == ["tracer.sandbox.launch"]


def test_one_maps_parser() -> None:
    # a module naming a maps file and calling the builtin open() parses it itself
    opens_maps = re.compile(r"/maps\"[\s\S]*(?<![.\w])open\(|(?<![.\w])open\([\s\S]*/maps\"")
    readers = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tracer").rglob("*.py"))
               if opens_maps.search(p.read_text())]
    assert readers == ["tracer/process/maps.py"]
