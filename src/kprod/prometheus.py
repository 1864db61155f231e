"""A Prometheus collector for a producer's metrics (``pip install 'kprod[prometheus]'``).

::

    from prometheus_client import REGISTRY, start_http_server
    from kprod.prometheus import ProducerCollector

    REGISTRY.register(ProducerCollector(producer))
    start_http_server(9108)

Every scrape reads :meth:`kprod.Producer.metrics` (or ``AsyncProducer.metrics``) once and turns it
into Prometheus families with Prometheus' naming rules: a ``kprod_producer_`` prefix, ``_total``
counters, units in the name and in base units (seconds, bytes), per-topic and per-broker values as
labels (``topic``, ``broker``), and the batch close reasons as ``reason``. Nothing is recorded
between scrapes, so it costs nothing on the send path. A ``client_id`` label tells producers apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("kprod.prometheus needs prometheus_client: pip install 'kprod[prometheus]'") from exc

__all__ = ["ProducerCollector"]


class _HasMetrics(Protocol):
    def metrics(self) -> dict[str, Any]: ...


# (kprod name, Prometheus name without prefix, help, scale to base units)
_COUNTERS: tuple[tuple[str, str, str, float], ...] = (
    ("record-send-total", "records_sent", "Records acknowledged by the brokers.", 1.0),
    ("record-error-total", "record_errors", "Records that failed.", 1.0),
    ("record-retry-total", "record_retries", "Records sent again after a retriable error.", 1.0),
    ("request-total", "requests", "Produce requests sent.", 1.0),
    ("response-total", "responses", "Produce answers received.", 1.0),
    ("outgoing-byte-total", "outgoing_bytes", "Bytes of Produce requests.", 1.0),
    ("incoming-byte-total", "incoming_bytes", "Bytes of Produce answers.", 1.0),
    ("batch-split-total", "batch_splits", "Batches split after MESSAGE_TOO_LARGE.", 1.0),
    (
        "bufferpool-wait-time-ns-total",
        "bufferpool_wait_seconds",
        "Time send() waited for buffer.memory.",
        1e-9,
    ),
)
_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    ("record-send-rate", "record_send_rate", "Records acknowledged per second (sampled window).", 1.0),
    ("record-error-rate", "record_error_rate", "Records failed per second (sampled window).", 1.0),
    ("request-latency-avg", "request_latency_avg_seconds", "Average Produce request latency.", 1e-3),
    ("request-latency-max", "request_latency_max_seconds", "Largest Produce request latency.", 1e-3),
    ("record-queue-time-avg", "record_queue_time_avg_seconds", "Average time batches waited to leave.", 1e-3),
    ("record-queue-time-max", "record_queue_time_max_seconds", "Longest time a batch waited to leave.", 1e-3),
    ("produce-throttle-time-avg", "produce_throttle_time_avg_seconds", "Average quota throttling.", 1e-3),
    ("batch-size-avg", "batch_size_avg_bytes", "Average batch size as sent.", 1.0),
    ("batch-size-max", "batch_size_max_bytes", "Largest batch size as sent.", 1.0),
    ("record-size-avg", "record_size_avg_bytes", "Average record size in its batch.", 1.0),
    ("compression-rate-avg", "compression_ratio", "Compressed over uncompressed batch size.", 1.0),
    ("records-per-request-avg", "records_per_request", "Average records per Produce request.", 1.0),
    ("buffer-total-bytes", "buffer_total_bytes", "buffer.memory.", 1.0),
    ("buffer-available-bytes", "buffer_available_bytes", "Free part of buffer.memory.", 1.0),
    ("requests-in-flight", "requests_in_flight", "Produce requests awaiting an answer.", 1.0),
    ("connection-count", "connections", "Open broker connections.", 1.0),
    ("waiting-threads", "waiting_callers", "Callers blocked in send() (metadata or memory).", 1.0),
    ("metadata-age", "metadata_age_seconds", "Seconds since the last Metadata answer.", 1.0),
    ("stage-serialize-time-avg-us", "stage_serialize_time_avg_seconds", "Serialization per record (sampled).", 1e-6),
    ("stage-partition-time-avg-us", "stage_partition_time_avg_seconds", "Partitioning per record (sampled).", 1e-6),
    ("stage-append-time-avg-us", "stage_append_time_avg_seconds", "Appending to a batch per record (sampled).", 1e-6),
    ("stage-compress-time-avg-us", "stage_compress_time_avg_seconds", "Compression per record (the codec's calls).", 1e-6),
)


class ProducerCollector(Collector):
    """Collects ``producer.metrics()`` at each scrape. ``prefix`` starts every name."""

    def __init__(self, producer: _HasMetrics, prefix: str = "kprod_producer") -> None:
        self._metrics: Callable[[], dict[str, Any]] = producer.metrics
        self._prefix = prefix
        config = getattr(producer, "config", None)
        self._client_id = str(getattr(config, "client_id", "")) if config is not None else ""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        m = self._metrics()
        if not m:
            return
        p = self._prefix
        base = ["client_id"]
        ident = [self._client_id]
        for key, name, text, scale in _COUNTERS:
            if key in m:
                family = CounterMetricFamily(f"{p}_{name}", text, labels=base)
                family.add_metric(ident, float(m[key]) * scale)
                yield family
        for key, name, text, scale in _GAUGES:
            if key in m:
                gauge = GaugeMetricFamily(f"{p}_{name}", text, labels=base)
                gauge.add_metric(ident, float(m[key]) * scale)
                yield gauge
        reasons = CounterMetricFamily(
            f"{p}_batches_closed", "Batches by why they left.", labels=[*base, "reason"]
        )
        for reason, count in (m.get("batch-close-reasons") or {}).items():
            reasons.add_metric([*ident, reason], float(count))
        yield reasons
        topics = m.get("producer-topic-metrics") or {}
        for key, name, text in (
            ("record-send-total", "topic_records_sent", "Records acknowledged, per topic."),
            ("record-error-total", "topic_record_errors", "Records failed, per topic."),
            ("record-retry-total", "topic_record_retries", "Records retried, per topic."),
            ("byte-total", "topic_bytes", "Batch bytes sent, per topic."),
        ):
            family = CounterMetricFamily(f"{p}_{name}", text, labels=[*base, "topic"])
            for topic, values in topics.items():
                family.add_metric([*ident, topic], float(values[key]))
            yield family
        nodes = m.get("producer-node-metrics") or {}
        latency = GaugeMetricFamily(
            f"{p}_broker_request_latency_avg_seconds",
            "Average request latency, per broker.",
            labels=[*base, "broker"],
        )
        requests = CounterMetricFamily(
            f"{p}_broker_requests", "Produce requests, per broker.", labels=[*base, "broker"]
        )
        for node, values in nodes.items():
            latency.add_metric([*ident, str(node)], float(values["request-latency-avg"]) / 1000)
            requests.add_metric([*ident, str(node)], float(values["request-total"]))
        yield latency
        yield requests
