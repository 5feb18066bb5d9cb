"""`cgotrace run` without click for the plainest command lines, the ones CI jobs and the bench
start most: `run [-q|--quiet] [-v|--verbose] [--no-stacks] [--] PROGRAM [ARGS...]`.

Importing click costs ~20 ms of every start on a 2-core machine (its modules, and uuid,
platform, datetime and gettext, which it imports at load), as much as the bare interpreter's
own start. Any other command line (another option, combined short flags, `--help`, a missing
program) and a set CGOTRACE_DEBUG or CGOTRACE_ENGINE (click reads and checks those) go
through click as before: its messages and exit codes stay the only ones. The values given to
`run_program` are click's own defaults: tests/unit/test_cli_fastpath.py has click parse every
shape accepted here and requires the same values.
"""

from __future__ import annotations

import os
from typing import Any

# the flags taken without click, and the parameter each sets
FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose",
         "--no-stacks": "no_stacks"}
# tracer/cli/run.py's defaults (click's parse of a bare `run PROGRAM`)
DEFAULTS: dict[str, Any] = {
    "output": None, "json_file": None, "reports": (), "quiet": False, "fail_on": None,
    "allow": None, "probes": (), "color": None, "source_root": None, "rootfs": None,
    "image": None, "network": None, "engine": "auto", "env_vars": (), "env_file": None,
    "verbose": False, "no_stacks": False,
}
ENV_READ_BY_CLICK = ("CGOTRACE_DEBUG", "CGOTRACE_ENGINE")


def parse_run(args: list[str]) -> dict[str, Any] | None:
    """`run_program`'s parameters for `args` (the words after `cgotrace`), or None when
    click must parse them."""
    if not args or args[0] != "run" or any(v in os.environ for v in ENV_READ_BY_CLICK):
        return None
    params = dict(DEFAULTS)
    i = 1
    while i < len(args) and args[i] in FLAGS:
        params[FLAGS[args[i]]] = True
        i += 1
    if i < len(args) and args[i] == "--":
        i += 1
    elif i < len(args) and args[i].startswith("-"):
        return None  # an option of click's (or a typo it names): click says which
    if i >= len(args):
        return None  # no program: click's usage error
    params["program"] = tuple(args[i:])
    return params
