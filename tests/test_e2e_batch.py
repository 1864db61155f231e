"""``Producer.send_batch`` against Tansu and Apache Kafka: many records, one call, per-record errors."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from helpers import consume_all
from kprod import BufferExhaustedError, KprodError, Producer, RecordTooLargeError, SerializationError
from kprod.broker import EmbeddedBroker

pytestmark = pytest.mark.broker

MakeTopic = Callable[..., str]


@pytest.mark.timeout(120)
def test_send_batch_delivers_every_shape_in_order(broker: EmbeddedBroker, make_topic: MakeTopic) -> None:
    topic = make_topic(partitions=3)
    ts = 1_700_000_000_000
    records: list[object] = []
    for i in range(3000):
        value = b"v%05d" % i
        shape = i % 4
        if shape == 0:
            records.append(value)
        elif shape == 1:
            records.append((value, b"key-%d" % (i % 7)))
        elif shape == 2:
            records.append((value, None, [("i", str(i).encode())], i % 3, ts + i))
        else:
            records.append({"value": value, "key": b"k", "headers": {"h": "x"}, "timestamp": ts + i})
    with Producer({"bootstrap.servers": broker.bootstrap_servers}) as producer:
        futures = producer.send_batch(topic, records)
        metadata = [f.result(timeout=30) for f in futures]
    assert len(metadata) == len(records)
    read = consume_all(broker.bootstrap_servers, topic, 3, len(records), timeout_s=60)
    by_position = {(r.partition, r.offset): r for r in read}
    assert len(by_position) == len(records)
    for i, md in enumerate(metadata):
        got = by_position[(md.partition, md.offset)]
        assert got.value == b"v%05d" % i
        if i % 4 == 2:
            assert got.partition == i % 3
            assert got.headers == [("i", str(i).encode())]
            assert got.timestamp_ms == ts + i
        if i % 4 == 3:
            assert got.key == b"k" and got.headers == [("h", b"x")]
    # Per partition, offsets follow the order of the batch.
    last: dict[int, int] = {}
    for md in metadata:
        assert md.offset > last.get(md.partition, -1)
        last[md.partition] = md.offset


@pytest.mark.timeout(60)
def test_send_batch_fails_bad_records_alone(broker: EmbeddedBroker, make_topic: MakeTopic) -> None:
    topic = make_topic(partitions=2)
    calls: list[tuple[object, object]] = []
    with Producer({"bootstrap.servers": broker.bootstrap_servers, "max.request.size": 10_000}) as producer:
        futures = producer.send_batch(
            topic,
            [
                b"ok-0",
                12345,
                b"x" * 20_000,
                {"value": b"p", "partition": 7},
                {"value": b"ok-1", "colour": 1},
                b"ok-2",
            ],
            on_delivery=lambda md, err: calls.append((md, err)),
        )
        errors = [f.exception(timeout=30) for f in futures]
    assert errors[0] is None and errors[5] is None
    assert isinstance(errors[1], SerializationError)
    assert isinstance(errors[2], RecordTooLargeError) and "max.request.size" in str(errors[2])
    assert isinstance(errors[3], KprodError) and "partition 7" in str(errors[3])
    assert isinstance(errors[4], KprodError) and "colour" in str(errors[4])
    assert len(calls) == 6 and sum(err is None for _, err in calls) == 2
    read = consume_all(broker.bootstrap_servers, topic, 2, 2, timeout_s=30, linger_s=0.5)
    assert sorted(r.value or b"" for r in read) == [b"ok-0", b"ok-2"]


@pytest.mark.timeout(90)
def test_send_batch_stops_at_a_full_buffer_and_keeps_order(private_broker: Any) -> None:
    topic = "batch-full"
    private_broker.create_topic(topic, partitions=1)
    config = {
        "bootstrap.servers": private_broker.bootstrap_servers,
        "buffer.memory": 32_768,
        "max.block.ms": 500,
        "request.timeout.ms": 30_000,
    }
    with Producer(config) as producer:
        producer.send(topic, b"warm").result(timeout=10)
        pid = private_broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            futures = producer.send_batch(topic, [b"r%04d" % i + b"." * 100 for i in range(1000)])
            waited = time.monotonic() - start
            errors = [f.exception(timeout=0) if f.done() else None for f in futures]
            first_failed = next(i for i, e in enumerate(errors) if e is not None)
            assert 0 < first_failed < 1000
            assert all(isinstance(e, BufferExhaustedError) for e in errors[first_failed:])
            assert 0.4 < waited < 5
        finally:
            os.kill(pid, signal.SIGCONT)
        for f in futures[:first_failed]:
            f.result(timeout=30)
    read = consume_all(
        private_broker.bootstrap_servers, topic, 1, first_failed + 1, timeout_s=30, linger_s=0.5
    )
    assert [r.value for r in read[1:]] == [b"r%04d" % i + b"." * 100 for i in range(first_failed)]
