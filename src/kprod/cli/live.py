"""A live view of the producer's nine stages, redrawn every second while it runs (``kprod perf --live``).

On a terminal it draws one panel (80 x 24 at most) with Rich when Rich is installed
(``pip install 'kprod[live]'``); otherwise, and whenever stdout is not a terminal, it prints one plain
line per interval. It reads only a ``metrics()`` callable, from its own thread:
:meth:`kprod.Producer.metrics` for ``kprod perf --live``, another process's producer through its
``kprod.live.port`` endpoint for ``kprod top`` (``kprod.cli.top``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ["LiveView", "render_lines", "stage_rows"]

STAGES = (
    "record creation",
    "serialization",
    "partitioning",
    "buffering",
    "batching",
    "compression",
    "acknowledgements",
    "retries, errors",
    "metadata",
)


def _rate(now: dict[str, Any], before: dict[str, Any] | None, key: str, seconds: float) -> float:
    if before is None or seconds <= 0:
        return 0.0
    return max(0.0, (float(now.get(key, 0)) - float(before.get(key, 0))) / seconds)


def _accepted_rate(m: dict[str, Any], before: dict[str, Any] | None, seconds: float) -> float:
    """Records accepted per second: sent plus still queued, between two snapshots."""
    if before is None or seconds <= 0:
        return 0.0
    now = float(m.get("records-sent-total", 0)) + float(m.get("records-queued", 0))
    then = float(before.get("records-sent-total", 0)) + float(before.get("records-queued", 0))
    return max(0.0, (now - then) / seconds)


def _buffer(m: dict[str, Any]) -> tuple[float, float]:
    """(buffer.memory, bytes in use)."""
    total = float(m.get("buffer-total-bytes", 0)) or 1.0
    return total, total - float(m.get("buffer-available-bytes", total))


def _ms(value: Any) -> str:
    return "-" if not isinstance(value, int | float) or value != value else f"{value:.1f} ms"


def stage_rows(m: dict[str, Any], before: dict[str, Any] | None, seconds: float) -> list[tuple[str, str]]:
    """(stage, what it shows now) for the nine stages, from two metrics snapshots ``seconds`` apart."""
    in_rate = _accepted_rate(m, before, seconds)
    total, used = _buffer(m)
    reasons = m.get("batch-close-reasons") or {}
    closed = sum(reasons.values()) or 1
    why = " ".join(f"{k} {100 * v / closed:.0f}%" for k, v in reasons.items() if v)
    limit = float(m.get("batch-size-limit", 16384)) or 1.0
    batch_avg = m.get("batch-size-avg")
    ratio = m.get("compression-rate-avg")
    raw = 1.0 if not isinstance(ratio, float) or not ratio > 0 else ratio  # fill counts uncompressed bytes
    fill = (
        f"{100 * batch_avg / raw / limit:.0f}%"
        if isinstance(batch_avg, float) and batch_avg == batch_avg
        else "-"
    )
    nodes = m.get("producer-node-metrics") or {}
    topics = m.get("producer-topic-metrics") or {}
    age = m.get("metadata-age", -1)
    return [
        (STAGES[0], f"{in_rate:,.0f} rec/s accepted"),
        (STAGES[1], f"{m.get('record-size-avg', float('nan')):.0f} B per record on average"),
        (STAGES[2], f"{len(topics)} topic(s), {m.get('records-per-request-avg', float('nan')):.0f} rec/request"),
        (STAGES[3], f"{used / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * used / total:.0f}%), "
                    f"{m.get('waiting-threads', 0)} waiting"),
        (STAGES[4], f"{m.get('batches-incomplete', 0)} open, fill {fill}; {why or 'none closed yet'}"),
        (STAGES[5], "none" if not isinstance(ratio, float) or ratio != ratio or ratio >= 0.999
                    else f"ratio {ratio:.2f}"),
        (STAGES[6], f"{_rate(m, before, 'record-send-total', seconds):,.0f} rec/s acked, latency "
                    f"{_ms(m.get('request-latency-avg'))} avg, {_ms(m.get('request-latency-max'))} max"),
        (STAGES[7], f"retries {m.get('record-retry-total', 0):.0f}, errors {m.get('record-error-total', 0):.0f}, "
                    f"throttled {_ms(m.get('produce-throttle-time-avg'))}"),
        (STAGES[8], f"age {age:.1f} s, {len(m.get('brokers') or {})} broker(s), in flight "
                    + (", ".join(f"{n}: {int(v.get('request-total', 0))} req" for n, v in list(nodes.items())[:3])
                       or "-")),
    ]  # fmt: skip


def render_lines(
    m: dict[str, Any], before: dict[str, Any] | None, seconds: float, elapsed: float
) -> list[str]:
    """The panel as plain text lines (at most 80 columns)."""
    lines = [f"kprod live: {elapsed:5.1f} s, {m.get('requests-in-flight', 0)} request(s) in flight"]
    for number, (stage, text) in enumerate(stage_rows(m, before, seconds), 1):
        lines.append(f"{number} {stage:<17} {text}"[:80])
    return lines


class LiveView(threading.Thread):
    """Redraws the stages from ``metrics()`` every ``interval_s`` until :meth:`stop`, or ``iterations``
    redraws, or ``metrics()`` raising :class:`OSError` (kept in :attr:`error`: the source went away).

    A first snapshot is taken at once, so that the first redraw already shows rates."""

    def __init__(
        self,
        metrics: Callable[[], dict[str, Any]],
        interval_s: float = 1.0,
        stream: TextIO | None = None,
        iterations: int | None = None,
    ) -> None:
        super().__init__(name="kprod-live", daemon=True)
        self._metrics = metrics
        self._interval_s = interval_s
        self._stream = stream or sys.stdout
        self._stop_event = threading.Event()
        self._began = time.monotonic()
        self._left = iterations
        self.error: OSError | None = None
        """What ended the view when ``metrics()`` failed, else None."""

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def _snapshots(self) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, float, float]]:
        """(snapshot, the one before, seconds between them, seconds since the start) every interval."""
        try:
            before: dict[str, Any] | None = self._metrics()
        except OSError as exc:
            self.error = exc
            return
        last = time.monotonic()
        while (self._left is None or self._left > 0) and not self._stop_event.wait(self._interval_s):
            now = time.monotonic()
            try:
                m = self._metrics()
            except OSError as exc:
                self.error = exc
                return
            if self._left is not None:
                self._left -= 1
            yield m, before, now - last, now - self._began
            before, last = m, now

    def run(self) -> None:
        tty = self._stream.isatty()
        try:
            if tty:
                from rich.console import Console
                from rich.live import Live
                from rich.table import Table
            else:
                raise ImportError
        except ImportError:
            self._plain()
            return
        console = Console(file=self._stream, width=min(80, Console(file=self._stream).width))
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            for m, before, seconds, elapsed in self._snapshots():
                table = Table(title=f"kprod live: {elapsed:5.1f} s", width=80)
                table.add_column("#", width=2)
                table.add_column("stage", width=17)
                table.add_column("now", overflow="fold")
                for number, (stage, text) in enumerate(stage_rows(m, before, seconds), 1):
                    table.add_row(str(number), stage, text)
                live.update(table, refresh=True)

    def _plain(self) -> None:
        for m, before, seconds, elapsed in self._snapshots():
            total, used = _buffer(m)
            print(
                f"live {elapsed:6.1f}s | in {_accepted_rate(m, before, seconds):,.0f} rec/s | "
                f"acked {_rate(m, before, 'record-send-total', seconds):,.0f} rec/s | "
                f"buffer {100 * used / total:.0f}% | open batches {m.get('batches-incomplete', 0)} | "
                f"latency {_ms(m.get('request-latency-avg'))} | retries {m.get('record-retry-total', 0):.0f} "
                f"errors {m.get('record-error-total', 0):.0f}",
                file=self._stream,
                flush=True,
            )
