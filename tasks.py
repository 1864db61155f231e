#!/usr/bin/env python3
"""The project's one entry point for humans and CI. Standard library only; needs Python 3.11+.

    python3 tasks.py test [pytest args...]   ruff, mypy --strict (src and tests) and pytest (all run; fails if any fails)
    python3 tasks.py lint                    ruff and mypy --strict only
    python3 tasks.py main [args...]          the main job: `kprod demo` (embedded broker, 1M records)
    python3 tasks.py bench [args...]         bench/run.py

Every command first makes sure ``.venv`` exists and holds ``pip install -e '.[dev]'``. The install is
redone when ``.venv`` is missing or broken, or when pyproject.toml, setup.py or the C fast path's
source is newer than the stamp file written after the last successful install (the editable install
compiles ``src/kprod/_speedups.c`` in place). Everything installs from PyPI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".kprod-install-stamp"
PYPROJECT = ROOT / "pyproject.toml"
BUILD_INPUTS = (PYPROJECT, ROOT / "setup.py", ROOT / "src" / "kprod" / "_core" / "_speedups.c")
"""What the install depends on: a newer one than the stamp means install again."""


def say(message: str) -> None:
    print(f"[tasks] {message}", flush=True)


def run(*argv: str | Path) -> int:
    say("$ " + " ".join(str(a) for a in argv))
    return subprocess.call([str(a) for a in argv], cwd=ROOT)


def bootstrap() -> None:
    """Create .venv and install the project into it, unless the stamp says it is up to date."""
    if (
        STAMP.exists()
        and PYTHON.exists()
        and all(STAMP.stat().st_mtime >= path.stat().st_mtime for path in BUILD_INPUTS if path.exists())
    ):
        return
    if not PYTHON.exists():
        say(f"creating {VENV.name} with Python {sys.version.split()[0]}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    STAMP.unlink(missing_ok=True)
    say("installing kprod and its dev dependencies from PyPI (a minute on a fresh machine)")
    if run(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "-e", ".[dev]") != 0:
        sys.exit("[tasks] pip install -e '.[dev]' failed (see above)")
    STAMP.touch()


def ensure_tmux() -> None:
    """tests/test_cli_live.py films ``kprod perf --live`` in tmux: install it from Debian's packages
    when it is missing and we may (root with apt-get); otherwise that test says what to install."""
    if shutil.which("tmux") or not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    say("installing tmux (for the live view's screenshot test)")
    if run("apt-get", "install", "-y", "-q", "tmux") != 0:
        run("apt-get", "update", "-q")
        run("apt-get", "install", "-y", "-q", "tmux")


def lint() -> dict[str, int]:
    return {
        "ruff": run(BIN / "ruff", "check", "."),
        "mypy": run(BIN / "mypy", "--strict", "src"),
        # The tests too, strict but for two checks that flag narrowing across calls that change state
        # (``assert not batch.done`` after ``assert batch.done`` and an action looks "unreachable").
        "mypy tests": run(
            BIN / "mypy",
            "--strict",
            "--disable-error-code",
            "unreachable",
            "--disable-error-code",
            "comparison-overlap",
            "tests",
        ),
    }


def report(results: dict[str, int]) -> int:
    for name, rc in results.items():
        note = " (no tests collected)" if name == "pytest" and rc == 5 else ""
        say(f"{name}: {'ok' if rc == 0 else f'FAILED, exit {rc}{note}'}")
    return 0 if all(rc == 0 for rc in results.values()) else 1


def exec_in_venv(program: str | Path, *args: str) -> NoReturn:
    """Replace this process, so Ctrl-C and SIGTERM reach the program directly."""
    argv = [str(program), *args]
    say("$ " + " ".join(argv))
    os.chdir(ROOT)
    os.execv(argv[0], argv)


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script is run by whatever python3 is first on PATH
        sys.exit(f"[tasks] kprod needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    command, args = (argv[0], argv[1:]) if argv else ("help", [])
    if command == "test":
        bootstrap()
        ensure_tmux()
        results = lint()
        # Exit status 5 (no tests collected) counts as a failure like any other non-zero status.
        results["pytest"] = run(PYTHON, "-m", "pytest", *args)
        return report(results)
    if command == "lint":
        bootstrap()
        return report(lint())
    if command == "main":
        bootstrap()
        exec_in_venv(BIN / "kprod", "demo", *args)
    if command == "bench":
        if not (ROOT / "bench" / "run.py").exists():
            sys.exit("[tasks] bench/run.py does not exist yet")
        bootstrap()
        # What only the benchmark needs (kafka-python's codecs, matplotlib for the chart).
        if (
            run(
                PYTHON,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-r",
                "bench/requirements.txt",
            )
            != 0
        ):
            sys.exit("[tasks] pip install -r bench/requirements.txt failed (see above)")
        exec_in_venv(PYTHON, "bench/run.py", *args)
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
