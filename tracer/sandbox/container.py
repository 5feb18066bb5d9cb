"""Run a program "as in a container": namespaces, a rootfs, a loopback-only network.

Two halves (docs/sandbox.md):

- `prepare(spec, program)` runs in the tracer: validates everything it can (a missing
  rootfs is a one-line `NotFoundError`), writes the resolv.conf override, and returns a
  `PreparedSandbox` whose `program_in_root` is the path to exec.
- `PreparedSandbox.child_setup()` runs in the forked child before exec (launch.py calls it):
  unshare, private mounts, the root assembled as an overlay (rootfs read-only below, tmpfs
  above, so the image on disk is never modified), /proc, a minimal /dev, /tmp, the
  resolv.conf override, `lo` up, hostname, pivot_root.

The default network is `loopback`: a new network namespace with only `lo`, and a
resolv.conf naming 127.0.0.1. Nothing the program sends can leave the machine. A root
without /etc (scratch) gets no resolv.conf at all: that is what such an image is, and Go's
resolver then falls back to 127.0.0.1:53 and [::1]:53, still inside the namespace. (Docker
would inject /etc/resolv.conf, /etc/hosts and /etc/hostname even there; we do not, so the
trace shows the image as it is.)
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tracer import errors
from tracer.binary.rootpath import RootFS
from tracer.errors import BadBinaryError, CgotraceError, NotFoundError, SandboxError
from tracer.sandbox import netns
from tracer.sandbox.trees import cache_dir, ensure_dir, rootfs_label

if TYPE_CHECKING:
    from tracer.sandbox.diagnosis import Diagnosis

NETWORK_MODES = ("loopback", "none", "host")
DEFAULT_RESOLV_CONF = "nameserver 127.0.0.1\n"
PROGRAM_DIR = "/.cgotrace"
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
              ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))


@dataclass(frozen=True)
class Bind:
    """An extra bind mount: host `source` appears at `target` inside the sandbox."""

    source: Path
    target: str
    readonly: bool = True


@dataclass(frozen=True)
class SandboxSpec:
    """What the sandbox looks like.

    network: "loopback" (new netns, only lo, up), "none" (new netns, lo down), "host"
    (no network namespace), or a path to a network namespace to join
    (/proc/PID/ns/net of a `LoopbackNetwork`, /run/netns/NAME).
    resolv_conf: text bound over /etc/resolv.conf; None means the default
    ("nameserver 127.0.0.1" unless network is "host", where the root's own file is kept).
    user_namespace: None = automatic (only when not root).
    """

    rootfs: Path | None = None
    network: str = "loopback"
    hostname: str | None = "cgotrace"
    resolv_conf: str | None = None
    binds: tuple[Bind, ...] = ()
    user_namespace: bool | None = None
    pid_namespace: bool = False


@dataclass
class PreparedSandbox:
    """The parent's view of a sandbox; its methods run in the forked child."""

    spec: SandboxSpec
    program: Path  # host path
    program_in_root: str  # what the child execs
    root: Path | None
    resolv_conf_file: Path | None  # host file bound over /etc/resolv.conf, if any
    stage: Path  # host directory the child mounts the new root under (private mount ns)
    user_namespace: bool
    outer_uid: int = field(default_factory=os.geteuid)
    outer_gid: int = field(default_factory=os.getegid)
    fresh_proc: bool = False  # set in the child; True when /proc is a new instance

    @property
    def pid_namespace(self) -> bool:
        return self.spec.pid_namespace

    @property
    def label(self) -> str:
        return rootfs_label(self.root)

    # --- child side ----------------------------------------------------------------------
    def child_setup(self) -> None:
        """All of it, in the child that will exec. Not for pid namespaces (see below)."""
        if self.pid_namespace:
            raise SandboxError("pid namespace requested: call enter_namespaces(), fork, then "
                               "setup_root() in the grandchild")
        self.enter_namespaces()
        self.setup_root()

    def enter_namespaces(self) -> None:
        """unshare (and setns into a given netns); mounts made private; lo; hostname."""
        spec = self.spec
        if spec.network not in NETWORK_MODES:
            netns.join(spec.network)  # before a user namespace: needs rights in ours
        flags = netns.CLONE_NEWNS | netns.CLONE_NEWUTS | netns.CLONE_NEWIPC
        if spec.network in ("loopback", "none"):
            flags |= netns.CLONE_NEWNET
        if spec.pid_namespace:
            flags |= netns.CLONE_NEWPID
        if self.user_namespace:
            flags |= netns.CLONE_NEWUSER
        netns.unshare(flags)
        if self.user_namespace:
            netns.write_id_maps(self.outer_uid, self.outer_gid)
        # Nothing mounted below may propagate back to the host's mount table.
        netns.mount(None, "/", None, netns.MS_REC | netns.MS_PRIVATE)
        if spec.network == "loopback":
            netns.set_link_up("lo")
        if spec.hostname:
            netns.sethostname(spec.hostname)

    def setup_root(self) -> None:
        """Mounts and pivot_root, in the process that will exec (PID 1 with a pid ns)."""
        if self.root is None:
            self._setup_host_root()
        else:
            self._setup_rootfs(self.root)

    def _setup_host_root(self) -> None:
        if self.pid_namespace:
            netns.mount("proc", "/proc", "proc", netns.MS_NOSUID | netns.MS_NODEV | netns.MS_NOEXEC)
            self.fresh_proc = True
        if self.resolv_conf_file is not None and os.path.exists("/etc/resolv.conf"):
            netns.bind_mount(str(self.resolv_conf_file), "/etc/resolv.conf", readonly=True)
        for b in self.spec.binds:
            _ensure_mountpoint(Path(b.target), Path(b.source).is_dir())
            netns.bind_mount(str(b.source), b.target, readonly=b.readonly, recursive=True)

    def _setup_rootfs(self, root: Path) -> None:
        stage = str(self.stage)
        netns.mount("cgotrace", stage, "tmpfs", netns.MS_NOSUID | netns.MS_NODEV, "mode=0755")
        new_root = Path(stage, "root")
        for d in ("upper", "work", "root"):
            os.mkdir(os.path.join(stage, d))
        try:
            netns.mount("cgotrace", str(new_root), "overlay", 0,
                        f"lowerdir={_overlay_escape(str(root))},upperdir={stage}/upper,"
                        f"workdir={stage}/work")
        except SandboxError:
            # No overlay (old kernel, odd filesystem): the rootfs itself, which then must
            # already have the mount points (every generated tree does).
            netns.bind_mount(str(root), str(new_root), readonly=True, recursive=True)
        self._mount_program(new_root)
        self._mount_proc(new_root / "proc")
        self._mount_dev(new_root / "dev")
        _ensure_mountpoint(new_root / "tmp", True)
        netns.mount("tmpfs", str(new_root / "tmp"), "tmpfs", netns.MS_NOSUID | netns.MS_NODEV,
                    "mode=1777")
        # /run as a container engine gives it: empty and private (sockets, pid files).
        self._mount_run(new_root)
        etc = new_root / "etc"
        if self.resolv_conf_file is not None and etc.is_dir() and not etc.is_symlink():
            target = etc / "resolv.conf"
            if target.is_symlink():  # Debian points it at /run/...: replace, never follow
                target.unlink()
            _ensure_mountpoint(target, False)
            netns.bind_mount(str(self.resolv_conf_file), str(target), readonly=True)
        for b in self.spec.binds:
            dest = RootFS(new_root).locate(b.target)
            _ensure_mountpoint(dest, Path(b.source).is_dir())
            netns.bind_mount(str(b.source), str(dest), readonly=b.readonly, recursive=True)
        os.chdir(new_root)
        try:
            # pivot_root(".", ".") stacks the old root under the new one; detach it.
            netns.pivot_root(".", ".")
            netns.umount2(".", netns.MNT_DETACH)
        except SandboxError:
            os.chroot(".")  # e.g. the host root is an initramfs: pivot_root is refused
        os.chdir("/")

    def _mount_run(self, new_root: Path) -> None:
        run_dir = RootFS(new_root).locate("/run")
        try:
            _ensure_mountpoint(run_dir, True)
        except SandboxError:
            return  # read-only bind fallback of a root without /run: nothing there to hide
        netns.mount("tmpfs", str(run_dir), "tmpfs", netns.MS_NOSUID | netns.MS_NODEV,
                    "mode=0755")

    def _mount_program(self, new_root: Path) -> None:
        # A tmpfs of its own, so the mount point exists even on a read-only root.
        target = new_root / self.program_in_root.lstrip("/")
        _ensure_mountpoint(target.parent, True)
        netns.mount("tmpfs", str(target.parent), "tmpfs", netns.MS_NOSUID | netns.MS_NODEV,
                    "mode=0755")
        target.touch()
        netns.bind_mount(str(self.program), str(target), readonly=True)

    def _mount_proc(self, target: Path) -> None:
        _ensure_mountpoint(target, True)
        try:
            netns.mount("proc", str(target), "proc",
                        netns.MS_NOSUID | netns.MS_NODEV | netns.MS_NOEXEC)
            self.fresh_proc = True
        except SandboxError:
            # A user namespace without its own pid namespace may not mount proc: the host's.
            netns.bind_mount("/proc", str(target), recursive=True)

    def _mount_dev(self, target: Path) -> None:
        _ensure_mountpoint(target, True)
        netns.mount("tmpfs", str(target), "tmpfs", netns.MS_NOSUID, "mode=0755")
        for name in _DEV_NODES:
            host = f"/dev/{name}"
            if not os.path.exists(host):
                continue
            node = target / name
            node.touch()
            try:
                netns.bind_mount(host, str(node))
            except SandboxError:
                node.unlink()  # /dev/tty without a controlling terminal in a userns, etc.
        for name, link in _DEV_LINKS:
            os.symlink(link, target / name)
        (target / "pts").mkdir()
        (target / "shm").mkdir(mode=0o1777)

    # --- parent side ---------------------------------------------------------------------
    def diagnose_exec_failure(self, err: int) -> str:
        return self.exec_diagnosis(err).line

    def exec_diagnosis(self, err: int) -> Diagnosis:
        """Why exec of the program failed inside this sandbox (its `diagnosis` line)."""
        from tracer.sandbox.diagnosis import diagnose_exec

        return diagnose_exec(self.root, self.program_in_root, err, program_host=self.program)


def _overlay_escape(path: str) -> str:
    # overlayfs splits lowerdir on ':' and options on ','.
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _ensure_mountpoint(p: Path, is_dir: bool) -> None:
    if p.exists():
        return
    try:
        if is_dir:
            p.mkdir(parents=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
    except OSError as e:
        raise SandboxError(f"cannot create mount point {p} in the rootfs: "
                           f"{os.strerror(e.errno or 0)}") from None


# === parent side =============================================================================


def prepare(spec: SandboxSpec, program: Path | str) -> PreparedSandbox:
    """Validate a spec for `program` and write what the child will mount."""
    prog = Path(program)
    if not prog.exists():
        raise NotFoundError(f"{prog}: no such file")
    prog = prog.resolve()
    root: Path | None = None
    if spec.rootfs is not None:
        if not Path(spec.rootfs).is_dir():
            from tracer.sandbox.presets import PRESETS

            raise NotFoundError(f"rootfs {spec.rootfs}: no such directory",
                                help=f"use a directory, an image tarball or a preset "
                                     f"({', '.join(PRESETS)})")
        root = Path(spec.rootfs).resolve()
    if spec.network not in NETWORK_MODES:
        if not spec.network.startswith("/"):
            raise SandboxError(f"network {spec.network!r}: use loopback, none, host or the "
                               "path of a network namespace", exit_code=errors.ExitCode.USAGE)
        if not os.path.exists(spec.network):
            raise NotFoundError(f"network namespace {spec.network}: no such file")
    for b in spec.binds:
        if not Path(b.source).exists():
            raise NotFoundError(f"bind mount source {b.source}: no such file or directory")
        if not b.target.startswith("/"):
            raise SandboxError(f"bind mount target {b.target!r} must be absolute",
                               exit_code=errors.ExitCode.USAGE)
    user_ns = (os.geteuid() != 0) if spec.user_namespace is None else spec.user_namespace
    base = cache_dir() / "sandbox"
    stage = ensure_dir(base / "stage")
    resolv_text = spec.resolv_conf
    if resolv_text is None and spec.network != "host":
        resolv_text = DEFAULT_RESOLV_CONF
    resolv_file: Path | None = None
    if resolv_text is not None:
        digest = hashlib.sha256(resolv_text.encode()).hexdigest()[:16]
        resolv_file = base / f"resolv-{digest}.conf"
        if not resolv_file.exists():
            tmp = resolv_file.with_name(f"{resolv_file.name}.{os.getpid()}")
            tmp.write_text(resolv_text)
            os.replace(tmp, resolv_file)
    in_root = f"{PROGRAM_DIR}/{prog.name}" if root is not None else str(prog)
    return PreparedSandbox(spec=spec, program=prog, program_in_root=in_root, root=root,
                           resolv_conf_file=resolv_file, stage=stage, user_namespace=user_ns)


def host_path(prepared: PreparedSandbox, path_in_root: str) -> str | None:
    """The host path of a file the tracee saw at `path_in_root` (absolute).

    None for sandbox-private mounts (a fresh /proc, /dev, /tmp) that have no host file.
    Symlinks inside the rootfs are resolved inside it.
    """
    p = posixpath.normpath("/" + path_in_root.lstrip("/")) if path_in_root else "/"
    spec = prepared.spec
    if p == prepared.program_in_root:
        return str(prepared.program)
    for b in spec.binds:
        t = posixpath.normpath(b.target)
        if p == t or p.startswith(t.rstrip("/") + "/"):
            return str(Path(b.source)) + p[len(t):]
    if p == "/etc/resolv.conf" and prepared.resolv_conf_file is not None and (
            prepared.root is None or (prepared.root / "etc").is_dir()):
        return str(prepared.resolv_conf_file)
    if prepared.root is None:
        if prepared.pid_namespace and _under(p, "/proc"):
            return None
        return p
    if any(_under(p, d) for d in ("/proc", "/dev", "/tmp", "/run", PROGRAM_DIR)):
        return None
    try:
        return str(RootFS(prepared.root).locate(p))
    except CgotraceError:
        return str(prepared.root) + p


def _under(p: str, d: str) -> bool:
    return p == d or p.startswith(d + "/")


# === child errors over a pipe ===============================================================

_ERROR_CLASSES: dict[str, type[CgotraceError]] = {
    c.__name__: c for c in (CgotraceError, SandboxError, NotFoundError, BadBinaryError,
                            errors.PermissionDeniedError, errors.TracerError,
                            errors.BadImageError)
}


def encode_child_error(e: BaseException) -> bytes:
    """One line for the pipe from the child: `ClassName<TAB>message\\n`."""
    if isinstance(e, CgotraceError):
        name, msg = type(e).__name__, e.message
        if name not in _ERROR_CLASSES:
            name = "SandboxError"
    else:
        name, msg = "SandboxError", f"sandbox setup failed: {type(e).__name__}: {e}"
    return f"{name}\t{' '.join(msg.split())}\n".encode()


def decode_child_error(data: bytes) -> CgotraceError:
    line = data.decode("utf-8", "replace").strip().splitlines()
    first = line[0] if line else "SandboxError\tsandbox setup failed (no message)"
    name, _, msg = first.partition("\t")
    cls = _ERROR_CLASSES.get(name, SandboxError)
    return cls(msg or name)


# === exec failure diagnosis =================================================================


def diagnose_exec_failure(root: Path | None, program_in_root: str, err: int,
                          program_host: Path | None = None) -> str:
    """Why execve(program_in_root) failed with `err` inside `root` (None: the host): one line
    naming the cause (PT_INTERP missing, wrong architecture, mode) and the fix
    (`tracer.sandbox.diagnosis.diagnose_exec`, the one exec-failure diagnoser)."""
    from tracer.sandbox.diagnosis import diagnose_exec

    return diagnose_exec(root, program_in_root, err, program_host).line
