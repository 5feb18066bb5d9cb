"""What is the application's own code, and which frames of a stack name the cause of an access.

Pure analysis of symbolized frames (no process access): `tracer.attribution.frames` hands
the named frames of a walked stack here. docs/trace-format.md ("Attribution
fields") says what each chosen field means for a reader.

Application code (`AppCode`) is the program's main module:

1. With build info (`go version -m` shows a `mod` line): package `main` and every package
   whose import path is the main module's path or lies under it (`corp.test/app/internal/db`
   for module `corp.test/app`). cgo's generated wrappers (`_Cfunc_`, `_C2func_`, `_cgo_`)
   are never application code, even in package main: they are the door to C.
2. Build info without a module (a GOPATH-mode build, as Debian packages Go programs): the main
   package's import path, cut before a `/cmd/` element (`github.com/cli/cli/v2/cmd/gh` ->
   `github.com/cli/cli/v2`), stands for the module path.
3. No build info (stripped of `.go.buildinfo`, or very old toolchains): the source file
   names in pclntab, which survive `-s -w`. The application root is the directory of
   `main.main`'s file, cut before a trailing `/cmd/<name>`; a frame is application code
   when its file lies under that root but not under a `vendor/` directory of it, nor under
   the Go root (the directory holding `runtime/`'s sources). Limitation: a module the build
   replaced with a directory *inside* the application's tree looks like application code.
4. Nothing known: package `main` only (what cgotrace did before it read build info).

`choose` then picks, from the frames innermost first:

* `user_frame`: the innermost application frame;
* `go_api`: the outermost non-application frame below it (the call the application made);
  with no application frame, the exported function the outermost code outside the runtime
  was entered through: from the outermost such frame inward, past unexported functions
  and closures (a library goroutine's body, net's `cgoLookupIP.func1`), to the first
  exported function (`net.(*Dialer).DialContext`) or package initializer (`init of PKG`
  then says why); the outermost frame itself when the stack has neither;
* `origin`: the innermost frame below the user frame whose function the knowledge base
  lists as deciding a dependency (`origins` in probes/rules/features.toml:
  `time.LoadLocation`, `os/user.lookupUserId`, `crypto/x509.loadSystemRoots`, ...);
* `no_user_frame`: when no application frame is on the stack, why (`init of PKG` for a
  package initializer run by `runtime.doInit`); the goroutine creator chain is followed
  (`tracer.attribution.creator`) before this is reported.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from tracer.trace.model import Frame

_CGO_GLUE: Final = re.compile(r"^(?:_C2?func_|_cgo|_Cmacro_|_Cvar_)")
_RUNTIME_PACKAGES: Final = frozenset({"runtime", "internal/runtime"})
_INIT_RUNNERS: Final = frozenset({"runtime.doInit", "runtime.doInit1"})
_INIT_NAME: Final = re.compile(r"\.init(?:\.\d+)?(?:\.func\d+)*$")


def package_of(function: str) -> str:
    """The import path of a Go function name.

    'net.(*Resolver).LookupHost' -> 'net'; 'corp.test/x/y.F.func1' -> 'corp.test/x/y';
    type arguments are ignored ('a.F[corp.test/b.T]' -> 'a').
    """
    bracket = function.find("[")
    head = function if bracket < 0 else function[:bracket]
    slash = head.rfind("/")
    dot = head.find(".", slash + 1)
    return head[:dot] if dot >= 0 else head


def _local_name(function: str) -> str:
    """The part after the package: 'corp.test/x.(*T).M' -> '(*T).M'."""
    pkg = package_of(function)
    return function[len(pkg) + 1:]


_CLOSURE: Final = re.compile(r"\.(?:func|gowrap|deferwrap)\d+(?:\.\d+)*$|-fm$")
_TYPE_ARGS: Final = re.compile(r"\[.*\]")


def is_exported(function: str) -> bool:
    """A function or method other packages can call by name: `net.LookupHost`,
    `net.(*Resolver).LookupIPAddr`, `net.(*conn).Read`. Not an unexported function
    (`net.cgoLookupIP`), a closure (`net.cgoLookupIP.func1`, `F.gowrap1`, a method value
    `T.M-fm`), cgo glue (`_Cfunc_...`) or a package initializer (`pkg.init.0`)."""
    local = _TYPE_ARGS.sub("", _local_name(function))
    if not local or _CLOSURE.search(local):
        return False
    name = local.rsplit(".", 1)[-1]
    return name[:1].isupper()


def is_initializer(function: str) -> bool:
    """A package initializer (`pkg.init`, `pkg.init.0`) or a closure inside one."""
    return bool(_INIT_NAME.search(function))


def is_cgo_glue(function: str) -> bool:
    """cgo's generated Go wrappers (`_Cfunc_getpwuid_r`, `_cgo_cmalloc`, ...)."""
    return bool(_CGO_GLUE.match(_local_name(function)))


def module_from_main_path(main_path: str | None) -> str | None:
    """Heuristic 2: the main package's import path, cut before a `/cmd/` element."""
    if not main_path or main_path == "command-line-arguments":
        return None
    cut = main_path.find("/cmd/")
    return main_path[:cut] if cut > 0 else main_path


def root_from_main_file(main_file: str | None) -> str | None:
    """Heuristic 3: the application's source root from the file of `main.main`."""
    if not main_file:
        return None
    root = posixpath.dirname(main_file)
    parent, last = posixpath.split(root)
    if posixpath.basename(parent) == "cmd" and last:
        root = posixpath.dirname(parent)
    root = root.rstrip("/")
    return root or None


def goroot_from_runtime_file(runtime_file: str | None) -> str | None:
    """The Go root's `src` directory from a runtime source file (`.../src/runtime/proc.go`)."""
    if not runtime_file:
        return None
    d = posixpath.dirname(posixpath.dirname(runtime_file))
    return d or None


@dataclass(frozen=True)
class AppCode:
    """The rule that says whether a frame is the application's own code.

    `source` says which rule applies: "module" (build info's main module), "main-path"
    (GOPATH build: the main package's path), "files" (no build info: source roots from
    pclntab) or "main-only".
    """

    module: str | None = None
    source: str = "main-only"
    root: str | None = None  # "files": the application's source directory
    goroot_src: str | None = None  # "files": GOROOT/src, never application code

    @classmethod
    def detect(cls, main_module: str | None, main_path: str | None,
               lookup_file: Callable[[str], str | None]) -> AppCode:
        """From build info (module path, main package path); `lookup_file(function)` gives
        a function's source file from pclntab, for the no-build-info heuristic."""
        if main_module and main_module != "command-line-arguments":
            return cls(main_module, "module")
        guessed = module_from_main_path(main_path)
        if guessed:
            return cls(guessed, "main-path")
        root = root_from_main_file(lookup_file("main.main"))
        if root is not None and root not in ("/", "."):
            goroot = goroot_from_runtime_file(lookup_file("runtime.main"))
            return cls(None, "files", root, goroot)
        return cls()

    def is_app(self, frame: Frame) -> bool:
        """True when `frame` is the application's own Go code (never cgo glue)."""
        fn = frame.function
        if not fn:
            return False
        pkg = package_of(fn)
        if pkg == "main" or (self.module is not None and (
                pkg == self.module or pkg.startswith(self.module + "/"))):
            return not is_cgo_glue(fn)
        if self.source == "files" and self.root is not None and frame.file:
            return self._in_root(frame.file) and not is_cgo_glue(fn)
        return False

    def _in_root(self, file: str) -> bool:
        root = self.root
        assert root is not None
        if not file.startswith(root + "/"):
            return False
        if self.goroot_src is not None and file.startswith(self.goroot_src + "/"):
            return False
        return "/vendor/" not in file[len(root):]


@dataclass(frozen=True)
class Choice:
    """What `choose` picked from one stack."""

    user_index: int | None  # index of the user frame in the frames given
    user_frame: Frame | None
    go_api: str | None
    origin: str | None
    no_user_frame: str | None  # why there is none ("init of corp.test/lib"), else None


def choose(frames: Sequence[Frame], kinds: Sequence[str], app: AppCode,
           origins: dict[str, str] | frozenset[str] | set[str]) -> Choice:
    """Pick user frame, Go API, origin (module docstring) from frames innermost first.

    `kinds[i]` is "go", "c" or "unknown" for frames[i].
    """
    user_i = next((i for i, f in enumerate(frames) if kinds[i] == "go" and app.is_app(f)),
                  None)
    below = frames[:user_i] if user_i is not None else frames
    origin = next((f.function for f in below if f.function in origins), None)
    if user_i is not None:
        return Choice(user_i, frames[user_i], _api_below(frames, kinds, user_i), origin, None)
    return Choice(None, None, outermost_api(frames, kinds), origin,
                  _why_no_user(frames, kinds))


_C_WRAPPER: Final = re.compile(r"^_cgo_[0-9a-f]+_C2?func_(\w+)$")


def _api_below(frames: Sequence[Frame], kinds: Sequence[str], user_i: int) -> str | None:
    """The outermost non-application frame below the user frame (its callee)."""
    for i in range(user_i - 1, -1, -1):
        fn = frames[i].function
        if not fn:
            continue
        if kinds[i] == "go":
            return fn
        if kinds[i] == "c" and _C_WRAPPER.match(fn):  # internal-link C wrapper
            return fn
    return None


def outermost_api(frames: Sequence[Frame], kinds: Sequence[str]) -> str | None:
    """Without a user frame: the exported function (or package initializer) through which
    the outermost Go code outside the runtime was entered, walking inward past unexported
    functions and closures; the outermost such function when there is none (a helper
    goroutine whose frames are all internal: its creator chain says more)."""
    outside = [frames[i].function for i in range(len(frames) - 1, -1, -1)
               if kinds[i] == "go" and frames[i].function
               and package_of(frames[i].function or "") not in _RUNTIME_PACKAGES]
    for fn in outside:
        assert fn is not None
        if is_exported(fn) or is_initializer(fn):
            return fn
    if outside:
        return outside[0]
    return next((frames[i].function for i in range(len(frames) - 1, -1, -1)
                 if kinds[i] == "go"), None)


def _why_no_user(frames: Sequence[Frame], kinds: Sequence[str]) -> str | None:
    """'init of PKG' when a package initializer runs the code, else None."""
    for i, f in enumerate(frames):
        if kinds[i] == "go" and f.function in _INIT_RUNNERS:
            inits = [g.function for g in frames[:i] if g.function
                     and _INIT_NAME.search(g.function)
                     and package_of(g.function) not in _RUNTIME_PACKAGES]
            if inits:
                return f"init of {package_of(inits[-1])}"
    return None


def goroutine_note(creator: Frame | None) -> str | None:
    """The `no_user_frame` text for a goroutine whose creator chain has no application
    frame: 'goroutine started by net/http.(*Server).Serve'."""
    if creator is None or not creator.function:
        return None
    return f"goroutine started by {creator.function}"
