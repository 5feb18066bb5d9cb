"""What is application code, and which frames become user_frame / go_api / origin / c_function
(tracer.attribution.appcode, tracer.attribution.frames.c_function): rules on
hand-made stacks, innermost first."""

from __future__ import annotations

from probes.knowledge import origin_functions
from tracer.attribution.appcode import (
    AppCode,
    choose,
    goroutine_note,
    is_exported,
    module_from_main_path,
    package_of,
    root_from_main_file,
)
from tracer.attribution.frames import c_function
from tracer.attribution.symbolize import NamedFrame
from tracer.trace.model import Frame

ORIGINS = origin_functions()
MOD = AppCode("github.com/gohugoio/hugo", "module")


def _f(fn: str | None, file: str | None = None, line: int | None = None) -> Frame:
    return Frame(fn, file, line)


def _pick(app: AppCode, *frames: tuple[str | None, str]) -> tuple[str | None, str | None,
                                                                  str | None, str | None]:
    named = [_f(fn) for fn, _ in frames]
    c = choose(named, [k for _, k in frames], app, ORIGINS)
    return (c.user_frame.function if c.user_frame else None, c.go_api, c.origin,
            c.no_user_frame)


def test_package_of() -> None:
    assert package_of("net.(*Resolver).LookupHost") == "net"
    assert package_of("corp.cgotrace.test/x/y.F.func1") == "corp.cgotrace.test/x/y"
    assert package_of("corp.test/a.Map[corp.test/b.T].func1") == "corp.test/a"
    assert package_of("main.main") == "main"


def test_hugo_mime_user_frame_is_the_innermost_application_frame() -> None:
    # the hugo stack: os.Open <- mime.loadMimeGlobsFile <- ... <- hugolib <- commands
    got = _pick(MOD, ("syscall.Syscall6", "go"), ("os.Open", "go"),
                ("mime.loadMimeGlobsFile", "go"), ("mime.initMimeUnix", "go"),
                ("sync.(*Once).doSlow", "go"), ("mime.AddExtensionType", "go"),
                ("github.com/gohugoio/hugo/hugolib.(*Site).RegisterMediaTypes", "go"),
                ("github.com/gohugoio/hugo/commands.Execute", "go"), ("main.main", "go"),
                ("runtime.main", "go"), ("runtime.goexit", "go"))
    assert got == ("github.com/gohugoio/hugo/hugolib.(*Site).RegisterMediaTypes",
                   "mime.AddExtensionType", "mime.loadMimeGlobsFile", None)


def test_errgroup_goroutine_with_application_frames_of_its_own() -> None:
    # hugo's content walk: the errgroup goroutine's own stack holds the application frame
    got = _pick(MOD, ("os.ReadDir", "go"),
                ("github.com/gohugoio/hugo/hugofs.(*walker).walk", "go"),
                ("github.com/gohugoio/hugo/hugolib.(*pagesCollector).collectDir", "go"),
                ("github.com/gohugoio/hugo/hugolib.(*pagesCollector).Collect.func1", "go"),
                ("golang.org/x/sync/errgroup.(*Group).Go.func1", "go"),
                ("runtime.goexit", "go"))
    assert got == ("github.com/gohugoio/hugo/hugofs.(*walker).walk", "os.ReadDir", None, None)


def test_go_api_is_a_library_not_the_applications_own_function() -> None:
    gh = AppCode(module_from_main_path("github.com/cli/cli/v2/cmd/gh"), "main-path")
    assert gh.module == "github.com/cli/cli/v2"
    got = _pick(gh, ("os.Open", "go"), ("time.loadTzinfoFromDirOrZip", "go"),
                ("time.initLocal", "go"), ("sync.(*Once).doSlow", "go"),
                ("time.Now", "go"), ("github.com/cli/go-gh.HTTPClient", "go"),
                ("github.com/cli/cli/v2/api.NewHTTPClient", "go"),
                ("github.com/cli/cli/v2/pkg/cmd/factory.New", "go"), ("main.main", "go"))
    assert got == ("github.com/cli/cli/v2/api.NewHTTPClient",
                   "github.com/cli/go-gh.HTTPClient", "time.initLocal", None)
    # a module named like a prefix of another is not that module
    assert not gh.is_app(_f("github.com/cli/cli/v2x/api.F"))
    assert gh.is_app(_f("github.com/cli/cli/v2.F"))


def test_all_in_main_keeps_its_meaning() -> None:
    for app in (AppCode(), AppCode("corp.test/userlookup", "module")):
        got = _pick(app, ("getpwuid_r", "c"), ("runtime.asmcgocall", "go"),
                    ("os/user._Cfunc_mygetpwuid_r", "go"), ("os/user.lookupUnixUid", "go"),
                    ("os/user.lookupUserId", "go"), ("os/user.LookupId", "go"),
                    ("main.main", "go"), ("runtime.main", "go"))
        assert got == ("main.main", "os/user.LookupId", "os/user.lookupUserId", None)
    # the program's own cgo wrapper is the API, never the user frame
    got = _pick(AppCode(), ("sqlite3_open", "c"), ("runtime.cgocall", "go"),
                ("main._Cfunc_sqlite3_open", "go"), ("main.open", "go"), ("main.main", "go"))
    assert got[:2] == ("main.open", "main._Cfunc_sqlite3_open")
    internal = AppCode("corp.test/app", "module")
    assert not internal.is_app(_f("corp.test/app/internal/db._Cfunc_open"))
    assert internal.is_app(_f("corp.test/app/internal/db.Open"))


def test_init_of_a_library_says_so() -> None:
    got = _pick(MOD, ("os.Stat", "go"), ("github.com/smallstep/truststore.init.0", "go"),
                ("runtime.doInit1", "go"), ("runtime.doInit", "go"), ("runtime.main", "go"),
                ("runtime.goexit", "go"))
    assert got == (None, "github.com/smallstep/truststore.init.0", None,
                   "init of github.com/smallstep/truststore")
    # an application package's own init is a user frame
    got = _pick(MOD, ("os.Stat", "go"), ("github.com/gohugoio/hugo/tpl.init.0.func1", "go"),
                ("github.com/gohugoio/hugo/tpl.init.0", "go"), ("runtime.doInit1", "go"))
    assert got[:2] == ("github.com/gohugoio/hugo/tpl.init.0.func1", "os.Stat")
    assert goroutine_note(_f("net/http.(*Server).Serve")) == \
        "goroutine started by net/http.(*Server).Serve"


def test_exported_functions() -> None:
    for fn in ("net.LookupHost", "net.(*Resolver).LookupIPAddr", "os/user.LookupId",
               "net.(*conn).Read", "corp.test/a.Map[corp.test/b.T]", "pkg.Ünicode"):
        assert is_exported(fn), fn
    for fn in ("net.cgoLookupIP", "net.cgoLookupIP.func1", "net.(*Resolver).lookupIPAddr",
               "net.doBlockingWithCtx[go.shape.int].func1", "net._C2func_getaddrinfo",
               "os/user._Cfunc_mygetpwuid_r", "pkg.init.0", "pkg.init", "pkg.F.gowrap1",
               "pkg.(*T).M-fm", "pkg.F.func2.1", "main.main"):
        assert not is_exported(fn), fn


def test_without_a_user_frame_the_api_is_the_exported_entry_point() -> None:
    """A library goroutine (net/http dialing) resolved a name with no application frame on
    any stack: the API was its internal closure or unexported method ("net.cgoLookupIP.func1
    resolved names with glibc ... at"); it is the exported function that code was entered
    through, walking inward past unexported functions and closures."""
    got = _pick(MOD, ("getaddrinfo", "c"), ("runtime.cgocall", "go"),
                ("net._C2func_getaddrinfo", "go"), ("net.cgoLookupHostIP", "go"),
                ("net.cgoLookupIP.func1", "go"), ("net.(*Resolver).lookupIPAddr", "go"),
                ("net.(*Resolver).internetAddrList", "go"),
                ("net.(*Resolver).resolveAddrList", "go"), ("net.(*Dialer).DialContext", "go"),
                ("net/http.(*Transport).dial", "go"), ("net/http.(*Transport).dialConn", "go"),
                ("net/http.(*Transport).dialConnFor", "go"), ("runtime.goexit", "go"))
    assert got == (None, "net.(*Dialer).DialContext", "net.(*Resolver).lookupIPAddr", None)
    # a library's worker goroutine that runs a closure: the exported call inside it
    got = _pick(MOD, ("os.Open", "go"), ("vendor.test/workpool.LookupUser.func1", "go"),
                ("vendor.test/workpool.(*Group).Go.func1", "go"), ("runtime.goexit", "go"))
    assert got[:2] == (None, "os.Open")
    # a helper goroutine whose frames are all internal keeps its outermost function (the
    # attributor then follows the creator chain to the call that started it)
    got = _pick(MOD, ("getaddrinfo", "c"), ("runtime.cgocall", "go"),
                ("net._C2func_getaddrinfo", "go"), ("net.cgoLookupServicePort", "go"),
                ("net.cgoLookupPort.func1", "go"),
                ("net.doBlockingWithCtx[go.shape.int].func1", "go"), ("runtime.goexit", "go"))
    assert got[:2] == (None, "net.doBlockingWithCtx[go.shape.int].func1")


def test_heuristic_without_build_info_uses_source_files() -> None:
    files = {"main.main": "/src/inventory/cmd/inventory/main.go",
             "runtime.main": "/opt/go/src/runtime/proc.go"}
    app = AppCode.detect(None, None, files.get)
    assert (app.source, app.root, app.goroot_src) == ("files", "/src/inventory", "/opt/go/src")
    assert app.is_app(_f("corp.test/inventory/internal/users.Lookup",
                         "/src/inventory/internal/users/users.go"))
    assert app.is_app(_f("main.main", "/src/inventory/cmd/inventory/main.go"))
    # dependencies: module cache, vendor/ under the root, the Go root
    assert not app.is_app(_f("vendor.test/workpool.(*Group).Go",
                             "/root/go/pkg/mod/vendor.test/workpool@v1.0.0/group.go"))
    assert not app.is_app(_f("vendor.test/x.F", "/src/inventory/vendor/vendor.test/x/x.go"))
    assert not app.is_app(_f("os.Open", "/opt/go/src/os/file.go"))
    assert not app.is_app(_f("corp.test/inventory/internal/db._Cfunc_open",
                             "/src/inventory/internal/db/_cgo_gotypes.go"))
    # -trimpath names: import-path-like files
    trim = AppCode.detect(None, None, {"main.main": "corp.test/inventory/cmd/inv/main.go",
                                       "runtime.main": "runtime/proc.go"}.get)
    assert trim.root == "corp.test/inventory"
    assert trim.is_app(_f("corp.test/inventory/internal/u.F",
                          "corp.test/inventory/internal/u/u.go"))
    assert not trim.is_app(_f("vendor.test/workpool.F", "vendor.test/workpool/group.go"))
    # nothing known: package main only; build info wins over files
    assert AppCode.detect(None, None, {}.get) == AppCode()
    assert AppCode.detect("corp.test/m", "corp.test/m/cmd/x", files.get).source == "module"
    assert AppCode.detect(None, "command-line-arguments", {}.get).source == "main-only"
    assert root_from_main_file("/tmp/main.go") == "/tmp"


def _n(fn: str | None, kind: str, line: int | None = None) -> NamedFrame:
    return NamedFrame(Frame(fn, "main.go" if fn and fn.startswith("main.") else None, line), kind)


def test_c_function_is_the_c_api_on_the_stack() -> None:
    # innermost first: libc internals, the cgo wrapper (internal link), runtime, Go, user
    stack = [_n("__open64", "c"), _n(None, "c"), _n("getpwuid_r@@GLIBC_2.2.5", "c"),
             _n("_cgo_0123456789ab_Cfunc_mygetpwuid_r", "c"), _n("runtime.asmcgocall", "go"),
             _n("runtime.cgocall", "go"), _n("os/user._Cfunc_mygetpwuid_r", "go"),
             _n("os/user.lookupUnixUid", "go"), _n("os/user.LookupId", "go"),
             _n("main.main", "go", 17), _n("runtime.main", "go"), _n("runtime.goexit", "go")]
    assert c_function(stack) == "getpwuid_r"
    # the Go code called the wrapper's function, even through a C helper of its own
    helper = [_n("__open64", "c"), _n("getaddrinfo", "c"), _n("myresolve", "c"),
              _n("_cgo_0123456789ab_Cfunc_myresolve", "c"), _n("runtime.asmcgocall", "go"),
              _n("main._Cfunc_myresolve", "go"), _n("main.main", "go")]
    assert c_function(helper) == "myresolve"
    # no wrapper at all (C code reached otherwise): the outermost non-plumbing C frame
    bare = [_n("__open64", "c"), _n("fopen", "c"), _n("lookup_conf", "c"),
            _n("crosscall2", "c"), _n("runtime.cgocallback", "go")]
    assert c_function(bare) == "lookup_conf"
    own = [_n("dlopen", "c"), _n("cgotrace_open", "c"), _n("runtime.asmcgocall", "go"),
           _n("main._Cfunc_cgotrace_open", "go"), _n("main.main", "go")]
    assert c_function(own) == "cgotrace_open"
    # musl static: C frames skipped by the scan, named from the wrapper
    musl = [_n(None, "c"), _n("runtime.asmcgocall", "go"), _n("runtime.cgocall", "go"),
            _n("net._C2func_getaddrinfo", "go"), _n("net.cgoLookupPort", "go")]
    assert c_function(musl) == "getaddrinfo"


def test_attribution_fields_round_trip() -> None:
    from tracer.trace.model import Attribution, Via

    a = Attribution(via=Via.CGO, go_api="vendor.test/workpool.LookupUser",
                    user_frame=Frame("corp.test/inventory/internal/users.Owner", "u.go", 12),
                    c_function="getpwuid_r", origin="os/user.lookupUserId", via_goroutine=True)
    d = a.to_dict()
    assert (d["origin"], d["via_goroutine"], d["no_user_frame"]) == \
        ("os/user.lookupUserId", True, None)
    assert Attribution.from_dict(d) == a
    old = {k: v for k, v in d.items() if k not in ("origin", "via_goroutine", "no_user_frame")}
    assert Attribution.from_dict(old) == Attribution(
        via=Via.CGO, go_api=a.go_api, user_frame=a.user_frame, c_function="getpwuid_r")


def test_summary_names_the_init_when_there_is_no_user_frame() -> None:
    from tracer.recording.summary import caller_of
    from tracer.reporters.brief import describe_caller
    from tracer.trace.model import Attribution, Via

    at = Attribution(via=Via.GO, go_api="vendor.test/workpool.init.0",
                     no_user_frame="init of vendor.test/workpool")
    assert describe_caller(caller_of(at)) == \
        "<- vendor.test/workpool.init.0 via go in init of vendor.test/workpool"


def test_helper_goroutine_without_any_app_frame_takes_its_creators_api() -> None:
    """A helper goroutine (net's doBlockingWithCtx worker) whose creator chain has no
    application frame: its own go_api would be the internal closure; the creator's API is
    what the application called, and the note names the creator."""
    from types import SimpleNamespace

    from tracer.attribution.creator import from_creator
    from tracer.attribution.frames import StackAttribution
    from tracer.trace.model import Frame, Via

    st = SimpleNamespace(app_code=lambda: SimpleNamespace(is_app=lambda f: False))
    creator = Frame(function="net.doBlockingWithCtx[...]", file=None, line=None)
    parent = StackAttribution(via=Via.GO, go_api="net.(*Resolver).LookupIPAddr",
                              user_frame=None, c_function=None, stack=(), unsymbolized=(),
                              started_by_go=True)
    frame, api, via_goroutine, note = from_creator(
        st, creator, parent, "net.doBlockingWithCtx[...].func1", None)  # type: ignore[arg-type]
    assert (frame, api, via_goroutine) == (None, "net.(*Resolver).LookupIPAddr", False)
    assert note == "goroutine started by net.doBlockingWithCtx[...]"
    # without a parent analysis the goroutine's own API stays (nothing better is known)
    assert from_creator(st, creator, None, "net.x.func1", None)[1] == "net.x.func1"  # type: ignore[arg-type]


def test_a_creator_walk_cut_short_lends_no_api() -> None:
    """A creator whose walk did not reach runtime.goexit (its frames end in gopark, say)
    names no API the application called: the goroutine keeps its own."""
    from types import SimpleNamespace

    from tracer.attribution.creator import from_creator
    from tracer.attribution.frames import StackAttribution
    from tracer.trace.model import Via

    st = SimpleNamespace(app_code=lambda: SimpleNamespace(is_app=lambda f: False))
    cut = StackAttribution(via=Via.GO, go_api="runtime.gopark", user_frame=None,
                           c_function=None, stack=(), unsymbolized=(), started_by_go=False)
    assert from_creator(st, None, cut, "net.x.func1", None)[1] == "net.x.func1"  # type: ignore[arg-type]
