"""`inspect` against the oracles, for every sample app x build mode with the newest Go, and
in cgo, pure and static with the older ones for the apps the tests use there
(sample_apps.build.OLDER_GO_APPS): settings == the `build` lines of `go version -m`,
interpreter/NEEDED == readelf, cgo packages == the `_Cfunc_`/`_C2func_` symbols `go tool nm`
sees, and the mode's own expectations (netgo/pure: no cgo form of os/user or net). Runs
inspect in-process; one CLI subprocess checks that `--json` is the same document."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sample_apps import build as sample_build
from tests import preflight
from tracer.binary.facts import inspect_binary

pytestmark = pytest.mark.go

MODES_LATEST = ("cgo", "pure", "netgo", "static", "musl", "stripped", "pie")
MODES_OLDER = ("cgo", "pure", "static")
CASES = ([(app, mode, "1.27.3") for app in sample_build.apps() for mode in MODES_LATEST
          if mode in sample_build.supported_modes(app)]
         + [(app, mode, go) for go in ("1.24.11", "1.21.13", sample_build.GO_1_19)
            for app in sorted(sample_build.OLDER_GO_APPS)
            for mode in MODES_OLDER if mode in sample_build.supported_modes(app)])
_CGO_SYM = re.compile(r"^(?P<pkg>.+?)\.(?:\(\*?[^)]*\)\.)?_(?:Cfunc|C2func)_")


def _go_version_m(path: Path, go: str) -> tuple[str, dict[str, str]]:
    env = sample_build.go_env(go)
    out = subprocess.run([str(sample_build.go_tool(go)), "version", "-m", str(path)], env=env,
                         capture_output=True, text=True, check=True).stdout
    version = out.splitlines()[0].split(": ", 1)[1].strip()
    settings: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        parts = line.strip("\n").split("\t")
        if len(parts) >= 3 and parts[1] == "build":
            key, _, value = parts[2].partition("=")
            if value.startswith('"'):
                value = json.loads(value)  # Go-quoted; ASCII values are valid JSON strings
            settings[key] = value
    return version, settings


def _readelf(path: Path) -> tuple[str | None, list[str]]:
    preflight.require("readelf")
    lw = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True).stdout
    m = re.search(r"\[Requesting program interpreter: ([^\]]+)\]", lw)
    dw = subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dw)
    return (m.group(1) if m else None), needed


def _nm_cgo_packages(path: Path, go: str) -> set[str]:
    out = subprocess.run([str(sample_build.go_tool(go)), "tool", "nm", str(path)],
                         env=sample_build.go_env(go), capture_output=True, text=True).stdout
    pkgs = set()
    for line in out.splitlines():
        name = line.split()[-1] if line.split() else ""
        m = _CGO_SYM.match(name)
        if m and m.group("pkg") not in ("runtime/cgo", "runtime", "syscall"):
            pkgs.add(m.group("pkg"))
    return pkgs


@pytest.mark.parametrize(("app", "mode", "go"), CASES,
                         ids=[f"{a}-{m}-{g}" for a, m, g in CASES])
def test_inspect_matches_oracles(sample: Callable[..., Path], app: str, mode: str,
                                 go: str) -> None:
    binary = sample(app, mode, go)
    facts = inspect_binary(binary)
    d = facts.to_dict()

    version, settings = _go_version_m(binary, go)
    assert d["go"]["version"] == version == f"go{go}"
    assert d["go"]["settings"] == settings

    interp, needed = _readelf(binary)
    assert d["interpreter"] == interp
    assert d["needed"] == needed
    assert d["static"] == (interp is None and not needed)

    # cgo packages vs go tool nm; stripped binaries have no symbols: use the cgo build
    reference = binary
    if mode == "stripped":
        assert "cgo" in sample_build.supported_modes(app), "stripped needs the cgo reference"
        reference = sample(app, "cgo", go)
    assert set(d["cgo"]["packages"]) == _nm_cgo_packages(reference, go)

    cgo = d["cgo"]
    if mode in ("pure", "netgo"):
        assert "os/user" not in cgo["packages"] and "net" not in cgo["packages"]
    if mode == "pure":
        assert cgo["linked"] is False and cgo["packages"] == []
        assert d["static"] is True
    if cgo["packages"]:
        assert cgo["linked"] is True
    src = "".join(p.read_text() for p in (sample_build.APPS_DIR / app).glob("*.go"))
    if mode in ("cgo", "static", "musl", "stripped", "pie") and '"os/user"' in src:
        assert "os/user" in cgo["packages"]
        assert d["user_lookup"]["implementation"] == "cgo"
    if mode in ("pure", "netgo") and '"os/user"' in src:
        assert d["user_lookup"]["implementation"] == "go"
    if mode in ("pure", "netgo"):  # already pure Go: no tag to suggest for it
        for f in d["features"]:
            assert not f["fix"].startswith("build with -tags"), (f["id"], f["fix"])
    if mode == "stripped":
        assert d["stripped"] is True and d["go"]["function_source"] == "pclntab"
    if mode == "pie":
        assert d["pie"] is True
    if mode == "static" and cgo["linked"]:
        assert d["elf"]["libc"] == "glibc"
    if mode == "musl" and cgo["linked"]:
        assert d["elf"]["libc"] == "musl"
    if mode == "static" and "os/user" in cgo["packages"]:
        assert any("static glibc + NSS" in h for h in d["hazards"])


def test_cli_json_is_the_library_document(sample: Callable[..., Path]) -> None:
    binary = sample("userlookup", "cgo")
    r = subprocess.run([sys.executable, "-m", "tracer", "inspect", "--json", str(binary)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == json.loads(json.dumps(inspect_binary(binary).to_dict()))
    assert doc["go"]["version"] == "go1.27.3"
    assert doc["cgo"]["linked"] is True and "os/user" in doc["cgo"]["packages"]
    assert doc["interpreter"] == "/lib64/ld-linux-x86-64.so.2"
