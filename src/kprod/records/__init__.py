"""Record batch v2: the builder of the produce hot path, its varints, CRC-32C and compression codecs.

Owns the bytes of a record batch (magic 2) and nothing else: no partitions,
sockets or clocks (timestamps come in as integer milliseconds). Pure: this
package never imports asyncio, socket, ssl, threading, select or time.

- :class:`RecordBatchBuilder` encodes records into one buffer as they are
  appended, so the batch's wire size is always known; ``build()`` fills in the
  61-byte header and CRC.
- :func:`make_compressor` turns ``compression.type`` and
  ``compression.<codec>.level`` into a :class:`Compressor` writing the framing
  the Java producer writes (xerial snappy, Kafka's LZ4 frame).
"""

from __future__ import annotations

from kprod.records.batch import (
    BATCH_HEADER_SIZE,
    Headers,
    RecordBatchBuilder,
    encode_record,
    record_size,
    single_record_batch_size,
)
from kprod.records.compression import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    Compressor,
    decompress,
    make_compressor,
)
from kprod.records.crc import crc32c
from kprod.records.varint import (
    decode_varint,
    decode_varlong,
    encode_varint,
    encode_varlong,
    varint_size,
)

__all__ = [
    "BATCH_HEADER_SIZE",
    "CODEC_GZIP",
    "CODEC_LZ4",
    "CODEC_NONE",
    "CODEC_SNAPPY",
    "CODEC_ZSTD",
    "Compressor",
    "Headers",
    "RecordBatchBuilder",
    "crc32c",
    "decode_varint",
    "decode_varlong",
    "decompress",
    "encode_record",
    "encode_varint",
    "encode_varlong",
    "make_compressor",
    "record_size",
    "single_record_batch_size",
    "varint_size",
]
