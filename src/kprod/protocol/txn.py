"""Transactional control-plane messages through kio: builders and parsers.

FindCoordinator, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn and
DescribeTransactions (InitProducerId lives in :mod:`kprod.protocol.messages`). Builders take plain
values and return kio request entities for :func:`kprod.protocol.messages.encode_request`; parsers
take a decoded kio response of any version kprod speaks and return plain values. kio types stay
inside this module.

Rules this module obeys: it is pure (no I/O, clocks or threads) and knows nothing of the
transaction state machine (``kprod._core.transactions``), which sits above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kprod.protocol.messages import ApiKey, _request

__all__ = [
    "CoordinatorAnswer",
    "add_offsets_to_txn_request",
    "add_partitions_to_txn_request",
    "describe_transactions_request",
    "end_txn_request",
    "find_coordinator_request",
    "parse_add_offsets_to_txn",
    "parse_add_partitions_to_txn",
    "parse_describe_transactions",
    "parse_end_txn",
    "parse_find_coordinator",
    "parse_txn_offset_commit",
    "txn_offset_commit_request",
]

TopicPartition = tuple[str, int]
_FIND_COORDINATOR_BATCHED = 4
"""From v4 a FindCoordinator carries a list of keys and answers one coordinator per key (KIP-699)."""


@dataclass(frozen=True, slots=True)
class CoordinatorAnswer:
    """A FindCoordinator answer for one key: the coordinator's node, or an error code."""

    error_code: int
    node_id: int
    host: str
    port: int
    message: str | None


def _by_topic(partitions: Iterable[TopicPartition]) -> dict[str, list[int]]:
    topics: dict[str, list[int]] = {}
    for topic, partition in sorted(set(partitions)):
        topics.setdefault(topic, []).append(partition)
    return topics


def find_coordinator_request(version: int, key_type: int, key: str) -> Any:
    """FindCoordinator for one ``key`` of ``key_type`` (0 group, 1 transaction), v1+."""
    if version >= _FIND_COORDINATOR_BATCHED:
        return _request(
            ApiKey.FIND_COORDINATOR,
            version,
            "FindCoordinatorRequest",
            key_type=key_type,
            coordinator_keys=(key,),
        )
    return _request(ApiKey.FIND_COORDINATOR, version, "FindCoordinatorRequest", key=key, key_type=key_type)


def parse_find_coordinator(response: Any, key: str) -> CoordinatorAnswer:
    """The coordinator for ``key`` from a FindCoordinator response of any version.

    A batched answer (v4+) that does not name ``key`` is reported as COORDINATOR_NOT_AVAILABLE (15),
    which the caller retries.
    """
    if getattr(response, "__version__", 0) >= _FIND_COORDINATOR_BATCHED:
        for entry in response.coordinators or ():
            if str(entry.key) == key:
                return CoordinatorAnswer(
                    int(entry.error_code),
                    int(entry.node_id),
                    str(entry.host),
                    int(entry.port),
                    entry.error_message,
                )
        return CoordinatorAnswer(15, -1, "", -1, f"the answer names no coordinator for {key!r}")
    return CoordinatorAnswer(
        int(response.error_code),
        int(response.node_id),
        str(response.host),
        int(response.port),
        getattr(response, "error_message", None),
    )


def add_partitions_to_txn_request(
    version: int,
    transactional_id: str,
    producer_id: int,
    producer_epoch: int,
    partitions: Iterable[TopicPartition],
) -> Any:
    """AddPartitionsToTxn in the client's form (v1-v3; v4+ are for brokers)."""
    # kio names the client's fields as Kafka's schema does since v4 split them from the brokers'.
    module_fields = "v3_and_below_"
    topics = tuple(
        _request(
            ApiKey.ADD_PARTITIONS_TO_TXN,
            version,
            "AddPartitionsToTxnTopic",
            name=topic,
            partitions=tuple(numbers),
        )
        for topic, numbers in _by_topic(partitions).items()
    )
    return _request(
        ApiKey.ADD_PARTITIONS_TO_TXN,
        version,
        "AddPartitionsToTxnRequest",
        **{
            f"{module_fields}transactional_id": transactional_id,
            f"{module_fields}producer_id": producer_id,
            f"{module_fields}producer_epoch": producer_epoch,
            f"{module_fields}topics": topics,
        },
    )


def parse_add_partitions_to_txn(response: Any) -> dict[TopicPartition, int]:
    """``{(topic, partition): error_code}`` from an AddPartitionsToTxn response (v1-v3)."""
    # A null array (length -1) decodes as None: an answer that names no partition.
    results = getattr(response, "results_by_topic_v3_and_below", None) or ()
    return {
        (str(topic.name), int(p.partition_index)): int(p.partition_error_code)
        for topic in results
        for p in topic.results_by_partition or ()
    }


def add_offsets_to_txn_request(
    version: int, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
) -> Any:
    """AddOffsetsToTxn: tell the transaction coordinator that ``group_id``'s offsets join the transaction."""
    return _request(
        ApiKey.ADD_OFFSETS_TO_TXN,
        version,
        "AddOffsetsToTxnRequest",
        transactional_id=transactional_id,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        group_id=group_id,
    )


def parse_add_offsets_to_txn(response: Any) -> int:
    """The error code of an AddOffsetsToTxn response."""
    return int(response.error_code)


def txn_offset_commit_request(
    version: int,
    transactional_id: str,
    group_id: str,
    producer_id: int,
    producer_epoch: int,
    offsets: Mapping[TopicPartition, int],
    generation_id: int = -1,
    member_id: str = "",
    group_instance_id: str | None = None,
) -> Any:
    """TxnOffsetCommit of ``offsets`` (next offsets to consume) for ``group_id``; v3+ carries the
    consumer's generation, member id and instance id (KIP-447) for the broker's fencing check."""
    topics = tuple(
        _request(
            ApiKey.TXN_OFFSET_COMMIT,
            version,
            "TxnOffsetCommitRequestTopic",
            name=topic,
            partitions=tuple(
                _request(
                    ApiKey.TXN_OFFSET_COMMIT,
                    version,
                    "TxnOffsetCommitRequestPartition",
                    partition_index=partition,
                    committed_offset=offsets[(topic, partition)],
                    committed_leader_epoch=-1,
                    committed_metadata="",
                )
                for partition in numbers
            ),
        )
        for topic, numbers in _by_topic(offsets).items()
    )
    return _request(
        ApiKey.TXN_OFFSET_COMMIT,
        version,
        "TxnOffsetCommitRequest",
        transactional_id=transactional_id,
        group_id=group_id,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        generation_id=generation_id,
        member_id=member_id,
        group_instance_id=group_instance_id,
        topics=topics,
    )


def parse_txn_offset_commit(response: Any) -> dict[TopicPartition, int]:
    """``{(topic, partition): error_code}`` from a TxnOffsetCommit response."""
    return {
        (str(topic.name), int(p.partition_index)): int(p.error_code)
        for topic in response.topics or ()
        for p in topic.partitions or ()
    }


def end_txn_request(
    version: int, transactional_id: str, producer_id: int, producer_epoch: int, committed: bool
) -> Any:
    """EndTxn: commit (``committed``) or abort the transaction."""
    return _request(
        ApiKey.END_TXN,
        version,
        "EndTxnRequest",
        transactional_id=transactional_id,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        committed=committed,
    )


def parse_end_txn(response: Any) -> tuple[int, int, int]:
    """``(error_code, producer_id, producer_epoch)``; the id and epoch are -1 before v5 (KIP-890),
    where the coordinator answers with the epoch it bumped."""
    return (
        int(response.error_code),
        int(getattr(response, "producer_id", -1)),
        int(getattr(response, "producer_epoch", -1)),
    )


def describe_transactions_request(version: int, transactional_id: str) -> Any:
    """DescribeTransactions (KIP-664) for one transactional id: its coordinator-side state."""
    return _request(
        ApiKey.DESCRIBE_TRANSACTIONS,
        version,
        "DescribeTransactionsRequest",
        transactional_ids=(transactional_id,),
    )


def parse_describe_transactions(response: Any, transactional_id: str) -> tuple[int, str]:
    """``(error_code, state)`` of ``transactional_id`` in a DescribeTransactions answer: the
    coordinator's state name ("Ongoing", "PrepareCommit", "CompleteCommit", ...), "" with an error.
    An answer that does not name the id is reported as COORDINATOR_NOT_AVAILABLE (15)."""
    for entry in response.transaction_states or ():
        if str(entry.transactional_id) == transactional_id:
            code = int(entry.error_code)
            return code, "" if code else str(entry.transaction_state)
    return 15, ""
