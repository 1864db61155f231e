"""The live view of the nine stages (``kprod perf --live``): its text, its terminal panel, its plain lines."""

from __future__ import annotations

import html
import io
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kprod.cli.live import STAGES, LiveView, panel, render_lines, stage_times

SNAPSHOT: dict[str, Any] = {
    "records-sent-total": 10_000, "records-queued": 500, "record-send-total": 9_000,
    "buffer-total-bytes": 33_554_432, "buffer-available-bytes": 30_000_000,
    "batch-close-reasons": {"full": 30, "linger": 10, "flush": 0}, "batch-size-avg": 6_144.0,
    "batch-size-limit": 16_384, "compression-rate-avg": 0.5, "request-latency-avg": 2.5,
    "request-latency-max": 9.0, "producer-node-metrics": {1: {"request-total": 5}},
    "brokers": {1: ("h", 9092)}, "metadata-age": 1.2, "record-size-avg": 110.0,
    "records-per-request-avg": 40.0, "producer-topic-metrics": {"t": {}}, "batches-incomplete": 3,
    "record-retry-total": 2, "record-error-total": 0, "requests-in-flight": 1,
    "stage-serialize-time-avg-us": 2_104.3, "stage-partition-time-avg-us": 0.83, "stage-append-time-avg-us": 3.4,
    "stage-queue-time-avg-ms": 12.25, "stage-compress-time-avg-us": float("nan"),
    "stage-in-flight-time-avg-ms": 2.5,
}  # fmt: skip
ROOT = Path(__file__).resolve().parent.parent
BEFORE = {"records-sent-total": 0, "records-queued": 0, "record-send-total": 0}


def test_the_panel_names_the_nine_stages_with_their_numbers_within_80_columns() -> None:
    lines = render_lines(SNAPSHOT, BEFORE, 2.0, 5.0)
    assert len(lines) == 10 and all(len(line) <= 80 for line in lines)
    assert [line.split("  ")[0][2:].strip() for line in lines[1:]] == [s[:17].strip() for s in STAGES]
    text = "\n".join(lines)
    assert "5,250 rec/s accepted" in text  # (10,000 + 500) records in 2 s
    assert "4,500 rec/s acked" in text and "latency max 9.0 ms" in text
    assert "fill 75%; full 75% linger 25%" in text and "ratio 0.50" in text and "retries 2" in text


def test_each_stage_shows_its_time_per_record_in_a_column_of_its_own() -> None:
    lines = render_lines(SNAPSHOT, BEFORE, 2.0, 5.0)
    shown = {line[2:19].strip(): line[20:28].strip() for line in lines[1:]}
    assert shown == {
        "record creation": "",
        "serialization": "2.10 ms",  # 2,104.3 µs
        "partitioning": "0.83 µs",
        "buffering": "12.2 ms",  # the queue time, 12.25 ms
        "batching": "3.40 µs",  # append
        "compression": "-",  # NaN: nothing compressed in the window
        "acknowledgements": "2.50 ms",  # in flight
        "retries, errors": "",
        "metadata": "",
    }
    assert stage_times({}) == ["", "-", "-", "-", "-", "-", "-", "", ""]
    assert stage_times({"stage-in-flight-time-avg-ms": 12_345.0})[6] == "12.3 s"
    assert stage_times({"stage-serialize-time-avg-us": 1e300})[1] == "-", "beyond any real time"


def test_the_panel_with_stage_times_fits_an_80_by_24_terminal() -> None:
    from rich.console import Console

    screen = io.StringIO()
    Console(file=screen, width=80, height=24).print(panel(SNAPSHOT, BEFORE, 2.0, 5.0))
    drawn = screen.getvalue().splitlines()
    assert len(drawn) <= 24 and all(len(line) <= 80 for line in drawn), drawn
    row = next(line for line in drawn if "serialization" in line)
    assert "2.10 ms" in row and "per rec" in "\n".join(drawn[:4])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_rich_draws_the_panel() -> None:
    screen = _Terminal()
    view = LiveView(lambda: SNAPSHOT, interval_s=0.05, stream=screen)
    view.start()
    time.sleep(0.4)
    view.stop()
    drawn = screen.getvalue()
    assert "kprod live" in drawn and all(stage in drawn for stage in STAGES), drawn[-2000:]


def test_perf_live_prints_a_line_per_second_when_not_on_a_terminal() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kprod", "perf", "--topic", "live", "--num-records", "600000", "--record-size",
         "100", "--throughput", "200000", "--live"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("live ")]
    assert len(lines) >= 2, result.stderr[-2000:]
    assert any(" | in 0 rec/s" not in line for line in lines), lines
    assert "600000 records sent" in result.stdout  # the Java tool's summary stays on stdout


@pytest.mark.timeout(120)
def test_a_tmux_screenshot_of_perf_live_on_a_real_run(tmp_path: Path) -> None:
    """docs/live_screenshot.py (which makes the README's picture) on a real run in an 80 x 24 tmux."""
    assert shutil.which("tmux"), (
        "this test needs tmux: apt-get install tmux (python3 tasks.py test installs it)"
    )
    out = tmp_path / "live.svg"
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "live_screenshot.py"), "--out", str(out), "--num-records", "900000",
         "--throughput", "150000", "--settle-s", "2"],
        capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    svg = out.read_text(encoding="utf-8")
    assert svg.startswith("<svg")
    shown = html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")
    assert (
        "kprod perf --live" in shown and "kprod live:" in shown and all(stage in shown for stage in STAGES)
    ), shown[-3000:]
    acked = re.search(r"([0-9,]+) rec/s acked", shown)
    assert acked is not None and int(acked.group(1).replace(",", "")) > 0, "a screenshot of a run under load"
