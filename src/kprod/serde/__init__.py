"""Serializers for record keys and values (see :mod:`kprod.serde.base`)."""

from kprod.serde.base import (
    BUILTIN_SERIALIZER_NAMES,
    HAS_ORJSON,
    BytesSerializer,
    CallableSerializer,
    DefaultSerializer,
    JsonSerializer,
    Serializer,
    StringSerializer,
    resolve_serializer,
)
from kprod.serde.numeric import (
    DoubleSerializer,
    FloatSerializer,
    IntegerSerializer,
    LongSerializer,
    UUIDSerializer,
)

__all__ = [
    "BUILTIN_SERIALIZER_NAMES",
    "HAS_ORJSON",
    "BytesSerializer",
    "CallableSerializer",
    "DefaultSerializer",
    "DoubleSerializer",
    "FloatSerializer",
    "IntegerSerializer",
    "JsonSerializer",
    "LongSerializer",
    "Serializer",
    "StringSerializer",
    "UUIDSerializer",
    "resolve_serializer",
]
