"""A live view of the producer's nine stages, redrawn every second while it runs (``kprod perf --live``).

On a terminal it draws one panel (80 x 24 at most) with Rich when Rich is installed
(``pip install 'kprod[live]'``); otherwise, and whenever stdout is not a terminal, it prints one plain
line per interval. It reads only a ``metrics()`` callable, from its own thread:
:meth:`kprod.Producer.metrics` for ``kprod perf --live``, another process's producer through its
``kprod.live.port`` endpoint for ``kprod top`` (``kprod.cli.top``).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = [
    "LiveView",
    "SourceUnavailableError",
    "panel",
    "plain_line",
    "render_lines",
    "stage_rows",
    "stage_times",
]

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


class SourceUnavailableError(Exception):
    """Raised by a ``metrics()`` source that lost its producer for now and is trying again
    (``kprod top`` reconnecting): the view shows ``disconnected, retrying`` and keeps going.

    Deliberately not an :class:`OSError`: an OSError from ``metrics()`` ends the view.
    """


# The snapshot may come from another process (``kprod top``): every read below takes any JSON value
# (wrong types, huge or negative numbers, NaN, markup or escape sequences in names) and shows "-" or
# a cleaned string for what it cannot use, rather than raise. tests/test_protocol_fuzz.py feeds it
# hostile snapshots.

_BIG = 1e18
"""Numbers beyond this are shown as "-": a real counter never gets there, and formatting them would
make lines wider than the panel."""


def _num(m: Any, key: str, default: float = math.nan) -> float:
    """``m[key]`` as a finite float within +-1e18, else ``default``."""
    value = m.get(key) if isinstance(m, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float's range
        return default
    return number if math.isfinite(number) and abs(number) <= _BIG else default


def _mapping(m: Any, key: str) -> dict[Any, Any]:
    value = m.get(key) if isinstance(m, dict) else None
    return value if isinstance(value, dict) else {}


def _clean(text: object, limit: int = 24) -> str:
    """A name from the snapshot, printable and short: no escape sequences, no Rich markup."""
    raw = str(text)[:limit] if isinstance(text, str | int) and not isinstance(text, bool) else "?"
    return "".join(ch if ch.isprintable() and ch not in "[]" else "?" for ch in raw)


def _count(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"


def _rate(now: dict[str, Any], before: dict[str, Any] | None, key: str, seconds: float) -> float:
    if before is None or not seconds > 0:
        return 0.0
    return max(0.0, (_num(now, key, 0.0) - _num(before, key, 0.0)) / seconds)


def _accepted_rate(m: dict[str, Any], before: dict[str, Any] | None, seconds: float) -> float:
    """Records accepted per second: sent plus still queued, between two snapshots."""
    if before is None or not seconds > 0:
        return 0.0
    now = _num(m, "records-sent-total", 0.0) + _num(m, "records-queued", 0.0)
    then = _num(before, "records-sent-total", 0.0) + _num(before, "records-queued", 0.0)
    return max(0.0, (now - then) / seconds)


def _buffer(m: dict[str, Any]) -> tuple[float, float]:
    """(buffer.memory, bytes in use), the use within [0, buffer.memory]."""
    total = _num(m, "buffer-total-bytes", 0.0)
    total = total if total > 0 else 1.0
    return total, min(total, max(0.0, total - _num(m, "buffer-available-bytes", total)))


def _ms(m: Any, key: str) -> str:
    number = _num(m, key)
    return "-" if number != number else f"{number:.1f} ms"


STAGE_TIMES: tuple[tuple[str, float] | None, ...] = (
    None,
    ("stage-serialize-time-avg-us", 1.0),
    ("stage-partition-time-avg-us", 1.0),
    ("stage-queue-time-avg-ms", 1000.0),
    ("stage-append-time-avg-us", 1.0),
    ("stage-compress-time-avg-us", 1.0),
    ("stage-in-flight-time-avg-ms", 1000.0),
    None,
    None,
)
"""For each of the nine stages, the ``metrics()`` name of its time per record and the factor to µs
(docs/metrics.md: serialize, partition, append sampled; queue, compress, in flight per batch)."""


def _duration(us: float) -> str:
    """A time per record in at most 8 columns: ``0.42 µs``, ``12.3 µs``, ``2.10 ms``, ``12.3 ms``,
    ``1.5 s``; ``-`` for none (NaN: nothing measured in the window)."""
    if us != us or us < 0:
        return "-"
    if us < 10:
        return f"{us:.2f} µs"
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 10_000:
        return f"{us / 1000:.2f} ms"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1e6:.1f} s" if us < 1e9 else ">999 s"


def stage_times(m: dict[str, Any]) -> list[str]:
    """The time per record of each of the nine stages, formatted (``""`` for the stages without one)."""
    return ["" if spec is None else _duration(_num(m, spec[0]) * spec[1]) for spec in STAGE_TIMES]


def stage_rows(m: dict[str, Any], before: dict[str, Any] | None, seconds: float) -> list[tuple[str, str]]:
    """(stage, what it shows now) for the nine stages, from two metrics snapshots ``seconds`` apart.

    Never raises, whatever the snapshots hold (see the note above :data:`_BIG`)."""
    in_rate = _accepted_rate(m, before, seconds)
    total, used = _buffer(m)
    reasons = {_clean(k): _num({"v": v}, "v", 0.0) for k, v in _mapping(m, "batch-close-reasons").items()}
    closed = sum(v for v in reasons.values() if v > 0) or 1.0
    why = " ".join(f"{k} {100 * v / closed:.0f}%" for k, v in reasons.items() if 100 * v / closed >= 0.5)
    limit = _num(m, "batch-size-limit", 16384.0)
    limit = limit if limit > 0 else 1.0
    batch_avg = _num(m, "batch-size-avg")
    ratio = _num(m, "compression-rate-avg")
    raw = ratio if ratio > 0 else 1.0  # fill counts uncompressed bytes
    fill = "-" if batch_avg != batch_avg else f"{100 * batch_avg / raw / limit:.0f}%"
    nodes = _mapping(m, "producer-node-metrics")
    topics = _mapping(m, "producer-topic-metrics")
    age = _num(m, "metadata-age")
    in_flight = ", ".join(
        f"{_clean(n, 12)}: {_count(_num(v, 'request-total', 0.0))} req" for n, v in list(nodes.items())[:3]
    )
    return [
        (STAGES[0], f"{in_rate:,.0f} rec/s accepted"),
        (STAGES[1], f"{_count(_num(m, 'record-size-avg'))} B per record on average"),
        (STAGES[2], f"{len(topics)} topic(s), {_count(_num(m, 'records-per-request-avg'))} rec/request"),
        (STAGES[3], f"{used / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * used / total:.0f}%), "
                    f"{_count(_num(m, 'waiting-threads', 0.0))} waiting"),
        (STAGES[4], f"{_count(_num(m, 'batches-incomplete', 0.0))} open, fill {fill}; {why or 'none closed yet'}"),
        (STAGES[5], "none" if ratio != ratio or ratio >= 0.999 else f"ratio {ratio:.2f}"),
        (STAGES[6], f"{_rate(m, before, 'record-send-total', seconds):,.0f} rec/s acked, "
                    f"latency max {_ms(m, 'request-latency-max')}"),
        (STAGES[7], f"retries {_count(_num(m, 'record-retry-total', 0.0))}, "
                    f"errors {_count(_num(m, 'record-error-total', 0.0))}, "
                    f"throttled {_ms(m, 'produce-throttle-time-avg')}"),
        (STAGES[8], ("age -" if age != age else f"age {age:.1f} s")
                    + f", {len(_mapping(m, 'brokers'))} broker(s), in flight {in_flight or '-'}"),
    ]  # fmt: skip


def render_lines(
    m: dict[str, Any], before: dict[str, Any] | None, seconds: float, elapsed: float
) -> list[str]:
    """The panel as plain text lines (at most 80 columns)."""
    lines = [
        f"kprod live: {elapsed:5.1f} s, {_count(_num(m, 'requests-in-flight', 0.0))} request(s) in flight"
    ]
    times = stage_times(m)
    for number, (stage, text) in enumerate(stage_rows(m, before, seconds), 1):
        lines.append(f"{number} {stage:<17} {times[number - 1]:>8}  {text}"[:80])
    return lines


def plain_line(m: dict[str, Any], before: dict[str, Any] | None, seconds: float, elapsed: float) -> str:
    """The one line per interval printed when stdout is not a terminal."""
    total, used = _buffer(m)
    return (
        f"live {elapsed:6.1f}s | in {_accepted_rate(m, before, seconds):,.0f} rec/s | "
        f"acked {_rate(m, before, 'record-send-total', seconds):,.0f} rec/s | "
        f"buffer {100 * used / total:.0f}% | open batches {_count(_num(m, 'batches-incomplete', 0.0))} | "
        f"latency {_ms(m, 'request-latency-avg')} | retries {_count(_num(m, 'record-retry-total', 0.0))} "
        f"errors {_count(_num(m, 'record-error-total', 0.0))}"
    )


def panel(
    m: dict[str, Any],
    before: dict[str, Any] | None,
    seconds: float,
    elapsed: float,
    status: str | None = None,
) -> Any:
    """The Rich table of the nine stages (80 columns); ``status`` (e.g. ``disconnected, retrying``)
    goes in the title. Needs Rich."""
    from rich.table import Table
    from rich.text import Text

    title = f"kprod live: {elapsed:5.1f} s" + (f" - {status}" if status else "")
    table = Table(title=Text(title), width=80)
    table.add_column("#", width=1)
    table.add_column("stage", width=16, overflow="ellipsis", no_wrap=True)
    table.add_column("per rec", width=8, justify="right", no_wrap=True)
    table.add_column("now", overflow="fold")
    times = stage_times(m)
    for number, (stage, text) in enumerate(stage_rows(m, before, seconds), 1):
        # Text: no markup is read from the snapshot
        table.add_row(str(number), stage, times[number - 1], Text(text))
    return table


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
        self.status: str | None = None
        """Why the source is unavailable now (``disconnected, retrying ...``), else None."""

    def request_stop(self) -> None:
        """Ask the drawing thread to end after its current step (does not wait)."""
        self._stop_event.set()

    def stop(self) -> None:
        """End the drawing thread; waits for it at most 5 s."""
        self._stop_event.set()
        self.join(timeout=5)

    def _snapshots(self) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, float, float]]:
        """(snapshot, the one before, seconds between them, seconds since the start) every interval.

        While the source is unavailable (it raised :class:`SourceUnavailableError`) the snapshot is the
        last one seen and :attr:`status` says why; the first snapshot after it comes back is not
        drawn, only kept as the "before" of the next (a restarted producer counts from zero again)."""
        before: dict[str, Any] | None = None
        last_seen: dict[str, Any] = {}
        try:
            before = self._metrics()
        except SourceUnavailableError as exc:
            self.status = str(exc) or "disconnected, retrying"
        except OSError as exc:
            self.error = exc
            return
        last = time.monotonic()
        while (self._left is None or self._left > 0) and not self._stop_event.wait(self._interval_s):
            now = time.monotonic()
            try:
                m = self._metrics()
            except SourceUnavailableError as exc:
                self.status = str(exc) or "disconnected, retrying"
                m, before = (before or last_seen), None
            except OSError as exc:
                self.error = exc
                return
            else:
                last_seen = m
                if self.status is not None:
                    # Back (a new producer, counting from zero): its first snapshot is only the
                    # "before" of the next redraw, so that the first line drawn has rates again.
                    self.status, before, last = None, m, now
                    continue
            if self._left is not None:
                self._left -= 1
            yield m, before, now - last, now - self._began
            before, last = (m if self.status is None else None), now

    def run(self) -> None:
        tty = self._stream.isatty()
        try:
            if tty:
                from rich.console import Console
                from rich.live import Live
            else:
                raise ImportError
        except ImportError:
            self._plain()
            return
        console = Console(file=self._stream, width=min(80, Console(file=self._stream).width))
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            for m, before, seconds, elapsed in self._snapshots():
                live.update(panel(m, before, seconds, elapsed, self.status), refresh=True)

    def _plain(self) -> None:
        said = False  # the status is printed once per disconnection, not once per interval
        for m, before, seconds, elapsed in self._snapshots():
            if self.status is not None:
                if not said:
                    print(f"live {elapsed:6.1f}s | {self.status}", file=self._stream, flush=True)
                said = True
                continue
            said = False
            print(plain_line(m, before, seconds, elapsed), file=self._stream, flush=True)
