"""Fault tolerance against the librdkafka mock cluster (3 brokers, in this process).

The mock is the fault-injection peer (see /work/shared/test-peers.md): leader moves, injected
per-request and per-partition errors, a broker going down, response delays, ApiVersions ranges,
and request tracking (broker id, api key, receive time of every request).

Two limits of the mock shape what is asserted:

* It keeps no sequence state for non-transactional idempotent producers, so it neither removes
  duplicates nor rejects a batch that overtakes a failed earlier one (a real broker answers
  OUT_OF_ORDER_SEQUENCE_NUMBER and the client resends both in order). Duplicates are therefore
  counted, not forbidden, and per-key order is asserted with one request in flight per connection;
  with five in flight a batch may legitimately overtake a failed one on the mock (the Tansu tests
  check ordering with five in flight against a broker that enforces sequences).
* Injected errors never append; only a request cut by a broker going down may have been appended.

Records are read back with confluent-kafka (``check.crcs=true``; fine for non-transactional data).
"""

from __future__ import annotations

import gc
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from helpers import ConsumedRecord, consume_all
from kprod import (
    KafkaError,
    KafkaTimeoutError,
    Persisted,
    Producer,
    ProducerClosedError,
    RecordFuture,
)
from kprod.errors import BrokerConnectionError, UnknownTopicError
from mock_cluster import MockCluster
from relay import Relay

pytestmark = pytest.mark.mock_cluster

PRODUCE = 0
METADATA = 3
API_VERSIONS = 18
INIT_PRODUCER_ID = 22

NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
NOT_ENOUGH_REPLICAS = 19
NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
TOPIC_AUTHORIZATION_FAILED = 29
PRODUCER_FENCED = 90


# ----------------------------------------------------------------------------- helpers


@contextmanager
def producing(mc: MockCluster, close_timeout: float = 10.0, **settings: Any) -> Iterator[Producer]:
    """A Producer on the mock, always closed (bounded) when the block ends."""
    config: dict[str, Any] = {"bootstrap.servers": mc.bootstrap_servers, "linger.ms": 5}
    config.update({k.replace("_", "."): v for k, v in settings.items()})
    producer = Producer(config)
    try:
        yield producer
    finally:
        producer.close(timeout=close_timeout)


def create_spread_topic(mc: MockCluster, topic: str, partitions: int) -> dict[int, int]:
    """Create ``topic`` (RF 3) with partition p led by broker p % 3 + 1; return the leaders confluent-kafka sees.

    The mock picks leaders at random (sometimes on two brokers only), hence the explicit spread.
    """
    mc.create_topic(topic, partitions, 3)
    for p in range(partitions):
        mc.set_leader(topic, p, p % 3 + 1)
    leaders = leaders_seen_by_confluent(mc, topic)
    assert leaders == {p: p % 3 + 1 for p in range(partitions)}
    return leaders


def leaders_seen_by_confluent(mc: MockCluster, topic: str) -> dict[int, int]:
    """Partition -> leader, as an independent client (confluent-kafka's AdminClient) sees it."""
    admin = AdminClient({"bootstrap.servers": mc.bootstrap_servers})
    metadata = admin.list_topics(topic, timeout=10)
    leaders = {p: pm.leader for p, pm in metadata.topics[topic].partitions.items()}
    del admin, metadata
    gc.collect()  # destroy the librdkafka handle now: its requests must not pollute request tracking
    return leaders


def produce_requests(mc: MockCluster) -> list[tuple[int, int]]:
    """(broker, api key) of the tracked requests since the last call, Produce and Metadata only."""
    return [(b, k) for b, k, _ in mc.requests() if k in (PRODUCE, METADATA)]


def first_occurrence_order(records: list[ConsumedRecord]) -> dict[bytes | None, list[int]]:
    """Per key, the record numbers in log order, each record counted at its first occurrence only."""
    seen: set[int] = set()
    out: dict[bytes | None, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert r.value is not None
        n = int(r.value[:6])
        if n not in seen:
            seen.add(n)
            out[r.key].append(n)
    return out


def count_reorders(order: dict[bytes | None, list[int]]) -> int:
    return sum(1 for numbers in order.values() for a, b in itertools.pairwise(numbers) if b < a)


# ----------------------------------------------------------------------------- the headline


HEADLINE_RECORDS = 30_000
HEADLINE_KEYS = 600
HEADLINE_PARTITIONS = 6


def _value(i: int, key: bytes) -> bytes:
    return b"%06d|" % i + key + b"|" + b"x" * 84  # about 100 bytes: 5,000 per partition stay far below 5 MiB


@pytest.mark.timeout(90)
@pytest.mark.parametrize("in_flight", [1, 5])
def test_headline_30k_records_survive_leader_moves_errors_and_a_broker_outage(
    mock_cluster: MockCluster, in_flight: int, record_property: Any
) -> None:
    """30,000 keyed records, 6 partitions (RF 3), acks=all, idempotence, under a fault schedule.

    Every record is acknowledged, its acknowledged offset holds it, every record is read back at
    least once. With one request in flight per connection, the first occurrences of each key's
    records are in send order; with five, the mock (no sequence checks) may let a batch overtake a
    failed one, so order is only reported. Duplicates are reported (the mock does not de-duplicate).
    """
    mc = mock_cluster
    topic = "headline"
    leaders = create_spread_topic(mc, topic, HEADLINE_PARTITIONS)
    down_broker = leaders[1]
    other = {b: (b % 3) + 1 for b in (1, 2, 3)}
    futures: list[RecordFuture] = []
    values: list[bytes] = []
    started = time.monotonic()
    down_at = 0.0
    with producing(
        mc,
        acks="all",
        enable_idempotence=True,
        retry_backoff_ms=50,
        retry_backoff_max_ms=500,
        request_timeout_ms=5000,
        delivery_timeout_ms=60000,
        max_in_flight_requests_per_connection=in_flight,
        reconnect_backoff_ms=50,
        reconnect_backoff_max_ms=200,
    ) as producer:
        for i in range(HEADLINE_RECORDS):
            if i == 3_000:
                mc.set_leader(topic, 0, other[leaders[0]])  # leader move
            elif i == 6_000:
                mc.push_partition_errors(topic, 1, PRODUCE, *[NOT_LEADER_OR_FOLLOWER] * 3)
            elif i == 9_000:
                mc.push_request_errors(PRODUCE, NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS)
            elif i == 12_000:
                mc.push_partition_errors(topic, 2, PRODUCE, *[NOT_ENOUGH_REPLICAS_AFTER_APPEND] * 2)
            elif i == 15_000:
                mc.push_request_errors(PRODUCE, REQUEST_TIMED_OUT, REQUEST_TIMED_OUT)
            elif i == 18_000:
                mc.broker_down(down_broker)
                down_at = time.monotonic()
            elif i == 21_000:
                time.sleep(max(0.0, down_at + 0.4 - time.monotonic()))  # down for at least 0.4 s
                mc.broker_up(down_broker)
            elif i == 24_000:
                mc.set_leader(topic, 3, other[leaders[3]])
                mc.push_partition_errors(
                    topic,
                    4,
                    PRODUCE,
                    NOT_LEADER_OR_FOLLOWER,
                    NOT_ENOUGH_REPLICAS,
                    NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                    REQUEST_TIMED_OUT,
                )
            key = b"k%03d" % (i % HEADLINE_KEYS)
            value = _value(i, key)
            values.append(value)
            futures.append(producer.send(topic, value, key=key))
            if i % 100 == 99:
                time.sleep(0.003)  # spread the sends (and the faults) over a couple of seconds
        producer.flush(60)
        retries = producer.metrics()["record-retry-total"]
    elapsed = time.monotonic() - started

    errors = Counter(repr(f.exception(0)) for f in futures if f.exception(0) is not None)
    assert not errors, f"records failed: {errors.most_common(5)}"
    records = consume_all(
        mc.bootstrap_servers, topic, HEADLINE_PARTITIONS, HEADLINE_RECORDS, 60, linger_s=1.0
    )
    at = {(r.partition, r.offset): r for r in records}
    for i, future in enumerate(futures):
        md = future.result(0)
        assert md.offset >= 0
        assert at[(md.partition, md.offset)].value == values[i], (
            f"record {i}: its acknowledged offset holds another record"
        )
    copies = Counter(r.value for r in records)
    missing = [i for i, v in enumerate(values) if v not in copies]
    assert not missing, f"{len(missing)} acknowledged records are not in the log, e.g. {missing[:5]}"
    duplicates = sum(c - 1 for c in copies.values())
    reorders = count_reorders(first_occurrence_order(records))
    record_property("duplicates", duplicates)
    record_property("reorders", reorders)
    record_property("retries", retries)
    print(
        f"in_flight={in_flight}: {len(records)} read, {duplicates} duplicates, {reorders} reorders, "
        f"{retries} retries, {elapsed:.1f} s"
    )
    # 13 injected retriable errors (4 of them for whole requests), 2 leader moves, an outage: all retried.
    assert retries >= 10
    if in_flight == 1:
        assert reorders == 0, "a key's records were written out of send order"


# ----------------------------------------------------------------------------- routing


@pytest.mark.timeout(30)
def test_produce_requests_go_to_each_partitions_leader_and_follow_a_move(mock_cluster: MockCluster) -> None:
    mc = mock_cluster
    topic = "routing"
    leaders = create_spread_topic(mc, topic, 6)
    with producing(mc, retry_backoff_ms=50) as producer:
        for p in range(6):
            producer.send(topic, b"warm-up", partition=p)
        producer.flush(10)
        mc.start_tracking()
        mc.requests()
        for p in range(6):
            for i in range(20):
                producer.send(topic, b"%d-%d" % (p, i), partition=p)
            producer.flush(10)
            sent_to = {b for b, k in produce_requests(mc) if k == PRODUCE}
            assert sent_to == {leaders[p]}, f"partition {p} (leader {leaders[p]}) was sent to {sent_to}"

        old = leaders[0]
        new = (old % 3) + 1
        mc.set_leader(topic, 0, new)
        retries_before = producer.metrics()["record-retry-total"]
        futures = [producer.send(topic, b"moved-%d" % i, partition=0) for i in range(20)]
        producer.flush(10)
        assert all(f.exception(0) is None for f in futures)
        seen = produce_requests(mc)
        produce_to = [b for b, k in seen if k == PRODUCE]
        # The old leader answers NOT_LEADER_OR_FOLLOWER once, and every later batch goes to the new one.
        # The answer names the new leader (KIP-951), so the retry need not wait for the Metadata
        # refresh that the error also triggers: both orders are right.
        assert seen[0] == (old, PRODUCE), seen
        assert produce_to.count(old) == 1, seen
        assert all(b == new for b in produce_to[1:]) and len(produce_to) >= 2, seen
        deadline = time.monotonic() + 2
        while not any(k == METADATA for _, k in seen[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)  # the refresh may still be on its way: the retry did not wait for it
            seen += produce_requests(mc)
        assert any(k == METADATA for _, k in seen[1:]), (
            f"NOT_LEADER_OR_FOLLOWER did not refresh metadata: {seen}"
        )
        assert producer.metrics()["record-retry-total"] == retries_before + 1

        for i in range(20):
            producer.send(topic, b"after-%d" % i, partition=0)
        producer.flush(10)
        assert {b for b, k in produce_requests(mc) if k == PRODUCE} == {new}


# ----------------------------------------------------------------------------- errors


@pytest.mark.timeout(30)
def test_topic_authorization_failed_fails_the_records_at_once_without_retry(
    mock_cluster: MockCluster,
) -> None:
    mc = mock_cluster
    topic = "authz"
    mc.create_topic(topic, 1, 3)
    with producing(mc, retry_backoff_ms=50) as producer:
        producer.send(topic, b"warm-up").result(10)
        mc.start_tracking()
        mc.requests()
        mc.push_request_errors(PRODUCE, TOPIC_AUTHORIZATION_FAILED)
        started = time.monotonic()
        futures = [producer.send(topic, b"denied-%d" % i) for i in range(50)]
        producer.flush(10)
        elapsed = time.monotonic() - started
        produce_count = sum(1 for _, k, _ in mc.requests() if k == PRODUCE)
        errors = [f.exception(0) for f in futures]
        assert all(isinstance(e, KafkaError) for e in errors), Counter(repr(e) for e in errors)
        first = errors[0]
        assert isinstance(first, KafkaError)
        assert first.name == "TOPIC_AUTHORIZATION_FAILED" and first.code == TOPIC_AUTHORIZATION_FAILED
        assert not first.retriable
        assert first.persisted is Persisted.NOT_PERSISTED
        assert topic in str(first)
        assert produce_count == 1, "a non-retriable error was retried"
        assert producer.metrics()["record-retry-total"] == 0
        assert elapsed < 2.0
        # The producer goes on (under a new producer id): the next record is delivered.
        assert producer.send(topic, b"allowed").result(10).offset >= 0


@pytest.mark.timeout(30)
def test_producer_fenced_is_fatal_and_later_sends_raise_it(mock_cluster: MockCluster) -> None:
    """An idempotent producer answered PRODUCER_FENCED stops: its records fail with it, and every
    later send() raises it at once, also for a topic whose open batch the fast path would use."""
    mc = mock_cluster
    topic = "fenced"
    mc.create_topic(topic, 1, 3)
    with producing(mc, retry_backoff_ms=50, enable_idempotence=True, acks="all") as producer:
        producer.send(topic, b"warm-up").result(10)
        mc.push_request_errors(PRODUCE, PRODUCER_FENCED)
        futures = [producer.send(topic, b"fenced-%d" % i) for i in range(20)]
        producer.flush(10)
        errors = [f.exception(0) for f in futures]
        assert all(isinstance(e, KafkaError) and e.name == "PRODUCER_FENCED" for e in errors), Counter(
            repr(e) for e in errors
        )
        for _ in range(3):  # raises, not queues: nothing would ever send it
            with pytest.raises(KafkaError, match="PRODUCER_FENCED"):
                producer.send(topic, b"after")


@pytest.mark.timeout(30)
def test_retriable_error_past_delivery_timeout_fails_with_its_last_cause_not_persisted(
    mock_cluster: MockCluster,
) -> None:
    """The broker answers NOT_ENOUGH_REPLICAS to every attempt: nothing was written."""
    mc = mock_cluster
    topic = "nerr"
    mc.create_topic(topic, 1, 3)
    with producing(
        mc, retry_backoff_ms=50, retry_backoff_max_ms=200, request_timeout_ms=1000, delivery_timeout_ms=1500
    ) as producer:
        producer.send(topic, b"warm-up").result(10)
        mc.push_partition_errors(topic, 0, PRODUCE, *[NOT_ENOUGH_REPLICAS] * 200)
        started = time.monotonic()
        futures = [producer.send(topic, b"r-%d" % i) for i in range(20)]
        errors = [f.exception(10) for f in futures]
        elapsed = time.monotonic() - started
        mc.clear_errors(PRODUCE)
        for error in errors:
            assert isinstance(error, KafkaTimeoutError), repr(error)
            assert isinstance(error.last_cause, KafkaError)
            assert error.last_cause.name == "NOT_ENOUGH_REPLICAS"
            assert error.persisted is Persisted.NOT_PERSISTED
            assert error.stage == "delivery"
        assert "NOT_ENOUGH_REPLICAS" in str(errors[0]) and "delivery.timeout.ms=1500" in str(errors[0])
        assert 1.4 <= elapsed <= 3.0
        assert producer.metrics()["record-retry-total"] >= 3


@pytest.mark.timeout(30)
def test_unanswered_requests_past_delivery_timeout_fail_possibly_persisted(mock_cluster: MockCluster) -> None:
    """The leader answers after 3 s, request.timeout.ms is 500: the records may well be in the log."""
    mc = mock_cluster
    topic = "slow"
    mc.create_topic(topic, 1, 3)
    with producing(
        mc, retry_backoff_ms=50, request_timeout_ms=500, delivery_timeout_ms=1500, close_timeout=1.0
    ) as producer:
        producer.send(topic, b"warm-up").result(10)
        leader = leaders_seen_by_confluent(mc, topic)[0]
        mc.set_rtt(leader, 3000)
        try:
            started = time.monotonic()
            futures = [producer.send(topic, b"r-%d" % i) for i in range(20)]
            errors = [f.exception(10) for f in futures]
            elapsed = time.monotonic() - started
        finally:
            mc.set_rtt(leader, 0)
        for error in errors:
            assert isinstance(error, KafkaTimeoutError), repr(error)
            assert error.persisted is Persisted.POSSIBLY_PERSISTED
            assert isinstance(error.last_cause, BrokerConnectionError)
            assert "request.timeout.ms=500" in str(error.last_cause)
        assert 1.4 <= elapsed <= 3.0


@pytest.mark.timeout(30)
def test_retry_backoff_grows_exponentially_with_jitter(mock_cluster: MockCluster) -> None:
    """retry.backoff.ms=100, retry.backoff.max.ms=1000: gaps ~100, 200, 400, 800, 1000 ms (±20 %)."""
    mc = mock_cluster
    topic = "backoff"
    mc.create_topic(topic, 1, 3)
    with producing(mc, linger_ms=0, retry_backoff_ms=100, retry_backoff_max_ms=1000) as producer:
        producer.send(topic, b"warm-up").result(10)
        mc.start_tracking()
        mc.requests()
        mc.push_partition_errors(topic, 0, PRODUCE, *[NOT_ENOUGH_REPLICAS] * 5)
        assert producer.send(topic, b"retried").result(10).offset >= 0
        stamps_us = [t for _, k, t in mc.requests() if k == PRODUCE]
    assert len(stamps_us) == 6, "one first attempt and five retries"
    gaps_ms = [(b - a) / 1000 for a, b in itertools.pairwise(stamps_us)]
    expected = [100, 200, 400, 800, 1000]
    for gap, base in zip(gaps_ms, expected, strict=True):
        # ±20 % jitter, plus a little time for the answer and the sender loop.
        assert 0.8 * base - 5 <= gap <= 1.2 * base + 60, f"gaps {gaps_ms}, expected about {expected}"


# ----------------------------------------------------------------------------- versions


@pytest.mark.timeout(30)
def test_api_versions_fall_back_to_v0_on_the_mock(mock_cluster: MockCluster) -> None:
    """The mock's ApiVersions max is v2: v3 gets UNSUPPORTED_VERSION and kprod asks again with v0.

    A relay in front of broker 1 shows the versions on the bootstrap connection.
    """
    mc = mock_cluster
    topic = "versions"
    mc.create_topic(topic, 1, 3)
    first_port = int(mc.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    with Relay(upstream_port=first_port) as relay:
        producer = Producer({"bootstrap.servers": relay.address, "linger.ms": 5})
        try:
            assert producer.send(topic, b"hello").result(10).offset >= 0
        finally:
            producer.close(10)
        on_bootstrap = [(r.api_key, r.api_version) for r in relay.requests() if r.connection == 1]
    assert on_bootstrap[:2] == [(API_VERSIONS, 3), (API_VERSIONS, 0)], on_bootstrap
    assert (METADATA, 12) in on_bootstrap  # the v0 answer was understood: Metadata at the best common version


@pytest.mark.timeout(30)
def test_produce_version_follows_the_brokers_range(mock_cluster: MockCluster) -> None:
    """With Produce limited to v3-v7 the mock closes the connection on any higher version.

    Delivery proves kprod stayed within it; the negotiated version is checked as well.
    """
    mc = mock_cluster
    topic = "produce-v7"
    mc.create_topic(topic, 3, 3)
    mc.set_apiversion(PRODUCE, 3, 7)
    with producing(mc) as producer:
        futures = [producer.send(topic, b"v-%d" % i, partition=i % 3) for i in range(30)]
        producer.flush(10)
        assert all(f.result(0).offset >= 0 for f in futures)
        negotiated = {node: conn.versions[PRODUCE] for node, conn in producer._engine.connections.items()}
    assert negotiated and all(v == 7 for v in negotiated.values()), negotiated
    records = consume_all(mc.bootstrap_servers, topic, 3, 30, 20)
    assert sorted(r.value or b"" for r in records) == sorted(b"v-%d" % i for i in range(30))


# ----------------------------------------------------------------------------- nothing hangs


@pytest.mark.timeout(30)
def test_no_call_hangs_when_every_broker_is_down(mock_cluster: MockCluster) -> None:
    mc = mock_cluster
    topic = "down"
    mc.create_topic(topic, 3, 3)
    producer = Producer(
        {
            "bootstrap.servers": mc.bootstrap_servers,
            "max.block.ms": 1000,
            "request.timeout.ms": 1000,
            "delivery.timeout.ms": 30000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 200,
        }
    )
    try:
        producer.send(topic, b"warm-up").result(10)
        for broker in (1, 2, 3):
            mc.broker_down(broker)

        started = time.monotonic()
        futures = [producer.send(topic, b"queued-%d" % i) for i in range(100)]
        assert time.monotonic() - started < 0.5, "send() to a known topic must not block"

        started = time.monotonic()
        with pytest.raises(KafkaTimeoutError, match="flush"):
            producer.flush(1.0)
        assert 0.9 <= time.monotonic() - started < 1.6

        started = time.monotonic()
        with pytest.raises(UnknownTopicError) as info:
            producer.send("never-seen", b"x")
        assert 0.9 <= time.monotonic() - started < 1.8, "send() must block at most max.block.ms for metadata"
        assert "never-seen" in str(info.value)
    finally:
        started = time.monotonic()
        producer.close(1.0)
        closed_in = time.monotonic() - started
    assert closed_in < 3.0
    for future in futures:
        error = future.exception(0)
        assert isinstance(error, ProducerClosedError), repr(error)
    with pytest.raises(ProducerClosedError):
        producer.send(topic, b"after close")


@pytest.mark.timeout(30)
def test_unknown_topic_without_auto_creation_raises_after_max_block(mock_cluster: MockCluster) -> None:
    mc = mock_cluster
    mc.create_topic("exists", 1, 3)
    with producing(mc, allow_auto_create_topics=False, max_block_ms=1000) as producer:
        assert producer.send("exists", b"ok").result(10).offset >= 0
        started = time.monotonic()
        with pytest.raises(UnknownTopicError) as info:
            producer.send("missing-topic", b"x")
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0
    error = info.value
    assert "missing-topic" in str(error)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in str(error)
    assert error.stage == "metadata"
    admin = AdminClient({"bootstrap.servers": mc.bootstrap_servers})
    assert "missing-topic" not in admin.list_topics(timeout=10).topics, "the topic must not have been created"


@pytest.mark.timeout(60)
def test_init_producer_id_retries_back_off_exponentially(mock_cluster: MockCluster) -> None:
    """A broker that keeps refusing InitProducerId (retriable COORDINATOR_NOT_AVAILABLE) is asked
    again after retry.backoff.ms, then twice, four times as long... up to retry.backoff.max.ms."""
    mc = mock_cluster
    mc.create_topic("pid-backoff", 1, 3)
    mc.push_request_errors(22, *([15] * 6))  # InitProducerId
    mc.start_tracking()
    with producing(mc, retry_backoff_ms=50, retry_backoff_max_ms=400) as producer:
        assert producer.send("pid-backoff", b"x").result(20).offset >= 0
    times_us = [t for _, api_key, t in mc.requests() if api_key == 22]
    assert len(times_us) == 7, times_us
    gaps_ms = [(b - a) / 1000 for a, b in itertools.pairwise(times_us)]
    expected = [50, 100, 200, 400, 400, 400]
    for gap, base in zip(gaps_ms, expected, strict=True):
        assert 0.75 * base <= gap <= 1.25 * base + 60, f"gaps {gaps_ms} ms, expected about {expected}"
