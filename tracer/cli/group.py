"""The click face of `cgotrace`: the group, its lazily imported subcommands (one module
each, imported only when run, so `cgotrace --help` stays instant: pyelftools alone costs
~50 ms to import) and the one-line usage errors. Imported by `tracer.cli.main` only when a
command line needs click (tracer/cli/fastpath.py takes the plainest `run` lines without it).
"""

from __future__ import annotations

import importlib
import os

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
