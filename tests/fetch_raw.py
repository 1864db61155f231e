"""Test helper: fetch the record batches of a partition exactly as the broker stores them.

Tansu stores produced batches verbatim, so a raw Fetch shows what kprod put on the wire: the codec
bits of the attributes, the CRC, the compressed size. confluent-kafka's consumer hides all of that
(it decompresses and checks for us); this helper does not.

The requests (Metadata to find the leader, then Fetch) are hand-rolled from kio's entities, framed
with kprod's own ``encode_request``/``decode_response`` and sent over a plain blocking socket, one at
a time. The batch headers are parsed here with ``struct`` (not with kprod's builder), and the CRC is checked with
the ``crc32c`` package directly, so a kprod bug cannot hide itself.

Batch header (v2, big-endian), as parsed by :func:`parse_batches`::

    0 BaseOffset int64 | 8 Length int32 | 12 PartitionLeaderEpoch int32 | 16 Magic int8
    17 CRC uint32 (CRC-32C of bytes [21:]) | 21 Attributes int16 | 23 LastOffsetDelta int32
    27 BaseTimestamp int64 | 35 MaxTimestamp int64 | 43 ProducerId int64 | 51 ProducerEpoch int16
    53 BaseSequence int32 | 57 RecordCount int32 | 61 records (maybe compressed)
"""

from __future__ import annotations

import datetime
import itertools
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import crc32c as _crc32c
from kio.index import load_payload_module, load_response_schema
from kio.static.constants import EntityType
from kio.static.primitive import i8, i32, i32Timedelta, i64

from kprod.protocol.messages import decode_response, encode_request, metadata_request, parse_metadata
from kprod.records.compression import decompress

__all__ = ["FETCH_API_KEY", "FETCH_VERSION", "FetchError", "RawBatch", "fetch_raw_batches", "parse_batches"]

FETCH_API_KEY = 1
FETCH_VERSION = 4
"""Fetch v4: the first version with record batches v2 and isolation level, not flexible (request
header v1, response header v0). Tansu advertises Fetch 0-17, Apache Kafka 4.x 4-17."""

METADATA_API_KEY = 3
METADATA_VERSION = 1
"""Metadata v1 (not flexible): enough to find a partition's leader."""

_HEADER = struct.Struct(">qiibIhiqqqhii")
_HEADER_SIZE = 61
_LOG_OVERHEAD = 12  # BaseOffset + Length: not counted in Length.
_CRC_START = 21
_correlation_ids = itertools.count(1)


class FetchError(AssertionError):
    """The broker answered the Fetch with an error, or with bytes that are not record batches."""


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One record batch as stored by the broker, with its header fields parsed."""

    data: bytes
    """The whole batch: header and (maybe compressed) records section."""
    base_offset: int
    length: int
    """The Length field: the batch's size minus 12 (BaseOffset and Length themselves)."""
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def codec(self) -> int:
        """Compression codec id, attributes bits 0-2: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd."""
        return self.attributes & 0x07

    @property
    def size_bytes(self) -> int:
        """Stored size of the whole batch in bytes (``Length + 12``)."""
        return len(self.data)

    @property
    def computed_crc(self) -> int:
        """CRC-32C of bytes [21:], computed here: equals :attr:`crc` for a well-formed batch."""
        return int(_crc32c.crc32c(self.data[_CRC_START:]))

    @property
    def crc_ok(self) -> bool:
        return self.computed_crc == self.crc

    @property
    def records_section(self) -> bytes:
        """The records section as stored (compressed when :attr:`codec` is not 0)."""
        return self.data[_HEADER_SIZE:]

    def decompressed_records(self) -> bytes:
        """The records section decompressed (kprod's test-only decoder; raises ValueError if corrupt)."""
        return decompress(self.codec, self.records_section)

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1


def parse_batches(records: bytes) -> list[RawBatch]:
    """Split a Fetch response's records bytes into batches; a truncated trailing batch is dropped.

    :raises FetchError: for a batch whose magic is not 2 or whose Length is impossible.
    """
    out: list[RawBatch] = []
    pos = 0
    while len(records) - pos >= _HEADER_SIZE:
        fields = _HEADER.unpack_from(records, pos)
        length = fields[1]
        if length < _HEADER_SIZE - _LOG_OVERHEAD:
            raise FetchError(f"batch at byte {pos} has an impossible Length {length}")
        end = pos + _LOG_OVERHEAD + length
        if end > len(records):
            break  # the broker cut the last batch at the fetch size limit (KIP-74): fetch it again
        if fields[3] != 2:
            raise FetchError(f"batch at byte {pos} (offset {fields[0]}) has magic {fields[3]}, not 2")
        out.append(RawBatch(bytes(records[pos:end]), *fields))
        pos = end
    return out


def _request_entity(topic: str, partition: int, offset: int, max_bytes: int, max_wait_ms: int) -> Any:
    module = load_payload_module(FETCH_API_KEY, FETCH_VERSION, EntityType.request)
    part = module.FetchPartition(
        partition=i32(partition), fetch_offset=i64(offset), partition_max_bytes=i32(max_bytes)
    )
    return module.FetchRequest(
        max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=max_wait_ms)),
        min_bytes=i32(1),
        max_bytes=i32(max_bytes),
        isolation_level=i8(0),
        topics=(module.FetchTopic(topic=topic, partitions=(part,)),),
    )


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"broker closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _round_trip(sock: socket.socket, request: Any, api_key: int, version: int) -> Any:
    """Send one non-flexible request (header v1) and decode its answer (response header v0)."""
    correlation_id = next(_correlation_ids)
    sock.sendall(encode_request(request, correlation_id=correlation_id, client_id="kprod-fetch-raw"))
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    frame = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", frame)
    if got != correlation_id:
        raise FetchError(f"answer has correlation id {got}, expected {correlation_id}")
    # Response header v0: the body starts right after the correlation id.
    return decode_response(load_response_schema(api_key, version), frame, 4)


def _leader_address(sock: socket.socket, topic: str, partition: int) -> tuple[str, int]:
    """Where ``topic[partition]``'s leader listens, from a Metadata v1 request on ``sock``."""
    request = metadata_request(METADATA_VERSION, [topic], allow_auto_topic_creation=False)
    snapshot = parse_metadata(_round_trip(sock, request, METADATA_API_KEY, METADATA_VERSION))
    info = snapshot.topics.get(topic)
    if info is None or info.error_code != 0 or partition not in info.partitions:
        code = None if info is None else info.error_code
        raise FetchError(f"Metadata has no {topic}[{partition}] (topic error code {code})")
    leader = info.partitions[partition].leader_id
    if leader not in snapshot.brokers:
        raise FetchError(f"{topic}[{partition}] has no reachable leader (leader id {leader})")
    return snapshot.brokers[leader]


def _fetch_once(
    sock: socket.socket, topic: str, partition: int, offset: int, max_bytes: int, max_wait_ms: int
) -> tuple[int, bytes]:
    """One Fetch round trip; returns (high watermark, records bytes)."""
    request = _request_entity(topic, partition, offset, max_bytes, max_wait_ms)
    response = _round_trip(sock, request, FETCH_API_KEY, FETCH_VERSION)
    for topic_data in response.responses:
        for part in topic_data.partitions:
            if topic_data.topic == topic and int(part.partition_index) == partition:
                code = int(part.error_code)
                if code != 0:
                    raise FetchError(f"Fetch {topic}[{partition}]@{offset} failed with error code {code}")
                return int(part.high_watermark), bytes(part.records or b"")
    raise FetchError(f"Fetch answer has no data for {topic}[{partition}]")


def fetch_raw_batches(
    bootstrap: str,
    topic: str,
    partition: int,
    *,
    start_offset: int = 0,
    max_bytes: int = 4 * 1024 * 1024,
    timeout_s: float = 30.0,
) -> list[RawBatch]:
    """Every batch of ``topic[partition]`` from ``start_offset`` up to the high watermark, in order.

    ``bootstrap`` is a ``bootstrap.servers`` string; the first address is asked for the partition's
    leader (Metadata v1), which is then fetched from (Fetch v4, up to ``max_bytes`` per round trip,
    more if one batch is larger). Blocks up to ``timeout_s`` seconds in all.

    :raises FetchError: on an error code or malformed batches.
    :raises TimeoutError: if the high watermark is not reached in time.
    """
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as sock:
        leader = _leader_address(sock, topic, partition)
    batches: list[RawBatch] = []
    offset = start_offset
    with socket.create_connection(leader, timeout=timeout_s) as sock:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"fetching {topic}[{partition}]: at offset {offset} after {len(batches)} batches"
                )
            sock.settimeout(remaining)
            high_watermark, records = _fetch_once(sock, topic, partition, offset, max_bytes, 50)
            if offset >= high_watermark:
                return batches
            got = [b for b in parse_batches(records) if b.next_offset > offset]
            if not got:
                if records:  # one batch larger than max_bytes: ask for more
                    max_bytes *= 2
                continue
            batches += got
            offset = got[-1].next_offset
