"""Compression codecs for the records section of a batch, in the framings the Java producer writes.

Owns the codec ids (attributes bits 0-2), the compression levels Kafka allows
(KIP-390, ``compression.<codec>.level``) and the byte framing of each codec
(java-producer.md §4). Knows nothing about batches beyond "compress these
bytes"; the 61-byte batch header is never compressed.

- gzip (1): one RFC 1952 gzip member from the standard library's ``zlib``
  (``wbits=31``). Level -1 (zlib's default, 6) or 1..9. zlib is used rather
  than ``cramjam.gzip``: on 16 KiB of JSON it compresses about 1.8x faster at
  the same ratio, and it accepts -1 (cramjam's level is unsigned).
- snappy (2): raw snappy blocks (``cramjam.snappy.compress_raw``) in xerial
  snappy-java framing, as ``SnappyOutputStream`` writes: the 16-byte header
  ``82 53 4E 41 50 50 59 00`` + int32 BE 1 + int32 BE 1, then per 32 KiB of
  input ``[int32 BE compressed length][raw snappy block]``. No level.
- lz4 (3): Kafka's LZ4 frame (``Lz4BlockOutputStream``): magic ``04 22 4D 18``,
  FLG ``0x60`` (version 1, independent blocks, no block or content checksum,
  no content size), BD ``0x40`` (64 KiB blocks), header checksum ``0x82``;
  blocks ``[int32 LE size | 0x80000000 if stored][data]``; end mark ``0``.
  Level 1..17, default 9. Like Java, the default level uses LZ4's fast
  compressor (``cramjam.lz4.compress_block``, which is always LZ4's default
  mode: cramjam 2.14 ignores its ``mode``/``compression`` arguments); any other
  level uses LZ4 HC through ``cramjam.lz4.Compressor(level, block_linked=False,
  content_checksum=False)``, whose frame (which carries block checksums) is
  re-framed into Kafka's. liblz4 clamps HC levels above 12 to 12 and treats
  levels 1 and 2 as its fast mode.
- zstd (4): one standard zstd frame (``cramjam.zstd.compress``). Level
  -131072..22, default 3. cramjam passes negative levels through to zstd
  (faster, larger; below about -1000 the output is essentially stored); 0 means
  zstd's default (3).

Pure: no I/O, clocks or threads.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Final, Protocol

import cramjam

from kprod.errors import ConfigError
from kprod.records.crc import BytesLike

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "CODEC_GZIP",
    "CODEC_LZ4",
    "CODEC_NONE",
    "CODEC_SNAPPY",
    "CODEC_ZSTD",
    "Compressor",
    "GzipCompressor",
    "Lz4Compressor",
    "SnappyCompressor",
    "ZstdCompressor",
    "decompress",
    "make_compressor",
]

CODEC_NONE: Final = 0
CODEC_GZIP: Final = 1
CODEC_SNAPPY: Final = 2
CODEC_LZ4: Final = 3
CODEC_ZSTD: Final = 4

GZIP_DEFAULT_LEVEL: Final = -1
LZ4_DEFAULT_LEVEL: Final = 9
ZSTD_DEFAULT_LEVEL: Final = 3
_ZSTD_MIN_LEVEL: Final = -131072  # ZSTD_minCLevel(), as zstd-jni reports it to Kafka.


class Compressor(Protocol):
    """A codec configured with a level: compresses the records section of a batch."""

    @property
    def codec_id(self) -> int:
        """The codec id written in attributes bits 0-2 (1 gzip, 2 snappy, 3 lz4, 4 zstd)."""
        ...

    @property
    def name(self) -> str:
        """The ``compression.type`` value: ``"gzip"``, ``"snappy"``, ``"lz4"`` or ``"zstd"``."""
        ...

    def compress(self, data: BytesLike) -> bytes:
        """Return ``data`` compressed in the codec's Kafka framing. Releases the GIL while compressing."""
        ...


class GzipCompressor:
    """gzip (codec 1): one RFC 1952 member; level -1 (zlib default) or 1..9."""

    __slots__ = ("level",)
    codec_id: Final = CODEC_GZIP
    name: Final = "gzip"

    def __init__(self, level: int = GZIP_DEFAULT_LEVEL) -> None:
        """Use ``level`` (-1 or 1..9; not validated here, see :func:`make_compressor`)."""
        self.level = level

    def compress(self, data: BytesLike) -> bytes:
        """Return one gzip member holding ``data``."""
        return zlib.compress(data, self.level, 31)

    def __repr__(self) -> str:
        return f"GzipCompressor(level={self.level})"


_XERIAL_HEADER: Final = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK_SIZE: Final = 32 * 1024
_BE_INT32: Final = struct.Struct(">i")


class SnappyCompressor:
    """snappy (codec 2) in xerial snappy-java framing, 32 KiB blocks; no level."""

    __slots__ = ()
    codec_id: Final = CODEC_SNAPPY
    name: Final = "snappy"

    def compress(self, data: BytesLike) -> bytes:
        """Return ``data`` as a xerial snappy stream."""
        parts: list[ReadableBuffer] = [_XERIAL_HEADER]
        view = memoryview(data)
        pack = _BE_INT32.pack
        for start in range(0, len(view), _XERIAL_BLOCK_SIZE):
            block = cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK_SIZE])
            parts += (pack(len(block)), block)
        return b"".join(parts)

    def __repr__(self) -> str:
        return "SnappyCompressor()"


# Kafka's frame header: magic, FLG 0x60, BD 0x40, then (XXH32(FLG, BD) >> 8) & 0xFF.
_LZ4_FRAME_HEADER: Final = b"\x04\x22\x4d\x18\x60\x40\x82"
_LZ4_END_MARK: Final = b"\x00\x00\x00\x00"
_LZ4_BLOCK_SIZE: Final = 64 * 1024
_LZ4_STORED: Final = 0x80000000
_LE_UINT32: Final = struct.Struct("<I")


class Lz4Compressor:
    """lz4 (codec 3) in Kafka's LZ4 frame; level 1..17, default 9 (LZ4 fast), others LZ4 HC."""

    __slots__ = ("level",)
    codec_id: Final = CODEC_LZ4
    name: Final = "lz4"

    def __init__(self, level: int = LZ4_DEFAULT_LEVEL) -> None:
        """Use ``level`` (1..17; not validated here, see :func:`make_compressor`)."""
        self.level = level

    def compress(self, data: BytesLike) -> bytes:
        """Return ``data`` as one Kafka LZ4 frame (64 KiB independent blocks, no checksums)."""
        if self.level != LZ4_DEFAULT_LEVEL:
            return _reframe_lz4(self._compress_hc(data))
        parts: list[ReadableBuffer] = [_LZ4_FRAME_HEADER]
        view = memoryview(data)
        pack = _LE_UINT32.pack
        for start in range(0, len(view), _LZ4_BLOCK_SIZE):
            chunk = view[start : start + _LZ4_BLOCK_SIZE]
            block = cramjam.lz4.compress_block(chunk, store_size=False)
            if len(block) >= len(chunk):  # Incompressible: store it, as Java does.
                parts += (pack(len(chunk) | _LZ4_STORED), chunk)
            else:
                parts += (pack(len(block)), block)
        parts.append(_LZ4_END_MARK)
        return b"".join(parts)

    def _compress_hc(self, data: BytesLike) -> bytes:
        compressor = cramjam.lz4.Compressor(level=self.level, content_checksum=False, block_linked=False)
        compressor.compress(data if isinstance(data, bytes) else bytes(data))  # It takes only bytes.
        return bytes(compressor.finish())

    def __repr__(self) -> str:
        return f"Lz4Compressor(level={self.level})"


def _reframe_lz4(frame: bytes) -> bytes:
    """Rewrite a standard LZ4 frame of independent blocks as Kafka's frame (drop checksums).

    Raises ValueError if the frame is not one lz4 frame of independent blocks of at
    most 64 KiB.
    """
    if frame[:4] != _LZ4_FRAME_HEADER[:4] or len(frame) < 7:
        raise ValueError("not an LZ4 frame")
    flg, bd = frame[4], frame[5]
    if flg >> 6 != 1 or not flg & 0x20 or (bd >> 4) & 7 != 4:
        raise ValueError(f"unexpected LZ4 frame descriptor FLG={flg:#04x} BD={bd:#04x}")
    has_block_checksum = bool(flg & 0x10)
    pos = 6 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1  # content size, dict id, HC
    parts: list[BytesLike] = [_LZ4_FRAME_HEADER]
    view = memoryview(frame)
    unpack_from = _LE_UINT32.unpack_from
    while True:
        (word,) = unpack_from(frame, pos)
        if word == 0:
            break
        end = pos + 4 + (word & ~_LZ4_STORED)
        parts.append(view[pos:end])
        pos = end + (4 if has_block_checksum else 0)
    parts.append(_LZ4_END_MARK)
    return b"".join(parts)


class ZstdCompressor:
    """zstd (codec 4): one standard zstd frame; level -131072..22, default 3."""

    __slots__ = ("level",)
    codec_id: Final = CODEC_ZSTD
    name: Final = "zstd"

    def __init__(self, level: int = ZSTD_DEFAULT_LEVEL) -> None:
        """Use ``level`` (-131072..22; not validated here, see :func:`make_compressor`)."""
        self.level = level

    def compress(self, data: BytesLike) -> bytes:
        """Return ``data`` as one zstd frame."""
        return bytes(cramjam.zstd.compress(data, level=self.level))

    def __repr__(self) -> str:
        return f"ZstdCompressor(level={self.level})"


_COMPRESSION_TYPES: Final = ("none", "gzip", "snappy", "lz4", "zstd")


def _check_level(
    codec: str, level: int, low: int, high: int, *, minus_one_means_default: bool = False
) -> None:
    valid = isinstance(level, int) and not isinstance(level, bool)
    valid = valid and (low <= level <= high or (minus_one_means_default and level == -1))
    if not valid:
        default = " or -1 (zlib's default)" if minus_one_means_default else ""
        raise ConfigError(
            f"Invalid value {level!r} for configuration compression.{codec}.level: "
            f"must be an integer in [{low}, {high}]{default}"
        )


def make_compressor(compression_type: str, level: int | None = None) -> Compressor | None:
    """Return the compressor for ``compression.type``, or None for ``"none"``.

    ``level`` is the value of ``compression.<codec>.level`` or None for Kafka's
    default: gzip -1 (zlib default) or 1..9; lz4 1..17 (default 9); zstd
    -131072..22 (default 3). snappy and none take no level. Raises ConfigError
    naming the setting and its allowed values.
    """
    if compression_type == "none":
        if level is not None:
            raise ConfigError("compression.type none takes no compression level")
        return None
    if compression_type == "gzip":
        if level is None:
            return GzipCompressor()
        _check_level("gzip", level, 1, 9, minus_one_means_default=True)
        return GzipCompressor(level)
    if compression_type == "snappy":
        if level is not None:
            raise ConfigError("compression.type snappy takes no level (there is no compression.snappy.level)")
        return SnappyCompressor()
    if compression_type == "lz4":
        if level is None:
            return Lz4Compressor()
        _check_level("lz4", level, 1, 17)
        return Lz4Compressor(level)
    if compression_type == "zstd":
        if level is None:
            return ZstdCompressor()
        _check_level("zstd", level, _ZSTD_MIN_LEVEL, 22)
        return ZstdCompressor(level)
    raise ConfigError(
        f"Invalid value {compression_type!r} for configuration compression.type: "
        f"must be one of {', '.join(_COMPRESSION_TYPES)}"
    )


def _decompress_xerial(data: bytes) -> bytes:
    if data[:8] != _XERIAL_HEADER[:8]:
        # librdkafka produces raw snappy; Kafka's reader only takes xerial, but tests may see both.
        return bytes(cramjam.snappy.decompress_raw(data))
    parts: list[bytes] = []
    pos = len(_XERIAL_HEADER)
    while pos < len(data):
        (size,) = _BE_INT32.unpack_from(data, pos)
        pos += 4
        if size < 0 or pos + size > len(data):
            raise ValueError("truncated xerial snappy block")
        parts.append(bytes(cramjam.snappy.decompress_raw(data[pos : pos + size])))
        pos += size
    return b"".join(parts)


def decompress(codec_id: int, data: BytesLike) -> bytes:
    """Return the decompressed records section of a batch compressed with ``codec_id``.

    For tests and diagnostics (a producer never decompresses). Accepts xerial or
    raw snappy and any standard LZ4 frame. Raises ValueError for an unknown codec
    or corrupt data.
    """
    raw = bytes(data)
    try:
        if codec_id == CODEC_NONE:
            return raw
        if codec_id == CODEC_GZIP:
            return zlib.decompress(raw, 31)
        if codec_id == CODEC_SNAPPY:
            return _decompress_xerial(raw)
        if codec_id == CODEC_LZ4:
            return bytes(cramjam.lz4.decompress(raw))
        if codec_id == CODEC_ZSTD:
            return bytes(cramjam.zstd.decompress(raw))
    except (zlib.error, cramjam.DecompressionError) as exc:
        raise ValueError(f"corrupt data for codec {codec_id}: {exc}") from exc
    raise ValueError(f"unknown compression codec id {codec_id}")
