"""Workload definitions and payload generation, shared by bench/run.py (parent) and bench/child.py.

Every workload is run by each client in its own process against its own fresh embedded broker
(topic ``bench``, 6 partitions). Sizes are the full ones; ``--scale`` multiplies record counts.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

TOPIC = "bench"
PARTITIONS = 6
CLIENTS = ("kprod", "kprod-async", "confluent-kafka", "aiokafka", "kafka-python", "java")
JAVA_WORKLOADS = ("W1", "W2", "W4")
"""The Java producer runs as Kafka's ProducerPerformance, which has no JSON payloads and no memory test."""
BASELINE = "confluent-kafka"
UPPERCASE_TABLE = bytes(65 + i % 26 for i in range(256))
POOL = 4096
"""Distinct values per run (records cycle through them); generated before the clock starts."""
DISTINCT_KEYS = 10_000
W5_MIN_RECORDS = 700_000
"""W5 must overflow a 32 MiB buffer with 100-byte values even at small --scale."""


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    records: int
    value: str  # "letters" (random uppercase) or "json"
    value_size: int
    mode: str  # "pipelined", "one-at-a-time" or "memory"
    acks: str = "1"
    idempotence: bool = False
    keyed: bool = False
    compression: str = "none"
    linger_ms: int = 5
    clients: tuple[str, ...] = CLIENTS
    skipped: dict[str, str] = field(default_factory=dict)

    def scaled(self, scale: float) -> Workload:
        records = max(1, round(self.records * scale))
        if self.mode == "memory":
            records = max(records, W5_MIN_RECORDS)
        return Workload(
            **{**asdict(self), "records": records, "clients": self.clients, "skipped": self.skipped}
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Workload:
        data = json.loads(text)
        data["clients"] = tuple(data["clients"])
        return Workload(**data)


AIOKAFKA_IDEMPOTENCE = (
    "aiokafka sends InitProducerId v0-v2, which Tansu 0.6 answers with UNKNOWN_SERVER_ERROR "
    "(it advertises 0-5 but only v3+ works): start() fails"
)
MEMORY_ONLY = "W5 runs kprod (and confluent-kafka for contrast) only"

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("W1", "1M x 100 B, no key, acks=1, linger.ms=5", 1_000_000, "letters", 100, "pipelined"),
        Workload(
            "W2",
            "1M x 100 B, 10k keys, acks=all, idempotence",
            1_000_000,
            "letters",
            100,
            "pipelined",
            acks="all",
            idempotence=True,
            keyed=True,
            clients=("kprod", "kprod-async", "confluent-kafka", "kafka-python", "java"),
            skipped={"aiokafka": AIOKAFKA_IDEMPOTENCE},
        ),
        Workload(
            "W3-lz4",
            "200k x 1 KB JSON, lz4",
            200_000,
            "json",
            1024,
            "pipelined",
            compression="lz4",
            clients=CLIENTS[:-1],
        ),
        Workload(
            "W3-zstd",
            "200k x 1 KB JSON, zstd",
            200_000,
            "json",
            1024,
            "pipelined",
            compression="zstd",
            clients=CLIENTS[:-1],
        ),
        Workload(
            "W4",
            "10k x 100 B one at a time (each awaited), linger.ms=0, acks=1",
            10_000,
            "letters",
            100,
            "one-at-a-time",
            linger_ms=0,
        ),
        Workload(
            "W5",
            "2M x 100 B into a SIGSTOPped broker (buffer limits)",
            2_000_000,
            "letters",
            100,
            "memory",
            clients=("kprod", "confluent-kafka"),
            skipped={"kprod-async": MEMORY_ONLY, "aiokafka": MEMORY_ONLY, "kafka-python": MEMORY_ONLY},
        ),
    )
}


def letter_values(size: int, count: int = POOL, seed: int = 0) -> list[bytes]:
    """``count`` distinct values of ``size`` random uppercase letters (like kafka-producer-perf-test)."""
    blob = random.Random(seed).randbytes(size * count).translate(UPPERCASE_TABLE)
    return [blob[i * size : (i + 1) * size] for i in range(count)]


_EVENTS = ("page_view", "add_to_cart", "checkout", "search", "login", "logout", "click", "scroll")
_COUNTRIES = ("DE", "FR", "US", "GB", "JP", "BR", "IN", "NL", "SE", "ES")
_WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "kafka",
    "record",
    "batch",
    "broker",
    "producer",
    "consumer",
    "topic",
    "partition",
    "offset",
    "leader",
    "replica",
    "latency",
    "throughput",
    "buffer",
    "linger",
    "compression",
    "payload",
    "header",
    "key",
    "value",
]


def json_values(size: int, count: int = POOL, seed: int = 0) -> list[bytes]:
    """``count`` JSON-like event documents, each padded to exactly ``size`` bytes."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for i in range(count):
        doc: dict[str, Any] = {
            "id": 10_000_000 + i,
            "ts": f"2025-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z",
            "event": rng.choice(_EVENTS),
            "session": rng.randbytes(16).hex(),
            "user": {
                "id": f"u-{rng.randint(1, 99_999):05d}",
                "country": rng.choice(_COUNTRIES),
                "premium": rng.random() < 0.2,
            },
            "url": f"https://shop.example.com/products/{rng.randint(1, 50_000)}?ref={rng.choice(_WORDS)}",
            "amount": round(rng.uniform(1, 500), 2),
            "tags": rng.sample(_WORDS, 4),
            "metrics": {"dom_ms": rng.randint(10, 3000), "ttfb_ms": rng.randint(5, 900)},
        }
        text = json.dumps(doc, separators=(",", ":"))
        pad = size - len(text) - len(',"note":""')
        words: list[str] = []
        length = 0
        while length < pad:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        note = " ".join(words)[: max(0, pad)]
        body = text[:-1] + ',"note":"' + note + '"}'
        out.append(body.encode()[:size].ljust(size, b" "))
    return out


def values_for(w: Workload) -> list[bytes]:
    return json_values(w.value_size) if w.value == "json" else letter_values(w.value_size)


def keys_for(w: Workload) -> list[bytes] | None:
    return [b"key-%05d" % i for i in range(DISTINCT_KEYS)] if w.keyed else None
