"""cgotrace: find what a Go binary really needs at run time, and the Go code that needs it."""

__version__ = "0.1.0"
