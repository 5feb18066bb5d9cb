"""`make demo`: what cgotrace shows on two built-in samples, in sandboxes, in five steps.

1. `cgotrace inspect` on the cgo build of userlookup: what static analysis sees.
2. `cgotrace run --rootfs glibc` on it: the hidden dependencies observed at run time.
3. `cgotrace run --rootfs scratch` on it: why the same binary cannot even start there.
4. `cgotrace run --rootfs glibc --network <netns>` on dnslookup: name lookups in a network
   namespace with nothing but lo (resolv.conf names 127.0.0.1), where a local responder
   answers svc.cgotrace.test, so nothing leaves the host.
5. `cgotrace report --fail-on hidden` on the trace of step 2: the CI gate fails (exit 1),
   and passes (exit 0) on the pure-Go build traced the same way.
6. `cgotrace report` re-reads the trace saved in step 2: the findings, the Go code behind
   each, and the fixes (build tags, Dockerfile COPY lines). The demo ends with them.

Each step prints the command, then cgotrace's own output. Exit 0 when every step behaved as
described (step 3 is expected to fail to exec, with a diagnosis; step 5's first gate is
expected to fail).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from sample_apps.build import ROOT, BuildError, build
from sample_apps.dnsresponder import Responder
from tracer.sandbox.netns import LoopbackNetwork

CGOTRACE = [str(Path(sys.executable).parent / "cgotrace")]


def step(title: str, args: list[str], expect_ok: bool = True, quiet: bool = False) -> bool:
    print(f"\n== {title}\n$ cgotrace {shlex.join(args)}", flush=True)
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.run([*CGOTRACE, *args], stdin=subprocess.DEVNULL, timeout=300,
                          stdout=out)
    print(f"(exit {proc.returncode})", flush=True)
    ok = (proc.returncode == 0) == expect_ok
    if not ok:
        print(f"demo: unexpected exit status {proc.returncode}", file=sys.stderr)
    return ok


def main() -> int:
    if not Path(CGOTRACE[0]).exists():
        print("demo: cgotrace is not installed in this venv (make venv)", file=sys.stderr)
        return 1
    try:
        users = str(build("userlookup", "cgo"))
        users_pure = str(build("userlookup", "pure"))
        dns = str(build("dnslookup", "cgo"))
    except BuildError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    trace = str(ROOT / ".cache" / "demo-userlookup.jsonl")
    trace_pure = str(ROOT / ".cache" / "demo-userlookup-pure.jsonl")
    results = [
        step("1. static view: readelf-level facts and the cgo packages compiled in",
             ["inspect", users]),
        step("2. run in a Debian-like root: what the binary really touches, and the findings",
             ["run", "--rootfs", "glibc", "--output", trace, "--", users]),
        step("3. run in an empty (scratch) root: exec fails, and cgotrace says why",
             ["run", "--rootfs", "scratch", "--", users], expect_ok=False),
    ]
    # DNS stays inside a network namespace with nothing but lo, where the demo's responder
    # answers svc.cgotrace.test on 127.0.0.1:53 (the root's resolv.conf names 127.0.0.1).
    with LoopbackNetwork(service=lambda: Responder(port=53, timeout=300)) as net:
        results.append(step(
            "4. DNS in a loopback-only network namespace, answered by a local responder",
            ["run", "--rootfs", "glibc", "--network", net.netns_path, "--", dns, "-svc"]))
    # the gate a CI step runs: the cgo build fails it, the pure-Go build passes
    results.append(step("5a. CI gate on the saved trace: hidden dependencies fail it (exit 1)",
                        ["report", "--fail-on", "hidden", trace], expect_ok=False, quiet=True))
    results.append(step("5b. the pure-Go build (CGO_ENABLED=0) traced the same way passes",
                        ["run", "-q", "--rootfs", "glibc", "--output", trace_pure,
                         "--fail-on", "hidden", "--", users_pure], quiet=True))
    results.append(step("6. later, post-incident: the findings and fixes of step 2's trace",
                        ["report", trace]))
    print(f"\ndemo: {sum(results)}/{len(results)} steps behaved as expected")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
