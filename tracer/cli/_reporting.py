"""What `run` and `report` share: loading rules, rendering reports, writing them, the gate."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # click itself only where a usage error is raised: `run` may go without it
    import click

    from probes.records import Analysis
    from tracer.gate import GateResult


def parse_report_specs(values: Iterable[str]) -> list[tuple[str, str]]:
    """`--report FORMAT=FILE` values -> [(format, file)]; click usage error when malformed."""
    values = tuple(values)
    if not values:
        return []
    import click

    from tracer.reporters import available

    out = []
    for v in values:
        fmt, sep, path = v.partition("=")
        if not sep or not fmt or not path:
            raise click.BadParameter(f"{v!r}: expected FORMAT=FILE, e.g. json=report.json",
                                     param_hint="--report")
        if fmt not in available():
            raise click.BadParameter(f"{fmt!r}: unknown format (available: "
                                     f"{', '.join(available())})", param_hint="--report")
        out.append((fmt, path))
    return out


def check_report_paths(specs: Iterable[tuple[str, str]]) -> None:
    """Every `--report FORMAT=FILE` destination can be written, checked before the program
    starts (as `--output` is): a missing directory is exit 4, a read-only one 5, a
    directory in place of the file 3 (tracer.errors.output_error). A file that did not
    exist is removed again, so a failed run leaves no empty report behind."""
    from tracer.errors import output_error

    for _fmt, path in specs:
        existed = os.path.lexists(path)
        try:
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as e:
            raise output_error(path, e) from None
        if not existed:
            with contextlib.suppress(OSError):
                os.unlink(path)


def check_format(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    import click

    from tracer.reporters import available

    if value is not None and value not in available():
        raise click.BadParameter(f"{value!r}: unknown format (available: "
                                 f"{', '.join(available())})")
    return value




def for_format(analysis: Analysis, fmt: str, rootfs: str | None = None) -> Analysis:
    """`analysis` with what `fmt` needs beyond it: the OS packages of the run's root for an
    SBOM (tracer/commands/sbom.py)."""
    from tracer.reporters import NEEDS_INVENTORY

    if fmt not in NEEDS_INVENTORY:
        return analysis
    from tracer.commands.sbom import attach_inventory

    return attach_inventory(analysis, rootfs)


def write_report(analysis: Analysis, fmt: str, path: str, source_root: str | None = None,
                 rootfs: str | None = None) -> None:
    from tracer.reporters import render

    text = render(for_format(analysis, fmt, rootfs), fmt, color=False,
                  source_root=source_root)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:  # one line, exit 5/4/3 as for --output (docs/exit-codes.md)
        from tracer.errors import output_error

        raise output_error(path, e) from None


def echo_report(analysis: Analysis, fmt: str, stream: IO[str] | None = None,
                color: bool | None = None, source_root: str | None = None,
                rootfs: str | None = None) -> None:
    from tracer.reporters import render, want_color

    stream = stream or sys.stdout
    use = want_color(stream) if color is None and fmt == "text" else bool(color)
    stream.write(render(for_format(analysis, fmt, rootfs), fmt, color=use,
                        source_root=source_root))
    stream.flush()


def color_option(value: bool | None) -> bool | None:
    if value is None and os.environ.get("NO_COLOR"):
        return False
    return value


def emit_reports(analysis: Analysis | None, specs: list[tuple[str, str]], quiet: bool,
                 color: bool | None, gated: GateResult | None,
                 source_root: str | None = None) -> None:
    """Reports to their files, the text report to stderr, the gate's line (run, attach).
    `analysis` is None only when nothing reads it (no report, quiet, no gate)."""
    if gated is not None:
        analysis = gated.analysis
    if analysis is None:
        return
    for fmt, path in specs:
        write_report(analysis, fmt, path, source_root)
    if not quiet:
        sys.stdout.flush()
        echo_report(analysis, "text", stream=sys.stderr, color=color_option(color))
    if gated is not None and gated.analysis.gate and gated.analysis.gate.get("fail_on"):
        print(gated.summary_line(), file=sys.stderr)
