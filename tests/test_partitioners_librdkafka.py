"""librdkafka's partitioners by name, for users coming from confluent-kafka: every key lands where
confluent-kafka puts it.

confluent-kafka produces 10,000 random keys (plus the empty key) with each partitioner to topics of
3, 7 and 12 partitions on the embedded broker and reports each record's partition; kprod, given the
same ``partitioner`` name, must report the same partition for every key. Null keys of the
``*_random`` partitioners (and every null key of ``random``) go to the sticky partitioner, as in
librdkafka, so only their spread is checked.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Producer as ConfluentProducer

from kprod import ConfigError, Producer
from kprod._core.partitioner import crc32_hash, fnv1a_hash

NAMES = ("consistent", "consistent_random", "murmur2", "murmur2_random", "fnv1a", "fnv1a_random")
COUNTS = (3, 7, 12)


def test_hash_vectors() -> None:
    assert crc32_hash(b"123456789") == 0xCBF43926  # the CRC-32 check value
    assert fnv1a_hash(b"") == 0x811C9DC5 - (1 << 32)  # FNV-1a 32-bit offset basis, as int32
    assert fnv1a_hash(b"a") == 0xE40C292C - (1 << 32)
    assert fnv1a_hash(b"foobar") == 0xBF9CF968 - (1 << 32)


@pytest.fixture(scope="module")
def keys() -> list[bytes]:
    rng = random.Random(2026)
    out = {b""}
    while len(out) < 10_001:
        out.add(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 48))))
    return sorted(out)


def _confluent_partitions(bootstrap: str, topic: str, name: str, keys: list[bytes]) -> dict[bytes, int]:
    producer = ConfluentProducer({"bootstrap.servers": bootstrap, "partitioner": name, "linger.ms": 5})
    placed: dict[bytes, int] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None, err
        placed[msg.key()] = msg.partition()

    for key in keys:
        producer.produce(topic, b"v", key=key, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0
    return placed


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_keys_land_where_confluent_kafka_puts_them(fresh_broker: Any, keys: list[bytes], name: str) -> None:
    for count in COUNTS:
        topic = f"{name}-{count}"
        fresh_broker.create_topic(topic, partitions=count)
        theirs = _confluent_partitions(fresh_broker.bootstrap_servers, topic, name, keys)
        with Producer({"bootstrap.servers": fresh_broker.bootstrap_servers, "partitioner": name}) as producer:
            futures = [(key, producer.send(topic, b"v", key=key)) for key in keys]
            producer.flush(60)
            ours = {key: f.result(timeout=0).partition for key, f in futures}
        random_empty = name == "consistent_random"  # librdkafka: an empty key is random there
        compared = [k for k in keys if not (random_empty and k == b"")]
        wrong = [(k, ours[k], theirs[k]) for k in compared if ours[k] != theirs[k]]
        assert wrong == [], (
            f"{name} with {count} partitions: {len(wrong)} keys placed elsewhere, e.g. {wrong[:3]}"
        )


@pytest.mark.timeout(120)
def test_null_keys_and_the_random_partitioner_spread(fresh_broker: Any) -> None:
    fresh_broker.create_topic("spread", partitions=6)
    with Producer(
        {"bootstrap.servers": fresh_broker.bootstrap_servers, "partitioner": "random", "batch.size": 1024}
    ) as producer:
        keyed = [producer.send("spread", b"v", key=b"same-key") for _ in range(3_000)]
        keyless = [producer.send("spread", b"v" * 100) for _ in range(3_000)]
        producer.flush(60)
    by_partition = Counter(f.result(timeout=0).partition for f in keyed)
    assert len(by_partition) == 6 and min(by_partition.values()) > 300, by_partition  # random per record
    assert len({f.result(timeout=0).partition for f in keyless}) == 6  # sticky, moving on per batch


def test_an_unknown_partitioner_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="consistent_random"):
        Producer({"bootstrap.servers": "127.0.0.1:1", "partitioner": "crc32"})
