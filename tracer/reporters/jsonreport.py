"""The JSON report: `Analysis.to_dict()` under a versioned envelope.

Documented in docs/findings.md ("Reports") and described by the JSON Schema shipped
as tracer/reporters/schema/report-v1.schema.json (`SCHEMA_PATH`). Fields may be added in
a minor revision; none is renamed without a new `version`.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from tracer import __version__

if TYPE_CHECKING:
    from probes.records import Analysis

FORMAT = "cgotrace-report"
VERSION = 1


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of this report, as shipped in the package."""
    text = resources.files("tracer.reporters").joinpath("schema/report-v1.schema.json")
    data: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return data


def document(analysis: Analysis) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "cgotrace": __version__,
            **analysis.to_dict()}


def render(analysis: Analysis, *, color: bool = False) -> str:
    return json.dumps(document(analysis), indent=2, sort_keys=False) + "\n"
