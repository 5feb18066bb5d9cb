"""The work of `cgotrace run` once its options are parsed: by click (tracer/cli/run.py) or,
for the plainest command lines, by tracer/cli/fastpath.py without importing click at all.
This module imports no click: a usage error found here is raised by the helper that finds
it, which imports click then."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from tracer.errors import ExitCode

if TYPE_CHECKING:
    from tracer.gate import GateResult


def run_program(*, output: str | None, json_file: str | None, reports: tuple[str, ...],
                quiet: bool, fail_on: str | None, allow: str | None,
                probes: tuple[str, ...], color: bool | None, source_root: str | None,
                rootfs: str | None, image: str | None, network: str | None, engine: str,
                env_vars: tuple[str, ...], env_file: str | None, verbose: bool,
                no_stacks: bool, program: tuple[str, ...], debug: bool) -> int:
    """Trace `program` as `cgotrace run` does; the exit status cgotrace ends with (the
    program's, 128+N for signal N, or 121 for a failed gate: docs/exit-codes.md)."""
    from tracer.attribution.policy import LazyAttributor
    from tracer.cli._reporting import check_report_paths, emit_reports, parse_report_specs
    from tracer.commands.run import RunOptions, program_environment, trace_program
    from tracer.errors import CgotraceError

    specs = parse_report_specs(reports) + ([("json", json_file)] if json_file else [])
    gated_run = fail_on is not None or allow is not None
    rules = None
    if probes or gated_run:  # the gate (TOML, glob and spelling help) only when asked for
        from tracer.gate import check_options, rules_for

        rules = rules_for(probes)
        if gated_run:  # bad gate options fail before the run
            check_options(fail_on, allow, rules)
    check_report_paths(specs)  # as --output: an unwritable report fails before the run
    env = program_environment(env_file, env_vars)  # checked before the program starts
    attributor = None if no_stacks else LazyAttributor()
    # the findings are read by a report, the gate, or the text report on stderr
    analyze = bool(specs) or not quiet or fail_on is not None or allow is not None
    try:
        result = trace_program(RunOptions(argv=list(program), output=output, rootfs=rootfs,
                                          image=image, network=network, env=env,
                                          debug=debug,
                                          attributor=attributor, rules=rules,
                                          engine=engine, verbose=verbose,
                                          analyze=analyze))
    except CgotraceError as e:  # exec failed: still write the reports; stderr gets one line
        analysis = getattr(e, "analysis", None)
        if analysis is not None:  # on stderr only when it explains the failure
            emit_reports(analysis, specs, quiet or not analysis.findings, color,
                         _gate(analysis, fail_on, allow), source_root)
        raise
    gated = _gate(result.analysis, fail_on, allow)  # None without a gate (or findings)
    emit_reports(result.analysis, specs, quiet, color, gated, source_root)
    if not quiet and result.crash:
        print(result.crash, file=sys.stderr)
    if result.diagnosis is not None:  # the program never ran: say why even with -q
        print(f"cgotrace: {result.diagnosis.line}", file=sys.stderr)
    sys.stdout.flush()
    code = result.status.shell_code
    if code == 0 and gated is not None and gated.failed:
        code = int(ExitCode.RUN_POLICY)
    return code


def _gate(analysis: Any, fail_on: str | None, allow: str | None) -> GateResult | None:
    """tracer.gate.gate, imported only when --fail-on or --allow asks for a gate."""
    if fail_on is None and allow is None:
        return None
    from tracer.gate import gate

    return gate(analysis, fail_on, allow)
