"""What both facades do to a record before it reaches the engine: serialize, check, normalize.

Owns record creation and serialization for ``Producer`` and ``AsyncProducer``:
header normalization, key/value serialization (with a fast path for bytes and
the default serializer), timestamp checks, and the size limits that make a
record fail alone (``max.request.size``, ``buffer.memory``).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from kprod._core.accumulator import BATCH_HEADER_BYTES, record_size_upper_bound
from kprod.config import ProducerConfig
from kprod.errors import KprodError, RecordTooLargeError, SerializationError
from kprod.serde import DefaultSerializer, Serializer, resolve_serializer

__all__ = ["RecordPreparer", "check_callback", "check_partition", "check_records", "normalize_headers"]


def check_partition(partition: Any) -> int | None:
    """``partition`` as an int or None; raises KprodError naming the argument for anything else.

    Accepts what ``operator.index`` accepts (``numpy.int64`` too) except bool; a float, even
    ``1.0``, or a string is refused rather than guessed.
    """
    if partition is None or type(partition) is int:
        return partition
    if not isinstance(partition, (bool, float, str, bytes)):
        try:
            return operator.index(partition)
        except TypeError:
            pass
    raise KprodError(
        f"partition must be an int (a partition number, 0 or more) or None, got {partition!r} of type "
        f"{type(partition).__name__}; pass partition=int(...) or leave it out to let the partitioner choose",
        stage="record creation",
    )


def check_callback(on_delivery: Any) -> None:
    """Raise KprodError unless ``on_delivery`` is None or callable (checked at the call, not on delivery)."""
    if on_delivery is not None and not callable(on_delivery):
        raise KprodError(
            f"on_delivery must be a callable (metadata, error) -> None, or None; got {on_delivery!r} of type "
            f"{type(on_delivery).__name__}",
            stage="record creation",
        )


def check_records(records: Any) -> None:
    """Refuse a ``send_batch`` ``records`` argument that iterates into something else than records.

    A str or bytes iterates into characters or ints, and a mapping into its keys: each would
    silently become one record per element.
    """
    if isinstance(records, (str, bytes, bytearray, memoryview, Mapping)):
        raise KprodError(
            f"records must be an iterable of records (values, tuples or mappings), got a "
            f"{type(records).__name__}: it would be sent as one record per "
            f"{'key' if isinstance(records, Mapping) else 'element'}; to send it as one record, pass "
            "[records] (or use send())",
            stage="record creation",
        )


def normalize_headers(headers: Any) -> list[tuple[str, bytes | None]]:
    """Headers as a list of (str name, bytes-or-None value); str values are UTF-8 encoded.

    Accepts a sequence of pairs or a mapping. Raises SerializationError naming the bad header.
    """
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, bytes | None]] = []
    try:
        for name, value in items:
            if type(name) is not str:
                raise SerializationError(
                    f"header name {name!r} must be a str (record creation stage)", stage="record creation"
                )
            if value is None or type(value) is bytes:
                out.append((name, value))
            elif isinstance(value, str):
                out.append((name, value.encode()))
            elif isinstance(value, (bytearray, memoryview)):
                out.append((name, bytes(value)))
            else:
                raise SerializationError(
                    f"header {name!r} has a value of type {type(value).__name__}; header values must be "
                    "bytes, str or None",
                    stage="record creation",
                )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, KprodError):
            raise
        raise SerializationError(
            f"headers must be a sequence of (name, value) pairs or a mapping, got {headers!r}",
            stage="record creation",
        ) from exc
    return out


class RecordPreparer:
    """Serializes and checks records for one producer."""

    __slots__ = (
        "_fast_key",
        "_fast_value",
        "buffer_memory",
        "fast",
        "key_serializer",
        "limit_bytes",
        "max_request_size",
        "value_serializer",
    )

    def __init__(self, config: ProducerConfig) -> None:
        self.key_serializer: Serializer = resolve_serializer(config.key_serializer, setting="key.serializer")
        self.value_serializer: Serializer = resolve_serializer(
            config.value_serializer, setting="value.serializer"
        )
        # The default serializer passes bytes through: skip the call for the common case.
        self._fast_key = type(self.key_serializer) is DefaultSerializer
        self._fast_value = type(self.value_serializer) is DefaultSerializer
        self.fast = self._fast_key and self._fast_value
        """Both serializers are the default: bytes pass through untouched."""
        self.max_request_size = config.max_request_size
        self.buffer_memory = config.buffer_memory
        self.limit_bytes = min(config.max_request_size, config.buffer_memory) - BATCH_HEADER_BYTES

    def serialize(
        self, topic: str, key: Any, value: Any, headers: list[tuple[str, bytes | None]] | None
    ) -> tuple[bytes | None, bytes | None]:
        """Serialized (key, value). Raises SerializationError naming the serializer and topic."""
        if type(topic) is not str or not topic:
            raise KprodError(f"topic must be a non-empty str, got {topic!r}", stage="record creation")
        if self._fast_key and (key is None or type(key) is bytes):
            kb = key
        else:
            kb = self._run(self.key_serializer, "key.serializer", topic, key, headers)
        if self._fast_value and (value is None or type(value) is bytes):
            vb = value
        else:
            vb = self._run(self.value_serializer, "value.serializer", topic, value, headers)
        return kb, vb

    @staticmethod
    def _run(
        serializer: Serializer,
        setting: str,
        topic: str,
        data: Any,
        headers: list[tuple[str, bytes | None]] | None,
    ) -> bytes | None:
        try:
            out = serializer.serialize(topic, data, headers)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"{setting} {serializer!r} failed for topic {topic!r} on a {type(data).__name__}: {exc!r}"
            ) from exc
        if out is not None and type(out) is not bytes:
            obj: object = out
            if isinstance(obj, (bytearray, memoryview)):
                return bytes(obj)
            raise SerializationError(
                f"{setting} {serializer!r} returned {type(out).__name__} for topic {topic!r}; "
                "a serializer must return bytes or None"
            )
        return out

    def prepare(
        self, topic: str, key: Any, value: Any, headers: Any, timestamp: Any, now_wall_ms: int
    ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]] | None, int, int]:
        """Record creation and serialization: (key bytes, value bytes, headers, timestamp ms, size bound).

        Raises SerializationError / KprodError for bad input, RecordTooLargeError for a record
        that could never be sent (the caller fails only that record).
        """
        hdrs = normalize_headers(headers) if headers else None
        kb, vb = self.serialize(topic, key, value, hdrs)
        ts = now_wall_ms if timestamp is None else check_timestamp(timestamp)
        bound = record_size_upper_bound(kb, vb, hdrs)
        if bound > self.limit_bytes:
            raise self.too_large(topic, bound) or RecordTooLargeError("record too large")
        return kb, vb, hdrs, ts, bound

    def too_large(self, topic: str, bound: int) -> RecordTooLargeError | None:
        """The error for a record whose batch could never be sent, or None."""
        if bound <= self.limit_bytes:
            return None
        size = bound + BATCH_HEADER_BYTES
        if self.max_request_size <= self.buffer_memory:
            setting = f"max.request.size={self.max_request_size}"
        else:
            setting = f"buffer.memory={self.buffer_memory}"
        return RecordTooLargeError(
            f"a record for topic {topic!r} of up to {size} bytes (serialized, in a batch of its own) is larger "
            f"than {setting}; raise that setting (and the broker's message.max.bytes) or send a smaller record. "
            "Only this record failed"
        )


def check_timestamp(timestamp: Any) -> int:
    """A user timestamp (ms since the epoch, >= 0) as int. Raises KprodError otherwise."""
    if type(timestamp) is int and timestamp >= 0:
        return timestamp
    if isinstance(timestamp, float) and timestamp >= 0 and timestamp.is_integer():
        return int(timestamp)
    raise KprodError(
        f"timestamp must be a non-negative int of milliseconds since the epoch (or None for now), got {timestamp!r}",
        stage="record creation",
    )


__all__ += ["check_timestamp", "record_size_upper_bound"]
