"""RecordAccumulator stepped by hand: batching, memory accounting, readiness, draining, retries, expiry.

Pure tests: no sockets, no clocks. Time is the ``now_ms`` every call takes; leaders come from a dict.
The semantics are the Java producer's ``RecordAccumulator`` (java-producer.md §8).
"""

from __future__ import annotations

import pytest

from kprod._core.accumulator import (
    BATCH_HEADER_BYTES,
    BatchState,
    PartitionQueue,
    ProducerBatch,
    RecordAccumulator,
    record_size_upper_bound,
)

TOPIC = "t"
LEADERS = {0: 1, 1: 2, 2: 1, 3: 2}
"""Partition -> leader node: partitions 0 and 2 on node 1, 1 and 3 on node 2."""
VALUE = b"v" * 100
BOUND = record_size_upper_bound(None, VALUE, None)


def leader_of(topic: str, partition: int) -> int:
    return LEADERS.get(partition, -1) if topic == TOPIC else -1


def no_leader(topic: str, partition: int) -> int:
    return -1


def always(q: PartitionQueue) -> bool:
    return True


def make_acc(
    *, batch_size: int = 16384, linger_ms: int = 100, buffer_memory: int = 1 << 24
) -> RecordAccumulator:
    return RecordAccumulator(batch_size=batch_size, linger_ms=linger_ms, buffer_memory=buffer_memory)


def append(
    acc: RecordAccumulator, partition: int, now_ms: int, value: bytes = VALUE, topic: str = TOPIC
) -> ProducerBatch:
    q = acc.queue(topic, partition)
    return acc.append(q, now_ms, None, value, None, record_size_upper_bound(None, value, None), now_ms)


def full_batches(acc: RecordAccumulator, partition: int, count: int, now_ms: int = 0) -> list[ProducerBatch]:
    """``count`` batches of one record each (needs an accumulator with a tiny batch.size)."""
    out = [append(acc, partition, now_ms) for _ in range(count)]
    assert len({id(b) for b in out}) == count
    return out


# -- append ---------------------------------------------------------------------------------------


def test_records_fill_a_batch_up_to_batch_size_then_open_a_new_one() -> None:
    batch_size = BATCH_HEADER_BYTES + 4 * BOUND
    acc = make_acc(batch_size=batch_size)
    first = append(acc, 0, 0)
    batch = first
    appended = 1
    while batch is first:
        batch = append(acc, 0, 0)
        appended += 1
    assert first.record_count == appended - 1 >= 2
    assert first.size_bytes <= batch_size
    assert first.size_bytes + BOUND > batch_size, "a new batch opened although the record still fit"
    assert not first.accepting
    assert batch.record_count == 1 and batch.accepting
    assert list(acc.queue(TOPIC, 0).batches) == [first, batch]


def test_the_first_record_always_fits_even_when_larger_than_batch_size() -> None:
    acc = make_acc(batch_size=50)
    big = append(acc, 0, 0, value=b"x" * 500)
    assert big.record_count == 1
    assert big.size_bytes > 50
    assert not big.accepting, "a batch past batch.size must be full"
    after = append(acc, 0, 0, value=b"y")
    assert after is not big and after.record_count == 1


def test_a_batch_stops_accepting_once_it_reaches_batch_size() -> None:
    acc = make_acc(batch_size=BATCH_HEADER_BYTES + 2 * BOUND)
    batch = append(acc, 0, 0)
    assert batch.accepting
    while append(acc, 0, 0) is batch:
        pass
    assert not batch.accepting


def test_each_partition_has_its_own_open_batch() -> None:
    acc = make_acc()
    a = append(acc, 0, 0)
    b = append(acc, 1, 0)
    assert a is not b
    assert append(acc, 0, 1) is a
    assert (a.topic, a.partition, b.partition) == (TOPIC, 0, 1)


def test_used_bytes_grows_by_exactly_the_accounted_bytes() -> None:
    acc = make_acc(batch_size=BATCH_HEADER_BYTES + 3 * BOUND)
    sizes: dict[int, int] = {}
    batches: list[ProducerBatch] = []
    for i in range(20):
        before = acc.used_bytes
        batch = append(acc, i % 3, i, value=b"z" * (i * 7))
        if id(batch) not in sizes:
            batches.append(batch)
        grew = batch.size_bytes - sizes.get(id(batch), 0)
        sizes[id(batch)] = batch.size_bytes
        assert acc.used_bytes - before == grew
    assert acc.used_bytes == sum(b.size_bytes for b in batches)
    assert acc.used_bytes == sum(b.accounted_bytes for b in batches)


def test_used_bytes_returns_to_zero_after_every_batch_is_released() -> None:
    acc = make_acc(batch_size=BATCH_HEADER_BYTES + 2 * BOUND)
    for i in range(12):
        append(acc, i % 4, 0)
    assert acc.used_bytes > 0
    drained = acc.drain(1, 0, 1 << 20, leader_of, always)
    rest = acc.abort_all()
    for batch in drained + rest:
        acc.release(batch)
    assert acc.used_bytes == 0


def test_has_room_is_bounded_by_buffer_memory() -> None:
    acc = make_acc(buffer_memory=BATCH_HEADER_BYTES + BOUND + 200)
    assert acc.has_room(BOUND)
    append(acc, 0, 0)
    assert not acc.has_room(BOUND + 200)


# -- ready ----------------------------------------------------------------------------------------


def test_ready_waits_for_linger_ms() -> None:
    acc = make_acc(linger_ms=100)
    append(acc, 0, 1_000)
    nodes, next_ms, unknown = acc.ready(1_099, leader_of, always)
    assert nodes == set() and unknown == set()
    assert next_ms == 1_100
    nodes, _, _ = acc.ready(1_100, leader_of, always)
    assert nodes == {LEADERS[0]}


def test_ready_reports_the_earliest_linger_expiry_as_next_check() -> None:
    acc = make_acc(linger_ms=100)
    append(acc, 1, 50)
    append(acc, 0, 20)
    _, next_ms, _ = acc.ready(30, leader_of, always)
    assert next_ms == 120


def test_a_full_batch_is_ready_at_once() -> None:
    acc = make_acc(batch_size=BATCH_HEADER_BYTES + 2 * BOUND, linger_ms=10_000)
    batch = append(acc, 1, 0)
    while append(acc, 1, 0) is batch:
        pass
    nodes, _, _ = acc.ready(0, leader_of, always)
    assert nodes == {LEADERS[1]}


@pytest.mark.parametrize("flag", ["flushing", "closing", "memory_waiters"])
def test_flush_close_and_memory_waiters_make_batches_ready_at_once(flag: str) -> None:
    acc = make_acc(linger_ms=10_000)
    append(acc, 0, 0)
    assert acc.ready(0, leader_of, always)[0] == set()
    setattr(acc, flag, 1 if flag == "memory_waiters" else True)
    assert acc.ready(0, leader_of, always)[0] == {LEADERS[0]}


def test_ready_reports_topics_without_leader() -> None:
    acc = make_acc(linger_ms=0)
    append(acc, 0, 0, topic="orphan")
    append(acc, 0, 0)
    nodes, _, unknown = acc.ready(10, leader_of, always)
    assert unknown == {"orphan"}
    assert nodes == {LEADERS[0]}


def test_ready_respects_the_senders_veto() -> None:
    acc = make_acc(linger_ms=0)
    append(acc, 0, 0)
    assert acc.ready(10, leader_of, lambda q: False)[0] == set()


# -- drain ----------------------------------------------------------------------------------------


def test_drain_takes_at_most_one_batch_per_partition() -> None:
    acc = make_acc(batch_size=1)
    full_batches(acc, 0, 3)
    full_batches(acc, 2, 3)
    taken = acc.drain(1, 0, 1 << 20, leader_of, always)
    assert sorted(b.partition for b in taken) == [0, 2]
    assert all(b.state is BatchState.IN_FLIGHT and not b.accepting for b in taken)


def test_drain_takes_only_partitions_led_by_the_node() -> None:
    acc = make_acc(linger_ms=0)
    for p in range(4):
        append(acc, p, 0)
    taken = acc.drain(2, 0, 1 << 20, leader_of, always)
    assert sorted(b.partition for b in taken) == [1, 3]
    assert acc.drain(2, 0, 1 << 20, leader_of, always) == []


def test_drain_respects_max_request_bytes() -> None:
    acc = make_acc(batch_size=1)
    batches = [append(acc, p, 0) for p in (0, 2)] + [append(acc, 0, 0)]
    size = batches[0].size_bytes
    assert all(b.size_bytes == size for b in batches)
    taken = acc.drain(1, 0, 2 * size - 1, leader_of, always)
    assert len(taken) == 1


def test_drain_always_takes_one_batch_even_if_larger_than_max_request_bytes() -> None:
    acc = make_acc(batch_size=1)
    append(acc, 0, 0, value=b"x" * 5_000)
    taken = acc.drain(1, 0, 100, leader_of, always)
    assert len(taken) == 1 and taken[0].size_bytes > 100


def test_drain_rotates_partitions_so_none_starves() -> None:
    acc = make_acc(batch_size=1)
    leaders = {p: 1 for p in range(3)}

    def one_node(topic: str, partition: int) -> int:
        return leaders[partition]

    for p in range(3):
        full_batches(acc, p, 4)
    served: list[int] = []
    for _ in range(6):
        taken = acc.drain(1, 0, 1, one_node, always)  # room for exactly one batch per request
        assert len(taken) == 1
        served.append(taken[0].partition)
    assert sorted(served[:3]) == [0, 1, 2], f"a partition waited while another went twice: {served}"
    assert sorted(served[3:]) == [0, 1, 2], served


def test_drain_rotation_with_room_for_two_of_three() -> None:
    acc = make_acc(batch_size=1)

    def one_node(topic: str, partition: int) -> int:
        return 1

    for p in range(3):
        full_batches(acc, p, 4)
    size = acc.queue(TOPIC, 0).batches[0].size_bytes
    counts = {0: 0, 1: 0, 2: 0}
    for _ in range(3):
        taken = acc.drain(1, 0, 2 * size, one_node, always)
        assert len(taken) == 2
        for b in taken:
            counts[b.partition] += 1
    assert counts == {0: 2, 1: 2, 2: 2}


def test_drain_keeps_per_partition_order() -> None:
    acc = make_acc(batch_size=1)
    created = full_batches(acc, 0, 5)
    out: list[ProducerBatch] = []
    while True:
        taken = acc.drain(1, 0, 1 << 20, leader_of, always)
        if not taken:
            break
        out.extend(taken)
    assert out == created


def test_drained_batches_accept_no_more_records() -> None:
    acc = make_acc(linger_ms=0)
    batch = append(acc, 0, 0)
    assert acc.drain(1, 0, 1 << 20, leader_of, always) == [batch]
    assert append(acc, 0, 1) is not batch
    assert batch.record_count == 1


def test_a_filling_batch_within_linger_does_not_ride_along_with_a_ready_one() -> None:
    """Unlike Java's drain, a partition's only batch, still accepting and younger than linger.ms,
    stays to fill even when its broker is being sent to: under CPython's GIL, sending half-empty
    batches costs more requests than the latency it saves (docs/buffering-and-batching.md)."""
    acc = make_acc(batch_size=BATCH_HEADER_BYTES + 2 * BOUND, linger_ms=100)
    full = append(acc, 0, 0)
    while append(acc, 0, 0) is full:
        pass  # partition 0: a full batch, then a new one
    filling = append(acc, 2, 50)  # partition 2, same leader (node 1), created at 50
    nodes, next_ms, _ = acc.ready(60, leader_of, always)
    assert nodes == {1}
    assert next_ms == 150  # partition 2's batch lingers until 50 + 100
    assert acc.drain(1, 60, 1 << 20, leader_of, always) == [full]
    assert filling.accepting and list(acc.queue(TOPIC, 2).batches) == [filling]
    # Once lingered, or when a flush forces everything, it goes.
    taken = acc.drain(1, 150, 1 << 20, leader_of, always)
    assert filling in taken
    acc2 = make_acc(linger_ms=100)
    young = append(acc2, 2, 0)
    acc2.flushing = True
    assert acc2.drain(1, 1, 1 << 20, leader_of, always) == [young]


def test_ready_reports_the_linger_expiry_of_a_batch_left_behind_on_a_ready_node() -> None:
    acc = make_acc(batch_size=BATCH_HEADER_BYTES + 2 * BOUND, linger_ms=100)
    append(acc, 2, 40)  # node 1, lingers until 140
    full = append(acc, 0, 0)
    while append(acc, 0, 90) is full:
        pass  # node 1 is ready now; partition 0's new batch (created at 90) lingers until 190
    nodes, next_ms, _ = acc.ready(95, leader_of, always)
    assert nodes == {1} and next_ms == 140


# -- reenqueue ------------------------------------------------------------------------------------


def test_reenqueue_puts_the_retried_batch_at_the_front() -> None:
    acc = make_acc(batch_size=1)
    first, second, third = full_batches(acc, 0, 3)
    assert acc.drain(1, 0, 1 << 20, leader_of, always) == [first]
    acc.reenqueue(first, 10, 0)
    assert first.state is BatchState.QUEUED and first.attempts == 1
    assert list(acc.queue(TOPIC, 0).batches) == [first, second, third]


def test_reenqueue_keeps_retried_batches_in_sequence_order() -> None:
    acc = make_acc(batch_size=1)
    a, b, c, fresh = full_batches(acc, 0, 4)
    for seq, batch in enumerate((a, b, c)):
        assert acc.drain(1, 0, 1 << 20, leader_of, always) == [batch]
        batch.base_sequence = seq
    acc.reenqueue(c, 10, 0)
    acc.reenqueue(a, 11, 0)
    acc.reenqueue(b, 12, 0)
    assert list(acc.queue(TOPIC, 0).batches) == [a, b, c, fresh]


def test_a_retried_batch_is_neither_ready_nor_drained_during_its_backoff() -> None:
    acc = make_acc(linger_ms=0)
    batch = append(acc, 0, 0)
    assert acc.drain(1, 0, 1 << 20, leader_of, always) == [batch]
    acc.reenqueue(batch, 1_000, 100)
    nodes, next_ms, _ = acc.ready(1_099, leader_of, always)
    assert nodes == set()
    assert next_ms == 1_100
    assert acc.drain(1, 1_099, 1 << 20, leader_of, always) == []
    assert acc.ready(1_100, leader_of, always)[0] == {1}
    assert acc.drain(1, 1_100, 1 << 20, leader_of, always) == [batch]


# -- expiry ---------------------------------------------------------------------------------------


def test_expired_removes_batches_older_than_delivery_timeout() -> None:
    acc = make_acc(batch_size=1)
    old = append(acc, 0, 0)
    young = append(acc, 0, 500)
    assert acc.expired(999, 1_000) == []
    assert acc.expired(1_000, 1_000) == [old]
    assert list(acc.queue(TOPIC, 0).batches) == [young]
    assert acc.expired(1_500, 1_000) == [young]
    assert not acc.has_queued()


def test_next_expiry_is_the_oldest_queued_batch_plus_delivery_timeout() -> None:
    acc = make_acc()
    assert acc.next_expiry_ms(1_000) is None
    append(acc, 1, 300)
    append(acc, 0, 200)
    assert acc.next_expiry_ms(1_000) == 1_200


def test_queue_sizes_need_every_partition_used() -> None:
    acc = make_acc(batch_size=1)
    full_batches(acc, 0, 2)
    assert acc.queue_sizes(TOPIC, 3) is None
    full_batches(acc, 1, 1)
    acc.queue(TOPIC, 2)
    assert acc.queue_sizes(TOPIC, 3) == [2, 1, 0]


def test_no_leader_means_nothing_is_ready_or_drained() -> None:
    acc = make_acc(linger_ms=0)
    append(acc, 0, 0)
    nodes, _, unknown = acc.ready(5, no_leader, always)
    assert nodes == set() and unknown == {TOPIC}
    assert acc.drain(1, 5, 1 << 20, no_leader, always) == []
