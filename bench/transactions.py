#!/usr/bin/env python3
"""Transactional throughput and commit latency: kprod, confluent-kafka and the Java producer.

    python bench/transactions.py                   # 200,000 records per run (a few minutes)
    python bench/transactions.py --records 50000   # quicker
    python bench/transactions.py --offsets --per-txn 200,1000   # consume-transform-produce shaped

One Apache Kafka node (kprod.kafka_broker, JVM flags for throughput) and one topic of 6 partitions
per run; kprod runs three times: with the cluster's transactions v2 and its defaults (the next
transaction's first batches wait for the previous one's markers, asking the coordinator), with v2
and ``kprod.transaction.await.previous=false`` (they go at once, as Java's do), and with
``kprod.transaction.version=1`` (AddPartitionsToTxn from the client, as librdkafka); 100-byte
records without keys, acks=all, linger.ms=5, in transactions of 1,000 and of 10,000 records. kprod and confluent-kafka run the same loop (send N, commit, repeat) in this
process, one after the other; commit latency is the time ``commit_transaction()`` takes (it
includes sending the transaction's last records). ``--batch-size`` gives every client the same
``batch.size`` (by default each keeps its own: 131072 for kprod, 16384 for Java, 1000000 for librdkafka,
which matters here: see docs/transactions.md). The Java producer is ProducerPerformance with
``--transactional-id``; it commits by time (``--transaction-duration-ms``), so its row gives the
duration that makes transactions of about the same size and reports no commit latency. The table
is printed and, with ``--out``, written as markdown.
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from kprod import ConsumerGroupMetadata, Producer  # noqa: E402
from kprod.kafka_broker import KafkaCluster, _java, kafka_jars  # noqa: E402

THROUGHPUT_JVM = ("-Xms512m", "-Xmx1g", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError")
PAYLOAD = b"x" * 100
BATCH_SIZE: int | None = None
OFFSETS = False
"""--offsets: every transaction also commits consumer offsets, as a consume-transform-produce loop does."""
OFFSETS_TOPIC = "txn-bench-input"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def _batch_size() -> dict[str, int]:
    """``batch.size`` for every client when ``--batch-size`` is given, else each client's default."""
    return {} if BATCH_SIZE is None else {"batch.size": BATCH_SIZE}


def run_kprod(
    bootstrap: str,
    topic: str,
    records: int,
    per_txn: int,
    transaction_version: str = "auto",
    await_previous: bool = True,
) -> dict[str, Any]:
    extra = {"kprod.transaction.await.previous": await_previous}
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"bench-kprod-{uuid.uuid4().hex[:6]}",
            "linger.ms": 5,
            "kprod.transaction.version": transaction_version,
            **extra,
            **_batch_size(),
        }
    )
    commits: list[float] = []
    group = ConsumerGroupMetadata(f"bench-group-{uuid.uuid4().hex[:6]}")
    try:
        producer.init_transactions()
        send = producer.send
        started = time.perf_counter()
        for first in range(0, records, per_txn):
            producer.begin_transaction()
            for _ in range(min(per_txn, records - first)):
                send(topic, PAYLOAD)
            if OFFSETS:
                producer.send_offsets_to_transaction({(OFFSETS_TOPIC, 0): first + per_txn}, group)
            t = time.perf_counter()
            producer.commit_transaction()
            commits.append((time.perf_counter() - t) * 1000)
        elapsed = time.perf_counter() - started
    finally:
        producer.close(10)
    return {"rate": records / elapsed, "commits": commits}


def run_confluent(bootstrap: str, topic: str, records: int, per_txn: int) -> dict[str, Any]:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka import Producer as CkProducer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-group-{uuid.uuid4().hex[:6]}"})
    group = consumer.consumer_group_metadata()

    producer = CkProducer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"bench-ck-{uuid.uuid4().hex[:6]}",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            **_batch_size(),
        }
    )
    producer.init_transactions(60)
    commits: list[float] = []
    produce, poll = producer.produce, producer.poll
    started = time.perf_counter()
    for first in range(0, records, per_txn):
        producer.begin_transaction()
        for i in range(min(per_txn, records - first)):
            while True:
                try:
                    produce(topic, PAYLOAD)
                    break
                except BufferError:
                    poll(0.001)
            if i % 1000 == 0:
                poll(0)
        if OFFSETS:
            producer.send_offsets_to_transaction([TopicPartition(OFFSETS_TOPIC, 0, first + per_txn)], group, 60)
        t = time.perf_counter()
        producer.commit_transaction(60)
        commits.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - started
    consumer.close()
    return {"rate": records / elapsed, "commits": commits}


def run_java(bootstrap: str, topic: str, records: int, duration_ms: int) -> dict[str, Any]:
    java = _java()
    assert java is not None
    out = subprocess.run(
        [
            java,
            "-Xmx512m",
            "-cp",
            f"{kafka_jars()}/*",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--record-size",
            "100",
            "--throughput",
            "-1",
            "--bootstrap-server",
            bootstrap,
            "--transactional-id",
            f"bench-java-{uuid.uuid4().hex[:6]}",
            "--transaction-duration-ms",
            str(duration_ms),
            "--command-property",
            "acks=all",
            "linger.ms=5",
            *(f"{k}={v}" for k, v in _batch_size().items()),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    match = re.search(r"^\d+ records sent, ([\d.]+) records/sec", out, re.MULTILINE)
    assert match is not None, out
    return {"rate": float(match.group(1)), "commits": []}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="batch.size for every client (default: each client's own, 131072 for kprod, 16384 for Java, "
        "1000000 for librdkafka)",
    )
    parser.add_argument(
        "--offsets",
        action="store_true",
        help="every transaction also commits consumer offsets (send_offsets_to_transaction after its "
        "records, as a consume-transform-produce loop does); the Java producer is left out",
    )
    parser.add_argument(
        "--per-txn", default="1000,10000", help="records per transaction, comma-separated (default 1000,10000)"
    )
    args = parser.parse_args()
    global BATCH_SIZE, OFFSETS
    BATCH_SIZE = args.batch_size
    OFFSETS = args.offsets
    rows: list[str] = [
        "| records per transaction | client | records/s | ratio to confluent-kafka | commit p50 | commit p99 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    with KafkaCluster(jvm_options=THROUGHPUT_JVM) as kafka:
        kafka.create_topic(OFFSETS_TOPIC, partitions=1)
        # Warm the broker's JIT with every client first: whichever ran first used to pay for it.
        for name, warm in (("kprod", run_kprod), ("confluent-kafka", run_confluent)):
            kafka.create_topic(f"txn-warmup-{name}", partitions=6)
            warm(kafka.bootstrap_servers, f"txn-warmup-{name}", max(10_000, args.records // 5), 1_000)
        for per_txn in (int(n) for n in args.per_txn.split(",")):
            results: dict[str, dict[str, Any]] = {}
            runs: tuple[tuple[str, Any], ...] = (
                ("kprod (transactions v2, the default)", run_kprod),
                (
                    "kprod (v2, kprod.transaction.await.previous=false, as Java)",
                    functools.partial(run_kprod, await_previous=False),
                ),
                (
                    "kprod (kprod.transaction.version=1)",
                    functools.partial(run_kprod, transaction_version="1"),
                ),
                ("confluent-kafka", run_confluent),
            )
            for client, fn in runs:
                topic = f"txn-bench-{client.split()[0]}-{len(results)}-{per_txn}"
                kafka.create_topic(topic, partitions=6)
                results[client] = fn(kafka.bootstrap_servers, topic, args.records, per_txn)
                print(f"{per_txn:>6} {client:<16} {results[client]['rate']:>10,.0f} rec/s", flush=True)
            ck_rate = results["confluent-kafka"]["rate"]
            if not OFFSETS:
                duration_ms = max(1, int(per_txn / ck_rate * 1000))
                topic = f"txn-bench-java-{per_txn}"
                kafka.create_topic(topic, partitions=6)
                results[f"java (commit every {duration_ms} ms)"] = run_java(
                    kafka.bootstrap_servers, topic, args.records, duration_ms
                )
            for client, result in results.items():
                commits = result["commits"]
                p50 = f"{statistics.median(commits):.1f} ms" if commits else "n/a"
                p99 = f"{percentile(commits, 0.99):.1f} ms" if commits else "n/a"
                rows.append(
                    f"| {per_txn:,} | {client} | {result['rate']:,.0f} | {result['rate'] / ck_rate:.2f} | {p50} | {p99} |"
                )
    if BATCH_SIZE is not None:
        rows.insert(0, f"batch.size={BATCH_SIZE} for every client\n")
    if OFFSETS:
        rows.insert(0, "every transaction also commits consumer offsets\n")
    table = "\n".join(rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
