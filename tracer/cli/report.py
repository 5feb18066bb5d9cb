"""`cgotrace report TRACE`: re-render a saved trace as findings (text, json, ...), and
optionally gate on them (`--fail-on`, `--allow`; exit 1 when the gate fails)."""

from __future__ import annotations

import click

from tracer.cli._reporting import check_format, color_option, echo_report
from tracer.errors import ExitCode
from tracer.gate import check_options, gate, rules_for


@click.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("-f", "--format", "fmt", default=None, callback=check_format,
              metavar="FORMAT", help="text (default), json, or another installed format "
              "(sarif, dot, html, cyclonedx).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the report to this file instead of stdout.")
@click.option("--fail-on", metavar="LIST",
              help="Exit 1 when findings match: ids (globs), error/warning/info (threshold), "
              "hidden, cgo, missing; comma-separated.")
@click.option("--allow", type=click.Path(dir_okay=False), metavar="FILE",
              help="TOML allow-list ([[allow]] id, path, reason): matches are reported as "
              "allowed and do not fail the gate.")
@click.option("--probes", multiple=True, metavar="DIR",
              help="Extra finding rules: every *.toml with [[finding]] tables in DIR.")
@click.option("--color/--no-color", default=None,
              help="Colour the text report (default: on a terminal unless NO_COLOR is set).")
@click.option("--source-root", type=click.Path(exists=True, file_okay=False), metavar="DIR",
              help="Name source files relative to DIR in reports that locate them (SARIF); "
              "default: the Go module root (the go.mod of the binary's main module).")
@click.option("--rootfs", metavar="ROOT",
              help="cyclonedx: the root the trace ran in, when it is no longer where the "
              "trace says (a directory, image tarball or preset).")
@click.pass_context
def report(ctx: click.Context, trace: str, fmt: str | None, as_json: bool,
           output: str | None, fail_on: str | None, allow: str | None,
           probes: tuple[str, ...], color: bool | None, source_root: str | None,
           rootfs: str | None) -> None:
    """Re-read a saved trace (from `cgotrace run --output`) and report its findings, the
    Go code behind each, the hidden dependencies and the fixes."""
    from probes.analysis import analyze_trace
    from tracer.cli._reporting import write_report
    from tracer.trace.recorder import read_trace

    fmt = fmt or ("json" if as_json else "text")
    rules = rules_for(probes)
    check_options(fail_on, allow, rules)  # a typo is a usage error before the trace is read
    analysis = analyze_trace(read_trace(trace), rules=rules)
    result = gate(analysis, fail_on, allow)
    if result is not None:
        analysis = result.analysis
    if output:
        write_report(analysis, fmt, output, source_root, rootfs)
    else:
        echo_report(analysis, fmt, color=color_option(color), source_root=source_root,
                    rootfs=rootfs)
    if result is not None and fail_on is not None:
        click.echo(result.summary_line(), err=True)
        if result.failed:
            ctx.exit(int(ExitCode.POLICY))
