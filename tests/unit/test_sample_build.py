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
