"""Control-plane messages through kio, and API version negotiation.

This module owns everything kprod sends and reads that is not on the hot path:
framing any kio request entity, decoding any kio response, and the builders and
parsers for ApiVersions, Metadata and InitProducerId that turn kio's entities
into plain Python values. It also holds the versions kprod speaks
(:data:`CLIENT_API_VERSIONS`) and the negotiation rule against a broker's ranges.

Rules this module obeys: it is pure (no I/O, clocks or threads). kio types stay
inside this module's parsers: callers get plain ints, strings and dataclasses.
"""

from __future__ import annotations

import datetime
import io
import re
import struct
from dataclasses import dataclass, field, fields
from typing import Any, Final, TypeVar

from kio.index import load_payload_module, load_response_schema
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType
from kio.static.primitive import i32Timedelta
from kio.static.protocol import Entity, Payload

from kprod.errors import ProtocolError
from kprod.protocol.framing import encode_request_header
from kprod.protocol.guard import check_frame
from kprod.protocol.metadata import MetadataSnapshot, PartitionSnapshot, TopicSnapshot

__all__ = [
    "API_VERSIONS_FALLBACK_VERSION",
    "CLIENT_API_VERSIONS",
    "TRANSACTIONS_V2_END_TXN",
    "TRANSACTIONS_V2_PRODUCE",
    "UNSUPPORTED_VERSION",
    "ApiKey",
    "ApiVersionsResult",
    "api_versions_request",
    "cap_for_transaction_version",
    "decode_response",
    "encode_request",
    "init_producer_id_request",
    "metadata_request",
    "negotiate_versions",
    "parse_api_versions_response",
    "parse_init_producer_id",
    "parse_metadata",
    "response_type",
]


class ApiKey:
    """Kafka API keys kprod uses (plain ints, as on the wire)."""

    PRODUCE: Final = 0
    METADATA: Final = 3
    FIND_COORDINATOR: Final = 10
    SASL_HANDSHAKE: Final = 17
    API_VERSIONS: Final = 18
    CREATE_TOPICS: Final = 19
    INIT_PRODUCER_ID: Final = 22
    ADD_PARTITIONS_TO_TXN: Final = 24
    ADD_OFFSETS_TO_TXN: Final = 25
    END_TXN: Final = 26
    TXN_OFFSET_COMMIT: Final = 28
    SASL_AUTHENTICATE: Final = 36
    DESCRIBE_CLUSTER: Final = 60
    DESCRIBE_TRANSACTIONS: Final = 65


# What kprod speaks: api key -> (min, max) version, each within what kio 0.6.5 models.
CLIENT_API_VERSIONS: Final[dict[int, tuple[int, int]]] = {
    # v3 = first with record batch v2. v12 (same layout as v11) means "transactions v2" (KIP-890)
    # and is used only by a transactional producer on such a cluster; v13+ name topics by id.
    ApiKey.PRODUCE: (3, 12),
    ApiKey.METADATA: (1, 12),
    ApiKey.API_VERSIONS: (0, 3),
    # From v3 only: v3 adds ProducerId/ProducerEpoch for epoch bumps (KIP-360), and
    # Tansu answers v0..v2 with UNKNOWN_SERVER_ERROR although it advertises 0..5.
    ApiKey.INIT_PRODUCER_ID: (3, 5),
    ApiKey.FIND_COORDINATOR: (1, 4),
    ApiKey.ADD_PARTITIONS_TO_TXN: (1, 3),  # v4+ are broker-to-broker only
    ApiKey.ADD_OFFSETS_TO_TXN: (1, 3),
    ApiKey.END_TXN: (1, 5),  # v5: transactions v2, the answer carries the bumped epoch
    ApiKey.TXN_OFFSET_COMMIT: (1, 3),
    # Asked under transactions v2 whether the previous transaction's markers are written (KIP-664).
    ApiKey.DESCRIBE_TRANSACTIONS: (0, 0),
    # SASL: v1 of the handshake means "SaslAuthenticate frames follow" (no legacy unframed tokens);
    # SaslAuthenticate v1+ carries the session lifetime (KIP-368).
    ApiKey.SASL_HANDSHAKE: (1, 1),
    ApiKey.SASL_AUTHENTICATE: (0, 2),
}

UNSUPPORTED_VERSION: Final = 35
API_VERSIONS_FALLBACK_VERSION: Final = 0
"""ApiVersions version to retry with after UNSUPPORTED_VERSION (every broker parses v0)."""

_PRODUCE_V5: Final = 5
_INT16 = struct.Struct(">h")
# KIP-511: the broker rejects (INVALID_REQUEST) software names/versions outside this pattern.
_SOFTWARE_RE: Final = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")

T = TypeVar("T", bound=Entity)


def encode_request(entity: Payload, *, correlation_id: int, client_id: str | None) -> bytes:
    """Encode a kio request entity as a whole frame: 4-byte size, request header, body.

    The header version follows the entity's ``__flexible__`` flag (v2 if flexible,
    else v1). Raises kio's errors for out-of-range field values.
    """
    header_version = 2 if entity.__flexible__ else 1
    buffer = io.BytesIO()
    buffer.write(b"\x00\x00\x00\x00")
    api_key, api_version = entity.__api_key__, entity.__version__
    buffer.write(encode_request_header(api_key, api_version, correlation_id, client_id, header_version))
    entity_writer(type(entity))(buffer, entity)
    frame = buffer.getbuffer()
    struct.pack_into(">i", frame, 0, len(frame) - 4)
    del frame  # release the export so getvalue() may proceed
    return buffer.getvalue()


def _readonly(buf: bytes | bytearray | memoryview) -> bytes | memoryview:
    # kio's native readers refuse writable buffers ("Received writable byte buffer").
    if isinstance(buf, bytes):
        return buf
    view = memoryview(buf)
    return view if view.readonly else view.toreadonly()


def decode_response(response_type: type[T], frame_body: bytes | memoryview, offset: int) -> T:
    """Decode a kio response entity from ``frame_body`` (the frame after its size prefix),
    starting at ``offset`` (the end of the response header).

    Raises ProtocolError if the bytes do not parse as ``response_type``.
    """
    # Lengths are checked against the frame first: kio's native decoder would try to allocate
    # whatever an array length claims and abort the process (see kprod.protocol.guard).
    body = check_frame(response_type, _readonly(frame_body), offset)
    try:
        entity, _size = entity_reader(response_type)(_readonly(body), offset)
    except Exception as exc:  # kio raises DecodeError, ValueError, KeyError, TypeError, ...
        raise ProtocolError(f"malformed {response_type.__name__}: {exc!r}") from exc
    return entity


def response_type(api_key: int, api_version: int) -> type[Any]:
    """The kio response entity class for ``api_key`` at ``api_version`` (for :func:`decode_response`).

    Raises ProtocolError if kio does not model that API version.
    """
    try:
        return load_response_schema(api_key, api_version)
    except Exception as exc:  # kio raises UnknownAPIKey/UnknownEntity (RuntimeError)
        raise ProtocolError(f"no response schema for api key {api_key} v{api_version}") from exc


def _request(api_key: int, version: int, class_name: str, **values: Any) -> Any:
    """Build a kio request entity (or nested entity) of a version, dropping fields it lacks."""
    try:
        module = load_payload_module(api_key, version, EntityType.request)
    except Exception as exc:
        raise ValueError(f"kio has no request schema for api key {api_key} v{version}") from exc
    cls = getattr(module, class_name)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _ms(value_ms: int) -> i32Timedelta:
    return i32Timedelta.parse(datetime.timedelta(milliseconds=value_ms))


# --- ApiVersions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiVersionsResult:
    """An ApiVersions answer: the error code and each API's (min, max) version.

    On UNSUPPORTED_VERSION (35) ``api_ranges`` is empty: retry with
    :data:`API_VERSIONS_FALLBACK_VERSION`.
    """

    error_code: int
    api_ranges: dict[int, tuple[int, int]]
    finalized_features: dict[str, int] = field(default_factory=dict)
    """Cluster features in force (v3+), name -> version level, e.g. ``transaction.version``."""


TRANSACTIONS_V2_PRODUCE: Final = 12
TRANSACTIONS_V2_END_TXN: Final = 5


def cap_for_transaction_version(versions: dict[int, int], transaction_version: int) -> None:
    """Keep the API versions that mean "transactions v2" (Produce v12, EndTxn v5) only where the
    cluster's ``transaction.version`` feature is 2 or more, as the Java client does."""
    if transaction_version < 2:
        if versions.get(ApiKey.PRODUCE, 0) >= TRANSACTIONS_V2_PRODUCE:
            versions[ApiKey.PRODUCE] = TRANSACTIONS_V2_PRODUCE - 1
        if versions.get(ApiKey.END_TXN, 0) >= TRANSACTIONS_V2_END_TXN:
            versions[ApiKey.END_TXN] = TRANSACTIONS_V2_END_TXN - 1


def api_versions_request(
    version: int, client_software_name: str = "kprod", client_software_version: str = "0"
) -> Any:
    """Build an ApiVersions request entity; v3+ carries the client's software name and version
    (KIP-511), which must match ``[a-zA-Z0-9](?:[a-zA-Z0-9\\-.]*[a-zA-Z0-9])?``.

    Raises ValueError for a name/version the broker would reject or a version kio lacks.
    """
    if version >= 3:
        for value in (client_software_name, client_software_version):
            if not _SOFTWARE_RE.fullmatch(value):
                raise ValueError(f"ApiVersions client software name/version {value!r} is not allowed")
    return _request(
        ApiKey.API_VERSIONS,
        version,
        "ApiVersionsRequest",
        client_software_name=client_software_name,
        client_software_version=client_software_version,
    )


def parse_api_versions_response(
    frame: bytes | memoryview, version: int, offset: int = 4
) -> ApiVersionsResult:
    """Parse an ApiVersions response of ``version`` from ``frame`` (after the size prefix).

    ApiVersions always uses response header v0, so the body starts at ``offset`` 4,
    just after the correlation id. On UNSUPPORTED_VERSION only the int16 error code
    is read: brokers then answer in the v0 layout, and the librdkafka mock answers a
    v3 request with a malformed flexible body (array count N instead of N+1, no tags)
    that kio would misread without failing. Raises ProtocolError if the body does not parse.
    """
    if len(frame) < offset + 2:
        raise ProtocolError("ApiVersions response too short for an error code")
    (error_code,) = _INT16.unpack_from(frame, offset)
    if error_code == UNSUPPORTED_VERSION:
        return ApiVersionsResult(error_code, {})
    response = decode_response(response_type(ApiKey.API_VERSIONS, version), frame, offset)
    ranges = {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in response.api_keys or ()}
    features = {
        str(f.name): int(f.max_version_level) for f in (getattr(response, "finalized_features", None) or ())
    }
    return ApiVersionsResult(int(response.error_code), ranges, features)


def negotiate_versions(
    client_ranges: dict[int, tuple[int, int]], broker_ranges: dict[int, tuple[int, int]]
) -> dict[int, int]:
    """For each API both sides know, the highest version both support; APIs without overlap are absent.

    One exception: a negotiated Produce v5 becomes v4 when the broker accepts v4.
    The librdkafka mock writes Produce v5 responses 8 bytes short (LogStartOffset
    only for v6+), and v4 carries the same request.
    """
    chosen: dict[int, int] = {}
    for api_key, (client_min, client_max) in client_ranges.items():
        broker = broker_ranges.get(api_key)
        if broker is None:
            continue
        low, high = max(client_min, broker[0]), min(client_max, broker[1])
        if low > high:
            continue
        if api_key == ApiKey.PRODUCE and high == _PRODUCE_V5 and low <= _PRODUCE_V5 - 1:
            high = _PRODUCE_V5 - 1
        chosen[api_key] = high
    return chosen


# --- Metadata ------------------------------------------------------------------------------


def metadata_request(version: int, topics: list[str] | None, allow_auto_topic_creation: bool) -> Any:
    """Build a Metadata request entity for ``topics`` (None: all topics).

    ``allow_auto_topic_creation`` is sent from v4 on (earlier versions always
    auto-create). Authorized-operations flags are off. Raises ValueError for a
    version kio lacks, or topics=None at v0 (where an empty list means all).
    """
    if topics is None:
        if version == 0:
            raise ValueError("Metadata v0 cannot ask for all topics with None; pass []")
        request_topics = None
    else:
        request_topics = tuple(
            _request(ApiKey.METADATA, version, "MetadataRequestTopic", name=t, topic_id=None) for t in topics
        )
    return _request(
        ApiKey.METADATA,
        version,
        "MetadataRequest",
        topics=request_topics,
        allow_auto_topic_creation=allow_auto_topic_creation,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )


def parse_metadata(response: Any) -> MetadataSnapshot:
    """Turn a kio MetadataResponse of any version into a :class:`MetadataSnapshot`.

    Topics answered only by id (null name, v10+) are left out.
    """
    # A null array (length -1) decodes as None: an answer that names nothing there.
    brokers = {int(b.node_id): (str(b.host), int(b.port)) for b in response.brokers or ()}
    topics: dict[str, TopicSnapshot] = {}
    for topic in response.topics or ():
        if topic.name is None:
            continue
        partitions = {
            int(p.partition_index): PartitionSnapshot(
                int(p.leader_id),
                int(getattr(p, "leader_epoch", -1)),
                int(p.error_code),
                tuple(int(r) for r in p.replica_nodes or ()),
                tuple(int(r) for r in p.isr_nodes or ()),
            )
            for p in topic.partitions or ()
        }
        topics[str(topic.name)] = TopicSnapshot(int(topic.error_code), partitions)
    cluster_id = getattr(response, "cluster_id", None)
    return MetadataSnapshot(
        brokers=brokers,
        controller_id=int(getattr(response, "controller_id", -1)),
        cluster_id=None if cluster_id is None else str(cluster_id),
        topics=topics,
    )


# --- InitProducerId ------------------------------------------------------------------------


def init_producer_id_request(
    version: int,
    transactional_id: str | None,
    transaction_timeout_ms: int,
    producer_id: int = -1,
    producer_epoch: int = -1,
) -> Any:
    """Build an InitProducerId request entity.

    ``producer_id``/``producer_epoch`` other than -1 ask for an epoch bump (KIP-360,
    v3+). Raises ValueError if they are set below v3, or for a version kio lacks.
    """
    if version < 3 and (producer_id != -1 or producer_epoch != -1):
        raise ValueError(f"InitProducerId v{version} cannot carry a producer id/epoch (v3+ only)")
    return _request(
        ApiKey.INIT_PRODUCER_ID,
        version,
        "InitProducerIdRequest",
        transactional_id=transactional_id,
        transaction_timeout=_ms(transaction_timeout_ms),
        producer_id=producer_id,
        producer_epoch=producer_epoch,
    )


def parse_init_producer_id(response: Any) -> tuple[int, int, int]:
    """Return (error_code, producer_id, producer_epoch) from a kio InitProducerIdResponse."""
    return int(response.error_code), int(response.producer_id), int(response.producer_epoch)


# --- SASL ------------------------------------------------------------------------------------


def sasl_handshake_request(version: int, mechanism: str) -> Any:
    """Build a SaslHandshake request entity naming ``mechanism``."""
    return _request(ApiKey.SASL_HANDSHAKE, version, "SaslHandshakeRequest", mechanism=mechanism)


def parse_sasl_handshake(response: Any) -> tuple[int, tuple[str, ...]]:
    """Return (error_code, the broker's enabled mechanisms) from a kio SaslHandshakeResponse."""
    return int(response.error_code), tuple(str(m) for m in response.mechanisms or ())


def sasl_authenticate_request(version: int, auth_bytes: bytes) -> Any:
    """Build a SaslAuthenticate request entity carrying one client message of the mechanism."""
    return _request(ApiKey.SASL_AUTHENTICATE, version, "SaslAuthenticateRequest", auth_bytes=auth_bytes)


def parse_sasl_authenticate(response: Any) -> tuple[int, str | None, bytes, int]:
    """Return (error_code, error_message, the server's message, session lifetime in ms; 0: none)."""
    lifetime = getattr(response, "session_lifetime", None)
    lifetime_ms = int(lifetime.total_seconds() * 1000) if lifetime is not None else 0
    return (
        int(response.error_code),
        response.error_message,
        bytes(response.auth_bytes or b""),
        lifetime_ms,
    )
