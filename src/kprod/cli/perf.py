"""``kprod perf``: Kafka's ``kafka-producer-perf-test`` for kprod.

Same flags and the same output lines as ``ProducerPerformance.java``, so scripts
that parse the Java tool's output parse this one. It uses only the public API
(``kprod.Producer``, or ``kprod.AsyncProducer`` with ``--async``).

* Records have no key; values are ``--record-size`` random uppercase letters
  (seeded, drawn from a pool of at most 4096 distinct payloads), a random line
  of ``--payload-file``, or the record's index (``--payload-monotonic``).
* Latency is ack time minus send time, taken in the ``on_delivery`` callback
  for every acknowledged record. By default one shared callback computes it in
  whole ms from the record's create timestamp (kprod stamps it in ``send()``),
  as Java does; ``--precise-latency`` binds a ns send time to each record
  instead (ns resolution, but one ``partial`` object per record, which costs
  throughput). The callback only appends the latency to a list; once a second
  the list is folded into an HDR histogram (3 significant digits, up to 1 h)
  and, every 5 s, a window line is printed.
* ``--throughput`` throttles like Java's ``ThroughputThrottler``: once the rate
  so far exceeds the target, each record owes ``1/target`` s of sleep and the
  debt is paid when it reaches 2 ms.
* Without ``--bootstrap-servers`` (and no ``bootstrap.servers`` property) it
  starts the embedded Tansu broker and creates the topic with ``--partitions``.

MB is MiB (2**20 bytes), as in the Java tool; only payload bytes count.

Why one module of about 1,000 lines: the Java tool's flags and output lines, the workload
generators, the latency histogram and the live view's feed are one command's parts and share its
options; each is a function or a small class here.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from kprod.cli.options import add_bootstrap_servers

REPORT_INTERVAL_NS = 5_000_000_000
"""Window lines every 5 s, as in the Java tool."""
DRAIN_INTERVAL_NS = 1_000_000_000
"""Pending latencies are folded into the histogram this often (bounds the list's memory)."""
PAYLOAD_POOL_BYTES = 16 << 20
PAYLOAD_POOL_MAX = 4096
FILE_PICKS = 65536
MIN_SLEEP_NS = 2_000_000
"""ThroughputThrottler.MIN_SLEEP_NS: sleep once this much is owed."""
HIST_LOWEST_NS = 1_000
HIST_HIGHEST_NS = 3_600_000_000_000
HIST_DIGITS = 3
MAX_ERRORS_SHOWN = 5
DEFAULT_CLIENT_ID = "perf-producer-client"
UPPERCASE_TABLE = bytes(65 + i % 26 for i in range(256))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Measure producer throughput and latency, with the flags and output of Kafka's "
        "kafka-producer-perf-test. Without --bootstrap-servers it starts the embedded broker."
    )
    parser.add_argument("--topic", required=True, metavar="TOPIC", help="produce messages to this topic")
    parser.add_argument(
        "--num-records", required=True, type=int, metavar="NUM-RECORDS", help="number of messages to produce"
    )
    payload = parser.add_mutually_exclusive_group(required=True)
    payload.add_argument(
        "--record-size",
        type=int,
        metavar="RECORD-SIZE",
        help="message size in bytes (random uppercase letters)",
    )
    payload.add_argument(
        "--payload-file",
        metavar="PAYLOAD-FILE",
        help="file of UTF-8 payloads split by --payload-delimiter; one is picked at random per record",
    )
    payload.add_argument(
        "--payload-monotonic", action="store_true", help="payload is the record's index as a decimal string"
    )
    parser.add_argument(
        "--payload-delimiter",
        default="\\n",
        metavar="PAYLOAD-DELIMITER",
        help="delimiter of --payload-file; backslash escapes are understood (default: \\n)",
    )
    parser.add_argument(
        "--throughput",
        required=True,
        type=float,
        metavar="THROUGHPUT",
        help="throttle to about this many messages/sec; -1 (any negative) = no throttling",
    )
    parser.add_argument(
        "--command-property",
        "--producer-props",
        dest="producer_props",
        nargs="+",
        action="extend",
        default=[],
        metavar="PROP-NAME=PROP-VALUE",
        help="producer settings (Kafka names); they override --command-config "
        "(--producer-props is the Java tool's older name)",
    )
    parser.add_argument(
        "-X",
        dest="producer_props",
        action="append",
        metavar="PROP-NAME=PROP-VALUE",
        help="one producer setting, as kcat and kprod produce take it (e.g. -X kprod.live.port=9999 to "
        "watch the run with kprod top --port 9999)",
    )
    parser.add_argument(
        "--command-config",
        "--producer.config",
        dest="producer_config",
        metavar="CONFIG-FILE",
        help="producer settings in a Java properties file (--producer.config is the older name)",
    )
    parser.add_argument(
        "--transactional-id",
        metavar="TRANSACTIONAL-ID",
        help="produce in transactions with this transactional.id (overrides a transactional.id property)",
    )
    parser.add_argument(
        "--transaction-duration-ms",
        type=int,
        metavar="TRANSACTION-DURATION",
        help="commit each transaction after this many ms (default 3000 when transactions are on; "
        "alone, it turns them on with the id performance-producer-<uuid>)",
    )
    parser.add_argument(
        "--record-key-range",
        type=int,
        metavar="KEY-RANGE",
        help="keys are the integers [0, KEY-RANGE) as decimal strings (with --key-distribution)",
    )
    parser.add_argument(
        "--key-distribution",
        choices=("none", "range", "random"),
        default="none",
        help="none: null keys (default); range: round-robin over [0, KEY-RANGE); random: uniform",
    )
    parser.add_argument(
        "--reporting-interval",
        type=int,
        default=5000,
        metavar="INTERVAL-MS",
        help="print a window line this often (default 5000 ms)",
    )
    parser.add_argument(
        "--print-metrics", action="store_true", help="print the producer's metrics at the end of the test"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="show the producer's nine stages while it runs, on stderr: a panel on a terminal (with Rich), "
        "one line per second otherwise",
    )
    parser.add_argument(
        "--warmup-records",
        type=int,
        default=0,
        metavar="WARMUP-RECORDS",
        help="records excluded from a second, steady-state summary (must be < --num-records)",
    )
    add_bootstrap_servers(
        parser,
        help="brokers (overrides a bootstrap.servers property); default: start the embedded broker",
        short=False,
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=6,
        metavar="N",
        help="partitions of the topic created on the embedded broker (default 6)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the final summary as one JSON object on stdout (window lines go to stderr)",
    )
    parser.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="use AsyncProducer.enqueue in an asyncio loop instead of Producer.send",
    )
    parser.add_argument(
        "--precise-latency",
        action="store_true",
        help="time each record with its own callback (ns resolution, exact bytes); the default takes "
        "whole ms from the record's timestamp, like the Java tool, and costs less per record",
    )
    parser.add_argument(
        "--random-seed",
        "--seed",
        dest="seed",
        type=int,
        default=0,
        help="seed of the payload and key generators (default 0: the same run every time)",
    )


# ------------------------------------------------------------------------------ settings


def parse_properties(text: str) -> dict[str, str]:
    """Parse a Java ``.properties`` text: ``k=v``, ``k:v`` or ``k v``; ``#``/``!`` comments; ``\\`` continuations."""
    out: dict[str, str] = {}
    logical: list[str] = []
    for raw in text.splitlines():
        line = raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes: the line continues
            logical.append(line[:-1])
            continue
        logical.append(line)
        entry = "".join(logical)
        logical = []
        key, value = _split_property(entry)
        if key:
            out[key] = value
    if logical:
        key, value = _split_property("".join(logical))
        if key:
            out[key] = value
    return out


def _split_property(entry: str) -> tuple[str, str]:
    i = 0
    n = len(entry)
    while i < n:
        c = entry[i]
        if c == "\\":
            i += 2
            continue
        if c in "=: \t\f":
            break
        i += 1
    key = entry[:i]
    rest = entry[i:].lstrip(" \t\f")
    if rest[:1] in ("=", ":") and (i < n and entry[i] in " \t\f"):
        rest = rest[1:].lstrip(" \t\f")
    elif i < n and entry[i] in "=:":
        rest = entry[i + 1 :].lstrip(" \t\f")
    return _unescape(key), _unescape(rest)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    escapes = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u" and i + 6 <= len(text):
                try:
                    out.append(chr(int(text[i + 2 : i + 6], 16)))
                    i += 6
                    continue
                except ValueError:
                    pass
            out.append(escapes.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def start_embedded_broker(topic: str, partitions: int) -> Any:
    """Start the embedded Tansu broker with ``topic`` and say so on stderr (the CLI's default cluster)."""
    from kprod.broker import EmbeddedBroker

    broker = EmbeddedBroker()
    broker.start()
    broker.create_topic(topic, partitions=partitions)
    print(
        f"# embedded broker (Tansu) on {broker.bootstrap_servers}, topic {topic} with {partitions} partitions",
        file=sys.stderr,
        flush=True,
    )
    return broker


def producer_settings(args: argparse.Namespace) -> dict[str, str]:
    """The producer settings: the properties file, then ``--producer-props``, then ``--bootstrap-servers``."""
    props: dict[str, str] = {}
    if args.producer_config:
        props.update(parse_properties(Path(args.producer_config).read_text(encoding="utf-8")))
    for item in args.producer_props:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"invalid --producer-props item {item!r}: expected PROP-NAME=PROP-VALUE")
        props[name.strip()] = value.strip()
    if args.bootstrap_servers:
        props["bootstrap.servers"] = args.bootstrap_servers
    if args.transactional_id:
        props["transactional.id"] = args.transactional_id
    elif args.transaction_duration_ms is not None and "transactional.id" not in props:
        props["transactional.id"] = f"performance-producer-{uuid.uuid4()}"
    props.setdefault("client.id", DEFAULT_CLIENT_ID)
    return props


# ------------------------------------------------------------------------------ payloads


def payload_sequence(args: argparse.Namespace) -> list[bytes] | None:
    """The payloads to cycle through (record i gets ``seq[i % len(seq)]``); None for monotonic payloads."""
    rng = random.Random(args.seed)
    if args.record_size is not None:
        size = args.record_size
        count = max(1, min(PAYLOAD_POOL_MAX, PAYLOAD_POOL_BYTES // max(1, size), args.num_records))
        letters = rng.randbytes(size * count).translate(UPPERCASE_TABLE)
        return [letters[j * size : (j + 1) * size] for j in range(count)]
    if args.payload_file is not None:
        delimiter = args.payload_delimiter.encode("utf-8").decode("unicode_escape")
        if not delimiter:
            raise ValueError("--payload-delimiter must not be empty")
        text = Path(args.payload_file).read_text(encoding="utf-8")
        items = text.split(delimiter)
        while items and items[-1] == "":  # like Java's String.split: trailing empty strings are dropped
            items.pop()
        if not items:
            raise ValueError(f"--payload-file {args.payload_file} holds no payloads")
        payloads = [item.encode("utf-8") for item in items]
        picks = min(FILE_PICKS, args.num_records)
        return [payloads[rng.randrange(len(payloads))] for _ in range(picks)]
    return None


# ------------------------------------------------------------------------------ throttling


class Throttler:
    """Java's ThroughputThrottler: sleep, on average, 1/target s per record once ahead of the target."""

    __slots__ = ("deficit_ns", "sleep_ns", "start_ns", "target")

    def __init__(self, target: float, start_ns: int) -> None:
        self.target = target
        self.start_ns = start_ns
        self.sleep_ns = int(1e9 / target) if target > 0 else 0
        self.deficit_ns = 0

    def owed_seconds(self, sent: int, now_ns: int) -> float:
        """Seconds to sleep now (0.0 most of the time)."""
        elapsed = (now_ns - self.start_ns) / 1e9
        if elapsed <= 0 or sent / elapsed <= self.target:
            return 0.0
        self.deficit_ns += self.sleep_ns
        if self.deficit_ns < MIN_SLEEP_NS:
            return 0.0
        owed = self.deficit_ns / 1e9
        self.deficit_ns = 0
        return owed


# ------------------------------------------------------------------------------ statistics


def _new_histogram(unit_ns: int) -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(max(1, HIST_LOWEST_NS // unit_ns), HIST_HIGHEST_NS // unit_ns, HIST_DIGITS)


def record_sorted(hist: Any, values: list[int], highest: int) -> None:
    """Record sorted values: one ``record_value`` per occupied HDR bucket, not per value."""
    i = 0
    n = len(values)
    equivalent = hist.get_highest_equivalent_value
    while i < n:
        value = min(max(values[i], 1), highest)
        j = bisect.bisect_right(values, equivalent(value), i)
        hist.record_value(value, j - i)
        i = j


def sent_bytes(seq: list[bytes] | None, sent: int) -> int:
    """Payload bytes of records 0..sent-1 (record i carries ``seq[i % len(seq)]`` or ``str(i)``)."""
    if seq is None:
        total, digits, low = 0, 1, 0
        while low < sent:
            high = min(sent, 10**digits)
            total += (high - low) * digits
            low, digits = high, digits + 1
        return total
    full, rest = divmod(sent, len(seq))
    return full * sum(map(len, seq)) + sum(map(len, seq[:rest]))


class Stats:
    """Counts, bytes and latencies of acknowledged records.

    Only the thread that runs delivery callbacks touches it while records are in
    flight (the I/O thread, or the event loop with --async); the caller reads it
    after close(). Times are wall-clock ns (``time.time_ns``), like the Java tool's.

    Two ways to take latency:

    * ``on_ack(metadata, error)`` (default), one shared callback for every record:
      latency = now (ms) - ``metadata.timestamp``, the create time kprod stamped in
      ``send()`` from the same clock. Whole milliseconds, exactly like Java's
      ``now - sendStartMs``, and no per-record object. Wrong for a topic with
      ``message.timestamp.type=LogAppendTime`` (the timestamp is then the broker's).
    * ``on_ack_precise(send_ns, nbytes, metadata, error)`` (``--precise-latency``),
      bound per record with ``functools.partial``: ns resolution and exact
      bytes, at the price of one partial object per record.
    """

    def __init__(
        self,
        start_ns: int,
        out: TextIO,
        precise: bool,
        record_bytes: float,
        report_interval_ns: int = REPORT_INTERVAL_NS,
    ) -> None:
        self.report_interval_ns = report_interval_ns
        self.start_ns = start_ns
        self.out = out
        self.unit_ns = 1 if precise else 1_000_000
        self.highest = HIST_HIGHEST_NS // self.unit_ns
        self.record_bytes = record_bytes
        """Bytes per record for the default callback (exact with --record-size, else the mean)."""
        self.precise = precise
        self.print_windows = True
        self.pending: list[int] = []
        self.hist = _new_histogram(self.unit_ns)
        self.count = 0
        self.bytes = 0
        self.latency_sum = 0
        self.latency_max = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.next_drain_ns = start_ns + DRAIN_INTERVAL_NS
        self.window_start_ns = start_ns
        self.window_count = 0
        self.window_bytes = 0
        self.window_sum = 0
        self.window_max = 0
        self.also: Stats | None = None
        """The steady-state stats, once the warm-up records are sent."""

    # -- callbacks (hot) --------------------------------------------------------------------

    def on_ack(self, metadata: Any, error: BaseException | None) -> None:
        now = time.time_ns()
        if error is None:
            self.pending.append(now // 1_000_000 - metadata.timestamp)
            if now >= self.next_drain_ns:
                self.drain(now)
        else:
            self.on_error(error)

    def on_ack_steady(self, metadata: Any, error: BaseException | None) -> None:
        now = time.time_ns()
        if error is None:
            also = self.also
            assert also is not None
            latency = now // 1_000_000 - metadata.timestamp
            self.pending.append(latency)
            also.pending.append(latency)
            if now >= self.next_drain_ns:
                self.drain(now)
            if now >= also.next_drain_ns:
                also.drain(now)
        else:
            self.on_error(error)

    def on_ack_precise(self, send_ns: int, nbytes: int, metadata: Any, error: BaseException | None) -> None:
        now = time.time_ns()
        if error is None:
            self.pending.append(now - send_ns)
            self.bytes += nbytes
            if now >= self.next_drain_ns:
                self.drain(now)
        else:
            self.on_error(error)

    def on_ack_precise_steady(
        self, send_ns: int, nbytes: int, metadata: Any, error: BaseException | None
    ) -> None:
        now = time.time_ns()
        if error is None:
            also = self.also
            assert also is not None
            latency = now - send_ns
            self.pending.append(latency)
            self.bytes += nbytes
            also.pending.append(latency)
            also.bytes += nbytes
            if now >= self.next_drain_ns:
                self.drain(now)
            if now >= also.next_drain_ns:
                also.drain(now)
        else:
            self.on_error(error)

    # -- bookkeeping (once a second) ---------------------------------------------------------

    def on_error(self, error: BaseException) -> None:
        self.failed += 1
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        if self.failed <= MAX_ERRORS_SHOWN:
            print(f"kprod perf: record failed: {error!r}", file=sys.stderr, flush=True)
        elif self.failed == MAX_ERRORS_SHOWN + 1:
            print("kprod perf: more records failed (counted, not shown)", file=sys.stderr, flush=True)

    def drain(self, now_ns: int) -> None:
        """Fold pending latencies into the histogram and the window; print the window when it is 5 s old."""
        values = self.pending
        self.pending = []
        if values:
            values.sort()
            if values[0] < 0:  # the wall clock stepped back: count those as 0
                values = [max(0, v) for v in values]
            n = len(values)
            total = sum(values)
            self.count += n
            if not self.precise:
                self.bytes = round(self.count * self.record_bytes)
            self.latency_sum += total
            self.latency_max = max(self.latency_max, values[-1])
            self.window_count += n
            self.window_sum += total
            self.window_max = max(self.window_max, values[-1])
            record_sorted(self.hist, values, self.highest)
        self.next_drain_ns = now_ns + DRAIN_INTERVAL_NS
        if now_ns - self.window_start_ns >= self.report_interval_ns:
            self.print_window(now_ns)

    def print_window(self, now_ns: int) -> None:
        elapsed_ms = (now_ns - self.window_start_ns) / 1e6
        window_bytes = self.bytes - self.window_bytes
        ms = self.unit_ns / 1e6
        if self.print_windows and self.window_count:
            print(
                # Java's format string, verbatim.
                "%d records sent, %.1f records/sec (%.2f MB/sec), %.1f ms avg latency, %.1f ms max latency."  # noqa: UP031
                % (
                    self.window_count,
                    1000.0 * self.window_count / elapsed_ms,
                    1000.0 * window_bytes / elapsed_ms / (1024.0 * 1024.0),
                    self.window_sum * ms / self.window_count,
                    self.window_max * ms,
                ),
                file=self.out,
                flush=True,
            )
        self.window_start_ns = now_ns
        self.window_count = 0
        self.window_bytes = self.bytes
        self.window_sum = 0
        self.window_max = 0

    def summary(self, end_ns: int, exact_bytes: int | None = None) -> dict[str, Any]:
        """The final figures (drains what is pending first).

        ``exact_bytes``: the payload bytes of every record sent, used when none failed
        (with the default callback and payloads of varying size, bytes are otherwise
        estimated from the mean payload size).
        """
        if self.pending:
            saved = self.print_windows
            self.print_windows = False  # the last partial window is not printed, as in Java
            self.drain(end_ns)
            self.print_windows = saved
        if exact_bytes is not None and not self.precise and self.failed == 0:
            self.bytes = exact_bytes
        elapsed_ms = max((end_ns - self.start_ns) / 1e6, 1e-9)
        count = self.count
        hist = self.hist
        ms = self.unit_ns / 1e6

        def pct(p: float) -> float:
            return float(hist.get_value_at_percentile(p)) * ms if count else 0.0

        return {
            "records": count,
            "failed": self.failed,
            "errors": dict(self.errors),
            "bytes": self.bytes,
            "elapsed_s": round(elapsed_ms / 1000, 6),
            "records_per_sec": 1000.0 * count / elapsed_ms,
            "mb_per_sec": 1000.0 * self.bytes / elapsed_ms / (1024.0 * 1024.0),
            "avg_latency_ms": self.latency_sum * ms / count if count else 0.0,
            "max_latency_ms": self.latency_max * ms,
            "p50_ms": pct(50.0),
            "p95_ms": pct(95.0),
            "p99_ms": pct(99.0),
            "p999_ms": pct(99.9),
            "latency_resolution": "ns" if self.precise else "ms",
        }


def total_line(s: dict[str, Any], label: str = "") -> str:
    """Java's final line; percentiles truncated to whole ms like Java's ints."""
    return (
        # Java's format string, verbatim.
        "%d%s records sent, %f records/sec (%.2f MB/sec), %.2f ms avg latency, %.2f ms max latency, "  # noqa: UP031
        "%d ms 50th, %d ms 95th, %d ms 99th, %d ms 99.9th."
        % (
            s["records"],
            label,
            s["records_per_sec"],
            s["mb_per_sec"],
            s["avg_latency_ms"],
            s["max_latency_ms"],
            int(s["p50_ms"]),
            int(s["p95_ms"]),
            int(s["p99_ms"]),
            int(s["p999_ms"]),
        )
    )


def metrics_lines(metrics: dict[str, Any]) -> Iterator[str]:
    """``ToolsUtils.printMetrics`` layout: a header, then ``name : value`` sorted by name."""
    flat: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{name}:{sub}"] = subvalue
        else:
            flat[name] = value
    width = max([len("Metric Name"), *(len(k) for k in flat)])
    yield ""
    yield f"{'Metric Name':<{width}}   Value"
    for name in sorted(flat):
        value = flat[name]
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        yield f"{name:<{width}} : {text}"


# ------------------------------------------------------------------------------ the run


class _Run:
    """One test: settings, payloads and stats shared by the sync and async drivers."""

    def __init__(self, args: argparse.Namespace, props: dict[str, str], seq: list[bytes] | None) -> None:
        self.args = args
        self.props = props
        self.seq = seq
        self.precise: bool = args.precise_latency
        self.progress: TextIO = sys.stderr if args.json else sys.stdout
        if args.record_size is not None:
            self.record_bytes: float = args.record_size
        elif seq is not None:
            self.record_bytes = sum(map(len, seq)) / len(seq)
        else:
            self.record_bytes = sent_bytes(None, args.num_records) / args.num_records
        self.stats: Stats | None = None
        self.steady: Stats | None = None
        self.steady_first = 0
        self.metrics: dict[str, Any] | None = None
        self.send_error: BaseException | None = None
        self.sent = 0
        self.key_rng = random.Random(args.seed)
        self.txn_duration_ns: int | None = None
        """With transactions: commit once a transaction is this old (ns), as the Java tool does."""
        if "transactional.id" in props:
            self.txn_duration_ns = (args.transaction_duration_ms or 3000) * 1_000_000
        self.commits = 0

    def begin(self) -> Stats:
        self.stats = self._stats()
        return self.stats

    def _stats(self) -> Stats:
        interval_ns = max(1, self.args.reporting_interval) * 1_000_000
        return Stats(time.time_ns(), self.progress, self.precise, self.record_bytes, interval_ns)

    def key(self, i: int) -> bytes | None:
        """Record i's key, as the Java tool makes it: an integer of [0, KEY-RANGE) in decimal."""
        distribution = self.args.key_distribution
        if distribution == "range":
            return str(i % self.args.record_key_range).encode()
        if distribution == "random":
            return str(self.key_rng.randrange(self.args.record_key_range)).encode()
        return None

    def callback(self, steady: bool) -> Callable[..., None]:
        """The callback for the next records; at the first steady record, start the steady-state stats."""
        stats = self.stats
        assert stats is not None
        if steady:
            self.steady = self._stats()
            self.steady_first = self.args.warmup_records
            stats.print_windows = False  # the steady-state stats print the windows from now on
            stats.also = self.steady
            return stats.on_ack_precise_steady if self.precise else stats.on_ack_steady
        return stats.on_ack_precise if self.precise else stats.on_ack

    def ranges(self) -> list[tuple[int, int, bool]]:
        """(first, end, steady) index ranges to send."""
        n = self.args.num_records
        w = self.args.warmup_records
        return [(0, w, False), (w, n, True)] if w > 0 else [(0, n, False)]

    def payload(self, i: int) -> bytes:
        seq = self.seq
        return seq[i % len(seq)] if seq is not None else str(i).encode()


def _send_sync(run: _Run, producer: Any) -> None:
    args = run.args
    topic = args.topic
    seq = run.seq
    stats = run.begin()
    throttler = Throttler(args.throughput, stats.start_ns) if args.throughput >= 0 else None
    send = producer.send
    clock = time.time_ns
    txn_ns = run.txn_duration_ns
    keyed = args.key_distribution != "none"
    txn_started_ns = 0
    if txn_ns is not None:
        producer.init_transactions()
    for first, end, steady in run.ranges():
        ack = run.callback(steady)
        if txn_ns is not None or keyed:
            for i in range(first, end):
                if txn_ns is not None and not txn_started_ns:
                    producer.begin_transaction()
                    txn_started_ns = clock()
                payload = run.payload(i)
                if run.precise:
                    send(topic, payload, run.key(i), on_delivery=partial(ack, clock(), len(payload)))
                else:
                    send(topic, payload, run.key(i), on_delivery=ack)
                run.sent = i + 1
                now = clock()
                if txn_ns is not None and now - txn_started_ns >= txn_ns:
                    producer.commit_transaction()
                    run.commits += 1
                    txn_started_ns = 0
                if throttler is not None:
                    owed = throttler.owed_seconds(i + 1, now)
                    if owed:
                        time.sleep(owed)
            continue
        if seq is not None and throttler is None:  # the hot loops: nothing per record but send()
            seq_len = len(seq)
            i = first
            try:
                if run.precise:
                    for i in range(first, end):
                        payload = seq[i % seq_len]
                        send(topic, payload, on_delivery=partial(ack, clock(), len(payload)))
                else:
                    for i in range(first, end):
                        send(topic, seq[i % seq_len], on_delivery=ack)
            except BaseException:
                run.sent = i  # record i was not accepted
                raise
            run.sent = end
            continue
        for i in range(first, end):
            payload = run.payload(i)
            if run.precise:
                send(topic, payload, on_delivery=partial(ack, clock(), len(payload)))
            else:
                send(topic, payload, on_delivery=ack)
            run.sent = i + 1
            if throttler is not None:
                owed = throttler.owed_seconds(i + 1, clock())
                if owed:
                    time.sleep(owed)
    if txn_started_ns:
        producer.commit_transaction()
        run.commits += 1


def _live_view(run: _Run, producer: Any) -> Any:
    """The live view (``--live``) over ``producer.metrics``, started, or None."""
    if not run.args.live:
        return None
    from kprod.cli.live import LiveView

    view = LiveView(producer.metrics, stream=sys.stderr)
    view.start()
    return view


def _say_live_address(producer: Any) -> None:
    """With kprod.live.port set, say where ``kprod top`` finds this run (stderr)."""
    address = producer.live_address
    if address is not None:
        host, port = address
        option = "" if host == "127.0.0.1" else f" --host {host}"
        print(
            f"# kprod live endpoint on {host}:{port}: kprod top --port {port}{option}",
            file=sys.stderr,
            flush=True,
        )


def _run_sync(run: _Run) -> None:
    from kprod import KprodError, Producer

    producer = Producer(run.props)
    _say_live_address(producer)
    view = _live_view(run, producer)
    try:
        try:
            _send_sync(run, producer)
        except KprodError as exc:
            run.send_error = exc
        finally:
            if view is not None:
                view.stop()
        if run.args.print_metrics:
            producer.flush()
            run.metrics = producer.metrics()
    except BaseException:  # Ctrl-C: do not wait for delivery.timeout.ms
        producer.close(1.0)
        raise
    producer.close()


async def _run_async(run: _Run) -> None:
    from kprod import AsyncProducer, KprodError

    args = run.args
    topic = args.topic
    producer = AsyncProducer(run.props)
    await producer.start()
    _say_live_address(producer)
    view = _live_view(run, producer)
    try:
        stats = run.begin()
        throttler = Throttler(args.throughput, stats.start_ns) if args.throughput >= 0 else None
        enqueue = producer.enqueue
        clock = time.time_ns
        txn_ns = run.txn_duration_ns
        txn_started_ns = 0
        try:
            if txn_ns is not None:
                await producer.init_transactions()
            for first, end, steady in run.ranges():
                ack = run.callback(steady)
                for i in range(first, end):
                    if txn_ns is not None and not txn_started_ns:
                        await producer.begin_transaction()
                        txn_started_ns = clock()
                    payload = run.payload(i)
                    if run.precise:
                        await enqueue(
                            topic, payload, run.key(i), on_delivery=partial(ack, clock(), len(payload))
                        )
                    else:
                        await enqueue(topic, payload, run.key(i), on_delivery=ack)
                    run.sent = i + 1
                    if txn_ns is not None and clock() - txn_started_ns >= txn_ns:
                        await producer.commit_transaction()
                        run.commits += 1
                        txn_started_ns = 0
                    if throttler is not None:
                        owed = throttler.owed_seconds(i + 1, clock())
                        if owed:
                            await asyncio.sleep(owed)
            if txn_started_ns:
                await producer.commit_transaction()
                run.commits += 1
        except KprodError as exc:
            run.send_error = exc
        finally:
            if view is not None:
                view.stop()
        if args.print_metrics:
            await producer.flush()
            metrics = getattr(producer, "metrics", None)
            run.metrics = metrics() if callable(metrics) else {"note": "AsyncProducer has no metrics()"}
    except BaseException:  # Ctrl-C or cancelled: do not wait for delivery.timeout.ms
        await producer.close(1.0)
        raise
    await producer.close()


def run(args: argparse.Namespace) -> int:
    if args.num_records <= 0:
        print("kprod perf: --num-records must be > 0", file=sys.stderr)
        return 2
    if args.record_size is not None and args.record_size < 0:
        print("kprod perf: --record-size must be >= 0", file=sys.stderr)
        return 2
    if args.throughput == 0:
        print("kprod perf: --throughput must be > 0, or -1 for no throttling", file=sys.stderr)
        return 2
    if not 0 <= args.warmup_records < args.num_records:
        print("kprod perf: --warmup-records must be >= 0 and < --num-records", file=sys.stderr)
        return 2
    if args.key_distribution != "none" and (args.record_key_range is None or args.record_key_range <= 0):
        print(
            f"kprod perf: --key-distribution {args.key_distribution} needs --record-key-range > 0",
            file=sys.stderr,
        )
        return 2
    if args.transaction_duration_ms is not None and args.transaction_duration_ms <= 0:
        print("kprod perf: --transaction-duration-ms should be greater than zero", file=sys.stderr)
        return 2
    try:
        props = producer_settings(args)
        seq = payload_sequence(args)
    except (OSError, ValueError) as exc:
        print(f"kprod perf: {exc}", file=sys.stderr)
        return 2

    from kprod import ConfigError, KprodError, ProducerConfig

    try:
        ProducerConfig.from_user(props)  # fail before starting a broker
    except ConfigError as exc:
        print(f"kprod perf: invalid producer settings: {exc}", file=sys.stderr)
        return 2

    broker: Any = None
    try:
        if "bootstrap.servers" not in props:
            broker = start_embedded_broker(args.topic, args.partitions)
            props["bootstrap.servers"] = broker.bootstrap_servers
        if args.warmup_records > 0 and not args.json:
            print(
                f"Warmup first {args.warmup_records} records. "
                "Steady state results will print after the complete test summary.",
                flush=True,
            )
        perf_run = _Run(args, props, seq)
        if args.use_async:
            asyncio.run(_run_async(perf_run))
        else:
            _run_sync(perf_run)
        end_ns = time.time_ns()
    except ConfigError as exc:
        print(f"kprod perf: invalid producer settings: {exc}", file=sys.stderr)
        return 2
    except KprodError as exc:
        print(f"kprod perf: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kprod perf: interrupted", file=sys.stderr)
        return 130
    finally:
        if broker is not None:
            broker.stop()

    stats = perf_run.stats
    assert stats is not None
    sent = perf_run.sent
    total = stats.summary(end_ns, sent_bytes(seq, sent))
    steady = None
    if perf_run.steady is not None:
        first = perf_run.steady_first
        steady = perf_run.steady.summary(end_ns, sent_bytes(seq, sent) - sent_bytes(seq, min(first, sent)))
    if perf_run.send_error is not None:
        print(
            f"kprod perf: send() failed after {perf_run.sent} records: {perf_run.send_error}",
            file=sys.stderr,
        )
    if args.json:
        doc: dict[str, Any] = {
            **total,
            "num_records": args.num_records,
            "api": "AsyncProducer.enqueue" if args.use_async else "Producer.send",
            "throughput_target": args.throughput,
            "producer_props": {k: v for k, v in props.items()},
            "embedded_broker": broker is not None,
            "transactions_committed": perf_run.commits,
            "pid": os.getpid(),
        }
        if steady is not None:
            doc["steady_state"] = steady
        if perf_run.send_error is not None:
            doc["send_error"] = str(perf_run.send_error)
        if perf_run.metrics is not None:
            doc["metrics"] = perf_run.metrics
        print(json.dumps(doc, default=str), flush=True)
    else:
        print(total_line(total), flush=True)
        if steady is not None:
            print(total_line(steady, " steady state"), flush=True)
        if perf_run.metrics is not None:
            for line in metrics_lines(perf_run.metrics):
                print(line)
    ok = perf_run.send_error is None and total["failed"] == 0 and total["records"] == args.num_records
    return 0 if ok else 1
