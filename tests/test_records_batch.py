"""RecordBatchBuilder: the java-producer.md §2.4 golden vector, byte equality with kio's writer,
decoding of compressed batches, size bookkeeping and header rebuilds."""

from __future__ import annotations

import datetime
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.records.readers import read_batch
from kio.records.schema import NewRecordBatch, Record, RecordHeader
from kio.records.writers import write_new_batch
from kio.static.primitive import TZAwareMicros, i8, i16, i32, i64

from kprod.records import (
    BATCH_HEADER_SIZE,
    RecordBatchBuilder,
    crc32c,
    decode_varint,
    decode_varlong,
    decompress,
    encode_record,
    make_compressor,
    record_size,
    single_record_batch_size,
)

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors" / "vectors.json").read_text())

RecordTuple = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def _utf8(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _build(records: list[RecordTuple], **kwargs: Any) -> bytearray:
    builder = RecordBatchBuilder(records[0][0])
    for timestamp_ms, key, value, headers in records:
        builder.append(timestamp_ms, key, value, headers)
    return builder.build(**kwargs)


# --- a small independent decoder (kio's reader cannot read compressed batches) ---


@dataclass
class DecodedBatch:
    base_offset: int
    length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records: list[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]]


def _read_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(data, pos)
    if length == -1:
        return None, pos
    assert length >= 0
    return data[pos : pos + length], pos + length


def decode_batch(batch: bytes | bytearray) -> DecodedBatch:
    data = bytes(batch)
    fields = struct.unpack_from(">qiibIhiqqqhii", data, 0)
    (base_offset, length, epoch, magic, crc, attributes, lod, base_ts, max_ts, pid, pepoch, seq, count) = (
        fields
    )
    assert length == len(data) - 12
    assert magic == 2
    assert crc == crc32c(data[21:])
    records_section = decompress(attributes & 0x07, data[BATCH_HEADER_SIZE:])
    records = []
    pos = 0
    for _ in range(count):
        record_length, pos = decode_varint(records_section, pos)
        end = pos + record_length
        assert records_section[pos] == 0  # attributes
        ts_delta, pos = decode_varlong(records_section, pos + 1)
        offset_delta, pos = decode_varint(records_section, pos)
        key, pos = _read_bytes(records_section, pos)
        value, pos = _read_bytes(records_section, pos)
        header_count, pos = decode_varint(records_section, pos)
        headers = []
        for _ in range(header_count):
            name, pos = _read_bytes(records_section, pos)
            assert name is not None
            header_value, pos = _read_bytes(records_section, pos)
            headers.append((name.decode(), header_value))
        assert pos == end
        records.append((base_ts + ts_delta, offset_delta, key, value, headers))
    assert pos == len(records_section)
    return DecodedBatch(
        base_offset, length, epoch, magic, crc, attributes, lod, base_ts, max_ts, pid, pepoch, seq, records
    )


# --- golden vector ---


def test_java_producer_md_vector() -> None:
    vector = VECTORS["record_batch_v2"]
    records: list[RecordTuple] = [
        (
            r["timestamp_ms"],
            _utf8(r["key_utf8"]),
            _utf8(r["value_utf8"]),
            [(name, _utf8(value)) for name, value in r["headers"]],
        )
        for r in vector["records"]
    ]
    builder = RecordBatchBuilder(records[0][0])
    added = [builder.append(*record) for record in records]
    batch = builder.build()
    assert batch.hex() == vector["hex"]
    assert builder.size_bytes == len(batch) == 88
    assert sum(added) == 88 - BATCH_HEADER_SIZE
    assert crc32c(batch[21:]) == 0x20409F0D


def test_single_record_vector_from_section_2_2() -> None:
    assert encode_record(0, 0, None, b"v", None) == bytes.fromhex("0e00000001027600")
    builder = RecordBatchBuilder(5)
    assert builder.append(5, None, b"v", None) == 8
    assert builder.records_bytes == bytes.fromhex("0e00000001027600")


# --- byte equality with kio's writer ---

_timestamps = st.integers(min_value=0, max_value=1 << 45)
_blobs = st.one_of(st.none(), st.binary(max_size=300))
_headers = st.lists(st.tuples(st.text(max_size=20), _blobs), max_size=4)
_records = st.lists(st.tuples(_timestamps, _blobs, _blobs, _headers), min_size=1, max_size=30)


def _kio_timestamp(ms: int) -> TZAwareMicros:
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return TZAwareMicros.parse(epoch + datetime.timedelta(milliseconds=ms))


def _kio_ms(ms: int) -> int:
    """A timestamp near ``ms`` that kio's writer reproduces exactly.

    kio writes ``int(datetime.timestamp() * 1000)``, which float rounding may put 1 ms low.
    """
    for candidate in range(ms, ms - 10, -1):
        if int(_kio_timestamp(candidate).timestamp() * 1000) == candidate:
            return candidate
    return ms - ms % 1000  # whole seconds are always exact


def _kio_bytes(
    records: list[RecordTuple], producer_id: int, producer_epoch: int, base_sequence: int, attributes: int
) -> bytes:
    batch = NewRecordBatch(
        producer_id=i64(producer_id),
        producer_epoch=i16(producer_epoch),
        partition_leader_epoch=i32(-1),  # kio defaults to 0; Java (and we) write -1.
        base_sequence=i32(base_sequence),
        attributes=i16(attributes),
        records=tuple(
            Record(
                attributes=i8(0),
                timestamp=_kio_timestamp(ts),
                offset=i64(offset),
                key=key,
                value=value,
                headers=tuple(RecordHeader(key=name.encode(), value=hv) for name, hv in headers),
            )
            for offset, (ts, key, value, headers) in enumerate(records)
        ),
    )
    out = io.BytesIO()
    write_new_batch(out, batch)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    records=_records,
    producer_id=st.integers(-1, (1 << 63) - 1),
    producer_epoch=st.integers(-1, (1 << 15) - 1),
    base_sequence=st.integers(-1, (1 << 31) - 1),
    transactional=st.booleans(),
)
def test_matches_kio_writer(
    records: list[RecordTuple], producer_id: int, producer_epoch: int, base_sequence: int, transactional: bool
) -> None:
    records = [(_kio_ms(ts), key, value, headers) for ts, key, value, headers in records]
    builder = RecordBatchBuilder(records[0][0])
    expected_size = BATCH_HEADER_SIZE
    for offset, (ts, key, value, headers) in enumerate(records):
        predicted = builder.next_record_size(ts, key, value, headers)
        encoded = encode_record(offset, ts - records[0][0], key, value, headers)
        assert builder.append(ts, key, value, headers) == predicted == len(encoded)
        expected_size += predicted
        assert builder.size_bytes == expected_size
    assert builder.records_bytes == b"".join(
        encode_record(offset, ts - records[0][0], key, value, headers)
        for offset, (ts, key, value, headers) in enumerate(records)
    )
    batch = builder.build(
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        transactional=transactional,
    )
    assert len(batch) == expected_size
    assert builder.max_timestamp_ms == max(r[0] for r in records)
    attributes = 0x10 if transactional else 0
    assert bytes(batch) == _kio_bytes(records, producer_id, producer_epoch, base_sequence, attributes)
    # And kio's reader reads it back (it truncates timestamps to seconds, so compare the rest).
    read, size = read_batch(bytes(batch), 0)
    assert size == len(batch)
    assert read.partition_leader_epoch == -1
    assert [(r.offset, r.key, r.value, [(h.key, h.value) for h in r.headers]) for r in read.records] == [
        (offset, key, value, [(name.encode(), hv) for name, hv in headers])
        for offset, (_, key, value, headers) in enumerate(records)
    ]


# --- compressed batches ---


@pytest.mark.parametrize(
    ("compression_type", "level"),
    [("gzip", None), ("gzip", 1), ("snappy", None), ("lz4", None), ("lz4", 12), ("zstd", None), ("zstd", -5)],
)
@settings(max_examples=40, deadline=None)
@given(records=_records)
def test_compressed_batches_decode(
    compression_type: str, level: int | None, records: list[RecordTuple]
) -> None:
    compressor = make_compressor(compression_type, level)
    assert compressor is not None
    builder = RecordBatchBuilder(records[0][0])
    for record in records:
        builder.append(*record)
    plain = bytes(builder.build())
    batch = builder.build(producer_id=7, producer_epoch=3, base_sequence=42, compression=compressor)
    decoded = decode_batch(batch)
    assert decoded.attributes == compressor.codec_id
    assert (decoded.producer_id, decoded.producer_epoch, decoded.base_sequence) == (7, 3, 42)
    assert decoded.last_offset_delta == len(records) - 1
    assert decoded.base_timestamp == records[0][0]
    assert decoded.max_timestamp == max(r[0] for r in records)
    assert decoded.records == [
        (ts, offset, key, value, headers) for offset, (ts, key, value, headers) in enumerate(records)
    ]
    # The header is never compressed; only the bytes after it differ from the plain batch.
    assert decompress(compressor.codec_id, batch[BATCH_HEADER_SIZE:]) == plain[BATCH_HEADER_SIZE:]
    assert decode_batch(plain).records == decoded.records


def test_compressed_batch_larger_than_codec_blocks() -> None:
    # > 64 KiB of records: several xerial (32 KiB) and lz4 (64 KiB) blocks, some incompressible.
    import random

    rng = random.Random(7)
    records: list[RecordTuple] = [
        (1000 + i, str(i).encode(), rng.randbytes(900) if i % 2 else b"x" * 900, []) for i in range(300)
    ]
    for compression_type in ("gzip", "snappy", "lz4", "zstd"):
        for level in (None, 17) if compression_type == "lz4" else (None,):
            compressor = make_compressor(compression_type, level)
            batch = _build(records, compression=compressor)
            assert decode_batch(batch).records == [
                (ts, offset, key, value, headers) for offset, (ts, key, value, headers) in enumerate(records)
            ]


# --- rebuilds, attributes, sizes ---


def test_rebuild_after_epoch_bump_reuses_compressed_records() -> None:
    compressor = make_compressor("zstd", None)
    builder = RecordBatchBuilder(1_700_000_000_000)
    for i in range(50):
        builder.append(1_700_000_000_000 + i, b"key-%d" % i, b"value " * 20, None)
    first = bytes(builder.build(producer_id=5, producer_epoch=0, base_sequence=100, compression=compressor))
    second = builder.build(producer_id=5, producer_epoch=1, base_sequence=0, compression=compressor)
    assert first[BATCH_HEADER_SIZE:] == bytes(second[BATCH_HEADER_SIZE:])
    assert first[:BATCH_HEADER_SIZE] != bytes(second[:BATCH_HEADER_SIZE])
    decoded = decode_batch(second)
    assert (decoded.producer_id, decoded.producer_epoch, decoded.base_sequence) == (5, 1, 0)
    # Appending invalidates the cache.
    builder.append(1_700_000_000_100, None, b"late", None)
    third = builder.build(compression=compressor)
    assert len(decode_batch(third).records) == 51
    # And so does another compressor.
    gzip = make_compressor("gzip", None)
    assert decode_batch(builder.build(compression=gzip)).attributes == 1


def test_uncompressed_build_is_in_place_and_rebuildable() -> None:
    builder = RecordBatchBuilder(10)
    builder.append(10, b"k", b"v", [("h", None)])
    first = builder.build(producer_id=1, producer_epoch=2, base_sequence=3, transactional=True)
    assert decode_batch(first).attributes == 0x10
    second = builder.build()
    assert second is first  # the builder's own buffer: no copy
    decoded = decode_batch(second)
    assert (decoded.attributes, decoded.producer_id, decoded.producer_epoch, decoded.base_sequence) == (
        0,
        -1,
        -1,
        -1,
    )
    assert decoded.partition_leader_epoch == -1 and decoded.base_offset == 0
    assert decoded.records == [(10, 0, b"k", b"v", [("h", None)])]


def test_attributes_codec_and_transactional_bits() -> None:
    for compression_type, codec_id in (("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)):
        batch = _build(
            [(1, b"k", b"v", [])], transactional=True, compression=make_compressor(compression_type, None)
        )
        assert struct.unpack_from(">h", batch, 21)[0] == codec_id | 0x10


def test_negative_and_large_deltas() -> None:
    base = 1_700_000_000_000
    records: list[RecordTuple] = [
        (base, None, None, []),
        (base - 10_000_000, b"", b"", []),  # older than the base: negative varlong delta
        (base + (1 << 40), b"k" * 9000, b"v" * 70000, [("n" * 9000, b"x" * 9000)]),  # wide varints
    ]
    builder = RecordBatchBuilder(base)
    for record in records:
        builder.append(*record)
    decoded = decode_batch(builder.build())
    assert decoded.max_timestamp == base + (1 << 40)
    assert decoded.records == [(ts, i, k, v, h) for i, (ts, k, v, h) in enumerate(records)]


def test_more_than_8192_records_use_wide_offset_deltas() -> None:
    builder = RecordBatchBuilder(0)
    for i in range(10_000):
        builder.append(i, None, b"", None)
    decoded = decode_batch(builder.build())
    assert decoded.last_offset_delta == 9_999
    assert [r[1] for r in decoded.records] == list(range(10_000))


@given(key=_blobs, value=_blobs, headers=_headers, timestamp=_timestamps)
def test_single_record_batch_size_is_exact(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]], timestamp: int
) -> None:
    builder = RecordBatchBuilder(timestamp)
    builder.append(timestamp, key, value, headers)
    assert single_record_batch_size(key, value, headers) == builder.size_bytes == len(builder.build())
    assert record_size(0, 0, key, value, headers) == builder.size_bytes - BATCH_HEADER_SIZE


def test_try_append() -> None:
    builder = RecordBatchBuilder(0)
    # The first record always goes in, however large.
    assert builder.try_append(0, None, b"x" * 500, None, 100) > 0
    size = builder.size_bytes
    assert builder.try_append(1, None, b"y" * 10, None, size + 5) == 0
    assert builder.size_bytes == size and builder.record_count == 1
    need = builder.next_record_size(1, None, b"y" * 10, None)
    assert builder.try_append(1, None, b"y" * 10, None, size + need) == need
    assert builder.size_bytes == size + need


def test_empty_builder() -> None:
    builder = RecordBatchBuilder(123)
    assert (builder.record_count, builder.size_bytes, builder.max_timestamp_ms) == (0, 61, -1)
    assert builder.base_timestamp_ms == 123 and builder.records_bytes == b""
    with pytest.raises(ValueError, match="no records"):
        builder.build()
