"""Control-plane messages through kio: framing, ApiVersions (and the mock's bug), Metadata, InitProducerId."""

from __future__ import annotations

import datetime
import io
import struct
from dataclasses import fields
from typing import Any

import pytest
from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType
from kio.static.primitive import i32Timedelta

from kprod.errors import ProtocolError
from kprod.protocol import (
    CLIENT_API_VERSIONS,
    ApiKey,
    MetadataSnapshot,
    PartitionSnapshot,
    TopicSnapshot,
    api_versions_request,
    decode_response,
    encode_request,
    init_producer_id_request,
    metadata_request,
    negotiate_versions,
    parse_api_versions_response,
    parse_init_producer_id,
    parse_metadata,
    parse_response_header,
    response_header_version,
    response_type,
)

# The librdkafka mock's ApiVersions table (test-peers.md, "Mock ApiVersions").
MOCK_RANGES = {
    0: (0, 10), 1: (0, 16), 2: (0, 7), 3: (0, 13), 8: (0, 9), 9: (0, 6), 10: (0, 3), 11: (0, 6),
    12: (0, 5), 13: (0, 4), 14: (0, 4), 18: (0, 2), 22: (0, 4), 23: (2, 2), 24: (0, 1), 25: (0, 1),
    26: (0, 1), 28: (0, 3),
}  # fmt: skip
# Tansu 0.6.0's, for the APIs kprod uses.
TANSU_RANGES = {0: (0, 11), 3: (0, 12), 10: (0, 6), 18: (0, 4), 22: (0, 5), 24: (0, 5), 25: (0, 4),
                26: (0, 4), 28: (0, 4)}  # fmt: skip


def _build(module: Any, class_name: str, **values: Any) -> Any:
    cls = getattr(module, class_name)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _write(entity: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(type(entity))(buf, entity)
    return buf.getvalue()


def _ms(value: int) -> i32Timedelta:
    return i32Timedelta.parse(datetime.timedelta(milliseconds=value))


def _response_frame(api_key: int, version: int, correlation_id: int, entity: Any) -> bytes:
    """Response frame after the size prefix: header v0 (correlation id) or v1 (+ empty tags), body."""
    header = struct.pack(">i", correlation_id)
    if response_header_version(api_key, version) == 1:
        header += b"\x00"
    return header + _write(entity)


# --- generic framing -------------------------------------------------------------------------


@pytest.mark.parametrize(("api_key", "version"), [(18, 0), (18, 3), (3, 1), (3, 12), (22, 4)])
def test_encode_request_frame(api_key: int, version: int) -> None:
    if api_key == ApiKey.API_VERSIONS:
        entity = api_versions_request(version, "kprod", "0.1.0")
    elif api_key == ApiKey.METADATA:
        entity = metadata_request(version, ["a", "b"], True)
    else:
        entity = init_producer_id_request(version, "txn", 60000)
    frame = encode_request(entity, correlation_id=99, client_id="cid")
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    header_cls: Any = RequestHeaderV2 if entity.__flexible__ else RequestHeaderV1
    header = _write(header_cls(request_api_key=api_key, request_api_version=version, correlation_id=99,
                               client_id="cid"))  # fmt: skip
    assert frame[4:] == header + _write(entity)
    decoded, consumed = entity_reader(type(entity))(frame, 4 + len(header))
    assert decoded == entity and 4 + len(header) + consumed == len(frame)


def test_decode_response_errors_become_protocol_errors() -> None:
    cls = response_type(ApiKey.METADATA, 12)
    with pytest.raises(ProtocolError):
        decode_response(cls, b"\x00\x00\x00", 0)
    with pytest.raises(ProtocolError):
        response_type(ApiKey.PRODUCE, 99)


# --- ApiVersions -----------------------------------------------------------------------------


def _api_versions_frame(version: int, ranges: dict[int, tuple[int, int]], error_code: int = 0) -> bytes:
    mod = load_payload_module(ApiKey.API_VERSIONS, version, EntityType.response)
    keys = tuple(_build(mod, "ApiVersion", api_key=k, min_version=lo, max_version=hi)
                 for k, (lo, hi) in ranges.items())  # fmt: skip
    response = _build(mod, "ApiVersionsResponse", error_code=ErrorCode(error_code), api_keys=keys,
                      throttle_time=_ms(0))  # fmt: skip
    return _response_frame(ApiKey.API_VERSIONS, version, 5, response)


@pytest.mark.parametrize("version", [0, 3])
def test_parse_api_versions_from_kio(version: int) -> None:
    frame = _api_versions_frame(version, TANSU_RANGES)
    assert parse_response_header(frame, response_header_version(18, version)) == (5, 4)
    result = parse_api_versions_response(memoryview(bytearray(frame)), version)
    assert result.error_code == 0
    assert result.api_ranges == TANSU_RANGES


def test_mock_malformed_api_versions_error_body() -> None:
    # The mock's answer to ApiVersions v3 (test-peers.md): after the 4-byte correlation id,
    # error 35, a compact-array count of N (not N+1), ApiVersions 0..2, throttle 0, no tags.
    frame = struct.pack(">i", 1) + bytes.fromhex("0023 01 0012 0000 0002 00000000")
    assert len(frame) == 17  # kafka-python's "Unable to decode 17-byte buffer"
    result = parse_api_versions_response(frame, 3)
    assert result.error_code == 35
    assert result.api_ranges == {}


def test_api_versions_request_validates_software_names() -> None:
    assert api_versions_request(0, "not valid!", "x").__version__ == 0  # v0..v2 carry no names
    entity = api_versions_request(3, "kprod", "0.1.0")
    assert (entity.client_software_name, entity.client_software_version) == ("kprod", "0.1.0")
    with pytest.raises(ValueError):
        api_versions_request(3, "kprod client", "0.1.0")


def test_negotiate_versions_against_mock() -> None:
    chosen = negotiate_versions(CLIENT_API_VERSIONS, MOCK_RANGES)
    assert chosen == {0: 10, 3: 12, 18: 2, 22: 4, 10: 3, 24: 1, 25: 1, 26: 1, 28: 3}


def test_negotiate_versions_against_tansu() -> None:
    chosen = negotiate_versions(CLIENT_API_VERSIONS, TANSU_RANGES)
    assert chosen == {0: 11, 3: 12, 18: 3, 22: 5, 10: 4, 24: 3, 25: 3, 26: 4, 28: 3}


def test_negotiation_rules() -> None:
    client = {0: (3, 11), 22: (3, 5), 3: (1, 12)}
    # No overlap: absent. Highest common version otherwise.
    assert negotiate_versions(client, {22: (0, 2), 3: (0, 7)}) == {3: 7}
    # Produce v5 (short response on the mock) becomes v4...
    assert negotiate_versions(client, {0: (0, 5)}) == {0: 4}
    # ...unless the broker cannot do v4.
    assert negotiate_versions(client, {0: (5, 5)}) == {0: 5}


def test_client_versions_exist_in_kio() -> None:
    for api_key, (low, high) in CLIENT_API_VERSIONS.items():
        for version in range(low, high + 1):
            load_payload_module(api_key, version, EntityType.request)
            load_payload_module(api_key, version, EntityType.response)


# --- Metadata --------------------------------------------------------------------------------


def _metadata_response(version: int) -> Any:
    mod = load_payload_module(ApiKey.METADATA, version, EntityType.response)

    def partition(index: int, leader: int, epoch: int, error: int) -> Any:
        return _build(mod, "MetadataResponsePartition", error_code=ErrorCode(error), partition_index=index,
                      leader_id=leader, leader_epoch=epoch, replica_nodes=(1, 2, 3), isr_nodes=(leader, 3),
                      offline_replicas=())  # fmt: skip

    topics = (
        _build(mod, "MetadataResponseTopic", error_code=ErrorCode(0), name="events", topic_id=None,
               is_internal=False, partitions=(partition(0, 1, 5, 0), partition(1, 2, 7, 0)),
               topic_authorized_operations=-2147483648),
        _build(mod, "MetadataResponseTopic", error_code=ErrorCode(3), name="missing", topic_id=None,
               is_internal=False, partitions=(), topic_authorized_operations=-2147483648),
    )  # fmt: skip
    brokers = (
        _build(mod, "MetadataResponseBroker", node_id=1, host="b1", port=9092, rack=None),
        _build(mod, "MetadataResponseBroker", node_id=2, host="b2.example", port=9093, rack="r1"),
    )
    return _build(mod, "MetadataResponse", throttle_time=_ms(0), brokers=brokers, cluster_id="clu-1",
                  controller_id=2, topics=topics, cluster_authorized_operations=-2147483648)  # fmt: skip


@pytest.mark.parametrize("version", [1, 9, 12])
def test_metadata_round_trip(version: int) -> None:
    request = metadata_request(version, ["events", "missing"], allow_auto_topic_creation=True)
    assert [t.name for t in request.topics] == ["events", "missing"]
    assert getattr(request, "allow_auto_topic_creation", True) is True
    assert metadata_request(version, None, False).topics is None

    frame = _response_frame(ApiKey.METADATA, version, 11, _metadata_response(version))
    correlation_id, offset = parse_response_header(frame, response_header_version(ApiKey.METADATA, version))
    assert correlation_id == 11
    snapshot = parse_metadata(decode_response(response_type(ApiKey.METADATA, version), frame, offset))
    has_epoch = version >= 7
    assert snapshot == MetadataSnapshot(
        brokers={1: ("b1", 9092), 2: ("b2.example", 9093)},
        controller_id=2,
        cluster_id="clu-1" if version >= 2 else None,
        topics={
            "events": TopicSnapshot(0, {
                0: PartitionSnapshot(1, 5 if has_epoch else -1, 0, (1, 2, 3), (1, 3)),
                1: PartitionSnapshot(2, 7 if has_epoch else -1, 0, (1, 2, 3), (2, 3)),
            }),
            "missing": TopicSnapshot(3, {}),
        },
    )  # fmt: skip
    partition = snapshot.topics["events"].partitions[0]
    assert type(partition.leader_id) is int and type(partition.error_code) is int
    assert all(type(r) is int for r in partition.replicas)


def test_transactions_v2_versions_only_where_the_cluster_has_transaction_version_2() -> None:
    from kprod.protocol.messages import cap_for_transaction_version

    kafka_4 = {0: (0, 13), 26: (0, 5)}
    negotiated = negotiate_versions(CLIENT_API_VERSIONS, kafka_4)
    assert (negotiated[0], negotiated[26]) == (12, 5)
    v1 = dict(negotiated)
    cap_for_transaction_version(v1, 1)
    assert (v1[0], v1[26]) == (11, 4), "Produce v12 / EndTxn v5 mean transactions v2"
    v2 = dict(negotiated)
    cap_for_transaction_version(v2, 2)
    assert (v2[0], v2[26]) == (12, 5)


# --- InitProducerId --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
def test_init_producer_id(version: int) -> None:
    request = init_producer_id_request(version, "txn-a", 60000, producer_id=1000, producer_epoch=4)
    assert request.transactional_id == "txn-a"
    assert request.transaction_timeout == datetime.timedelta(milliseconds=60000)
    assert (request.producer_id, request.producer_epoch) == (1000, 4)
    idempotent = init_producer_id_request(version, None, 60000)
    assert (idempotent.transactional_id, idempotent.producer_id, idempotent.producer_epoch) == (None, -1, -1)

    mod = load_payload_module(ApiKey.INIT_PRODUCER_ID, version, EntityType.response)
    response = mod.InitProducerIdResponse(throttle_time=_ms(0), error_code=ErrorCode(90), producer_id=1001,
                                          producer_epoch=5)  # fmt: skip
    frame = _response_frame(ApiKey.INIT_PRODUCER_ID, version, 3, response)
    _cid, offset = parse_response_header(frame, response_header_version(ApiKey.INIT_PRODUCER_ID, version))
    decoded = decode_response(response_type(ApiKey.INIT_PRODUCER_ID, version), frame, offset)
    result = parse_init_producer_id(decoded)
    assert result == (90, 1001, 5)
    assert all(type(v) is int for v in result)


def test_init_producer_id_epoch_bump_needs_v3() -> None:
    assert init_producer_id_request(2, None, 1000).__version__ == 2
    with pytest.raises(ValueError):
        init_producer_id_request(2, None, 1000, producer_id=5, producer_epoch=1)
