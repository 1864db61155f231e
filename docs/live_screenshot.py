"""Take the README's screenshot of the live view: a real ``kprod perf --live`` run in an 80 x 24 tmux.

    .venv/bin/python docs/live_screenshot.py            # writes docs/images/live.svg
    .venv/bin/python docs/live_screenshot.py --out x.svg --num-records 2000000

It starts ``kprod perf --live`` (embedded broker, paced with ``--throughput``) in a detached tmux
session of 80 x 24, waits until the panel has been redrawn for ``--settle-s`` seconds with records
acknowledged, captures the pane with its colours (``tmux capture-pane -e``), and renders that text
to SVG with Rich (``Text.from_ansi`` then ``Console.export_svg``): what the terminal showed, cell for
cell. Needs tmux (``apt-get install tmux``) and Rich. ``tests/test_cli_live.py`` runs it.
"""

from __future__ import annotations

import argparse
import io
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_ELAPSED = re.compile(r"kprod live:\s+([0-9.]+) s")
_ACKED = re.compile(r"([0-9,]+) rec/s acked")


def capture(num_records: int, throughput: int, settle_s: float, timeout_s: float) -> str:
    """The pane's text with its ANSI colours, once the live panel has run ``settle_s`` seconds."""
    tmux = shutil.which("tmux")
    if tmux is None:
        raise SystemExit("live_screenshot: needs tmux (apt-get install tmux)")
    session = f"kprod-live-shot-{time.monotonic_ns()}"
    command = " ".join(
        shlex.quote(part)
        for part in (
            sys.executable, "-m", "kprod", "perf", "--topic", "live", "--num-records", str(num_records),
            "--record-size", "100", "--throughput", str(throughput), "--live",
        )
    )  # fmt: skip
    # stdout (the Java tool's summary) is dropped: the panel is drawn on stderr, the terminal.
    shell = f"cd {shlex.quote(str(ROOT))} && {command} >/dev/null; sleep {int(timeout_s)}"
    env = ["-e", "TERM=xterm-256color", "-e", "COLORTERM=truecolor", "-e", f"PYTHONPATH={ROOT / 'src'}"]
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", *env, shell],
        check=True,
        timeout=30,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.25)
            shown = subprocess.run(
                [tmux, "capture-pane", "-p", "-e", "-t", session],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout
            plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
            elapsed, acked = _ELAPSED.search(plain), _ACKED.search(plain)
            if elapsed and acked and float(elapsed.group(1)) >= settle_s and acked.group(1) != "0":
                return shown
        raise SystemExit(f"live_screenshot: the panel did not show acknowledged records within {timeout_s} s")
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False, timeout=10, capture_output=True)


def to_svg(ansi: str, title: str) -> str:
    """An 80-column terminal's text (with ANSI colours) as an SVG picture."""
    from rich.console import Console
    from rich.text import Text

    console = Console(
        record=True, width=80, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    console.print(Text.from_ansi(ansi.rstrip("\n")), soft_wrap=True)
    return console.export_svg(title=title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "live.svg")
    parser.add_argument("--num-records", type=int, default=1_500_000)
    parser.add_argument("--throughput", type=int, default=150_000, help="records/s (default 150000)")
    parser.add_argument("--settle-s", type=float, default=4.0, help="capture once the panel ran this long")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    ansi = capture(args.num_records, args.throughput, args.settle_s, args.timeout_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_svg(ansi, "kprod perf --live"), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
