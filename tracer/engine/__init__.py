"""The kernel side: engines own the tracee and turn what the kernel reports into calls on
one engine-agnostic collector (tracer/recording/collector.py).

`base` is the seam (docs/architecture.md, "Seams" 1); `ptrace_engine` is the two-stop
engine, `notify_engine` the seccomp user-notification engine, `stepping` the attach engine
(every syscall stops; no filter). `tracer/commands/run.py` picks one for a launch.
"""
