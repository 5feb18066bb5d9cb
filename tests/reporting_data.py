"""Hand-built `Analysis` objects for reporter tests: a cgo user lookup like userlookup's
(declared loader files, hidden NSS config and modules, an nscd socket miss, findings with
fixes, one allowed), and awkward text (quotes, `<`, `</script>`, non-ASCII) in a path."""

from __future__ import annotations

from probes.records import Analysis, Caller, Dependency, ProgramFiles
from tracer.trace.model import DependencyClass, Evidence, Finding, Frame, Severity

MAIN = "/src/userlookup/main.go"
WEIRD = '/etc/we"ird</script><b>é.conf'


def stack(go_api: str, c_function: str | None, line: int) -> tuple[Frame, ...]:
    frames = []
    if c_function:
        frames += [Frame("__GI___open64_nocancel", None, None, "libc.so.6", 0x7F00001000),
                   Frame(c_function, None, None, "libc.so.6", 0x7F00002000),
                   Frame("runtime.asmcgocall", "/go/src/runtime/asm_amd64.s", 918,
                         "userlookup", 0x46A000)]
    frames += [Frame(go_api, "/go/src/os/user/cgo_lookup_unix.go", 40, "userlookup", 0x4A0000),
               Frame("main.main", MAIN, line, "userlookup", 0x4A1000)]
    return tuple(frames)


def caller(go_api: str | None, via: str, c_function: str | None, line: int | None,
           count: int, first_seq: int) -> Caller:
    frame = Frame("main.main", MAIN, line, "userlookup") if line else None
    frames = stack(go_api, c_function, line) if go_api and line else ()
    return Caller(via=via, go_api=go_api, user_frame=frame, c_function=c_function,
                  origin=None, count=count, first_seq=first_seq, pid=100, stack=frames)


LOADER = caller(None, "loader", None, None, 1, 2)
LOOKUP_ID = caller("os/user.LookupId", "cgo", "getpwuid_r", 19, 3, 21)
LOOKUP_UNKNOWN = caller("os/user.LookupId", "cgo", "getpwuid_r", 22, 1, 30)
LOOKUP_GROUP = caller("os/user.LookupGroup", "cgo", "getgrnam_r", 28, 1, 40)


def dep(path: str, result: str, cls: DependencyClass, kind: str, callers: tuple[Caller, ...],
        ) -> Dependency:
    return Dependency(path=path, result=result, cls=cls, kind=kind,
                      count=sum(c.count for c in callers), callers=callers,
                      absent=result == "ENOENT", seqs=tuple(c.first_seq for c in callers))


def cgo_dependencies() -> tuple[Dependency, ...]:
    D, H = DependencyClass.DECLARED, DependencyClass.HIDDEN
    return (
        dep("/lib64/ld-linux-x86-64.so.2", "ok", D, "interpreter", (LOADER,)),
        dep("/lib/x86_64-linux-gnu/libc.so.6", "ok", D, "startup-library", (LOADER,)),
        dep("/etc/nsswitch.conf", "ok", H, "config", (LOOKUP_ID, LOOKUP_GROUP)),
        dep("/etc/passwd", "ok", H, "config", (LOOKUP_ID,)),
        dep("/etc/group", "ok", H, "config", (LOOKUP_GROUP,)),
        dep("/lib/x86_64-linux-gnu/libnss_systemd.so.2", "ok", H, "dlopen-library",
            (LOOKUP_UNKNOWN,)),
        dep("/var/run/nscd/socket", "ENOENT", H, "socket", (LOOKUP_ID,)),
        dep(WEIRD, "ok", H, "config", (LOOKUP_ID,)),
        dep("/proc/self/maps", "ok", DependencyClass.RUNTIME_FILE, "runtime",
            (caller("runtime.sysargs", "go", None, None, 1, 3),)),
    )


def cgo_findings() -> tuple[Finding, ...]:
    uf = Frame("main.main", MAIN, 22, "userlookup")
    return (
        Finding(id="nss-modules", severity=Severity.WARNING,
                title="glibc NSS modules loaded by dlopen",
                explanation="os/user through cgo calls getpwuid_r; glibc reads "
                "/etc/nsswitch.conf and dlopens the modules it names.",
                fix="build with -tags osusergo (or CGO_ENABLED=0)",
                go_api="os/user.LookupId", user_frame=uf, c_function="getpwuid_r",
                paths=("/lib/x86_64-linux-gnu/libnss_systemd.so.2", "/etc/nsswitch.conf"),
                evidence=(Evidence(30, "/lib/x86_64-linux-gnu/libnss_systemd.so.2", "ok",
                                   "cgo", "getpwuid_r", 100),),
                dockerfile=("COPY /lib/x86_64-linux-gnu/libnss_systemd.so.2 "
                            "/lib/x86_64-linux-gnu/",)),
        Finding(id="nscd-socket", severity=Severity.INFO, title="nscd socket tried",
                explanation="glibc asks nscd first.", fix="nothing to do",
                go_api="os/user.LookupId", user_frame=Frame("main.main", MAIN, 19),
                paths=("/var/run/nscd/socket",), missing=("/var/run/nscd/socket",),
                allowed="no nscd in our images"),
        Finding(id="weird-path", severity=Severity.ERROR, title='a "quoted" <title>',
                explanation="</script> must not end the page's script",
                fix="COPY it", paths=(WEIRD,), missing=(WEIRD,)),
    )


def cgo_analysis() -> Analysis:
    return Analysis(
        findings=cgo_findings(), dependencies=cgo_dependencies(),
        program_files=ProgramFiles(files=12, accesses=40, by_dir=(("./content/", 10),
                                                                  ("/tmp/", 2))),
        static={"interpreter": "/lib64/ld-linux-x86-64.so.2", "needed": ["libc.so.6"],
                "static": False, "cgo": True, "go_version": "go1.27.3"},
        exit={"exit_code": 0, "code": 0}, diagnoses=({"message": "a loader diagnosis"},),
        binary="/build/userlookup-cgo", argv=("/build/userlookup-cgo",))


def empty_analysis() -> Analysis:
    return Analysis(findings=(), dependencies=(), program_files=ProgramFiles(), static={},
                    exit=None)


def pure_analysis() -> Analysis:
    """The same program built with -tags netgo,osusergo: Go reads /etc/passwd and
    /etc/group itself; no loader, no NSS, no nscd."""
    R = DependencyClass.RUNTIME_FILE
    go_id = caller("os/user.LookupId", "go", None, 19, 2, 5)
    go_group = caller("os/user.LookupGroup", "go", None, 28, 1, 9)
    return Analysis(
        findings=(), program_files=ProgramFiles(files=12, accesses=40,
                                                by_dir=(("./content/", 12),)),
        dependencies=(dep("/etc/passwd", "ok", R, "config", (go_id,)),
                      dep("/etc/group", "ok", R, "config", (go_group,))),
        static={"interpreter": None, "needed": [], "static": True, "cgo": False,
                "go_version": "go1.27.3"},
        exit={"exit_code": 0, "code": 0}, binary="/build/userlookup-netgo",
        argv=("/build/userlookup-netgo",))
