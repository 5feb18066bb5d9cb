"""Process state read from /proc: mappings, thread groups, loaded images (no ptrace)."""
