"""SenderCore stepped by hand, like Kafka's SenderTest: fake time, canned Produce responses, no sockets.

A two-broker cluster with one topic of four partitions (0 and 2 led by node 1, 1 and 3 by node 2)
is fed to ClusterMetadata from a MetadataSnapshot; records go into a RecordAccumulator; each test
drives ``poll(now_ms, node_slots)`` and answers the plans it returns. The last part is a Hypothesis
state machine that plays an idempotent broker against the core.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kprod._core.accumulator import (
    BATCH_HEADER_BYTES,
    ProducerBatch,
    RecordAccumulator,
    record_size_upper_bound,
)
from kprod._core.metadata import ClusterMetadata
from kprod._core.sender import PollResult, ProduceRequestPlan, SenderCore, SenderSettings
from kprod.errors import (
    BrokerConnectionError,
    KafkaError,
    KafkaTimeoutError,
    KprodError,
    Persisted,
    ProducerClosedError,
    RecordTooLargeError,
)
from kprod.protocol.metadata import MetadataSnapshot, PartitionSnapshot, TopicSnapshot
from kprod.protocol.produce import PartitionProduceResponse, ProduceResponse, TopicProduceResponse

TOPIC = "t"
LEADERS = {0: 1, 1: 2, 2: 1, 3: 2}
NODE_PARTITIONS = {1: {0, 2}, 2: {1, 3}}
LEADER_EPOCH = 5
BROKERS = {1: ("b1", 9092), 2: ("b2", 9092)}
VALUE = b"v" * 100
BOUND = record_size_upper_bound(None, VALUE, None)
LINGER = 100
BACKOFF = 100
BACKOFF_MAX = 1_000
DELIVERY_TIMEOUT = 10_000

NOT_LEADER = 6
NOT_ENOUGH_REPLICAS = 19
TOPIC_AUTHORIZATION_FAILED = 29
OUT_OF_ORDER = 45
DUPLICATE_SEQUENCE = 46
INVALID_PRODUCER_EPOCH = 47
MESSAGE_TOO_LARGE = 10
PRODUCER_FENCED = 90


def snapshot() -> MetadataSnapshot:
    partitions = {p: PartitionSnapshot(leader, LEADER_EPOCH, 0) for p, leader in LEADERS.items()}
    topics = {TOPIC: TopicSnapshot(0, partitions)}
    return MetadataSnapshot(brokers=BROKERS, controller_id=1, cluster_id="c", topics=topics)


def disconnect() -> BrokerConnectionError:
    return BrokerConnectionError("connection to broker 1 lost")


class Harness:
    """An accumulator, a metadata view fed by ``snapshot()`` and a SenderCore, stepped by hand."""

    def __init__(
        self, *, linger_ms: int = LINGER, batch_size: int = 16_384, seed: int = 0, **overrides: Any
    ) -> None:
        values: dict[str, Any] = {
            "acks": -1,
            "request_timeout_ms": 30_000,
            "delivery_timeout_ms": DELIVERY_TIMEOUT,
            "max_request_size": 1 << 20,
            "max_in_flight": 5,
            "retries": 2**31 - 1,
            "retry_backoff_ms": BACKOFF,
            "retry_backoff_max_ms": BACKOFF_MAX,
            "idempotent": False,
        }
        values.update(overrides)
        self.acc = RecordAccumulator(batch_size=batch_size, linger_ms=linger_ms, buffer_memory=1 << 24)
        self.metadata = ClusterMetadata(max_age_ms=300_000, max_idle_ms=300_000, refresh_backoff_ms=BACKOFF)
        self.metadata.want_topic(TOPIC, 0)
        self.metadata.on_update_started(0)
        self.metadata.on_update(snapshot(), 0)
        self.core = SenderCore(SenderSettings(**values), self.acc, self.metadata, random.Random(seed))

    def append(self, partition: int, now_ms: int, value: bytes = VALUE) -> ProducerBatch:
        q = self.acc.queue(TOPIC, partition)
        bound = record_size_upper_bound(None, value, None)
        return self.acc.append(q, now_ms, None, value, None, bound, now_ms)

    def poll(self, now_ms: int, slots: int | dict[int, int] = 5) -> PollResult:
        per_node = slots if isinstance(slots, dict) else dict.fromkeys(BROKERS, slots)
        result = self.core.poll(now_ms, lambda node: per_node.get(node, -1))
        assert result.next_wakeup_ms >= now_ms
        return result

    def prime(self, *partitions: int) -> None:
        """Write and acknowledge one single-record batch (sequence 0) in each partition, at time 0.

        An idempotent producer sends a partition's first batch alone (the broker takes any first
        sequence while it has no state for the producer); tests of pipelining start after it.
        """
        for partition in partitions:
            batch = self.append(partition, 0)
            batch.accepting = False
        plans = self.send(0)
        for plan in plans:
            assert all(b.done for b in self.core.on_produce_response(plan, respond(plan), 0))
        assert all(self.acc.queue(TOPIC, p).producer_state_known for p in partitions)

    def send(self, now_ms: int, slots: int | dict[int, int] = 5) -> list[ProduceRequestPlan]:
        """poll, then write every plan (``on_sent``)."""
        plans = self.poll(now_ms, slots).requests
        for plan in plans:
            self.core.on_sent(plan)
        return plans


def respond(
    plan: ProduceRequestPlan,
    code: int = 0,
    *,
    codes: dict[int, int] | None = None,
    base_offset: int = 1_000,
    log_append_time_ms: int = -1,
    current_leader: tuple[int, int] | None = None,
) -> ProduceResponse:
    """A canned answer to ``plan``: ``code`` for every partition unless ``codes`` says otherwise."""
    parts = [
        PartitionProduceResponse(
            index=b.partition,
            error_code=(codes or {}).get(b.partition, code),
            base_offset=base_offset + 100 * b.partition,
            log_append_time_ms=log_append_time_ms,
            current_leader=current_leader,
        )
        for b in plan.batches
    ]
    return ProduceResponse(topics=[TopicProduceResponse(TOPIC, parts)], throttle_time_ms=0)


def drained(plans: list[ProduceRequestPlan]) -> list[ProducerBatch]:
    return [b for plan in plans for b in plan.batches]


def only_plan(plans: list[ProduceRequestPlan]) -> ProduceRequestPlan:
    assert len(plans) == 1, plans
    return plans[0]


# -- routing and draining -------------------------------------------------------------------------


def test_nothing_is_drained_before_linger_ms() -> None:
    h = Harness()
    h.append(0, 0)
    assert h.poll(LINGER - 1).requests == []
    assert len(h.poll(LINGER).requests) == 1


def test_one_plan_per_ready_node_with_batches_routed_to_leaders() -> None:
    h = Harness()
    for p in LEADERS:
        h.append(p, 0)
    plans = h.poll(LINGER).requests
    assert sorted(plan.node_id for plan in plans) == [1, 2]
    for plan in plans:
        assert {b.partition for b in plan.batches} == NODE_PARTITIONS[plan.node_id]
        assert plan.acks == -1 and plan.timeout_ms == 30_000 and plan.created_ms == LINGER


def test_a_node_without_connection_is_listed_for_connecting() -> None:
    h = Harness()
    for p in LEADERS:
        h.append(p, 0)
    result = h.poll(LINGER, {1: -1, 2: 5})
    assert result.connect_nodes == {1}
    assert [plan.node_id for plan in result.requests] == [2]
    assert {b.partition for b in h.acc.queued_batches()} == {0, 2}


def test_zero_slots_drain_nothing() -> None:
    h = Harness()
    h.append(0, 0)
    result = h.poll(LINGER, 0)
    assert result.requests == [] and result.connect_nodes == set()
    assert len(list(h.acc.queued_batches())) == 1


def test_at_most_n_plans_for_n_slots() -> None:
    h = Harness(batch_size=1)  # one record per batch
    for _ in range(3):
        h.append(0, 0)
        h.append(2, 0)
    plans = h.poll(LINGER, {1: 2}).requests
    assert len(plans) == 2
    assert all(sorted(b.partition for b in plan.batches) == [0, 2] for plan in plans)
    assert len(h.poll(LINGER, {1: 5}).requests) == 1  # one batch left per partition


def test_a_plan_holds_at_most_one_batch_per_partition() -> None:
    h = Harness(batch_size=1)
    for _ in range(4):
        h.append(0, 0)
    plans = h.poll(LINGER, {1: 5}).requests
    assert [len(plan.batches) for plan in plans] == [1, 1, 1, 1]
    assert [b.partition for b in drained(plans)] == [0, 0, 0, 0]


def test_leaderless_partitions_request_a_metadata_update() -> None:
    h = Harness(linger_ms=0)
    q = h.acc.queue("other", 0)
    h.acc.append(q, 0, None, VALUE, None, BOUND, 0)
    assert not h.metadata.update_requested
    assert h.poll(0).requests == []
    assert h.metadata.update_requested


# -- idempotence ----------------------------------------------------------------------------------


def test_nothing_is_drained_while_a_producer_id_is_needed() -> None:
    h = Harness(idempotent=True)
    h.append(0, 0)
    assert h.core.needs_producer_id
    assert h.poll(LINGER).requests == []
    h.core.on_producer_id(7, 0)
    assert not h.core.needs_producer_id
    assert len(h.poll(LINGER).requests) == 1


def test_batches_carry_the_producer_id_epoch_and_contiguous_sequences() -> None:
    h = Harness(idempotent=True, batch_size=BATCH_HEADER_BYTES + 3 * BOUND)
    h.core.on_producer_id(7, 0)
    h.prime(0)  # sequence 0
    first = [h.append(0, 0) for _ in range(5)]
    other = h.append(1, 0)
    plans = h.send(LINGER)
    later = h.append(0, 200)
    plans += h.send(200 + LINGER)
    p0 = [b for b in drained(plans) if b.partition == 0]
    assert p0 == [*dict.fromkeys(first), later]
    counts = [b.record_count for b in p0]
    assert len(set(counts)) > 1, "batches of different sizes make the sequence check meaningful"
    assert [b.base_sequence for b in p0] == [1 + sum(counts[:i]) for i in range(len(counts))]
    assert all((b.producer_id, b.producer_epoch) == (7, 0) for b in drained(plans))
    assert other.base_sequence == 0


def test_a_partitions_first_batch_goes_alone_until_the_broker_acknowledged_one() -> None:
    """The broker keeps no sequence state before a partition's first write under a producer id, and
    then takes any first sequence: a second batch in flight could be written before a refused first."""
    h = Harness(idempotent=True, batch_size=1)
    h.core.on_producer_id(7, 0)
    first, second = h.append(0, 0), h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    assert plan.batches == [first], "the second batch must wait for the first one's answer"
    assert h.send(LINGER + 1) == []
    h.core.on_produce_response(plan, respond(plan), LINGER + 2)
    third = h.append(0, LINGER + 2)
    third.accepting = False
    plans = h.send(LINGER + 3)
    assert drained(plans) == [second, third], "after the first acknowledgement, batches pipeline"


def test_a_split_batch_hands_its_sequence_range_to_its_children() -> None:
    """KIP-126 as Java does it: no new producer id, no gap; the children carry the parent's
    sequences in order, and a later batch that was in flight goes after them."""
    h = Harness(idempotent=True, batch_size=BATCH_HEADER_BYTES + 4 * BOUND)
    h.core.on_producer_id(7, 0)
    h.prime(0)  # sequence 0
    parent = h.append(0, 0)
    for _ in range(3):
        h.append(0, 0)
    assert parent.record_count == 4
    later = h.append(0, 0)
    later.accepting = False
    p1, p2 = h.send(LINGER)
    assert p1.batches == [parent] and p2.batches == [later] and later.base_sequence == 5
    assert h.core.on_produce_response(p1, respond(p1, MESSAGE_TOO_LARGE), 200) == []
    assert h.core.on_produce_response(p2, respond(p2, OUT_OF_ORDER), 201) == []
    assert not h.core.wants_poll, "a split needs no new producer id"
    sent: list[ProducerBatch] = []
    t = 300
    while later not in sent and t < 10_000:
        for plan in h.send(t):
            sent.extend(plan.batches)
            h.core.on_produce_response(plan, respond(plan), t)
        t += BACKOFF_MAX
    children, last = sent[:-1], sent[-1]
    assert len(children) >= 2 and all(c.parent is parent for c in children) and last is later
    assert all(c.producer_id == 7 for c in children)
    starts = [1 + sum(c.record_count for c in children[:i]) for i in range(len(children))]
    assert [c.base_sequence for c in children] == starts, "the parent's range, contiguous and in order"
    assert sum(c.record_count for c in children) == 4
    assert later.base_sequence == 5 and parent.done and parent.error is None


def test_a_failed_sequenced_batch_bumps_the_epoch_locally_under_the_same_producer_id() -> None:
    """KIP-360 as Java's idempotent producer: no request, epoch + 1, every partition from sequence 0."""
    h = Harness(idempotent=True, batch_size=1)
    h.core.on_producer_id(7, 0)
    h.prime(0, 1)
    h.append(0, 0)
    after = h.append(1, 0)
    by_node = {plan.node_id: plan for plan in h.send(LINGER)}
    h.core.on_produce_response(by_node[1], respond(by_node[1], TOPIC_AUTHORIZATION_FAILED), 200)
    h.core.on_produce_response(by_node[2], respond(by_node[2]), 200)
    assert after.base_sequence == 1
    waiting = h.append(1, 200)
    behind = h.append(1, 200)
    plans = h.send(200 + LINGER)  # the round that bumps the epoch sends under it
    # The broker knows producer 7 on this partition: a new epoch must start at 0 there, so the
    # batches pipeline at once (no first-batch-alone round trip, which would slow transactions v2).
    assert drained(plans) == [waiting, behind]
    assert (waiting.producer_id, waiting.producer_epoch, waiting.base_sequence) == (7, 1, 0)
    assert (behind.producer_epoch, behind.base_sequence) == (1, 1)
    assert not h.core.needs_producer_id and h.core.epoch_bumps == 1 and h.core.producer_id_resets == 0


def test_a_broker_that_refuses_a_local_bump_gets_a_new_producer_id_instead() -> None:
    """Tansu answers PRODUCER_FENCED to a locally bumped epoch: not fatal, the fallback takes over."""
    h = Harness(idempotent=True, batch_size=1)
    h.core.on_producer_id(7, 0)
    h.prime(0)
    h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    h.core.on_produce_response(plan, respond(plan, TOPIC_AUTHORIZATION_FAILED), 200)
    bumped = h.append(0, 200)
    plan = only_plan(h.send(200 + LINGER))
    assert (bumped.producer_epoch, bumped.base_sequence) == (1, 0)
    assert h.core.on_produce_response(plan, respond(plan, PRODUCER_FENCED), 300) == []
    assert h.core.fatal_error is None and not h.core.local_epoch_bump
    h.poll(300 + 2 * BACKOFF_MAX)
    assert h.core.needs_producer_id
    h.core.on_producer_id(8, 0)
    retry = only_plan(h.send(301 + 2 * BACKOFF_MAX))
    assert retry.batches == [bumped] and (
        bumped.producer_id,
        bumped.producer_epoch,
        bumped.base_sequence,
    ) == (8, 0, 0)


# -- answers --------------------------------------------------------------------------------------


def test_success_completes_batches_with_offset_and_append_time_and_frees_memory() -> None:
    h = Harness()
    a = h.append(0, 0)
    b = h.append(2, 0)
    plan = only_plan(h.send(LINGER))
    done = h.core.on_produce_response(plan, respond(plan, log_append_time_ms=123_456), LINGER + 5)
    assert set(done) == {a, b}
    assert all(x.done and x.error is None and x.log_append_time_ms == 123_456 for x in done)
    assert (a.base_offset, b.base_offset) == (1_000, 1_200)
    assert h.acc.used_bytes == 0
    assert h.core.in_flight_count == 0


def test_not_leader_retries_after_the_backoff_and_requests_metadata() -> None:
    h = Harness(idempotent=True)
    h.core.on_producer_id(7, 0)
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    assert batch.base_sequence == 0
    t = 200
    assert h.core.on_produce_response(plan, respond(plan, NOT_LEADER), t) == []
    assert not batch.done
    assert h.metadata.update_requested
    result = h.poll(t)
    assert result.requests == []
    assert t + 0.8 * BACKOFF <= result.next_wakeup_ms <= t + 1.2 * BACKOFF
    assert h.poll(t + int(0.8 * BACKOFF) - 1).requests == []
    retry = only_plan(h.send(t + int(1.2 * BACKOFF) + 1))
    assert retry.batches == [batch]
    assert (batch.producer_id, batch.base_sequence, batch.attempts) == (7, 0, 1)
    assert h.acc.used_bytes > 0


def test_current_leader_in_the_answer_moves_the_partition() -> None:
    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    assert plan.node_id == 1
    h.core.on_produce_response(plan, respond(plan, NOT_LEADER, current_leader=(2, LEADER_EPOCH + 1)), 200)
    assert h.metadata.leader(TOPIC, 0) == 2
    retry = only_plan(h.send(200 + 2 * BACKOFF))
    assert (retry.node_id, retry.batches) == (2, [batch])


def test_a_retry_to_a_new_leader_named_in_the_answer_skips_the_backoff() -> None:
    """KIP-951: with the new leader in the answer, the retry goes at once; without it, after the backoff."""
    h = Harness()
    moved = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    h.core.on_produce_response(plan, respond(plan, NOT_LEADER, current_leader=(2, LEADER_EPOCH + 1)), 200)
    assert [b for p in h.send(200) for b in p.batches] == [moved]

    h2 = Harness()
    stayed = h2.append(0, 0)
    plan2 = only_plan(h2.send(LINGER))
    h2.core.on_produce_response(plan2, respond(plan2, NOT_LEADER), 200)
    assert h2.send(200) == []
    assert [b for p in h2.send(200 + 2 * BACKOFF) for b in p.batches] == [stayed]


def test_topic_authorization_failed_fails_the_batch_at_once() -> None:
    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    done = h.core.on_produce_response(plan, respond(plan, TOPIC_AUTHORIZATION_FAILED), 200)
    assert done == [batch]
    assert isinstance(batch.error, KafkaError)
    assert batch.error.name == "TOPIC_AUTHORIZATION_FAILED" and batch.error.code == 29
    assert batch.error.persisted is Persisted.NOT_PERSISTED
    assert batch.attempts == 0 and not h.acc.has_queued()
    assert h.acc.used_bytes == 0


def test_a_retriable_error_fails_at_once_without_retries() -> None:
    h = Harness(retries=0)
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    assert h.core.on_produce_response(plan, respond(plan, NOT_ENOUGH_REPLICAS), 200) == [batch]
    assert isinstance(batch.error, KafkaError) and batch.error.name == "NOT_ENOUGH_REPLICAS"


def test_duplicate_sequence_completes_as_success_without_offset() -> None:
    h = Harness(idempotent=True)
    h.core.on_producer_id(7, 0)
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    assert h.core.on_produce_response(plan, respond(plan, DUPLICATE_SEQUENCE), 200) == [batch]
    assert batch.error is None and batch.base_offset == -1
    assert h.acc.used_bytes == 0


def test_out_of_order_for_a_batch_that_is_not_next_is_retried_with_its_sequence() -> None:
    h = Harness(idempotent=True, batch_size=1)
    h.core.on_producer_id(7, 0)
    h.prime(0)  # sequence 0
    h.append(0, 0)
    second = h.append(0, 0)
    _, second_plan = h.send(LINGER)
    assert second_plan.batches == [second] and second.base_sequence == 2
    assert h.core.on_produce_response(second_plan, respond(second_plan, OUT_OF_ORDER), 200) == []
    assert not second.done and second.attempts == 1 and second.base_sequence == 2


def test_a_later_batch_waits_until_the_retried_earlier_one_is_through() -> None:
    h = Harness(idempotent=True, batch_size=1)
    h.core.on_producer_id(7, 0)
    h.prime(0)  # sequence 0
    first = h.append(0, 0)
    first_plan = only_plan(h.send(LINGER))
    second = h.append(0, LINGER)
    second_plan = only_plan(h.send(2 * LINGER))
    assert (first.base_sequence, second.base_sequence) == (1, 2)
    # The broker rejects seq 1, so it must answer seq 2 with OUT_OF_ORDER.
    h.core.on_produce_response(first_plan, respond(first_plan, NOT_LEADER), 210)
    h.core.on_produce_response(second_plan, respond(second_plan, OUT_OF_ORDER), 215)
    assert not first.done and not second.done
    t = 215 + 2 * BACKOFF_MAX
    resend = only_plan(h.send(t))
    assert resend.batches == [first], "seq 2 may not leave before seq 1"
    assert h.send(t + 1) == [], "seq 2 may not leave while seq 1 is in flight again"
    h.core.on_produce_response(resend, respond(resend), t + 2)
    assert first.done and first.error is None
    last = only_plan(h.send(t + 3))
    assert last.batches == [second] and second.base_sequence == 2
    h.core.on_produce_response(last, respond(last), t + 4)
    assert second.done and second.error is None


def test_a_real_sequence_gap_restarts_sequences_under_a_new_producer_id() -> None:
    h = Harness(idempotent=True)
    h.core.local_epoch_bump = False  # the fallback where local epoch bumps are refused (Tansu)
    h.core.on_producer_id(7, 0)
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    # seq 0 is the next expected, yet the broker says OUT_OF_ORDER: it lost our state.
    assert h.core.on_produce_response(plan, respond(plan, OUT_OF_ORDER), 200) == []
    assert h.poll(200 + 2 * BACKOFF).requests == []
    assert h.core.needs_producer_id
    h.core.on_producer_id(8, 0)
    retry = only_plan(h.send(201 + 2 * BACKOFF))
    assert retry.batches == [batch]
    assert (batch.producer_id, batch.base_sequence) == (8, 0)


def test_a_failed_sequenced_batch_resets_the_producer_id_once_nothing_is_in_flight() -> None:
    h = Harness(idempotent=True)
    h.core.local_epoch_bump = False  # the fallback where local epoch bumps are refused (Tansu)
    h.core.on_producer_id(7, 0)
    h.append(0, 0)
    h.append(1, 0)
    plans = {plan.node_id: plan for plan in h.send(LINGER)}
    h.core.on_produce_response(plans[1], respond(plans[1], TOPIC_AUTHORIZATION_FAILED), 200)
    waiting = h.append(2, 200)
    assert h.send(400) == [], "no new sequences while the old producer id is being retired"
    assert not h.core.needs_producer_id, "the reset waits for the in-flight request"
    h.core.on_produce_response(plans[2], respond(plans[2]), 410)
    h.poll(420)
    assert h.core.needs_producer_id
    h.core.on_producer_id(8, 0)
    plan = only_plan(h.send(430))
    assert plan.batches == [waiting]
    assert (waiting.producer_id, waiting.base_sequence) == (8, 0)


def test_a_batch_in_doubt_is_resent_under_its_old_producer_id_before_a_reset() -> None:
    h = Harness(idempotent=True)
    h.core.local_epoch_bump = False  # the fallback where local epoch bumps are refused (Tansu)
    h.core.on_producer_id(7, 0)
    doubt = h.append(0, 0)
    refused = h.append(1, 0)
    plans = {plan.node_id: plan for plan in h.send(LINGER)}
    h.core.on_request_failed(plans[1], disconnect(), 200)  # the broker may have written seq 0 of p0
    h.core.on_produce_response(plans[2], respond(plans[2], TOPIC_AUTHORIZATION_FAILED), 200)
    assert refused.done  # a sequenced batch failed: a new producer id is due
    retry = only_plan(h.send(200 + 2 * BACKOFF))
    assert retry.batches == [doubt]
    assert (doubt.producer_id, doubt.base_sequence) == (7, 0), "a new id would let the broker write it twice"
    h.core.on_produce_response(retry, respond(retry, DUPLICATE_SEQUENCE), 400)
    assert doubt.done and doubt.error is None
    fresh = h.append(0, 400)
    h.poll(400 + LINGER)
    assert h.core.needs_producer_id
    h.core.on_producer_id(8, 0)
    plan = only_plan(h.send(401 + LINGER))
    assert plan.batches == [fresh]
    assert (fresh.producer_id, fresh.base_sequence) == (8, 0)


def test_producer_fenced_is_fatal() -> None:
    h = Harness(idempotent=True)
    h.core.on_producer_id(7, 0)
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    queued = h.append(2, LINGER)
    done = h.core.on_produce_response(plan, respond(plan, PRODUCER_FENCED), 200)
    assert set(done) == {batch, queued}
    assert isinstance(h.core.fatal_error, KafkaError) and h.core.fatal_error.name == "PRODUCER_FENCED"
    h.append(0, 300)
    assert h.poll(10_000 - 1).requests == []
    assert h.acc.used_bytes > 0


def test_message_too_large_splits_the_batch_and_completes_it_once() -> None:
    h = Harness(batch_size=1 << 20)
    parent = h.append(0, 0)
    for _ in range(3):
        assert h.append(0, 0) is parent
    plan = only_plan(h.send(LINGER))
    assert h.core.on_produce_response(plan, respond(plan, MESSAGE_TOO_LARGE), 200) == []
    completed: list[ProducerBatch] = []
    t = 200
    while not parent.done:
        t += BACKOFF
        plans = h.send(t)
        assert plans, "the split halves must be sent"
        for p in plans:
            assert all(b.record_count < 4 for b in p.batches)
            completed += h.core.on_produce_response(p, respond(p), t)
    assert completed.count(parent) == 1
    assert parent.error is None
    assert sum(b.record_count for b in completed if b is not parent) == 4
    assert h.acc.used_bytes == 0


def test_a_batch_split_twice_still_completes() -> None:
    h = Harness(batch_size=1 << 20)
    value = b"x" * 1_000  # large records: the first split keeps several per half
    root = h.append(0, 0, value)
    for _ in range(7):
        assert h.append(0, 0, value) is root
    t = LINGER
    plan = only_plan(h.send(t))
    h.core.on_produce_response(plan, respond(plan, MESSAGE_TOO_LARGE), t)
    assert root.children is not None and any(child.record_count > 1 for child, _ in root.children)
    for _ in range(20):
        t += BACKOFF_MAX
        for p in h.send(t):
            # The broker takes only single records.
            code = MESSAGE_TOO_LARGE if p.batches[0].record_count > 1 else 0
            h.core.on_produce_response(p, respond(p, code), t)
        if not h.acc.has_queued() and h.core.in_flight_count == 0:
            break
    assert any(child.children for child, _ in root.children), "a half was split again"
    assert h.acc.used_bytes == 0
    assert root.done, "the original batch must complete when its last record is acknowledged"


def test_a_single_record_that_is_too_large_fails() -> None:
    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    assert h.core.on_produce_response(plan, respond(plan, MESSAGE_TOO_LARGE), 200) == [batch]
    assert isinstance(batch.error, RecordTooLargeError)


def test_a_partition_missing_from_the_answer_is_retried() -> None:
    h = Harness()
    a = h.append(0, 0)
    b = h.append(2, 0)
    plan = only_plan(h.send(LINGER))
    response = respond(plan)
    response.topics[0].partitions[:] = [p for p in response.topics[0].partitions if p.index == 0]
    assert h.core.on_produce_response(plan, response, 200) == [a]
    assert not b.done and b.attempts == 1


# -- failures without an answer, and delivery.timeout.ms --------------------------------------------


def test_a_disconnect_after_sending_retries_the_batches() -> None:
    h = Harness()
    a = h.append(0, 0)
    b = h.append(2, 0)
    plan = only_plan(h.send(LINGER))
    assert h.core.on_request_failed(plan, disconnect(), 200) == []
    assert h.metadata.update_requested
    assert not a.done and not b.done
    retry = only_plan(h.send(200 + 2 * BACKOFF))
    assert set(retry.batches) == {a, b}


def test_retried_batches_expire_as_possibly_persisted_with_the_last_cause() -> None:
    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    error = disconnect()
    h.core.on_request_failed(plan, error, 200)
    assert h.poll(DELIVERY_TIMEOUT - 1, -1).completed == []  # node 1 never comes back
    done = h.poll(DELIVERY_TIMEOUT, -1).completed
    assert done == [batch]
    assert isinstance(batch.error, KafkaTimeoutError)
    assert batch.error.persisted is Persisted.POSSIBLY_PERSISTED
    assert batch.error.last_cause is error
    assert h.acc.used_bytes == 0


def test_an_unanswered_request_expires_as_possibly_persisted() -> None:
    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    assert h.poll(DELIVERY_TIMEOUT - 1).completed == []
    assert h.poll(DELIVERY_TIMEOUT).completed == [batch]
    assert isinstance(batch.error, KafkaTimeoutError)
    assert batch.error.persisted is Persisted.POSSIBLY_PERSISTED
    assert h.core.on_produce_response(plan, respond(plan), DELIVERY_TIMEOUT + 1) == [], "completed twice"
    assert batch.base_offset == -1


def test_a_batch_never_sent_expires_as_not_persisted() -> None:
    h = Harness()
    batch = h.append(0, 0)
    assert h.poll(LINGER, -1).connect_nodes == {1}
    done = h.poll(DELIVERY_TIMEOUT, -1).completed
    assert done == [batch]
    assert isinstance(batch.error, KafkaTimeoutError)
    assert batch.error.persisted is Persisted.NOT_PERSISTED
    assert batch.error.last_cause is None


def test_a_batch_whose_every_attempt_was_refused_expires_as_not_persisted() -> None:
    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    h.core.on_produce_response(plan, respond(plan, NOT_LEADER), 200)
    assert h.poll(DELIVERY_TIMEOUT, -1).completed == [batch]
    assert isinstance(batch.error, KafkaTimeoutError)
    assert batch.error.persisted is Persisted.NOT_PERSISTED, "the broker answered every attempt with an error"
    assert isinstance(batch.error.last_cause, KafkaError) and batch.error.last_cause.code == NOT_LEADER


def test_a_retry_after_the_delivery_timeout_fails_instead() -> None:
    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    assert h.core.on_request_failed(plan, disconnect(), DELIVERY_TIMEOUT) == [batch]
    assert isinstance(batch.error, KafkaTimeoutError)
    assert batch.error.persisted is Persisted.POSSIBLY_PERSISTED


def test_a_failure_while_applying_an_answer_retries_the_batch_instead_of_stranding_it() -> None:
    h = Harness()
    a = h.append(0, 0)
    b = h.append(2, 0)
    plan = only_plan(h.send(LINGER))
    handle = h.core._handle_partition

    def broken(batch: ProducerBatch, *args: Any) -> None:
        if batch is a:
            raise RuntimeError("bug while applying the answer")
        handle(batch, *args)

    setattr(h.core, "_handle_partition", broken)  # noqa: B010 - a bug injected into one call
    assert h.core.on_produce_response(plan, respond(plan), 200) == [b]
    assert not a.done and h.core.in_flight_count == 0
    retry = only_plan(h.send(200 + 2 * BACKOFF))
    assert retry.batches == [a], "the batch was left neither queued nor in flight"
    setattr(h.core, "_handle_partition", handle)  # noqa: B010
    assert h.core.on_produce_response(retry, respond(retry), 500) == [a]
    assert a.error is None


def test_persistence_status_is_per_batch_not_written_into_a_shared_error() -> None:
    """One error object failing several plans (a closed connection) keeps each batch's own status."""
    h = Harness(retries=0)
    sent = h.append(0, 0)
    plan_sent = only_plan(h.send(LINGER))
    unsent = h.append(1, 0)
    plan_unsent = only_plan(h.poll(2 * LINGER).requests)  # drained, never written (on_sent not called)
    error = disconnect()
    assert h.core.on_request_failed(plan_sent, error, 300) == [sent]
    assert h.core.on_request_failed(plan_unsent, error, 300) == [unsent]
    assert isinstance(sent.error, BrokerConnectionError) and isinstance(unsent.error, BrokerConnectionError)
    assert sent.error.persisted is Persisted.POSSIBLY_PERSISTED
    assert unsent.error.persisted is Persisted.NOT_PERSISTED, "never written, yet reported possibly persisted"
    assert error.persisted is Persisted.NOT_PERSISTED, "the shared error object was mutated"


def test_a_failure_after_an_unanswered_attempt_is_possibly_persisted() -> None:
    h = Harness(retries=1)
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    h.core.on_request_failed(plan, disconnect(), 200)
    retry = only_plan(h.send(200 + 2 * BACKOFF))
    assert h.core.on_produce_response(retry, respond(retry, NOT_ENOUGH_REPLICAS), 500) == [batch]
    assert isinstance(batch.error, KprodError)
    assert batch.error.persisted is Persisted.POSSIBLY_PERSISTED


def test_a_partition_missing_from_the_answer_counts_as_unanswered() -> None:
    h = Harness()
    h.append(0, 0)
    missing = h.append(2, 0)
    plan = only_plan(h.send(LINGER))
    response = respond(plan)
    response.topics[0].partitions[:] = [p for p in response.topics[0].partitions if p.index == 0]
    h.core.on_produce_response(plan, response, 200)
    assert h.poll(DELIVERY_TIMEOUT, -1).completed == [missing]
    assert isinstance(missing.error, KafkaTimeoutError)
    assert missing.error.persisted is Persisted.POSSIBLY_PERSISTED


def test_abort_reports_a_queued_retry_in_doubt_as_possibly_persisted() -> None:
    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    h.core.on_request_failed(plan, disconnect(), 200)
    assert not batch.done
    assert h.core.abort_incomplete(ProducerClosedError("closed with a timeout")) == [batch]
    assert isinstance(batch.error, ProducerClosedError)
    assert batch.error.persisted is Persisted.POSSIBLY_PERSISTED


# -- acks=0, backoff, abort ----------------------------------------------------------------------------


def acks_zero_sent() -> tuple[Harness, ProducerBatch, ProduceRequestPlan]:
    """An acks=0 producer whose one batch's request was handed to its connection (``on_sent``)."""
    h = Harness(acks=0)
    a = h.append(0, 0)
    plan = only_plan(h.poll(LINGER).requests)
    assert not plan.expects_response
    h.core.on_sent(plan)
    return h, a, plan


def test_acks_zero_completes_batches_when_written() -> None:
    h, a, plan = acks_zero_sent()
    # Handed to the connection, not yet out of the process: still in flight, memory still held.
    assert not a.done and h.core.in_flight_count == 1 and h.acc.used_bytes > 0
    assert h.core.on_written(plan) == [a]
    assert a.done and a.error is None and a.base_offset == -1
    assert h.acc.used_bytes == 0
    assert h.core.in_flight_count == 0


def test_acks_zero_request_stuck_in_the_process_times_out_then_its_late_write_is_ignored() -> None:
    h, a, plan = acks_zero_sent()
    late = a.created_ms + h.core.settings.delivery_timeout_ms
    expired = h.poll(late).completed
    assert expired == [a] and isinstance(a.error, KafkaTimeoutError)
    assert h.core.on_written(plan) == []  # done already: not completed twice
    assert h.core.in_flight_count == 0


def test_acks_zero_request_whose_connection_closed_before_it_left_is_retried() -> None:
    h, a, plan = acks_zero_sent()
    assert h.core.on_request_failed(plan, BrokerConnectionError("closed"), LINGER) == []
    assert not a.done and a.attempts == 1
    again = only_plan(h.poll(LINGER + BACKOFF_MAX).requests)
    assert again.batches == [a]


def test_backoff_grows_exponentially_within_jitter() -> None:
    core = Harness(seed=42).core
    for attempts in range(8):
        raw = min(BACKOFF_MAX, BACKOFF * 2**attempts)
        samples = [core.backoff_ms(attempts) for _ in range(300)]
        assert min(samples) >= int(0.8 * raw), (attempts, min(samples))
        assert max(samples) <= min(BACKOFF_MAX, 1.2 * raw), (attempts, max(samples))
        assert len(set(samples)) > 10, "the backoff must be jittered"
        if raw < BACKOFF_MAX:
            assert min(samples) < raw < max(samples)
    assert 0.8 * BACKOFF <= core.backoff_ms(0) <= 1.2 * BACKOFF
    assert core.backoff_ms(30) <= BACKOFF_MAX


def test_abort_incomplete_fails_queued_and_in_flight_batches() -> None:
    h = Harness()
    in_flight = h.append(0, 0)
    queued = h.append(1, 0)
    plan = only_plan(h.send(LINGER, {1: 5, 2: -1}))
    error = ProducerClosedError("closed with a timeout")
    done = h.core.abort_incomplete(error)
    assert set(done) == {in_flight, queued}
    assert queued.error is error
    assert isinstance(in_flight.error, KprodError)
    assert in_flight.error.persisted is Persisted.POSSIBLY_PERSISTED
    assert h.acc.used_bytes == 0 and not h.acc.has_queued()
    assert h.core.on_produce_response(plan, respond(plan), LINGER + 1) == [], "completed twice"


# -- when to wake up ---------------------------------------------------------------------------------


def test_next_wakeup_is_the_earliest_linger_expiry() -> None:
    h = Harness()
    h.append(0, 0)
    h.append(1, 30)
    assert h.poll(10).next_wakeup_ms == LINGER
    result = h.poll(LINGER, {1: 5, 2: 5})
    assert [plan.node_id for plan in result.requests] == [1]
    assert result.next_wakeup_ms == 30 + LINGER


def test_a_node_without_free_slots_does_not_make_poll_spin() -> None:
    h = Harness()
    h.append(0, 0)
    # Ready, but the connection is full: the I/O layer wakes the core when a slot frees up;
    # the core's own next deadline is the batch's delivery timeout.
    assert h.poll(5_000, 0).next_wakeup_ms == DELIVERY_TIMEOUT


def test_next_wakeup_is_never_in_the_past() -> None:
    h = Harness()
    h.append(0, 0)
    h.append(1, 0)
    only_plan(h.send(LINGER, {1: 5, 2: -1}))
    for now in (LINGER, DELIVERY_TIMEOUT - 1, DELIVERY_TIMEOUT, DELIVERY_TIMEOUT + 1, 50_000):
        assert h.core.poll(now, lambda node: -1).next_wakeup_ms >= now


def test_next_wakeup_follows_the_earliest_unexpired_in_flight_batch() -> None:
    h = Harness(delivery_timeout_ms=1_000)
    h.append(0, 0)
    h.append(2, 50)
    only_plan(h.send(150))
    assert h.poll(999).next_wakeup_ms == 1_000
    assert len(h.poll(1_000).completed) == 1
    assert h.poll(1_010).next_wakeup_ms == 1_050


# -- a Hypothesis state machine: the core against an idempotent broker --------------------------------

BROKER_MAX_RECORDS = 4
"""The fake broker rejects a batch of more records than this with MESSAGE_TOO_LARGE (its message.max.bytes)."""


class IdempotentBroker:
    """Kafka's per-producer sequence check, for the whole cluster (leaders never move here).

    State per (producer id, partition): the current epoch and the next expected sequence. A batch
    of the current epoch is written when its base sequence is the next one; a batch already written
    answers DUPLICATE_SEQUENCE_NUMBER; anything else OUT_OF_ORDER_SEQUENCE_NUMBER. A newer epoch
    (KIP-360's bump) must start at sequence 0 and then becomes the current one; an older epoch is
    INVALID_PRODUCER_EPOCH. Batches of more than BROKER_MAX_RECORDS records are too large.
    """

    def __init__(self) -> None:
        self.state: dict[tuple[int, int], tuple[int, int]] = {}  # (pid, partition) -> (epoch, next seq)
        self.written: dict[tuple[int, int, int], dict[int, ProducerBatch]] = {}
        self.log: dict[int, list[ProducerBatch]] = {p: [] for p in LEADERS}
        # (producer id, epoch, base sequence, records) of each write, as it was at write time.
        self.writes: dict[int, list[tuple[int, int, int, int]]] = {p: [] for p in LEADERS}

    def has(self, batch: ProducerBatch) -> bool:
        return any(batch is b for b in self.log[batch.partition])

    def produce(self, batch: ProducerBatch) -> tuple[int, int]:
        assert batch.producer_id >= 0 and batch.producer_epoch >= 0 and batch.base_sequence >= 0
        if batch.record_count > BROKER_MAX_RECORDS:
            return MESSAGE_TOO_LARGE, -1
        epoch, next_seq = self.state.get((batch.producer_id, batch.partition), (batch.producer_epoch, 0))
        if batch.producer_epoch < epoch:
            return INVALID_PRODUCER_EPOCH, -1
        if batch.producer_epoch > epoch:
            epoch, next_seq = batch.producer_epoch, 0  # a bumped epoch starts at sequence 0
        written = self.written.setdefault((batch.producer_id, epoch, batch.partition), {})
        seq = batch.base_sequence
        if seq in written:
            assert written[seq] is batch, (
                "one sequence was given to two batches under one producer id and epoch"
            )
            return DUPLICATE_SEQUENCE, -1
        if seq != next_seq:
            return OUT_OF_ORDER, -1
        log = self.log[batch.partition]
        offset = sum(b.record_count for b in log)
        assert not self.has(batch), f"{batch} written twice (a duplicate under a new producer id or epoch)"
        log.append(batch)
        self.writes[batch.partition].append((batch.producer_id, epoch, seq, batch.record_count))
        written[seq] = batch
        self.state[(batch.producer_id, batch.partition)] = (epoch, seq + batch.record_count)
        return 0, offset


SLOTS = st.sampled_from([-1, 0, 1, 2, 3, 5, 5, 5])


class SenderMachine(RuleBasedStateMachine):
    """Appends, time, polls and broker answers in any order; the invariants of delivery hold throughout.

    Answers on one connection come back in request order; a disconnect loses every answer on the
    connection, after the broker handled some prefix of its requests.
    """

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(
            idempotent=True,
            batch_size=300,
            linger_ms=10,
            retry_backoff_ms=20,
            retry_backoff_max_ms=200,
            delivery_timeout_ms=3_000,
        )
        self.core = self.h.core
        self.now = 0
        self.next_pid = 7
        self.broker = IdempotentBroker()
        self.in_flight: dict[int, list[ProduceRequestPlan]] = {1: [], 2: []}
        self.batches: dict[int, ProducerBatch] = {}
        self.completed: set[int] = set()
        self.acked: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
        self.gap: set[tuple[int, int, int]] = set()
        self.init_producer_id()

    @initialize(local_epoch_bump=st.booleans())
    def choose_the_bump(self, local_epoch_bump: bool) -> None:
        """Both ways to restart sequences: the epoch + 1 (Apache Kafka) or a new producer id (Tansu)."""
        self.core.local_epoch_bump = local_epoch_bump

    # -- bookkeeping --

    def all_batches(self) -> list[ProducerBatch]:
        """Every batch appended, and every batch split from one."""
        out: list[ProducerBatch] = []
        todo = list(self.batches.values())
        while todo:
            batch = todo.pop()
            out.append(batch)
            if batch.children:
                todo.extend(child for child, _ in batch.children)
        return out

    def record(self, completed: list[ProducerBatch]) -> None:
        for batch in completed:
            assert batch.done
            assert id(batch) not in self.completed, f"{batch} completed twice"
            self.completed.add(id(batch))
            if batch.children is not None:
                continue  # a split parent: its children were checked
            key = (batch.producer_id, batch.producer_epoch, batch.partition)
            if batch.error is None:
                assert self.broker.has(batch), f"{batch} acknowledged but the broker never wrote it"
                # Acknowledgements may arrive out of order (a retried batch answered after a newer one
                # that the broker accepted because the retry's first attempt was written), as in Java;
                # each sequence is acknowledged once, and the acknowledged ranges are checked at the end.
                ranges = self.acked.setdefault(key, [])
                start, stop = batch.base_sequence, batch.base_sequence + batch.record_count
                assert all(stop <= a or start >= b for a, b in ranges), (
                    f"sequences of {batch} acknowledged twice"
                )
                ranges.append((start, stop))
            else:
                if batch.base_sequence >= 0:
                    self.gap.add(key)
                if getattr(batch.error, "persisted", None) is Persisted.NOT_PERSISTED:
                    assert not self.broker.has(batch), f"{batch} reported not persisted but written"

    def slots(self, node: int, wanted: int) -> int:
        if wanted < 0:
            return -1
        return min(wanted, self.core.settings.max_in_flight - len(self.in_flight[node]))

    def process(self, plan: ProduceRequestPlan, failing: set[int]) -> ProduceResponse:
        """The broker handles ``plan``; partitions in ``failing`` answer NOT_LEADER_OR_FOLLOWER."""
        assert len({b.partition for b in plan.batches}) == len(plan.batches), "two batches of one partition"
        parts = []
        for batch in plan.batches:
            code, offset = (NOT_LEADER, -1) if batch.partition in failing else self.broker.produce(batch)
            parts.append(PartitionProduceResponse(index=batch.partition, error_code=code, base_offset=offset))
        return ProduceResponse(topics=[TopicProduceResponse(TOPIC, parts)], throttle_time_ms=0)

    # -- rules --

    @precondition(lambda self: self.core.needs_producer_id)
    @rule()
    def init_producer_id(self) -> None:
        self.core.on_producer_id(self.next_pid, 0)
        self.next_pid += 1

    @rule(
        partition=st.integers(0, 3),
        sizes=st.lists(st.integers(0, 120) | st.integers(0, 4), min_size=1, max_size=24),
    )
    def append(self, partition: int, sizes: list[int]) -> None:
        for size in sizes:
            batch = self.h.append(partition, self.now, bytes(size))
            self.batches[id(batch)] = batch

    @rule(ms=st.one_of(*[st.integers(1, 150)] * 5, st.sampled_from([700, 3_100])))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule(s1=SLOTS, s2=SLOTS)
    def poll(self, s1: int, s2: int) -> None:
        wanted = {1: s1, 2: s2}
        result = self.core.poll(self.now, lambda node: self.slots(node, wanted[node]))
        assert result.next_wakeup_ms >= self.now
        self.record(result.completed)
        for plan in result.requests:
            assert wanted[plan.node_id] > 0
            self.core.on_sent(plan)
            self.in_flight[plan.node_id].append(plan)
        assert all(len(plans) <= self.core.settings.max_in_flight for plans in self.in_flight.values())

    @precondition(lambda self: any(self.in_flight.values()))
    @rule(node=st.sampled_from([1, 2]), failing=st.just(set()) | st.sets(st.integers(0, 3), min_size=1))
    def answer(self, node: int, failing: set[int]) -> None:
        """The broker answers the oldest request on ``node``."""
        if not self.in_flight[node]:
            return
        plan = self.in_flight[node].pop(0)
        self.record(self.core.on_produce_response(plan, self.process(plan, failing), self.now))

    @precondition(lambda self: any(self.in_flight.values()))
    @rule(node=st.sampled_from([1, 2]), processed=st.integers(0, 5))
    def disconnect(self, node: int, processed: int) -> None:
        """The connection drops: the broker handled the first ``processed`` requests, nobody hears back."""
        plans, self.in_flight[node] = self.in_flight[node], []
        for plan in plans[:processed]:
            self.process(plan, set())
        for plan in plans:
            self.record(self.core.on_request_failed(plan, disconnect(), self.now))

    # -- invariants --

    @invariant()
    def memory_is_accounted(self) -> None:
        held = sum(b.accounted_bytes for b in self.all_batches() if not b.done)
        assert self.h.acc.used_bytes == held

    def teardown(self) -> None:
        """Run to quiescence, then check that every batch ended and the log agrees with the outcomes."""
        for _ in range(100):
            if not self.h.acc.has_queued() and not any(self.in_flight.values()):
                break
            if self.core.needs_producer_id:
                self.init_producer_id()
            self.poll(5, 5)
            for node in (1, 2):
                while self.in_flight[node]:
                    self.answer(node, set())
            self.now += 250  # past the longest retry backoff
        leftovers = [b for b in self.all_batches() if not b.done]
        assert not leftovers, f"never completed: {leftovers}"
        for key, ranges in self.acked.items():
            if key in self.gap:
                continue
            end = 0
            for start, stop in sorted(ranges):
                assert start == end, f"acknowledged sequences of {key} skip from {end} to {start}"
                end = stop
        for partition, writes in self.broker.writes.items():
            by_pid: dict[tuple[int, int], int] = {}
            for pid, epoch, seq, count in writes:
                # The log holds each producer id and epoch's sequences contiguous and in order.
                expected = by_pid.get((pid, epoch), 0)
                assert seq == expected, (partition, pid, epoch, seq, expected)
                by_pid[(pid, epoch)] = seq + count
        for batch in self.all_batches():
            if batch.children is not None:
                continue
            if self.broker.has(batch):
                persisted = getattr(batch.error, "persisted", None)
                assert batch.error is None or persisted is Persisted.POSSIBLY_PERSISTED, (batch, batch.error)
            else:
                assert batch.error is not None, f"{batch} acknowledged but not in the log"


def machine_settings(examples: int, steps: int) -> settings:
    """Hypothesis settings of this file's state machines: no deadline (the steps are not timed)."""
    return settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


SenderMachine.TestCase.settings = machine_settings(150, 50)
test_sender_against_an_idempotent_broker = SenderMachine.TestCase


class AcksZeroMachine(RuleBasedStateMachine):
    """acks=0 against a model of one connection per broker: requests handed over (``on_sent``) wait
    in the process until written (``on_written``, in order) or lost with their connection
    (``on_request_failed``). A batch succeeds only once its request was written, completes once,
    and holds its memory until then; what is still unwritten is retried, never reported sent."""

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(acks=0, linger_ms=0, batch_size=256)
        self.now = 0
        self.waiting: dict[int, list[ProduceRequestPlan]] = {1: [], 2: []}
        self.written: set[int] = set()  # ids of batches whose last attempt was written
        self.batches: list[ProducerBatch] = []
        self.completions: dict[int, int] = {}

    def complete(self, done: list[ProducerBatch]) -> None:
        for batch in done:
            self.completions[id(batch)] = self.completions.get(id(batch), 0) + 1

    @rule(partition=st.sampled_from(sorted(LEADERS)), count=st.integers(1, 6))
    def append(self, partition: int, count: int) -> None:
        for _ in range(count):
            batch = self.h.append(partition, self.now)
            if all(b is not batch for b in self.batches):
                self.batches.append(batch)

    @rule(ms=st.sampled_from([1, 5, 50, BACKOFF_MAX, DELIVERY_TIMEOUT // 2]))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def poll(self) -> None:
        result = self.h.poll(self.now)
        self.complete(result.completed)
        for plan in result.requests:
            self.h.core.on_sent(plan)
            self.waiting[plan.node_id].append(plan)

    @precondition(lambda self: any(self.waiting.values()))
    @rule(node=st.sampled_from([1, 2]), count=st.integers(1, 3))
    def write(self, node: int, count: int) -> None:
        """The kernel takes the oldest ``count`` requests of ``node``'s connection."""
        plans, self.waiting[node] = self.waiting[node][:count], self.waiting[node][count:]
        for plan in plans:
            for batch in plan.batches:
                if not batch.done:
                    self.written.add(id(batch))
            self.complete(self.h.core.on_written(plan))

    @precondition(lambda self: any(self.waiting.values()))
    @rule(node=st.sampled_from([1, 2]))
    def close(self, node: int) -> None:
        """The connection closes with requests still in the process: they never left."""
        plans, self.waiting[node] = self.waiting[node], []
        for plan in plans:
            self.complete(self.h.core.on_request_failed(plan, disconnect(), self.now))

    @invariant()
    def each_batch_completes_once_and_succeeds_only_if_written(self) -> None:
        for batch in self.batches:
            assert self.completions.get(id(batch), 0) == (1 if batch.done else 0), batch
            if batch.done and batch.error is None:
                assert id(batch) in self.written, f"{batch} reported sent but never written"
                assert batch.base_offset == -1

    @invariant()
    def memory_is_held_until_completion(self) -> None:
        held = sum(b.size_bytes for b in self.batches if not b.done)
        assert (self.h.acc.used_bytes > 0) == (held > 0)
        unwritten = {id(p) for plans in self.waiting.values() for p in plans if not all(b.done for b in p.batches)}
        assert self.h.core.in_flight_count >= len(unwritten)


AcksZeroMachine.TestCase.settings = machine_settings(100, 40)
test_acks_zero_against_a_connection_model = AcksZeroMachine.TestCase


# -- producer-id resets must not wait on batches that can never be sent ---------------------------


UNKNOWN_PRODUCER_ID = 59


def test_unknown_producer_id_after_a_disconnect_bumps_the_epoch_without_waiting() -> None:
    """Two batches in doubt after a disconnect; the head is answered UNKNOWN_PRODUCER_ID. As in
    Java's canRetry, the idempotent producer bumps its epoch locally (same id, epoch + 1, sequences
    from 0), and the bump must not wait for the in-doubt batch queued behind it (it can never leave
    under the old epoch). The broker lost its state, so the first batch under the new epoch goes
    alone (a broker without state takes any first sequence)."""
    h = Harness(idempotent=True, linger_ms=0)
    h.core.on_producer_id(7, 0)
    h.prime(0)
    a = h.append(0, 0)
    a.accepting = False
    first = h.send(0)
    b = h.append(0, 1)
    b.accepting = False
    second = h.send(1)
    for plan in first + second:
        h.core.on_request_failed(plan, disconnect(), 2)
    assert a.maybe_written and b.maybe_written
    plans = h.send(2000)
    assert [x for p in plans for x in p.batches] == [a]
    h.core.on_produce_response(plans[0], respond(plans[0], UNKNOWN_PRODUCER_ID), 2000)
    assert a.maybe_written, "UNKNOWN_PRODUCER_ID proves nothing about the earlier attempt"
    for t in range(2100, 9000, 100):
        plans = h.send(t)
        if plans:
            break
    assert h.core.epoch_bumps == 1 and h.core.producer_id_resets == 0 and not h.core.needs_producer_id
    assert drained(plans) == [a], "the broker lost its state: the first batch of the new epoch goes alone"
    assert (a.producer_id, a.producer_epoch, a.base_sequence) == (7, 1, 0)
    assert b.base_sequence == -1
    h.core.on_produce_response(plans[0], respond(plans[0]), t + 1)
    assert drained(h.send(t + 1)) == [b] and (b.producer_epoch, b.base_sequence) == (1, 1)


def test_unknown_producer_id_under_a_bumped_epoch_takes_a_new_producer_id() -> None:
    """A broker that answers UNKNOWN_PRODUCER_ID again to the locally bumped epoch does not open
    state for bumps of an id it lost: the fallback takes a new producer id (no endless bumps)."""
    h = Harness(idempotent=True, linger_ms=0)
    h.core.on_producer_id(7, 0)
    h.prime(0)
    a = h.append(0, 0)
    a.accepting = False
    plan = only_plan(h.send(0))
    h.core.on_produce_response(plan, respond(plan, UNKNOWN_PRODUCER_ID), 1)
    plan = only_plan(h.send(1 + BACKOFF_MAX))
    assert (a.producer_id, a.producer_epoch, a.base_sequence) == (7, 1, 0)
    h.core.on_produce_response(plan, respond(plan, UNKNOWN_PRODUCER_ID), 2 + BACKOFF_MAX)
    h.poll(3 + 2 * BACKOFF_MAX)
    assert h.core.needs_producer_id and h.core.epoch_bumps == 1 and h.core.producer_id_resets == 1
    h.core.on_producer_id(8, 0)
    plan = only_plan(h.send(4 + 2 * BACKOFF_MAX))
    assert plan.batches == [a] and (a.producer_id, a.producer_epoch, a.base_sequence) == (8, 0, 0)
    assert h.core.on_produce_response(plan, respond(plan), 5 + 2 * BACKOFF_MAX) == [a] and a.error is None


def test_a_failure_elsewhere_resets_the_producer_id_despite_an_in_doubt_batch_behind_a_retry() -> None:
    h = Harness(idempotent=True, linger_ms=0)
    h.core.local_epoch_bump = False  # the fallback where local epoch bumps are refused (Tansu)
    h.core.on_producer_id(7, 0)
    h.prime(0)
    a = h.append(0, 0)
    a.accepting = False
    p1 = h.send(0)
    b = h.append(0, 1)
    b.accepting = False
    p2 = h.send(1)
    c = h.append(2, 1)
    c.accepting = False
    p3 = h.send(1)
    h.core.on_produce_response(p1[0], respond(p1[0], NOT_ENOUGH_REPLICAS), 2)
    h.core.on_request_failed(p2[0], disconnect(), 3)
    h.core.on_produce_response(p3[0], respond(p3[0], 29), 3)
    for t in range(200, 9000, 100):
        h.send(t)
        if h.core.needs_producer_id:
            break
    assert h.core.needs_producer_id, "the producer-id reset never happened"


def test_fail_unsent_fails_only_batches_that_never_left_and_match() -> None:
    """An authentication refusal of broker 1 fails its partitions' queued batches at once, but not a
    batch that was sent and awaits a retry (it may be in the log), nor broker 2's batches."""
    from kprod.errors import AuthenticationError

    h = Harness()
    retried = h.append(0, 0)
    plan = only_plan(h.send(LINGER, slots={1: 1, 2: 0}))
    assert plan.batches == [retried]
    assert h.core.on_produce_response(plan, respond(plan, NOT_LEADER), LINGER) == []
    fresh_0 = h.append(0, LINGER)  # queued behind the retried batch on broker 1's partition 0
    fresh_2 = h.append(2, LINGER)  # broker 1
    other = h.append(1, LINGER)  # broker 2
    used = h.acc.used_bytes
    error = AuthenticationError("refused")
    failed = h.core.fail_unsent(error, lambda b: h.metadata.leader(b.topic, b.partition) == 1)
    assert set(failed) == {fresh_0, fresh_2}
    assert all(b.done and b.error is error for b in failed)
    assert not retried.done and not other.done
    assert h.acc.used_bytes < used  # their memory is free again
    assert [b for b in h.acc.queued_batches()] in ([retried, other], [other, retried])


def test_persistence_is_each_batchs_own_even_with_a_shared_error() -> None:
    """One error object failing a whole plan: the batch that was written before says POSSIBLY_PERSISTED,
    the batch never written says NOT_PERSISTED, whatever the shared error claims."""
    from kprod.errors import Persisted

    h = Harness(retries=0)
    written = h.append(0, 0)
    never = h.append(2, 0)
    plan = only_plan(h.send(LINGER, slots={1: 1, 2: 0}))
    assert set(plan.batches) == {written, never}
    written.maybe_written = True  # an earlier attempt may be in the log
    for batch in plan.batches:
        batch.sent = batch is written  # as if ``never`` had not reached the socket
    shared = BrokerConnectionError("connection lost", persisted=Persisted.POSSIBLY_PERSISTED)
    failed = h.core.on_request_failed(plan, shared, LINGER + 1)
    by_batch = {b.partition: b.error for b in failed}
    assert isinstance(by_batch[0], KprodError) and by_batch[0].persisted is Persisted.POSSIBLY_PERSISTED
    assert isinstance(by_batch[2], KprodError) and by_batch[2].persisted is Persisted.NOT_PERSISTED
    assert shared.persisted is Persisted.POSSIBLY_PERSISTED  # the shared object is left as it was


def test_a_new_leader_on_a_broker_not_known_yet_is_reached_through_the_answers_node_endpoints() -> None:
    """KIP-951: NOT_LEADER naming broker 3, which the metadata does not list, with its address in the
    answer's NodeEndpoints: the retry goes to broker 3 at once, without a Metadata round trip."""
    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    answer = respond(plan, NOT_LEADER, current_leader=(3, LEADER_EPOCH + 1))
    answer.node_endpoints[3] = ("b3", 9093, None)
    h.core.on_produce_response(plan, answer, 200)
    assert h.metadata.node_address(3) == ("b3", 9093)
    assert h.metadata.leader(TOPIC, 0) == 3
    retry = only_plan(h.send(200, slots={1: 5, 2: 5, 3: 5}))  # no backoff: the answer named where to go
    assert (retry.node_id, retry.batches) == (3, [batch])
    # Without the endpoint the unknown broker cannot be used: the leader stays, a refresh is asked.
    h2 = Harness()
    h2.append(0, 0)
    plan2 = only_plan(h2.send(LINGER))
    h2.core.on_produce_response(plan2, respond(plan2, NOT_LEADER, current_leader=(3, LEADER_EPOCH + 1)), 200)
    assert h2.metadata.leader(TOPIC, 0) == 1 and h2.metadata.update_requested


def test_a_batch_cannot_complete_twice_or_go_back_once_done() -> None:
    from kprod._core.accumulator import BatchState, BatchStateError

    h = Harness()
    batch = h.append(0, 0)
    plan = only_plan(h.send(LINGER))
    assert batch.state is BatchState.IN_FLIGHT
    completed = h.core.on_produce_response(plan, respond(plan), LINGER)
    assert completed == [batch] and batch.state is BatchState.DONE
    with pytest.raises(BatchStateError, match="cannot go from DONE to DONE"):
        h.core._complete(batch, 0, -1, None, [])
    with pytest.raises(BatchStateError, match="DONE to QUEUED"):
        h.acc.reenqueue(batch, LINGER, 0)
    # An answer that comes again for a completed batch (a duplicate frame) changes nothing.
    assert h.core.on_produce_response(plan, respond(plan), LINGER + 1) == []
