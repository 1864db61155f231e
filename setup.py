"""Build of the optional C extension; everything else is in pyproject.toml.

``kprod._speedups`` is the per-record fast path in C (src/kprod/_speedups.c): the core's
``try_append_plain`` and ``Producer.send``'s first branch.
It is optional: when it cannot be compiled (no C compiler, no Python headers) the install goes on
and kprod uses the Python closure that does the same (``kprod._core.appender``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kprod._speedups",
            sources=["src/kprod/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
