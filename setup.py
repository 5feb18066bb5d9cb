"""Build hook for the one compiled part: tracer.engine._native (the notify engine's per-call
loop, tracer/engine/_native.c). Everything else is in pyproject.toml.

`optional=True`: a machine without a C compiler or Python headers still installs cgotrace;
the notify engine then runs its pure-Python path and `run -v` says why
(tracer/engine/native.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tracer.engine._native", ["tracer/engine/_native.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra"],
                             optional=True)])
