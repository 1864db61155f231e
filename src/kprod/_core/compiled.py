"""The optional C extension (``kprod._speedups``, built by setup.py) and the switch that turns it off.

Pure: reads one environment variable, nothing else. ``KPROD_PURE_PYTHON=1`` makes kprod run its
Python code even where the extension is built (the Python code is the reference the tests compare
the C code with).
"""

from __future__ import annotations

import os

__all__ = ["compiled_module", "pure_python_requested", "speedups_module"]

try:
    from kprod import _speedups as compiled_module
except ImportError:  # not built (no C compiler at install): the Python code does the same
    compiled_module = None  # type: ignore[assignment]


def pure_python_requested() -> bool:
    """Whether ``KPROD_PURE_PYTHON`` asks for the Python code (read at each call)."""
    return os.environ.get("KPROD_PURE_PYTHON", "") not in ("", "0")


speedups_module = None if pure_python_requested() else compiled_module
"""``kprod._speedups`` unless it is not built or ``KPROD_PURE_PYTHON`` turned it off at import."""
