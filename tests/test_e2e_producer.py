"""End-to-end behaviour of ``Producer`` and ``AsyncProducer`` against Tansu and Apache Kafka.

Every record written here is read back with confluent-kafka (``consume_all``, ``check.crcs=true``),
the independent judge of what kprod put on the wire. Each test uses its own topic, is bounded in
time (``pytest.mark.timeout``) and in record count, and closes every producer it opens.

Fault tests (a full buffer, close against a dead broker) run on a private broker (``private_broker``)
that they freeze with ``SIGSTOP`` or kill, so the session broker is never disturbed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import confluent_kafka
import pytest

from helpers import ConsumedRecord, consume_all
from kprod import (
    AsyncProducer,
    BufferExhaustedError,
    ConfigError,
    KafkaTimeoutError,
    KprodError,
    Persisted,
    Producer,
    ProducerClosedError,
    RecordFuture,
    RecordMetadata,
    RecordTooLargeError,
)
from kprod._core.murmur2 import partition_for_key
from kprod.errors import UnknownTopicError

pytestmark = pytest.mark.broker

MakeTopic = Callable[..., str]
Headers = list[tuple[str, bytes | None]]


# ----------------------------------------------------------------------------- helpers


@contextmanager
def producing(bootstrap: str, close_timeout: float = 30.0, **settings: Any) -> Iterator[Producer]:
    """A Producer that is always closed (bounded) when the block ends, even on failure."""
    producer = Producer({"bootstrap.servers": bootstrap}, **settings)
    try:
        yield producer
    finally:
        producer.close(timeout=close_timeout)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def by_position(records: list[ConsumedRecord]) -> dict[tuple[int, int], ConsumedRecord]:
    """Read-back records by (partition, offset); asserts no position was served twice."""
    out = {(r.partition, r.offset): r for r in records}
    assert len(out) == len(records), "the consumer served a (partition, offset) twice"
    return out


def assert_metadata_matches_readback(
    topic: str,
    metadata: list[RecordMetadata],
    values: list[bytes | None],
    records: list[ConsumedRecord],
) -> None:
    """Each future's (partition, offset) holds exactly the record it was sent with, read back once."""
    assert len(records) == len(metadata), f"read back {len(records)} records, sent {len(metadata)}"
    positions = by_position(records)
    problems = []
    for i, (md, value) in enumerate(zip(metadata, values, strict=True)):
        assert md.topic == topic
        got = positions.get((md.partition, md.offset))
        if got is None:
            problems.append(f"#{i}: nothing read at {md.partition}@{md.offset}")
        elif got.value != value:
            problems.append(f"#{i}: at {md.partition}@{md.offset} read {got.value!r}, sent {value!r}")
        if len(problems) >= 10:
            break
    assert not problems, "\n".join(problems)


@contextmanager
def frozen(broker: Any) -> Iterator[int]:
    """Freeze the broker process (SIGSTOP): it keeps its sockets but answers nothing until thawed."""
    pid = broker.pid
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGSTOP)
    thawed = False

    def thaw() -> None:
        nonlocal thawed
        if not thawed:
            thawed = True
            os.kill(pid, signal.SIGCONT)

    try:
        yield pid
    finally:
        thaw()


# ----------------------------------------------------------------------------- 1. mixed records, byte-exact


HEADER_SETS: list[Any] = [
    [("trace-id", b"0123456789abcdef")],
    [("null-value", None)],
    [("ключ", "значение"), ("名前", b""), ("emoji-🎉", None)],  # unicode names, str and empty values
    [("dup", b"1"), ("dup", b"2"), ("dup", None)],  # repeated names keep their order
    {"mapping-a": b"\x00\xff", "mapping-ü": "ü"},  # a mapping is accepted too
    [("big", bytes(range(256)))],
]


def _expected_headers(headers: Any) -> Headers:
    items = headers.items() if isinstance(headers, dict) else headers
    return [(name, value.encode() if isinstance(value, str) else value) for name, value in items]


@pytest.mark.timeout(240)
def test_100k_mixed_records_are_read_back_byte_exact_once_in_order(
    broker: Any, make_topic: MakeTopic
) -> None:
    n, partitions = 100_000, 3
    topic = make_topic(partitions)
    rng = random.Random(0x6B70726F64)
    key_pool: list[Any] = [rng.randbytes(rng.randint(1, 40)) for _ in range(400)]
    key_pool += [f"ключ-{i}-🔑" for i in range(50)]  # str keys: UTF-8 by the default serializer
    key_pool += [b"\x00", b"k" * 200, b""]  # a NUL, a long key and an empty (non-null) key

    # (key bytes, value bytes, headers, explicit timestamp or None, expected partition or None)
    expected: list[tuple[bytes | None, bytes | None, Headers, int | None, int | None]] = []
    futures: list[RecordFuture] = []
    base_ts = 1_600_000_000_000
    with producing(broker.bootstrap_servers) as producer:
        before = now_ms()
        for i in range(n):
            key = rng.choice(key_pool) if rng.random() < 0.5 else None
            roll = rng.random()
            if roll < 0.05:
                value: Any = None  # tombstone
            elif roll < 0.07:
                value = f"värde-{i}-✓"  # str value: UTF-8
            else:
                value = rng.randbytes(rng.randint(0, 300))  # includes empty (non-null) values
            headers = rng.choice(HEADER_SETS) if rng.random() < 0.2 else None
            timestamp: int | None = None
            if rng.random() < 0.2:
                # Older, newer and much older than "now": negative and positive deltas within a batch.
                # Apache Kafka 4 refuses timestamps more than an hour ahead of its clock
                # (log.message.timestamp.after.max.ms, KIP-937): INVALID_TIMESTAMP.
                timestamp = rng.choice(
                    [base_ts + i, before + rng.randint(-(10**9), 30 * 60_000), rng.randint(0, 10**6)]
                )
            partition = rng.randrange(partitions) if rng.random() < 0.1 else None
            futures.append(
                producer.send(topic, value, key, partition=partition, timestamp=timestamp, headers=headers)
            )
            kb = key.encode() if isinstance(key, str) else key
            vb = value.encode() if isinstance(value, str) else value
            if partition is not None:
                want_partition: int | None = partition
            elif kb is not None:
                want_partition = confluent_kafka.murmur2(kb, partitions)
            else:
                want_partition = None
            expected.append(
                (kb, vb, _expected_headers(headers) if headers else [], timestamp, want_partition)
            )
        after = now_ms()
        producer.flush(timeout=120)
        assert all(f.done() for f in futures)
        metadata = [f.result(timeout=0) for f in futures]

    # The futures: a distinct position each, on the partition the key or the caller chose.
    index_at: dict[tuple[int, int], int] = {}
    for i, md in enumerate(metadata):
        assert md.topic == topic and 0 <= md.partition < partitions and md.offset >= 0, (i, md)
        index_at[(md.partition, md.offset)] = i
    assert len(index_at) == n, "two futures report the same (partition, offset)"
    wrong_partition = [
        (i, md.partition, e[4])
        for i, (md, e) in enumerate(zip(metadata, expected, strict=True))
        if e[4] is not None and md.partition != e[4]
    ]
    assert not wrong_partition[:10], (
        f"{len(wrong_partition)} records on the wrong partition, e.g. (i, got, want)"
    )

    records = consume_all(broker.bootstrap_servers, topic, partitions, n, timeout_s=120, linger_s=1.0)
    assert len(records) == n, f"read back {len(records)} records, sent {n}"
    by_position(records)

    problems: list[str] = []
    seen: set[int] = set()
    last_index: dict[int, int] = defaultdict(lambda: -1)
    for rec in records:
        found = index_at.get((rec.partition, rec.offset))
        if found is None:
            problems.append(f"{rec.partition}@{rec.offset}: no future reported this position")
            continue
        i = found
        seen.add(i)
        kb, vb, hdrs, ts, want_partition = expected[i]
        md = metadata[i]
        if (rec.key, rec.value, rec.headers) != (kb, vb, hdrs):
            problems.append(
                f"#{i} at {rec.partition}@{rec.offset}: read {(rec.key, rec.value, rec.headers)!r}, "
                f"sent {(kb, vb, hdrs)!r}"
            )
        if ts is not None and rec.timestamp_ms != ts:
            problems.append(f"#{i}: timestamp {rec.timestamp_ms}, sent {ts}")
        if ts is None and not before <= rec.timestamp_ms <= after:
            problems.append(
                f"#{i}: default timestamp {rec.timestamp_ms} outside the send window [{before}, {after}]"
            )
        if md.timestamp != rec.timestamp_ms:
            problems.append(f"#{i}: RecordMetadata.timestamp {md.timestamp}, read {rec.timestamp_ms}")
        if want_partition is not None and rec.partition != want_partition:
            # explicit partition, else librdkafka's murmur2 (murmur2_random) partition of the key
            problems.append(f"#{i} read on partition {rec.partition}, expected {want_partition}")
        if i <= last_index[rec.partition]:
            problems.append(
                f"#{i} read after #{last_index[rec.partition]} on partition {rec.partition}: "
                "send order not kept"
            )
        last_index[rec.partition] = i
        if len(problems) >= 10:
            break
    assert not problems, "\n".join(problems)
    assert len(seen) == n

    # kprod's own murmur2 agrees with librdkafka's for every key of the pool.
    for key in key_pool:
        kb = key.encode() if isinstance(key, str) else key
        assert partition_for_key(kb, partitions) == confluent_kafka.murmur2(kb, partitions), kb
    assert sum(1 for e in expected if e[0] is not None and e[4] is not None) > n // 3


# ----------------------------------------------------------------------------- 2. acks


@pytest.mark.timeout(120)
@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks_levels_deliver_everything(broker: Any, make_topic: MakeTopic, acks: int | str) -> None:
    n = 2_000
    topic = make_topic(3)
    values = [f"acks-{acks}-{i}".encode() for i in range(n)]
    with producing(broker.bootstrap_servers, acks=acks) as producer:
        futures = [
            producer.send(topic, v, key=(b"k%d" % (i % 17)) if i % 2 else None) for i, v in enumerate(values)
        ]
        producer.flush(timeout=60)
        metadata = [f.result(timeout=0) for f in futures]
    records = consume_all(broker.bootstrap_servers, topic, 3, n, timeout_s=60, linger_s=1.0)
    assert sorted(r.value for r in records if r.value is not None) == sorted(values)
    assert len(records) == n
    if acks == 0:
        assert all(md.offset == -1 for md in metadata), "acks=0 must report offset -1 (unknown)"
        read_partition = {r.value: r.partition for r in records}
        for v, md in zip(values, metadata, strict=True):
            assert md.topic == topic and read_partition[v] == md.partition
    else:
        assert_metadata_matches_readback(topic, metadata, list(values), records)


# ----------------------------------------------------------------------------- 3. callbacks


@pytest.mark.timeout(120)
def test_on_delivery_runs_exactly_once_per_record_without_poll(broker: Any, make_topic: MakeTopic) -> None:
    n = 5_000
    topic = make_topic(3)
    lock = threading.Lock()
    calls: dict[int, list[tuple[RecordMetadata | None, BaseException | None, str]]] = defaultdict(list)
    all_called = threading.Event()
    expected_calls = n + 1  # + the oversized record

    def make_cb(i: int) -> Callable[[RecordMetadata | None, BaseException | None], None]:
        def cb(md: RecordMetadata | None, err: BaseException | None) -> None:
            with lock:
                calls[i].append((md, err, threading.current_thread().name))
                if sum(len(c) for c in calls.values()) >= expected_calls:
                    all_called.set()
            if i == 7:
                raise RuntimeError("a callback that raises must not disturb the others")

        return cb

    with producing(broker.bootstrap_servers, max_request_size=10_000) as producer:
        futures = [producer.send(topic, b"cb-%d" % i, on_delivery=make_cb(i)) for i in range(n // 2)]
        big = producer.send(topic, b"x" * 20_000, on_delivery=make_cb(-1))
        futures += [producer.send(topic, b"cb-%d" % i, on_delivery=make_cb(i)) for i in range(n // 2, n)]
        # No flush(), no poll(): the I/O thread delivers on its own.
        assert all_called.wait(60), (
            f"only {sum(len(c) for c in calls.values())} of {expected_calls} callbacks ran"
        )
        time.sleep(0.5)  # room for a spurious second call
        with lock:
            snapshot = {i: list(c) for i, c in calls.items()}
        assert sorted(snapshot) == [-1, *range(n)]
        twice = [i for i, c in snapshot.items() if len(c) != 1]
        assert not twice, f"callbacks called more than once for {twice[:10]}"
        main = threading.current_thread().name
        for i in range(n):
            md, err, thread_name = snapshot[i][0]
            assert err is None and md is not None, (i, err)
            assert md == futures[i].result(timeout=0)
            assert thread_name != main, "on_delivery must run on the producer's I/O thread"
        md, err, thread_name = snapshot[-1][0]
        assert md is None and isinstance(err, RecordTooLargeError)
        assert thread_name != main, "the too-large record's on_delivery must run on the I/O thread too"
        assert big.exception(timeout=0) is err

        # add_done_callback before completion (runs later, on the I/O thread) ...
        done_calls: list[tuple[str, RecordFuture, bool]] = []
        got_it = threading.Event()

        def on_done(tag: str) -> Callable[[RecordFuture], None]:
            def fn(fut: RecordFuture) -> None:
                done_calls.append((tag, fut, fut.done()))
                got_it.set()

            return fn

        with producing(broker.bootstrap_servers, linger_ms=300) as lingering:
            pending = lingering.send(topic, b"late")
            was_done_when_added = pending.done()
            pending.add_done_callback(on_done("before"))
            assert got_it.wait(30)
            md_late = pending.result(timeout=30)
            # ... and after completion: at once, in this thread.
            pending.add_done_callback(on_done("after"))
        assert not was_done_when_added, (
            "linger.ms=300 should keep the record pending while the callback is added"
        )
        assert [(t, f is pending, d) for t, f, d in done_calls] == [
            ("before", True, True),
            ("after", True, True),
        ]
        records = consume_all(broker.bootstrap_servers, topic, 3, n + 1, timeout_s=60, linger_s=0.5)
        assert sorted(r.value or b"" for r in records) == sorted([b"cb-%d" % i for i in range(n)] + [b"late"])
        assert md_late.offset >= 0


# ----------------------------------------------------------------------------- 4. full buffer


@pytest.mark.timeout(180)
def test_full_buffer_blocks_then_raises_and_loses_nothing(private_broker: Any) -> None:
    topic = "buffer-full"
    private_broker.create_topic(topic, partitions=3)
    max_block_ms = 1000
    accepted: list[tuple[bytes, RecordFuture]] = []
    with producing(
        private_broker.bootstrap_servers,
        buffer_memory=64 * 1024,
        max_block_ms=max_block_ms,
        request_timeout_ms=30_000,
    ) as producer:
        producer.send(topic, b"warm-up").result(timeout=30)  # connection, metadata and producer id ready
        error: BufferExhaustedError | None = None
        blocked_s = 0.0
        with frozen(private_broker):
            for i in range(20_000):  # 64 KiB hold ~600 records of 100 B: the buffer fills long before
                value = b"%08d" % i + b"." * 92
                start = time.monotonic()
                try:
                    future = producer.send(topic, value)
                except BufferExhaustedError as exc:
                    blocked_s = time.monotonic() - start
                    error = exc
                    break
                accepted.append((value, future))
            assert error is not None, (
                "20,000 records of 100 B fit in buffer.memory=64 KiB with no broker answer"
            )
            assert accepted, "not a single record was accepted before the buffer was full"
            assert all(not f.done() for _, f in accepted[-10:]), (
                "records completed while the broker was frozen"
            )
            # Blocked for max.block.ms, then raised (generous margin for a loaded CI box).
            assert 0.9 * max_block_ms / 1000 <= blocked_s <= max_block_ms / 1000 + 2.0, blocked_s
            text = str(error)
            assert "buffer.memory" in text and "max.block.ms" in text, text
            assert error.persisted is Persisted.NOT_PERSISTED
            assert isinstance(error, KafkaTimeoutError)
        # The broker is thawed: everything accepted before the error is delivered.
        producer.flush(timeout=90)
        failures = [(v, f.exception(timeout=0)) for v, f in accepted if f.exception(timeout=0) is not None]
        assert not failures[:5], f"{len(failures)} accepted records failed"
    records = consume_all(
        private_broker.bootstrap_servers, topic, 3, len(accepted) + 1, timeout_s=60, linger_s=1.0
    )
    counts = Counter(r.value for r in records)
    missing = [v for v, _ in accepted if counts[v] == 0]
    duplicated = [v for v, c in counts.items() if c > 1]
    assert not missing, f"{len(missing)} accepted records were lost, e.g. {missing[:3]}"
    assert not duplicated, f"idempotence is on, yet records were written twice: {duplicated[:3]}"
    assert len(records) == len(accepted) + 1


# ----------------------------------------------------------------------------- 5. oversized record and unknown topic


@pytest.mark.timeout(60)
def test_unknown_topic_raises_after_max_block_and_loses_nothing_else(
    broker: Any, make_topic: MakeTopic
) -> None:
    topic = make_topic(1)
    missing = f"missing-{topic}"
    with producing(broker.bootstrap_servers, allow_auto_create_topics=False, max_block_ms=1000) as producer:
        before = producer.send(topic, b"before")
        started = time.monotonic()
        with pytest.raises(UnknownTopicError) as info:
            producer.send(missing, b"x")
        elapsed = time.monotonic() - started
        after = producer.send(topic, b"after")
        producer.flush(timeout=30)
        assert before.result(timeout=0).offset == 0 and after.result(timeout=0).offset == 1
    assert 0.9 <= elapsed < 3.0, f"send() to an unknown topic blocked {elapsed:.2f} s, max.block.ms=1000"
    assert missing in str(info.value) and "max.block.ms" in str(info.value), str(info.value)
    assert info.value.stage == "metadata" and info.value.persisted is Persisted.NOT_PERSISTED
    assert [r.value for r in consume_all(broker.bootstrap_servers, topic, 1, 2, timeout_s=30)] == [
        b"before",
        b"after",
    ]


@pytest.mark.timeout(120)
def test_oversized_record_fails_alone(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(1)
    with producing(broker.bootstrap_servers, max_request_size=10_000) as producer:
        before = [producer.send(topic, b"before-%d" % i) for i in range(50)]
        seen: list[tuple[RecordMetadata | None, BaseException | None]] = []
        big = producer.send(topic, b"B" * 20_000, on_delivery=lambda md, err: seen.append((md, err)))
        after = [producer.send(topic, b"after-%d" % i) for i in range(50)]
        error = big.exception(timeout=30)
        assert isinstance(error, RecordTooLargeError), error
        assert "max.request.size" in str(error), str(error)
        assert error.persisted is Persisted.NOT_PERSISTED
        with pytest.raises(RecordTooLargeError):
            big.result(timeout=0)
        producer.flush(timeout=60)  # on_delivery runs on the I/O thread: done by now
        assert len(seen) == 1 and seen[0][0] is None and seen[0][1] is error
        metadata = [f.result(timeout=0) for f in before + after]
    values = [b"before-%d" % i for i in range(50)] + [b"after-%d" % i for i in range(50)]
    records = consume_all(broker.bootstrap_servers, topic, 1, 100, timeout_s=60, linger_s=0.5)
    assert [r.value for r in records] == values
    assert_metadata_matches_readback(topic, metadata, list(values), records)


# ----------------------------------------------------------------------------- 6. close against a dead broker


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_close_with_timeout_against_a_dead_broker(
    private_broker: Any, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    topic = "close-dead"
    private_broker.create_topic(topic, partitions=3)
    caplog.set_level(logging.WARNING, logger="kprod")
    producer = Producer(
        {"bootstrap.servers": private_broker.bootstrap_servers}, max_block_ms=5000, linger_ms=0
    )
    pid = private_broker.pid
    assert pid is not None
    try:
        delivered = [producer.send(topic, b"ok-%d" % i) for i in range(100)]
        producer.flush(timeout=30)
        assert all(f.exception(timeout=0) is None for f in delivered)
        if fault == "killed":
            private_broker.kill()
        else:
            os.kill(pid, signal.SIGSTOP)
        n = 200
        pending = [producer.send(topic, b"lost-%d" % i) for i in range(n)]
        time.sleep(0.2)
        with pytest.raises(KafkaTimeoutError) as flush_error:
            producer.flush(timeout=0.5)
        assert "pending" in str(flush_error.value)
        caplog.clear()
        start = time.monotonic()
        producer.close(timeout=2)
        took = time.monotonic() - start
        assert 1.8 <= took <= 2.0 + 1.5, f"close(timeout=2) took {took:.2f} s"
        assert all(f.done() for f in pending)
        raw_errors = [f.exception(timeout=0) for f in pending]
        wrong = [e for e in raw_errors if not isinstance(e, (ProducerClosedError, KafkaTimeoutError))]
        assert not wrong, f"{len(wrong)} pending records failed with something else, e.g. {wrong[0]!r}"
        errors = [e for e in raw_errors if isinstance(e, KprodError)]
        assert all(e.persisted is not Persisted.PERSISTED for e in errors)
        if fault == "frozen":
            # Requests written to the frozen broker's socket were never answered: the broker may have them.
            assert any(e.persisted is Persisted.POSSIBLY_PERSISTED for e in errors)
        closed_count = sum(isinstance(e, ProducerClosedError) for e in errors)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        counted = [int(m.group(1)) for w in warnings if (m := re.search(r"(\d+) record", w))]
        assert closed_count in counted, f"no warning names the {closed_count} failed records: {warnings}"
        with pytest.raises(ProducerClosedError):
            producer.send(topic, b"after-close")
        producer.close(timeout=1)  # a second close is a no-op
    finally:
        producer.close(timeout=1)
        if fault == "frozen" and private_broker.running:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("private_broker", "close_while"),
    [("kafka", "frozen"), ("kafka", "thawing"), ("tansu", "thawing")],
    indirect=["private_broker"],
)
def test_acks_zero_success_means_the_request_left_the_process(private_broker: Any, close_while: str) -> None:
    """acks=0 has no answer, so a record succeeds once its request left the process, as in Java
    (the kernel took every byte). A request still in the transport's buffer has not: were it
    reported sent, close() would drop it with the connection (the CI failure of session 8: 294
    records reported sent, never written). The broker is frozen while 20 MB are sent, so the
    socket buffers fill and the transport holds the rest.

    ``frozen``: close() while it is still frozen: what waits in the process fails, and every record
    reported sent is in the log once the broker thaws. Kafka only: Tansu answers acks=0 requests,
    its answer meets the closed socket, and the reset drops what it had not read
    (docs/brokers.md). ``thawing``: the broker thaws as close() begins: every record is sent and
    in the log, once; close() lets the broker read what the kernel still holds before it closes
    the socket (on Tansu, closing at once lost records the same way)."""
    topic = "acks0-left"
    private_broker.create_topic(topic, partitions=3)
    producer = Producer(
        {"bootstrap.servers": private_broker.bootstrap_servers}, acks=0, linger_ms=5, max_block_ms=30_000
    )
    try:
        warm = [producer.send(topic, b"warm-%d" % i) for i in range(10)]
        producer.flush(timeout=30)
        assert all(f.exception(timeout=0) is None for f in warm)
        n = 20_000
        values = [b"%06d-" % i + b"x" * 1_000 for i in range(n)]  # 20 MB: more than the socket buffers
        with frozen(private_broker) as pid:
            futures = [producer.send(topic, v, key=b"k%d" % (i % 7)) for i, v in enumerate(values)]
            deadline = time.monotonic() + 10
            while producer.metrics()["connection-unwritten-bytes"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            unwritten = producer.metrics()["connection-unwritten-bytes"]
            assert unwritten > 100_000, "the transport's buffer should hold requests the broker cannot read"
            reported_sent = [i for i, f in enumerate(futures) if f.done() and f.exception(timeout=0) is None]
            assert 0 < len(reported_sent) < n
            with pytest.raises(KafkaTimeoutError):
                producer.flush(timeout=0.3)
            if close_while == "frozen":
                producer.close(timeout=0.5)
            else:
                threading.Timer(0.2, os.kill, (pid, signal.SIGCONT)).start()
                producer.close(timeout=60)
        failed = [f.exception(timeout=0) for f in futures if f.exception(timeout=0) is not None]
        if close_while == "frozen":
            assert failed and all(isinstance(e, ProducerClosedError) for e in failed), failed[:1]
        else:
            assert not failed, f"{len(failed)} records failed, e.g. {failed[0]!r}"
        reported_sent = [i for i, f in enumerate(futures) if f.exception(timeout=0) is None]
        records = consume_all(
            private_broker.bootstrap_servers, topic, 3, len(reported_sent) + 10, timeout_s=60, linger_s=1.0
        )
        in_log = Counter(r.value for r in records)
        lost = [i for i in reported_sent if values[i] not in in_log]
        assert not lost, f"{len(lost)} of {len(reported_sent)} records reported sent are not in the log"
        assert max(in_log.values()) == 1, "a record is in the log twice"
    finally:
        producer.close(timeout=1)


# ----------------------------------------------------------------------------- 7. AsyncProducer


@pytest.mark.timeout(180)
def test_async_producer_send_enqueue_flush_and_async_with(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    n = 20_000

    async def run() -> tuple[list[RecordMetadata], list[bytes], list[asyncio.Future[RecordMetadata]]]:
        metadata: list[RecordMetadata] = []
        values: list[bytes] = []
        async with AsyncProducer({"bootstrap.servers": broker.bootstrap_servers}) as producer:
            for i in range(20):  # one at a time, each awaited
                value = b"awaited-%d" % i
                md = await producer.send(topic, value, key=b"k%d" % (i % 3))
                assert isinstance(md, RecordMetadata) and md.topic == topic and md.offset >= 0
                metadata.append(md)
                values.append(value)
            futures = []
            for i in range(n):  # pipelined
                value = b"piped-%d" % i
                futures.append(
                    await producer.enqueue(topic, value, key=b"p%d" % (i % 101) if i % 3 else None)
                )
                values.append(value)
            await producer.flush(timeout=90)
            assert all(f.done() for f in futures)
            metadata += [f.result() for f in futures]
            # Records enqueued right before the block ends are delivered by the close on exit.
            tail = [await producer.enqueue(topic, b"tail-%d" % i) for i in range(10)]
        assert all(f.done() and f.exception() is None for f in tail)
        metadata += [f.result() for f in tail]
        values += [b"tail-%d" % i for i in range(10)]
        with pytest.raises(ProducerClosedError):
            await producer.send(topic, b"after-close")
        with pytest.raises(ProducerClosedError):
            await producer.enqueue(topic, b"after-close")
        return metadata, values, tail

    metadata, values, _ = asyncio.run(asyncio.wait_for(run(), 150))
    records = consume_all(broker.bootstrap_servers, topic, 3, len(values), timeout_s=90, linger_s=1.0)
    assert_metadata_matches_readback(topic, metadata, list(values), records)


# ----------------------------------------------------------------------------- 8. flush


@pytest.mark.timeout(120)
def test_flush_returns_once_everything_is_acknowledged(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    n = 3_000
    # linger.ms far beyond the test: without flush() nothing would be sent.
    with producing(broker.bootstrap_servers, linger_ms=60_000, batch_size=1_000_000) as producer:
        producer.flush(timeout=5)  # nothing pending: returns at once
        futures = [producer.send(topic, b"f-%d" % i, key=b"k%d" % (i % 10)) for i in range(n)]
        time.sleep(0.3)
        assert not any(f.done() for f in futures), "records were sent before linger.ms without a flush"
        start = time.monotonic()
        producer.flush(timeout=30)
        took = time.monotonic() - start
        assert all(f.done() for f in futures)
        metadata = [f.result(timeout=0) for f in futures]
        assert took < 20, f"flush took {took:.1f} s"
        start = time.monotonic()
        producer.flush(timeout=5)
        assert time.monotonic() - start < 1.0, "flush with nothing pending must return at once"
    records = consume_all(broker.bootstrap_servers, topic, 3, n, timeout_s=60, linger_s=0.5)
    assert_metadata_matches_readback(topic, metadata, [b"f-%d" % i for i in range(n)], records)


@pytest.mark.timeout(120)
def test_metrics_count_records_batches_and_requests_and_full_batches_are_not_split(
    broker: Any, make_topic: MakeTopic
) -> None:
    """Keyless records through the fast path fill whole batches (sticky partitioner, nothing
    sends a filling batch before linger.ms), and the counters say so."""
    topic = make_topic(3)
    n = 20_000
    value = b"m" * 100
    with producing(broker.bootstrap_servers, linger_ms=2_000, batch_size=16_384, acks=1) as producer:
        producer.send(topic, b"first").result(timeout=30)
        futures = [producer.send(topic, value) for _ in range(n)]
        producer.flush(timeout=60)
        metrics = producer.metrics()
        metadata = [f.result(timeout=0) for f in futures]
    assert metrics["records-sent-total"] == n + 1
    per_batch = (16_384 - 61) // (len(value) + 10)  # each record takes 110 bytes or so
    full_batches = n // per_batch
    # Every batch but the last of each partition (and the first record's) left full.
    assert full_batches <= metrics["batches-sent-total"] <= full_batches + 3 + 1 + 3
    assert 1 <= metrics["produce-requests-total"] <= metrics["batches-sent-total"]
    sizes: dict[int, int] = {}
    for md in metadata:
        sizes[md.partition] = sizes.get(md.partition, 0) + 1
    assert sum(sizes.values()) == n and len(sizes) > 1  # the sticky partitioner moved on


# ----------------------------------------------------------------------------- 9. threads


@pytest.mark.timeout(180)
def test_four_threads_share_one_producer(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    threads_n, per_thread, keys_per_thread = 4, 5_000, 23
    barrier = threading.Barrier(threads_n)
    results: dict[int, list[tuple[bytes, RecordFuture]]] = {}
    errors: list[BaseException] = []

    with producing(broker.bootstrap_servers) as producer:

        def worker(t: int) -> None:
            try:
                barrier.wait(10)
                out = []
                for j in range(per_thread):
                    key = b"t%d-k%d" % (t, j % keys_per_thread)
                    value = b"%d:%d" % (t, j)
                    out.append((value, producer.send(topic, value, key)))
                results[t] = out
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,), name=f"sender-{t}") for t in range(threads_n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not any(th.is_alive() for th in threads), "a sender thread is stuck"
        assert not errors, errors
        producer.flush(timeout=90)
        sent = [(v, f.result(timeout=0)) for t in range(threads_n) for v, f in results[t]]

    total = threads_n * per_thread
    records = consume_all(broker.bootstrap_servers, topic, 3, total, timeout_s=90, linger_s=1.0)
    assert_metadata_matches_readback(topic, [md for _, md in sent], [v for v, _ in sent], records)
    per_key: dict[bytes, list[int]] = defaultdict(list)
    for rec in records:  # per partition in offset order
        assert rec.key is not None and rec.value is not None
        assert rec.partition == confluent_kafka.murmur2(rec.key, 3)
        per_key[rec.key].append(int(rec.value.split(b":")[1]))
    assert len(per_key) == threads_n * keys_per_thread
    for key, seqs in per_key.items():
        assert seqs == sorted(seqs), f"key {key!r}: per-key order broken"


# ----------------------------------------------------------------------------- 10. config


@pytest.mark.timeout(30)
def test_invalid_settings_raise_config_error_naming_the_setting(broker: Any) -> None:
    bootstrap = broker.bootstrap_servers
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"bootstrap.servers": bootstrap, "linger.ms": -1}, {}, "linger.ms"),
        ({"bootstrap.servers": bootstrap, "acks": 2}, {}, "acks"),
        ({"bootstrap.servers": bootstrap, "lingr.ms": 5}, {}, "lingr.ms"),
        ({"bootstrap.servers": bootstrap}, {"buffer_memory": "lots"}, "buffer.memory"),
        ({"bootstrap.servers": bootstrap, "compression.type": "brotli"}, {}, "compression.type"),
        ({}, {}, "bootstrap.servers"),
    ]
    for config, kwargs, name in cases:
        before = threading.active_count()
        with pytest.raises(ConfigError) as info:
            Producer(config, **kwargs)
        assert name in str(info.value), (config, kwargs, str(info.value))
        assert threading.active_count() == before, "a rejected Producer left a thread running"


# ----------------------------------------------------------------------------- 11. close releases sockets


def _established_sockets_to(port: int) -> int:
    """TCP connections of this process to 127.0.0.1:``port`` that are ESTABLISHED (Linux /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    with open("/proc/self/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


@pytest.mark.timeout(60)
@pytest.mark.skipif(not os.path.exists("/proc/self/net/tcp"), reason="needs Linux /proc")
def test_close_releases_every_connection(private_broker: Any) -> None:
    private_broker.create_topic("sockets", partitions=3)
    port = private_broker.port
    assert _established_sockets_to(port) == 0
    with producing(private_broker.bootstrap_servers) as producer:
        producer.send("sockets", b"one").result(timeout=30)
        assert _established_sockets_to(port) >= 1
    deadline = time.monotonic() + 2.0
    left = _established_sockets_to(port)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _established_sockets_to(port)
    assert left == 0, f"{left} connection(s) to the broker are still open after close()"


@pytest.mark.timeout(120)
def test_async_sends_of_one_key_keep_their_order_across_the_metadata_wait(
    broker: Any, make_topic: MakeTopic
) -> None:
    """Tasks started in order for one key while the topic's metadata is not known yet: those that
    waited for it must not be overtaken by tasks started after it arrived (issue 11, point 7)."""
    topic = make_topic(3)
    n = 3_000

    async def run() -> None:
        async with AsyncProducer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 1}) as producer:
            tasks = []
            for i in range(n):
                tasks.append(asyncio.ensure_future(producer.send(topic, b"%05d" % i, key=b"one-key")))
                if i % 10 == 0:
                    await asyncio.sleep(0.0005)  # the metadata arrives while tasks keep starting
            results = await asyncio.gather(*tasks)
        offsets = [md.offset for md in results]
        assert offsets == sorted(offsets), "a later send() was written before an earlier one"

    asyncio.run(run())
    records = consume_all(broker.bootstrap_servers, topic, 3, n, timeout_s=60)
    values = [r.value or b"" for r in records]
    assert len(values) == n and values == sorted(values)


@pytest.mark.timeout(120)
def test_metrics_use_javas_names_and_agree_with_what_happened(broker: Any, make_topic: MakeTopic) -> None:
    """metrics(): Java's producer metrics (rates, averages, totals), per topic and per broker, and why
    batches left; the counts agree with the records sent and the requests made."""
    topic = make_topic(3)
    n = 20_000
    with Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20, "compression.type": "lz4"}
    ) as producer:
        futures = [producer.send(topic, b"m" * 100, key=b"k%d" % (i % 50)) for i in range(n)]
        producer.flush(60)
        m = producer.metrics()
    assert all(f.exception(timeout=0) is None for f in futures)
    assert m["record-send-total"] == n and m["record-send-rate"] > 0 and m["record-error-total"] == 0
    assert 100 < m["record-size-avg"] < 200
    assert m["batch-size-avg"] > 0 and m["batch-size-max"] >= m["batch-size-avg"]
    assert 0 < m["compression-rate-avg"] < 1, "lz4 on repeated bytes compresses"
    assert (
        m["records-per-request-avg"] > 1 and 0 <= m["request-latency-avg"] < 5_000
    )  # ms; loopback answers can take < 1 ms
    assert m["request-total"] == m["response-total"] == m["produce-requests-total"]
    assert m["outgoing-byte-total"] > 0 and m["incoming-byte-total"] > 0
    assert m["record-queue-time-max"] >= m["record-queue-time-avg"] >= 0
    reasons = m["batch-close-reasons"]
    closed = sum(reasons.values())
    assert reasons["full"] + reasons["linger"] + reasons["flush"] > 0
    if m["record-retry-total"] == 0:
        assert closed == m["batches-sent-total"], (reasons, m["batches-sent-total"])
    else:  # a batch sent again (a fresh topic's leader not elected yet on Kafka) is counted again
        assert closed < m["batches-sent-total"] <= closed + m["record-retry-total"], (reasons, m)
    assert m["producer-topic-metrics"][topic]["record-send-total"] == n
    nodes = m["producer-node-metrics"]
    assert sum(v["request-total"] for v in nodes.values()) == m["request-total"]
    assert m["buffer-available-bytes"] == m["buffer-total-bytes"]  # everything acknowledged
    assert m["metadata-age"] >= 0


@pytest.mark.timeout(60)
def test_stats_cb_gets_librdkafkas_statistics_json(broker: Any, make_topic: MakeTopic) -> None:
    """statistics.interval.ms + stats_cb, as confluent-kafka users configure them: librdkafka's JSON
    shape with the counts of what happened."""
    topic = make_topic(2)
    documents: list[dict[str, Any]] = []
    with Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "statistics.interval.ms": 200},
        stats_cb=lambda text: documents.append(json.loads(text)),
    ) as producer:
        for i in range(2_000):
            producer.send(topic, b"s" * 50, key=b"%d" % i)
        producer.flush(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (len(documents) >= 2 and documents[-1]["txmsgs"] == 2_000):
            time.sleep(0.05)
    assert len(documents) >= 2
    last = documents[-1]
    assert last["type"] == "producer" and last["txmsgs"] == 2_000 and last["msg_cnt"] == 0
    assert last["tx"] >= 1 and last["tx_bytes"] > 100_000 and last["rx"] == last["tx"]
    assert set(last["topics"][topic]["partitions"]) == {"0", "1"}
    assert last["topics"][topic]["txmsgs"] == 2_000
    assert any(b["state"] == "UP" and b["tx"] >= 1 for b in last["brokers"].values())
    assert documents[0]["ts"] < last["ts"] and last["age"] > 0


@pytest.mark.timeout(60)
def test_a_prometheus_scrape_reads_the_producers_metrics(broker: Any, make_topic: MakeTopic) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from kprod.prometheus import ProducerCollector

    topic = make_topic(2)
    settings = {
        "bootstrap.servers": broker.bootstrap_servers,
        "client.id": "scraped",
        "compression.type": "lz4",
    }
    with Producer(settings) as producer:
        registry = CollectorRegistry()
        registry.register(ProducerCollector(producer))
        for i in range(1_000):
            producer.send(topic, b"p" * 80, key=b"%d" % i)
        producer.flush(30)
        text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ident = (("client_id", "scraped"),)
    assert samples[("kprod_producer_records_sent_total", ident)] == 1_000
    assert samples[("kprod_producer_record_errors_total", ident)] == 0
    assert (
        samples[("kprod_producer_topic_records_sent_total", (("client_id", "scraped"), ("topic", topic)))]
        == 1_000
    )
    assert 0 <= samples[("kprod_producer_request_latency_avg_seconds", ident)] < 5
    assert samples[("kprod_producer_buffer_total_bytes", ident)] == 33_554_432
    closed = sum(v for (name, _), v in samples.items() if name == "kprod_producer_batches_closed_total")
    assert closed >= 2
    assert 0 < samples[("kprod_producer_stage_compress_time_avg_seconds", ident)] < 0.1
    assert (
        0 < samples[("kprod_producer_stage_append_time_avg_seconds", ident)] < 0.1
    )  # the first record is sampled


@pytest.mark.timeout(60)
def test_opentelemetry_instruments_read_the_producers_metrics(broker: Any, make_topic: MakeTopic) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from kprod.opentelemetry import instrument_producer

    topic = make_topic(2)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with Producer({"bootstrap.servers": broker.bootstrap_servers, "client.id": "observed"}) as producer:
        instruments = instrument_producer(producer, provider)
        for i in range(500):
            producer.send(topic, b"o" * 60, key=b"%d" % i)
        producer.flush(30)
        data = reader.get_metrics_data()
    assert instruments and data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    sent = points["messaging.client.sent.messages"]
    assert [(p.value, dict(p.attributes)) for p in sent] == [
        (
            500,
            {
                "messaging.system": "kafka",
                "messaging.client.id": "observed",
                "messaging.destination.name": topic,
                "messaging.operation.name": "send",
            },
        )
    ]
    assert points["kprod.producer.requests"][0].value >= 1
    assert 0 <= points["kprod.producer.request.latency"][0].value < 5
    assert sum(p.value for p in points["kprod.producer.batches.closed"]) >= 2
    stage_times = {p.attributes["kprod.stage"]: p.value for p in points["kprod.producer.stage.time"]}
    assert {"append", "partition", "in_flight"} <= set(stage_times), stage_times
    assert "compress" not in stage_times, "no codec ran: no compression time (NaN is not observed)"
    assert all(0 <= v < 5 for v in stage_times.values()), stage_times
