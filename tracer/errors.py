"""Typed errors. The library raises these; only `tracer.cli` turns them into a line and an
exit code.

Each class carries its exit code and a remedy (`help`), so the message a user sees always
says what to do next. Exit codes are documented in docs/exit-codes.md.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    POLICY = 1  # report --fail-on: the gate failed (findings matched)
    USAGE = 2  # click's own usage errors
    BAD_INPUT = 3  # not an ELF, truncated, corrupt, wrong architecture
    NOT_FOUND = 4  # a file, rootfs or PID that does not exist
    PERMISSION = 5  # ptrace / namespaces / file permission refused
    TARGET_EXITED = 6  # attach: the process ended during the attach (the trace is kept)
    INTERNAL = 70  # a bug in cgotrace (EX_SOFTWARE)
    # run --fail-on: the program exited 0 but the gate failed. Not 1: a CI step must tell
    # it from the program's own failure (docs/exit-codes.md)
    RUN_POLICY = 121
    # `run`/`attach` pass the program's own status through; their own failures use these
    # (the convention of env(1), docker run and podman run):
    TRACER_FAILED = 125
    CANNOT_EXECUTE = 126
    COMMAND_NOT_FOUND = 127


class CgotraceError(Exception):
    """Base class: a failure the user can act on."""

    exit_code: int = ExitCode.INTERNAL
    help: str = ""

    def __init__(self, message: str, *, help: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        if help is not None:
            self.help = help
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class BadBinaryError(CgotraceError):
    """The input is not a (usable) ELF file, or a table inside it is corrupt."""

    exit_code = ExitCode.BAD_INPUT


class NotGoBinaryError(BadBinaryError):
    """A valid ELF without Go metadata (no pclntab/buildinfo)."""


class NotFoundError(CgotraceError):
    exit_code = ExitCode.NOT_FOUND


class PermissionDeniedError(CgotraceError):
    exit_code = ExitCode.PERMISSION


class ProcessGoneError(NotFoundError):
    """The PID or thread vanished."""


class UsageError(CgotraceError):
    """The command line names something ambiguous (e.g. `--name` matching several)."""

    exit_code = ExitCode.USAGE


class AlreadyTracedError(PermissionDeniedError):
    """attach: another tracer (a debugger, strace, a second cgotrace) holds the process."""


class TraceFormatError(BadBinaryError):
    """A saved trace file that cannot be read."""


class TracerError(CgotraceError):
    """The tracer itself failed while running a program."""

    exit_code = ExitCode.TRACER_FAILED


class SandboxError(TracerError):
    """Setting up the sandbox (namespaces, mounts, pivot_root) failed."""


class BadImageError(CgotraceError):
    """A rootfs source (OCI layout, docker-save tarball) that cannot be used safely."""

    exit_code = ExitCode.BAD_INPUT


def output_error(path: str, e: OSError) -> CgotraceError:
    """An output file that cannot be written, as a typed one-line error."""
    reason = (e.strerror or str(e)).lower()
    message = f"cannot write {path}: {reason}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDeniedError(message, help="choose a directory you can write")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFoundError(message, help="create the directory first")
    return CgotraceError(message, exit_code=ExitCode.BAD_INPUT)
