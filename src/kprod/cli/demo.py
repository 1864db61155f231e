"""``kprod demo``: the main job. Produce N records through the whole pipeline, read them back, summarize.

Uses the public API only (``kprod.Producer``). By default it starts the
embedded broker; ``--bootstrap-servers`` points it at any cluster. Records are
100-byte values (configurable), half keyed, every tenth with headers, every
record's content derived from its index so that the read-back (with
confluent-kafka's Consumer, ``check.crcs=true``, ``assign()``) can verify each
one byte for byte.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kprod import Producer, RecordMetadata

LATENCY_SAMPLE_EVERY = 20
TRANSACTION_RECORDS = 10_000
"""Records per transaction with --transactional."""
"""One record in this many reports its latency (a callback per record would cost throughput)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers", default=None, help="brokers to use (default: start the embedded Tansu broker)"
    )
    parser.add_argument("--topic", default=None, help="topic (default: a fresh kprod-demo-<id>)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the new topic (default 6)")
    parser.add_argument(
        "--num-records", type=int, default=1_000_000, help="records to produce (default 1,000,000)"
    )
    parser.add_argument("--record-size", type=int, default=100, help="value size in bytes (default 100)")
    parser.add_argument("--acks", default="all", help="acks: all, 1 or 0 (default all)")
    parser.add_argument("--linger-ms", type=int, default=5, help="linger.ms (default 5)")
    parser.add_argument("--compression", default="none", help="compression.type (default none)")
    parser.add_argument(
        "--serializer",
        choices=("bytes", "str", "json", "avro"),
        default="bytes",
        help="value.serializer for the records: bytes (default), str, json, or avro (schemaless, fastavro); "
        "the read-back decodes and checks each value",
    )
    parser.add_argument(
        "--producer-props", nargs="*", default=[], metavar="K=V", help="extra producer settings, Kafka names"
    )
    parser.add_argument(
        "--transactional",
        action="store_true",
        help="produce in transactions of 10,000 records (a fresh transactional.id) and read back with "
        "isolation.level=read_committed",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip reading the records back")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _key(i: int) -> bytes | None:
    return f"key-{i % 10_000:05d}".encode() if i % 2 == 0 else None


def _headers(i: int) -> list[tuple[str, bytes | None]] | None:
    return [("index", str(i).encode()), ("kind", b"demo")] if i % 10 == 0 else None


def _value(i: int, size: int, filler: bytes) -> bytes:
    prefix = b"%012d:" % i
    return (prefix + filler)[:size] if size >= len(prefix) else prefix[:size]


AVRO_SCHEMA = {
    "type": "record",
    "name": "DemoRecord",
    "namespace": "kprod.demo",
    "fields": [{"name": "index", "type": "long"}, {"name": "payload", "type": "string"}],
}


class _Codec:
    """What the demo sends for record i with a given serializer, and how the read-back checks it."""

    def __init__(self, kind: str, size: int, filler: bytes) -> None:
        self.kind = kind
        self.size = size
        self.filler = filler
        self.serializer: Any = None
        if kind == "str":
            self.serializer = "str"
        elif kind == "json":
            self.serializer = "json"
        elif kind == "avro":
            from kprod.serde.avro import AvroSerializer

            self.serializer = AvroSerializer(AVRO_SCHEMA)

    def obj(self, i: int) -> Any:
        raw = _value(i, self.size, self.filler)
        if self.kind == "bytes":
            return raw
        text = raw.decode()
        if self.kind == "str":
            return text
        return {"index": i, "payload": text[13:]}

    def index_of(self, value: bytes) -> int:
        """The record index a stored value encodes (raises ValueError if it does not parse)."""
        if self.kind in ("bytes", "str"):
            return int(value[:12])
        if self.kind == "json":
            import json

            return int(json.loads(value)["index"])
        import io

        from fastavro import parse_schema, schemaless_reader

        return int(schemaless_reader(io.BytesIO(value), parse_schema(AVRO_SCHEMA), None)["index"])  # type: ignore[call-overload,index]

    def expected(self, i: int) -> bytes:
        """The exact bytes record i must have on the wire."""
        if self.kind in ("bytes", "str"):
            return _value(i, self.size, self.filler)
        data: bytes = self.serializer_obj().serialize("", self.obj(i), None)
        return data

    def serializer_obj(self) -> Any:
        from kprod.serde import resolve_serializer

        if not hasattr(self, "_resolved"):
            self._resolved = resolve_serializer(self.serializer, setting="value.serializer")
        return self._resolved


@dataclass
class _Stats:
    acked: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run(args: argparse.Namespace) -> int:
    broker: Any = None
    bootstrap = args.bootstrap_servers
    topic = args.topic or f"kprod-demo-{uuid.uuid4().hex[:8]}"
    try:
        if bootstrap is None:
            from kprod.broker import EmbeddedBroker

            broker = EmbeddedBroker()
            broker.start()
            bootstrap = broker.bootstrap_servers
            broker.create_topic(topic, partitions=args.partitions)
            print(f"embedded broker (Tansu) on {bootstrap}; topic {topic} with {args.partitions} partitions")
        else:
            _create_topic_external(bootstrap, topic, args.partitions)
            print(f"cluster {bootstrap}; topic {topic}")
        return _produce_and_verify(args, bootstrap, topic)
    finally:
        if broker is not None:
            broker.stop()


def _create_topic_external(bootstrap: str, topic: str, partitions: int) -> None:
    try:
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
    except ImportError:  # the producer will auto-create it if the cluster allows
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for fut in futures.values():
        try:
            fut.result(30)
        except Exception as exc:  # an existing topic is fine
            print(f"note: create topic: {exc}", file=sys.stderr)


def _produce_and_verify(args: argparse.Namespace, bootstrap: str, topic: str) -> int:
    n = args.num_records
    size = args.record_size
    filler = bytes(range(65, 91)) * (size // 26 + 1)
    props: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "acks": args.acks,
        "linger.ms": args.linger_ms,
        "compression.type": args.compression,
    }
    for item in args.producer_props:
        name, _, value = item.partition("=")
        props[name] = value
    codec = _Codec(args.serializer, size, filler)
    if codec.serializer is not None:
        props["value.serializer"] = codec.serializer
    txn_size = TRANSACTION_RECORDS if args.transactional else 0
    if txn_size:
        props["transactional.id"] = f"kprod-demo-{uuid.uuid4().hex[:8]}"
    stats = _Stats()
    send_times: dict[int, float] = {}

    def sampled(i: int) -> Any:
        def on_delivery(md: RecordMetadata | None, err: BaseException | None) -> None:
            t = time.perf_counter()
            with stats.lock:
                if err is None:
                    stats.latencies_ms.append((t - send_times.pop(i)) * 1000)
                else:
                    send_times.pop(i, None)

        return on_delivery

    def count(md: RecordMetadata | None, err: BaseException | None) -> None:
        with stats.lock:
            if err is None:
                stats.acked += 1
            else:
                stats.failed += 1
                name = type(err).__name__
                stats.errors[name] = stats.errors.get(name, 0) + 1

    producer = Producer(props)
    print(
        f"producing {n:,} records of {size} bytes (acks={args.acks}, linger.ms={args.linger_ms}, "
        f"compression={args.compression}, idempotence={producer.config.enable_idempotence}"
        + (f", transactions of {txn_size:,}" if txn_size else "")
        + ")"
    )
    start = time.perf_counter()
    last_report = start
    commits = 0
    try:
        if txn_size:
            producer.init_transactions()
        for i in range(n):
            if txn_size and i % txn_size == 0:
                if i:
                    producer.commit_transaction()
                    commits += 1
                producer.begin_transaction()
            cb = count
            if i % LATENCY_SAMPLE_EVERY == 0:
                send_times[i] = time.perf_counter()
                sample = sampled(i)

                def cb(md: RecordMetadata | None, err: BaseException | None, _s: Any = sample) -> None:
                    _s(md, err)
                    count(md, err)

            producer.send(topic, codec.obj(i), _key(i), headers=_headers(i), on_delivery=cb)
            if i % 20_000 == 0 and not args.quiet:
                now = time.perf_counter()
                if now - last_report >= 1.0:
                    last_report = now
                    rate = i / (now - start)
                    m = producer.metrics()
                    print(
                        f"  {i:>10,} sent  {stats.acked:>10,} acked  {rate:>10,.0f} rec/s  "
                        f"buffer {m['buffer-used-bytes'] / 1e6:.1f} MB  in-flight {m['requests-in-flight']}",
                        flush=True,
                    )
        if txn_size:
            producer.commit_transaction()
            commits += 1
        producer.flush()
    finally:
        producer.close(30)
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    mb = n * size / elapsed / 1e6
    lat = sorted(stats.latencies_ms)
    p50 = lat[len(lat) // 2] if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    verified = 0
    problems: list[str] = []
    if not args.no_verify:
        print("reading back with confluent-kafka (check.crcs=true, assign()) ...", flush=True)
        verified, problems = _verify(
            bootstrap, topic, n, codec, args.partitions, committed_only=bool(txn_size)
        )
    print()
    print("summary")
    print(f"  sent                {n:,}")
    print(
        f"  acknowledged        {stats.acked:,}"
        + (f"  (failed {stats.failed:,}: {stats.errors})" if stats.failed else "")
    )
    if txn_size:
        print(f"  transactions        {commits:,} committed (read back with isolation.level=read_committed)")
    if not args.no_verify:
        print(f"  verified byte-exact {verified:,}")
    print(f"  throughput          {rate:,.0f} records/s, {mb:.1f} MB/s (values only, send to last ack)")
    print(f"  latency             p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(lat):,} samples, send to ack)")
    for problem in problems[:10]:
        print(f"  PROBLEM: {problem}")
    ok = stats.acked == n and (args.no_verify or (verified == n and not problems))
    print("  result              " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


def _verify(
    bootstrap: str, topic: str, n: int, codec: _Codec, partitions: int, committed_only: bool = False
) -> tuple[int, list[str]]:
    try:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    except ImportError:
        return 0, ["confluent-kafka is not installed: install kprod[dev] to verify"]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"kprod-demo-verify-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "check.crcs": True,
            "fetch.max.bytes": 52_428_800,
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
        }
    )
    meta = consumer.list_topics(topic, timeout=10)
    count = len(meta.topics[topic].partitions) if topic in meta.topics else partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(count)])
    seen = bytearray(n)
    verified = 0
    problems: list[str] = []
    deadline = time.monotonic() + max(60.0, n / 20_000)
    last_offset: dict[int, int] = {}
    read = 0
    try:
        while read < n and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                err = msg.error()
                if err is not None:
                    problems.append(f"consumer error: {err}")
                    continue
                read += 1
                value = msg.value() or b""
                partition = msg.partition() or 0
                offset = msg.offset() or 0
                try:
                    i = codec.index_of(value)
                except Exception:
                    problems.append(f"unparsable value at {msg.partition()}:{msg.offset()}")
                    continue
                if not 0 <= i < n:
                    problems.append(f"index {i} out of range")
                    continue
                if seen[i]:
                    problems.append(f"record {i} read twice")
                    continue
                seen[i] = 1
                prev = last_offset.get(partition, -1)
                if offset <= prev:
                    problems.append(f"offsets not increasing on partition {partition}")
                last_offset[partition] = offset
                headers = msg.headers()
                expected_headers = _headers(i)
                if (
                    value == codec.expected(i)
                    and msg.key() == _key(i)
                    and (headers or None) == expected_headers
                ):
                    verified += 1
                else:
                    problems.append(f"record {i} differs at {msg.partition()}:{msg.offset()}")
    finally:
        consumer.close()
    missing = n - sum(seen)
    if missing:
        problems.append(f"{missing} record(s) not read back")
    return verified, problems
