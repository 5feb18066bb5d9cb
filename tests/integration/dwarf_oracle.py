"""An oracle for inlined frames that owes nothing to our pclntab reader: the DWARF inline
tree (DW_TAG_inlined_subroutine) of an unstripped binary, read with pyelftools."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class InlinedCall:
    """One inlined call inside a function: the callee, the caller's line, the callee's code."""

    callee: str
    call_line: int
    ranges: list[tuple[int, int]]
    inner: list[InlinedCall] = field(default_factory=list)


def _ranges(dwarf: Any, cu: Any, die: Any) -> list[tuple[int, int]]:
    attrs = die.attributes
    if "DW_AT_low_pc" in attrs:
        lo = attrs["DW_AT_low_pc"].value
        hi = attrs["DW_AT_high_pc"].value
        return [(lo, hi if attrs["DW_AT_high_pc"].form == "DW_FORM_addr" else lo + hi)]
    if "DW_AT_ranges" not in attrs:
        return []
    base = cu.get_top_DIE().attributes.get("DW_AT_low_pc")
    base_pc = base.value if base is not None else 0
    out = []
    for entry in dwarf.range_lists().get_range_list_at_offset(attrs["DW_AT_ranges"].value,
                                                              cu=cu):
        if not hasattr(entry, "begin_offset"):
            base_pc = entry.base_address  # a base-address entry
            continue
        absolute = getattr(entry, "is_absolute", False)
        lo, hi = entry.begin_offset, entry.end_offset
        out.append((lo, hi) if absolute else (base_pc + lo, base_pc + hi))
    return out


def _calls(dwarf: Any, cu: Any, die: Any) -> list[InlinedCall]:
    out = []
    for child in die.iter_children():
        if child.tag != "DW_TAG_inlined_subroutine":
            continue
        origin = child.get_DIE_from_attribute("DW_AT_abstract_origin")
        out.append(InlinedCall(origin.attributes["DW_AT_name"].value.decode(),
                               child.attributes["DW_AT_call_line"].value,
                               _ranges(dwarf, cu, child), _calls(dwarf, cu, child)))
    return out


def inlined_calls(binary: Path, function: str) -> list[InlinedCall]:
    """The calls inlined into `function` (with DWARF, i.e. not built with -s -w)."""
    from elftools.elf.elffile import ELFFile

    slash = function.rfind("/") + 1
    package = function[:function.index(".", slash)]  # Go puts one package in one CU
    with open(binary, "rb") as f:
        dwarf = ELFFile(f).get_dwarf_info()
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE().attributes.get("DW_AT_name")
            if top is None or top.value.decode() != package:
                continue
            for die in cu.iter_DIEs():
                name = die.attributes.get("DW_AT_name")
                if die.tag == "DW_TAG_subprogram" and name is not None and \
                        name.value.decode() == function:
                    return _calls(dwarf, cu, die)
    raise AssertionError(f"{function} not in the DWARF of {binary}")


def chain_at(calls: list[InlinedCall], pc: int) -> list[InlinedCall]:
    """The inlined calls active at `pc`, outermost first."""
    for call in calls:
        if any(lo <= pc < hi for lo, hi in call.ranges):
            return [call, *chain_at(call.inner, pc)]
    return []


def expected_frames(calls: list[InlinedCall], function: str, pc: int
                    ) -> list[tuple[str, int | None]]:
    """(function, line) innermost first, as a symbolizer must print them at `pc`; the
    innermost frame's line is None (DWARF's inline tree does not say it: ask addr2line)."""
    chain = chain_at(calls, pc)
    names = [c.callee for c in reversed(chain)] + [function]
    lines: list[int | None] = [None] + [c.call_line for c in reversed(chain)]
    return list(zip(names, lines, strict=True))
