"""Time per record in each stage (``stage-*`` in ``metrics()``), on real runs against Tansu and Kafka.

Serialize, partition and append are sampled: every ``STAGE_SAMPLE_INTERVAL_MS`` the sender loop
pauses the fast path so that the next record goes the general way with its steps timed. These tests
check the figures against a run with a known lower bound (a serializer that sleeps), that encoding is
measured for every request, and that the fast path still takes the other records.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from conftest import MakeTopic
from helpers import consume_all
from kprod import AsyncProducer, Producer
from kprod._io.engine import STAGE_SAMPLE_INTERVAL_MS

SLEEP_S = 0.002


def _slow_serializer(value: Any) -> bytes:
    time.sleep(SLEEP_S)
    return str(value).encode()


@pytest.mark.timeout(60)
def test_a_slow_serializer_shows_in_the_serialize_stage(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "value.serializer": _slow_serializer,
            "linger.ms": 5,
            "compression.type": "gzip",
        }
    )
    try:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 0.8:  # ~8 sampling intervals, each record >= 2 ms
            producer.send(topic, sent)
            sent += 1
        producer.flush(30)
        m = producer.metrics()
    finally:
        producer.close(10)
    samples = m["stage-sample-total"]
    assert 2 <= samples <= 0.8 * 1000 / STAGE_SAMPLE_INTERVAL_MS + 3, m
    assert m["stage-serialize-time-avg-us"] >= SLEEP_S * 1e6, m
    assert 0 < m["stage-serialize-sample-total"] <= samples
    assert 0 < m["stage-partition-time-avg-us"] < SLEEP_S * 1e6
    assert 0 < m["stage-append-time-avg-us"] < SLEEP_S * 1e6
    assert m["stage-compress-time-avg-us"] > 0 and m["stage-in-flight-time-avg-ms"] > 0
    assert m["stage-compress-record-total"] == sent, "every record was compressed once (no retries here)"
    assert not math.isnan(m["stage-queue-time-avg-ms"])
    assert len(consume_all(broker.bootstrap_servers, topic, 3, sent, timeout_s=30)) == sent


@pytest.mark.timeout(60)
def test_sampling_leaves_the_fast_path_to_the_other_records(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5, "compression.type": "lz4"}
    )
    general = [0]  # records send() handed to the general path (_send): the fast path refused them
    general_send = producer._send

    def counting(*args: Any) -> Any:
        general[0] += 1
        return general_send(*args)

    producer._send = counting  # type: ignore[method-assign,assignment]
    producer._install_fast_send()  # the compiled send (if any) falls back to the counting one
    try:
        producer.send(topic, b"warm-up").result(30)
        started = time.monotonic()
        sent = 1
        while time.monotonic() - started < 0.6:
            producer.send(topic, b"v" * 100)
            sent += 1
            if sent % 200 == 0:
                time.sleep(0.001)  # let the sender run its rounds
        producer.flush(30)
        m = producer.metrics()
        fast_topics = set(producer._engine.appender.fast_appenders)
    finally:
        producer.close(10)
    assert m["stage-sample-total"] >= 2, m
    assert m["stage-compress-time-avg-us"] > 0, "lz4 batches are encoded and compressed: timed"
    # Besides the samples, only new batches leave the fast path (a few per thousand records).
    assert sent - general[0] >= 0.9 * sent, (general, sent)
    assert topic in fast_topics or not m["batches-incomplete"], "the fast path resumes after a sample"
    assert len(consume_all(broker.bootstrap_servers, topic, 3, sent, timeout_s=30)) == sent


@pytest.mark.timeout(60)
def test_async_producer_records_are_sampled_too(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(1)

    async def run() -> dict[str, Any]:
        producer = AsyncProducer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
        try:
            await producer.send(topic, b"warm-up")
            started = time.monotonic()
            while time.monotonic() - started < 0.5:
                await producer.enqueue(topic, b"v" * 50)
                await asyncio.sleep(0)
            await producer.flush(30)
            return producer.metrics()
        finally:
            await producer.close(10)

    m = asyncio.run(run())
    assert m["stage-sample-total"] >= 2, m
    assert 0 < m["stage-append-time-avg-us"] < 10_000
    # Without compression no codec runs: the compress stage stays empty (NaN, as an empty Java avg).
    assert math.isnan(m["stage-compress-time-avg-us"]) and m["stage-compress-record-total"] == 0, m


@pytest.mark.timeout(60)
def test_send_batch_records_are_sampled_for_partition_and_append(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(2)
    with Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5}) as producer:
        producer.send(topic, b"warm-up").result(30)
        before = producer.metrics()["stage-sample-total"]
        started = time.monotonic()
        while time.monotonic() - started < 0.5:
            producer.send_batch(topic, [b"v" * 100] * 500)
            time.sleep(0.002)  # let the sender run its rounds
        producer.flush(30)
        m = producer.metrics()
    assert m["stage-sample-total"] >= before + 2, m
    assert 0 < m["stage-partition-time-avg-us"] < 10_000 and 0 < m["stage-append-time-avg-us"] < 10_000
