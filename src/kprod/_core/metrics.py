"""The producer's metrics as Java computes them: sampled windows, rates, averages, maxima, totals.

Pure: every call takes ``now_ms``. A :class:`WindowedStat` keeps ``metrics.num.samples`` samples of
``metrics.sample.window.ms`` each, as Java's ``SampledStat``: a rate is the sum over the live
samples divided by the time they span (counted as at least ``num_samples - 1`` full windows, Java's
``Rate.windowSize``), an average the sum over the count, a maximum the largest value; samples older
than ``num_samples`` windows are forgotten. Recording costs a few attribute updates, so the sender
records per batch and per request, never per record.
"""

from __future__ import annotations

import math

__all__ = ["ProducerMetrics", "WindowedStat"]


class WindowedStat:
    """Sum, count and maximum of values in rolling time windows, plus the all-time total."""

    __slots__ = ("_count", "_current", "_max", "_starts", "_sum", "num_samples", "total", "total_count", "window_ms")

    def __init__(self, window_ms: int = 30_000, num_samples: int = 2) -> None:
        self.window_ms = max(1, window_ms)
        self.num_samples = max(2, num_samples)
        self._starts = [-1] * self.num_samples
        self._sum = [0.0] * self.num_samples
        self._count = [0] * self.num_samples
        self._max = [-math.inf] * self.num_samples
        self._current = 0
        self.total = 0.0
        """Every value recorded so far (Java's CumulativeSum: the ``-total`` metrics)."""
        self.total_count = 0
        """How many events were recorded so far (the ``count`` of every call)."""

    def record(self, value: float, now_ms: int, count: int = 1, maximum: float | None = None) -> None:
        """Add ``value`` (the sum of ``count`` events whose largest is ``maximum``) at ``now_ms``."""
        i = self._current
        if self._starts[i] < 0:
            self._starts[i] = now_ms
        elif now_ms >= self._starts[i] + self.window_ms:
            i = self._current = (i + 1) % self.num_samples
            self._starts[i] = now_ms
            self._sum[i] = 0.0
            self._count[i] = 0
            self._max[i] = -math.inf
        self._sum[i] += value
        self._count[i] += count
        top = value if maximum is None else maximum
        if top > self._max[i]:
            self._max[i] = top
        self.total += value
        self.total_count += count

    def _live(self, now_ms: int) -> list[int]:
        """Indexes of the samples still inside ``num_samples`` windows (Java purges the others)."""
        expire_before = now_ms - self.num_samples * self.window_ms
        return [i for i, start in enumerate(self._starts) if start >= 0 and start > expire_before]

    def rate(self, now_ms: int) -> float:
        """Sum per second over the live samples (0.0 with none)."""
        live = self._live(now_ms)
        if not live:
            return 0.0
        elapsed = now_ms - min(self._starts[i] for i in live)
        full_windows = elapsed // self.window_ms
        if full_windows < self.num_samples - 1:
            elapsed += (self.num_samples - 1 - full_windows) * self.window_ms
        return sum(self._sum[i] for i in live) / (max(elapsed, 1) / 1000)

    def avg(self, now_ms: int) -> float:
        """Sum over count of the live samples (NaN with none, as Java)."""
        live = self._live(now_ms)
        count = sum(self._count[i] for i in live)
        return sum(self._sum[i] for i in live) / count if count else math.nan

    def max(self, now_ms: int) -> float:
        """Largest value of the live samples (NaN with none)."""
        live = [self._max[i] for i in self._live(now_ms) if self._count[i]]
        return max(live) if live else math.nan


class ProducerMetrics:
    """The sender's measurements, Java's producer metrics by name (groups ``producer-metrics``,
    ``producer-topic-metrics``, ``producer-node-metrics``) plus why batches left."""

    def __init__(self, window_ms: int = 30_000, num_samples: int = 2) -> None:
        self._window = (window_ms, num_samples)
        stat = self._stat
        self.record_send = stat()
        self.record_error = stat()
        self.record_retry = stat()
        self.record_size = stat()
        self.batch_size = stat()
        self.batch_split = stat()
        self.compression_rate = stat()
        self.records_per_request = stat()
        self.record_queue_time = stat()
        self.request_latency = stat()
        self.produce_throttle_time = stat()
        self.outgoing_bytes = stat()
        self.incoming_bytes = stat()
        self.requests = stat()
        self.responses = stat()
        self.bufferpool_wait_ns = stat()
        # kprod's own: time per record in each stage of the pipeline (µs). Serialize, partition and
        # append are sampled (one record every STAGE_SAMPLE_INTERVAL_MS, see RecordAppender.pause_fast
        # and record_stage_sample); compression (the codec's calls) is measured for every request and
        # recorded per record (record_compression). Queue and in-flight times are Java's metrics.
        self.stage_serialize_us = stat()
        self.stage_partition_us = stat()
        self.stage_append_us = stat()
        self.stage_compress_us = stat()
        self.topics: dict[str, dict[str, WindowedStat]] = {}
        self.nodes: dict[int, dict[str, WindowedStat]] = {}
        self.batch_close_reasons: dict[str, int] = {}
        """Why drained batches left: full, linger, flush, memory (buffer.memory short), closing."""

    def record_stage_sample(self, serialize_ns: int, partition_ns: int, append_ns: int, now_ms: int) -> None:
        """One sampled record's caller-side stage times (ns; ``serialize_ns`` < 0 when its serialization
        was not timed, e.g. ``send_batch``'s records or a sample that became due after it)."""
        if serialize_ns >= 0:
            self.stage_serialize_us.record(serialize_ns / 1000, now_ms)
        self.stage_partition_us.record(partition_ns / 1000, now_ms)
        self.stage_append_us.record(append_ns / 1000, now_ms)

    def record_compression(self, compress_ns: int, records: int, now_ms: int) -> None:
        """``compress_ns`` ns of codec calls for a request's ``records`` records (nothing when no codec
        ran: without compression, or batches sent again with their compressed bytes cached)."""
        if compress_ns > 0 and records > 0:
            self.stage_compress_us.record(compress_ns / 1000, now_ms, count=records)

    def _stat(self) -> WindowedStat:
        return WindowedStat(*self._window)

    def topic(self, name: str) -> dict[str, WindowedStat]:
        stats = self.topics.get(name)
        if stats is None:
            stats = self.topics[name] = {
                k: self._stat()
                for k in ("record-send", "record-error", "record-retry", "byte", "compression")
            }
        return stats

    def node(self, node_id: int) -> dict[str, WindowedStat]:
        stats = self.nodes.get(node_id)
        if stats is None:
            stats = self.nodes[node_id] = {
                k: self._stat() for k in ("request-latency", "outgoing-byte", "request")
            }
        return stats

    def snapshot(self, now_ms: int) -> dict[str, object]:
        """Java's metric names (``producer-metrics``) with their values at ``now_ms``, and the per-topic
        and per-node groups under ``producer-topic-metrics`` / ``producer-node-metrics``."""
        out: dict[str, object] = {
            "record-send-rate": self.record_send.rate(now_ms),
            "record-send-total": self.record_send.total,
            "record-error-rate": self.record_error.rate(now_ms),
            "record-error-total": self.record_error.total,
            "record-retry-rate": self.record_retry.rate(now_ms),
            "record-retry-total": self.record_retry.total,
            "record-size-avg": self.record_size.avg(now_ms),
            "record-size-max": self.record_size.max(now_ms),
            "batch-size-avg": self.batch_size.avg(now_ms),
            "batch-size-max": self.batch_size.max(now_ms),
            "batch-split-rate": self.batch_split.rate(now_ms),
            "batch-split-total": self.batch_split.total,
            "compression-rate-avg": self.compression_rate.avg(now_ms),
            "records-per-request-avg": self.records_per_request.avg(now_ms),
            "record-queue-time-avg": self.record_queue_time.avg(now_ms),
            "record-queue-time-max": self.record_queue_time.max(now_ms),
            "request-latency-avg": self.request_latency.avg(now_ms),
            "request-latency-max": self.request_latency.max(now_ms),
            "produce-throttle-time-avg": self.produce_throttle_time.avg(now_ms),
            "produce-throttle-time-max": self.produce_throttle_time.max(now_ms),
            "outgoing-byte-rate": self.outgoing_bytes.rate(now_ms),
            "outgoing-byte-total": self.outgoing_bytes.total,
            "incoming-byte-rate": self.incoming_bytes.rate(now_ms),
            "incoming-byte-total": self.incoming_bytes.total,
            "request-rate": self.requests.rate(now_ms),
            "request-total": self.requests.total,
            "response-rate": self.responses.rate(now_ms),
            "response-total": self.responses.total,
            "bufferpool-wait-time-ns-total": self.bufferpool_wait_ns.total,
            "bufferpool-wait-ratio": self.bufferpool_wait_ns.rate(now_ms) / 1e9,
            "batch-close-reasons": dict(self.batch_close_reasons),
            "stage-serialize-time-avg-us": self.stage_serialize_us.avg(now_ms),
            "stage-partition-time-avg-us": self.stage_partition_us.avg(now_ms),
            "stage-append-time-avg-us": self.stage_append_us.avg(now_ms),
            "stage-sample-total": self.stage_append_us.total_count,
            "stage-serialize-sample-total": self.stage_serialize_us.total_count,
            "stage-compress-time-avg-us": self.stage_compress_us.avg(now_ms),
            "stage-compress-record-total": self.stage_compress_us.total_count,
            "stage-queue-time-avg-ms": self.record_queue_time.avg(now_ms),
            "stage-in-flight-time-avg-ms": self.request_latency.avg(now_ms),
        }
        out["producer-topic-metrics"] = {
            topic: {
                "record-send-rate": s["record-send"].rate(now_ms),
                "record-send-total": s["record-send"].total,
                "record-error-rate": s["record-error"].rate(now_ms),
                "record-error-total": s["record-error"].total,
                "record-retry-rate": s["record-retry"].rate(now_ms),
                "record-retry-total": s["record-retry"].total,
                "byte-rate": s["byte"].rate(now_ms),
                "byte-total": s["byte"].total,
                "compression-rate": s["compression"].avg(now_ms),
            }
            for topic, s in self.topics.items()
        }
        out["producer-node-metrics"] = {
            node: {
                "request-latency-avg": s["request-latency"].avg(now_ms),
                "request-latency-max": s["request-latency"].max(now_ms),
                "request-rate": s["request"].rate(now_ms),
                "request-total": s["request"].total,
                "outgoing-byte-rate": s["outgoing-byte"].rate(now_ms),
                "outgoing-byte-total": s["outgoing-byte"].total,
            }
            for node, s in self.nodes.items()
        }
        return out
