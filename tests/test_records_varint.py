"""Zigzag varint/varlong encoding: Kafka ByteUtilsTest vectors, the lookup table, round trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kprod.records.varint import (
    TABLE_MAX,
    TABLE_MIN,
    ZIGZAG_TABLE,
    decode_varint,
    decode_varlong,
    encode_varint,
    encode_varlong,
    varint_size,
)

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors" / "vectors.json").read_text())
BYTE_UTILS_CASES = [(value, bytes.fromhex(hex_)) for value, hex_ in VECTORS["varint"]["cases"]]


@pytest.mark.parametrize(("value", "encoded"), BYTE_UTILS_CASES)
def test_kafka_byte_utils_vectors(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert encode_varlong(value) == encoded
    assert varint_size(value) == len(encoded)
    assert decode_varint(encoded) == (value, len(encoded))
    assert decode_varlong(encoded) == (value, len(encoded))
    if TABLE_MIN <= value <= TABLE_MAX:
        assert ZIGZAG_TABLE[value] == encoded


def _reference_encode(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_table_covers_all_two_byte_varints_with_negative_indexing() -> None:
    assert len(ZIGZAG_TABLE) == 1 << 14
    assert (TABLE_MIN, TABLE_MAX) == (-8192, 8191)
    for value in range(TABLE_MIN, TABLE_MAX + 1):
        assert ZIGZAG_TABLE[value] == _reference_encode(value), value
    assert len(ZIGZAG_TABLE[TABLE_MIN]) == len(ZIGZAG_TABLE[TABLE_MAX]) == 2
    assert len(encode_varint(TABLE_MAX + 1)) == len(encode_varint(TABLE_MIN - 1)) == 3


@given(st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert encoded == _reference_encode(value)
    assert len(encoded) == varint_size(value) <= 5
    assert decode_varint(b"\xaa" + encoded + b"\xbb", 1) == (value, 1 + len(encoded))


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_varlong_round_trip(value: int) -> None:
    encoded = encode_varlong(value)
    assert encoded == _reference_encode(value)
    assert len(encoded) == varint_size(value) <= 10
    assert decode_varlong(encoded) == (value, len(encoded))


def test_extremes() -> None:
    assert encode_varint(-(1 << 31)) == bytes.fromhex("ffffffff0f")
    assert encode_varint((1 << 31) - 1) == bytes.fromhex("feffffff0f")
    assert encode_varlong(-(1 << 63)) == bytes.fromhex("ffffffffffffffffff01")
    assert encode_varlong((1 << 63) - 1) == bytes.fromhex("feffffffffffffffff01")


@pytest.mark.parametrize("value", [1 << 31, -(1 << 31) - 1])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="varint out of range"):
        encode_varint(value)
    encode_varlong(value)


@pytest.mark.parametrize("value", [1 << 63, -(1 << 63) - 1])
def test_varlong_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="varlong out of range"):
        encode_varlong(value)


def test_decode_errors() -> None:
    with pytest.raises(ValueError, match="truncated"):
        decode_varint(b"\x80\x80")
    with pytest.raises(ValueError, match="longer than 5"):
        decode_varint(b"\x80\x80\x80\x80\x80\x01")
    with pytest.raises(ValueError, match="longer than 10"):
        decode_varlong(b"\x80" * 10 + b"\x01")
