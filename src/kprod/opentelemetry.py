"""OpenTelemetry metrics for a producer (``pip install 'kprod[opentelemetry]'``, plus an SDK).

::

    from kprod.opentelemetry import instrument_producer

    instrument_producer(producer)  # uses the global MeterProvider, or pass meter_provider=

Observable instruments read :meth:`kprod.Producer.metrics` when the SDK collects, so nothing is
recorded on the send path. Names and attributes follow OpenTelemetry's messaging semantic
conventions where they define one (``messaging.client.sent.messages`` with
``messaging.system=kafka``, ``messaging.client.id``, ``messaging.destination.name`` and, for failed
records, ``error.type``); the producer's internals that the conventions do not cover use a
``kprod.producer.`` prefix, in base units (seconds, bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "kprod.opentelemetry needs opentelemetry-api: pip install 'kprod[opentelemetry]'"
    ) from exc

__all__ = ["instrument_producer"]


class _HasMetrics(Protocol):
    def metrics(self) -> dict[str, Any]: ...


_STAGES: tuple[tuple[str, str, float], ...] = (
    ("serialize", "stage-serialize-time-avg-us", 1e-6),
    ("partition", "stage-partition-time-avg-us", 1e-6),
    ("append", "stage-append-time-avg-us", 1e-6),
    ("queue", "stage-queue-time-avg-ms", 1e-3),
    ("compress", "stage-compress-time-avg-us", 1e-6),
    ("in_flight", "stage-in-flight-time-avg-ms", 1e-3),
)
"""The ``kprod.stage`` attribute of ``kprod.producer.stage.time``, its metric and its scale to seconds."""


def instrument_producer(producer: _HasMetrics, meter_provider: MeterProvider | None = None) -> list[Any]:
    """Create the observable instruments for ``producer``; returns them (keep them alive as long as
    the producer is observed)."""
    provider = meter_provider or otel_metrics.get_meter_provider()
    from kprod import __version__

    meter = provider.get_meter("kprod", __version__)
    config = getattr(producer, "config", None)
    base = {"messaging.system": "kafka", "messaging.client.id": str(getattr(config, "client_id", ""))}
    read: Callable[[], dict[str, Any]] = producer.metrics

    def sent(_options: CallbackOptions) -> Iterable[Observation]:
        topics = read().get("producer-topic-metrics") or {}
        for topic, values in topics.items():
            attributes = {**base, "messaging.destination.name": topic, "messaging.operation.name": "send"}
            yield Observation(int(values["record-send-total"]), attributes)
            if values["record-error-total"]:
                yield Observation(int(values["record-error-total"]), {**attributes, "error.type": "_OTHER"})

    def scalar(name: str, scale: float = 1.0) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            value = read().get(name)
            if isinstance(value, int | float) and value == value:  # skip NaN (no sample yet)
                yield Observation(value * scale, base)

        return observe

    def stages(_options: CallbackOptions) -> Iterable[Observation]:
        m = read()
        for stage, name, scale in _STAGES:
            value = m.get(name)
            if isinstance(value, int | float) and value == value:
                yield Observation(value * scale, {**base, "kprod.stage": stage})

    def closed(_options: CallbackOptions) -> Iterable[Observation]:
        for reason, count in (read().get("batch-close-reasons") or {}).items():
            yield Observation(count, {**base, "kprod.batch.close_reason": reason})

    return [
        meter.create_observable_counter(
            "messaging.client.sent.messages", [sent], unit="{message}",
            description="Records the producer completed, by topic; failed ones carry error.type.",
        ),
        meter.create_observable_counter(
            "kprod.producer.retried.messages", [scalar("record-retry-total")], unit="{message}",
            description="Records sent again after a retriable error.",
        ),
        meter.create_observable_counter(
            "kprod.producer.sent.bytes", [scalar("outgoing-byte-total")], unit="By",
            description="Bytes of Produce requests.",
        ),
        meter.create_observable_counter(
            "kprod.producer.requests", [scalar("request-total")], unit="{request}",
            description="Produce requests sent.",
        ),
        meter.create_observable_counter(
            "kprod.producer.batches.closed", [closed], unit="{batch}",
            description="Batches by why they left (full, linger, flush, memory, closing, request).",
        ),
        meter.create_observable_gauge(
            "kprod.producer.request.latency", [scalar("request-latency-avg", 1e-3)], unit="s",
            description="Average Produce request latency over the sampled window.",
        ),
        meter.create_observable_gauge(
            "kprod.producer.queue.time", [scalar("record-queue-time-avg", 1e-3)], unit="s",
            description="Average time batches waited before they left.",
        ),
        meter.create_observable_gauge(
            "kprod.producer.stage.time", [stages], unit="s",
            description="Average time a record spends in each stage (serialize, partition, append, queue, "
            "compress, in_flight); the first three sampled.",
        ),
        meter.create_observable_up_down_counter(
            "kprod.producer.buffer.available", [scalar("buffer-available-bytes")], unit="By",
            description="Free part of buffer.memory.",
        ),
        meter.create_observable_up_down_counter(
            "kprod.producer.requests.in_flight", [scalar("requests-in-flight")], unit="{request}",
            description="Produce requests awaiting an answer.",
        ),
    ]  # fmt: skip
