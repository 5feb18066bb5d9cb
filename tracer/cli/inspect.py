"""`cgotrace inspect BINARY [--json] [--rootfs DIR]`: what static analysis can know.

Thin: parse, call `tracer.static.inspect_binary`, render. Exit codes: 0 report printed
(a non-Go ELF included); 3 not ELF / truncated / corrupt Go tables, and a non-x86-64 ELF
(its ELF facts are still printed); 4 binary or rootfs missing; 5 permission denied.
"""

from __future__ import annotations

import json

import click

from tracer.errors import BadBinaryError
from tracer.reporters.inspect import render_text


@click.command(name="inspect")
@click.argument("binary", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--rootfs", type=str, default=None, metavar="DIR",
              help="Resolve the interpreter, libraries and nsswitch.conf inside this root.")
def inspect(binary: str, as_json: bool, rootfs: str | None) -> None:
    """What static analysis can know about BINARY: ELF facts, Go build info, cgo, the
    run-time dependencies the knowledge base predicts, and (with --rootfs) whether the
    loader will find what it needs in that root."""
    from tracer.static import inspect_binary

    facts = inspect_binary(binary, rootfs=rootfs)
    d = facts.to_dict()
    click.echo(json.dumps(d, indent=2) if as_json else render_text(d))
    if not facts.elf.arch_supported:
        raise BadBinaryError(f"{binary}: {facts.elf.machine} binary: cgotrace traces x86-64 "
                             "only (ELF facts printed above)")
