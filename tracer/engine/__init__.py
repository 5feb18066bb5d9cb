"""Engines own the tracee; one collector turns their events into records.

`base` fixes the seam (docs/architecture.md, "Shared seams §1"), `collector` is the
engine-agnostic part, `ptrace_engine` the two-stop engine; `make_engine` picks one.
"""
