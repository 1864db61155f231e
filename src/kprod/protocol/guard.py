"""A bounds check of a response frame against its schema, before kio's native decoder sees it.

kio decodes in native code, which sizes each array from the length the frame claims: an array
length of 2**31 or 2**32 in a damaged or hostile answer makes it try to allocate gigabytes and the
process aborts (SIGABRT), which Python cannot catch. So every control-plane answer is first walked
here, field by field from kio's own schema classes, and refused with :class:`ProtocolError` when a
length points past the end of the frame (an array of N elements needs at least N bytes). The walk
also drops tagged fields the schema does not know (KIP-482: receivers ignore unknown tags, where
kio raises), returning a cleaned copy of the frame in that case.

Pure: no I/O. The hot path (Produce answers) does not come here: its decoder is our own and checks
every length itself.
"""

from __future__ import annotations

import struct
from dataclasses import fields, is_dataclass
from functools import cache
from typing import Any

from kprod.errors import ProtocolError
from kprod.protocol.framing import read_uvarint, write_uvarint

__all__ = ["check_frame"]

_FIXED = {
    "int8": 1,
    "bool": 1,
    "int16": 2,
    "uint16": 2,
    "error_code": 2,
    "int32": 4,
    "uint32": 4,
    "timedelta_i32": 4,
    "int64": 8,
    "timedelta_i64": 8,
    "datetime_i64": 8,
    "float64": 8,
    "uuid": 16,
}
_SIZED = {"string": 2, "bytes": 4, "records": 4}
"""Length prefix size of each variable type in non-flexible versions (flexible: uvarint + 1)."""
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class _Cut(Exception):
    pass


@cache
def _layout(cls: type) -> tuple[tuple[tuple[str, Any, bool, bool], ...], dict[int, tuple[Any, bool, bool]]]:
    """(untagged fields in order, {tag: field}); each field as (kafka type or entity class, is array, nullable)."""
    from kio.serial._introspect import classify_field, get_field_tag, get_schema_field_type, is_optional

    ordered: list[tuple[str, Any, bool, bool]] = []
    tagged: dict[int, tuple[Any, bool, bool]] = {}
    for f in fields(cls):
        kind = classify_field(f)
        target: Any = kind.type_ if is_dataclass(kind.type_) else get_schema_field_type(f)
        entry = (target, kind.is_array, is_optional(f))
        tag = get_field_tag(f)
        if tag is None:
            ordered.append((f.name, *entry))
        else:
            tagged[int(tag)] = entry
    return tuple(ordered), tagged


class _Walker:
    def __init__(self, buf: bytes | memoryview, flexible: bool) -> None:
        self.buf = buf
        self.end = len(buf)
        self.flexible = flexible
        self.sections: list[tuple[int, int, list[tuple[int, int]]]] = []
        """Tagged sections holding unknown tags, to rewrite: (start, end, the known entries kept)."""

    def need(self, offset: int, n: int) -> None:
        if n < 0 or offset + n > self.end:
            raise _Cut(f"{n} bytes at offset {offset} run past the end of the {self.end}-byte frame")

    def uvarint(self, offset: int) -> tuple[int, int]:
        return read_uvarint(self.buf, offset)  # ProtocolError past the end or beyond 5 bytes

    def count(self, offset: int) -> tuple[int, int]:
        """An array's element count (-1: null) and the offset after it."""
        if self.flexible:
            n, offset = self.uvarint(offset)
            n -= 1
        else:
            self.need(offset, 4)
            (n,) = _I32.unpack_from(self.buf, offset)
            offset += 4
        if n < -1:
            raise _Cut(f"array length {n} at offset {offset}")
        if n > self.end - offset:  # every element takes at least one byte
            raise _Cut(f"an array of {n} elements at offset {offset} cannot fit in {self.end - offset} bytes")
        return n, offset

    def value(self, kind: Any, offset: int) -> int:
        if not isinstance(kind, str):
            return self.entity(kind, offset)
        size = _FIXED.get(kind)
        if size is not None:
            self.need(offset, size)
            return offset + size
        prefix = _SIZED.get(kind)
        if prefix is None:
            raise _Cut(f"unknown schema type {kind!r}")
        if self.flexible:
            n, offset = self.uvarint(offset)
            n -= 1
        elif prefix == 2:
            self.need(offset, 2)
            (n,) = _I16.unpack_from(self.buf, offset)
            offset += 2
        else:
            self.need(offset, 4)
            (n,) = _I32.unpack_from(self.buf, offset)
            offset += 4
        if n < -1:
            raise _Cut(f"length {n} at offset {offset}")
        n = max(n, 0)
        self.need(offset, n)
        return offset + n

    def field(self, kind: Any, is_array: bool, offset: int) -> int:
        if not is_array:
            return self.value(kind, offset)
        n, offset = self.count(offset)
        for _ in range(max(n, 0)):
            offset = self.value(kind, offset)
        return offset

    def entity(self, cls: type, offset: int) -> int:
        ordered, tagged = _layout(cls)
        for _name, kind, is_array, _nullable in ordered:
            offset = self.field(kind, is_array, offset)
        if self.flexible:
            offset = self.tags(tagged, offset)
        return offset

    def tags(self, known: dict[int, tuple[Any, bool, bool]], offset: int) -> int:
        start = offset
        n, offset = self.uvarint(offset)
        kept: list[tuple[int, int]] = []
        unknown = False
        for _ in range(n):
            entry = offset
            tag, offset = self.uvarint(offset)
            size, offset = self.uvarint(offset)
            self.need(offset, size)
            if tag in known:
                kind, is_array, _nullable = known[tag]
                inner = _Walker(self.buf[: offset + size], self.flexible)
                if inner.field(kind, is_array, offset) != offset + size:
                    raise _Cut(f"tagged field {tag} at offset {offset} does not fill its {size} bytes")
                # Unknown tags nested in a known tagged field are not cut out (kio then refuses the
                # answer, which is retried): rewriting them would change this field's size prefix.
                kept.append((entry, offset + size))
            else:
                unknown = True
            offset += size
        if unknown:
            self.sections.append((start, offset, kept))
        return offset


def check_frame(response_type: type, frame: bytes | memoryview, offset: int) -> bytes | memoryview:
    """Walk a response body of ``response_type`` (a kio entity class) from ``offset``.

    Returns ``frame`` itself, or a copy without the tagged fields the schema does not know.

    :raises ProtocolError: if a length points past the end of the frame, or the body ends early.
    """
    walker = _Walker(frame, bool(getattr(response_type, "__flexible__", False)))
    try:
        walker.entity(response_type, offset)
    except _Cut as exc:
        raise ProtocolError(f"malformed {response_type.__name__}: {exc}") from None
    except (struct.error, IndexError, ProtocolError) as exc:
        raise ProtocolError(f"malformed {response_type.__name__}: {exc}") from None
    if not walker.sections:
        return frame
    data = bytes(frame)
    out = bytearray()
    position = 0
    for start, end, kept in sorted(walker.sections):
        out += data[position:start]
        out += write_uvarint(len(kept))
        for entry_start, entry_end in kept:
            out += data[entry_start:entry_end]
        position = end
    out += data[position:]
    return bytes(out)
