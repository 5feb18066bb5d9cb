"""Names for the raw frames of a walk: function, file and line, with inlined calls expanded.

A Go image answers from its pclntab (which also knows the calls inlined at a PC); anything
else, or a PC the line table does not cover, from the ELF symbol table. Each name also
keeps what kind of code the frame is ("go", "c", "unknown"), as the unwinder said.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

from tracer.attribution.modules import LoadedImage
from tracer.trace.model import Frame
from tracer.unwind.stack import RawFrame


@dataclass(frozen=True, slots=True)
class NamedFrame:
    """A symbolized frame and what kind of code it is ("go", "c", "unknown")."""

    frame: Frame
    kind: str


class Symbolizer:
    """Names frames; results cached per (image, link-time pc, return-address flag)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, bool], tuple[tuple[Frame, ...], str]] = {}

    def name(self, raw: RawFrame) -> list[NamedFrame]:
        """The frames at `raw` (several when calls were inlined there), innermost first."""
        mod = raw.module
        if mod is None or mod.image is None:
            name = mod.name if mod is not None else None
            return [NamedFrame(Frame(None, module=name, pc=raw.pc), raw.kind)]
        rel = raw.pc - mod.bias
        key = (id(mod.image), rel, raw.is_return)
        hit = self._cache.get(key)
        if hit is None:
            hit = (_frames(cast(LoadedImage, mod.image), rel, raw), raw.kind)
            self._cache[key] = hit
        frames, kind = hit
        return [NamedFrame(replace(f, pc=raw.pc, module=mod.name), kind) for f in frames]


def _frames(img: LoadedImage, rel: int, raw: RawFrame) -> tuple[Frame, ...]:
    pcln = img.pcln
    if pcln is not None:
        try:
            found = pcln.frames(rel, is_return_address=raw.is_return)
        except Exception:  # noqa: BLE001 - a corrupt line table must not lose the stack
            found = []
        if found:
            return tuple(found)
    look = rel - 1 if raw.is_return else rel
    return (Frame(img.symbol_for(look)),)
