"""Record batch v2 (magic 2) builder: the producer's hot path.

Owns the byte layout of a record batch (Kafka ``DefaultRecordBatch`` /
``DefaultRecord``, java-producer.md §2) and nothing else: it knows no
partitions, no sockets, no clocks. Timestamps are passed in, in milliseconds.

:class:`RecordBatchBuilder` encodes each record into one ``bytearray`` the
moment it is appended, behind 61 bytes reserved for the batch header. So the
uncompressed wire size of the batch is ``len`` of that buffer, always exact and
free, and :meth:`RecordBatchBuilder.build` of an uncompressed batch only fills
in the header and CRC in place: no concatenation, no copy.

Batch header (61 bytes, big-endian)::

    0  BaseOffset int64 = 0        27 BaseTimestamp int64     53 BaseSequence int32
    8  Length int32 = size - 12    35 MaxTimestamp int64      57 RecordsCount int32
    12 PartitionLeaderEpoch = -1   43 ProducerId int64        61 records (maybe compressed)
    16 Magic int8 = 2              51 ProducerEpoch int16
    17 CRC uint32 = CRC-32C of [21, end)
    21 Attributes int16 (codec bits 0-2, transactional bit 4)
    23 LastOffsetDelta int32 = count - 1

Record::

    Length varint | Attributes int8 = 0 | TimestampDelta varlong | OffsetDelta varint
    | KeyLength varint (-1 = null) | Key | ValueLength varint (-1 = null) | Value
    | HeaderCount varint | (NameLength varint | Name UTF-8 | ValueLength varint | Value)*

Pure: no I/O, clocks or threads.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, TypeAlias

from kprod.records.crc import crc32c
from kprod.records.varint import (
    ZIGZAG_TABLE,
    decode_varint,
    decode_varlong,
    encode_varint,
    encode_varlong,
    varint_size,
)

if TYPE_CHECKING:
    from kprod.records.compression import Compressor

__all__ = [
    "BATCH_HEADER_SIZE",
    "Headers",
    "RecordBatchBuilder",
    "encode_record",
    "record_size",
    "single_record_batch_size",
]

Headers: TypeAlias = Sequence[tuple[str, "bytes | None"]]
"""Record headers as the builder takes them: (name, value or None) pairs, in order."""

BATCH_HEADER_SIZE: Final = 61
"""Bytes of a v2 batch header (Kafka ``RECORD_BATCH_OVERHEAD``)."""

_LOG_OVERHEAD: Final = 12  # BaseOffset + Length: not counted in Length.
_CRC_START: Final = 21  # The CRC covers Attributes .. end of batch.
_TRANSACTIONAL_FLAG: Final = 0x10

# Everything but the CRC, which is computed over the packed header afterwards.
_HEADER: Final = struct.Struct(">qiib4xhiqqqhii")
_CRC: Final = struct.Struct(">I")
assert _HEADER.size == BATCH_HEADER_SIZE

_T: Final = ZIGZAG_TABLE  # _T[n] is the varint of n for -8192 <= n <= 8191.
_NULL: Final = b"\x01"  # varint(-1): the length of a null key, value or header value.
_ZERO: Final = b"\x00"  # Attributes = 0, and HeaderCount = 0.


def encode_record(
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
) -> bytes:
    """Return the wire encoding of one record, its Length varint included.

    The reference encoder: :meth:`RecordBatchBuilder.append` inlines the same
    steps for speed, and the tests check the two agree. Raises ValueError when a
    delta or length does not fit its varint.
    """
    parts: list[bytes] = [
        _ZERO,
        encode_varlong(timestamp_delta),
        encode_varint(offset_delta),
    ]
    if key is None:
        parts.append(_NULL)
    else:
        parts += (encode_varint(len(key)), key)
    if value is None:
        parts.append(_NULL)
    else:
        parts += (encode_varint(len(value)), value)
    _encode_headers(parts, headers)
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def _encode_headers(parts: list[bytes], headers: Headers | None) -> None:
    """Append HeaderCount and the headers to ``parts``."""
    if not headers:
        parts.append(_ZERO)
        return
    parts.append(encode_varint(len(headers)))
    for name, header_value in headers:
        name_bytes = name.encode()
        parts += (encode_varint(len(name_bytes)), name_bytes)
        if header_value is None:
            parts.append(_NULL)
        else:
            parts += (encode_varint(len(header_value)), header_value)


def _headers_size(headers: Headers | None) -> int:
    if not headers:
        return 1
    size = varint_size(len(headers))
    for name, header_value in headers:
        name_size = len(name.encode())
        size += varint_size(name_size) + name_size
        if header_value is None:
            size += 1
        else:
            size += varint_size(len(header_value)) + len(header_value)
    return size


def record_size(
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
) -> int:
    """Return the exact encoded size in bytes of one record (Kafka ``DefaultRecord.sizeInBytes``).

    Computed arithmetically: nothing is encoded or copied.
    """
    body = 1 + varint_size(timestamp_delta) + varint_size(offset_delta)
    body += 1 if key is None else varint_size(len(key)) + len(key)
    body += 1 if value is None else varint_size(len(value)) + len(value)
    body += _headers_size(headers)
    return varint_size(body) + body


def single_record_batch_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    """Return the exact uncompressed size in bytes of a batch holding only this record.

    The record's timestamp does not matter: it is the batch's base timestamp,
    so its delta is 0. This is the size the producer checks against
    ``max.request.size`` before accepting a record (Java checks an upper bound).
    """
    return BATCH_HEADER_SIZE + record_size(0, 0, key, value, headers)


def _read_bytes(buf: memoryview, offset: int) -> tuple[bytes | None, int]:
    length, offset = decode_varint(buf, offset)
    if length < 0:
        return None, offset
    return bytes(buf[offset : offset + length]), offset + length


class RecordBatchBuilder:
    """Builds one record batch v2, encoding each record as it is appended.

    ``base_timestamp_ms`` is the batch's BaseTimestamp: the producer passes the
    first record's timestamp (Java does the same); records may be older or newer
    (their delta is signed). Not thread-safe; never blocks.

    The buffer returned by :meth:`build` for an uncompressed batch *is* the
    builder's buffer (no copy), and a compressed batch's buffer is cached for
    rebuilds: a later :meth:`build` rewrites its header in place, and appending
    after :meth:`build` makes that result stale. Send what :meth:`build` returned
    before appending again or rebuilding.
    """

    __slots__ = (
        "_compressed",
        "_compressed_count",
        "_compressed_with",
        "base_timestamp_ms",
        "buffer",
        "max_timestamp_ms",
        "record_count",
        "size_bytes",
    )

    def __init__(self, base_timestamp_ms: int) -> None:
        """Start an empty batch whose BaseTimestamp is ``base_timestamp_ms`` (ms since the epoch)."""
        self.base_timestamp_ms = base_timestamp_ms
        """The batch's BaseTimestamp, in ms since the epoch."""
        self.buffer = bytearray(BATCH_HEADER_SIZE)
        """61 reserved header bytes, then every record encoded so far."""
        self.record_count = 0
        """Number of records appended so far (a plain attribute: read per record)."""
        self.size_bytes = BATCH_HEADER_SIZE
        """Uncompressed wire size of the batch in bytes: ``len(buffer)``, kept as an attribute."""
        self.max_timestamp_ms = -1
        """The largest record timestamp appended, in ms; -1 while the batch is empty."""
        # These four attributes are public because the producer's append fast path
        # (ProducerEngine.try_append_plain) inlines append() for records without headers and
        # updates them itself; tests check that both paths build the same bytes.
        # The last compressed batch and what it was built from; see build().
        self._compressed: bytearray | None = None
        self._compressed_with: Compressor | None = None
        self._compressed_count = 0

    def append(
        self,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
    ) -> int:
        """Encode one record at the end of the batch; return the bytes it added.

        ``timestamp_ms`` is the record's CreateTime; ``headers`` is None or a
        sequence of ``(name, value)`` with ``value`` bytes or None. Never refuses:
        the caller checks sizes first (:meth:`next_record_size`, or use
        :meth:`try_append`). Raises ValueError if a length or delta overflows its
        varint (a key or value of 2 GiB or more).
        """
        # Hot path: the steps of encode_record() inlined, with varints read from _T
        # after a range check, and a single += into the buffer.
        count = self.record_count
        delta = timestamp_ms - self.base_timestamp_ms
        if key is None:
            key_length = _NULL
            key = b""
        else:
            n = len(key)
            key_length = _T[n] if n <= 8191 else encode_varint(n)
        if value is None:
            value_length = _NULL
            value = b""
        else:
            n = len(value)
            value_length = _T[n] if n <= 8191 else encode_varint(n)
        if headers:
            parts: list[bytes] = []
            _encode_headers(parts, headers)
            header_bytes = b"".join(parts)
        else:
            header_bytes = _ZERO
        body = b"".join(
            (
                _ZERO,
                _T[delta] if -8192 <= delta <= 8191 else encode_varlong(delta),
                _T[count] if count <= 8191 else encode_varint(count),
                key_length,
                key,
                value_length,
                value,
                header_bytes,
            )
        )
        n = len(body)
        record = (_T[n] if n <= 8191 else encode_varint(n)) + body
        self.buffer += record
        self.record_count = count + 1
        n = len(record)
        self.size_bytes += n
        if timestamp_ms > self.max_timestamp_ms:
            self.max_timestamp_ms = timestamp_ms
        return n

    def try_append(
        self,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        max_size_bytes: int,
    ) -> int:
        """Append the record if the batch stays within ``max_size_bytes``; return the bytes added, or 0.

        An empty batch always accepts its first record, however large (as Java
        does for ``batch.size``); the caller checks ``max.request.size`` with
        :func:`single_record_batch_size`. Returns 0, appending nothing, when the
        record does not fit. Sizes are uncompressed wire sizes.
        """
        if (
            self.record_count
            and len(self.buffer) + self.next_record_size(timestamp_ms, key, value, headers) > max_size_bytes
        ):
            return 0
        return self.append(timestamp_ms, key, value, headers)

    def next_record_size(
        self,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
    ) -> int:
        """Return the exact number of bytes :meth:`append` would add for this record now."""
        return record_size(self.record_count, timestamp_ms - self.base_timestamp_ms, key, value, headers)

    def decode_records(self) -> list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
        """Decode every appended record as (timestamp_ms, key, value, headers).

        Not on the hot path: used to split a batch the broker rejected as too large.
        """
        buf = memoryview(self.buffer)
        base = self.base_timestamp_ms
        offset = BATCH_HEADER_SIZE
        out: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = []
        for _ in range(self.record_count):
            _length, offset = decode_varint(buf, offset)
            offset += 1  # attributes
            ts_delta, offset = decode_varlong(buf, offset)
            _offset_delta, offset = decode_varint(buf, offset)
            key, offset = _read_bytes(buf, offset)
            value, offset = _read_bytes(buf, offset)
            header_count, offset = decode_varint(buf, offset)
            headers: list[tuple[str, bytes | None]] = []
            for _h in range(header_count):
                name, offset = _read_bytes(buf, offset)
                hvalue, offset = _read_bytes(buf, offset)
                headers.append(((name or b"").decode(), hvalue))
            out.append((base + ts_delta, key, value, headers))
        return out

    @property
    def records_bytes(self) -> bytes:
        """A copy of the encoded (uncompressed) records section."""
        return bytes(self.buffer[BATCH_HEADER_SIZE:])

    def build(
        self,
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
        transactional: bool = False,
        compression: Compressor | None = None,
    ) -> bytearray:
        """Fill in the batch header and CRC; return the whole batch, ready for a Produce request.

        ``producer_id``/``producer_epoch``/``base_sequence`` default to -1 (not
        idempotent). ``compression`` None writes the records uncompressed and
        returns the builder's own buffer (no copy). With a compressor, the records
        are compressed once and cached: building again with the same compressor and
        no new records (say after an epoch bump) only rewrites the header and CRC.
        Raises ValueError for an empty batch, struct.error for a field out of range.
        """
        count = self.record_count
        if count == 0:
            raise ValueError("cannot build a record batch with no records")
        if compression is None:
            out = self.buffer
            attributes = 0
        else:
            cached = self._compressed
            if (
                cached is not None
                and self._compressed_with is compression
                and self._compressed_count == count
            ):
                out = cached
            else:
                out = bytearray(BATCH_HEADER_SIZE)
                with memoryview(self.buffer) as view:
                    out += compression.compress(view[BATCH_HEADER_SIZE:])
                self._compressed = out
                self._compressed_with = compression
                self._compressed_count = count
            attributes = compression.codec_id
        if transactional:
            attributes |= _TRANSACTIONAL_FLAG
        _HEADER.pack_into(
            out,
            0,
            0,  # BaseOffset: the broker assigns offsets.
            len(out) - _LOG_OVERHEAD,
            -1,  # PartitionLeaderEpoch: NO_PARTITION_LEADER_EPOCH, as Java writes.
            2,  # Magic
            attributes,
            count - 1,  # LastOffsetDelta
            self.base_timestamp_ms,
            self.max_timestamp_ms,
            producer_id,
            producer_epoch,
            base_sequence,
            count,
        )
        with memoryview(out) as view:
            _CRC.pack_into(out, 17, crc32c(view[_CRC_START:]))
        return out
