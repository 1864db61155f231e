"""Kafka's murmur2 hash and the keyed partition it picks (``Utils.murmur2``, ``BuiltInPartitioner.partitionForKey``).

MurmurHash2, 32-bit, seed ``0x9747b28c``, m ``0x5bd1e995``, r 24, over 4-byte
little-endian blocks, then a 1-3 byte tail (java-producer.md §3.3). A keyed
record goes to ``(murmur2(key) & 0x7fffffff) % num_partitions`` over all
partitions of the topic, which librdkafka's ``murmur2_random`` partitioner
matches (``confluent_kafka.murmur2(key, n)``).

This runs once per keyed record, so it is written for CPython's interpreter:

- the blocks are read by one precompiled ``struct`` call, not byte by byte;
- for keys of 24 bytes or more, the per-block part that does not depend on the
  running hash (``k *= m; k ^= k >>> 24; k *= m``) is done for all blocks at
  once with big-int arithmetic on 64-bit lanes (each lane holds one 32-bit
  block, so a product never carries into the next lane), leaving only
  ``h = h * m ^ k`` per block in the Python loop;
- :func:`positive_hash` remembers the hash of recently seen short keys
  (bounded; cleared when full), since real key spaces repeat.

When kprod's C extension is built (``kprod._speedups``), ``murmur2_u32`` is its C function
(about 30 ns for a short key instead of about 1 µs); this Python one stays the reference
(``tests/test_murmur2.py`` checks both against Kafka's and librdkafka's vectors and each other).

Pure: no I/O, clocks or threads.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from kprod._core.compiled import speedups_module

__all__ = ["murmur2", "partition_for_key", "positive_hash"]

_SEED: Final = 0x9747B28C
_M: Final = 0x5BD1E995  # Spelled as a literal in the loops below: constants load faster than globals.
_MASK32: Final = 0xFFFFFFFF

_LANES_FROM_BLOCKS: Final = 6  # Below 6 blocks (24 bytes) the plain loop is faster.
_PLANNED_BLOCKS: Final = 64  # Keys up to 255 bytes use precompiled structs.


def _lane_plan(blocks: int) -> tuple[struct.Struct, struct.Struct, int]:
    """Structs reading ``blocks`` 32-bit words and packing them into 64-bit lanes, and the lanes' mask."""
    lane_mask = int.from_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00" * blocks, "little")
    return struct.Struct(f"<{blocks}I"), struct.Struct(f"<{blocks}Q"), lane_mask


_UNPACK_FEW: Final = tuple(struct.Struct(f"<{n}I").unpack_from for n in range(_LANES_FROM_BLOCKS))
_PLANS: Final = tuple(_lane_plan(n) for n in range(_PLANNED_BLOCKS))


def _murmur2_u32(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` as an unsigned 32-bit int."""
    length = len(data)
    h = _SEED ^ length
    blocks = length >> 2
    if blocks < _LANES_FROM_BLOCKS:
        for k in _UNPACK_FEW[blocks](data):
            k = (k * 0x5BD1E995) & 0xFFFFFFFF
            h = ((h * 0x5BD1E995) ^ ((k ^ (k >> 24)) * 0x5BD1E995)) & 0xFFFFFFFF
    else:
        # All blocks at once: one 32-bit block per 64-bit lane (a 32 x 31-bit product
        # never carries into the next lane); mask after each step.
        words, lanes, lane_mask = _PLANS[blocks] if blocks < _PLANNED_BLOCKS else _lane_plan(blocks)
        k = int.from_bytes(lanes.pack(*words.unpack_from(data)), "little")
        k = (k * 0x5BD1E995) & lane_mask
        k = (((k ^ (k >> 24)) & lane_mask) * 0x5BD1E995) & lane_mask
        for mixed in lanes.unpack(k.to_bytes(8 * blocks, "little")):
            h = ((h * 0x5BD1E995) ^ mixed) & 0xFFFFFFFF
    tail = length & 3
    if tail:
        start = length - tail
        if tail == 3:
            h ^= data[start + 2] << 16
        if tail >= 2:
            h ^= data[start + 1] << 8
        h = ((h ^ data[start]) * 0x5BD1E995) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 0x5BD1E995) & 0xFFFFFFFF
    return h ^ (h >> 15)


_murmur2_python: Callable[[bytes], int] = _murmur2_u32
"""The Python implementation, kept as the reference when the C one is in use."""
if speedups_module is not None:
    _murmur2_u32 = speedups_module.murmur2_u32


def murmur2(data: bytes) -> int:
    """Return Kafka's murmur2 hash of ``data`` as a signed 32-bit int, as Java's ``Utils.murmur2`` does."""
    h = _murmur2_u32(data)
    return h - 0x100000000 if h & 0x80000000 else h


_CACHE_MAX_KEY_BYTES: Final = 64
_CACHE_MAX_ENTRIES: Final = 32768
"""Keys of up to 64 bytes whose hash is remembered (at most a few MiB); cleared when full."""
_positive_hash_cache: dict[bytes, int] = {}



def positive_hash(key: bytes) -> int:
    """``murmur2(key) & 0x7fffffff``, remembered for short keys (the cache is bounded)."""
    positive = _positive_hash_cache.get(key)
    if positive is None:
        positive = _murmur2_u32(key) & 0x7FFFFFFF
        if len(key) <= _CACHE_MAX_KEY_BYTES:
            if len(_positive_hash_cache) >= _CACHE_MAX_ENTRIES:
                _positive_hash_cache.clear()
            _positive_hash_cache[key] = positive
    return positive


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Return the partition Kafka's default partitioner picks for ``key``.

    ``(murmur2(key) & 0x7fffffff) % num_partitions``, counting every partition
    of the topic (available or not). Raises ZeroDivisionError if
    ``num_partitions`` is 0.
    """
    return positive_hash(key) % num_partitions
