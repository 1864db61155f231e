"""Java's sampled statistics, stepped with fake time (``kprod._core.metrics``)."""

from __future__ import annotations

import math

import pytest

from kprod._core.metrics import ProducerMetrics, WindowedStat


def test_a_rate_spans_at_least_num_samples_minus_one_windows() -> None:
    """Java's Rate: 100 events in the first 10 ms of a 1 s window with 2 samples are 100 per second,
    not 10,000: the elapsed time counts as at least one full window."""
    stat = WindowedStat(window_ms=1_000, num_samples=2)
    for t in range(10):
        stat.record(10, 1_000 + t)
    assert stat.rate(1_010) == pytest.approx(100 / 1.01, rel=0.01)
    assert stat.total == 100


def test_samples_roll_and_old_ones_are_forgotten() -> None:
    stat = WindowedStat(window_ms=1_000, num_samples=2)
    stat.record(5, 0)
    stat.record(7, 1_500)  # a new sample
    assert stat.avg(1_600) == 6 and stat.max(1_600) == 7
    stat.record(1, 2_600)  # replaces the first sample
    assert stat.avg(2_700) == 4 and stat.max(2_700) == 7
    assert stat.max(10_000) is not None and math.isnan(stat.max(10_000))  # everything expired
    assert math.isnan(stat.avg(10_000)) and stat.rate(10_000) == 0.0
    assert stat.total == 13


def test_bulk_records_count_each_event() -> None:
    stat = WindowedStat(window_ms=30_000, num_samples=2)
    stat.record(300, 0, count=3, maximum=150)
    assert stat.avg(1) == 100 and stat.max(1) == 150


def test_the_snapshot_has_javas_names_and_the_groups() -> None:
    metrics = ProducerMetrics(window_ms=1_000, num_samples=2)
    metrics.record_send.record(10, 0)
    metrics.topic("orders")["record-send"].record(10, 0)
    metrics.node(1)["request-latency"].record(4, 0)
    snap = metrics.snapshot(500)
    for name in (
        "record-send-rate", "record-send-total", "record-error-rate", "record-retry-rate", "record-size-avg",
        "batch-size-avg", "batch-size-max", "compression-rate-avg", "records-per-request-avg",
        "record-queue-time-avg", "request-latency-avg", "request-latency-max", "produce-throttle-time-avg",
        "outgoing-byte-rate", "incoming-byte-rate", "bufferpool-wait-ratio", "batch-split-rate",
    ):  # fmt: skip
        assert name in snap, name
    assert snap["record-send-total"] == 10
    topics = snap["producer-topic-metrics"]
    nodes = snap["producer-node-metrics"]
    assert isinstance(topics, dict) and topics["orders"]["record-send-total"] == 10
    assert isinstance(nodes, dict) and nodes[1]["request-latency-avg"] == 4
