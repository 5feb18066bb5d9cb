"""Run-time SBOM and slim roots on real programs (docs/sbom.md, docs/slim.md).

- svcinfo (user lookup of an id the files lack, a group, a host only the loopback DNS
  responder knows, a port) in the glibc preset, whose dpkg records come from this host:
  the SBOM names libc6 and libnss-systemd with the versions `dpkg-query` reports, and every
  library the run loaded maps to the package `dpkg -S` names; the slim root is a few files
  and proven; the pure-Go build's slim root is the binary and the config files it read.
- A proof that fails: the source root lacks /etc/group (made by a package script on Debian,
  owned by no package), and slim says so.
- `slim -- PROGRAM` traces the program itself; `matrix --sbom` writes one SBOM per root.
- notes (a third-party module with cgo linking libsqlite3) on this host: libsqlite3-0 is in
  the SBOM, tied to vendor.test/sqlkv.
- A musl root with an Alpine package database written here: the loader maps to `musl`.

Every SBOM is checked with cyclonedx-python-lib's JSON validator. DNS stays in a loopback
network namespace (sample_apps.dnsresponder); the traces are shared per module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tracer.binary.rootpath import RootFS
from tracer.sandbox.presets import build_preset
from tracer.trace.recorder import read_trace

pytestmark = [pytest.mark.ptrace, pytest.mark.go, pytest.mark.netns]

VALIDATOR = JsonStrictValidator(SchemaVersion.V1_6)
LIBRARY_KINDS = ("interpreter", "startup-library", "dlopen-library")


def cgotrace(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracer", *map(str, args)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)


def load_sbom(path: Path) -> dict[str, Any]:
    text = path.read_text()
    assert VALIDATOR.validate_str(text) is None
    doc: dict[str, Any] = json.loads(text)
    return doc


def components(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc.get("components", ())}


def props(c: dict[str, Any], name: str) -> list[str]:
    return sorted(p["value"] for p in c.get("properties", ()) if p["name"] == f"cgotrace:{name}")


def dpkg(*args: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("dpkg-query not installed: the oracle for Debian package ownership")
    r = subprocess.run(["dpkg-query", *args], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def dpkg_owner(path: str) -> str | None:
    """`dpkg -S` on the host, for the name a package lists: the path, else its real path,
    else the merged-/usr alias (Debian 12 lists /lib/..., /usr/lib/... is the same file)."""
    real = os.path.realpath(path)
    for p in dict.fromkeys((path, real, real.replace("/usr/lib/", "/lib/", 1))):
        out = dpkg("-S", p)
        if out:
            return out.split(":", 1)[0] if ": " in out else None
    return None


def dpkg_version(package: str) -> str | None:
    return dpkg("-W", "-f", "${Version}", package)


def used_libraries(trace: Path) -> set[str]:
    return {a.path for a in read_trace(trace).accesses
            if a.kind.value in LIBRARY_KINDS and a.result == "ok"}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sbom")


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """One loopback namespace for the module, the DNS responder on 127.0.0.1:53."""
    from sample_apps.dnsresponder import Responder
    from tracer.sandbox.netns import LoopbackNetwork

    with LoopbackNetwork(service=lambda: Responder(port=53, timeout=600)) as net:
        yield net.netns_path


@pytest.fixture(scope="module")
def svcinfo(sample: Callable[..., Path], netns: str, work: Path) -> dict[str, Path]:
    """svcinfo-cgo and svcinfo-pure traced in the glibc preset, each with its SBOM."""
    out: dict[str, Path] = {}
    for mode in ("cgo", "pure"):
        trace, sbom = work / f"svcinfo-{mode}.jsonl", work / f"svcinfo-{mode}.cdx.json"
        r = cgotrace("run", "-q", "-o", trace, "--report", f"cyclonedx={sbom}",
                     "--rootfs", "glibc", "--network", netns, "--", sample("svcinfo", mode))
        assert r.returncode == 0, r.stderr
        assert "owner: user: unknown userid 4242" in r.stdout
        assert "host: svc.cgotrace.test 127.0.0.77" in r.stdout
        out[mode], out[f"{mode}-sbom"] = trace, sbom
    return out


def test_sbom_names_the_packages_the_cgo_run_used(svcinfo: dict[str, Path]) -> None:
    doc = load_sbom(svcinfo["cgo-sbom"])
    comps = components(doc)
    libs = used_libraries(svcinfo["cgo"])
    assert "/lib/x86_64-linux-gnu/libnss_systemd.so.2" in libs
    for path in libs:  # every library the run loaded, in the package dpkg names
        owner = dpkg_owner(path)
        assert owner is not None, path
        c = comps[owner]
        assert path in props(c, "file"), (path, owner)
        assert c["version"] == dpkg_version(owner)
        assert c["purl"].startswith(f"pkg:deb/debian/{owner}@")
        assert "distro=debian-12" in c["purl"] and "arch=" in c["purl"]
    assert {"libc6", "libnss-systemd"} <= set(comps)
    nss = comps["libnss-systemd"]
    assert props(nss, "go-api") == ["os/user.LookupId"]
    assert props(nss, "user-frame") == ["main.go:30 (main.main)"]
    assert props(nss, "class") == ["hidden"] and props(nss, "reachability") == ["used"]
    assert props(comps["libc6"], "go-package") == ["net", "os/user"]
    # looked for, not there: probed, and no package claims it
    assert props(comps["/etc/services"], "reachability") == ["probed"]
    assert props(comps["/etc/services"], "result") == ["ENOENT"]
    # files no package owns carry their SHA-256
    passwd = comps["/etc/passwd"]
    root = build_preset("glibc")
    assert passwd["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(
        (root / "etc" / "passwd").read_bytes()).hexdigest()}]
    graph = {d["ref"]: set(d.get("dependsOn", ())) for d in doc["dependencies"]}
    assert nss["bom-ref"] in graph["program"]
    assert nss["bom-ref"] in graph[comps["stdlib"]["bom-ref"]]


def test_pure_go_sbom_has_no_os_package(svcinfo: dict[str, Path]) -> None:
    comps = components(load_sbom(svcinfo["pure-sbom"]))
    assert not [c for c in comps.values() if c.get("purl", "").startswith("pkg:deb/")]
    assert props(comps["/etc/passwd"], "via") == ["go"]
    assert props(comps["/etc/passwd"], "class") == ["runtime-file"]


def slim(*args: str | Path) -> tuple[int, dict[str, Any]]:
    r = cgotrace("slim", "--json", *args)
    assert "Traceback" not in r.stderr
    return r.returncode, json.loads(r.stdout)


def non_dirs(result: dict[str, Any]) -> set[str]:
    return {e["path"] for e in result["slim"]["entries"] if e["type"] != "dir"}


def test_slim_cgo_root_is_a_few_files_and_proven(svcinfo: dict[str, Path], netns: str,
                                                 work: Path) -> None:
    out, tar, dockerfile = work / "slim-cgo", work / "slim-cgo.tar", work / "Dockerfile"
    rc, result = slim("--trace", svcinfo["cgo"], "-o", out, "--tar", tar,
                      "--dockerfile", dockerfile, "--network", netns)
    assert rc == 0 and result["proven"], result["proof"]
    assert result["proof"][0]["exit_before"] == result["proof"][0]["exit_after"] == 0
    files = non_dirs(result)
    assert len(files) <= 20, files
    for lib in used_libraries(svcinfo["cgo"]):  # every library it loaded, reachable inside
        assert RootFS(out).locate(lib).is_file(), lib
    assert "/usr/local/bin/svcinfo-cgo" in files
    preset = build_preset("glibc")
    assert (preset / "usr/lib/x86_64-linux-gnu/libresolv.so.2").exists()
    assert not any("libresolv" in f or "zoneinfo" in f or "ca-certificates" in f
                   for f in files)  # in the preset, never used
    assert result["slim"]["bytes"] - result["slim"]["program_bytes"] < result["source"]["bytes"]
    # the loader cache was made for this root: it names what is here, not the preset's rest
    cache = subprocess.run(["ldconfig", "-p", "-C", str(out / "etc/ld.so.cache")],
                           capture_output=True, text=True).stdout
    assert "libnss_systemd.so.2" in cache and "libresolv.so.2" not in cache
    with tarfile.open(tar) as t:
        members = {m.name: m for m in t.getmembers()}
    assert members["lib"].issym() and members["lib"].linkname == "usr/lib"
    assert members["usr/local/bin/svcinfo-cgo"].isfile()
    assert all(m.uid == 0 for m in members.values())
    text = dockerfile.read_text().splitlines()
    assert "FROM scratch" in text and "COPY slim-cgo/ /" in text
    assert 'ENTRYPOINT ["/usr/local/bin/svcinfo-cgo"]' in text


def test_slim_pure_root_is_the_binary_and_the_config_it_read(svcinfo: dict[str, Path],
                                                             netns: str, work: Path) -> None:
    rc, result = slim("--trace", svcinfo["pure"], "-o", work / "slim-pure", "--network", netns)
    assert rc == 0 and result["proven"], result["proof"]
    read = {a.path for a in read_trace(svcinfo["pure"]).accesses
            if a.path.startswith("/etc/") and a.result == "ok"}
    assert {"/etc/passwd", "/etc/group", "/etc/resolv.conf"} <= read
    assert non_dirs(result) == read | {"/usr/local/bin/svcinfo-pure"}


def test_slim_says_what_is_missing_and_why(svcinfo: dict[str, Path], netns: str,
                                           work: Path) -> None:
    """A source root without /etc/group, which on Debian base-passwd's script writes and no
    package lists: the proof fails and names it."""
    source = work / "no-group-root"
    shutil.copytree(build_preset("glibc"), source, symlinks=True)
    (source / "etc" / "group").unlink()
    rc, result = slim("--trace", svcinfo["cgo"], "--rootfs", source, "-o", work / "slim-bad",
                      "--network", netns)
    assert rc == 1 and not result["proven"]
    lost = {x["path"]: x for x in result["proof"][0]["lost"]}
    assert lost["/etc/group"]["after"] == "ENOENT"
    assert "not in the source root" in lost["/etc/group"]["why"]
    assert "no package owns it" in lost["/etc/group"]["why"]
    r = cgotrace("slim", "--trace", svcinfo["cgo"], "--rootfs", source, "-o",
                 work / "slim-bad-text", "--network", netns)
    assert r.returncode == 1
    assert "lost: /etc/group (ok before, ENOENT now): not in the source root" in r.stdout
    assert "verdict: NOT proven" in r.stdout and "no more" in r.stdout


def test_slim_runs_the_program_itself(sample: Callable[..., Path], work: Path) -> None:
    rc, result = slim("--rootfs", "glibc", "-o", work / "slim-run", "--",
                      sample("userlookup", "pure"))
    assert rc == 0 and result["proven"], result["proof"]
    assert non_dirs(result) == {"/etc/passwd", "/etc/group", "/usr/local/bin/userlookup-pure"}


def test_matrix_writes_an_sbom_per_root(sample: Callable[..., Path], work: Path) -> None:
    r = cgotrace("matrix", "--rootfs", "glibc", "--sbom", work / "sboms", "--json",
                 sample("userlookup", "cgo"))
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["roots"]
    assert row["sbom"] == str(work / "sboms" / "glibc.cdx.json")
    comps = components(load_sbom(Path(row["sbom"])))
    assert comps["libnss-systemd"]["version"] == dpkg_version("libnss-systemd")


def test_third_party_cgo_library_is_tied_to_its_module(sample: Callable[..., Path],
                                                       work: Path) -> None:
    sbom = work / "notes.cdx.json"
    r = cgotrace("run", "-q", "--report", f"cyclonedx={sbom}", "--", sample("notes", "cgo"))
    assert r.returncode == 0 and "3 notes" in r.stdout, r.stderr
    doc = load_sbom(sbom)
    comps = components(doc)
    sqlite = comps["libsqlite3-0"]
    assert sqlite["version"] == dpkg_version("libsqlite3-0")
    assert dpkg_owner("/lib/x86_64-linux-gnu/libsqlite3.so.0") == "libsqlite3-0"
    assert props(sqlite, "go-package") == ["vendor.test/sqlkv"]
    module = comps["vendor.test/sqlkv"]
    assert module["purl"] == "pkg:golang/vendor.test/sqlkv@v1.4.2"
    assert props(module, "go-replace") == ["../thirdparty/sqlkv"]
    graph = {d["ref"]: set(d.get("dependsOn", ())) for d in doc["dependencies"]}
    assert sqlite["bom-ref"] in graph[module["bom-ref"]]
    assert doc["metadata"]["component"]["name"] == "corp.test/notes"
    assert props(doc["metadata"]["component"], "third-party-cgo") == ["vendor.test/sqlkv"]


# an Alpine package database for the musl preset's files (shared with tests/unit/test_pkgdb.py)
APK_DB = (Path(__file__).resolve().parents[1] / "data" / "apk-installed").read_text()


def test_musl_root_with_an_apk_database(sample: Callable[..., Path], work: Path) -> None:
    binary = sample("userlookup", "musl-dynamic")
    root = work / "alpine-like"
    shutil.copytree(build_preset("musl"), root, symlinks=True)
    (root / "lib" / "apk" / "db").mkdir(parents=True)
    (root / "lib" / "apk" / "db" / "installed").write_text(APK_DB)
    (root / "etc" / "os-release").write_text('ID=alpine\nVERSION_ID=3.19.1\n'
                                              'PRETTY_NAME="Alpine Linux v3.19"\n')
    sbom = work / "musl.cdx.json"
    r = cgotrace("run", "-q", "--report", f"cyclonedx={sbom}", "--rootfs", root, "--", binary)
    assert r.returncode == 0, r.stderr
    comps = components(load_sbom(sbom))
    musl = comps["musl"]
    assert musl["purl"] == "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"
    assert "/lib/ld-musl-x86_64.so.1" in props(musl, "file")
    assert props(musl, "class") == ["declared"]
    assert musl["licenses"] == [{"license": {"name": "MIT"}}]
    base = comps["alpine-baselayout-data"]
    assert "/etc/passwd" in props(base, "file")
    assert "upstream=alpine-baselayout" in base["purl"]
    assert comps["alpine"]["type"] == "operating-system"
