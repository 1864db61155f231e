"""Zigzag varints and varlongs of the record batch v2 format.

A varint is a signed integer zigzag-mapped (``(n << 1) ^ (n >> 31)``, or ``>> 63``
for a varlong) and then written as unsigned LEB128: 7 bits per byte, low group
first, high bit set on every byte but the last (Kafka ``ByteUtils.writeVarint``).
Zigzag of an int32 equals zigzag of the same value as an int64, so one encoding
serves both; the two encoders differ only in the range they accept.

The batch builder does not call a function per varint: it indexes
:data:`ZIGZAG_TABLE`, a tuple of the encodings of every value from
:data:`TABLE_MIN` to :data:`TABLE_MAX` (all 1- and 2-byte varints), laid out so
that Python's negative indexing works: ``ZIGZAG_TABLE[n]`` is the encoding of
``n`` for any ``TABLE_MIN <= n <= TABLE_MAX``. Outside that range it silently
returns a wrong entry, so callers check the range first and fall back to
:func:`encode_varlong`.

Pure: no I/O, clocks or threads.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "TABLE_MAX",
    "TABLE_MIN",
    "ZIGZAG_TABLE",
    "decode_varint",
    "decode_varlong",
    "encode_varint",
    "encode_varlong",
    "varint_size",
]

_INT32_MIN: Final = -(1 << 31)
_INT32_MAX: Final = (1 << 31) - 1
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1

TABLE_MAX: Final = 8191
"""Largest value found in :data:`ZIGZAG_TABLE` (zigzag 16382, the last 2-byte varint but one)."""
TABLE_MIN: Final = -8192
"""Smallest value found in :data:`ZIGZAG_TABLE` (zigzag 16383, the last 2-byte varint)."""


def _leb128(zigzag: int) -> bytes:
    """Unsigned LEB128 of a non-negative integer."""
    if zigzag < 0x80:
        return bytes((zigzag,))
    out = bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _build_table() -> tuple[bytes, ...]:
    # by_zigzag[z] is the LEB128 of z for every 1- and 2-byte varint (z < 2**14).
    by_zigzag = [bytes((z,)) for z in range(0x80)]
    by_zigzag += [bytes(((z & 0x7F) | 0x80, z >> 7)) for z in range(0x80, 1 << 14)]
    # n >= 0 has zigzag 2n (even entries, in order); -k has zigzag 2k - 1, and the odd
    # entries read backwards (zigzag 16383, 16381, ..., 1) are -8192, -8191, ..., -1,
    # which puts -k at index len - k: exactly where table[-k] looks.
    return tuple(by_zigzag[0::2] + by_zigzag[::-2])


ZIGZAG_TABLE: Final[tuple[bytes, ...]] = _build_table()
"""``ZIGZAG_TABLE[n]`` is the varint of ``n`` for ``TABLE_MIN <= n <= TABLE_MAX`` (negative indexes included)."""


def encode_varlong(value: int) -> bytes:
    """Return the zigzag varlong encoding of ``value`` (1 to 10 bytes).

    Raises ValueError when ``value`` does not fit a signed 64-bit integer.
    """
    if TABLE_MIN <= value <= TABLE_MAX:
        return ZIGZAG_TABLE[value]
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"varlong out of range (signed 64-bit): {value}")
    return _leb128(value << 1 if value >= 0 else ((-value) << 1) - 1)


def encode_varint(value: int) -> bytes:
    """Return the zigzag varint encoding of ``value`` (1 to 5 bytes).

    Raises ValueError when ``value`` does not fit a signed 32-bit integer.
    """
    if TABLE_MIN <= value <= TABLE_MAX:
        return ZIGZAG_TABLE[value]
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise ValueError(f"varint out of range (signed 32-bit): {value}")
    return _leb128(value << 1 if value >= 0 else ((-value) << 1) - 1)


def varint_size(value: int) -> int:
    """Return the number of bytes of the zigzag varint (or varlong) encoding of ``value``."""
    zigzag = value << 1 if value >= 0 else ((-value) << 1) - 1
    if zigzag < 0x80:
        return 1
    return (zigzag.bit_length() + 6) // 7


def _decode(data: bytes | bytearray | memoryview, offset: int, max_bytes: int) -> tuple[int, int]:
    zigzag = 0
    shift = 0
    for i in range(max_bytes):
        try:
            byte = data[offset + i]
        except IndexError:
            raise ValueError("truncated varint") from None
        zigzag |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (zigzag >> 1) ^ -(zigzag & 1), offset + i + 1
        shift += 7
    raise ValueError(f"varint longer than {max_bytes} bytes")


def decode_varint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode a zigzag varint at ``data[offset:]``; return ``(value, offset just past it)``.

    Raises ValueError on truncated input or an encoding longer than 5 bytes.
    Meant for tests and diagnostics, not the hot path.
    """
    return _decode(data, offset, 5)


def decode_varlong(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode a zigzag varlong at ``data[offset:]``; return ``(value, offset just past it)``.

    Raises ValueError on truncated input or an encoding longer than 10 bytes.
    """
    return _decode(data, offset, 10)
