"""The hand-written Produce codec against kio's generic encoding, v3..v12.

Requests: our frame must equal, byte for byte, kio's RequestHeader + ProduceRequest
for the same values. Responses: kio writes them, our decoder reads them back.
The record batch is the ``record_batch_v2`` vector from tests/vectors/vectors.json.
"""

from __future__ import annotations

import datetime
import io
import json
import struct
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_writer
from kio.static.constants import EntityType
from kio.static.primitive import i32, i32Timedelta

from kprod.errors import ProtocolError
from kprod.protocol.framing import parse_response_header, response_header_version
from kprod.protocol.produce import (
    decode_produce_response,
    encode_produce_request,
    produce_partition_overhead_bytes,
    produce_request_base_overhead_bytes,
    produce_request_overhead_bytes,
    produce_topic_overhead_bytes,
)

VERSIONS = range(3, 13)
VECTORS = json.loads((Path(__file__).parent / "vectors" / "vectors.json").read_text())
BATCH = bytes.fromhex(VECTORS["record_batch_v2"]["hex"])


def _build(module: Any, class_name: str, **values: Any) -> Any:
    """Build a kio entity of this version, dropping fields (or the whole entity) it does not have."""
    cls = getattr(module, class_name, None)
    if cls is None:
        return None
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _write(entity: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(type(entity))(buf, entity)
    return buf.getvalue()


def kio_produce_frame(
    version: int,
    correlation_id: int,
    client_id: str | None,
    transactional_id: str | None,
    acks: int,
    timeout_ms: int,
    topic_data: Sequence[tuple[str, Sequence[tuple[int, bytes]]]],
) -> bytes:
    mod = load_payload_module(0, version, EntityType.request)
    request = mod.ProduceRequest(
        transactional_id=transactional_id,
        acks=acks,
        timeout=i32Timedelta.parse(datetime.timedelta(milliseconds=timeout_ms)),
        topic_data=tuple(
            mod.TopicProduceData(
                name=name,
                partition_data=tuple(mod.PartitionProduceData(index=p, records=bytes(r)) for p, r in parts),
            )
            for name, parts in topic_data
        ),
    )
    header_cls: Any = RequestHeaderV2 if version >= 9 else RequestHeaderV1
    header = header_cls(
        request_api_key=0, request_api_version=version, correlation_id=correlation_id, client_id=client_id
    )
    payload = _write(header) + _write(request)
    return struct.pack(">i", len(payload)) + payload


SHAPES: dict[str, list[tuple[str, list[tuple[int, Any]]]]] = {
    "1x1": [("events", [(0, BATCH)])],
    "2x3": [
        ("events", [(0, BATCH), (1, bytearray(BATCH)), (2, memoryview(BATCH))]),
        ("audit-log.v2", [(5, BATCH), (6, BATCH), (7, BATCH)]),
    ],
    "unicode": [("tópico", [(0, BATCH)])],
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("transactional_id", [None, "txn-1"])
@pytest.mark.parametrize("acks", [0, 1, -1])
def test_produce_request_equals_kio(
    version: int, shape: str, transactional_id: str | None, acks: int
) -> None:
    topic_data = SHAPES[shape]
    parts = encode_produce_request(
        version=version,
        correlation_id=123456,
        client_id="kprod-test",
        transactional_id=transactional_id,
        acks=acks,
        timeout_ms=30000,
        topic_data=topic_data,
    )
    ours = b"".join(parts)
    assert ours == kio_produce_frame(version, 123456, "kprod-test", transactional_id, acks, 30000, topic_data)
    assert struct.unpack_from(">i", ours)[0] == len(ours) - 4
    overhead = produce_request_overhead_bytes(
        version=version,
        client_id="kprod-test",
        transactional_id=transactional_id,
        topic_data=[(t, [len(r) for _, r in ps]) for t, ps in topic_data],
    )
    n_batches = sum(len(ps) for _, ps in topic_data)
    assert overhead == len(ours) - n_batches * len(BATCH)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("client_id", [None, "", "ü-client"])
def test_produce_request_client_ids(version: int, client_id: str | None) -> None:
    topic_data = SHAPES["1x1"]
    ours = b"".join(
        encode_produce_request(
            version=version,
            correlation_id=2**31 - 1,
            client_id=client_id,
            transactional_id=None,
            acks=1,
            timeout_ms=1,
            topic_data=topic_data,
        )
    )
    assert ours == kio_produce_frame(version, 2**31 - 1, client_id, None, 1, 1, topic_data)


@pytest.mark.parametrize("version", VERSIONS)
def test_record_batches_are_not_copied(version: int) -> None:
    as_bytes, as_bytearray, as_view = BATCH, bytearray(BATCH), memoryview(BATCH)
    parts = encode_produce_request(
        version=version,
        correlation_id=1,
        client_id=None,
        transactional_id=None,
        acks=-1,
        timeout_ms=1000,
        topic_data=[("t", [(0, as_bytes), (1, as_bytearray), (2, as_view)])],
    )
    assert any(p is as_bytes for p in parts)
    assert any(p is as_view for p in parts)
    assert any(isinstance(p, memoryview) and p.obj is as_bytearray for p in parts)
    # Every piece is something writelines accepts without conversion.
    assert all(isinstance(p, bytes | memoryview) for p in parts)


def test_produce_request_rejects_unsupported_versions() -> None:
    for version in (2, 13):
        with pytest.raises(ValueError):
            encode_produce_request(
                version=version,
                correlation_id=1,
                client_id=None,
                transactional_id=None,
                acks=1,
                timeout_ms=1,
                topic_data=[],
            )


@settings(max_examples=60, deadline=None)
@given(
    version=st.sampled_from(list(VERSIONS)),
    topics=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20),
            st.lists(st.sampled_from([0, 1, 126, 127, 200, 16383, 16384, 2**21]), min_size=1, max_size=140),
        ),
        min_size=1,
        max_size=3,
    ),
    transactional_id=st.none() | st.text(max_size=10),
)
def test_overhead_matches_encoding(
    version: int, topics: list[tuple[str, list[int]]], transactional_id: str | None
) -> None:
    blobs = {n: b"\x00" * n for topic in topics for n in topic[1]}
    topic_data = [(t, [(i, blobs[n]) for i, n in enumerate(sizes)]) for t, sizes in topics]
    frame_size = sum(
        len(p)
        for p in encode_produce_request(
            version=version,
            correlation_id=7,
            client_id="c",
            transactional_id=transactional_id,
            acks=1,
            timeout_ms=1,
            topic_data=topic_data,
        )
    )
    batch_bytes = sum(sum(sizes) for _, sizes in topics)
    exact = produce_request_overhead_bytes(
        version=version, client_id="c", transactional_id=transactional_id, topic_data=topics
    )
    assert exact + batch_bytes == frame_size
    # The incremental helpers are an upper bound, off by at most one byte per array.
    incremental = produce_request_base_overhead_bytes(version, "c", transactional_id) + sum(
        produce_topic_overhead_bytes(version, t)
        + sum(produce_partition_overhead_bytes(version, n) for n in s)
        for t, s in topics
    )
    assert exact <= incremental <= exact + (1 + len(topics) if version >= 9 else 0)


def test_large_frame_matches_kio() -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: three-byte uvarint length in flexible versions
    for version in (8, 9, 11):
        topic_data = [("big", [(0, big), (1, BATCH)])]
        ours = b"".join(
            encode_produce_request(
                version=version,
                correlation_id=9,
                client_id="x",
                transactional_id="t",
                acks=-1,
                timeout_ms=5,
                topic_data=topic_data,
            )
        )
        assert ours == kio_produce_frame(version, 9, "x", "t", -1, 5, topic_data)


# --- responses -------------------------------------------------------------------------------

APPEND_TIME = datetime.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=datetime.UTC)
APPEND_TIME_MS = 1700000000123


def kio_produce_response_frame(version: int, correlation_id: int, *, kip951: bool) -> bytes:
    mod = load_payload_module(0, version, EntityType.response)
    leader = _build(mod, "LeaderIdAndEpoch", leader_id=3, leader_epoch=17)
    p0 = _build(
        mod,
        "PartitionProduceResponse",
        index=0,
        error_code=ErrorCode(0),
        base_offset=1234567890123,
        log_append_time=APPEND_TIME,
        log_start_offset=42,
        record_errors=(),
        error_message=None,
    )
    p1 = _build(
        mod,
        "PartitionProduceResponse",
        index=1,
        error_code=ErrorCode(6 if kip951 else 87),
        base_offset=-1,
        log_append_time=None,
        log_start_offset=-1,
        record_errors=(
            _build(mod, "BatchIndexAndErrorMessage", batch_index=2, batch_index_error_message="bad key"),
            _build(mod, "BatchIndexAndErrorMessage", batch_index=5, batch_index_error_message=None),
        ),
        error_message="some records were invalid",
        current_leader=leader if kip951 else None,
    )
    endpoints = (
        (
            _build(mod, "NodeEndpoint", node_id=3, host="broker-3.example", port=9093, rack="rack-b"),
            _build(mod, "NodeEndpoint", node_id=4, host="broker-4", port=19092, rack=None),
        )
        if kip951
        else ()
    )
    response = _build(
        mod,
        "ProduceResponse",
        responses=(
            _build(mod, "TopicProduceResponse", name="events", partition_responses=(p0, p1)),
            _build(mod, "TopicProduceResponse", name="other", partition_responses=()),
        ),
        throttle_time=i32Timedelta.parse(datetime.timedelta(milliseconds=250)),
        node_endpoints=endpoints,
    )
    header: Any
    if response_header_version(0, version) == 1:
        header = ResponseHeaderV1(correlation_id=i32(correlation_id))
    else:
        header = ResponseHeaderV0(correlation_id=i32(correlation_id))
    return _write(header) + _write(response)


@pytest.mark.parametrize("version", VERSIONS)
def test_decode_produce_response_from_kio(version: int) -> None:
    kip951 = version >= 10
    frame = kio_produce_response_frame(version, 77, kip951=kip951)
    correlation_id, offset = parse_response_header(frame, response_header_version(0, version))
    assert correlation_id == 77
    response = decode_produce_response(version, memoryview(frame), offset)
    assert response.throttle_time_ms == 250
    assert [t.name for t in response.topics] == ["events", "other"]
    assert response.topics[1].partitions == []
    p0, p1 = response.topics[0].partitions
    assert (p0.index, p0.error_code, p0.base_offset) == (0, 0, 1234567890123)
    assert p0.log_append_time_ms == APPEND_TIME_MS
    assert p0.log_start_offset == (42 if version >= 5 else -1)
    assert p0.record_errors == [] and p0.error_message is None and p0.current_leader is None
    assert (p1.index, p1.base_offset, p1.log_append_time_ms, p1.log_start_offset) == (1, -1, -1, -1)
    if version >= 8:
        assert p1.record_errors == [(2, "bad key"), (5, None)]
        assert p1.error_message == "some records were invalid"
    else:
        assert p1.record_errors == [] and p1.error_message is None
    if kip951:
        assert p1.error_code == 6
        assert p1.current_leader == (3, 17)
        assert response.node_endpoints == {
            3: ("broker-3.example", 9093, "rack-b"),
            4: ("broker-4", 19092, None),
        }
    else:
        assert p1.current_leader is None
        assert response.node_endpoints == {}


@pytest.mark.parametrize("version", [9, 10, 11, 12])
def test_decode_produce_response_skips_unknown_tags(version: int) -> None:
    body = b"".join(
        [
            b"\x02",  # one topic
            b"\x02t",  # compact name "t"
            b"\x02",  # one partition
            struct.pack(">ihqqq", 4, 0, 10, -1, 0),
            b"\x01",  # no record errors
            b"\x00",  # null error message
            b"\x02" + b"\x05\x02ab" + b"\x00\x09" + struct.pack(">ii", 8, 9) + b"\x00",  # tags 5 and 0
            b"\x01\x07\x00",  # topic: unknown tag 7, empty
            struct.pack(">i", 3),  # throttle
            b"\x01\x09\x01x",  # top level: unknown tag 9
        ]
    )
    frame = struct.pack(">i", 5) + b"\x00" + body  # response header v1, no tags
    _correlation_id, offset = parse_response_header(frame, 1)
    response = decode_produce_response(version, frame, offset)
    (partition,) = response.topics[0].partitions
    assert (partition.index, partition.base_offset, partition.log_start_offset) == (4, 10, 0)
    assert partition.current_leader == ((8, 9) if version >= 10 else None)
    assert response.throttle_time_ms == 3


@settings(max_examples=50, deadline=None)
@given(version=st.sampled_from(list(VERSIONS)), data=st.data())
def test_truncated_produce_response_raises_protocol_error(version: int, data: st.DataObject) -> None:
    frame = kio_produce_response_frame(version, 1, kip951=version >= 10)
    _cid, offset = parse_response_header(frame, response_header_version(0, version))
    cut = data.draw(st.integers(offset, len(frame) - 1))
    with pytest.raises(ProtocolError):
        decode_produce_response(version, frame[:cut], offset)
