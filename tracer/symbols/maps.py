"""Compatibility alias: process state moved to `tracer.process.images` (and the maps
parser to `tracer.process.maps`). Nothing in tracer/ imports this module; it exists for
callers written before the move and will be removed."""

from tracer.process.images import (  # noqa: F401
    ImageCache,
    LoadedImage,
    MapsRegistry,
    Module,
    ProcessMaps,
)
from tracer.process.maps import Mapping, parse_maps, read_proc_maps  # noqa: F401
