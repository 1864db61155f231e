"""Exactly-once consume-transform-produce with kprod and a confluent-kafka consumer.

Reads ``--input``, writes one transformed record per input record to ``--output`` (same partition
number, so per-partition order is easy to check), and commits the consumer's offsets *in the same
transaction* as the records they produced. Kill it at any point (even with SIGKILL) and start it
again: the new instance fences the old one (same ``transactional.id``), the open transaction is
aborted, and processing resumes from the last committed offsets, so every input record appears in
the output exactly once for a ``read_committed`` reader.

    python examples/exactly_once.py --bootstrap-servers 127.0.0.1:9092 --input in --output out \\
        --group enricher --transactional-id enricher-1

Stops after ``--idle-s`` seconds without input (default: never).
"""

from __future__ import annotations

import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from kprod import Producer, TransactionAbortableError


def transform(value: bytes) -> bytes:
    return b"out:" + value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--transactional-id", required=True)
    parser.add_argument("--batch", type=int, default=500, help="records per transaction (default 500)")
    parser.add_argument("--idle-s", type=float, default=0.0, help="stop after this long without input")
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            "group.id": args.group,
            # Static membership: a restarted instance takes its partitions back at once.
            "group.instance.id": args.transactional_id,
            "session.timeout.ms": 10_000,
            "enable.auto.commit": False,  # offsets are committed by the transaction
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {"bootstrap.servers": args.bootstrap_servers, "transactional.id": args.transactional_id}
    )
    producer.init_transactions()  # fences an earlier instance and aborts its open transaction
    consumer.subscribe([args.input])
    last_input = time.monotonic()
    try:
        while True:
            messages = consumer.consume(num_messages=args.batch, timeout=0.5)
            records = [m for m in messages if m.error() is None]
            if any(m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF for m in messages):
                print(f"consumer error: {[m.error() for m in messages if m.error()]}", file=sys.stderr)
            if not records:
                if args.idle_s and time.monotonic() - last_input > args.idle_s:
                    return 0
                continue
            last_input = time.monotonic()
            next_offsets: dict[tuple[str, int], int] = {}
            try:
                with producer.transaction():
                    for m in records:
                        value = m.value()
                        assert value is not None
                        producer.send(args.output, transform(value), key=m.key(), partition=m.partition())
                        next_offsets[(m.topic(), m.partition())] = m.offset() + 1
                    producer.send_offsets_to_transaction(next_offsets, consumer.consumer_group_metadata())
            except TransactionAbortableError:
                # Aborted: rewind to what the last committed transaction consumed, and go again.
                committed = consumer.committed([TopicPartition(t, p) for t, p in next_offsets], timeout=30)
                for tp in committed:
                    consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
    finally:
        producer.close(timeout=10)
        consumer.close()


if __name__ == "__main__":
    raise SystemExit(main())
