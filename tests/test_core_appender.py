"""The append path in the pure core, stepped by hand: no event loop, no engine, time as ``now_ms``.

``tests/test_io_append_path.py`` compares the fast and the general path through the engine; these
check the appender's own decisions: what to wait for, what to refuse at once, where records go.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from kprod._core.accumulator import ProducerBatch, RecordAccumulator, record_size_upper_bound
from kprod._core.appender import RecordAppender, Wait, _TimedAccumulator
from kprod._core.metadata import ClusterMetadata
from kprod._core.murmur2 import partition_for_key
from kprod.config import ProducerConfig
from kprod.errors import KafkaError, KprodError
from kprod.protocol.metadata import MetadataSnapshot, PartitionSnapshot, TopicSnapshot

TOPIC = "t"
NOW = 1_000
TS = 1_700_000_000_000


def snapshot(partitions: int = 4, error_code: int = 0, name: str = TOPIC) -> MetadataSnapshot:
    parts = {p: PartitionSnapshot(1, 0, 0) for p in range(partitions)} if not error_code else {}
    return MetadataSnapshot(
        brokers={1: ("b1", 9092)},
        controller_id=1,
        cluster_id="c",
        topics={name: TopicSnapshot(error_code, parts)},
    )


def make(buffer_memory: int = 1 << 20, **settings: object) -> RecordAppender:
    config = ProducerConfig.from_user({"batch.size": 1024, "buffer.memory": buffer_memory, **settings})
    acc = RecordAccumulator(
        batch_size=config.batch_size, linger_ms=config.linger_ms, buffer_memory=buffer_memory
    )
    metadata = ClusterMetadata(max_age_ms=300_000, max_idle_ms=300_000, refresh_backoff_ms=100)
    return RecordAppender(config, acc, metadata, random.Random(1))


def append(
    appender: RecordAppender, key: bytes | None, value: bytes, partition: int | None = None
) -> ProducerBatch | Wait:
    bound = record_size_upper_bound(key, value, None)
    return appender.try_append(TOPIC, partition, TS, key, value, None, bound, NOW)


def test_an_unknown_topic_is_asked_for_and_waited_on() -> None:
    appender = make()
    assert append(appender, None, b"v") is Wait.METADATA
    assert appender.metadata.update_requested and TOPIC in appender.metadata.wanted_topics(NOW)
    appender.metadata.on_update(snapshot(), NOW)
    batch = append(appender, None, b"v")
    assert isinstance(batch, ProducerBatch) and batch.record_count == 1


def test_refusals_that_waiting_would_not_change_are_raised_at_once() -> None:
    appender = make()
    with pytest.raises(KafkaError, match="not a valid topic name"):
        appender.try_append("bad topic!", None, TS, None, b"v", None, 100, NOW)
    appender.metadata.on_update(snapshot(error_code=29), NOW)  # TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaError, match="grant it WRITE"):
        append(appender, None, b"v")
    appender.metadata.on_update(snapshot(), NOW)
    with pytest.raises(KprodError, match="partition 9 does not exist"):
        append(appender, None, b"v", partition=9)


def test_a_full_buffer_is_waited_on() -> None:
    appender = make(buffer_memory=2_000)
    appender.metadata.on_update(snapshot(), NOW)
    results = [append(appender, None, b"x" * 300) for _ in range(10)]
    assert Wait.MEMORY in results and isinstance(results[0], ProducerBatch)


def test_keys_go_by_murmur2_and_keyless_records_stick_then_move_on() -> None:
    appender = make()
    appender.metadata.on_update(snapshot(partitions=4), NOW)
    for key in (b"a", b"customer-7", b"\xff" * 20):
        batch = append(appender, key, b"v")
        assert isinstance(batch, ProducerBatch) and batch.partition == partition_for_key(key, 4)
    keyless = [append(appender, None, b"y" * 100) for _ in range(40)]
    partitions = [b.partition for b in keyless if isinstance(b, ProducerBatch)]
    assert partitions[:5] == [partitions[0]] * 5, "sticks to one partition while its batch fills"
    assert len(set(partitions)) > 1, "moves on after about batch.size bytes"


def test_the_fast_path_cache_follows_the_metadata_and_stops_with_the_producer() -> None:
    appender = make()
    appender.metadata.on_update(snapshot(), NOW)
    first = append(appender, b"k", b"v")
    assert isinstance(first, ProducerBatch) and TOPIC in appender.fast_appenders
    again = appender.try_append_plain(TOPIC, None, TS, b"k", b"v")
    assert again is first and first.record_count == 2  # the fast path appended to the open batch
    appender.metadata.on_update(snapshot(partitions=6), NOW + 1)
    assert not appender.fast_appenders
    assert appender.try_append_plain(TOPIC, None, TS, b"k", b"v") is None
    append(appender, b"k", b"v")
    assert TOPIC in appender.fast_appenders
    appender.stop()
    assert not appender.fast_appenders and appender.try_append_plain(TOPIC, None, TS, b"k", b"v") is None
    append(appender, b"k", b"v")
    assert not appender.fast_appenders, "no fast path once the producer stopped accepting"


def test_a_timed_append_measures_partition_then_append_with_the_given_clock() -> None:
    appender = make()
    appender.metadata.on_update(snapshot(), NOW)
    append(appender, None, b"v")  # the topic's cache is built
    readings = iter([100, 130, 180])  # a fake ns clock: the call, the accumulator's append, the end
    acc = appender.accumulator
    bound = record_size_upper_bound(b"k", b"v", None)
    result, partition_ns, append_ns = appender.try_append_timed(
        lambda: next(readings), TOPIC, None, TS, b"k", b"v", None, bound, NOW
    )
    assert isinstance(result, ProducerBatch) and result.partition == partition_for_key(b"k", 4)
    assert (partition_ns, append_ns) == (30, 50)
    assert appender.accumulator is acc, "the real accumulator is back"


def test_a_timed_append_that_waits_or_raises_times_nothing_and_restores_the_accumulator() -> None:
    appender = make()
    acc = appender.accumulator
    bound = record_size_upper_bound(None, b"v", None)
    assert appender.try_append_timed(lambda: 5, TOPIC, None, TS, None, b"v", None, bound, NOW) == (
        Wait.METADATA,
        0,
        0,
    )
    appender.metadata.on_update(snapshot(), NOW)
    with pytest.raises(KprodError, match="partition 9 does not exist"):
        appender.try_append_timed(lambda: 5, TOPIC, 9, TS, None, b"v", None, bound, NOW)
    assert appender.accumulator is acc


def test_timed_appends_place_and_encode_exactly_as_untimed_ones() -> None:
    plain, timed = make(), make()  # the same seed: the same sticky choices
    for appender in (plain, timed):
        appender.metadata.on_update(snapshot(), NOW)
    clock = iter(range(10**9)).__next__
    placed: list[tuple[int, int]] = []
    for i in range(3000):  # several batches and sticky switches (batch.size 1024)
        key = None if i % 3 else str(i).encode()
        value = b"x" * (i % 50)
        bound = record_size_upper_bound(key, value, None)
        a = plain.try_append(TOPIC, None, TS, key, value, None, bound, NOW)
        b, partition_ns, append_ns = timed.try_append_timed(clock, TOPIC, None, TS, key, value, None, bound, NOW)
        assert isinstance(a, ProducerBatch) and isinstance(b, ProducerBatch)
        assert (a.partition, a.record_count) == (b.partition, b.record_count) and partition_ns > 0 < append_ns
        placed.append((a.partition, a.record_count))
    assert len({p for p, _ in placed}) > 1, "the sticky partitioner moved on"
    for p in range(4):
        left = [bytes(b.buffer) for b in plain.accumulator.queue(TOPIC, p).batches]
        right = [bytes(b.buffer) for b in timed.accumulator.queue(TOPIC, p).batches]
        assert left == right
    assert plain.accumulator.used_bytes == timed.accumulator.used_bytes


def test_a_timed_append_reads_the_accumulator_without_its_getattr_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    # A lookup through _TimedAccumulator.__getattr__ raises and catches an AttributeError first: the
    # partition step once paid 1-6 µs for it (used_bytes), five times the step itself.
    fallbacks: list[str] = []
    real_getattr = _TimedAccumulator.__getattr__

    def spy(self: _TimedAccumulator, name: str) -> Any:
        fallbacks.append(name)
        return real_getattr(self, name)

    monkeypatch.setattr(_TimedAccumulator, "__getattr__", spy)
    appender = make(**{"partitioner.adaptive.partitioning.enable": True})
    appender.metadata.on_update(snapshot(), NOW)
    append(appender, None, b"v")  # the topic's cache is built (its queues through __getattr__)
    fallbacks.clear()
    clock = iter(range(10**9)).__next__
    for i in range(300):  # keyless, keyed, explicit; new batches and sticky switches (batch.size 1024)
        key = str(i).encode() if i % 3 == 1 else None
        partition = 2 if i % 3 == 2 else None
        value = b"x" * 100
        bound = record_size_upper_bound(key, value, None)
        result, partition_ns, append_ns = appender.try_append_timed(
            clock, TOPIC, partition, TS, key, value, None, bound, NOW
        )
        assert isinstance(result, ProducerBatch) and partition_ns > 0 < append_ns
    assert fallbacks == []


def test_pausing_the_fast_path_sends_every_topic_the_general_way_until_resumed() -> None:
    appender = make()
    appender.metadata.on_update(snapshot(), NOW)
    append(appender, None, b"v")
    assert TOPIC in appender.fast_appenders
    appender.pause_fast()
    assert not appender.fast_appenders
    assert appender.try_append_plain(TOPIC, None, TS, None, b"v") is None, "paused: the general way"
    appender.resume_fast()
    assert isinstance(appender.try_append_plain(TOPIC, None, TS, None, b"v"), ProducerBatch)
    # A cache made stale by a metadata change is not resumed; nor is anything once appends stopped.
    appender.pause_fast()
    appender.metadata.on_update(snapshot(partitions=6), NOW)
    appender.resume_fast()
    assert not appender.fast_appenders
    append(appender, None, b"v")  # rebuilt at the new version
    appender.stop()
    appender.resume_fast()
    assert not appender.fast_appenders
