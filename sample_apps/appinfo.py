"""What each sample app is for, how to run it, and what a tracer should see: app.toml.

Every sample_apps/<app>/app.toml has this shape (docs in sample_apps/README.md):

    description = "one line"
    modes = ["cgo", "pure", ...]     # build modes the app supports (sample_apps.build.MODES)
    needs_dns = false                # true: runs only in a loopback netns with dnsresponder
    lifecycle = "exit"               # or "ready-file": see Run.argv's {ready_file}

    [[run]]                          # how tests run it; the first is the default run
    name = "default"                 # optional
    argv = ["..."]                   # "{ready_file}" is replaced by the harness's FIFO
    modes = [...]                    # optional: only in these modes
    exit_code = 0                    # expected exit status
    stdout = ['regex', ...]          # each must match at least one line of stdout
    stderr = ['regex', ...]          # likewise for stderr

    main_package = "./cmd/x"         # optional: the package to build (default ".")

    [[expect]]                       # one hidden access a tracer must attribute
    marker = "lookupid"              # the call site: the line with `// expect:lookupid`
    modes = [...]                    # the build modes it holds for
    path = "/etc/passwd"             # normalized path of the access
    go_api = "os/user.LookupId"      # outermost non-application frame below the user frame
    via = "cgo"                      # cgo | go | loader | exec
    c_function = "getpwuid_r"        # the C API the Go code called, for via = "cgo"
    go = ">=1.21"                    # optional: only for these Go versions (>=, <; X.Y)
    origin = ["os/user.current"]     # optional: the access's `origin` is one of these
    via_goroutine = true             # optional: the user frame comes from the creator chain
    no_user_frame = "init of x/y"    # instead of `marker`: no application frame at all
    required = false                 # optional: the access may not happen (host-dependent),
                                     # but when it does it must match
    note = "..."                     # optional

An expectation with via = "loader" has no marker and no go_api: ld.so's access, no stack.

Every access to a path some expectation of the mode names must match one of that path's
expectations (tests/integration/test_attribution_matrix.py), so an app.toml lists every call
site that reaches such a path.

Markers are resolved from the source at load time, so expectations never carry a raw line
number that could drift when someone edits main.go.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sample_apps.build import APPS_DIR, MODES, BuildError, supported_modes

MARKER_RE = re.compile(r"//\s*expect:([A-Za-z0-9_.-]+)\s*$")
VIAS = ("cgo", "go", "loader", "exec")
LIFECYCLES = ("exit", "ready-file")


class AppInfoError(BuildError):
    """app.toml is malformed, or refers to a marker that is not exactly one source line."""


@dataclass(frozen=True)
class Run:
    name: str
    argv: tuple[str, ...]
    modes: tuple[str, ...]
    exit_code: int = 0
    stdout: tuple[str, ...] = ()
    stderr: tuple[str, ...] = ()

    def args(self, ready_file: str | None = None) -> list[str]:
        """argv with {ready_file} filled in."""
        if any("{ready_file}" in a for a in self.argv) and ready_file is None:
            raise AppInfoError(f"run {self.name!r} needs a ready file")
        return [a.replace("{ready_file}", ready_file or "") for a in self.argv]


@dataclass(frozen=True)
class Expectation:
    marker: str
    modes: tuple[str, ...]
    path: str
    go_api: str | None  # None only for via = "loader"
    via: str
    file: str | None  # user frame: file (relative to the app dir) and line of the marker
    line: int | None  # (both None with no_user_frame)
    c_function: str | None = None
    note: str = ""
    origin: tuple[str, ...] = ()  # empty: not checked
    via_goroutine: bool | None = None  # None: not checked
    no_user_frame: str | None = None
    required: bool = True
    go: str = ""  # "" (every Go version), ">=1.21" or "<1.21"

    def holds_for_go(self, version: str | None) -> bool:
        """Does this expectation apply to Go `version` ("1.19.8")? None: any version."""
        if not self.go or version is None:
            return True
        op, bound = _go_range(self.go)
        have = tuple(int(x) for x in version.split(".")[:2])
        return have >= bound if op == ">=" else have < bound


@dataclass(frozen=True)
class AppInfo:
    name: str
    description: str
    modes: tuple[str, ...]
    needs_dns: bool
    lifecycle: str
    runs: tuple[Run, ...]
    expect: tuple[Expectation, ...] = field(default=())

    @property
    def argv(self) -> tuple[str, ...]:
        """The default run's arguments."""
        return self.runs[0].argv

    def runs_for(self, mode: str) -> list[Run]:
        return [r for r in self.runs if mode in r.modes]

    def expectations(self, mode: str, go: str | None = None) -> list[Expectation]:
        """The expectations of `mode`, and of Go version `go` when given."""
        return [e for e in self.expect if mode in e.modes and e.holds_for_go(go)]


def markers(app: str) -> dict[str, list[tuple[str, int]]]:
    """Every `// expect:NAME` marker in the app's .go files -> [(file, line), ...]."""
    found: dict[str, list[tuple[str, int]]] = {}
    app_dir = APPS_DIR / app
    for path in sorted(app_dir.rglob("*.go")):
        for lineno, text in enumerate(path.read_text().splitlines(), start=1):
            m = MARKER_RE.search(text)
            if m:
                found.setdefault(m.group(1), []).append((str(path.relative_to(app_dir)), lineno))
    return found


def marker_line(app: str, marker: str) -> tuple[str, int]:
    """(file, line) of the single source line carrying `// expect:<marker>`."""
    sites = markers(app).get(marker, [])
    if len(sites) != 1:
        raise AppInfoError(f"{app}: marker {marker!r} is on {len(sites)} lines "
                           f"({sites or 'none'}); it must be on exactly one")
    return sites[0]


def load(app: str) -> AppInfo:
    """Parse and check sample_apps/<app>/app.toml; resolve its markers."""
    path = APPS_DIR / app / "app.toml"
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise AppInfoError(f"{path}: {e}") from e
    modes = supported_modes(app)
    try:
        runs = tuple(_run(r, i, modes) for i, r in enumerate(data["run"]))
        expect = tuple(_expectation(app, e, modes) for e in data.get("expect", []))
        info = AppInfo(name=app, description=str(data["description"]), modes=modes,
                       needs_dns=bool(data.get("needs_dns", False)),
                       lifecycle=str(data.get("lifecycle", "exit")), runs=runs, expect=expect)
    except (KeyError, TypeError, ValueError) as e:
        raise AppInfoError(f"{path}: {type(e).__name__}: {e}") from e
    if not runs:
        raise AppInfoError(f"{path}: needs at least one [[run]]")
    if info.lifecycle not in LIFECYCLES:
        raise AppInfoError(f"{path}: lifecycle must be one of {LIFECYCLES}")
    return info


def _modes(raw: Any, allowed: tuple[str, ...], where: str) -> tuple[str, ...]:
    if raw is None:
        return allowed
    bad = [m for m in raw if m not in allowed]
    if bad:
        known = "unknown" if any(m not in MODES for m in bad) else "unsupported"
        raise ValueError(f"{where}: {known} modes {bad}")
    return tuple(m for m in MODES if m in raw)


def _run(raw: dict[str, Any], index: int, modes: tuple[str, ...]) -> Run:
    name = str(raw.get("name", "default" if index == 0 else f"run{index}"))
    for pattern in [*raw.get("stdout", []), *raw.get("stderr", [])]:
        re.compile(pattern)
    return Run(name=name, argv=tuple(str(a) for a in raw["argv"]),
               modes=_modes(raw.get("modes"), modes, f"run {name}"),
               exit_code=int(raw.get("exit_code", 0)),
               stdout=tuple(raw.get("stdout", ())), stderr=tuple(raw.get("stderr", ())))


def _expectation(app: str, raw: dict[str, Any], modes: tuple[str, ...]) -> Expectation:
    no_user = raw.get("no_user_frame")
    via = str(raw["via"])
    loader = via == "loader"
    if loader and ("marker" in raw or "go_api" in raw or no_user is not None):
        raise ValueError(f"expect {raw['path']}: a loader access has no marker, go_api or "
                         "no_user_frame")
    if not loader and (no_user is None) == ("marker" not in raw):
        raise ValueError(f"expect {raw.get('marker', raw.get('path'))}: give exactly one of "
                         "marker and no_user_frame")
    marker = (f"loader:{raw['path']}" if loader else str(raw["marker"]) if no_user is None
              else f"no-user:{raw['path']}")
    if via not in VIAS:
        raise ValueError(f"expect {marker}: via must be one of {VIAS}")
    if via == "cgo" and not raw.get("c_function"):
        raise ValueError(f"expect {marker}: via = cgo needs c_function")
    go = str(raw.get("go", ""))
    if go:
        _go_range(go)
    file: str | None = None
    line: int | None = None
    if no_user is None and not loader:
        file, line = marker_line(app, marker)
    origin = raw.get("origin", [])
    if isinstance(origin, str):
        origin = [origin]
    vg = raw.get("via_goroutine")
    return Expectation(marker=marker, modes=_modes(raw.get("modes"), modes, f"expect {marker}"),
                       path=str(raw["path"]), go_api=None if loader else str(raw["go_api"]),
                       via=via, file=file,
                       line=line, c_function=raw.get("c_function"), note=str(raw.get("note", "")),
                       origin=tuple(str(o) for o in origin),
                       via_goroutine=None if vg is None else bool(vg),
                       no_user_frame=None if no_user is None else str(no_user),
                       required=bool(raw.get("required", True)), go=go)


def _go_range(spec: str) -> tuple[str, tuple[int, ...]]:
    """">=1.21" -> (">=", (1, 21)); ValueError for anything else."""
    m = re.fullmatch(r"(>=|<)\s*(\d+)\.(\d+)", spec.strip())
    if m is None:
        raise ValueError(f"go = {spec!r}: expected '>=X.Y' or '<X.Y'")
    return m.group(1), (int(m.group(2)), int(m.group(3)))


def all_apps() -> list[AppInfo]:
    from sample_apps.build import apps

    return [load(a) for a in apps()]


def app_dir(app: str) -> Path:
    return APPS_DIR / app
