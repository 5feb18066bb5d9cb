"""sample_apps.build for multi-package modules: main_package, local replace directives and
the source digest (no Go toolchain needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sample_apps import build


def test_local_replacements_single_line_and_block(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "go.mod").write_text(
        "module corp.test/app\n\ngo 1.21\n\n"
        "replace vendor.test/a => ../a // local\n"
        "replace (\n\tvendor.test/b v1.0.0 => ./third/b\n"
        "\tvendor.test/c => vendor.test/c v1.2.0\n)\n")
    assert build.local_replacements(app) == [(tmp_path / "a").resolve(),
                                             (app / "third" / "b").resolve()]
    assert build.local_replacements(tmp_path) == []  # no go.mod


def test_inventory_is_a_multi_package_app() -> None:
    assert "inventory" in build.apps()
    assert "thirdparty" not in build.apps()  # a library module, not an app
    assert build.main_package("inventory") == "./cmd/inventory"
    assert build.main_package("userlookup") == "."
    assert build.main_file("inventory").read_text().startswith("// inventory: ")
    (workpool,) = build.local_replacements(build.APPS_DIR / "inventory")
    assert workpool == (build.APPS_DIR / "thirdparty" / "workpool").resolve()


def test_digest_covers_the_replaced_module(tmp_path: Path) -> None:
    app, lib = tmp_path / "app", tmp_path / "lib"
    for d in (app, lib):
        d.mkdir()
    (app / "go.mod").write_text("module corp.test/app\n\nreplace vendor.test/lib => ../lib\n")
    (app / "main.go").write_text("package main\n")
    (lib / "lib.go").write_text("package lib\n")
    before = build._source_digest(app)
    (lib / "lib.go").write_text("package lib\n\nvar X = 1\n")
    assert build._source_digest(app) != before
    # an app without replacements keeps the digest it always had (shared caches stay valid)
    (app / "go.mod").write_text("module corp.test/app\n")
    import hashlib

    h = hashlib.sha256()
    for p in sorted(app.rglob("*")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    assert build._source_digest(app) == h.hexdigest()[:16]


def test_main_package_must_be_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "app.toml").write_text('main_package = "/etc"\nmodes = ["cgo"]\n')
    monkeypatch.setattr(build, "APPS_DIR", tmp_path)
    with pytest.raises(build.BuildError, match="main_package"):
        build.main_package("bad")


_FAKE_GO = """#!/bin/sh
# a stand-in for `go build -o OUT ...`: counts its runs, takes a while, writes OUT
echo run >> "$CGOTRACE_FAKE_GO_LOG"
sleep 0.5
while [ "$1" != "-o" ]; do shift; done
printf 'built by %s\\n' "$$" > "$2"
"""

_BUILDER = """
import sys
from pathlib import Path
from sample_apps import build
build.BUILD_CACHE = Path(sys.argv[1])
build.ROOT = Path(sys.argv[1])
build.go_tool = lambda version: Path(sys.argv[2])
build.go_env = lambda version: dict(__import__("os").environ)
print(build.build("hello", "cgo", "1.27.3"))
"""


def test_concurrent_builders_build_a_target_once(tmp_path: Path) -> None:
    """Two processes (pytest-xdist workers) ask for the same target at once: one builds,
    the other waits and gets the same file; its stamp is written whole."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "go"
    fake.write_text(_FAKE_GO)
    fake.chmod(0o755)
    log = tmp_path / "runs.log"
    env = {**os.environ, "CGOTRACE_FAKE_GO_LOG": str(log),
           "PYTHONPATH": str(Path(build.__file__).resolve().parents[1])}
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(cache), str(fake)],
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    target = cache / "1.27.3" / "hello-cgo"
    assert outs == [str(target)] * 3
    assert log.read_text().splitlines() == ["run"]  # built once
    assert target.read_text().startswith("built by ")
    digest = target.with_suffix(".digest").read_text()
    assert digest.startswith(build._source_digest(build.APPS_DIR / "hello") + ":")
    # no temporary file left behind (the lock file stays: an empty file, reused)
    assert sorted(p.name for p in target.parent.iterdir()) == [
        ".hello-cgo.lock", "hello-cgo", "hello-cgo.digest"]
