"""The project stands alone: code, tests and docs cite only documents inside the repository
(the facts they rely on are in docs/go-runtime.md and docs/ptrace-facts.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Split so that this file does not match itself.
_OUTSIDE = re.compile("|".join([r"\.\./" + "shared/", "shared/" + "reference", "DESIGN" + r"\.md",
                                "go-" + "internals", "/wo" + "rk/"]))
_TREES = ("tracer", "probes", "tests", "docs", "sample_apps", "bench")


def test_no_reference_to_documents_outside_the_repository() -> None:
    files = [ROOT / "README.md"] + [p for t in _TREES for p in (ROOT / t).rglob("*")
                                    if p.is_file() and p.suffix in (".py", ".md", ".toml",
                                                                    ".go", ".txt")]
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in files
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), start=1)
            if _OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)



def test_pyproject_uses_the_current_license_form() -> None:
    """`pip install .` warned that a `project.license` table is deprecated: the license is an
    SPDX string, which needs setuptools >= 77 to build."""
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in meta["build-system"]["requires"]
