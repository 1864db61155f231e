"""Serializers with the byte layouts of Java's ``org.apache.kafka.common.serialization`` classes.

A Java consumer configured with the matching deserializer reads these back:

============================  ==========================  ==========================================
kprod                         Java                        bytes
============================  ==========================  ==========================================
:class:`IntegerSerializer`    ``IntegerSerializer``       4, big-endian two's complement
:class:`LongSerializer`       ``LongSerializer``          8, big-endian two's complement
:class:`FloatSerializer`      ``FloatSerializer``         4, IEEE 754 binary32, big-endian
:class:`DoubleSerializer`     ``DoubleSerializer``        8, IEEE 754 binary64, big-endian
:class:`UUIDSerializer`       ``UUIDSerializer``          36, the UUID's text form in UTF-8
============================  ==========================  ==========================================

Java's ``UUIDSerializer`` writes ``uuid.toString().getBytes("UTF8")``: the canonical
lower-case, hyphenated text (``"123e4567-e89b-12d3-a456-426614174000"``), not the 16 raw
bytes. ``str(uuid.UUID(...))`` is the same text.

``None`` gives a null key / value, as in Java. A value out of range (an int that does not
fit in 32 / 64 bits, a float too large for binary32) or of the wrong type raises
:class:`~kprod.errors.SerializationError` naming the serializer, the setting, the topic and
the value; nothing is silently truncated or wrapped.
"""

from __future__ import annotations

import math
import struct
import uuid
from typing import Any, ClassVar, Final

from kprod.errors import SerializationError

Headers = list[tuple[str, bytes | None]] | None

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_FLOAT32_MAX: Final = 3.4028234663852886e38  # the largest finite binary32, as a double

_pack_f: Final = struct.Struct(">f").pack
_pack_d: Final = struct.Struct(">d").pack


def _type_name(data: object) -> str:
    t = type(data)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


def _error(name: str, setting: str, topic: str, what: str, why: str) -> SerializationError:
    return SerializationError(f"{name} ({setting}) cannot serialize {what} for topic {topic!r}: {why}")


def _as_int(name: str, setting: str, topic: str, data: Any) -> int:
    if isinstance(data, bool) or not hasattr(type(data), "__index__"):
        raise _error(
            name,
            setting,
            topic,
            f"a {_type_name(data)}",
            "it accepts an int (or an object with __index__) or None",
        )
    return int(data.__index__())


class _IntSerializer:
    """Shared body of :class:`IntegerSerializer` and :class:`LongSerializer`."""

    __slots__ = ("setting",)
    _BITS: ClassVar[int]
    _MIN: ClassVar[int]
    _MAX: ClassVar[int]
    _STRUCT: ClassVar[struct.Struct]

    def __init__(self, *, setting: str = "value.serializer") -> None:
        self.setting = setting

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Return ``data`` as big-endian two's complement bytes (``None`` stays ``None``)."""
        if type(data) is int:
            value = data
        elif data is None:
            return None
        else:
            value = _as_int(type(self).__name__, self.setting, topic, data)
        if not self._MIN <= value <= self._MAX:
            hint = "; use LongSerializer ('long') for larger values" if self._BITS == 32 else ""
            raise _error(
                type(self).__name__,
                self.setting,
                topic,
                _short(value),
                f"it is outside the signed {self._BITS}-bit range [{self._MIN}, {self._MAX}]{hint}",
            )
        return self._STRUCT.pack(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IntegerSerializer(_IntSerializer):
    """An int in ``[-2**31, 2**31 - 1]`` as 4 big-endian bytes (Java ``IntegerSerializer``).

    ``bool`` is rejected (Java has no implicit boolean-to-int); other objects with
    ``__index__`` (``numpy.int32``...) are accepted. ``None`` gives a null.
    """

    __slots__ = ()
    _BITS = 32
    _MIN = _INT32_MIN
    _MAX = _INT32_MAX
    _STRUCT = struct.Struct(">i")


class LongSerializer(_IntSerializer):
    """An int in ``[-2**63, 2**63 - 1]`` as 8 big-endian bytes (Java ``LongSerializer``).

    Accepts the same types as :class:`IntegerSerializer`.
    """

    __slots__ = ()
    _BITS = 64
    _MIN = _INT64_MIN
    _MAX = _INT64_MAX
    _STRUCT = struct.Struct(">q")


def _as_float(name: str, setting: str, topic: str, data: Any) -> float:
    if type(data) is float:
        return data
    if isinstance(data, bool) or not hasattr(type(data), "__float__"):
        raise _error(name, setting, topic, f"a {_type_name(data)}", "it accepts a float or an int, or None")
    try:
        return float(data)
    except (OverflowError, ValueError, TypeError) as exc:
        raise _error(name, setting, topic, _short(data), str(exc)) from exc


class FloatSerializer:
    """A float as 4 big-endian IEEE 754 binary32 bytes (Java ``FloatSerializer``).

    The value is rounded to the nearest binary32 (as Java's ``(float)`` cast does). A
    finite value beyond binary32's range (about ±3.4e38) raises
    :class:`~kprod.errors.SerializationError` instead of becoming infinity; ``inf``,
    ``-inf`` and ``nan`` are written as such (NaN as ``7fc00000``, Java's ``Float.NaN``).
    """

    __slots__ = ("setting",)

    def __init__(self, *, setting: str = "value.serializer") -> None:
        self.setting = setting

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Return ``data`` as 4 bytes (``None`` stays ``None``)."""
        if data is None:
            return None
        value = _as_float("FloatSerializer", self.setting, topic, data)
        try:
            return _pack_f(value)
        except OverflowError:
            raise _error(
                "FloatSerializer",
                self.setting,
                topic,
                repr(value),
                f"it is outside the 32-bit float range (±{_FLOAT32_MAX:.7g}); use DoubleSerializer ('double')",
            ) from None

    def __repr__(self) -> str:
        return "FloatSerializer()"


class DoubleSerializer:
    """A float as 8 big-endian IEEE 754 binary64 bytes (Java ``DoubleSerializer``).

    An int is converted as ``float(n)`` (rounded to the nearest double); one beyond
    the double range raises :class:`~kprod.errors.SerializationError`. NaN is written
    as ``7ff8000000000000`` (Java's ``doubleToLongBits`` canonical NaN).
    """

    __slots__ = ("setting",)

    def __init__(self, *, setting: str = "value.serializer") -> None:
        self.setting = setting

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Return ``data`` as 8 bytes (``None`` stays ``None``)."""
        if data is None:
            return None
        value = _as_float("DoubleSerializer", self.setting, topic, data)
        if math.isnan(value):
            value = math.nan  # canonical quiet NaN, as Java's Double.NaN (7ff8000000000000)
        return _pack_d(value)

    def __repr__(self) -> str:
        return "DoubleSerializer()"


class UUIDSerializer:
    """A UUID as its 36-character text form in UTF-8 (Java ``UUIDSerializer``).

    Accepts a :class:`uuid.UUID`, or a ``str`` that parses as one (any form
    :class:`uuid.UUID` accepts; it is written in the canonical lower-case,
    hyphenated form). ``None`` gives a null.
    """

    __slots__ = ("setting",)

    def __init__(self, *, setting: str = "value.serializer") -> None:
        self.setting = setting

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Return ``str(data).encode()`` for a UUID (``None`` stays ``None``)."""
        if data is None:
            return None
        if isinstance(data, uuid.UUID):
            return str(data).encode("ascii")
        if isinstance(data, str):
            try:
                return str(uuid.UUID(data)).encode("ascii")
            except ValueError:
                raise _error(
                    "UUIDSerializer", self.setting, topic, f"the str {_short(data)}", "it is not a UUID"
                ) from None
        raise _error(
            "UUIDSerializer",
            self.setting,
            topic,
            f"a {_type_name(data)}",
            "it accepts a uuid.UUID, a UUID str or None",
        )

    def __repr__(self) -> str:
        return "UUIDSerializer()"


__all__ = [
    "DoubleSerializer",
    "FloatSerializer",
    "IntegerSerializer",
    "LongSerializer",
    "UUIDSerializer",
]
