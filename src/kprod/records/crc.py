"""CRC-32C (Castagnoli) of record batches, via the native ``crc32c`` package.

The ``crc32c`` package uses the SSE4.2 / ARMv8 CRC instructions when the CPU has
them and releases the GIL for large inputs. Kafka's test vector
(``Crc32CTest``): ``crc32c(b"Some String") == 608512271``.

Pure: no I/O, clocks or threads.
"""

from __future__ import annotations

from typing import TypeAlias

import crc32c as _crc32c

__all__ = ["BytesLike", "crc32c"]

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""What the records layer accepts as input bytes."""


def crc32c(data: BytesLike) -> int:
    """Return the CRC-32C of ``data`` (any bytes-like object) as an unsigned 32-bit int."""
    result: int = _crc32c.crc32c(data)
    return result
