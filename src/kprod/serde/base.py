"""Key and value serializers: the protocol, the built-ins and ``resolve_serializer``.

A serializer turns the Python object given to ``send()`` into the bytes written
in the record (or ``None`` for a null key / a tombstone value). It runs once per
record, synchronously in ``send()``; a failure raises :class:`SerializationError`
there and the record is never buffered.

What ``key.serializer`` / ``value.serializer`` accept (see :func:`resolve_serializer`):

* ``None`` (the default): :class:`DefaultSerializer`, which takes bytes-like
  objects and ``str`` (UTF-8);
* a built-in name: ``"bytes"``, ``"str"`` / ``"string"``, ``"json"``, ``"default"``,
  and the Java-compatible ``"int"`` / ``"integer"``, ``"long"``, ``"float"``,
  ``"double"``, ``"uuid"`` (see :mod:`kprod.serde.numeric`) (case-insensitive; the
  Java class names ``ByteArraySerializer``, ``BytesSerializer``, ``StringSerializer``,
  ``IntegerSerializer``, ``LongSerializer``, ``FloatSerializer``, ``DoubleSerializer``
  and ``UUIDSerializer`` are accepted too);
* an object with a ``serialize(topic, data, headers)`` method (used as is), or a
  class with such a method and a no-argument constructor (instantiated once);
* a plain callable ``f(data) -> bytes | None`` (wrapped; its result is checked).
"""

from __future__ import annotations

import codecs
import difflib
import inspect
import json
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

from kprod.errors import ConfigError, KprodError, SerializationError

_orjson_dumps: Callable[..., bytes] | None
try:  # pragma: no cover - depends on the environment
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_dumps = None

Headers: TypeAlias = list[tuple[str, bytes | None]] | None
"""The ``headers`` argument of ``serialize``: the record's mutable header list, or None."""

HAS_ORJSON: Final[bool] = _orjson_dumps is not None
"""True when :class:`JsonSerializer` uses orjson (faster) instead of the stdlib ``json``."""


@runtime_checkable
class Serializer(Protocol):
    """Turns one key or value into bytes.

    ``headers`` is the record's header list (mutable: a serializer may add a
    header such as a schema id) or ``None``. Returning ``None`` writes a null
    key / value. Raise :class:`~kprod.errors.SerializationError` (or any
    exception: the producer wraps it) to reject the record.
    """

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Serialize ``data`` for ``topic``; ``None`` means a null key / value."""
        ...


def _hint(setting: str) -> str:
    return (
        f"set {setting} (keyword {setting.replace('.', '_')}=) to 'json', 'str', "
        "a callable(data) -> bytes, or an object with serialize(topic, data, headers)"
    )


def _type_error(name: str, setting: str, topic: str, data: object, accepts: str) -> SerializationError:
    return SerializationError(
        f"{name} ({setting}) cannot serialize a {type(data).__module__}.{type(data).__qualname__} "
        f"for topic {topic!r}: it accepts {accepts}; {_hint(setting)}"
    )


class BytesSerializer:
    """Passes bytes through: ``bytes`` as is, ``bytearray``/``memoryview`` copied to ``bytes``.

    ``None`` gives a null key / value. Anything else raises :class:`SerializationError`
    naming the serializer, the topic and the type received. ``setting`` (default
    ``"value.serializer"``) is the setting named in error messages.
    """

    __slots__ = ("setting",)

    def __init__(self, *, setting: str = "value.serializer") -> None:
        self.setting = setting

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Return ``data`` as ``bytes`` (``None`` stays ``None``)."""
        if type(data) is bytes:
            return data
        if data is None:
            return None
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        raise _type_error(
            "BytesSerializer", self.setting, topic, data, "bytes, bytearray, memoryview or None"
        )

    def __repr__(self) -> str:
        return "BytesSerializer()"


class StringSerializer:
    """Encodes ``str`` with ``encoding`` (default ``"utf-8"``); ``None`` gives a null.

    Only ``str`` is accepted (as Java's ``StringSerializer``); an unencodable
    string or another type raises :class:`SerializationError`. An unknown
    encoding name raises :class:`ConfigError` at construction.
    """

    __slots__ = ("encoding", "setting")

    def __init__(self, encoding: str = "utf-8", *, setting: str = "value.serializer") -> None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ConfigError(f"{setting}: unknown text encoding {encoding!r} for StringSerializer") from None
        self.encoding = encoding
        self.setting = setting

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Return ``data.encode(encoding)`` (``None`` stays ``None``)."""
        if isinstance(data, str):
            try:
                return data.encode(self.encoding)
            except UnicodeError as exc:
                raise SerializationError(
                    f"StringSerializer ({self.setting}) cannot encode a str as {self.encoding} "
                    f"for topic {topic!r}: {exc}"
                ) from exc
        if data is None:
            return None
        raise _type_error("StringSerializer", self.setting, topic, data, "str or None")

    def __repr__(self) -> str:
        return f"StringSerializer(encoding={self.encoding!r})"


class JsonSerializer:
    """Encodes any JSON-serializable object as compact UTF-8 JSON bytes.

    Uses orjson when it is importable (which also handles dataclasses,
    datetimes, UUIDs, numpy arrays), else the stdlib ``json`` with separators
    ``(",", ":")`` and ``ensure_ascii=False``. ``None`` gives a null key / value
    (a tombstone), not the JSON text ``null``. ``default`` (default ``None``) is
    called for objects the encoder does not know and must return an encodable
    object, as ``json.dumps(default=...)``.
    """

    __slots__ = ("default", "setting")

    def __init__(
        self, *, default: Callable[[Any], Any] | None = None, setting: str = "value.serializer"
    ) -> None:
        self.default = default
        self.setting = setting

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Return the JSON encoding of ``data`` (``None`` stays ``None``)."""
        if data is None:
            return None
        try:
            if _orjson_dumps is not None:
                return _orjson_dumps(data, default=self.default)
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=self.default).encode()
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(
                f"JsonSerializer ({self.setting}) cannot encode a {type(data).__qualname__} as JSON "
                f"for topic {topic!r}: {exc}; pass a JsonSerializer(default=...) or {_hint(self.setting)}"
            ) from exc

    def __repr__(self) -> str:
        return "JsonSerializer()" if self.default is None else f"JsonSerializer(default={self.default!r})"


class DefaultSerializer:
    """The producer's default: bytes-like objects as bytes, ``str`` as UTF-8, ``None`` as null.

    The check order (``bytes``, ``str``, ``None``, then other bytes-like) keeps
    the common case to a single type comparison.
    """

    __slots__ = ("setting",)

    def __init__(self, *, setting: str = "value.serializer") -> None:
        self.setting = setting

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Return ``data`` as ``bytes``; ``str`` is encoded as UTF-8."""
        t = type(data)
        if t is bytes:
            return data  # type: ignore[no-any-return]
        if t is str:
            return data.encode()  # type: ignore[no-any-return]
        if data is None:
            return None
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        if isinstance(data, str):
            return str(data).encode()
        raise _type_error(
            "the default serializer", self.setting, topic, data, "bytes, bytearray, memoryview, str or None"
        )

    def __repr__(self) -> str:
        return "DefaultSerializer()"


class CallableSerializer:
    """Adapts a plain ``func(data) -> bytes | None`` to :class:`Serializer`.

    A ``bytearray``/``memoryview`` result is copied to ``bytes``; any other
    result, or an exception from ``func``, raises :class:`SerializationError`
    (chained to the original exception).
    """

    __slots__ = ("func", "setting")

    def __init__(self, func: Callable[[Any], object], *, setting: str = "value.serializer") -> None:
        self.func = func
        self.setting = setting

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Call ``func(data)`` and check that it returned bytes or ``None``."""
        try:
            out = self.func(data)
        except KprodError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"{self.setting} {_name(self.func)} raised {type(exc).__name__} for a "
                f"{type(data).__qualname__} on topic {topic!r}: {exc}"
            ) from exc
        if type(out) is bytes or out is None:
            return out
        if isinstance(out, (bytes, bytearray, memoryview)):
            return bytes(out)
        raise SerializationError(
            f"{self.setting} {_name(self.func)} returned a {type(out).__qualname__} for topic {topic!r}; "
            "a serializer must return bytes (or None for a null)"
        )

    def __repr__(self) -> str:
        return f"CallableSerializer({_name(self.func)})"


def _name(obj: object) -> str:
    return str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj))


def _numeric(class_name: str) -> Callable[[str], Serializer]:
    def make(setting: str) -> Serializer:
        from kprod.serde import numeric  # imported here: numeric imports nothing from base

        cls: Callable[..., Serializer] = getattr(numeric, class_name)
        return cls(setting=setting)

    return make


_BUILTINS: Final[dict[str, Callable[[str], Serializer]]] = {
    "bytes": lambda s: BytesSerializer(setting=s),
    "bytearray": lambda s: BytesSerializer(setting=s),
    "str": lambda s: StringSerializer(setting=s),
    "string": lambda s: StringSerializer(setting=s),
    "json": lambda s: JsonSerializer(setting=s),
    "default": lambda s: DefaultSerializer(setting=s),
    # Java class names (simple or fully qualified) for configs copied from Java.
    "bytearrayserializer": lambda s: BytesSerializer(setting=s),
    "bytesserializer": lambda s: BytesSerializer(setting=s),
    "stringserializer": lambda s: StringSerializer(setting=s),
    # Java's fixed-width and UUID serializers (kprod.serde.numeric).
    "int": _numeric("IntegerSerializer"),
    "integer": _numeric("IntegerSerializer"),
    "long": _numeric("LongSerializer"),
    "float": _numeric("FloatSerializer"),
    "double": _numeric("DoubleSerializer"),
    "uuid": _numeric("UUIDSerializer"),
    "integerserializer": _numeric("IntegerSerializer"),
    "longserializer": _numeric("LongSerializer"),
    "floatserializer": _numeric("FloatSerializer"),
    "doubleserializer": _numeric("DoubleSerializer"),
    "uuidserializer": _numeric("UUIDSerializer"),
}

BUILTIN_SERIALIZER_NAMES: Final[tuple[str, ...]] = (
    "bytes",
    "str",
    "string",
    "json",
    "default",
    "int",
    "integer",
    "long",
    "float",
    "double",
    "uuid",
)
"""The documented built-in names accepted by ``key.serializer`` / ``value.serializer``."""


def _accepts_one_positional(func: Callable[..., object]) -> bool:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return True
    try:
        sig.bind(None)
    except TypeError:
        return False
    return True


def resolve_serializer(spec: object, *, setting: str) -> Serializer:
    """Turn a ``key.serializer`` / ``value.serializer`` value into a :class:`Serializer`.

    ``setting`` is the setting's Kafka name, used in error messages. ``None``
    gives :class:`DefaultSerializer`; a string is a built-in name; an object with
    a callable ``serialize`` attribute is returned as is (a class is
    instantiated with no arguments); another callable is wrapped in
    :class:`CallableSerializer`. Anything else raises :class:`ConfigError`
    naming ``setting``.
    """
    if spec is None:
        return DefaultSerializer(setting=setting)
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key.endswith("serializer"):  # Java class name, maybe fully qualified
            key = key.rsplit(".", 1)[-1]
        factory = _BUILTINS.get(key)
        if factory is None:
            close = difflib.get_close_matches(spec.strip().lower(), BUILTIN_SERIALIZER_NAMES, n=3, cutoff=0.5)
            did = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"Invalid value {spec!r} for setting {setting!r}: built-in serializer names are "
                f"{', '.join(repr(n) for n in BUILTIN_SERIALIZER_NAMES)}; or pass a callable(data) -> bytes "
                f"or an object with serialize(topic, data, headers){did}"
            )
        return factory(setting)
    if isinstance(spec, type):
        if callable(getattr(spec, "serialize", None)):
            try:
                inst = spec()
            except Exception as exc:
                raise ConfigError(
                    f"Invalid value for setting {setting!r}: could not instantiate serializer class "
                    f"{_name(spec)} with no arguments ({type(exc).__name__}: {exc}); pass an instance instead"
                ) from exc
            return inst  # type: ignore[no-any-return]
    elif callable(getattr(spec, "serialize", None)):
        return spec  # type: ignore[return-value]
    if callable(spec):
        if not _accepts_one_positional(spec):
            raise ConfigError(
                f"Invalid value {spec!r} for setting {setting!r}: a plain callable serializer must accept "
                "one argument (the data) and return bytes or None; for (topic, data, headers) "
                "give an object with a serialize() method"
            )
        return CallableSerializer(spec, setting=setting)
    raise ConfigError(
        f"Invalid value {spec!r} (a {type(spec).__qualname__}) for setting {setting!r}: "
        "expected None, one of "
        f"{', '.join(repr(n) for n in BUILTIN_SERIALIZER_NAMES)}, a callable(data) -> bytes, "
        "or an object with serialize(topic, data, headers)"
    )


__all__ = [
    "BUILTIN_SERIALIZER_NAMES",
    "HAS_ORJSON",
    "BytesSerializer",
    "CallableSerializer",
    "DefaultSerializer",
    "Headers",
    "JsonSerializer",
    "Serializer",
    "StringSerializer",
    "resolve_serializer",
]
