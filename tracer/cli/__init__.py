"""The `cgotrace` command: `main`, the console entry point. The click group and its
subcommands are in tracer/cli/group.py, imported only when a command line needs click: the
plainest `run` lines (tracer/cli/fastpath.py) start the program without importing it.
`tracer.cli.cli` and the other names of group.py are still found here (imported on use)."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

_GROUP_NAMES = ("cli", "LazyGroup", "SUBCOMMANDS", "usage_line", "nearest_options")


def __getattr__(name: str) -> Any:
    """`from tracer.cli import cli` and the other click-bound names, from tracer.cli.group."""
    if name in _GROUP_NAMES:
        from tracer.cli import group

        return getattr(group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Discard(io.TextIOBase):
    """A text stream that keeps nothing (in place of a stdout/stderr that was closed)."""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        return len(text)


class ClosedPipeGuard:
    """A text stream that drops what it is given once its reader has gone (EPIPE).

    `cgotrace run ... 2>&1 | head -1` closes the tracer's stderr while the report is being
    written. The exit status must still be the program's (or the gate's): a
    BrokenPipeError reaching click becomes exit 1, and one at interpreter exit becomes 120.
    The stream's descriptor is pointed at /dev/null, so later writes and the final flush
    succeed and the status survives; everything else passes through to the real stream.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.reader_gone = False

    def write(self, text: Any) -> int:
        if self.reader_gone:
            return len(text)
        try:
            written: int = self.stream.write(text)
            return written
        except BrokenPipeError:
            self._drop()
            return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        self.reader_gone = True
        try:
            fd = self.stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            self.stream.flush()  # what was buffered for the pipe now goes to /dev/null
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> Any:
    """The console entry point: one line and a documented exit code for every failure
    (docs/exit-codes.md); a closed stdout or stderr never changes the exit status."""
    from tracer.cli.dataclass_code import install

    install()  # before any subcommand's module creates its dataclasses
    out, err = sys.stdout, sys.stderr
    # None: cgotrace was started with that descriptor closed; its output goes nowhere (no
    # descriptor is opened in its place: the traced program inherits the closed one)
    sys.stdout = ClosedPipeGuard(out if out is not None else Discard())
    sys.stderr = ClosedPipeGuard(err if err is not None else Discard())
    try:
        _main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = out, err


def _main(argv: list[str] | None) -> Any:
    from tracer.errors import CgotraceError, ExitCode

    args = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("CGOTRACE_DEBUG") == "1" or "--debug" in args
    try:
        rc = _dispatch(args)
    except CgotraceError as e:
        if debug:
            raise
        line = f"cgotrace: {e.message}"
        if e.help:
            line += f" ({e.help})"
        line = "; ".join(part.strip() for part in line.splitlines() if part.strip())
        print(line, file=sys.stderr, flush=True)
        sys.exit(int(e.exit_code))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        if "click" in sys.modules:  # only click raises its own exceptions
            _exit_for_click_error(e)
        if debug:
            raise
        print(f"cgotrace: internal error: {type(e).__name__}: {e} "
              "(rerun with --debug for a traceback)", file=sys.stderr, flush=True)
        sys.exit(int(ExitCode.INTERNAL))
    sys.exit(rc if isinstance(rc, int) else 0)


def _dispatch(args: list[str]) -> Any:
    """Run the command line: a plain `run` without click, anything else through it."""
    from tracer.cli.fastpath import parse_run

    params = parse_run(args)
    if params is not None:
        from tracer.cli.run_program import run_program

        return run_program(**params, debug=False)
    from tracer.cli.group import cli

    return cli.main(args=args, prog_name="cgotrace", standalone_mode=False)


def _exit_for_click_error(e: Exception) -> None:
    """Exit as click's standalone mode would, but in one line (usage_line); returns when
    `e` is not one of click's."""
    import click

    from tracer.cli.group import usage_line

    if isinstance(e, click.exceptions.Abort):
        click.echo("cgotrace: aborted", err=True)
        sys.exit(130)
    if isinstance(e, click.UsageError):
        click.echo(usage_line(e), err=True)
        sys.exit(e.exit_code)
    if isinstance(e, click.ClickException):
        e.show()
        sys.exit(e.exit_code)
    if isinstance(e, click.exceptions.Exit):
        sys.exit(e.exit_code)
