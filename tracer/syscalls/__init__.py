"""The watched syscalls: table (nr -> spec), the seccomp filter, and argument decoders."""
