"""Partition choice for records: explicit, custom, keyed (murmur2) and uniform sticky.

Owns the built-in partitioner of KIP-794 (Kafka 3.3+): keyed records go to
``(murmur2(key) & 0x7fffffff) % partition_count`` over *all* partitions;
keyless records stick to one partition until about ``batch.size`` bytes went
to it, then move on. It must not know about sockets, threads or clocks;
randomness comes from an injected :class:`random.Random`.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence

__all__ = ["LIBRDKAFKA_PARTITIONERS", "KeyedPartitioner", "StickyPartitioner", "crc32_hash", "fnv1a_hash"]


class StickyPartitioner:
    """The uniform sticky partitioner of one topic (Java's ``BuiltInPartitioner``).

    The switching rule is Java's: after each append, ``produced_bytes`` grows by
    the bytes the append added (including a new batch's header); the partition
    changes when ``produced_bytes >= batch_size`` *and* the partition's last
    batch is full, or unconditionally at ``2 * batch_size``. Waiting for the
    last batch to be full avoids leaving a fraction of a batch behind when
    ``linger.ms`` is large.
    """

    __slots__ = ("_rng", "batch_size", "current", "produced_bytes")

    def __init__(self, batch_size: int, rng: random.Random) -> None:
        self.batch_size = batch_size
        self._rng = rng
        self.current = -1
        """The sticky partition, or -1 before the first choice."""
        self.produced_bytes = 0
        """Bytes appended to ``current`` since it was chosen."""

    def partition(
        self,
        partition_count: int,
        available: Sequence[int],
        queue_sizes: Callable[[], Sequence[int] | None],
    ) -> int:
        """The partition for the next keyless record, choosing one if needed.

        ``available`` lists partitions with a known leader; ``queue_sizes()``
        returns the number of batches waiting per partition (or None) for
        adaptive partitioning, and is called only when a partition is chosen.
        """
        current = self.current
        if current < 0 or current >= partition_count:
            self.next_partition(partition_count, available, queue_sizes())
            current = self.current
        return current

    def on_append(self, appended_bytes: int, last_batch_full: bool) -> bool:
        """Account an append to the sticky partition; True when it is time to switch.

        The caller then calls :meth:`next_partition` (with queue sizes for adaptive
        partitioning, computed only then). ``ProducerEngine.try_append_locked`` calls it; the
        fast path ``try_append_plain`` inlines the same rule (about 0.2 µs per keyless record
        measured); change both, ``tests/test_io_append_path.py`` compares them.
        """
        produced = self.produced_bytes + appended_bytes
        self.produced_bytes = produced
        size = self.batch_size
        return (produced >= size and last_batch_full) or produced >= 2 * size

    def next_partition(
        self,
        partition_count: int,
        available: Sequence[int],
        queue_sizes: Sequence[int] | None,
    ) -> None:
        """Pick a new sticky partition and reset the byte count.

        With ``queue_sizes`` that differ, a partition with a shorter queue is
        more likely: weight ``max + 1 - size`` (Java's cumulative frequency
        table). Otherwise uniform over ``available`` (or over all partitions
        when none has a leader).
        """
        self.produced_bytes = 0
        rng = self._rng
        if queue_sizes is not None and len(queue_sizes) == partition_count and len(available) > 1:
            # Java's cumulative frequency table over partitions with a leader only.
            sizes = [queue_sizes[p] for p in available]
            smallest = min(sizes)
            largest = max(sizes)
            if smallest != largest:
                cumulative: list[int] = []
                total = 0
                for size in sizes:
                    total += largest + 1 - size
                    cumulative.append(total)
                pick = rng.randrange(total)
                self.current = available[bisect.bisect_right(cumulative, pick)]
                return
        if available:
            self.current = available[rng.randrange(len(available))] if len(available) > 1 else available[0]
        else:
            self.current = rng.randrange(partition_count) if partition_count > 0 else -1


# ---------------------------------------------------------------------------- librdkafka's partitioners


def crc32_hash(key: bytes) -> int:
    """CRC-32 (IEEE, zlib's) of ``key``: librdkafka's ``consistent`` partitioners."""
    import zlib

    return zlib.crc32(key)


def fnv1a_hash(key: bytes) -> int:
    """32-bit FNV-1a of ``key`` as a signed int32, as librdkafka computes it."""
    h = 0x811C9DC5
    for byte in key:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


KeyedPartitioner = Callable[[bytes | None, int, random.Random], int]
"""``(key, partition_count, rng) -> partition``, or -1 for "the sticky partitioner chooses"."""


def _murmur2_positive(key: bytes) -> int:
    from kprod._core.murmur2 import murmur2

    return murmur2(key) & 0x7FFFFFFF


def _consistent(key: bytes | None, count: int, rng: random.Random) -> int:
    return crc32_hash(key or b"") % count


def _consistent_random(key: bytes | None, count: int, rng: random.Random) -> int:
    return crc32_hash(key) % count if key else -1


def _murmur2(key: bytes | None, count: int, rng: random.Random) -> int:
    return _murmur2_positive(key or b"") % count


def _murmur2_random(key: bytes | None, count: int, rng: random.Random) -> int:
    return _murmur2_positive(key) % count if key is not None else -1


def _fnv1a(key: bytes | None, count: int, rng: random.Random) -> int:
    return abs(fnv1a_hash(key or b"")) % count


def _fnv1a_random(key: bytes | None, count: int, rng: random.Random) -> int:
    return abs(fnv1a_hash(key)) % count if key is not None else -1


def _random(key: bytes | None, count: int, rng: random.Random) -> int:
    return rng.randrange(count) if key is not None else -1


LIBRDKAFKA_PARTITIONERS: dict[str, KeyedPartitioner] = {
    "random": _random,
    "consistent": _consistent,
    "consistent_random": _consistent_random,
    "murmur2": _murmur2,
    "murmur2_random": _murmur2_random,
    "fnv1a": _fnv1a,
    "fnv1a_random": _fnv1a_random,
}
"""librdkafka's ``partitioner`` values, placing keyed records as librdkafka does. -1 means the record
goes to the sticky partitioner (librdkafka's keyless records, and null keys of the ``*_random``
ones, use its sticky partitioning too)."""
