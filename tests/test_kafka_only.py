"""What only Apache Kafka shows: a corrupt batch refused, a topic's own size limit, broker timestamps,
quotas, and idempotence against real producer state (duplicates, sequence errors, epoch bumps).

Tansu accepts a batch whose CRC fails, records of any size and keeps CreateTime whatever the topic
says, and the librdkafka mock keeps no producer state (docs/brokers.md), so these paths are tested
here, against the real broker, and read back with confluent-kafka. The relay in front of one node
(``relayed_kafka``) damages, replays or records requests and answers on the wire."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fetch_raw import fetch_raw_batches
from helpers import consume_all
from kprod import KprodError, Producer, RecordTooLargeError
from kprod.kafka_broker import KafkaCluster, java_problem
from relay import Relay, RelayedResponse

_PRODUCE = 0
_CORRUPT_MESSAGE = 2
_OUT_OF_ORDER_SEQUENCE_NUMBER = 45

pytestmark = [pytest.mark.timeout(180), pytest.mark.kafka]


@pytest.fixture(scope="module")
def relayed_kafka_node() -> Iterator[tuple[KafkaCluster, Relay]]:
    """One Kafka node that names a relay's port in Metadata: every client connection crosses it."""
    problem = java_problem()
    if problem is not None:
        pytest.skip(problem)
    relay = Relay(upstream_port=1).start()
    cluster = KafkaCluster(advertised_ports={"PLAINTEXT": relay.port})
    try:
        cluster.start()
        relay.upstream_port = cluster.port
        yield cluster, relay
    finally:
        cluster.stop()
        relay.stop()


@pytest.fixture
def relayed_kafka(relayed_kafka_node: tuple[KafkaCluster, Relay]) -> Iterator[tuple[KafkaCluster, Relay]]:
    """The relayed node, every fault off again after the test."""
    yield relayed_kafka_node
    relayed_kafka_node[1].clear()


def _partition_answers(response: RelayedResponse) -> list[tuple[str, int, int, int]]:
    """(topic, partition, error code, base offset) of each partition in a recorded Produce answer."""
    return [
        (topic.name, part.index, part.error_code, part.base_offset)
        for topic in response.produce().topics
        for part in topic.partitions
    ]


def test_a_batch_corrupted_on_the_wire_is_refused_and_resent_intact(
    relayed_kafka: tuple[KafkaCluster, Relay],
) -> None:
    """The relay flips a byte in the last batch of one Produce request that carries a batch for
    each of three partitions. The broker checks CRCs: that batch alone is refused (CORRUPT_MESSAGE,
    retriable), the request's other batches are written, and kprod resends the refused batch from
    its own intact copy. Every record is in the log once, in order, and passes the consumer's CRC check."""
    cluster, relay = relayed_kafka
    topic = "corrupt"
    cluster.create_topic(topic, partitions=3)
    values = [b"%05d-" % i + b"x" * 50 for i in range(3_000)]
    corrupted_before = relay.stats["corrupted"]
    # Batches that neither fill nor linger out: flush() sends the three together, in one request.
    with Producer(
        {"bootstrap.servers": relay.address}, linger_ms=60_000, batch_size=1 << 20, compression_type="none"
    ) as producer:
        for partition in range(3):  # each partition's first batch goes alone: get that done first
            producer.send(topic, b"warm-up", partition=partition)
        producer.flush(timeout=30)
        relay.record_responses()
        relay.corrupt_requests(count=1)
        futures = [producer.send(topic, v, partition=i % 3) for i, v in enumerate(values)]
        producer.flush(timeout=60)
        errors = [f.exception(timeout=0) for f in futures]
        metrics = producer.metrics()
    assert relay.stats["corrupted"] == corrupted_before + 1
    answers = [_partition_answers(a) for a in relay.responses(_PRODUCE)]
    first = sorted(code for _, _, code, _ in answers[0])
    assert first == [0, 0, _CORRUPT_MESSAGE], (
        f"one batch of the request refused, the others written: {answers}"
    )
    assert errors == [None] * len(values), next(e for e in errors if e is not None)
    assert metrics["record-retry-total"] == 1, "the refused batch, and only it, must have been sent again"
    read = consume_all(cluster.bootstrap_servers, topic, 3, len(values) + 3, timeout_s=60, linger_s=1.0)
    for partition in range(3):
        got = [r.value for r in read if r.partition == partition]
        assert got == [b"warm-up", *values[partition::3]], (
            f"partition {partition}: each record once, in order"
        )


def test_an_unreadable_produce_answer_is_retried_at_once(relayed_kafka: tuple[KafkaCluster, Relay]) -> None:
    """One Produce answer cut short on the wire: the connection is dropped and that request's
    batches go again at once (not after request.timeout.ms or delivery.timeout.ms); the resend is
    de-duplicated by idempotence, nothing is lost or reordered."""
    cluster, relay = relayed_kafka
    topic = "mangled"
    cluster.create_topic(topic, partitions=1)
    values = [b"%05d" % i for i in range(2_000)]
    with Producer({"bootstrap.servers": relay.address}, linger_ms=5, request_timeout_ms=30_000) as producer:
        producer.send(topic, b"warm-up").result(timeout=30)
        relay.mangle_responses(count=1)
        started = time.monotonic()
        futures = [producer.send(topic, v) for v in values]
        producer.flush(timeout=60)
        took = time.monotonic() - started
    assert relay.stats["mangled"] == 1
    assert [f.exception(timeout=0) for f in futures] == [None] * len(values)
    assert took < 5, f"the batches of the unreadable answer waited {took:.1f} s (request.timeout.ms is 30 s)"
    read = consume_all(cluster.bootstrap_servers, topic, 1, len(values) + 1, timeout_s=60, linger_s=1.0)
    assert [r.value for r in read] == [b"warm-up", *values]


def test_a_replayed_produce_request_is_answered_with_the_original_offsets(
    relayed_kafka: tuple[KafkaCluster, Relay],
) -> None:
    """Duplicate suppression with real producer state: the relay sends one Produce request twice.
    Kafka writes the first copy and answers the second NONE with the first copy's offsets (its
    producer state keeps the last five batches of each producer and partition), so kprod, which
    gets the second answer, reports the offsets the records have in the log, where each is once."""
    cluster, relay = relayed_kafka
    topic = "replayed"
    cluster.create_topic(topic, partitions=2)
    values = [b"%05d-" % i + b"r" * 40 for i in range(1_000)]
    replays_before = len(relay.replays)
    with Producer({"bootstrap.servers": relay.address}, linger_ms=5, batch_size=2_048) as producer:
        for partition in (0, 1):  # pipelining starts once each partition has producer state
            producer.send(topic, b"warm-up", partition=partition).result(timeout=30)
        relay.replay_requests(1)
        futures = [producer.send(topic, v, partition=i % 2) for i, v in enumerate(values)]
        producer.flush(timeout=60)
        errors = [f.exception(timeout=0) for f in futures]
        metrics = producer.metrics()
    assert errors == [None] * len(values), next(e for e in errors if e is not None)
    assert len(relay.replays) == replays_before + 1
    replay = relay.replays[-1]
    original, duplicate = _partition_answers(replay.original), _partition_answers(replay.duplicate)
    assert original and all(code == 0 and offset >= 0 for _, _, code, offset in original), original
    assert duplicate == original, "Kafka answers a duplicate NONE with the offsets it wrote it at"
    assert (
        metrics["record-retry-total"],
        metrics["producer-epoch-bumps"],
        metrics["producer-id-resets"],
    ) == (
        0,
        0,
        0,
    )
    read = consume_all(cluster.bootstrap_servers, topic, 2, len(values) + 2, timeout_s=60, linger_s=1.0)
    for partition in (0, 1):
        got = [r.value for r in read if r.partition == partition]
        assert got == [b"warm-up", *values[partition::2]], (
            f"partition {partition}: each record once, in order"
        )
    offsets = {(r.partition, r.value): r.offset for r in read}
    reported = [(md.partition, md.offset) for md in (f.result(timeout=0) for f in futures)]
    assert reported == [(i % 2, offsets[(i % 2, v)]) for i, v in enumerate(values)], (
        "RecordMetadata must carry the offsets in the log, the duplicated batch's too"
    )


def test_batches_behind_a_refused_one_are_out_of_order_and_follow_it(
    relayed_kafka: tuple[KafkaCluster, Relay],
) -> None:
    """A sequence error on purpose: the relay corrupts one Produce request (CORRUPT_MESSAGE) and
    holds every Produce answer 200 ms, so the requests pipelined behind it for the same partition
    reach the broker after the refused batch and find a gap: OUT_OF_ORDER_SEQUENCE_NUMBER. As in
    Java, they are retried after the refused batch without an epoch bump (the gap is a batch that
    will be resent, not a lost one), and every record lands once, in order."""
    cluster, relay = relayed_kafka
    topic = "out-of-order"
    cluster.create_topic(topic, partitions=1)
    values = [b"%05d-" % i + b"o" * 60 for i in range(600)]
    with Producer(
        {"bootstrap.servers": relay.address}, linger_ms=0, batch_size=1_024, compression_type="none"
    ) as producer:
        producer.send(topic, b"warm-up").result(timeout=30)
        relay.record_responses()
        relay.delay_responses(200, api_keys={_PRODUCE})
        relay.corrupt_requests(count=1)
        futures = [producer.send(topic, v) for v in values]
        producer.flush(timeout=60)
        errors = [f.exception(timeout=0) for f in futures]
        metrics = producer.metrics()
    codes = [code for answer in relay.responses(_PRODUCE) for _, _, code, _ in _partition_answers(answer)]
    assert codes.count(_CORRUPT_MESSAGE) == 1, codes
    assert codes.count(_OUT_OF_ORDER_SEQUENCE_NUMBER) >= 1, (
        f"no batch was in flight behind the refused one: {codes}"
    )
    assert errors == [None] * len(values), next(e for e in errors if e is not None)
    assert (metrics["producer-epoch-bumps"], metrics["producer-id-resets"]) == (0, 0), metrics
    read = consume_all(cluster.bootstrap_servers, topic, 1, len(values) + 1, timeout_s=60, linger_s=1.0)
    assert [r.value for r in read] == [b"warm-up", *values], "each record once, in order"


def test_batches_over_the_topics_max_message_bytes_are_split(kafka: KafkaCluster) -> None:
    topic = "split"
    # The topic takes batches of at most 4 KB; the producer fills 64 KB batches.
    kafka.create_topic(topic, partitions=2, configs={"max.message.bytes": "4096"})
    values = [b"%05d-" % i + bytes(range(200)) for i in range(3_000)]
    with Producer(
        {"bootstrap.servers": kafka.bootstrap_servers},
        batch_size=65_536,
        linger_ms=50,
        compression_type="none",
    ) as producer:
        futures = [producer.send(topic, v, key=b"k%d" % (i % 2)) for i, v in enumerate(values)]
        producer.flush(timeout=60)
        errors = [f.exception(timeout=0) for f in futures]
        splits = producer.metrics()["batch-split-total"]
    assert errors == [None] * len(values), next(e for e in errors if e is not None)
    assert splits >= 1, "MESSAGE_TOO_LARGE should have split batches (KIP-126)"
    read = consume_all(kafka.bootstrap_servers, topic, 2, len(values), timeout_s=60, linger_s=1.0)
    assert sorted(r.value or b"" for r in read) == sorted(values), "every record exactly once"
    for partition in (0, 1):
        got = [r.value or b"" for r in read if r.partition == partition]
        assert got == sorted(got), f"partition {partition} is out of send order"


def test_a_record_over_the_topics_limit_fails_alone_naming_the_setting(kafka: KafkaCluster) -> None:
    topic = "too-large"
    kafka.create_topic(topic, partitions=1, configs={"max.message.bytes": "2000"})
    with Producer(
        {"bootstrap.servers": kafka.bootstrap_servers}, linger_ms=0, compression_type="none"
    ) as producer:
        before = producer.send(topic, b"before")
        producer.flush(timeout=30)
        big = producer.send(topic, b"x" * 5_000)
        after = producer.send(topic, b"after")
        producer.flush(timeout=30)
        error = big.exception(timeout=0)
        assert before.exception(timeout=0) is None and after.exception(timeout=0) is None
        # The failed record left a gap in the partition's sequences: KIP-360, the Java way. The
        # producer id stays, the epoch goes up by one, and Apache Kafka takes the new epoch.
        metrics = producer.metrics()
        assert (metrics["producer-epoch-bumps"], metrics["producer-id-resets"]) == (1, 0), metrics
        assert metrics["producer-epoch"] == 1
    assert isinstance(error, KprodError), error
    assert "MESSAGE_TOO_LARGE" in str(error) or isinstance(error, RecordTooLargeError), str(error)
    assert "max.message.bytes" in str(error), f"the error should name the topic setting: {error}"
    assert [
        r.value for r in consume_all(kafka.bootstrap_servers, topic, 1, 2, timeout_s=30, linger_s=0.5)
    ] == [
        b"before",
        b"after",
    ]


def test_an_acks_zero_request_kafka_refuses_closes_the_connection_and_is_reported(
    kafka: KafkaCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Kafka has no answer for an acks=0 request it refuses: it closes the connection. kprod says
    so (a WARNING naming the broker and the setting) and goes on with a new connection."""
    topic = "acks0-refused"
    kafka.create_topic(topic, partitions=1, configs={"max.message.bytes": "2000"})
    caplog.set_level(logging.WARNING, logger="kprod")
    with Producer(
        {"bootstrap.servers": kafka.bootstrap_servers}, acks=0, linger_ms=0, compression_type="none"
    ) as producer:
        producer.send(topic, b"before").result(timeout=30)
        time.sleep(0.5)  # "before" is read alone, before the refused one
        producer.send(topic, b"x" * 5_000).result(timeout=30)  # MESSAGE_TOO_LARGE: no answer, a close
        deadline = time.monotonic() + 30
        while not any("closed the connection" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no warning about the closed connection"
            time.sleep(0.05)
        after = [producer.send(topic, b"after-%d" % i) for i in range(100)]
        producer.flush(timeout=30)
        assert all(f.exception(timeout=0) is None for f in after)
    warning = next(r.getMessage() for r in caplog.records if "closed the connection" in r.getMessage())
    assert "acks=0" in warning and "acks=1 or all" in warning, warning
    read = consume_all(kafka.bootstrap_servers, topic, 1, 101, timeout_s=30, linger_s=0.5)
    assert [r.value for r in read] == [b"before"] + [b"after-%d" % i for i in range(100)]


def test_log_append_time_topics_report_the_brokers_timestamp(kafka: KafkaCluster) -> None:
    """The broker stamps a LogAppendTime topic's batches with its own clock and says so in the
    Produce answer (log_append_time_ms): every record of a batch gets that time, not the create time."""
    topic = "append-time"
    kafka.create_topic(topic, partitions=1, configs={"message.timestamp.type": "LogAppendTime"})
    create_time = 1_000_000  # 1970: far from any broker clock
    with Producer({"bootstrap.servers": kafka.bootstrap_servers}, linger_ms=50) as producer:
        started_ms = int(time.time() * 1000)
        futures = [producer.send(topic, b"v%d" % i, timestamp=create_time + i) for i in range(20)]
        metadata = [f.result(timeout=30) for f in futures]
        ended_ms = int(time.time() * 1000)
    stamps = {md.timestamp for md in metadata}
    assert all(started_ms - 1_000 <= ts <= ended_ms + 1_000 for ts in stamps), (stamps, started_ms, ended_ms)
    read = consume_all(kafka.bootstrap_servers, topic, 1, 20, timeout_s=30)
    by_offset: dict[int, Any] = {r.offset: r.timestamp_ms for r in read}
    assert [md.timestamp for md in metadata] == [by_offset[md.offset] for md in metadata], (
        "RecordMetadata must carry the log-append time the broker stored"
    )
    # As stored: batches flagged LogAppendTime (attributes bit 3) whose max timestamp is the broker's
    # time; several records share a batch, and each of them reports that batch's time.
    batches = fetch_raw_batches(kafka.bootstrap_servers, topic, 0)
    assert all(b.attributes & 0x08 for b in batches), [b.attributes for b in batches]
    assert max(b.record_count for b in batches) > 1, "the records should have shared a batch"
    for md in metadata:
        (batch,) = [b for b in batches if b.base_offset <= md.offset < b.next_offset]
        assert md.timestamp == batch.max_timestamp_ms, (md, batch.max_timestamp_ms)


def test_a_byte_rate_quota_throttles_and_is_honoured_and_reported(
    relayed_kafka: tuple[KafkaCluster, Relay],
) -> None:
    """KIP-219: the broker answers at once with throttle_time_ms; the client must not send on that
    connection before it has passed. The relay timestamps every Produce answer as it leaves the
    broker and every Produce request as it arrives: after an answer that says "throttled for T ms",
    the next request on its connection must come at least T ms later (one request in flight, so no
    request can have crossed the answer on the wire). The achieved rate stays near the quota, and
    metrics show the throttling."""
    from kio.static.primitive import f64

    from kprod.protocol.messages import _request

    cluster, relay = relayed_kafka
    rate = 250_000  # bytes/s for this client.id only
    alter_client_quotas = 49  # api key
    entry = _request(
        alter_client_quotas,
        1,
        "EntryData",
        entity=(
            _request(
                alter_client_quotas, 1, "EntityData", entity_type="client-id", entity_name="throttled-client"
            ),
        ),
        ops=(
            _request(
                alter_client_quotas,
                1,
                "OpData",
                key="producer_byte_rate",
                value=f64(float(rate)),
                remove=False,
            ),
        ),
    )
    answer = cluster.request(
        _request(alter_client_quotas, 1, "AlterClientQuotasRequest", entries=(entry,), validate_only=False)
    )
    assert [int(e.error_code) for e in answer.entries] == [0]
    topic = "quota"
    cluster.create_topic(topic, partitions=1)
    payload = b"q" * 1_000
    count = 1_000  # 1 MB: about 4 s at the quota (the launcher sets quota.window.num=2)
    time.sleep(1.5)  # quotas reach the broker's quota manager through the metadata log
    relay.record_responses()
    with Producer(
        {"bootstrap.servers": relay.address, "client.id": "throttled-client"},
        linger_ms=5,
        compression_type="none",
        max_in_flight_requests_per_connection=1,
    ) as producer:
        started = time.monotonic()
        futures = [producer.send(topic, payload) for _ in range(count)]
        producer.flush(timeout=120)
        elapsed = time.monotonic() - started
        metrics = producer.metrics()
    assert all(f.exception(timeout=0) is None for f in futures)
    achieved = count * len(payload) / elapsed
    assert metrics["produce-throttle-time-max"] > 0, metrics
    assert metrics["produce-throttled-responses"] > 0
    assert metrics["produce-throttle-time-avg"] > 0
    # The broker's quota window lets the first burst through; over the run the rate stays near it,
    # and waiting out the throttle does not slow the producer far below it either.
    assert 0.3 * rate < achieved < 2.5 * rate, f"{achieved:.0f} B/s against a quota of {rate} B/s"
    answers = {(a.connection, a.correlation_id): a for a in relay.responses(_PRODUCE)}
    requests = [r for r in relay.requests(_PRODUCE) if r.at >= started]
    throttled = 0
    for request, following in itertools.pairwise(requests):
        reply = answers.get((request.connection, request.correlation_id))
        if reply is None or following.connection != request.connection:
            continue
        throttle_ms = reply.produce().throttle_time_ms
        if throttle_ms > 0:
            throttled += 1
            waited_ms = (following.at - reply.at) * 1000
            # 2 ms of slack: kprod counts whole milliseconds.
            assert waited_ms >= throttle_ms - 2, (
                f"request {following.correlation_id} went {waited_ms:.1f} ms after an answer "
                f"throttled for {throttle_ms} ms"
            )
    assert throttled > 0, "no answer in the run was throttled"
    assert len(consume_all(cluster.bootstrap_servers, topic, 1, count, timeout_s=60)) == count


def test_expired_producer_state_is_harmless(tmp_path: Any) -> None:
    """The broker forgets an idle producer (producer.id.expiration.ms). Kafka 4 then takes the next
    batch with any sequence (ProducerAppendInfo: no state, no check) instead of answering
    UNKNOWN_PRODUCER_ID: the producer goes on under the same id, nothing lost or repeated."""
    problem = java_problem()
    if problem is not None:
        pytest.skip(problem)
    config = {"producer.id.expiration.ms": "1000", "producer.id.expiration.check.interval.ms": "200"}
    with KafkaCluster(broker_config=config, directory=tmp_path) as cluster:
        cluster.create_topic("expiring", partitions=1)
        with Producer({"bootstrap.servers": cluster.bootstrap_servers}, linger_ms=0) as producer:
            first = [producer.send("expiring", b"a%d" % i) for i in range(100)]
            producer.flush(timeout=30)
            time.sleep(3)  # past producer.id.expiration.ms and a few expiration checks
            second = [producer.send("expiring", b"b%d" % i) for i in range(100)]
            producer.flush(timeout=30)
            metrics = producer.metrics()
        assert all(f.exception(timeout=0) is None for f in first + second)
        assert (
            metrics["producer-id-resets"],
            metrics["producer-epoch-bumps"],
            metrics["record-retry-total"],
        ) == (0, 0, 0)
        read = consume_all(cluster.bootstrap_servers, "expiring", 1, 200, timeout_s=30, linger_s=1.0)
        assert [r.value for r in read] == [b"a%d" % i for i in range(100)] + [b"b%d" % i for i in range(100)]
