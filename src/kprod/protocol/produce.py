"""The Produce request envelope and Produce response, hand-written for the hot path.

This module owns the wire layout of ProduceRequest and ProduceResponse, versions 3 to 12
(v3 is the first with record batch v2 and TransactionalId; v9 the first flexible one,
with compact strings and arrays, uvarint lengths stored as length + 1 and tagged
fields; v10 adds the KIP-951 CurrentLeader and NodeEndpoints tagged fields; v11 only
adds the TRANSACTION_ABORTABLE error; v12 has v11's layout and tells the broker that the producer
uses transactions v2, KIP-890: partitions join a transaction on their first Produce).

The record batches themselves are opaque bytes built by ``kprod.records``: the encoder
never copies them. It returns the frame as a list of buffers for ``writelines``, in
which each batch appears as the very object the caller passed (a ``bytearray`` is
wrapped in a ``memoryview``, which does not copy either). The generic codec (kio) is
used only by the tests, to check these bytes.

Rules this module obeys: it is pure (no I/O, clocks or threads) and knows nothing about
batches, partitions' state or retries.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

from kprod.errors import ProtocolError
from kprod.protocol.framing import read_uvarint, skip_tagged_fields, write_uvarint

__all__ = [
    "MAX_PRODUCE_VERSION",
    "MIN_PRODUCE_VERSION",
    "PRODUCE_API_KEY",
    "PartitionProduceResponse",
    "ProduceResponse",
    "TopicProduceResponse",
    "decode_produce_response",
    "encode_produce_request",
    "produce_partition_overhead_bytes",
    "produce_request_base_overhead_bytes",
    "produce_request_overhead_bytes",
    "produce_topic_overhead_bytes",
]

PRODUCE_API_KEY: Final = 0
MIN_PRODUCE_VERSION: Final = 3
MAX_PRODUCE_VERSION: Final = 12
_FIRST_FLEXIBLE: Final = 9
_FIRST_KIP951: Final = 10

RecordsBuffer = bytes | bytearray | memoryview
TopicData = Sequence[tuple[str, Sequence[tuple[int, RecordsBuffer]]]]

# size prefix, api key, api version, correlation id, client id length (request header v1/v2)
_FRAME_HEAD = struct.Struct(">ihhih")
_ACKS_TIMEOUT = struct.Struct(">hi")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_LEGACY_PARTITION = struct.Struct(">ii")  # partition index, records length
_PARTITION_HEAD = struct.Struct(">ihq")  # index, error code, base offset
_I32_PAIR = struct.Struct(">ii")
_uvarint = write_uvarint


def _uvarint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _check_version(version: int) -> None:
    if not MIN_PRODUCE_VERSION <= version <= MAX_PRODUCE_VERSION:
        raise ValueError(
            f"Produce v{version} not supported (kprod speaks v{MIN_PRODUCE_VERSION}..v{MAX_PRODUCE_VERSION})"
        )


@lru_cache(maxsize=4096)
def _encoded_topic(topic: str, flexible: bool) -> bytes:
    """Length-prefixed topic name; cached because a producer writes the same few names forever."""
    raw = topic.encode()
    return (_uvarint(len(raw) + 1) if flexible else _I16.pack(len(raw))) + raw


def _nullable_string(value: str | None, flexible: bool) -> bytes:
    if value is None:
        return b"\x00" if flexible else b"\xff\xff"
    raw = value.encode()
    return (_uvarint(len(raw) + 1) if flexible else _I16.pack(len(raw))) + raw


def encode_produce_request(
    *,
    version: int,
    correlation_id: int,
    client_id: str | None,
    transactional_id: str | None,
    acks: int,
    timeout_ms: int,
    topic_data: TopicData,
) -> list[bytes | memoryview]:
    """Encode a whole Produce request frame (size prefix, header v1/v2, body) for v3..v12.

    ``topic_data`` is ``[(topic, [(partition, record_batch_bytes), ...]), ...]``; every
    record batch is placed in the result as-is, without copying. The result is meant
    for ``writelines``; its total length is ``4 + the int32 at its start``. The caller
    must send acks=0 requests without expecting a response.

    Raises ValueError for a version outside 3..12.
    """
    _check_version(version)
    flexible = version >= _FIRST_FLEXIBLE
    cid = None if client_id is None else client_id.encode()
    first = bytearray(_FRAME_HEAD.size)
    cid_length = -1 if cid is None else len(cid)
    _FRAME_HEAD.pack_into(first, 0, 0, PRODUCE_API_KEY, version, correlation_id, cid_length)
    if cid:
        first += cid
    if flexible:
        first.append(0)  # request header v2: no tagged fields
    first += _nullable_string(transactional_id, flexible)
    first += _ACKS_TIMEOUT.pack(acks, timeout_ms)
    first += _uvarint(len(topic_data) + 1) if flexible else _I32.pack(len(topic_data))

    parts: list[bytes | bytearray | memoryview] = []
    glue = first
    total = 0
    for topic, partitions in topic_data:
        glue += _encoded_topic(topic, flexible)
        glue += _uvarint(len(partitions) + 1) if flexible else _I32.pack(len(partitions))
        for index, records in partitions:
            size = records.nbytes if isinstance(records, memoryview) else len(records)
            if flexible:
                glue += _I32.pack(index)
                glue += _uvarint(size + 1)
            else:
                glue += _LEGACY_PARTITION.pack(index, size)
            if size:
                parts.append(glue)
                total += len(glue) + size
                parts.append(memoryview(records) if isinstance(records, bytearray) else records)
                glue = bytearray()
            if flexible:
                glue.append(0)  # partition tagged fields
        if flexible:
            glue.append(0)  # topic tagged fields
    if flexible:
        glue.append(0)  # request tagged fields
    if glue:
        parts.append(glue)
        total += len(glue)
    # ``first`` is parts[0] (or the only glue); the size excludes its own 4 bytes.
    _I32.pack_into(first, 0, total - 4)
    return [bytes(p) if isinstance(p, bytearray) else p for p in parts]


def produce_request_base_overhead_bytes(
    version: int, client_id: str | None, transactional_id: str | None
) -> int:
    """Bytes of a Produce frame outside its topics: size prefix, header, TransactionalId, Acks,
    TimeoutMs, the topic array length and the trailing tags.

    With :func:`produce_topic_overhead_bytes` and :func:`produce_partition_overhead_bytes`
    this lets a drain loop track a request's size as it adds batches, without encoding.
    The sum is exact for v3..v8; for flexible versions it counts every array length
    as 2 bytes, so it may exceed the real size by one byte per array (never less,
    below 16383 elements). Raises ValueError for a version outside 3..12.
    """
    _check_version(version)
    flexible = version >= _FIRST_FLEXIBLE
    size = 4 + 10  # size prefix, api key, api version, correlation id, client id length
    if client_id is not None:
        size += len(client_id.encode())
    size += len(_nullable_string(transactional_id, flexible)) + 6  # + acks, timeout
    if flexible:
        return size + 1 + 2 + 1  # header tags, topic count, request tags
    return size + 4


def produce_topic_overhead_bytes(version: int, topic: str) -> int:
    """Bytes one topic adds to a Produce request besides its partitions (an upper bound
    for flexible versions, see :func:`produce_request_base_overhead_bytes`)."""
    _check_version(version)
    if version >= _FIRST_FLEXIBLE:
        return len(_encoded_topic(topic, True)) + 2 + 1  # name, partition count, tags
    return len(_encoded_topic(topic, False)) + 4


def produce_partition_overhead_bytes(version: int, records_bytes: int) -> int:
    """Exact bytes one partition entry adds to a Produce request, not counting its
    ``records_bytes`` of record batch."""
    if version >= _FIRST_FLEXIBLE:
        return 4 + _uvarint_size(records_bytes + 1) + 1  # index, records length, tags
    return 8


def produce_request_overhead_bytes(
    *,
    version: int,
    client_id: str | None,
    transactional_id: str | None,
    topic_data: Sequence[tuple[str, Sequence[int]]],
) -> int:
    """Exact frame size of a Produce request minus its record batch bytes.

    ``topic_data`` is ``[(topic, [records_bytes per partition, ...]), ...]``. The
    frame :func:`encode_produce_request` would build is this plus the sum of the
    batch sizes. Raises ValueError for a version outside 3..12.
    """
    size = produce_request_base_overhead_bytes(version, client_id, transactional_id)
    if version < _FIRST_FLEXIBLE:
        for topic, sizes in topic_data:
            size += produce_topic_overhead_bytes(version, topic) + 8 * len(sizes)
        return size
    size += _uvarint_size(len(topic_data) + 1) - 2
    for topic, sizes in topic_data:
        size += len(_encoded_topic(topic, True)) + _uvarint_size(len(sizes) + 1) + 1
        for records_bytes in sizes:
            size += 5 + _uvarint_size(records_bytes + 1)
    return size


@dataclass(frozen=True, slots=True)
class PartitionProduceResponse:
    """One partition's answer. Offsets/times are -1 when the version or broker omits them.

    ``current_leader`` is (leader_id, leader_epoch) from the KIP-951 tagged field
    (v10+), None when absent; ``record_errors`` holds (batch_index, message) pairs (v8+).
    """

    index: int
    error_code: int
    base_offset: int
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    record_errors: list[tuple[int, str | None]] = field(default_factory=list)
    error_message: str | None = None
    current_leader: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class TopicProduceResponse:
    """One topic's partition answers."""

    name: str
    partitions: list[PartitionProduceResponse]


@dataclass(frozen=True, slots=True)
class ProduceResponse:
    """A decoded Produce response. ``node_endpoints`` maps node id to (host, port, rack) (v10+)."""

    topics: list[TopicProduceResponse]
    throttle_time_ms: int
    node_endpoints: dict[int, tuple[str, int, str | None]] = field(default_factory=dict)


def decode_produce_response(version: int, body: bytes | memoryview, offset: int) -> ProduceResponse:
    """Decode a Produce response body v3..v12 starting at ``offset`` of ``body``.

    ``body`` is the frame after its size prefix and ``offset`` the end of the response
    header (see ``parse_response_header``). Unknown tagged fields are skipped.
    Raises ProtocolError if the bytes do not parse, ValueError for a version outside 3..12.
    """
    _check_version(version)
    try:
        return _decode(version, body, offset)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed Produce v{version} response: {exc}") from exc


def _read_string(buf: bytes | memoryview, offset: int, flexible: bool) -> tuple[str | None, int]:
    if flexible:
        n, offset = read_uvarint(buf, offset)
        n -= 1
    else:
        (n,) = _I16.unpack_from(buf, offset)
        offset += 2
    if n < 0:
        return None, offset
    end = offset + n
    if end > len(buf):
        raise ProtocolError("string runs past the end of the frame")
    return str(buf[offset:end], "utf-8"), end


def _read_count(buf: bytes | memoryview, offset: int, flexible: bool) -> tuple[int, int]:
    """Array length; a null array (-1) reads as empty."""
    if flexible:
        n, offset = read_uvarint(buf, offset)
        return max(n - 1, 0), offset
    (n,) = _I32.unpack_from(buf, offset)
    return max(n, 0), offset + 4


def _decode(version: int, buf: bytes | memoryview, offset: int) -> ProduceResponse:
    flexible = version >= _FIRST_FLEXIBLE
    kip951 = version >= _FIRST_KIP951
    has_log_start = version >= 5
    has_record_errors = version >= 8
    topics: list[TopicProduceResponse] = []
    n_topics, offset = _read_count(buf, offset, flexible)
    for _ in range(n_topics):
        name, offset = _read_string(buf, offset, flexible)
        if name is None:
            raise ProtocolError("null topic name in Produce response")
        partitions: list[PartitionProduceResponse] = []
        n_partitions, offset = _read_count(buf, offset, flexible)
        for _ in range(n_partitions):
            index, error_code, base_offset = _PARTITION_HEAD.unpack_from(buf, offset)
            (log_append_time_ms,) = _I64.unpack_from(buf, offset + 14)
            offset += 22
            log_start_offset = -1
            if has_log_start:
                (log_start_offset,) = _I64.unpack_from(buf, offset)
                offset += 8
            record_errors: list[tuple[int, str | None]] = []
            error_message = None
            if has_record_errors:
                n_errors, offset = _read_count(buf, offset, flexible)
                for _ in range(n_errors):
                    (batch_index,) = _I32.unpack_from(buf, offset)
                    message, offset = _read_string(buf, offset + 4, flexible)
                    if flexible:
                        offset = skip_tagged_fields(buf, offset)
                    record_errors.append((batch_index, message))
                error_message, offset = _read_string(buf, offset, flexible)
            current_leader: tuple[int, int] | None = None
            if flexible:
                n_tags, offset = read_uvarint(buf, offset)
                for _ in range(n_tags):
                    tag, offset = read_uvarint(buf, offset)
                    size, offset = read_uvarint(buf, offset)
                    if tag == 0 and kip951:
                        # LeaderIdAndEpoch: leader id, leader epoch, then its own tags.
                        leader_id, leader_epoch = _I32_PAIR.unpack_from(buf, offset)
                        current_leader = (leader_id, leader_epoch)
                    offset += size
            partitions.append(
                PartitionProduceResponse(
                    index,
                    error_code,
                    base_offset,
                    log_append_time_ms,
                    log_start_offset,
                    record_errors,
                    error_message,
                    current_leader,
                )
            )
        if flexible:
            offset = skip_tagged_fields(buf, offset)
        topics.append(TopicProduceResponse(name, partitions))
    (throttle_time_ms,) = _I32.unpack_from(buf, offset)
    offset += 4
    node_endpoints: dict[int, tuple[str, int, str | None]] = {}
    if flexible:
        n_tags, offset = read_uvarint(buf, offset)
        for _ in range(n_tags):
            tag, offset = read_uvarint(buf, offset)
            size, offset = read_uvarint(buf, offset)
            end = offset + size
            if tag == 0 and kip951:
                _read_node_endpoints(buf, offset, node_endpoints)
            offset = end
        if offset > len(buf):
            raise ProtocolError("tagged field runs past the end of the frame")
    return ProduceResponse(topics, throttle_time_ms, node_endpoints)


def _read_node_endpoints(
    buf: bytes | memoryview, offset: int, out: dict[int, tuple[str, int, str | None]]
) -> None:
    n, offset = _read_count(buf, offset, True)
    for _ in range(n):
        (node_id,) = _I32.unpack_from(buf, offset)
        host, offset = _read_string(buf, offset + 4, True)
        (port,) = _I32.unpack_from(buf, offset)
        rack, offset = _read_string(buf, offset + 4, True)
        offset = skip_tagged_fields(buf, offset)
        if host is None:
            raise ProtocolError(f"null host for node {node_id} in Produce response NodeEndpoints")
        out[node_id] = (host, port, rack)
