"""``kprod tune``: sweep producer settings against a broker and recommend the fastest within a p99 budget.

For every combination of ``linger.ms`` × ``batch.size`` × ``compression.type`` (× ``acks`` when more
than one is given) it runs a fresh :class:`kprod.Producer` for a short, timed run on a sample of the
user's records (``--file``, one record per line) or on generated values (``--record-size`` random
uppercase letters, compressible like ``kprod perf``'s), and measures:

* records/s acknowledged (acknowledged records over the time from the first send to the last ack);
* p50 and p99 of send→ack latency (monotonic ns taken in ``send()`` and in the ``on_delivery``
  callback, so sub-millisecond loopback latencies are not rounded to 0 or 1 ms);
* bytes on the wire per record (the delta of ``outgoing-byte-total`` in ``producer.metrics()``:
  compressed batches plus request framing);
* CPU per record (``time.process_time()`` delta: the calling thread *and* the producer's I/O thread).

Each point is bounded in time (its share of ``--budget-s``) and in records outstanding
(``--max-in-flight``, so the latency measured is the settings', not a 32 MiB queue's); ``--throughput``
paces sends to a target rate instead of as fast as possible. The sweep stops when the budget runs
out and reports what it measured.

The analysis (:func:`analyze`) is pure: the Pareto set (no other point is at least as fast with a
p99 at least as low, and strictly better in one) and the recommendation, the fastest point whose
p99 is within ``--max-p99-ms`` (or, when none is, the lowest p99). Output: a table on stdout, the
recommended properties ready to paste, a PNG chart (matplotlib, ``pip install 'kprod[tune]'``) and
optionally JSON. Only kprod's public API is used.

Why one module of about 900 lines: the sweep, its pure analysis and its three outputs (table,
JSON, chart) are one command, tested through its functions; none is used elsewhere.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import time
import uuid
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from kprod.cli.options import add_bootstrap_servers

__all__ = [
    "Analysis",
    "Point",
    "Setting",
    "add_arguments",
    "analyze",
    "format_table",
    "percentile",
    "properties_lines",
    "recommendation_text",
    "report",
    "run",
    "run_sweep",
    "slot_seconds",
    "sweep",
    "write_chart",
]

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
ACKS = {"all": "all", "-1": "all", "1": "1", "0": "0"}
MIN_POINT_S = 1.0
"""The shortest slot a point gets; when less than this is left of the budget, the sweep stops."""
SEND_SHARE = 0.7
"""Share of a point's slot spent sending; the rest is for the warm-up, the final flush and close."""
CLOSE_TIMEOUT_S = 1.0
PACED_TIE_FRACTION = 0.02
"""With ``--throughput``, throughputs within 2% of the best count as equal (the lower p99 wins)."""
POOL_BYTES = 16 << 20
POOL_MAX = 4096
CODEC_COLOURS = {
    "none": "#7f7f7f",
    "gzip": "#8c564b",
    "snappy": "#ff7f0e",
    "lz4": "#1f77b4",
    "zstd": "#2ca02c",
}
ACKS_MARKERS = {"all": "o", "1": "s", "0": "^"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Sweep linger.ms × batch.size × compression.type (× acks) with short timed runs, measure "
        "throughput, p50/p99 latency, bytes on the wire and CPU per record, and recommend the fastest "
        "settings within a p99 budget. Writes a Pareto chart (PNG), a table and the properties to "
        "paste. Without --bootstrap-server it starts the embedded broker."
    )
    parser.add_argument(
        "--topic", default=None, help="topic to produce to (default: a fresh kprod-tune-<id> topic)"
    )
    add_bootstrap_servers(parser, help="brokers (default: start the embedded Tansu broker and create the topic)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=3,
        metavar="N",
        help="partitions of the topic on the embedded broker",
    )
    sample = parser.add_mutually_exclusive_group()
    sample.add_argument(
        "--file", type=Path, default=None, metavar="F", help="sample records, one per line (cycled)"
    )
    sample.add_argument(
        "--record-size",
        type=int,
        default=100,
        metavar="BYTES",
        help="size of generated values (random uppercase letters, as kprod perf; default 100)",
    )
    parser.add_argument(
        "--linger-ms", default="0,5,20", metavar="LIST", help="linger.ms values (default 0,5,20)"
    )
    parser.add_argument(
        "--batch-size",
        default="16384,131072",
        metavar="LIST",
        help="batch.size values (default 16384,131072)",
    )
    parser.add_argument(
        "--compression",
        default="none,lz4,zstd",
        metavar="LIST",
        help=f"compression.type values among {', '.join(CODECS)} (default none,lz4,zstd)",
    )
    parser.add_argument(
        "--acks",
        default=None,
        metavar="LIST",
        help="acks values, e.g. 1,all (default: all, or the -X acks value)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        metavar="S",
        help=f"total wall time of the sweep (default 60); each point gets budget/points, at least {MIN_POINT_S:g} s",
    )
    parser.add_argument(
        "--max-p99-ms", type=float, default=50.0, metavar="MS", help="the p99 latency budget (default 50)"
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=5000,
        metavar="N",
        help="records sent but not yet acknowledged, at most (default 5000): at full speed the queue "
        "this allows adds about N / throughput to every record's latency",
    )
    parser.add_argument(
        "--throughput",
        type=float,
        default=-1.0,
        metavar="REC/S",
        help="pace sends to this many records/s (default -1: as fast as the producer takes them)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=Path("tune.png"),
        metavar="PATH.png",
        help="chart file (default tune.png)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON"
    )
    parser.add_argument(
        "-X",
        "--producer-property",
        dest="producer_property",
        action="append",
        default=[],
        metavar="K=V",
        help="an extra producer setting, Kafka name (repeatable); the swept settings override it",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated values (default 0)")


# ------------------------------------------------------------------------------ the data


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: the four settings it varies."""

    linger_ms: int
    batch_size: int
    compression: str
    acks: str

    def properties(self) -> dict[str, str]:
        """The producer properties of this setting, Kafka names."""
        return {
            "linger.ms": str(self.linger_ms),
            "batch.size": str(self.batch_size),
            "compression.type": self.compression,
            "acks": self.acks,
        }

    def label(self) -> str:
        """``linger.ms=5 batch.size=16384 compression.type=lz4 acks=all``."""
        return " ".join(f"{k}={v}" for k, v in self.properties().items())


@dataclass(frozen=True)
class Point:
    """What one timed run measured. ``records == 0`` (and ``error``) when it measured nothing."""

    setting: Setting
    records: int
    records_per_s: float
    p50_ms: float
    p99_ms: float
    wire_bytes_per_record: float
    cpu_us_per_record: float
    failed: int = 0
    elapsed_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the run acknowledged records and nothing failed to send."""
        return self.records > 0 and self.records_per_s > 0 and self.error is None


@dataclass(frozen=True)
class Analysis:
    """The Pareto set (sorted by p99) and the recommendation."""

    pareto: list[Point]
    recommended: Point | None
    meets_budget: bool
    max_p99_ms: float
    excluded: list[Point] = field(default_factory=list)
    """Points that measured nothing (or failed): not in the Pareto set nor recommended."""
    tie_fraction: float = 0.0
    """Throughputs within this fraction of the best counted as equal when recommending."""


# ------------------------------------------------------------------------------ the pure part


def _dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as fast with a p99 at least as low as ``b``, and strictly better in one."""
    return (
        a.records_per_s >= b.records_per_s
        and a.p99_ms <= b.p99_ms
        and (a.records_per_s > b.records_per_s or a.p99_ms < b.p99_ms)
    )


def analyze(points: Sequence[Point], max_p99_ms: float, tie_fraction: float = 0.0) -> Analysis:
    """The Pareto set of ``points`` and the recommended point.

    The Pareto set holds the points that no other point dominates (higher-or-equal throughput and
    lower-or-equal p99, strictly better in one); ties are all kept. The recommendation is the point
    with the highest throughput among those with ``p99_ms <= max_p99_ms`` (a tie goes to the lower
    p99); when none is within the budget, the point with the lowest p99 (a tie goes to the higher
    throughput) and ``meets_budget`` is False. Points that measured nothing are left out.

    ``tie_fraction`` (used with ``--throughput``, where every point that keeps up reaches the same
    rate): throughputs within this fraction of the best one within the budget count as equal, and
    the lowest p99 among them wins (then the lowest CPU per record).
    """
    good = [p for p in points if p.ok]
    excluded = [p for p in points if not p.ok]
    pareto = [p for p in good if not any(_dominates(q, p) for q in good)]
    pareto.sort(key=lambda p: (p.p99_ms, -p.records_per_s))
    within = [p for p in good if p.p99_ms <= max_p99_ms]
    recommended: Point | None
    if within:
        recommended = max(within, key=lambda p: (p.records_per_s, -p.p99_ms))
        if tie_fraction > 0:
            floor = recommended.records_per_s * (1.0 - tie_fraction)
            tied = [p for p in within if p.records_per_s >= floor]
            recommended = min(tied, key=lambda p: (p.p99_ms, p.cpu_us_per_record, -p.records_per_s))
    elif good:
        recommended = min(good, key=lambda p: (p.p99_ms, -p.records_per_s))
    else:
        recommended = None
    return Analysis(pareto, recommended, bool(within), max_p99_ms, excluded, tie_fraction)


def percentile(sorted_values: Sequence[int] | Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * n))
    return float(sorted_values[min(rank, n) - 1])


def sweep(
    linger_ms: Sequence[int], batch_size: Sequence[int], compression: Sequence[str], acks: Sequence[str]
) -> list[Setting]:
    """Every combination, acks outermost, then codec, then batch size, then linger (the fastest-varying)."""
    return [
        Setting(linger, batch, codec, ack)
        for ack, codec, batch, linger in itertools.product(acks, compression, batch_size, linger_ms)
    ]


def slot_seconds(remaining_s: float, points_left: int) -> float | None:
    """Wall time for the next point: an equal share of what is left, at least :data:`MIN_POINT_S`;
    None when less than that is left (the sweep stops)."""
    if points_left <= 0 or remaining_s < MIN_POINT_S:
        return None
    return min(remaining_s, max(MIN_POINT_S, remaining_s / points_left))


def properties_lines(setting: Setting) -> list[str]:
    """The recommended settings as ``name=value`` lines, ready to paste into a properties file."""
    return [f"{k}={v}" for k, v in setting.properties().items()]


def _marks(point: Point, analysis: Analysis) -> str:
    marks = []
    if any(point is p for p in analysis.pareto):
        marks.append("pareto")
    if point is analysis.recommended:
        marks.append("recommended")
    if point.error is not None:
        marks.append(f"error: {point.error}")
    elif point.failed:
        marks.append(f"{point.failed} failed")
    return ", ".join(marks)


TABLE_COLUMNS = (
    "#",
    "linger.ms",
    "batch.size",
    "compression",
    "acks",
    "records/s",
    "p50 ms",
    "p99 ms",
    "wire B/rec",
    "CPU µs/rec",
    "",
)


def format_table(points: Sequence[Point], analysis: Analysis) -> str:
    """A plain-text table, one row per point in sweep order; the last column marks the Pareto set
    and the recommendation."""
    rows: list[tuple[str, ...]] = []
    for i, p in enumerate(points, 1):
        s = p.setting
        rows.append(
            (
                str(i),
                str(s.linger_ms),
                str(s.batch_size),
                s.compression,
                s.acks,
                f"{p.records_per_s:,.0f}",
                f"{p.p50_ms:.2f}",
                f"{p.p99_ms:.2f}",
                f"{p.wire_bytes_per_record:.1f}",
                f"{p.cpu_us_per_record:.1f}",
                _marks(p, analysis),
            )
        )
    widths = [max(len(TABLE_COLUMNS[c]), *(len(r[c]) for r in rows)) for c in range(len(TABLE_COLUMNS))]
    left = {3, 4, 10}  # text columns

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.ljust(w) if c in left else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(TABLE_COLUMNS), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def recommendation_text(analysis: Analysis) -> str:
    """The recommendation paragraph: what was chosen and why, then the properties lines."""
    best = analysis.recommended
    if best is None:
        return "No recommendation: no point acknowledged any record."
    if analysis.meets_budget:
        rule = "highest throughput"
        if analysis.tie_fraction > 0:
            rule = f"throughput within {analysis.tie_fraction:.0%} of the highest, then lowest p99,"
        head = (
            f"Recommended ({rule} with p99 <= {analysis.max_p99_ms:g} ms): "
            f"{best.records_per_s:,.0f} records/s, p99 {best.p99_ms:.2f} ms, p50 {best.p50_ms:.2f} ms"
        )
    else:
        head = (
            f"No setting reached p99 <= {analysis.max_p99_ms:g} ms; the lowest p99 is recommended: "
            f"{best.records_per_s:,.0f} records/s, p99 {best.p99_ms:.2f} ms, p50 {best.p50_ms:.2f} ms"
        )
    return "\n".join([head, *properties_lines(best.setting)])


def write_chart(points: Sequence[Point], analysis: Analysis, path: Path, title: str = "kprod tune") -> None:
    """Throughput against p99 latency, one point per setting, codecs in colour, acks as the marker
    shape; the Pareto front as a line, the p99 budget as a dashed line, the recommendation ringed.

    Raises ImportError when matplotlib is missing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import StrMethodFormatter

    good = [p for p in points if p.ok]
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    try:
        for p in good:
            s = p.setting
            ax.scatter(
                p.p99_ms,
                p.records_per_s,
                color=CODEC_COLOURS.get(s.compression, "#000000"),
                marker=ACKS_MARKERS.get(s.acks, "o"),
                s=55,
                zorder=3,
                edgecolors="black" if any(p is q for q in analysis.pareto) else "none",
            )
            ax.annotate(
                f"l{s.linger_ms} b{_short_bytes(s.batch_size)}",
                (p.p99_ms, p.records_per_s),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=7,
                color="#333333",
            )
        if analysis.pareto:
            front = sorted(analysis.pareto, key=lambda p: p.p99_ms)
            ax.step(
                [p.p99_ms for p in front],
                [p.records_per_s for p in front],
                where="post",
                color="black",
                linewidth=1,
                alpha=0.6,
                zorder=2,
            )
        ax.axvline(analysis.max_p99_ms, color="red", linestyle="--", linewidth=1, zorder=1)
        best = analysis.recommended
        if best is not None:
            ax.scatter(
                best.p99_ms,
                best.records_per_s,
                s=260,
                facecolors="none",
                edgecolors="red",
                linewidths=2,
                zorder=4,
            )
        if good:
            # At a paced rate the throughputs differ by a fraction of a percent: do not let the axis
            # blow that noise up to the chart's height.
            highest = max(p.records_per_s for p in good)
            lowest = min(p.records_per_s for p in good)
            ax.set_ylim(min(lowest, 0.9 * highest) * 0.97, highest * 1.03)
            p99s = [p.p99_ms for p in good] + [analysis.max_p99_ms]
            if max(p99s) / max(min(p99s), 1e-3) > 20:
                ax.set_xscale("log")
        ax.set_xlabel("p99 send→ack latency (ms)")
        ax.set_ylabel("records/s acknowledged")
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        codecs = sorted({p.setting.compression for p in good}, key=CODECS.index)
        acks = sorted({p.setting.acks for p in good})
        handles = [
            Line2D([], [], color=CODEC_COLOURS.get(c, "#000000"), marker="o", linestyle="", label=c)
            for c in codecs
        ]
        if len(acks) > 1:
            handles += [
                Line2D(
                    [], [], color="#555555", marker=ACKS_MARKERS.get(a, "o"), linestyle="", label=f"acks={a}"
                )
                for a in acks
            ]
        handles += [
            Line2D([], [], color="black", alpha=0.6, label="Pareto front"),
            Line2D([], [], color="red", linestyle="--", label=f"p99 budget {analysis.max_p99_ms:g} ms"),
            Line2D(
                [], [], color="red", marker="o", markerfacecolor="none", linestyle="", label="recommended"
            ),
        ]
        ax.legend(handles=handles, loc="best", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _short_bytes(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10}k"
    return str(n)


# ------------------------------------------------------------------------------ options


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated integers, not {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"{option} takes comma-separated integers >= 0, not {text!r}")
    return list(dict.fromkeys(values))


def _choice_list(text: str, option: str, choices: dict[str, str]) -> list[str]:
    """Comma-separated ``choices`` keys (case-insensitive), mapped to their values, first use kept."""
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    if not values or any(v not in choices for v in values):
        raise ValueError(f"{option} takes values among {', '.join(choices)}, not {text!r}")
    return list(dict.fromkeys(choices[v] for v in values))


def sample_records(args: argparse.Namespace) -> list[bytes]:
    """The values to cycle through: the lines of ``--file``, or generated values of ``--record-size``."""
    if args.file is not None:
        lines = [line.rstrip(b"\r") for line in args.file.read_bytes().split(b"\n")]
        while lines and not lines[-1]:
            lines.pop()
        if not lines:
            raise ValueError(f"--file {args.file} holds no records")
        return lines
    from kprod.cli.perf import UPPERCASE_TABLE

    size = args.record_size
    if size < 0:
        raise ValueError("--record-size must be >= 0")
    count = max(1, min(POOL_MAX, POOL_BYTES // max(1, size)))
    letters = random.Random(args.seed).randbytes(size * count).translate(UPPERCASE_TABLE)
    return [letters[j * size : (j + 1) * size] for j in range(count)]


# ------------------------------------------------------------------------------ measuring


class _Acks:
    """Send→ack latencies (ns) and counts; only the producer's I/O thread writes while records fly."""

    __slots__ = ("failed", "first_error", "last_ns", "latencies")

    def __init__(self) -> None:
        self.latencies = array("q")
        self.failed = 0
        self.first_error: BaseException | None = None
        self.last_ns = 0

    def on_delivery(self, sent_ns: int, metadata: Any, error: BaseException | None) -> None:
        now = time.monotonic_ns()
        self.last_ns = now
        if error is None:
            self.latencies.append(now - sent_ns)
        else:
            self.failed += 1
            if self.first_error is None:
                self.first_error = error

    def completed(self) -> int:
        return len(self.latencies) + self.failed


def _outgoing_bytes(metrics: dict[str, Any]) -> float:
    value = metrics.get("outgoing-byte-total", 0.0)
    return float(value) if isinstance(value, (int, float)) else 0.0


def _send_for(
    producer: Any,
    topic: str,
    payloads: Sequence[bytes],
    acks: _Acks,
    start_ns: int,
    deadline_ns: int,
    max_in_flight: int,
    throughput: float,
) -> int:
    """Send until ``deadline_ns`` with at most ``max_in_flight`` records outstanding, paced to
    ``throughput`` records/s when it is > 0. Returns the number of records sent."""
    send = producer.send
    ack = acks.on_delivery
    clock = time.monotonic_ns
    n = len(payloads)
    chunk = 64 if throughput <= 0 else max(1, min(64, int(throughput / 1000)))
    sent = 0
    while True:
        for _ in range(chunk):
            send(topic, payloads[sent % n], on_delivery=partial(ack, clock()))
            sent += 1
        now = clock()
        if now >= deadline_ns:
            return sent
        while sent - acks.completed() >= max_in_flight and now < deadline_ns:
            time.sleep(0.0002)
            now = clock()
        if throughput > 0:
            due_ns = start_ns + int(sent * 1e9 / throughput)
            if due_ns > now:
                time.sleep(min(due_ns, deadline_ns) / 1e9 - now / 1e9)


def measure_point(
    setting: Setting,
    base_props: dict[str, str],
    topic: str,
    payloads: Sequence[bytes],
    slot_s: float,
    max_in_flight: int,
    throughput: float = -1.0,
) -> Point:
    """One timed run of a fresh producer with ``setting``, within about ``slot_s`` seconds.

    Raises UnknownTopicError when the topic never appeared during the warm-up (a cluster that does
    not create topics on first use): every other point would wait for it in vain as well.
    """
    from kprod import KafkaTimeoutError, KprodError, Producer, UnknownTopicError

    slot_start = time.monotonic()
    props = {**base_props, **setting.properties()}
    if "max.block.ms" not in base_props:
        # A send that waits for metadata (or memory) gives up within the point's slot, not after
        # the default 60 s: the budget bounds the whole sweep.
        props["max.block.ms"] = str(int(max(1.0, slot_s) * 1000))
    acks = _Acks()
    producer: Any = None
    try:
        producer = Producer(props)
        # Warm-up: metadata, connections and the first batch stay out of the figures.
        producer.send(topic, payloads[0])
        producer.flush(max(0.5, slot_s * (1 - SEND_SHARE)))
        bytes_before = _outgoing_bytes(producer.metrics())
        cpu_before = time.process_time()
        start_ns = time.monotonic_ns()
        send_s = max(0.2, slot_s * SEND_SHARE - (time.monotonic() - slot_start))
        sent = _send_for(
            producer, topic, payloads, acks, start_ns, start_ns + int(send_s * 1e9), max_in_flight, throughput
        )
        flush_s = max(0.5, slot_start + slot_s - time.monotonic() - CLOSE_TIMEOUT_S)
        try:
            producer.flush(flush_s)
        except KafkaTimeoutError:
            pass  # what is not acknowledged by now does not count
        cpu_s = time.process_time() - cpu_before
        wire = _outgoing_bytes(producer.metrics()) - bytes_before
    except UnknownTopicError:
        raise
    except KprodError as exc:
        return Point(setting, 0, 0.0, 0.0, 0.0, 0.0, 0.0, acks.failed, 0.0, f"{type(exc).__name__}: {exc}")
    finally:
        if producer is not None:
            producer.close(CLOSE_TIMEOUT_S)
    latencies = sorted(acks.latencies)
    records = len(latencies)
    elapsed_s = max(acks.last_ns - start_ns, 1) / 1e9
    error = None
    if records == 0:
        error = f"no record acknowledged ({sent} sent)"
        if acks.first_error is not None:
            error += f": {acks.first_error}"
    return Point(
        setting,
        records=records,
        records_per_s=records / elapsed_s if records else 0.0,
        p50_ms=percentile(latencies, 50) / 1e6,
        p99_ms=percentile(latencies, 99) / 1e6,
        wire_bytes_per_record=wire / records if records else 0.0,
        cpu_us_per_record=cpu_s * 1e6 / records if records else 0.0,
        failed=acks.failed,
        elapsed_s=round(elapsed_s, 6),
        error=error,
    )


def run_sweep(
    settings: Sequence[Setting],
    base_props: dict[str, str],
    topic: str,
    payloads: Sequence[bytes],
    deadline: float,
    max_in_flight: int,
    throughput: float = -1.0,
    progress: TextIO | None = None,
    measure: Callable[..., Point] = measure_point,
    clock: Callable[[], float] = time.monotonic,
) -> list[Point]:
    """Measure each setting in turn until ``deadline`` (on ``clock``); one progress line per point.

    Each point gets :func:`slot_seconds` of what is left; when less than :data:`MIN_POINT_S` is
    left, the sweep stops and returns the points measured so far.
    """
    points: list[Point] = []
    total = len(settings)
    for i, setting in enumerate(settings):
        slot = slot_seconds(deadline - clock(), total - i)
        if slot is None:
            if progress is not None:
                print(
                    f"# budget spent: {i} of {total} points measured, the other {total - i} skipped",
                    file=progress,
                    flush=True,
                )
            break
        point = measure(setting, base_props, topic, payloads, slot, max_in_flight, throughput)
        points.append(point)
        if progress is not None:
            left = max(0.0, deadline - clock())
            print(_progress_line(i + 1, total, point, points, left), file=progress, flush=True)
    return points


def _progress_line(i: int, total: int, point: Point, points: Sequence[Point], left_s: float) -> str:
    head = f"[{i}/{total}] {point.setting.label()}: "
    if point.ok:
        body = (
            f"{point.records_per_s:,.0f} rec/s, p50 {point.p50_ms:.2f} ms, p99 {point.p99_ms:.2f} ms, "
            f"{point.wire_bytes_per_record:.1f} B/rec, {point.cpu_us_per_record:.1f} µs CPU/rec"
        )
    else:
        body = f"failed ({point.error})"
    measured = [p for p in points if p.ok]
    best = max(measured, key=lambda p: p.records_per_s) if measured else None
    tail = f"; best so far {best.records_per_s:,.0f} rec/s" if best is not None else ""
    return f"{head}{body}{tail}; {left_s:.0f} s left"


# ------------------------------------------------------------------------------ the command


def _json_doc(
    points: Sequence[Point], analysis: Analysis, args: argparse.Namespace, topic: str, total: int
) -> dict[str, Any]:
    def row(p: Point) -> dict[str, Any]:
        doc = asdict(p)
        doc["setting"] = p.setting.properties()
        doc["pareto"] = any(p is q for q in analysis.pareto)
        doc["recommended"] = p is analysis.recommended
        return doc

    best = analysis.recommended
    return {
        "topic": topic,
        "budget_s": args.budget_s,
        "max_p99_ms": args.max_p99_ms,
        "max_in_flight": getattr(args, "max_in_flight", None),
        "throughput_target": getattr(args, "throughput", -1.0),
        "points_planned": total,
        "points": [row(p) for p in points],
        "meets_budget": analysis.meets_budget,
        "recommended": None if best is None else best.setting.properties(),
    }


def run(args: argparse.Namespace) -> int:
    from kprod import ConfigError, KprodError, ProducerConfig, UnknownTopicError
    from kprod.cli.produce import parse_pairs

    try:
        extra = parse_pairs(args.producer_property, "-X")
        acks = (
            _choice_list(args.acks, "--acks", ACKS)
            if args.acks is not None
            else [ACKS.get(extra.get("acks", "all"), "all")]
        )
        settings = sweep(
            _int_list(args.linger_ms, "--linger-ms"),
            _int_list(args.batch_size, "--batch-size"),
            _choice_list(args.compression, "--compression", {c: c for c in CODECS}),
            acks,
        )
        if args.budget_s <= 0 or args.max_p99_ms <= 0 or args.max_in_flight <= 0:
            raise ValueError("--budget-s, --max-p99-ms and --max-in-flight must be > 0")
        payloads = sample_records(args)
        base: dict[str, str] = dict(extra)
        if args.bootstrap_servers:
            base["bootstrap.servers"] = args.bootstrap_servers
        for setting in settings:  # fail before starting a broker
            ProducerConfig.from_user({**base, **setting.properties()})
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        prefix = "invalid producer settings: " if isinstance(exc, ConfigError) else ""
        print(f"kprod tune: {prefix}{exc}", file=sys.stderr)
        return 2
    swept = sorted(set(extra) & {"linger.ms", "batch.size", "compression.type"})
    if swept:
        print(f"# kprod tune: the sweep overrides -X {', '.join(swept)}", file=sys.stderr)

    topic = args.topic or f"kprod-tune-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + args.budget_s
    broker: Any = None
    try:
        if "bootstrap.servers" not in base:
            from kprod.cli.perf import start_embedded_broker

            broker = start_embedded_broker(topic, args.partitions)
            base["bootstrap.servers"] = broker.bootstrap_servers
        mean = sum(map(len, payloads)) / len(payloads)
        print(
            f"# kprod tune: {len(settings)} points, ~{args.budget_s / len(settings):.1f} s each "
            f"(budget {args.budget_s:g} s), topic {topic}, {len(payloads)} distinct values of "
            f"{mean:.0f} bytes on average, at most {args.max_in_flight} records in flight",
            file=sys.stderr,
            flush=True,
        )
        points = run_sweep(
            settings, base, topic, payloads, deadline, args.max_in_flight, args.throughput, sys.stderr
        )
    except KeyboardInterrupt:
        print("kprod tune: interrupted", file=sys.stderr)
        return 130
    except UnknownTopicError as exc:
        print(
            f"kprod tune: {exc}. If the cluster does not create topics on first use, create {topic!r} "
            "first or pass --topic of an existing topic",
            file=sys.stderr,
        )
        return 1
    except KprodError as exc:
        print(f"kprod tune: {exc}", file=sys.stderr)
        return 1
    finally:
        if broker is not None:
            broker.stop()

    return report(points, len(settings), args, topic, mean)


def report(
    points: Sequence[Point], planned: int, args: argparse.Namespace, topic: str, mean_bytes: float
) -> int:
    """Print the table and the recommendation on stdout, write the chart and the JSON; the exit status.

    Status 0 when a setting is recommended, 1 when nothing was measured or a file could not be
    written. Without matplotlib the chart is skipped with a message naming ``kprod[tune]``.
    """
    analysis = analyze(points, args.max_p99_ms, PACED_TIE_FRACTION if args.throughput > 0 else 0.0)
    print(format_table(points, analysis))
    print()
    print(recommendation_text(analysis), flush=True)
    if len(points) < planned:
        print(
            f"# the budget allowed {len(points)} of {planned} points; raise --budget-s for the rest",
            file=sys.stderr,
        )
    status = 0 if analysis.recommended is not None else 1
    if points:
        try:
            write_chart(
                points,
                analysis,
                args.chart,
                title=f"kprod tune: {mean_bytes:.0f}-byte records, p99 budget {args.max_p99_ms:g} ms",
            )
            print(f"# chart: {args.chart}", file=sys.stderr)
        except ImportError:
            print(
                "kprod tune: the chart needs matplotlib: pip install 'kprod[tune]' (the table is above)",
                file=sys.stderr,
            )
        except OSError as exc:
            print(f"kprod tune: cannot write the chart: {exc}", file=sys.stderr)
            status = 1
    if args.json is not None:
        try:
            args.json.write_text(
                json.dumps(_json_doc(points, analysis, args, topic, planned), indent=2) + "\n"
            )
        except OSError as exc:
            print(f"kprod tune: cannot write {args.json}: {exc}", file=sys.stderr)
            status = 1
    return status
