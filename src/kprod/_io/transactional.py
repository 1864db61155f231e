"""The transactional calls both facades share: argument normalization, starting an operation on
the engine, and what a call that outlived its timeout says.

:class:`kprod.Producer` and :class:`kprod.AsyncProducer` differ only in how they wait for a
:class:`~kprod._core.transactions.TxnOperation` (a condition variable or an asyncio future); every
other step of ``init_transactions``, ``send_offsets_to_transaction``, ``commit_transaction`` and
``abort_transaction`` is here.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kprod._core.transactions import (
    ConsumerGroupMetadata,
    InvalidTxnStateError,
    TransactionManager,
    TxnOperation,
)
from kprod._io.engine import ProducerEngine
from kprod.errors import ConfigError, KafkaTimeoutError

__all__ = ["OffsetsArg", "group_metadata_of", "offsets_of", "start", "timed_out"]

OffsetsArg = Mapping[Any, int] | Iterable[Any]
"""``{(topic, partition): offset}``, ``{TopicPartition: offset}``, or a list of objects with
``topic``, ``partition`` and ``offset`` attributes (confluent-kafka's ``TopicPartition``)."""

_CGMD_MAGIC = b"CGMDv2:"


def start(
    engine: ProducerEngine, name: str, call: Callable[[TransactionManager], TxnOperation]
) -> TxnOperation:
    """Start ``call`` on the engine's transaction manager (under the engine's lock) and wake the sender.

    :raises ConfigError: if the producer has no ``transactional.id``.
    :raises ProducerClosedError: if the producer is closed or failed.
    """
    with engine.lock:
        txn = _manager(engine, name)
        engine.check_open()
        operation = call(txn)
    engine.wake()
    return operation


def begin(engine: ProducerEngine) -> None:
    """``begin_transaction()``: client side only, nothing to wait for."""
    with engine.lock:
        txn = _manager(engine, "begin_transaction")
        engine.check_open()
        txn.begin_transaction()


def _manager(engine: ProducerEngine, name: str) -> TransactionManager:
    txn = engine.txn
    if txn is None:
        raise ConfigError(
            f"{name}() needs a transactional producer: set transactional.id (a name that stays the same "
            "across restarts of this producer, for example 'orders-enricher-1')",
            stage="transactions",
        )
    return txn


def timed_out(engine: ProducerEngine, operation: TxnOperation, timeout_s: float) -> KafkaTimeoutError:
    """The error for a call whose ``timeout_s`` passed: it names the phase the operation is in and
    says that calling the method again waits for the same outcome. Call it with the engine's lock held."""
    phase = engine.txn.phase() if engine.txn is not None else "unknown"
    return KafkaTimeoutError(
        f"{operation.name}() did not complete within {timeout_s:g} s ({phase}); it goes on in the "
        f"background: call {operation.name}() again to wait for the same outcome",
        stage="transactions",
    )


def result(operation: TxnOperation) -> None:
    """Raise the operation's error, if it failed."""
    error = operation.error
    if error is not None:
        raise error


def offsets_of(offsets: OffsetsArg) -> dict[tuple[str, int], int]:
    """Normalize the offsets argument of ``send_offsets_to_transaction`` to ``{(topic, partition): offset}``.

    :raises InvalidTxnStateError: for anything else, naming the argument.
    """
    out: dict[tuple[str, int], int] = {}
    items: Iterable[tuple[Any, Any]]
    if isinstance(offsets, Mapping):
        items = offsets.items()
    else:
        items = ((tp, getattr(tp, "offset", None)) for tp in offsets)
    for key, offset in items:
        if isinstance(key, tuple) and len(key) == 2:
            topic, partition = key
        else:
            topic, partition = getattr(key, "topic", None), getattr(key, "partition", None)
        if (
            not isinstance(topic, str)
            or type(partition) is not int
            or type(offset) is not int
            or partition < 0
            or offset < 0
        ):
            raise InvalidTxnStateError(
                "send_offsets_to_transaction(offsets=...) takes {(topic, partition): offset}, "
                "{TopicPartition: offset} or a list of TopicPartition with offsets (the next offset to "
                f"consume, >= 0); got the entry {key!r}: {offset!r}"
            )
        out[(topic, partition)] = offset
    return out


def group_metadata_of(group_metadata: object) -> ConsumerGroupMetadata:
    """Normalize ``group_metadata``: kprod's :class:`ConsumerGroupMetadata`, a group id string, a
    Java-like object with ``group_id``/``generation_id``/``member_id``/``group_instance_id``, or the
    bytes confluent-kafka's ``Consumer.consumer_group_metadata()`` returns.

    :raises InvalidTxnStateError: for anything else, naming the argument.
    """
    if isinstance(group_metadata, ConsumerGroupMetadata):
        return group_metadata
    if isinstance(group_metadata, str) and group_metadata:
        return ConsumerGroupMetadata(group_metadata)
    if isinstance(group_metadata, bytes | bytearray):
        return _from_librdkafka(bytes(group_metadata))
    group_id = getattr(group_metadata, "group_id", None)
    if isinstance(group_id, str) and group_id:
        return ConsumerGroupMetadata(
            group_id,
            int(getattr(group_metadata, "generation_id", -1)),
            str(getattr(group_metadata, "member_id", "")),
            getattr(group_metadata, "group_instance_id", None),
        )
    raise InvalidTxnStateError(
        "send_offsets_to_transaction(group_metadata=...) takes the consumer's group metadata "
        "(confluent-kafka: consumer.consumer_group_metadata(); or kprod.ConsumerGroupMetadata(group_id, "
        f"generation_id, member_id, group_instance_id)); got {type(group_metadata).__name__}"
    )


def _from_librdkafka(data: bytes) -> ConsumerGroupMetadata:
    """Read librdkafka's serialized consumer group metadata (``CGMDv2:``, its rd_kafka_cgrp.c):
    the generation id as a native int32, then the group id, the member id, a null flag and the
    group instance id, each string NUL-terminated."""
    bad = InvalidTxnStateError(
        "group_metadata bytes are not confluent-kafka's consumer_group_metadata() (CGMDv2) format"
    )
    if not data.startswith(_CGMD_MAGIC) or len(data) < len(_CGMD_MAGIC) + 4 + 3:
        raise bad
    order = "<" if sys.byteorder == "little" else ">"
    (generation_id,) = struct.unpack_from(order + "i", data, len(_CGMD_MAGIC))
    fields = data[len(_CGMD_MAGIC) + 4 :]
    try:
        group_id, rest = fields.split(b"\0", 1)
        member_id, rest = rest.split(b"\0", 1)
        null_flag, rest = rest[0], rest[1:]
        instance: str | None = None
        if not null_flag:
            raw, rest = rest.split(b"\0", 1)
            instance = raw.decode()
        if rest or not group_id:
            raise bad
        return ConsumerGroupMetadata(group_id.decode(), generation_id, member_id.decode(), instance)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise bad from exc
