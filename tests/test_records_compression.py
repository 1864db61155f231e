"""Compression codecs: round trips, levels, Kafka's framings (xerial snappy, Kafka LZ4 frame), config errors."""

from __future__ import annotations

import json
import random
import struct
import zlib

import cramjam
import pytest

from kprod.errors import ConfigError
from kprod.records.compression import (
    GzipCompressor,
    Lz4Compressor,
    SnappyCompressor,
    ZstdCompressor,
    decompress,
    make_compressor,
)


def _json_payload(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    words = [rng.randbytes(3).hex() for _ in range(200)]
    out = bytearray()
    i = 0
    while len(out) < size:
        out += json.dumps({"id": i, "name": rng.choice(words), "score": rng.random()}).encode()
        i += 1
    return bytes(out[:size])


PAYLOADS = [b"", b"x", _json_payload(1000), _json_payload(200_000), random.Random(3).randbytes(100_000)]

LEVELS: dict[str, list[int | None]] = {
    "gzip": [None, -1, 1, 9],
    "snappy": [None],
    "lz4": [None, 1, 9, 10, 17],
    "zstd": [None, -131072, -5, 0, 1, 3, 19, 22],
}


@pytest.mark.parametrize(
    ("compression_type", "level"),
    [(codec, level) for codec, levels in LEVELS.items() for level in levels],
)
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
def test_round_trip(compression_type: str, level: int | None, payload: bytes) -> None:
    compressor = make_compressor(compression_type, level)
    assert compressor is not None and compressor.name == compression_type
    compressed = compressor.compress(payload)
    assert isinstance(compressed, bytes)
    assert decompress(compressor.codec_id, compressed) == payload
    # Memoryviews and bytearrays are accepted too (the builder passes a memoryview).
    assert compressor.compress(memoryview(bytearray(payload))) == compressed


def test_codec_ids_and_none() -> None:
    assert make_compressor("none", None) is None
    ids = {name: make_compressor(name, None).codec_id for name in ("gzip", "snappy", "lz4", "zstd")}  # type: ignore[union-attr]
    assert ids == {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def test_defaults_match_kafka() -> None:
    assert isinstance(gzip := make_compressor("gzip", None), GzipCompressor) and gzip.level == -1
    assert isinstance(lz4 := make_compressor("lz4", None), Lz4Compressor) and lz4.level == 9
    assert isinstance(zstd := make_compressor("zstd", None), ZstdCompressor) and zstd.level == 3
    assert isinstance(make_compressor("snappy", None), SnappyCompressor)


@pytest.mark.parametrize(
    ("compression_type", "low", "high"), [("gzip", 1, 9), ("lz4", 9, 17), ("zstd", 1, 19)]
)
def test_higher_level_compresses_smaller(compression_type: str, low: int, high: int) -> None:
    payload = _json_payload(200_000)
    small = make_compressor(compression_type, high).compress(payload)  # type: ignore[union-attr]
    large = make_compressor(compression_type, low).compress(payload)  # type: ignore[union-attr]
    assert len(small) < len(large) < len(payload)


def test_gzip_is_one_rfc1952_member() -> None:
    compressed = make_compressor("gzip", None).compress(b"hello kafka")  # type: ignore[union-attr]
    assert compressed[:3] == b"\x1f\x8b\x08"  # ID1 ID2 CM=deflate
    assert struct.unpack("<I", compressed[-4:])[0] == len(b"hello kafka")  # ISIZE
    assert struct.unpack("<I", compressed[-8:-4])[0] == zlib.crc32(b"hello kafka")


def test_xerial_snappy_framing() -> None:
    payload = _json_payload(70_000)
    compressed = SnappyCompressor().compress(payload)
    assert compressed[:16] == bytes.fromhex("82534e415050590000000001 00000001".replace(" ", ""))
    # Blocks of [int32 BE length][raw snappy] over 32 KiB of input each: 32768 + 32768 + 4464.
    pos, sizes = 16, []
    while pos < len(compressed):
        (length,) = struct.unpack_from(">i", compressed, pos)
        block = compressed[pos + 4 : pos + 4 + length]
        sizes.append(len(bytes(cramjam.snappy.decompress_raw(block))))
        pos += 4 + length
    assert pos == len(compressed)
    assert sizes == [32768, 32768, 70_000 - 65536]


def test_decompress_accepts_raw_snappy_like_librdkafka_writes() -> None:
    assert decompress(2, bytes(cramjam.snappy.compress_raw(b"raw snappy"))) == b"raw snappy"


def _lz4_blocks(frame: bytes) -> list[tuple[int, bool]]:
    """(payload length, stored uncompressed) per block of a Kafka LZ4 frame, checking its layout."""
    assert frame[:7] == bytes.fromhex("04224d18604082")
    pos, blocks = 7, []
    while True:
        (word,) = struct.unpack_from("<I", frame, pos)
        pos += 4
        if word == 0:
            break
        blocks.append((word & 0x7FFFFFFF, bool(word & 0x80000000)))
        pos += word & 0x7FFFFFFF
    assert pos == len(frame)  # no content checksum after the end mark
    return blocks


@pytest.mark.parametrize("level", [9, 4, 17])
def test_lz4_kafka_frame(level: int) -> None:
    # FLG 0x60: version 01, independent blocks, no block/content checksum, no content size;
    # BD 0x40: 64 KiB blocks; header checksum 0x82 = (XXH32(60 40) >> 8) & 0xff.
    compressor = Lz4Compressor(level)
    compressible = compressor.compress(_json_payload(150_000))
    blocks = _lz4_blocks(compressible)
    assert len(blocks) == 3 and not any(stored for _, stored in blocks)
    assert decompress(3, compressible) == _json_payload(150_000)
    noise = random.Random(5).randbytes(70_000)
    incompressible = compressor.compress(noise)
    assert decompress(3, incompressible) == noise
    if level == 9:  # Java's fast path stores incompressible blocks, with the high bit set.
        assert _lz4_blocks(incompressible) == [(65536, True), (70_000 - 65536, True)]
    assert compressor.compress(b"") == bytes.fromhex("04224d1860408200000000")


def test_lz4_header_checksum_is_xxh32_of_descriptor() -> None:
    # An independent check of the 0x82: liblz4 rejects a frame whose header checksum is wrong.
    frame = bytearray(Lz4Compressor().compress(b"abc" * 100))
    frame[6] ^= 0xFF
    with pytest.raises(ValueError):
        decompress(3, bytes(frame))


def test_zstd_is_a_standard_frame() -> None:
    compressed = make_compressor("zstd", None).compress(b"zstd frame")  # type: ignore[union-attr]
    assert compressed[:4] == bytes.fromhex("28b52ffd")


@pytest.mark.parametrize(
    ("compression_type", "level", "setting"),
    [
        ("gzip", 0, "compression.gzip.level"),
        ("gzip", 10, "compression.gzip.level"),
        ("gzip", -2, "compression.gzip.level"),
        ("lz4", 0, "compression.lz4.level"),
        ("lz4", 18, "compression.lz4.level"),
        ("zstd", 23, "compression.zstd.level"),
        ("zstd", -131073, "compression.zstd.level"),
        ("zstd", True, "compression.zstd.level"),
        ("snappy", 1, "compression.snappy.level"),
        ("none", 1, "compression.type"),
    ],
)
def test_level_out_of_range(compression_type: str, level: int, setting: str) -> None:
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")) as info:
        make_compressor(compression_type, level)
    assert info.value.stage == "config"


def test_level_error_names_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"\[1, 9\] or -1"):
        make_compressor("gzip", 11)
    with pytest.raises(ConfigError, match=r"\[1, 17\]"):
        make_compressor("lz4", 99)
    with pytest.raises(ConfigError, match=r"\[-131072, 22\]"):
        make_compressor("zstd", 99)


@pytest.mark.parametrize("name", ["GZIP", "brotli", "", "uncompressed"])
def test_unknown_compression_type(name: str) -> None:
    with pytest.raises(ConfigError, match=r"compression\.type: must be one of none, gzip, snappy, lz4, zstd"):
        make_compressor(name, None)


def test_decompress_errors() -> None:
    with pytest.raises(ValueError, match="unknown compression codec"):
        decompress(5, b"")
    with pytest.raises(ValueError, match="corrupt"):
        decompress(1, b"not gzip")
