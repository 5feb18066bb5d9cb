"""The `cgotrace` command. Subcommands live one per module and are imported only when run,
so `cgotrace --help` stays instant (pyelftools alone costs ~50 ms to import)."""

from __future__ import annotations

import importlib
import io
import os
import sys
from typing import Any

import click

from tracer import __version__

# name -> (module, attribute, one-line help shown by --help without importing the module)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("tracer.cli.run", "run",
            "Run a program under the tracer and report its hidden dependencies."),
    "inspect": ("tracer.cli.inspect", "inspect",
                "What static analysis can know about a binary (ELF, Go build info, cgo)."),
    "symbolize": ("tracer.cli.symbolize", "symbolize",
                  "Turn addresses in a Go binary into function, file:line (stripped too)."),
    "report": ("tracer.cli.report", "report",
               "Findings, reports (text, json, ...) and the CI gate for a saved trace."),
    "matrix": ("tracer.cli.matrix", "matrix",
               "Will the binary work on those base images? One row per root."),
    "attach": ("tracer.cli.attach", "attach",
               "Trace a running process (PID or --name) for a while, then detach cleanly."),
    "snapshot": ("tracer.cli.snapshot", "snapshot",
                 "What a running process depends on right now, from /proc (no ptrace)."),
    "diff": ("tracer.cli.diff", "diff",
             "What changed between two traces or JSON reports (dependencies, findings)."),
    "slim": ("tracer.cli.slim", "slim",
             "The smallest root the program works in, built from its runs and proven."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (mod, _, _) in SUBCOMMANDS.items() if _module_exists(mod)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None or not _module_exists(entry[0]):
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = getattr(module, entry[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(module: str) -> bool:
    path = os.path.join(os.path.dirname(__file__), module.rsplit(".", 1)[1] + ".py")
    return os.path.exists(path)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cgotrace")
@click.option("--debug", is_flag=True, envvar="CGOTRACE_DEBUG",
              help="Show Python tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """cgotrace: the run-time dependencies a Go binary hides from readelf, and the Go code
    that causes each one.

    Exit codes: 0 ok; 1 `report --fail-on` gate failed, `slim` not proven; 2 usage;
    3 bad binary, image, trace, rule or allow-list file; 4 not found; 5 permission denied;
    6 the attached process ended during the attach; 70 internal error.
    `run` exits with the program's status (128+N for signal N), 121 when it exited 0 but
    the --fail-on gate failed, and 125/126/127 for its own failures (docs/exit-codes.md).
    """
    ctx.obj = {"debug": debug}


def usage_line(e: click.UsageError) -> str:
    """A usage error as one line: the command, what is wrong, and for an unknown option the
    nearest option that exists (`--imag` -> `--image`), so a typo is never taken for the
    program's name."""
    where = f"cgotrace {e.ctx.info_name}" if e.ctx is not None and e.ctx.parent else "cgotrace"
    if isinstance(e, click.NoSuchOption):
        line = f"{where}: no such option: {e.option_name}"
        near = e.possibilities or nearest_options(e.ctx, e.option_name)
        if near:
            line += f" (did you mean {' or '.join(near)}?)"
        return line
    message = " ".join(e.format_message().split())
    return f"{where}: {message} (see {where} --help)"


def nearest_options(ctx: click.Context | None, name: str) -> list[str]:
    """The option of `ctx`'s command spelled most like `name` (always one when any exist)."""
    import difflib

    if ctx is None:
        return []
    names = [opt for p in ctx.command.get_params(ctx) if isinstance(p, click.Option)
             for opt in (*p.opts, *p.secondary_opts)]
    return difflib.get_close_matches(name, names, n=1, cutoff=0.0)


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

    debug = os.environ.get("CGOTRACE_DEBUG") == "1" or "--debug" in (argv or sys.argv[1:])
    try:
        rc = cli.main(args=argv, prog_name="cgotrace", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("cgotrace: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        click.echo(usage_line(e), err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except CgotraceError as e:
        if debug:
            raise
        line = f"cgotrace: {e.message}"
        if e.help:
            line += f" ({e.help})"
        line = "; ".join(part.strip() for part in line.splitlines() if part.strip())
        click.echo(line, err=True)
        sys.exit(int(e.exit_code))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # a bug: one line, and how to get the traceback
        if debug:
            raise
        click.echo(f"cgotrace: internal error: {type(e).__name__}: {e} "
                   "(rerun with --debug for a traceback)", err=True)
        sys.exit(int(ExitCode.INTERNAL))
    sys.exit(rc if isinstance(rc, int) else 0)
