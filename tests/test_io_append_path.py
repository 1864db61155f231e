"""The append fast path (``ProducerEngine.try_append_plain``) against the general path.

The fast path inlines record encoding, the sticky partitioner's byte accounting
and key hashing for the common case; ``try_append_locked`` is the reference (it
calls ``RecordAccumulator.append`` and ``RecordBatchBuilder.append``). Two engines
get the same records and the same random seed: one tries the fast path first, as
``Producer.send`` does, the other takes the general path for every record. They
must place every record in the same partition, batch and position and build
byte-identical batches. No sockets: the engines' loops never run; metadata is fed
from a MetadataSnapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
from collections.abc import Generator, Iterator, Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kprod._core.accumulator import ProducerBatch, record_size_upper_bound
from kprod._core.murmur2 import partition_for_key
from kprod._io.engine import WAIT_METADATA, ProducerEngine, Wait
from kprod.config import ProducerConfig
from kprod.errors import KprodError
from kprod.protocol.metadata import MetadataSnapshot, PartitionSnapshot, TopicSnapshot
from kprod.records.batch import RecordBatchBuilder

TOPIC = "t"
PARTITIONS = 5
BASE_TS = 1_700_000_000_000


def snapshot(partitions: int = PARTITIONS) -> MetadataSnapshot:
    parts = {p: PartitionSnapshot(1, 0, 0) for p in range(partitions)}
    return MetadataSnapshot(
        brokers={1: ("b1", 9092)}, controller_id=1, cluster_id="c", topics={TOPIC: TopicSnapshot(0, parts)}
    )


class SlowEngine(ProducerEngine):
    """Every record through the general path."""

    def __init__(self, config: ProducerConfig, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(config, loop)
        self.try_append_plain = lambda *args: None


IMPLEMENTATIONS = ["compiled", "python"]
"""The fast path's two implementations: kprod._speedups (C) and the Python closure."""


@contextlib.contextmanager
def fast_path_implementation(implementation: str) -> Iterator[None]:
    """Engines made inside get the compiled fast path or the Python one (KPROD_PURE_PYTHON)."""
    before = os.environ.get("KPROD_PURE_PYTHON")
    os.environ["KPROD_PURE_PYTHON"] = "1" if implementation == "python" else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["KPROD_PURE_PYTHON"]
        else:
            os.environ["KPROD_PURE_PYTHON"] = before


def make_engine(
    cls: type[ProducerEngine], seed: int, **settings: object
) -> Generator[ProducerEngine, None, None]:
    """An engine with the compiled fast path (when built) and these settings; see make_engine_with."""
    return make_engine_with(cls, seed, "compiled", settings)


def make_engine_with(
    cls: type[ProducerEngine], seed: int, implementation: str, settings: Mapping[str, object]
) -> Generator[ProducerEngine, None, None]:
    """An engine whose loop never runs, metadata fed from :func:`snapshot`, the given fast path."""
    loop = asyncio.new_event_loop()
    try:
        config = ProducerConfig.from_user(
            {"bootstrap.servers": "b1:9092", "batch.size": 2048, "buffer.memory": 1 << 24, **settings}
        )
        with fast_path_implementation(implementation):
            engine = cls(config, loop)
        engine.rng.seed(seed)
        engine.metadata.on_update(snapshot(), 0)
        yield engine
    finally:
        loop.close()


Record = tuple[int, bytes | None, bytes | None, int | None, list[tuple[str, bytes | None]] | None]
SEAL = (0, None, None, -1, None)
"""Not a record: the sender takes every open batch (they stop accepting), as a linger.ms expiry would."""

records_strategy = st.lists(
    st.tuples(
        st.integers(-9000, 9000),  # timestamp offset from the first record (some beyond the varint table)
        st.one_of(
            st.none(), st.sampled_from([b"", b"a", b"key-1", b"key-2", b"k" * 300]), st.binary(max_size=20)
        ),
        st.one_of(
            st.none(), st.binary(min_size=60, max_size=200), st.sampled_from([b"v" * 3000, b"w" * 8100])
        ),
        st.one_of(st.none(), st.none(), st.none(), st.integers(0, PARTITIONS - 1)),
        st.one_of(st.none(), st.none(), st.just([("h", b"1"), ("n", None)])),
    ),
    min_size=50,
    max_size=400,
).flatmap(
    lambda records: st.lists(
        st.sampled_from(range(len(records) + 1)), max_size=max(1, len(records) // 4)
    ).map(lambda cuts: [r for i, rec in enumerate(records) for r in ([SEAL] if i in cuts else []) + [rec]])
)


FAST_HITS: dict[int, int] = {}
"""Records each engine (by id) placed through the fast path, counted by :func:`append_all`."""


def append_all(engine: ProducerEngine, records: Sequence[Record]) -> list[tuple[int, int, int]]:
    """Append every record; return (partition, batch number in its partition, index) per record."""
    placed: list[tuple[int, int, int]] = []
    numbers: dict[int, int] = {}
    for offset, key, value, partition, headers in records:
        if partition == -1:
            for queued in engine.accumulator.queued_batches():
                queued.accepting = False
            continue
        bound = record_size_upper_bound(key, value, headers)
        with engine.lock:
            batch: ProducerBatch | Wait | None = None
            if headers is None:
                batch = engine.try_append_plain(TOPIC, partition, BASE_TS + offset, key, value)
                if batch is not None:
                    FAST_HITS[id(engine)] = FAST_HITS.get(id(engine), 0) + 1
            if batch is None:
                batch = engine.try_append_locked(
                    TOPIC, partition, BASE_TS + offset, key, value, headers, bound
                )
        assert isinstance(batch, ProducerBatch)
        number = numbers.setdefault(id(batch), len(numbers))
        placed.append((batch.partition, number, batch.record_count - 1))
    return placed


def batches_of(engine: ProducerEngine) -> list[tuple[int, bytes]]:
    return [(b.partition, bytes(b.build())) for b in engine.accumulator.queued_batches()]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@settings(max_examples=60, deadline=None)
@given(records=records_strategy, seed=st.integers(0, 2**32 - 1), adaptive=st.booleans())
def test_fast_path_places_and_encodes_like_the_reference_path(
    implementation: str, records: list[Record], seed: int, adaptive: bool
) -> None:
    extra = {"partitioner.adaptive.partitioning.enable": adaptive}
    fast_gen = make_engine_with(ProducerEngine, seed, implementation, extra)
    slow_gen = make_engine(SlowEngine, seed, **extra)
    fast, slow = next(fast_gen), next(slow_gen)
    try:
        FAST_HITS.pop(id(fast), None)
        assert append_all(fast, records) == append_all(slow, records)
        assert batches_of(fast) == batches_of(slow)
        # That the fast path takes records at all is asserted by the deterministic tests below
        # (an example here may legitimately have none it can take: headers, large values, keys
        # whose hash the global cache dropped).
        assert fast.accumulator.used_bytes == slow.accumulator.used_bytes
        assert fast.accumulator.full_batches == slow.accumulator.full_batches
        assert fast.partitioners[TOPIC].produced_bytes == slow.partitioners[TOPIC].produced_bytes
    finally:
        fast_gen.close()
        slow_gen.close()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fast_path_batches_equal_the_builder_and_decode_back(implementation: str) -> None:
    gen = make_engine_with(ProducerEngine, 1, implementation, {})
    engine = next(gen)
    try:
        rng = random.Random(7)
        records: list[Record] = [
            (
                rng.randrange(-100, 100),
                rng.choice([None, b"k%d" % rng.randrange(50)]),
                rng.randbytes(60),
                rng.choice([None, None, rng.randrange(PARTITIONS)]),
                None,
            )
            for _ in range(2000)
        ]
        append_all(engine, records)
        taken_plain = 0
        for offset, key, value, partition, _ in records[:200]:
            with engine.lock:
                if engine.try_append_plain(TOPIC, partition, BASE_TS + offset, key, value) is not None:
                    taken_plain += 1
                else:
                    engine.try_append_locked(TOPIC, partition, BASE_TS + offset, key, value, None, 200)
        assert taken_plain > 170  # the others open batches: the general path's work
        for batch in engine.accumulator.queued_batches():
            reference = RecordBatchBuilder(batch.base_timestamp_ms)
            for ts, key, value, headers in batch.decode_records():
                reference.append(ts, key, value, headers or None)
            assert bytes(reference.build()) == bytes(batch.build())
            assert batch.size_bytes == len(batch.buffer)
    finally:
        gen.close()


def test_fast_path_is_off_for_a_custom_partitioner_and_after_a_metadata_change() -> None:
    calls: list[bytes | None] = []

    def by_length(topic: str, key: bytes | None, value: bytes | None, count: int) -> int:
        calls.append(key)
        return len(key or b"") % count

    gen = make_engine(ProducerEngine, 1, partitioner=by_length)
    engine = next(gen)
    try:
        append_all(engine, [(0, b"abc", b"v", None, None)] * 10)
        assert len(calls) == 10  # every record asked the custom partitioner
        assert {b.partition for b in engine.accumulator.queued_batches()} == {3}
    finally:
        gen.close()

    gen = make_engine(ProducerEngine, 1)
    engine = next(gen)
    try:
        append_all(engine, [(0, b"key-1", b"v", None, None)] * 3)
        assert engine._fast_appenders
        engine.metadata.on_update(snapshot(partitions=2), 0)
        assert not engine._fast_appenders, "a metadata update must drop the fast path's cache"
        placed = append_all(engine, [(0, b"key-1", b"v", None, None)])
        assert placed[0][0] == partition_for_key(b"key-1", 2)
        append_all(engine, [(0, b"key-1", b"v", None, None)])
        assert engine._fast_appenders
        # A leader learned from a Produce answer (KIP-951) changes the view as well.
        engine.metadata.update_leader(TOPIC, 0, 1, 99)
        assert not engine._fast_appenders and engine.metadata.version >= 3
    finally:
        gen.close()


def test_an_unknown_topic_waits_for_metadata() -> None:
    gen = make_engine(ProducerEngine, 1)
    engine = next(gen)
    try:
        with engine.lock:
            assert engine.try_append_locked("other", None, BASE_TS, None, b"v", None, 100) == WAIT_METADATA
    finally:
        gen.close()


@pytest.mark.parametrize("partition", [-1, PARTITIONS])
def test_a_partition_out_of_range_raises_on_the_fast_path_too(partition: int) -> None:
    gen = make_engine(ProducerEngine, 1)
    engine = next(gen)
    try:
        append_all(engine, [(0, None, b"v", 0, None)])
        with engine.lock:
            assert engine.try_append_plain(TOPIC, partition, BASE_TS, None, b"v") is None
            with pytest.raises(KprodError, match="does not exist"):
                engine.try_append_locked(TOPIC, partition, BASE_TS, None, b"v", None, 100)
    finally:
        gen.close()


@pytest.mark.parametrize("seal_every", [5, 12, 30])
@pytest.mark.parametrize("keyed_every", [0, 4])
def test_sticky_switches_like_the_reference_when_batches_leave_before_they_fill(
    seal_every: int, keyed_every: int
) -> None:
    """The 2 x batch.size rule: a partition whose batches the sender takes early still gets its share."""
    records: list[Record] = []
    for i in range(600):
        if i % seal_every == 0:
            records.append(SEAL)
        key = b"key-%d" % i if keyed_every and i % keyed_every == 0 else None
        records.append((i // 50, key, b"x" * 100, None, None))
    fast_gen, slow_gen = make_engine(ProducerEngine, 3), make_engine(SlowEngine, 3)
    fast, slow = next(fast_gen), next(slow_gen)
    try:
        placed = append_all(fast, records)
        assert placed == append_all(slow, records)
        appended = [r for r in records if r is not SEAL]
        keyless = [p for (p, _, _), r in zip(placed, appended, strict=True) if r[1] is None]
        switches = sum(1 for a, b in itertools.pairwise(keyless) if a != b)
        assert switches >= 600 * 100 // (2 * 2048) // 2  # it does move on, at least every ~2 x batch.size
        assert batches_of(fast) == batches_of(slow)
    finally:
        fast_gen.close()
        slow_gen.close()


def test_fast_path_takes_no_record_the_general_path_would_refuse_as_too_large() -> None:
    from kprod._io.frontend import RecordPreparer
    from kprod.errors import RecordTooLargeError

    gen = make_engine(ProducerEngine, 1, **{"max.request.size": 1_000, "batch.size": 100_000})
    engine = next(gen)
    try:
        preparer = RecordPreparer(engine.config)
        append_all(engine, [(0, None, b"x", None, None)])  # opens the sticky batch
        taken = refused = 0
        for size in range(850, 1_000):
            value = b"v" * size
            try:
                preparer.prepare(TOPIC, None, value, None, None, BASE_TS)
                fits = True
            except RecordTooLargeError:
                fits = False
            with engine.lock:
                batch = engine.try_append_plain(TOPIC, None, BASE_TS, None, value)
            assert fits or batch is None, f"{size}-byte value taken by the fast path, refused by prepare()"
            taken += batch is not None
            refused += not fits
        assert taken and refused  # both sides of the limit were exercised
    finally:
        gen.close()


def test_in_a_transaction_the_fast_path_appends_only_while_the_transaction_is_open() -> None:
    """Transactional records take the fast path into open batches (the general path opened them after
    adding their partitions to the transaction), and stop taking it as soon as the transaction cannot
    accept records: the general path then raises what the transaction's state says."""
    from kprod import TransactionAbortableError
    from kprod._core.transactions import TxnState
    from kprod.errors import KafkaError

    gen = make_engine(ProducerEngine, 3, **{"transactional.id": "fast-txn"})
    engine = next(gen)
    try:
        txn = engine.txn
        assert txn is not None
        txn.state = TxnState.READY  # as after init_transactions()
        txn.begin_transaction()
        records = [(0, None, b"v" * 50, None, None)] * 30 + [(0, b"key-1", b"w" * 40, None, None)] * 30
        append_all(engine, records)
        first = {tp for tp in txn._new_partitions | txn._partitions}
        assert first == {(TOPIC, b.partition) for b in engine.accumulator.queued_batches()}
        with engine.lock:
            assert engine.try_append_plain(TOPIC, None, BASE_TS, None, b"v" * 50) is not None  # open batch
            txn.on_batch_error(KafkaError(10, "a record of the transaction failed"))
            assert txn.state is TxnState.ABORTABLE_ERROR
            assert engine.try_append_plain(TOPIC, None, BASE_TS, None, b"v" * 50) is None
            with pytest.raises(TransactionAbortableError):
                engine.try_append_locked(TOPIC, None, BASE_TS, None, b"v" * 50, None, 200)
    finally:
        gen.close()

    # The same records in a transaction: fast-then-general and general-only build identical batches.
    built = []
    for cls in (ProducerEngine, SlowEngine):
        gen = make_engine(cls, 5, **{"transactional.id": f"diff-{cls.__name__}"})
        engine = next(gen)
        try:
            assert engine.txn is not None
            engine.txn.state = TxnState.READY
            engine.txn.begin_transaction()
            append_all(engine, records)
            built.append(batches_of(engine))
        finally:
            gen.close()
    assert built[0] == built[1]
