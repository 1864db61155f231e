"""Transactional messages (``kprod.protocol.txn``): kio round trips, then a whole transaction
driven by hand against Apache Kafka, whose answers the parsers must read."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kio.serial import entity_reader

from helpers import consume_all
from kprod.kafka_broker import KafkaCluster
from kprod.protocol.messages import (
    ApiKey,
    _ms,
    _request,
    encode_request,
    init_producer_id_request,
    parse_init_producer_id,
)
from kprod.protocol.txn import (
    add_offsets_to_txn_request,
    add_partitions_to_txn_request,
    describe_transactions_request,
    end_txn_request,
    find_coordinator_request,
    parse_add_offsets_to_txn,
    parse_add_partitions_to_txn,
    parse_describe_transactions,
    parse_end_txn,
    parse_find_coordinator,
    parse_txn_offset_commit,
    txn_offset_commit_request,
)


def _round_trip(entity: Any) -> Any:
    """Encode a request as the producer sends it and read it back with kio's reader."""
    frame = encode_request(entity, correlation_id=7, client_id="t")
    body = memoryview(frame)[4:].toreadonly()
    # Request header v1: api key, api version, correlation id (8 bytes), client id (int16 length
    # + bytes); v2 (flexible) adds an empty tagged-field section (one byte).
    offset = 8 + 2 + int.from_bytes(body[8:10], "big") + (1 if entity.__flexible__ else 0)
    decoded, _ = entity_reader(type(entity))(body, offset)
    return decoded


@pytest.mark.parametrize("version", [1, 3, 4, 5])
def test_find_coordinator_carries_its_key_at_every_version(version: int) -> None:
    decoded = _round_trip(find_coordinator_request(version, 1, "txn-a"))
    keys = decoded.coordinator_keys if version >= 4 else (decoded.key,)
    assert tuple(keys) == ("txn-a",) and int(decoded.key_type) == 1


@pytest.mark.parametrize("version", [1, 2, 3])
def test_add_partitions_groups_partitions_by_topic(version: int) -> None:
    entity = add_partitions_to_txn_request(version, "txn-a", 5, 2, [("b", 1), ("a", 0), ("b", 0), ("a", 0)])
    decoded = _round_trip(entity)
    prefix = "v3_and_below_"
    topics = getattr(decoded, f"{prefix}topics")
    assert [(t.name, tuple(t.partitions)) for t in topics] == [("a", (0,)), ("b", (0, 1))]
    assert getattr(decoded, f"{prefix}transactional_id") == "txn-a"
    assert int(getattr(decoded, f"{prefix}producer_id")) == 5


def test_txn_offset_commit_carries_the_group_generation_and_offsets() -> None:
    entity = txn_offset_commit_request(3, "txn-a", "g", 5, 2, {("in", 1): 40, ("in", 0): 7}, 9, "m-1", "i-1")
    decoded = _round_trip(entity)
    assert (decoded.group_id, int(decoded.generation_id), decoded.member_id, decoded.group_instance_id) == (
        "g",
        9,
        "m-1",
        "i-1",
    )
    assert [(p.partition_index, p.committed_offset) for p in decoded.topics[0].partitions] == [
        (0, 7),
        (1, 40),
    ]


def test_parsers_read_kio_answers() -> None:
    v3 = "kio.schema.add_partitions_to_txn.v3.response"
    module: Any = __import__(v3, fromlist=["x"])
    answer = module.AddPartitionsToTxnResponse(
        throttle_time=_ms(0),
        results_by_topic_v3_and_below=(
            module.AddPartitionsToTxnTopicResult(
                name="t",
                results_by_partition=(
                    module.AddPartitionsToTxnPartitionResult(partition_index=0, partition_error_code=0),
                    module.AddPartitionsToTxnPartitionResult(partition_index=1, partition_error_code=29),
                ),
            ),
        ),
    )
    assert parse_add_partitions_to_txn(answer) == {("t", 0): 0, ("t", 1): 29}
    find: Any = __import__("kio.schema.find_coordinator.v4.response", fromlist=["x"])
    batched = find.FindCoordinatorResponse(
        throttle_time=_ms(0),
        coordinators=(
            find.Coordinator(key="other", node_id=1, host="h", port=1, error_code=0, error_message=None),
        ),
    )
    assert parse_find_coordinator(batched, "txn-a").error_code == 15  # not named: retried


@pytest.mark.timeout(120)
def test_a_transaction_by_hand_on_apache_kafka(kafka: KafkaCluster) -> None:
    """FindCoordinator, InitProducerId, AddPartitionsToTxn, Produce, AddOffsetsToTxn,
    TxnOffsetCommit and EndTxn against the real coordinator: every answer parses, and the
    committed record is visible to a read_committed consumer."""
    kafka.create_topic("txn-by-hand", partitions=2)
    txn_id = "kprod-by-hand"
    # The first lookup creates __transaction_state: COORDINATOR_NOT_AVAILABLE (retriable) meanwhile.
    coordinator = _retried(
        lambda: parse_find_coordinator(kafka.request(find_coordinator_request(4, 1, txn_id)), txn_id)
    )
    assert coordinator.error_code == 0 and coordinator.node_id == kafka.nodes[0].node_id
    assert coordinator.port == kafka.port
    code, producer_id, epoch = _retried(
        lambda: parse_init_producer_id(kafka.request(init_producer_id_request(4, txn_id, 60_000))),
        lambda answer: answer[0],
    )
    assert code == 0 and producer_id >= 0 and epoch >= 0
    added = _retried(
        lambda: parse_add_partitions_to_txn(
            kafka.request(add_partitions_to_txn_request(3, txn_id, producer_id, epoch, [("txn-by-hand", 0)]))
        ),
        lambda answer: 14 if set(answer.values()) & {3, 5, 6, 51} else 0,  # retriable: ask again
    )
    assert added == {("txn-by-hand", 0): 0}
    _produce_transactional(kafka, txn_id, producer_id, epoch, "txn-by-hand", 0, b"committed")
    assert (
        parse_add_offsets_to_txn(
            kafka.request(add_offsets_to_txn_request(3, txn_id, producer_id, epoch, "g1"))
        )
        == 0
    )
    group = _retried(
        lambda: parse_find_coordinator(kafka.request(find_coordinator_request(4, 0, "g1")), "g1")
    )
    assert group.error_code == 0
    committed = parse_txn_offset_commit(
        kafka.request(txn_offset_commit_request(3, txn_id, "g1", producer_id, epoch, {("txn-by-hand", 0): 1}))
    )
    assert committed == {("txn-by-hand", 0): 0}
    assert parse_describe_transactions(kafka.request(describe_transactions_request(0, txn_id)), txn_id) == (
        0,
        "Ongoing",
    )
    end_code, _, _ = parse_end_txn(kafka.request(end_txn_request(3, txn_id, producer_id, epoch, True)))
    assert end_code == 0
    # The markers are written after EndTxn is answered: PrepareCommit until then.
    code, state = parse_describe_transactions(kafka.request(describe_transactions_request(0, txn_id)), txn_id)
    assert code == 0 and state in ("PrepareCommit", "CompleteCommit"), state
    assert _retried(
        lambda: parse_describe_transactions(kafka.request(describe_transactions_request(0, txn_id)), txn_id),
        lambda answer: 14 if answer[1] == "PrepareCommit" else answer[0],  # ask again
    ) == (0, "CompleteCommit")
    unknown = parse_describe_transactions(kafka.request(describe_transactions_request(0, "nobody")), "nobody")
    assert unknown[0] == 105 and unknown[1] == ""  # TRANSACTIONAL_ID_NOT_FOUND
    records = consume_all(
        kafka.bootstrap_servers,
        "txn-by-hand",
        2,
        1,
        timeout_s=30,
        linger_s=0.5,
        config={"isolation.level": "read_committed"},
    )
    assert [r.value for r in records] == [b"committed"]
    # A stale epoch is fenced: the answer the transaction manager treats as fatal.
    fenced, _, _ = parse_end_txn(
        kafka.request(end_txn_request(3, txn_id, producer_id, epoch - 1 if epoch else 32767, True))
    )
    assert fenced in (47, 90), fenced


T = TypeVar("T")


def _retried(
    call: Callable[[], T], code_of: Callable[[T], int] = lambda a: getattr(a, "error_code", -1)
) -> T:
    """Repeat ``call`` while it answers COORDINATOR_LOAD_IN_PROGRESS or COORDINATOR_NOT_AVAILABLE
    (the coordinator's topic is being created or loaded), for at most 30 s."""
    deadline = time.monotonic() + 30.0
    while True:
        answer = call()
        if code_of(answer) not in (14, 15) or time.monotonic() >= deadline:
            return answer
        time.sleep(0.1)


def _produce_transactional(
    kafka: KafkaCluster, txn_id: str, producer_id: int, epoch: int, topic: str, partition: int, value: bytes
) -> None:
    from kprod.records.batch import RecordBatchBuilder

    builder = RecordBatchBuilder(base_timestamp_ms=int(time.time() * 1000))
    builder.append(builder.base_timestamp_ms, None, value, None)
    records = bytes(
        builder.build(producer_id=producer_id, producer_epoch=epoch, base_sequence=0, transactional=True)
    )
    data = _request(
        ApiKey.PRODUCE,
        9,
        "ProduceRequest",
        transactional_id=txn_id,
        acks=-1,
        timeout=_ms(10_000),
        topic_data=(
            _request(
                ApiKey.PRODUCE,
                9,
                "TopicProduceData",
                name=topic,
                partition_data=(
                    _request(ApiKey.PRODUCE, 9, "PartitionProduceData", index=partition, records=records),
                ),
            ),
        ),
    )
    deadline = time.monotonic() + 30
    while True:  # a new partition's leader may need a moment (NOT_LEADER_OR_FOLLOWER, retriable)
        response = kafka.request(data)
        codes = [int(p.error_code) for t in response.responses for p in t.partition_responses]
        if codes[0] not in (3, 5, 6) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert codes == [0], codes
