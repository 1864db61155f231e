"""Kafka wire framing: request/response headers, size-prefixed frames, in-flight tracking.

This module owns the layer between a byte stream and one Kafka message: the 4-byte
big-endian size prefix, request header v1/v2 and response header v0/v1, which header
version each API version uses, and the per-connection queue of requests that await an
answer (Kafka answers requests in the order it received them on one connection).

Rules this module obeys: it is pure. No sockets, no clocks, no threads, no asyncio;
bytes in, bytes and plain objects out. It knows nothing about message bodies.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from kprod.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "FLEXIBLE_FROM_VERSION",
    "MAX_CORRELATION_ID",
    "FrameReader",
    "InFlightRequest",
    "InFlightRequests",
    "encode_request_header",
    "parse_response_header",
    "read_uvarint",
    "request_header_version",
    "response_header_version",
    "skip_tagged_fields",
    "write_uvarint",
]

API_VERSIONS_KEY: Final = 18

# First flexible (KIP-482) version of each API kprod may send. None: never flexible.
# From Kafka's message JSON ("flexibleVersions"). Flexible requests use header v2,
# flexible responses header v1 (except ApiVersions, see response_header_version).
FLEXIBLE_FROM_VERSION: Final[dict[int, int | None]] = {
    0: 9,  # Produce
    3: 9,  # Metadata
    10: 3,  # FindCoordinator
    17: None,  # SaslHandshake
    18: 3,  # ApiVersions
    19: 5,  # CreateTopics
    22: 2,  # InitProducerId
    24: 3,  # AddPartitionsToTxn
    25: 3,  # AddOffsetsToTxn
    26: 3,  # EndTxn
    28: 3,  # TxnOffsetCommit
    36: 2,  # SaslAuthenticate
    60: 0,  # DescribeCluster
    65: 0,  # DescribeTransactions
}

MAX_CORRELATION_ID: Final = 2**31 - 1
"""Correlation ids are int32 on the wire; kprod uses 0..2**31-1 and wraps to 0."""

DEFAULT_MAX_FRAME_BYTES: Final = 100 * 1024 * 1024
"""Default largest frame a :class:`FrameReader` accepts (the broker default of socket.request.max.bytes)."""

_HEADER_FIXED = struct.Struct(">hhih")  # api key, api version, correlation id, client id length
_INT32 = struct.Struct(">i")


def _is_flexible(api_key: int, api_version: int) -> bool:
    try:
        flexible_from = FLEXIBLE_FROM_VERSION[api_key]
    except KeyError:
        raise ValueError(f"no header version known for api key {api_key}") from None
    return flexible_from is not None and api_version >= flexible_from


def request_header_version(api_key: int, api_version: int) -> int:
    """Return the request header version (1 or 2) that ``api_key`` at ``api_version`` uses.

    Raises ValueError for an API kprod does not know.
    """
    return 2 if _is_flexible(api_key, api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    """Return the response header version (0 or 1) that ``api_key`` at ``api_version`` uses.

    ApiVersions always answers with header v0, even at flexible versions, so that a
    client can read the error code of a version it does not speak (KIP-511).
    Raises ValueError for an API kprod does not know.
    """
    if api_key == API_VERSIONS_KEY:
        return 0
    return 1 if _is_flexible(api_key, api_version) else 0


def encode_request_header(
    api_key: int,
    api_version: int,
    correlation_id: int,
    client_id: str | None,
    header_version: int,
) -> bytes:
    """Encode a request header v1 or v2 (without the frame's size prefix).

    v1: api key int16, api version int16, correlation id int32, client id as a
    nullable non-compact string (int16 length, -1 for None). v2 adds an empty
    tagged-field section (one zero byte); the client id stays non-compact.
    Raises ValueError for any other header version.
    """
    if header_version not in (1, 2):
        raise ValueError(f"unsupported request header version {header_version}")
    if client_id is None:
        head = _HEADER_FIXED.pack(api_key, api_version, correlation_id, -1)
        return head + b"\x00" if header_version == 2 else head
    raw = client_id.encode()
    head = _HEADER_FIXED.pack(api_key, api_version, correlation_id, len(raw))
    return b"".join((head, raw, b"\x00")) if header_version == 2 else head + raw


_SMALL_UVARINTS: Final = tuple(bytes((i,)) for i in range(128))


def write_uvarint(value: int) -> bytes:
    """Encode an unsigned varint (values below 128 come from a table: the common case)."""
    if value < 0x80:
        return _SMALL_UVARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_uvarint(buf: bytes | memoryview, offset: int) -> tuple[int, int]:
    """Read an unsigned varint at ``offset``; return (value, offset after it).

    Raises ProtocolError if the buffer ends inside the varint or it exceeds 35 bits.
    """
    value = 0
    shift = 0
    end = len(buf)
    while True:
        if offset >= end:
            raise ProtocolError("buffer ends inside an unsigned varint")
        b = buf[offset]
        offset += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, offset
        shift += 7
        if shift > 28:
            raise ProtocolError("unsigned varint longer than 5 bytes")


def skip_tagged_fields(buf: bytes | memoryview, offset: int) -> int:
    """Skip a KIP-482 tagged-field section at ``offset``; return the offset after it."""
    count, offset = read_uvarint(buf, offset)
    for _ in range(count):
        _tag, offset = read_uvarint(buf, offset)
        size, offset = read_uvarint(buf, offset)
        offset += size
    if offset > len(buf):
        raise ProtocolError("tagged field runs past the end of the frame")
    return offset


def parse_response_header(frame: bytes | memoryview, header_version: int) -> tuple[int, int]:
    """Parse a response header at the start of ``frame`` (the bytes after the size prefix).

    Returns (correlation_id, body_offset). Header v1 adds a tagged-field section,
    which is skipped. Raises ProtocolError if the frame is too short, ValueError for
    a header version other than 0 or 1.
    """
    if header_version not in (0, 1):
        raise ValueError(f"unsupported response header version {header_version}")
    if len(frame) < 4:
        raise ProtocolError(f"response frame of {len(frame)} bytes has no correlation id")
    (correlation_id,) = _INT32.unpack_from(frame, 0)
    if header_version == 0:
        return correlation_id, 4
    return correlation_id, skip_tagged_fields(frame, 4)


class FrameReader:
    """Split a byte stream into Kafka frames (4-byte big-endian size, then that many bytes).

    Sans-I/O: :meth:`feed` what the socket returned, then call :meth:`next_frame` until
    it returns None. Fed chunks are kept as a queue of views, never concatenated into
    one growing buffer: a frame that lies inside one chunk is returned as a zero-copy
    ``memoryview`` of it, and a frame spread over several chunks is joined once into
    ``bytes``. Work is linear in the bytes fed, however the stream is split.

    Returned frames exclude the size prefix and are read-only. A size above
    ``max_frame_bytes`` (or negative) raises ProtocolError: the stream is then out of
    sync, and every later call raises again, so the connection must be closed.
    """

    __slots__ = ("_buffered", "_chunks", "_failed", "_frame_size", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._chunks: deque[memoryview] = deque()
        self._buffered = 0
        # Size of the frame being assembled once its prefix was read; None while
        # waiting for a size prefix.
        self._frame_size: int | None = None
        self._failed: ProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet returned as frames (excluding a consumed size prefix)."""
        return self._buffered

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the connection. Never blocks; copies only non-``bytes`` input."""
        if not data:
            return
        if not isinstance(data, bytes):
            # Frames are views of fed chunks: a caller's reusable buffer must not alias them.
            data = bytes(data)
        self._chunks.append(memoryview(data))
        self._buffered += len(data)

    def next_frame(self) -> memoryview | bytes | None:
        """Return the next complete frame (without its size prefix), or None if more bytes are needed.

        Raises ProtocolError when a size prefix exceeds ``max_frame_bytes`` or is negative.
        """
        if self._failed is not None:
            raise self._failed
        if self._frame_size is None:
            if self._buffered < 4:
                return None
            (size,) = _INT32.unpack(self._take(4))
            if size < 0 or size > self.max_frame_bytes:
                self._failed = ProtocolError(
                    f"frame size {size} outside 0..{self.max_frame_bytes} (max_frame_bytes); "
                    "the stream is out of sync or the peer does not speak Kafka"
                )
                raise self._failed
            self._frame_size = size
        size = self._frame_size
        if self._buffered < size:
            return None
        self._frame_size = None
        return self._take(size)

    def _take(self, n: int) -> memoryview | bytes:
        """Remove and return the first ``n`` buffered bytes (caller checked they exist)."""
        self._buffered -= n
        chunks = self._chunks
        if n == 0:
            return b""
        first = chunks[0]
        if len(first) > n:
            chunks[0] = first[n:]
            return first[:n]
        if len(first) == n:
            chunks.popleft()
            return first
        pieces: list[memoryview] = []
        remaining = n
        while remaining:
            chunk = chunks[0]
            if len(chunk) <= remaining:
                pieces.append(chunks.popleft())
                remaining -= len(chunk)
            else:
                pieces.append(chunk[:remaining])
                chunks[0] = chunk[remaining:]
                remaining = 0
        return b"".join(pieces)


@dataclass(slots=True)
class InFlightRequest:
    """One request written to a connection: what it was, and the caller's context for its answer."""

    correlation_id: int
    api_key: int
    api_version: int
    expect_response: bool
    context: object


UNANSWERABLE_KEPT = 4096
"""How many correlation ids of requests sent without expecting an answer are remembered, to
recognise an answer to one (:meth:`InFlightRequests.take_unexpected_answer`)."""


class InFlightRequests:
    """Requests sent on one connection, oldest first, and the connection's correlation id counter.

    Kafka answers requests in the order it received them on a connection, so a
    response must match the oldest request that expects one; anything else means
    the stream is corrupt (ProtocolError). Requests that expect no response
    (Produce with acks=0) are kept in order too, so that :meth:`drain_all` can
    return them if the connection dies before they were written; the caller
    removes them with :meth:`pop_no_response` once the bytes left the socket.
    """

    __slots__ = ("_awaiting", "_next_correlation_id", "_queue", "_unanswerable")

    def __init__(self, first_correlation_id: int = 0) -> None:
        self._queue: deque[InFlightRequest] = deque()
        self._awaiting = 0
        self._unanswerable: dict[int, None] = {}
        """Correlation ids of the latest requests sent without expecting an answer, oldest first
        (at most UNANSWERABLE_KEPT): see :meth:`take_unexpected_answer`."""
        self._next_correlation_id = first_correlation_id & MAX_CORRELATION_ID

    def next_correlation_id(self) -> int:
        """Return a fresh correlation id (0..2**31-1, wrapping to 0 after the maximum)."""
        cid = self._next_correlation_id
        self._next_correlation_id = 0 if cid == MAX_CORRELATION_ID else cid + 1
        return cid

    def add(
        self,
        correlation_id: int,
        api_key: int,
        api_version: int,
        expect_response: bool,
        context: object,
    ) -> InFlightRequest:
        """Record a request as sent (in send order) and return its entry.

        Raises ValueError for a correlation id outside 0..2**31-1.
        """
        if not 0 <= correlation_id <= MAX_CORRELATION_ID:
            raise ValueError(f"correlation id {correlation_id} outside 0..{MAX_CORRELATION_ID}")
        entry = InFlightRequest(correlation_id, api_key, api_version, expect_response, context)
        self._queue.append(entry)
        if expect_response:
            self._awaiting += 1
        return entry

    def peek_oldest_expected(self) -> InFlightRequest | None:
        """The request the next response must answer, or None (e.g. to learn its header version)."""
        for entry in self._queue:
            if entry.expect_response:
                return entry
        return None

    def pop(self, correlation_id: int) -> InFlightRequest:
        """Remove and return the request that a response with ``correlation_id`` answers.

        Requests without a response that were sent before it are dropped (they are
        necessarily written). Raises ProtocolError if ``correlation_id`` is not the
        oldest request awaiting a response, or nothing awaits one.
        """
        queue = self._queue
        for index, entry in enumerate(queue):
            if not entry.expect_response:
                continue
            if entry.correlation_id != correlation_id:
                raise ProtocolError(
                    f"response correlation id {correlation_id} does not match the oldest "
                    f"in-flight request ({entry.correlation_id}); responses arrived out of order"
                )
            for _ in range(index):
                queue.popleft()
            queue.popleft()
            self._awaiting -= 1
            return entry
        raise ProtocolError(f"response with correlation id {correlation_id} but no request awaits one")

    def pop_no_response(self) -> list[InFlightRequest]:
        """Remove and return the requests that expect no response (call once they are written)."""
        if self._awaiting == len(self._queue):
            return []
        done = [e for e in self._queue if not e.expect_response]
        self._queue = deque(e for e in self._queue if e.expect_response)
        unanswerable = self._unanswerable
        for entry in done:
            unanswerable[entry.correlation_id] = None
        while len(unanswerable) > UNANSWERABLE_KEPT:
            del unanswerable[next(iter(unanswerable))]
        return done

    @property
    def sent_unanswerable(self) -> bool:
        """True if any recent request was sent without expecting an answer (none: skip the check)."""
        return bool(self._unanswerable)

    def take_unexpected_answer(self, correlation_id: int) -> bool:
        """True if ``correlation_id`` is that of a recent request sent without expecting an answer
        (a broker that answers acks=0 Produce requests, as Tansu does): the caller drops the
        answer. Forgets that id and those sent before it, since answers come in order."""
        unanswerable = self._unanswerable
        if correlation_id not in unanswerable:
            return False
        while unanswerable:
            oldest = next(iter(unanswerable))
            del unanswerable[oldest]
            if oldest == correlation_id:
                break
        return True

    def drain_all(self) -> list[InFlightRequest]:
        """Remove and return every request, oldest first (the connection died)."""
        entries = list(self._queue)
        self._queue.clear()
        self._awaiting = 0
        return entries

    def __len__(self) -> int:
        """Number of requests awaiting a response."""
        return self._awaiting
