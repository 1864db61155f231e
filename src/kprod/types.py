"""Plain value types shared by every layer: record metadata and header shapes.

A leaf module: it imports nothing of kprod's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeAlias

HeaderValue: TypeAlias = bytes | None
"""A header value: bytes, or None for a null value."""

Header: TypeAlias = tuple[str, HeaderValue]
"""One record header: a name (str, encoded as UTF-8 on the wire) and a value."""

HeadersArg: TypeAlias = Sequence[tuple[str, "bytes | str | None"]] | Mapping[str, "bytes | str | None"]
"""What ``send(headers=...)`` accepts: a sequence of (name, value) pairs or a mapping."""


class RecordMetadata(NamedTuple):
    """Where the broker put one acknowledged record (immutable; cheap to create, one per record).

    ``offset`` is -1 when it is unknown (``acks=0``, or a duplicate that the
    broker acknowledged without an offset). ``timestamp`` is in milliseconds
    since the epoch: the broker's log-append time if the topic uses it,
    otherwise the record's create time.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int


__all__ = ["Header", "HeaderValue", "HeadersArg", "RecordMetadata"]


DeliveryCallback: TypeAlias = Callable[[RecordMetadata | None, BaseException | None], None]
"""``on_delivery(metadata, error)``: exactly one of the two is None."""
