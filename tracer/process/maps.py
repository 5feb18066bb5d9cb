"""/proc/PID/maps and /proc/TID/status: the one parser of a process's mappings.

Everything that needs a process's mappings (the module map of the unwinder, the
interpreter ranges the collector reads at exec, `symbolize --pid`) parses them here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mapping:
    """One line of /proc/PID/maps."""

    start: int
    end: int
    perms: str  # "r-xp"
    offset: int
    dev: str
    inode: int
    path: str  # "" for anonymous memory; "[vdso]", "[stack]", ...

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def is_file(self) -> bool:
        return self.inode != 0 and self.path.startswith("/")


def parse_maps(text: str) -> list[Mapping]:
    """Parse the text of /proc/PID/maps; malformed lines are skipped."""
    out: list[Mapping] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, hi = parts[0].split("-", 1)
            out.append(Mapping(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16), parts[3],
                               int(parts[4]), parts[5].strip() if len(parts) > 5 else ""))
        except ValueError:
            continue
    return out


def read_proc_maps(pid: int) -> str:
    """The text of /proc/PID/maps (OSError when the process is gone)."""
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def process_maps(pid: int) -> list[Mapping]:
    """The parsed mappings of `pid`; empty when it is gone or unreadable."""
    try:
        return parse_maps(read_proc_maps(pid))
    except OSError:
        return []


def interpreter_ranges(pid: int, exe: str | None
                       ) -> tuple[str | None, tuple[tuple[int, int], ...]]:
    """(interpreter path, its mapped ranges) at an exec stop.

    At that point only the kernel's mappings exist: the binary, its interpreter, the vdso
    and the stack, so file mappings that are not the binary are the interpreter's.
    """
    ranges: list[tuple[int, int]] = []
    interp: str | None = None
    for m in process_maps(pid):
        if not m.path.startswith("/") or m.path == exe or m.path.endswith(" (deleted)"):
            continue
        ranges.append((m.start, m.end))
        interp = interp or m.path
    return interp, tuple(ranges)


def tgid(tid: int) -> int:
    """The thread group (process) of `tid`, from /proc/TID/status; `tid` when unknown."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return tid
