"""What /proc says about a live process: identity, credentials, namespaces, threads.

`attach` and `snapshot` read a process they did not start, so everything they know about it
comes from here: `/proc/PID/status` (name, uids, capabilities, NSpid, TracerPid), the
`exe` and `root` links, the namespace links and the thread list. Nothing here stops or
traces the process. A process that vanishes raises `ProcessGoneError` (exit 4).
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass

from tracer.errors import PermissionDeniedError, ProcessGoneError

CAP_SYS_PTRACE = 19
NAMESPACES = ("mnt", "pid", "net", "user", "uts", "ipc")


@dataclass(frozen=True)
class Creds:
    """The credentials ptrace's access check compares (real, effective, saved uid; caps)."""

    uids: tuple[int, int, int]
    gids: tuple[int, int, int]
    cap_permitted: int
    cap_effective: int
    dumpable: bool = True

    @property
    def has_sys_ptrace(self) -> bool:
        return bool(self.cap_effective >> CAP_SYS_PTRACE & 1)


@dataclass(frozen=True)
class ProcessFacts:
    """One process as /proc shows it to us."""

    pid: int  # in our pid namespace
    name: str
    state: str
    tracer_pid: int
    nspid: tuple[int, ...]  # outermost (ours) first, the process's own view last
    creds: Creds
    exe: str | None  # the exe link's text: the path as the process's own root sees it
    root: str  # the root link's text ("/" when it shares our root)
    cmdline: tuple[str, ...]
    foreign_ns: tuple[str, ...]  # namespaces it does not share with us

    @property
    def own_pid(self) -> int:
        """The pid the process sees for itself (its innermost pid namespace)."""
        return self.nspid[-1] if self.nspid else self.pid

    @property
    def in_container(self) -> bool:
        return "mnt" in self.foreign_ns or "pid" in self.foreign_ns

    @property
    def exe_host_path(self) -> str:
        """A path this tracer can open for the running binary, even one that exists only
        inside the process's own mount namespace (the kernel keeps the link open)."""
        return f"/proc/{self.pid}/exe"

    def host_path(self, path: str) -> str:
        """The host path of a path the process saw: through /proc/PID/root when the
        process lives in another mount namespace or root."""
        if not self.in_container and self.root == "/":
            return path
        return f"/proc/{self.pid}/root{path if path.startswith('/') else '/' + path}"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except FileNotFoundError:
        raise ProcessGoneError(f"no such process: {path.split('/')[2]}",
                               help="check the PID with `ps -p PID` or pick it by --name"
                               ) from None
    except ProcessLookupError:
        raise ProcessGoneError(f"no such process: {path.split('/')[2]}") from None
    except PermissionError:
        raise PermissionDeniedError(f"cannot read {path}",
                                    help="run cgotrace as the process's owner or as root"
                                    ) from None


def parse_status(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


def _ids(value: str) -> tuple[int, int, int]:
    parts = [int(v) for v in value.split()[:3]]
    parts += [parts[-1]] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def creds_from_status(status: dict[str, str], dumpable: bool = True) -> Creds:
    return Creds(uids=_ids(status.get("Uid", "0")), gids=_ids(status.get("Gid", "0")),
                 cap_permitted=int(status.get("CapPrm", "0"), 16),
                 cap_effective=int(status.get("CapEff", "0"), 16), dumpable=dumpable)


def own_creds() -> Creds:
    return creds_from_status(parse_status(_read("/proc/self/status")))


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _foreign_namespaces(pid: int) -> tuple[str, ...]:
    out = []
    for ns in NAMESPACES:
        theirs, ours = _link(f"/proc/{pid}/ns/{ns}"), _link(f"/proc/self/ns/{ns}")
        if theirs is not None and ours is not None and theirs != ours:
            out.append(ns)
    return tuple(out)


def _dumpable(pid: int) -> bool:
    """A non-dumpable process (setuid, prctl(PR_SET_DUMPABLE, 0)) has root-owned /proc
    files; only CAP_SYS_PTRACE may trace it."""
    try:
        return os.stat(f"/proc/{pid}/mem").st_uid == os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return True


def process_facts(pid: int) -> ProcessFacts:
    """Facts about `pid`; ProcessGoneError when there is no such process (or it is a
    thread id, not a process)."""
    status = parse_status(_read(f"/proc/{pid}/status"))
    if int(status.get("Tgid", pid)) != pid:
        raise ProcessGoneError(f"{pid} is a thread of process {status.get('Tgid')}, "
                               "not a process", help=f"attach to {status.get('Tgid')}")
    if status.get("State", "").startswith("Z"):
        raise ProcessGoneError(f"process {pid} has exited (a zombie)")
    raw = ""
    with contextlib.suppress(PermissionDeniedError):
        raw = _read(f"/proc/{pid}/cmdline")
    exe = _link(f"/proc/{pid}/exe")
    name = status.get("Name", "?")
    full = os.path.basename(exe or "")
    if len(name) == 15 and full.startswith(name):  # the kernel's comm is cut at 15 bytes
        name = full
    return ProcessFacts(
        pid=pid, name=name, state=status.get("State", "?"),
        tracer_pid=int(status.get("TracerPid", "0")),
        nspid=tuple(int(v) for v in status.get("NSpid", str(pid)).split()),
        creds=creds_from_status(status, _dumpable(pid)),
        exe=exe, root=_link(f"/proc/{pid}/root") or "/",
        cmdline=tuple(a for a in raw.split("\0") if a) if raw else (),
        foreign_ns=_foreign_namespaces(pid))


def require_readable(facts: ProcessFacts) -> None:
    """PermissionDeniedError (exit 5, with the remedy) when the kernel hides the process's
    executable and mappings from us: it belongs to another user, or is not dumpable, and we
    lack CAP_SYS_PTRACE. /proc/PID/status stays readable for everyone, so without this a
    reader would go on with no executable, no libraries and no files."""
    for what in ("exe", "maps"):
        path = f"/proc/{facts.pid}/{what}"
        try:
            if what == "exe":
                os.readlink(path)
            else:
                with open(path, "rb") as f:
                    f.read(1)
        except PermissionError:
            owner = facts.creds.uids[0]
            raise PermissionDeniedError(
                f"cannot read {path} of process {facts.pid} ({facts.name}, uid {owner}): "
                "permission denied", help="run cgotrace as root or as the process's owner "
                f"(`sudo -u {_user_name(owner)} ...`); in a container it needs "
                "CAP_SYS_PTRACE") from None
        except FileNotFoundError:
            if what == "maps":
                raise ProcessGoneError(f"no such process: {facts.pid}") from None
            # a kernel thread has no executable: nothing more to hide


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def environ(pid: int) -> dict[str, str]:
    """The environment `pid` started with (/proc/PID/environ; {} when it cannot be read:
    another user's process, a kernel thread)."""
    env: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return env
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="surrogateescape").partition("=")
        if sep:
            env[key] = value
    return env


def tracer_pid(tid: int) -> int:
    try:
        return int(parse_status(_read(f"/proc/{tid}/status")).get("TracerPid", "0"))
    except (ProcessGoneError, PermissionDeniedError, ValueError):
        return 0


def threads(pid: int) -> list[int]:
    """The thread ids of `pid` right now (empty when it is gone)."""
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ESRCH):
            return []
        raise


def alive(pid: int) -> bool:
    try:
        state = parse_status(_read(f"/proc/{pid}/status")).get("State", "")
    except (ProcessGoneError, PermissionDeniedError):
        return False
    return not state.startswith(("Z", "X"))


def nspid_map(pid: int) -> dict[int, int]:
    """tid (ours) -> tid as the process's own pid namespace numbers it, for every thread."""
    out: dict[int, int] = {}
    for tid in threads(pid):
        try:
            ns = parse_status(_read(f"/proc/{pid}/task/{tid}/status")).get("NSpid", "")
        except (ProcessGoneError, PermissionDeniedError):
            continue
        ids = ns.split()
        if ids:
            out[tid] = int(ids[-1])
    return out


def yama_ptrace_scope(path: str = "/proc/sys/kernel/yama/ptrace_scope") -> int | None:
    """Yama's ptrace_scope (0-3), or None when the kernel has no Yama."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
