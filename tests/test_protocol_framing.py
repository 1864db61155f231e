"""Request/response headers, the FrameReader and InFlightRequests (all in memory)."""

from __future__ import annotations

import io
import itertools
import struct
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_payload_module
from kio.schema.index import api_key_map, schema_name_map
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.serial import entity_writer
from kio.static.constants import EntityType

from kprod.errors import ProtocolError
from kprod.protocol.framing import (
    FLEXIBLE_FROM_VERSION,
    MAX_CORRELATION_ID,
    UNANSWERABLE_KEPT,
    FrameReader,
    InFlightRequests,
    encode_request_header,
    parse_response_header,
    request_header_version,
    response_header_version,
)
from kprod.protocol.messages import CLIENT_API_VERSIONS


def _write(entity: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(type(entity))(buf, entity)
    return buf.getvalue()


@pytest.mark.parametrize("client_id", [None, "", "kprod", "ünïcode-id"])
@pytest.mark.parametrize("header_version", [1, 2])
def test_request_header_equals_kio(client_id: str | None, header_version: int) -> None:
    cls: Any = RequestHeaderV2 if header_version == 2 else RequestHeaderV1
    expected = _write(cls(request_api_key=3, request_api_version=12, correlation_id=-5, client_id=client_id))
    assert encode_request_header(3, 12, -5, client_id, header_version) == expected


def test_request_header_rejects_unknown_versions() -> None:
    with pytest.raises(ValueError):
        encode_request_header(0, 9, 1, None, 0)


def _kio_versions(api_key: int) -> list[int]:
    return sorted(schema_name_map[api_key_map[api_key]])


@pytest.mark.parametrize("api_key", sorted(FLEXIBLE_FROM_VERSION))
def test_header_versions_agree_with_kio(api_key: int) -> None:
    for version in _kio_versions(api_key):
        request = load_payload_module(api_key, version, EntityType.request)
        response = load_payload_module(api_key, version, EntityType.response)
        request_cls = next(
            v for v in vars(request).values() if getattr(v, "__type__", None) == EntityType.request
        )
        response_cls = next(
            v for v in vars(response).values() if getattr(v, "__type__", None) == EntityType.response
        )
        assert request_header_version(api_key, version) == request_cls.__header_schema__.__version__
        assert response_header_version(api_key, version) == response_cls.__header_schema__.__version__


def test_every_api_kprod_speaks_has_a_known_header_version() -> None:
    """A response to an API missing from FLEXIBLE_FROM_VERSION cannot be framed: the connection
    that carried it would be closed (found when DescribeTransactions was added)."""
    assert set(CLIENT_API_VERSIONS) <= set(FLEXIBLE_FROM_VERSION)
    for api_key, (low, high) in CLIENT_API_VERSIONS.items():
        for version in range(low, high + 1):
            assert response_header_version(api_key, version) in (0, 1)


def test_api_versions_response_header_is_always_v0() -> None:
    assert [response_header_version(18, v) for v in range(5)] == [0] * 5
    assert request_header_version(18, 3) == 2
    assert request_header_version(17, 1) == 1  # SaslHandshake is never flexible
    assert response_header_version(60, 0) == 1  # DescribeCluster is flexible from v0
    with pytest.raises(ValueError):
        request_header_version(99, 0)


def test_parse_response_header() -> None:
    assert parse_response_header(struct.pack(">i", 42) + b"body", 0) == (42, 4)
    # v1 with two tagged fields (tag 1: 2 bytes, tag 300: 1 byte)
    frame = struct.pack(">i", -7) + b"\x02" + b"\x01\x02ab" + b"\xac\x02\x01z" + b"body"
    assert parse_response_header(frame, 1) == (-7, len(frame) - 4)
    with pytest.raises(ProtocolError):
        parse_response_header(b"\x00\x00", 0)
    with pytest.raises(ProtocolError):
        parse_response_header(struct.pack(">i", 1) + b"\x01\x01\x05ab", 1)  # tag runs past the end


# --- FrameReader -----------------------------------------------------------------------------


def _stream(frames: list[bytes]) -> bytes:
    return b"".join(struct.pack(">i", len(f)) + f for f in frames)


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(st.binary(max_size=300), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
    kind=st.sampled_from(["bytes", "bytearray", "memoryview"]),
)
def test_frame_reader_reassembles_any_split(frames: list[bytes], cuts: list[int], kind: str) -> None:
    stream = _stream(frames)
    points = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    reader = FrameReader()
    got: list[bytes] = []
    for start, end in itertools.pairwise(points):
        chunk: Any = stream[start:end]
        if kind == "bytearray":
            chunk = bytearray(chunk)
        elif kind == "memoryview":
            chunk = memoryview(bytearray(chunk))
        reader.feed(chunk)
        if kind != "bytes":
            chunk[:] = b"\xee" * len(chunk)  # the caller reuses its buffer: frames must not change
        while (frame := reader.next_frame()) is not None:
            got.append(frame)  # type: ignore[arg-type]
    assert [bytes(f) for f in got] == frames
    assert reader.next_frame() is None
    assert reader.buffered_bytes == 0


def test_frame_inside_one_chunk_is_a_zero_copy_view() -> None:
    data = _stream([b"a" * 100, b"b" * 50])
    reader = FrameReader()
    reader.feed(data)
    first = reader.next_frame()
    assert isinstance(first, memoryview) and first.obj is data and first.readonly
    assert bytes(first) == b"a" * 100
    assert reader.next_frame() == b"b" * 50
    assert reader.next_frame() is None


def test_large_frame_in_small_chunks_is_linear() -> None:
    payload = bytes(range(256)) * 16384  # 4 MiB
    stream = _stream([payload])
    reader = FrameReader()
    start = time.perf_counter()
    frames = []
    for i in range(0, len(stream), 1024):
        reader.feed(stream[i : i + 1024])
        frame = reader.next_frame()
        if frame is not None:
            frames.append(frame)
    elapsed = time.perf_counter() - start
    assert len(frames) == 1 and frames[0] == payload
    assert elapsed < 2.0  # a quadratic reassembly would copy ~8 GiB here


def test_frame_reader_max_frame_bytes() -> None:
    reader = FrameReader(max_frame_bytes=10)
    reader.feed(_stream([b"x" * 10]))
    assert reader.next_frame() == b"x" * 10
    reader.feed(struct.pack(">i", 11))
    with pytest.raises(ProtocolError):
        reader.next_frame()
    reader.feed(b"more")
    with pytest.raises(ProtocolError):  # out of sync for good
        reader.next_frame()


def test_frame_reader_negative_size() -> None:
    reader = FrameReader()
    reader.feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        reader.next_frame()


def test_frame_reader_empty_frame_and_partial_prefix() -> None:
    reader = FrameReader()
    reader.feed(b"\x00\x00")
    assert reader.next_frame() is None
    reader.feed(b"\x00\x00\x00\x00\x00")
    assert reader.next_frame() == b""
    assert reader.next_frame() is None
    reader.feed(b"\x01z")  # completes the 3 prefix bytes left over
    assert reader.next_frame() == b"z"


# --- InFlightRequests ------------------------------------------------------------------------


def test_in_flight_in_order() -> None:
    inflight = InFlightRequests()
    ids = [inflight.next_correlation_id() for _ in range(3)]
    assert ids == [0, 1, 2]
    for cid in ids:
        inflight.add(cid, 3, 12, True, f"ctx{cid}")
    assert len(inflight) == 3
    assert inflight.peek_oldest_expected() is not None
    popped = [inflight.pop(cid) for cid in ids]
    assert [e.context for e in popped] == ["ctx0", "ctx1", "ctx2"]
    assert len(inflight) == 0 and inflight.peek_oldest_expected() is None


def test_in_flight_out_of_order_is_protocol_error() -> None:
    inflight = InFlightRequests()
    inflight.add(10, 0, 9, True, None)
    inflight.add(11, 0, 9, True, None)
    with pytest.raises(ProtocolError):
        inflight.pop(11)
    with pytest.raises(ProtocolError):
        inflight.pop(99)
    assert inflight.pop(10).correlation_id == 10
    assert inflight.pop(11).correlation_id == 11
    with pytest.raises(ProtocolError):
        inflight.pop(12)  # nothing awaits a response


def test_in_flight_requests_without_response() -> None:
    inflight = InFlightRequests()
    inflight.add(1, 0, 9, False, "acks0-a")
    inflight.add(2, 3, 12, True, "metadata")
    inflight.add(3, 0, 9, False, "acks0-b")
    assert len(inflight) == 1
    assert [e.context for e in inflight.drain_all()] == ["acks0-a", "metadata", "acks0-b"]
    assert len(inflight) == 0

    inflight.add(4, 0, 9, False, "acks0-c")
    inflight.add(5, 3, 12, True, "metadata")
    inflight.add(6, 0, 9, False, "acks0-d")
    assert inflight.pop(5).context == "metadata"  # skips (and drops) the older acks=0 request
    assert [e.context for e in inflight.pop_no_response()] == ["acks0-d"]
    assert inflight.drain_all() == []


def test_an_answer_to_a_request_that_expects_none_is_recognised() -> None:
    """Tansu answers acks=0 Produce requests; Kafka does not. Such an answer is recognised (to be
    dropped), with every id sent before it, and never mistaken for an answer that is awaited."""
    inflight = InFlightRequests()
    for cid in (1, 2, 3):
        inflight.add(cid, 0, 9, False, None)
        inflight.pop_no_response()
    inflight.add(4, 3, 12, True, "metadata")
    assert not inflight.take_unexpected_answer(4)  # awaited: the caller dispatches it
    assert not inflight.take_unexpected_answer(99)
    assert inflight.take_unexpected_answer(2)
    assert not inflight.take_unexpected_answer(1)  # sent before 2: its answer can no longer come
    assert not inflight.take_unexpected_answer(2)  # once
    assert inflight.take_unexpected_answer(3)
    assert inflight.pop(4).context == "metadata"


def test_requests_without_answer_are_remembered_up_to_a_bound() -> None:
    inflight = InFlightRequests()
    total = UNANSWERABLE_KEPT + 10
    for cid in range(total):
        inflight.add(cid, 0, 9, False, None)
        inflight.pop_no_response()
    assert not inflight.take_unexpected_answer(9)  # forgotten: the oldest go first
    assert inflight.take_unexpected_answer(10)
    assert inflight.take_unexpected_answer(total - 1)


def test_correlation_ids_wrap() -> None:
    inflight = InFlightRequests(first_correlation_id=MAX_CORRELATION_ID - 1)
    assert [inflight.next_correlation_id() for _ in range(3)] == [2**31 - 2, 2**31 - 1, 0]
    with pytest.raises(ValueError):
        inflight.add(2**31, 0, 9, True, None)
    with pytest.raises(ValueError):
        inflight.add(-1, 0, 9, True, None)
