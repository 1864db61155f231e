"""Transactions end to end on Apache Kafka (Tansu shows aborted records to read_committed readers,
so only the real broker can decide). Every outcome is read back by confluent-kafka with
``isolation.level=read_committed`` (and ``read_uncommitted`` where a test must show that aborted
records were written and then hidden)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from helpers import consume_all
from kprod import (
    AsyncProducer,
    ConfigError,
    ConsumerGroupMetadata,
    InvalidTxnStateError,
    KafkaTimeoutError,
    KprodError,
    Producer,
    ProducerFencedError,
)
from kprod.kafka_broker import KafkaCluster

pytestmark = pytest.mark.timeout(180)

COMMITTED: dict[str, str | int | bool] = {"isolation.level": "read_committed"}
UNCOMMITTED: dict[str, str | int | bool] = {"isolation.level": "read_uncommitted"}


@contextmanager
def transactional(kafka: KafkaCluster, txn_id: str, **settings: Any) -> Iterator[Producer]:
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": txn_id}, **settings
    )
    try:
        producer.init_transactions(timeout=60)
        yield producer
    finally:
        producer.close(timeout=10)


def values_of(
    kafka: KafkaCluster, topic: str, partitions: int, expected: int, config: dict[str, Any]
) -> list[bytes]:
    records = consume_all(
        kafka.bootstrap_servers, topic, partitions, expected, timeout_s=60, linger_s=1.0, config=config
    )
    return [r.value for r in records if r.value is not None]


@pytest.mark.parametrize("version", ["auto", "1"])
def test_committed_transactions_are_all_visible_in_order(kafka: KafkaCluster, version: str) -> None:
    """Under the cluster's transactions v2 (Kafka 4.4) and under kprod.transaction.version=1
    (AddPartitionsToTxn from the client, Produce v11, EndTxn v4)."""
    topic = f"txn-commit-v{version}"
    kafka.create_topic(topic, partitions=6)
    with transactional(kafka, f"txn-commit-{version}", kprod_transaction_version=version) as producer:
        for t in range(10):
            producer.begin_transaction()
            for i in range(1_000):
                producer.send(topic, b"%d-%04d" % (t, i), key=b"k%d" % (i % 50))
            producer.commit_transaction(timeout=60)
        assert producer.metrics()["transaction-version"] == (2 if version == "auto" else 1)
    values = values_of(kafka, topic, 6, 10_000, COMMITTED)
    assert len(values) == 10_000 and len(set(values)) == 10_000, "each committed record exactly once"
    records = consume_all(kafka.bootstrap_servers, topic, 6, 10_000, timeout_s=60, config=COMMITTED)
    by_key: dict[bytes | None, list[bytes]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(r.value or b"")
    assert all(vs == sorted(vs) for vs in by_key.values()), "per-key order is send order"


@pytest.mark.parametrize("version", ["auto", "1"])
def test_aborted_records_are_written_but_never_visible_to_read_committed(
    kafka: KafkaCluster, version: str
) -> None:
    topic = f"txn-abort-v{version}"
    kafka.create_topic(topic, partitions=3)
    with transactional(kafka, f"txn-abort-{version}", kprod_transaction_version=version) as producer:
        for t in range(4):
            producer.begin_transaction()
            futures = [producer.send(topic, b"%d-%03d" % (t, i)) for i in range(300)]
            if t % 2:
                producer.flush(timeout=30)  # written to the log before the abort
                assert all(f.exception(timeout=0) is None for f in futures)
                producer.abort_transaction(timeout=60)
            else:
                producer.commit_transaction(timeout=60)
    committed = values_of(kafka, topic, 3, 600, COMMITTED)
    assert sorted(committed) == sorted(b"%d-%03d" % (t, i) for t in (0, 2) for i in range(300))
    everything = values_of(kafka, topic, 3, 1_200, UNCOMMITTED)
    assert len(everything) == 1_200, "the aborted records were in the log, hidden by the abort markers"


def test_a_non_transactional_producer_interleaves_freely(kafka: KafkaCluster) -> None:
    topic = "txn-mixed"
    kafka.create_topic(topic, partitions=3)
    with (
        transactional(kafka, "txn-mixed-1") as txn,
        Producer({"bootstrap.servers": kafka.bootstrap_servers}) as plain,
    ):
        txn.begin_transaction()
        for i in range(200):
            txn.send(topic, b"txn-%03d" % i)
            plain.send(topic, b"plain-%03d" % i)
        plain.flush(timeout=30)
        txn.abort_transaction(timeout=60)
        with txn.transaction(timeout=60):
            for i in range(200):
                txn.send(topic, b"txn2-%03d" % i)
    values = values_of(kafka, topic, 3, 400, COMMITTED)
    assert Counter(v.split(b"-")[0] for v in values) == {b"plain": 200, b"txn2": 200}


def test_a_second_producer_with_the_same_id_fences_the_first(kafka: KafkaCluster) -> None:
    topic = "txn-fence"
    kafka.create_topic(topic, partitions=2)
    first = Producer({"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": "txn-fence-1"})
    try:
        first.init_transactions(timeout=60)
        first.begin_transaction()
        for i in range(100):
            first.send(topic, b"zombie-%d" % i)
        first.flush(timeout=30)
        with transactional(kafka, "txn-fence-1") as second:  # init_transactions fences the first
            with second.transaction(timeout=60):
                second.send(topic, b"successor")
            started = time.monotonic()
            with pytest.raises(ProducerFencedError, match="fenced") as info:
                first.commit_transaction(timeout=30)
            assert time.monotonic() - started < 10, "fencing is fatal at once, not retried"
            assert "txn-fence-1" in str(info.value)
            with pytest.raises(ProducerFencedError):
                first.begin_transaction()
    finally:
        first.close(timeout=5)
    assert values_of(kafka, topic, 2, 1, COMMITTED) == [b"successor"]


def test_a_failed_record_makes_the_commit_fail_then_abort_recovers(kafka: KafkaCluster) -> None:
    topic = "txn-abortable"
    kafka.create_topic(topic, partitions=1, configs={"max.message.bytes": "2000"})
    with transactional(kafka, "txn-abortable-1", compression_type="none", linger_ms=0) as producer:
        producer.begin_transaction()
        ok = producer.send(topic, b"fine")
        producer.flush(timeout=30)
        big = producer.send(topic, b"x" * 5_000)  # over the topic's max.message.bytes
        assert isinstance(big.exception(timeout=30), KprodError)
        with pytest.raises(KprodError):
            producer.commit_transaction(timeout=30)
        assert ok.exception(timeout=0) is None
        producer.abort_transaction(timeout=60)
        with producer.transaction(timeout=60):
            producer.send(topic, b"after")
    assert values_of(kafka, topic, 1, 1, COMMITTED) == [b"after"]


def test_offsets_commit_with_the_transaction_and_only_then(kafka: KafkaCluster) -> None:
    topic = "txn-offsets"
    kafka.create_topic(topic, partitions=2)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "txn-offsets-group"})
    try:
        metadata = consumer.consumer_group_metadata()
        with transactional(kafka, "txn-offsets-1") as producer:
            producer.begin_transaction()
            producer.send(topic, b"out")
            producer.send_offsets_to_transaction({(topic, 0): 11, (topic, 1): 22}, metadata, timeout=60)
            producer.abort_transaction(timeout=60)
            assert _committed(consumer, topic) == [-1001, -1001], "aborted offsets are not committed"
            producer.begin_transaction()
            producer.send(topic, b"out2")
            producer.send_offsets_to_transaction(
                [TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 7)], metadata
            )
            producer.commit_transaction(timeout=60)
        assert _committed(consumer, topic) == [5, 7]
    finally:
        consumer.close()


@pytest.mark.parametrize("await_previous", [True, False])
def test_back_to_back_v2_transactions_wait_for_the_previous_ones_markers(
    kafka: KafkaCluster, await_previous: bool
) -> None:
    """Under transactions v2 the coordinator answers EndTxn before writing the markers; the next
    transaction's first batches and offsets then wait until DescribeTransactions no longer says
    PrepareCommit/PrepareAbort (kprod.transaction.await.previous, the default), or go at once as
    Java's do. Either
    way every committed record is visible once, every aborted one never, and the last offsets
    committed are the last committed transaction's."""
    topic = f"txn-previous-{await_previous}"
    kafka.create_topic(topic, partitions=3)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": topic})
    expected: list[bytes] = []
    try:
        metadata = consumer.consumer_group_metadata()
        with transactional(
            kafka, topic, kprod_transaction_await_previous=await_previous
        ) as producer:
            assert producer.metrics()["transaction-version"] == 2
            started = time.monotonic()
            for t in range(40):
                producer.begin_transaction()
                if t % 2:  # offsets first: AddOffsetsToTxn is what meets the previous transaction
                    producer.send_offsets_to_transaction({(topic, 0): t, (topic, 1): t}, metadata, timeout=60)
                values = [b"%02d-%d" % (t, i) for i in range(10)]
                for value in values:
                    producer.send(topic, value)
                if t % 4 == 3:
                    producer.abort_transaction(timeout=60)
                else:
                    producer.commit_transaction(timeout=60)
                    expected += values
            elapsed_s = time.monotonic() - started
            metrics = producer.metrics()
        if await_previous:
            # Each of the first 39 EndTxn answers started the questions (the 40th may not have yet);
            # the markers take a few ms to write, so transactions found the previous one completing.
            assert metrics["txn-previous-checks-total"] >= 39, metrics
            assert metrics["txn-previous-waits-total"] >= 1, metrics
        else:
            assert metrics["txn-previous-checks-total"] == metrics["txn-previous-waits-total"] == 0
        assert elapsed_s < 30
        assert _committed(consumer, topic)[:2] == [37, 37], "t=39 aborted, t=38 sent no offsets"
    finally:
        consumer.close()
    values = values_of(kafka, topic, 3, len(expected), COMMITTED)
    assert sorted(values) == sorted(expected)


def _committed(consumer: Consumer, topic: str) -> list[int]:
    return [
        tp.offset
        for tp in consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=30)
    ]


def test_a_commit_that_timed_out_is_finished_by_calling_commit_again(kafka: KafkaCluster) -> None:
    topic = "txn-timeout"
    kafka.create_topic(topic, partitions=1)
    with transactional(kafka, "txn-timeout-1") as producer:
        producer.begin_transaction()
        for i in range(2_000):
            producer.send(topic, b"%04d" % i)
        with pytest.raises(KafkaTimeoutError, match="commit_transaction\\(\\) again") as info:
            producer.commit_transaction(timeout=0)
        assert info.value.stage == "transactions"
        with pytest.raises(InvalidTxnStateError, match="previous commit_transaction timed out"):
            producer.abort_transaction(timeout=1)
        producer.commit_transaction(timeout=60)
    assert len(values_of(kafka, topic, 1, 2_000, COMMITTED)) == 2_000


def test_calls_out_of_order_raise_clear_errors(kafka: KafkaCluster) -> None:
    kafka.create_topic("txn-order", partitions=1)
    with Producer({"bootstrap.servers": kafka.bootstrap_servers}) as plain:
        with pytest.raises(ConfigError, match=r"transactional\.id"):
            plain.begin_transaction()
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "transactional.id": "txn-order-1"})
    try:
        with pytest.raises(InvalidTxnStateError, match="init_transactions"):
            producer.begin_transaction()
        producer.init_transactions(timeout=60)
        with pytest.raises(InvalidTxnStateError, match="begin_transaction\\(\\) first"):
            producer.send("txn-order", b"outside")
        with pytest.raises(InvalidTxnStateError):
            producer.commit_transaction()
        with pytest.raises(InvalidTxnStateError, match="offsets="):
            producer.begin_transaction()
            producer.send_offsets_to_transaction({"txn-order": 1}, ConsumerGroupMetadata("g"))
    finally:
        producer.close(timeout=5)


def test_async_producer_transactions(kafka: KafkaCluster) -> None:
    topic = "txn-async"
    kafka.create_topic(topic, partitions=3)

    async def main() -> None:
        async with AsyncProducer(
            bootstrap_servers=kafka.bootstrap_servers, transactional_id="txn-async-1"
        ) as producer:
            await producer.init_transactions(timeout=60)
            async with producer.transaction(timeout=60):
                for i in range(500):
                    await producer.enqueue(topic, b"c-%03d" % i)
            with pytest.raises(RuntimeError, match="boom"):
                async with producer.transaction(timeout=60):
                    for i in range(500):
                        await producer.enqueue(topic, b"a-%03d" % i)
                    raise RuntimeError("boom")
            async with producer.transaction(timeout=60):
                await producer.send(topic, b"last")

    asyncio.run(main())
    values = values_of(kafka, topic, 3, 501, COMMITTED)
    assert sorted(values) == sorted([b"c-%03d" % i for i in range(500)] + [b"last"])


@pytest.mark.timeout(120)
def test_a_transaction_open_past_its_timeout_is_aborted_by_the_broker(kafka: KafkaCluster) -> None:
    topic = "txn-expired"
    kafka.create_topic(topic, partitions=1)
    with transactional(kafka, "txn-expired-1", transaction_timeout_ms=2_000) as producer:
        producer.begin_transaction()
        producer.send(topic, b"stalled")
        producer.flush(timeout=30)
        # The coordinator looks for expired transactions every 10 s
        # (transaction.abort.timed.out.transaction.cleanup.interval.ms) and aborts them.
        deadline = time.monotonic() + 40
        while not _aborted_by_broker(kafka, topic):
            assert time.monotonic() < deadline, "the broker did not abort the expired transaction"
            time.sleep(0.5)
        # Transactions v1: PRODUCER_FENCED; v2 (Kafka 4's default): INVALID_TXN_STATE. Fatal both.
        with pytest.raises(KprodError, match=r"longer than transaction\.timeout\.ms=2000"):
            producer.commit_transaction(timeout=30)
        with pytest.raises(KprodError):
            producer.begin_transaction()
    assert values_of(kafka, topic, 1, 0, COMMITTED) == []


def _aborted_by_broker(kafka: KafkaCluster, topic: str) -> bool:
    """True once the partition holds an abort marker: the high watermark passed the one record."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "txn-expired-watch"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return bool(high >= 2)
    finally:
        consumer.close()


def test_the_main_job_produces_in_transactions(kafka: KafkaCluster) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kprod.cli.main",
            "demo",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--num-records",
            "25000",
            "--transactional",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "3 committed (read back with isolation.level=read_committed)" in result.stdout, result.stdout
    assert "verified byte-exact 25,000" in result.stdout
