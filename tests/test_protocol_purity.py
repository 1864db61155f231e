"""The pure layers (protocol, records, _core) import no I/O, clock or threading module.

Walks the AST of every Python file under src/kprod/protocol, src/kprod/records and
src/kprod/_core (whatever exists of them) and checks every import statement.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "kprod"
PURE_PACKAGES = ("protocol", "records", "_core")
FORBIDDEN = frozenset({"asyncio", "socket", "ssl", "threading", "select", "selectors", "time"})


def _pure_files() -> list[Path]:
    return sorted(p for pkg in PURE_PACKAGES if (SRC / pkg).is_dir() for p in (SRC / pkg).rglob("*.py"))


def forbidden_imports(source: str) -> list[str]:
    """Top-level module names of forbidden imports in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in FORBIDDEN]
    return found


def test_checker_catches_forbidden_imports() -> None:
    source = (
        "import os\nimport time\nfrom asyncio import sleep\n"
        "def f():\n    import socket.x\nfrom . import time2"
    )
    assert forbidden_imports(source) == ["time", "asyncio", "socket.x"]


def test_protocol_package_exists() -> None:
    assert (SRC / "protocol" / "__init__.py").is_file()


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_layers_do_not_import_io(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8")) == [], f"{path} imports I/O or clock modules"
