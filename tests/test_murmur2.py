"""murmur2 and keyed partitioning: Kafka's and librdkafka's vectors, and agreement with librdkafka."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kprod._core import murmur2 as murmur2_module
from kprod._core.appender import compiled_module
from kprod._core.murmur2 import murmur2, partition_for_key

# Both implementations of the unsigned hash: the Python reference and the C one (kprod._speedups,
# which CI builds; test_speedups.py fails when it is not built).
U32: dict[str, Callable[[bytes], int]] = {"python": murmur2_module._murmur2_python}
if compiled_module is not None:
    U32["c"] = compiled_module.murmur2_u32


def _signed(h: int) -> int:
    return h - (1 << 32) if h >= 1 << 31 else h

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors" / "vectors.json").read_text())[
    "murmur2"
]


def _key(case: dict[str, Any]) -> bytes:
    return bytes.fromhex(case["key_hex"]) if "key_hex" in case else case["key_utf8"].encode()


@pytest.mark.parametrize("implementation", sorted(U32))
@pytest.mark.parametrize("case", VECTORS["kafka_UtilsTest_testMurmur2"], ids=lambda c: str(_key(c))[:20])
def test_kafka_utils_test_vectors(case: dict[str, Any], implementation: str) -> None:
    assert murmur2(_key(case)) == case["murmur2"]
    assert _signed(U32[implementation](_key(case))) == case["murmur2"]


@pytest.mark.parametrize("implementation", sorted(U32))
@pytest.mark.parametrize("case", VECTORS["librdkafka_rdmurmur2_unittest"], ids=lambda c: str(_key(c))[:20])
def test_librdkafka_vectors(case: dict[str, Any], implementation: str) -> None:
    assert murmur2(_key(case)) & 0xFFFFFFFF == case["murmur2_unsigned"]
    assert U32[implementation](_key(case)) == case["murmur2_unsigned"]


def test_java_producer_md_partition_examples() -> None:
    # java-producer.md §3.3: toPositive(murmur2(k)) % n for n = 3, 6, 12, 100.
    expected = {
        b"21": [0, 0, 0, 40],
        b"foobar": [0, 0, 6, 66],
        b"abc": [0, 3, 3, 7],
        b"kafka": [1, 4, 4, 80],
        b"key1": [2, 2, 8, 40],
    }
    for key, partitions in expected.items():
        assert [partition_for_key(key, n) for n in (3, 6, 12, 100)] == partitions


def _reference_murmur2(data: bytes) -> int:
    """A straight transcription of Utils.murmur2, 32-bit arithmetic spelled out."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    rest = length % 4
    base = length & ~3
    if rest == 3:
        h ^= data[base + 2] << 16
    if rest >= 2:
        h ^= data[base + 1] << 8
    if rest >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


@given(st.binary(max_size=600))
def test_matches_reference_transcription(data: bytes) -> None:
    # Covers the per-block loop (< 24 bytes), the lane path and keys past the precompiled 255 bytes.
    assert murmur2(data) == _reference_murmur2(data)
    for implementation in U32.values():
        assert _signed(implementation(data)) == _reference_murmur2(data)


def test_the_c_hash_is_used_when_built_and_refuses_what_is_not_bytes() -> None:
    if compiled_module is None:
        pytest.fail("kprod._speedups is not built (see setup.py)")
    import os

    pure = os.environ.get("KPROD_PURE_PYTHON", "") not in ("", "0")
    assert (murmur2_module._murmur2_u32 is compiled_module.murmur2_u32) is not pure
    with pytest.raises(TypeError, match="bytes"):
        compiled_module.murmur2_u32("text")  # type: ignore[arg-type]
    assert compiled_module.murmur2_u32(b"") == murmur2_module._murmur2_python(b"")


def test_confluent_kafka_murmur2_semantics() -> None:
    # confluent_kafka.murmur2(key, n) returns the partition, (murmur2 & 0x7fffffff) % n, not the hash.
    assert confluent_kafka.murmur2(b"21", 100) == 40
    with pytest.raises(ValueError):
        confluent_kafka.murmur2(b"21", 0)


@pytest.mark.parametrize("num_partitions", [1, 2, 3, 6, 12, 100, 1000, 2**31 - 1])
def test_matches_librdkafka_for_random_keys(num_partitions: int) -> None:
    rng = random.Random(num_partitions)
    for _ in range(10_000):
        key = rng.randbytes(rng.randint(0, 64))
        assert partition_for_key(key, num_partitions) == confluent_kafka.murmur2(key, num_partitions), key
        # Twice: the second answer comes from the cache.
        assert partition_for_key(key, num_partitions) == confluent_kafka.murmur2(key, num_partitions), key


def test_long_keys_are_not_cached_but_correct() -> None:
    key = bytes(range(256)) * 4
    assert partition_for_key(key, 7) == confluent_kafka.murmur2(key, 7)
