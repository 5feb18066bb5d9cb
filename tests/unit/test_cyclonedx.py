"""The run-time SBOM (tracer/reporters/cyclonedx.py) on hand-built analyses: valid CycloneDX
1.6 by cyclonedx-python-lib's own JSON validator, the components and purls, the trace's
properties, and the dependency graph with the Go API or cgo link behind each edge."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from probes.records import Analysis
from tests.reporting_data import caller, cgo_analysis, dep, empty_analysis
from tracer.reporters import NEEDS_INVENTORY, available, render
from tracer.reporters.cyclonedx import go_package, is_std
from tracer.trace.inventory import Inventory, OsPackage, UsedFile
from tracer.trace.model import Access, AccessKind, DependencyClass, ExitStatus
from tracer.trace.recorder import TraceWriter

LIBC = OsPackage("dpkg", "libc6", "2.36-9+deb12u7", "amd64", source="glibc",
                 namespace="debian", distro="debian-12")
NSS = OsPackage("dpkg", "libnss-systemd", "252.38-1~deb12u1", "amd64", source="systemd",
                namespace="debian", distro="debian-12")
SQLITE = OsPackage("dpkg", "libsqlite3-0", "3.40.1-2", "amd64", source="sqlite3",
                   namespace="debian", distro="debian-12")
LIBC_SO = "/lib/x86_64-linux-gnu/libc.so.6"
NSS_SO = "/lib/x86_64-linux-gnu/libnss_systemd.so.2"
SQLITE_SO = "/lib/x86_64-linux-gnu/libsqlite3.so.0"
KV = caller("vendor.test/kv.Open", "cgo", "sqlite3_open", 31, 1, 60)


def analysis() -> Analysis:
    a = cgo_analysis()
    static = {**a.static, "go_build": {"path": "corp.test/app/cmd/app", "modules": [
        {"path": "corp.test/app", "version": "(devel)", "sum": None, "main": True,
         "replace": None},
        {"path": "vendor.test/kv", "version": "v1.4.2", "sum": "h1:abc=", "main": False,
         "replace": {"path": "../kv", "version": "(devel)", "sum": None}},
        {"path": "golang.org/x/text", "version": "v0.3.0", "sum": "h1:def=", "main": False,
         "replace": {"path": "golang.org/x/text", "version": "v0.14.0", "sum": "h1:ghi="}}],
        "settings": {"GOOS": "linux", "CGO_ENABLED": "1"}},
        "cgo_links": {"vendor.test/kv": ["libsqlite3.so.0"]},
        # the static facts resolved libsqlite3 under /usr/lib; the run opened it via /lib
        "loader": {"libraries": [{"name": "libc.so.6", "path": LIBC_SO},
                                 {"name": "libsqlite3.so.0",
                                  "path": "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0"}]},
        "cgo_packages": ["os/user"]}
    deps = a.dependencies + (
        dep(SQLITE_SO, "ok", DependencyClass.DECLARED, "startup-library",
            (caller(None, "loader", None, None, 1, 3),)),
        dep("/var/lib/kv/kv.db-journal", "ENOENT", DependencyClass.HIDDEN, "other", (KV,)),
        dep("libnss_db.so.2", "ENOENT", DependencyClass.HIDDEN, "dlopen-library",
            (caller("os/user.LookupId", "cgo", "getpwuid_r", 22, 3, 35),)))
    inv = Inventory(
        root="/r", label="glibc",
        os={"ID": "debian-slim-like", "ID_LIKE": "debian", "VERSION_ID": "12"},
        manager="dpkg", packages=(LIBC, NSS, SQLITE), program_sha256="ab" * 32,
        files=(UsedFile("/lib64/ld-linux-x86-64.so.2", (LIBC.key,), "symlink"),
               UsedFile(LIBC_SO, (LIBC.key,), "file"), UsedFile(NSS_SO, (NSS.key,), "file"),
               UsedFile(SQLITE_SO, (SQLITE.key,), "file"),
               UsedFile("/etc/nsswitch.conf", (), "file", "cd" * 32, 120),
               UsedFile("/etc/passwd", (), "file", "ef" * 32, 40),
               UsedFile("/etc/group", (), "file", "01" * 32, 20),
               UsedFile("/var/lib/kv/kv.db-journal")))
    return dataclasses.replace(a, static=static, dependencies=deps, inventory=inv)


VALIDATOR = JsonStrictValidator(SchemaVersion.V1_6)


def sbom(a: Analysis) -> dict[str, Any]:
    text = render(a, "cyclonedx")
    assert VALIDATOR.validate_str(text) is None
    doc: dict[str, Any] = json.loads(text)
    return doc


def props(c: dict[str, Any], name: str) -> list[str]:
    return sorted(p["value"] for p in c.get("properties", ()) if p["name"] == f"cgotrace:{name}")


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["components"]}


def edges(doc: dict[str, Any]) -> dict[str, set[str]]:
    return {d["ref"]: set(d.get("dependsOn", ())) for d in doc["dependencies"]}


def test_format_is_offered_and_needs_an_inventory() -> None:
    assert "cyclonedx" in available() and "cyclonedx" in NEEDS_INVENTORY


def test_components_purls_and_hashes() -> None:
    doc = sbom(analysis())
    assert doc["specVersion"] == "1.6" and doc["bomFormat"] == "CycloneDX"
    program = doc["metadata"]["component"]
    assert program["name"] == "corp.test/app/cmd/app"
    assert program["purl"] == "pkg:golang/corp.test/app"  # (devel): no version
    assert program["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    assert props(program, "root") == ["glibc"] and props(program, "go-setting:GOOS") == ["linux"]
    c = by_name(doc)
    assert c["stdlib"]["purl"] == "pkg:golang/stdlib@1.27.3"
    assert c["vendor.test/kv"]["purl"] == "pkg:golang/vendor.test/kv@v1.4.2"
    assert props(c["vendor.test/kv"], "go-replace") == ["../kv"]
    assert props(c["vendor.test/kv"], "go-sum") == ["h1:abc="]
    # replaced by another version: the replacement is what was linked
    assert c["golang.org/x/text"]["purl"] == "pkg:golang/golang.org/x/text@v0.14.0"
    assert props(c["golang.org/x/text"], "go-replaces") == ["golang.org/x/text v0.3.0"]
    assert c["libc6"]["purl"] == ("pkg:deb/debian/libc6@2.36-9%2Bdeb12u7"
                                  "?arch=amd64&distro=debian-12&upstream=glibc")
    assert c["libc6"]["version"] == "2.36-9+deb12u7"
    assert c["debian"]["type"] == "operating-system" and c["debian"]["version"] == "12"
    passwd = c["/etc/passwd"]
    assert passwd["type"] == "file"
    assert passwd["hashes"] == [{"alg": "SHA-256", "content": "ef" * 32}]
    assert "/var/run/nscd/socket" not in c  # sockets are not files of the root
    assert "/proc/self/maps" not in c


def test_trace_properties_give_reachability() -> None:
    c = by_name(sbom(analysis()))
    nss = c["libnss-systemd"]
    assert props(nss, "reachability") == ["used"]
    assert props(nss, "class") == ["hidden"] and props(nss, "via") == ["cgo"]
    assert props(nss, "go-api") == ["os/user.LookupId"]
    assert props(nss, "user-frame") == ["main.go:22 (main.main)"]
    assert props(nss, "c-function") == ["getpwuid_r"]
    assert props(nss, "file") == [NSS_SO]
    assert nss["evidence"]["occurrences"][0]["location"] == NSS_SO
    frames = nss["evidence"]["callstack"]["frames"]
    assert frames[-1]["function"] == "main.main" and frames[-1]["line"] == 22
    assert props(c["libc6"], "class") == ["declared"] and props(c["libc6"], "via") == ["loader"]
    journal = c["/var/lib/kv/kv.db-journal"]
    assert props(journal, "reachability") == ["probed"] and props(journal, "result") == ["ENOENT"]
    assert "hashes" not in journal
    searched = c["libnss_db.so.2"]  # a name looked for in several directories, found nowhere
    assert props(searched, "reachability") == ["probed"]


def test_dependency_graph_names_the_go_code_behind_each_edge() -> None:
    doc = sbom(analysis())
    e = edges(doc)
    c = by_name(doc)
    ref = {name: c[name]["bom-ref"] for name in c}
    program = e["program"]
    assert {ref["stdlib"], ref["vendor.test/kv"], ref["libc6"], ref["libnss-systemd"],
            ref["libsqlite3-0"], ref["/etc/passwd"]} <= program
    # os/user (stdlib) used libnss-systemd; vendor.test/kv linked libsqlite3 and probed its file
    assert ref["libnss-systemd"] in e[ref["stdlib"]]
    assert ref["/etc/passwd"] in e[ref["stdlib"]]
    assert e[ref["vendor.test/kv"]] == {ref["libsqlite3-0"], ref["/var/lib/kv/kv.db-journal"]}
    assert props(c["libsqlite3-0"], "go-package") == ["vendor.test/kv"]
    assert ref["libsqlite3-0"] not in e[ref["stdlib"]]


def test_without_an_inventory_every_path_is_an_unowned_file() -> None:
    a = dataclasses.replace(analysis(), inventory=None)
    c = by_name(sbom(a))
    assert "libc6" not in c and c[LIBC_SO]["type"] == "file" and "hashes" not in c[LIBC_SO]
    assert sbom(empty_analysis()).get("components", []) == []


@pytest.mark.parametrize(("function", "package"), [
    ("net.(*Resolver).LookupHost", "net"), ("os/user.LookupId", "os/user"),
    ("vendor.test/kv.(*Store).Put", "vendor.test/kv"), ("main._Cfunc_sqlite3_open", "main"),
    ("golang.org/x/net/http2.ConfigureServer", "golang.org/x/net/http2")])
def test_go_package(function: str, package: str) -> None:
    assert go_package(function) == package
    assert is_std(package) == (package in ("net", "os/user"))


def test_report_needs_the_root_the_trace_ran_in(tmp_path: Path) -> None:
    """`report --format cyclonedx` reads the root's package database: a root that is gone is
    one line and exit 4; `--rootfs` names where it is now."""
    trace = tmp_path / "t.jsonl"
    with TraceWriter(str(trace)) as w:
        w.header(argv=["/bin/true"], binary="/bin/true",
                 static={"rootfs": str(tmp_path / "gone")}, sandbox="gone")
        w.access(Access(seq=1, time=0.0, pid=1, tid=1, syscall="openat", path="/etc/passwd",
                        result="ok", kind=AccessKind.CONFIG, hidden=True))
        w.exit(ExitStatus(code=0))
    cmd = [sys.executable, "-m", "tracer", "report", "--format", "cyclonedx", str(trace)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 4 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"cgotrace: the root this trace ran in (gone: {tmp_path / 'gone'}) no longer exists: "
        "the SBOM needs its package database (pass the root with --rootfs DIR)"]
    moved = tmp_path / "moved"
    (moved / "etc").mkdir(parents=True)
    (moved / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    r = subprocess.run([*cmd, "--rootfs", str(moved)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert VALIDATOR.validate_str(r.stdout) is None
    passwd = by_name(json.loads(r.stdout))["/etc/passwd"]
    assert passwd["hashes"][0]["content"] == hashlib.sha256(
        b"root:x:0:0::/:/bin/sh\n").hexdigest()
