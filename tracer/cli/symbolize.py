"""`cgotrace symbolize BINARY [ADDR ...]`: addresses -> Go function, file:line, inlined frames.

Works on stripped binaries (pclntab survives `-s -w`). Addresses come from the arguments or,
when there are none, from stdin (one per line, hex with or without 0x). For PIE binaries the
addresses are link-time unless --pid (load bias read from /proc/PID/maps) or --bias is given.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import click

from tracer.errors import NotFoundError, PermissionDeniedError, ProcessGoneError

if TYPE_CHECKING:
    from tracer.trace.model import Frame


@click.command("symbolize")
@click.argument("binary", type=click.Path(path_type=str))
@click.argument("addresses", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {addr, frames}.")
@click.option("--pid", type=int, help="Addresses are run-time addresses in this process: "
              "subtract its load bias for BINARY (from /proc/PID/maps).")
@click.option("--bias", help="Subtract this load bias (hex) from every address.")
@click.option("--return-addresses", is_flag=True,
              help="Addresses are return addresses (look up addr-1, as in a stack trace).")
def symbolize(binary: str, addresses: tuple[str, ...], as_json: bool, pid: int | None,
              bias: str | None, return_addresses: bool) -> None:
    """Turn addresses in a Go BINARY into function, file:line (stripped binaries too).

    Each address prints its frames innermost first; inlined calls are marked. An address
    outside any Go function prints `??`. Exit codes: 3 not a (Go) ELF binary, 4 not found.
    """
    from tracer.binary.elf import ElfImage
    from tracer.binary.pclntab import PclnTable

    if pid is not None and bias is not None:
        raise click.UsageError("give --pid or --bias, not both")
    img = ElfImage.open(binary)
    table = PclnTable.from_image(img)
    load_bias = 0
    if bias is not None:
        parsed = parse_address(bias)
        if parsed is None:
            raise click.BadParameter(f"not a hex number: {bias!r}", param_hint="--bias")
        load_bias = parsed
    elif pid is not None:
        load_bias = load_bias_from_maps(binary, pid, img.min_vaddr())
    source: Iterable[str] = addresses if addresses else _stdin_lines()
    results: list[dict[str, object]] = []
    for text in source:
        addr = parse_address(text)
        if addr is None:
            raise click.BadParameter(f"not a hex address: {text.strip()!r}",
                                     param_hint="ADDRESS")
        frames = table.frames(addr - load_bias, is_return_address=return_addresses)
        if as_json:
            results.append({"addr": hex(addr), "frames": [
                {"function": f.function, "file": f.file, "line": f.line, "inlined": f.inlined}
                for f in frames]})
        else:
            click.echo(format_text(addr, frames))
    if as_json:
        click.echo(json.dumps(results, indent=2))


def _stdin_lines() -> Iterator[str]:
    for line in sys.stdin:
        if line.strip():
            yield line


def parse_address(text: str) -> int | None:
    """'0x4a1b2c', '4a1b2c' or '0X4A1B2C' -> int; None if it is not hex."""
    t = text.strip().lower().removeprefix("0x")
    if not t or len(t) > 16 or any(c not in "0123456789abcdef" for c in t):
        return None
    return int(t, 16)


def format_text(addr: int, frames: Sequence[Frame]) -> str:
    """One row per frame, innermost first; rows after the first are indented."""
    head = f"{addr:#x}"
    if not frames:
        return f"{head}  ??"
    rows = []
    for i, f in enumerate(frames):
        where = ""
        if f.file is not None or f.line is not None:
            where = f"  {f.file or '?'}:{f.line if f.line is not None else '?'}"
        mark = " (inlined)" if f.inlined else ""
        prefix = head if i == 0 else " " * len(head)
        rows.append(f"{prefix}  {f.function or '??'}{where}{mark}")
    return "\n".join(rows)


def load_bias_from_maps(binary: str, pid: int, min_vaddr: int) -> int:
    """Load bias of `binary` in process `pid`: start of its offset-0 mapping - min vaddr."""
    try:
        st = os.stat(binary)
    except OSError as e:
        raise NotFoundError(f"{binary}: {e.strerror}") from None
    from tracer.process.maps import parse_maps, read_proc_maps

    maps = f"/proc/{pid}/maps"
    try:
        mappings = parse_maps(read_proc_maps(pid))
    except FileNotFoundError:
        raise ProcessGoneError(f"no process {pid}") from None
    except PermissionError:
        raise PermissionDeniedError(f"{maps}: permission denied",
                                    help="run as the process owner or root") from None
    for m in mappings:
        if m.inode != st.st_ino or m.offset != 0 or not m.path:
            continue
        path = m.path.removesuffix(" (deleted)")
        if os.path.basename(path) != os.path.basename(os.path.realpath(binary)) and \
                os.path.realpath(path) != os.path.realpath(binary):
            continue
        return m.start - min_vaddr
    raise NotFoundError(f"{binary} is not mapped in process {pid}",
                         help="pass the process's own executable, or --bias")
