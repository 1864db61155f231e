"""Build of the optional C extension; everything else is in pyproject.toml.

``kprod._core._fastappend`` is the per-record append fast path in C (src/kprod/_core/_fastappend.c).
It is optional: when it cannot be compiled (no C compiler, no Python headers) the install goes on
and kprod uses the Python closure that does the same (``kprod._core.appender``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kprod._core._fastappend",
            sources=["src/kprod/_core/_fastappend.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
