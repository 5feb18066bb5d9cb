"""Process state read from /proc: mappings, thread groups, a process's facts and sockets
(no ptrace)."""
