"""Valid response frames of every API kprod decodes, and a seeded mutator, for the fuzz tests and
``bench/fuzz.py``. Frames are built with kio's writer, as a broker would send them; each comes with
the decoding the producer applies to it (kio through ``decode_response`` and kprod's parser, or
kprod's own Produce decoder)."""

from __future__ import annotations

import datetime
import io
import random
import struct
from collections.abc import Callable
from typing import Any

from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.serial import entity_writer
from kio.static.constants import EntityType
from kio.static.primitive import i32Timedelta, i64Timedelta

from kprod.errors import ProtocolError
from kprod.protocol import txn
from kprod.protocol.framing import parse_response_header, response_header_version
from kprod.protocol.messages import (
    decode_response,
    parse_api_versions_response,
    parse_init_producer_id,
    parse_metadata,
    parse_sasl_authenticate,
    parse_sasl_handshake,
    response_type,
)
from kprod.protocol.produce import decode_produce_response

__all__ = [
    "FRAMES",
    "huge_array_metadata",
    "malformed",
    "metadata_frame",
    "mutate",
    "wire_decoder",
    "with_unknown_tag",
]

Decode = Callable[[bytes], Any]
_MS0 = i32Timedelta.parse(datetime.timedelta(0))


def _module(api_key: int, version: int) -> Any:
    return load_payload_module(api_key, version, EntityType.response)


def _frame(entity: Any, flexible_header: bool) -> bytes:
    """Correlation id, header tags (header v1), then the body: a frame after its size prefix."""
    buffer = io.BytesIO()
    buffer.write(struct.pack(">i", 42))
    if flexible_header:
        buffer.write(b"\x00")
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


def _kio(api_key: int, version: int, entity: Any, parse: Callable[[Any], Any]) -> tuple[bytes, Decode]:
    flexible = bool(entity.__flexible__) and api_key != 18
    cls = response_type(api_key, version)

    def decode(frame: bytes) -> Any:
        _, offset = parse_response_header(frame, 1 if flexible else 0)
        return parse(decode_response(cls, frame, offset))

    return _frame(entity, flexible), decode


def metadata_frame(version: int) -> tuple[bytes, int, type]:
    m = _module(3, version)
    partition_names = set(m.MetadataResponsePartition.__dataclass_fields__)
    partition_values: dict[str, Any] = {
        "error_code": ErrorCode(0),
        "leader_id": 1,
        "leader_epoch": 3,
        "replica_nodes": (1, 2, 3),
        "isr_nodes": (1, 2),
        "offline_replicas": (),
    }
    partitions = tuple(
        m.MetadataResponsePartition(
            partition_index=i, **{k: v for k, v in partition_values.items() if k in partition_names}
        )
        for i in range(3)
    )
    topic_fields: dict[str, Any] = {
        "error_code": ErrorCode(0),
        "name": "orders",
        "is_internal": False,
        "partitions": partitions,
        "topic_authorized_operations": -2147483648,
    }
    names = {f for f in m.MetadataResponseTopic.__dataclass_fields__}
    if "topic_id" in names:
        import uuid

        topic_fields["topic_id"] = uuid.UUID(int=7)
    broker_names = {f for f in m.MetadataResponseBroker.__dataclass_fields__}
    brokers = tuple(
        m.MetadataResponseBroker(
            **{
                k: v
                for k, v in {"node_id": n, "host": "127.0.0.1", "port": 9090 + n, "rack": None}.items()
                if k in broker_names
            }
        )
        for n in (1, 2, 3)
    )
    response_names = {f for f in m.MetadataResponse.__dataclass_fields__}
    values = {
        "throttle_time": _MS0,
        "brokers": brokers,
        "cluster_id": "c1",
        "controller_id": 1,
        "topics": (m.MetadataResponseTopic(**{k: v for k, v in topic_fields.items() if k in names}),),
        "cluster_authorized_operations": -2147483648,
    }
    entity = m.MetadataResponse(**{k: v for k, v in values.items() if k in response_names})
    flexible = bool(entity.__flexible__)
    return _frame(entity, flexible), 5 if flexible else 4, type(entity)


def _metadata(version: int) -> tuple[bytes, Decode]:
    frame, offset, cls = metadata_frame(version)
    return frame, lambda f: parse_metadata(decode_response(cls, f, offset))


def huge_array_metadata() -> tuple[bytes, int, type]:
    """A Metadata v12 frame whose brokers array claims 2**32-2 elements (compact length 2**32-1)."""
    frame, offset, cls = metadata_frame(12)
    # Body: throttle_time (4 bytes), then the brokers array's compact length (1 byte here).
    at = offset + 4
    return frame[:at] + b"\xff\xff\xff\xff\x0f" + frame[at + 1 :], offset, cls


def with_unknown_tag(frame: bytes) -> bytes:
    """The frame with an unknown tagged field (tag 99) in the response's own tagged section, which
    is its last byte (an empty section, count 0) in the frames built here."""
    assert frame[-1] == 0
    return frame[:-1] + b"\x01" + b"\x63" + b"\x03" + b"abc"


def _api_versions(version: int) -> tuple[bytes, Decode]:
    m = _module(18, version)
    names = set(m.ApiVersionsResponse.__dataclass_fields__)
    keys = tuple(
        m.ApiVersion(api_key=k, min_version=0, max_version=v) for k, v in ((0, 13), (3, 13), (18, 4), (22, 5))
    )
    values: dict[str, Any] = {"error_code": ErrorCode(0), "api_keys": keys, "throttle_time": _MS0}
    if "finalized_features" in names:
        values |= {
            "supported_features": (
                m.SupportedFeatureKey(name="transaction.version", min_version=0, max_version=2),
            ),
            "finalized_features_epoch": 5,
            "finalized_features": (
                m.FinalizedFeatureKey(name="transaction.version", max_version_level=2, min_version_level=2),
            ),
            "zk_migration_ready": False,
        }
    entity = m.ApiVersionsResponse(**{k: v for k, v in values.items() if k in names})
    return _frame(entity, False), lambda f: parse_api_versions_response(f, version)


def _init_producer_id() -> tuple[bytes, Decode]:
    m = _module(22, 4)
    entity = m.InitProducerIdResponse(
        throttle_time=_MS0, error_code=ErrorCode(0), producer_id=1001, producer_epoch=3
    )
    return _kio(22, 4, entity, parse_init_producer_id)


def _find_coordinator() -> tuple[bytes, Decode]:
    m = _module(10, 4)
    entity = m.FindCoordinatorResponse(
        throttle_time=_MS0,
        coordinators=(
            m.Coordinator(
                key="t", node_id=1, host="127.0.0.1", port=9092, error_code=ErrorCode(0), error_message=None
            ),
        ),
    )
    return _kio(10, 4, entity, lambda r: txn.parse_find_coordinator(r, "t"))


def _add_partitions() -> tuple[bytes, Decode]:
    m = _module(24, 3)
    entity = m.AddPartitionsToTxnResponse(
        throttle_time=_MS0,
        results_by_topic_v3_and_below=(
            m.AddPartitionsToTxnTopicResult(
                name="t",
                results_by_partition=tuple(
                    m.AddPartitionsToTxnPartitionResult(partition_index=i, partition_error_code=ErrorCode(0))
                    for i in range(3)
                ),
            ),
        ),
    )
    return _kio(24, 3, entity, txn.parse_add_partitions_to_txn)


def _end_txn() -> tuple[bytes, Decode]:
    m = _module(26, 5)
    entity = m.EndTxnResponse(throttle_time=_MS0, error_code=ErrorCode(0), producer_id=1001, producer_epoch=4)
    return _kio(26, 5, entity, txn.parse_end_txn)


def _describe_transactions() -> tuple[bytes, Decode]:
    m = _module(65, 0)
    entity = m.DescribeTransactionsResponse(
        throttle_time=_MS0,
        transaction_states=(
            m.TransactionState(
                error_code=ErrorCode(0),
                transactional_id="txn-1",
                transaction_state="PrepareCommit",
                transaction_timeout=_MS0,
                transaction_start_time=datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC),
                producer_id=1001,
                producer_epoch=4,
                topics=(m.TopicData(topic="t", partitions=(0, 1)),),
            ),
        ),
    )
    return _kio(65, 0, entity, lambda r: txn.parse_describe_transactions(r, "txn-1"))


def _txn_offset_commit() -> tuple[bytes, Decode]:
    m = _module(28, 3)
    entity = m.TxnOffsetCommitResponse(
        throttle_time=_MS0,
        topics=(
            m.TxnOffsetCommitResponseTopic(
                name="in",
                partitions=tuple(
                    m.TxnOffsetCommitResponsePartition(partition_index=i, error_code=ErrorCode(0))
                    for i in range(2)
                ),
            ),
        ),
    )
    return _kio(28, 3, entity, txn.parse_txn_offset_commit)


def _add_offsets() -> tuple[bytes, Decode]:
    m = _module(25, 3)
    entity = m.AddOffsetsToTxnResponse(throttle_time=_MS0, error_code=ErrorCode(0))
    return _kio(25, 3, entity, txn.parse_add_offsets_to_txn)


def _sasl_handshake() -> tuple[bytes, Decode]:
    m = _module(17, 1)
    entity = m.SaslHandshakeResponse(error_code=ErrorCode(0), mechanisms=("PLAIN", "SCRAM-SHA-512"))
    return _kio(17, 1, entity, parse_sasl_handshake)


def _sasl_authenticate(version: int) -> tuple[bytes, Decode]:
    m = _module(36, version)
    values: dict[str, Any] = {
        "error_code": ErrorCode(0),
        "error_message": None,
        "auth_bytes": b"r=abc,s=QSXCR+Q6sek8bf92,i=4096",
    }
    if version >= 1:
        values["session_lifetime"] = i64Timedelta.parse(datetime.timedelta(seconds=3))
    return _kio(36, version, m.SaslAuthenticateResponse(**values), parse_sasl_authenticate)


def _produce(version: int) -> tuple[bytes, Decode]:
    m = _module(0, version)
    names = set(m.PartitionProduceResponse.__dataclass_fields__)
    part_values: dict[str, Any] = {
        "index": 0,
        "error_code": ErrorCode(0),
        "base_offset": 100,
        "log_append_time": datetime.datetime.fromtimestamp(0, datetime.UTC),
        "log_start_offset": 0,
        "record_errors": (),
        "error_message": None,
        "current_leader": m.LeaderIdAndEpoch(leader_id=1, leader_epoch=2)
        if "current_leader" in names
        else None,
    }
    parts = tuple(
        m.PartitionProduceResponse(**{k: v for k, v in part_values.items() if k in names}) for _ in range(2)
    )
    response_names = set(m.ProduceResponse.__dataclass_fields__)
    values: dict[str, Any] = {
        "responses": (m.TopicProduceResponse(name="t", partition_responses=parts),),
        "throttle_time": _MS0,
        "node_endpoints": (),
    }
    entity = m.ProduceResponse(**{k: v for k, v in values.items() if k in response_names})
    flexible = bool(entity.__flexible__)

    def decode(frame: bytes) -> Any:
        _, offset = parse_response_header(frame, 1 if flexible else 0)
        return decode_produce_response(version, frame, offset)

    return _frame(entity, flexible), decode


FRAMES: dict[str, Callable[[], tuple[bytes, Decode]]] = {
    "api_versions_v0": lambda: _api_versions(0),
    "api_versions_v3": lambda: _api_versions(3),
    "metadata_v1": lambda: _metadata(1),
    "metadata_v12": lambda: _metadata(12),
    "init_producer_id_v4": _init_producer_id,
    "find_coordinator_v4": _find_coordinator,
    "add_partitions_to_txn_v3": _add_partitions,
    "add_offsets_to_txn_v3": _add_offsets,
    "txn_offset_commit_v3": _txn_offset_commit,
    "end_txn_v5": _end_txn,
    "describe_transactions_v0": _describe_transactions,
    "sasl_handshake_v1": _sasl_handshake,
    "sasl_authenticate_v0": lambda: _sasl_authenticate(0),
    "sasl_authenticate_v2": lambda: _sasl_authenticate(2),
    "produce_v8": lambda: _produce(8),
    "produce_v11": lambda: _produce(11),
}

_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def mutate(frame: bytes, rng: random.Random) -> bytes:
    """One to three random mutations: bit flip, an interesting integer (1, 2 or 4 bytes, or a
    5-byte uvarint) written over the frame, truncation, extension, insertion, deletion."""
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        at = rng.randrange(max(1, len(data)))
        if op == 0 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            width = rng.choice((1, 2, 4))
            value = rng.choice(_INTERESTING) & ((1 << (8 * width)) - 1)
            data[at : at + width] = value.to_bytes(width, "big")
        elif op == 2:
            data[at : at + 1] = b"\xff\xff\xff\xff\x0f"  # a uvarint of 2**32-1
        elif op == 3:
            del data[rng.randrange(len(data) + 1) :]
        elif op == 4:
            data += rng.randbytes(rng.randint(1, 64))
        elif op == 5:
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif data:
            del data[at : at + rng.randint(1, 8)]
    return bytes(data)


_PARSERS: dict[int, Callable[[Any], Any]] = {
    3: parse_metadata,
    17: parse_sasl_handshake,
    22: parse_init_producer_id,
    36: parse_sasl_authenticate,
}


def wire_decoder(api_key: int, api_version: int) -> Decode:
    """What the producer does with an answer of ``api_key`` v``api_version`` read off the wire (a
    frame after its size prefix): the same calls as ``BrokerConnection`` and the engine."""
    if api_key == 18:
        return lambda f: parse_api_versions_response(f, api_version)
    header = response_header_version(api_key, api_version)
    if api_key == 0:

        def produce(f: bytes) -> Any:
            _, offset = parse_response_header(f, header)
            return decode_produce_response(api_version, f, offset)

        return produce
    cls = response_type(api_key, api_version)
    parse = _PARSERS.get(api_key, lambda response: response)

    def control(f: bytes) -> Any:
        _, offset = parse_response_header(f, header)
        return parse(decode_response(cls, f, offset))

    return control


def malformed(api_key: int, api_version: int, frame: bytes, rng: random.Random) -> bytes:
    """A mutation of ``frame`` (after its size prefix) that the producer cannot read: it raises
    ProtocolError. The correlation id stays, so the answer still reaches its request. Mutations that
    still decode (a flipped error code, another offset) are left out: no client can tell them from
    the truth. Falls back to cutting the body short."""
    decode = wire_decoder(api_key, api_version)
    for _ in range(2_000):
        damaged = frame[:4] + mutate(frame, rng)[4:]
        try:
            decode(damaged)
        except ProtocolError:
            return damaged
    return frame[:4] + b"\x00\x00\x01"
