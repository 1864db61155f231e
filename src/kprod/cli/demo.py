"""``kprod demo``: the main job. Produce N records through the whole pipeline, read them back, summarize.

Uses the public API only (``kprod.Producer``). By default it starts the
embedded broker; ``--bootstrap-servers`` points it at any cluster. Records are
100-byte values (configurable), half keyed, every tenth with headers, every
record's content derived from its index so that the read-back (with
confluent-kafka's Consumer, ``check.crcs=true``, ``assign()``) can verify each
one byte for byte.

Why one module of about 600 lines: the job's options, its producing run, the read-back and the
report are one command; each part is a function, and none is used elsewhere.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kprod import ConfigError, KprodError, Producer, ProducerConfig, RecordMetadata
from kprod.sasl import jwt_expiry_ms, parse_jaas_config

LATENCY_SAMPLE_EVERY = 20
MIN_RECORD_SIZE = 13
"""The smallest value: a 12-digit index and a colon."""
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
        "--producer.config",
        "--command-config",
        dest="producer_config",
        metavar="FILE",
        help="producer settings in a Java properties file (e.g. a Java client's client.properties with "
        "security.protocol, sasl.jaas.config, ssl.truststore.location); --producer-props override it. The "
        "read-back consumer gets the same security settings",
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
    first_offsets: dict[int, int] = field(default_factory=dict)
    """The lowest offset acknowledged per partition: where this run's records begin."""
    lock: threading.Lock = field(default_factory=threading.Lock)


def _settings(args: argparse.Namespace) -> dict[str, object]:
    """The producer settings: --producer.config, then the options, then --producer-props."""
    from kprod.cli.perf import parse_properties

    props: dict[str, object] = {}
    if args.producer_config:
        props.update(parse_properties(Path(args.producer_config).read_text(encoding="utf-8")))
    props.update({"acks": args.acks, "linger.ms": args.linger_ms, "compression.type": args.compression})
    for item in args.producer_props:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--producer-props takes NAME=VALUE items, not {item!r}")
        props[name] = value
    return props


def _check_options(args: argparse.Namespace) -> str | None:
    if args.num_records <= 0:
        return "--num-records must be > 0"
    if args.record_size < MIN_RECORD_SIZE:
        return f"--record-size must be >= {MIN_RECORD_SIZE} (each value carries its index for the read-back)"
    if args.partitions <= 0:
        return "--partitions must be > 0"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _check_options(args)
    if problem is None:
        try:
            props = _settings(args)
        except (OSError, ValueError) as exc:
            problem = str(exc)
    if problem is not None:
        print(f"kprod demo: {problem}", file=sys.stderr)
        return 2
    try:
        config = ProducerConfig.from_user(props)  # fail before starting a broker
    except ConfigError as exc:
        print(f"kprod demo: invalid producer settings: {exc}", file=sys.stderr)
        return 2
    broker: Any = None
    bootstrap = args.bootstrap_servers or props.get("bootstrap.servers")
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
            _create_topic_external(str(bootstrap), topic, args.partitions, consumer_settings(config))
            print(f"cluster {bootstrap}; topic {topic}")
        return _produce_and_verify(args, props, str(bootstrap), topic, config)
    except KeyboardInterrupt:
        print("kprod demo: interrupted", file=sys.stderr)
        return 130
    except KprodError as exc:
        print(f"kprod demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if broker is not None:
            broker.stop()


def consumer_settings(config: ProducerConfig) -> dict[str, object]:
    """The producer's TLS/SASL settings in librdkafka's names, for the read-back consumer."""
    out: dict[str, object] = {}
    protocol = config.security_protocol
    if protocol == "PLAINTEXT":
        return out
    out["security.protocol"] = protocol
    if protocol in ("SSL", "SASL_SSL"):
        pem_settings = {
            "ssl.ca.location": config.ssl_truststore_location,
            "ssl.ca.pem": config.ssl_truststore_certificates,
            "ssl.certificate.location": config.ssl_keystore_location,
            "ssl.key.location": config.ssl_key_location or config.ssl_keystore_location,
            "ssl.certificate.pem": config.ssl_keystore_certificate_chain,
            "ssl.key.pem": config.ssl_keystore_key,
            "ssl.key.password": config.ssl_key_password,
        }
        out.update({k: v for k, v in pem_settings.items() if v is not None})
        if config.ssl_endpoint_identification_algorithm != "https":
            out["ssl.endpoint.identification.algorithm"] = "none"
    if not protocol.startswith("SASL"):
        return out
    mechanism = config.sasl_mechanism
    out["sasl.mechanism"] = mechanism
    options = parse_jaas_config(config.sasl_jaas_config).options if config.sasl_jaas_config else {}
    if mechanism != "OAUTHBEARER":
        out["sasl.username"] = config.sasl_username or options.get("username")
        out["sasl.password"] = config.sasl_password or options.get("password")
    elif config.sasl_oauthbearer_token_provider is not None:
        provider = config.sasl_oauthbearer_token_provider

        def oauth_cb(_config: str) -> tuple[str, float]:
            token = provider(_config) if _takes_argument(provider) else provider()
            if isinstance(token, tuple):
                return str(token[0]), float(token[1])
            value = getattr(token, "value", token)
            expiry_ms = getattr(token, "expires_at_ms", jwt_expiry_ms(str(value)))
            return str(value), (expiry_ms / 1000 if expiry_ms > 0 else time.time() + 3600)

        out["oauth_cb"] = oauth_cb
    elif config.sasl_oauthbearer_token_endpoint_url is not None:
        out.update(
            {
                "sasl.oauthbearer.method": "oidc",
                "sasl.oauthbearer.token.endpoint.url": config.sasl_oauthbearer_token_endpoint_url,
                "sasl.oauthbearer.client.id": config.sasl_oauthbearer_client_credentials_client_id
                or options.get("clientId"),
                "sasl.oauthbearer.client.secret": config.sasl_oauthbearer_client_credentials_client_secret
                or options.get("clientSecret"),
            }
        )
        scope = config.sasl_oauthbearer_scope or options.get("scope")
        if scope:
            out["sasl.oauthbearer.scope"] = scope
    else:  # an unsecured development token, as the producer makes it
        principal = options.get("unsecuredLoginStringClaim_sub")
        out["enable.sasl.oauthbearer.unsecure.jwt"] = True
        out["sasl.oauthbearer.config"] = (
            f"principal={principal}" if principal else (config.sasl_oauthbearer_config or "")
        )
    return out


def _takes_argument(fn: Any) -> bool:
    import inspect

    try:
        return len(inspect.signature(fn).parameters) >= 1
    except (TypeError, ValueError):
        return False


def _create_topic_external(bootstrap: str, topic: str, partitions: int, security: dict[str, object]) -> None:
    try:
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
    except ImportError:  # the producer will auto-create it if the cluster allows
        return
    settings: dict[str, Any] = {"bootstrap.servers": bootstrap, **security}
    admin = AdminClient(settings)
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for fut in futures.values():
        try:
            fut.result(30)
        except Exception as exc:  # an existing topic is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                print(f"note: create topic: {exc}", file=sys.stderr)


def _produce_and_verify(
    args: argparse.Namespace, props: dict[str, object], bootstrap: str, topic: str, config: ProducerConfig
) -> int:
    n = args.num_records
    size = args.record_size
    filler = bytes(range(65, 91)) * (size // 26 + 1)
    props = {**props, "bootstrap.servers": bootstrap}
    acks_0 = config.acks == 0
    codec = _Codec(args.serializer, size, filler)
    if codec.serializer is not None:
        props["value.serializer"] = codec.serializer
    txn_size = TRANSACTION_RECORDS if args.transactional else 0
    if txn_size:
        props["transactional.id"] = f"kprod-demo-{uuid.uuid4().hex[:8]}"
    security = consumer_settings(config)
    reader = (
        None if args.no_verify else _Reader.open(bootstrap, topic, security, committed_only=bool(txn_size))
    )
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

    first_offsets = stats.first_offsets

    def count(md: RecordMetadata | None, err: BaseException | None) -> None:
        with stats.lock:
            if err is None:
                stats.acked += 1
                if md is not None and md.partition not in first_offsets and md.offset >= 0:
                    # Acknowledgements of a partition come in offset order: the first is its lowest.
                    first_offsets[md.partition] = md.offset
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
    if acks_0:
        print(
            "acks=0: the broker confirms nothing; a record counts as written once its request has left the "
            "process (the kernel took it), latency is send to that, and the read-back checks what reached "
            "the log (acks=0 may lose records)"
        )
    start = time.perf_counter()
    last_report = start
    commits = 0
    closed = False
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
                        f"  {i:>10,} sent  {stats.acked:>10,} {'written' if acks_0 else 'acked'}  "
                        f"{rate:>10,.0f} rec/s  buffer {m['buffer-used-bytes'] / 1e6:.1f} MB  "
                        f"in-flight {m['requests-in-flight']}",
                        flush=True,
                    )
        if txn_size:
            producer.commit_transaction()
            commits += 1
        producer.flush()
        producer.close(30)
        closed = True
    finally:
        if not closed:  # Ctrl-C or an error: do not wait for delivery.timeout.ms
            producer.close(0)
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    mb = n * size / elapsed / 1e6
    lat = sorted(stats.latencies_ms)
    p50 = lat[len(lat) // 2] if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    verified = read = 0
    problems: list[str] = []
    if reader is not None and reader.skipped is None:
        print(
            "reading back with confluent-kafka (check.crcs=true, assign() from this run's first offsets) ...",
            flush=True,
        )
        if stats.first_offsets:  # acknowledged offsets (a watermark read before may lag: Tansu)
            reader.starts = {**reader.starts, **stats.first_offsets}
        verified, read, problems = reader.verify(n, codec)
    print()
    print("summary")
    print(f"  sent                {n:,}")
    outcome = "written (acks=0)" if acks_0 else "acknowledged    "
    print(
        f"  {outcome}    {stats.acked:,}"
        + (f"  (failed {stats.failed:,}: {stats.errors})" if stats.failed else "")
    )
    if txn_size:
        print(f"  transactions        {commits:,} committed (read back with isolation.level=read_committed)")
    if reader is None:
        pass
    elif reader.skipped is not None:
        print(f"  verification        skipped: {reader.skipped}")
    else:
        print(f"  verified byte-exact {verified:,}")
        if read < n:
            why = " (acks=0 gives no retry and no error for a lost record)" if acks_0 else ""
            print(f"  not read back       {n - read:,}{why}")
    print(
        f"  throughput          {rate:,.0f} records/s, {mb:.1f} MB/s (values only, send to last "
        f"{'write' if acks_0 else 'ack'})"
    )
    print(
        f"  latency             p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(lat):,} samples, send to "
        f"{'write' if acks_0 else 'ack'})"
    )
    for problem in problems[:10]:
        print(f"  PROBLEM: {problem}")
    delivered = stats.acked == n
    checked = reader is None or reader.skipped is not None or (not problems and (acks_0 or verified == n))
    ok = delivered and checked
    print("  result              " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


def _high_watermark(consumer: Any, tp: Any, default: int) -> int:
    """The partition's end offset; a topic created a moment ago may have no leader yet (answers
    NOT_LEADER_FOR_PARTITION): asked again for up to 10 s, then ``default``."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=10)[1])
        except Exception:
            if time.monotonic() >= deadline:
                return default
            time.sleep(0.2)


class _Reader:
    """The read-back: confluent-kafka's Consumer (check.crcs=true) from the offsets where this run began
    (so that a topic holding older records, or a second run, is checked for this run's records only)
    up to the ends found after producing."""

    def __init__(
        self, settings: dict[str, Any] | None, topic: str, starts: dict[int, int], skipped: str | None = None
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.starts = starts
        self.skipped = skipped

    @classmethod
    def open(
        cls, bootstrap: str, topic: str, security: dict[str, object], *, committed_only: bool
    ) -> _Reader:
        try:
            from confluent_kafka import Consumer, TopicPartition
        except ImportError:
            return cls(None, topic, {}, "confluent-kafka is not installed (pip install confluent-kafka)")
        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": f"kprod-demo-verify-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "check.crcs": True,
            "fetch.max.bytes": 52_428_800,
            "isolation.level": "read_committed" if committed_only else "read_uncommitted",
            **security,
        }
        consumer = Consumer(settings)  # for the starting offsets only: closed while the producer runs
        meta = consumer.list_topics(topic, timeout=30)
        partitions = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        starts = {p: _high_watermark(consumer, TopicPartition(topic, p), default=0) for p in partitions}
        consumer.close()
        return cls(settings, topic, starts)

    def verify(self, n: int, codec: _Codec) -> tuple[int, int, list[str]]:
        """(records verified byte-exact, distinct records found, problems)."""
        from confluent_kafka import Consumer, TopicPartition

        assert self.settings is not None
        consumer = Consumer(self.settings)
        topic = self.topic
        meta = consumer.list_topics(topic, timeout=30)
        partitions = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        ends = {p: _high_watermark(consumer, TopicPartition(topic, p), default=2**62) for p in partitions}
        consumer.assign([TopicPartition(topic, p, self.starts.get(p, 0)) for p in partitions])
        seen = bytearray(n)
        verified = read = 0
        problems: list[str] = []
        deadline = time.monotonic() + max(60.0, n / 20_000)
        last_offset: dict[int, int] = {}
        next_position_check = time.monotonic() + 1.0
        try:
            while read < n and time.monotonic() < deadline:
                for msg in consumer.consume(10_000, timeout=0.5):
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
                        problems.append(f"unparsable value at {partition}:{offset}")
                        continue
                    if not 0 <= i < n:
                        problems.append(f"index {i} out of range")
                        continue
                    if seen[i]:
                        problems.append(f"record {i} read twice")
                        continue
                    seen[i] = 1
                    if offset <= last_offset.get(partition, -1):
                        problems.append(f"offsets not increasing on partition {partition}")
                    last_offset[partition] = offset
                    if (
                        value == codec.expected(i)
                        and msg.key() == _key(i)
                        and (msg.headers() or None) == _headers(i)
                    ):
                        verified += 1
                    else:
                        problems.append(f"record {i} differs at {partition}:{offset}")
                if time.monotonic() >= next_position_check:  # everything up to the ends read: stop
                    next_position_check = time.monotonic() + 1.0
                    positions = consumer.position([TopicPartition(topic, p) for p in partitions])
                    if positions and all(tp.offset >= ends[tp.partition] for tp in positions):
                        break
        finally:
            consumer.close()
        return verified, sum(seen), problems
