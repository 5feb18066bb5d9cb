"""`cgotrace inspect BINARY [--json] [--rootfs DIR]`: what static analysis can know.

Thin: parse, call `tracer.binary.facts.inspect_binary`, render. Exit codes: 0 report printed
(a non-Go ELF included); 3 not ELF / truncated / corrupt Go tables, and a non-x86-64 ELF
(its ELF facts are still printed); 4 binary or rootfs missing; 5 permission denied.
"""

from __future__ import annotations

import json

import click

from tracer.errors import BadBinaryError
from tracer.reporters.static_facts import render_text


@click.command(name="inspect")
@click.argument("binary", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.option("--rootfs", type=str, default=None, metavar="ROOT",
              help="Resolve the interpreter, libraries and nsswitch.conf inside this root: "
              "a directory, an OCI layout, a `docker save` or root filesystem (`podman "
              "export`) tarball, or a preset (scratch, static, musl, glibc), as for `run`.")
@click.option("--image", metavar="NAME",
              help="The same, in an image from the local podman (or docker).")
def inspect(binary: str, as_json: bool, rootfs: str | None, image: str | None) -> None:
    """What static analysis can know about BINARY: ELF facts, Go build info, cgo, the
    run-time dependencies the knowledge base predicts, and (with --rootfs or --image)
    whether the loader will find what it needs in that root."""
    from tracer.binary.facts import inspect_binary

    root = None
    if rootfs is not None or image is not None:
        from tracer.sandbox.images import resolve_source

        root = str(resolve_source(rootfs, image))
    facts = inspect_binary(binary, rootfs=root)
    d = facts.to_dict()
    click.echo(json.dumps(d, indent=2) if as_json else render_text(d))
    if not facts.elf.arch_supported:
        raise BadBinaryError(f"{binary}: {facts.elf.machine} binary: cgotrace traces x86-64 "
                             "only (ELF facts printed above)")
