"""kprod's wire protocol: framing, version negotiation, control-plane messages and the Produce envelope.

Everything here is pure: bytes in, bytes and plain objects out. No module of this
package imports asyncio, socket, ssl, threading, select or time (a test checks it);
the I/O layer (``kprod._io``) owns sockets and clocks and calls into this package.

- :mod:`.framing`: request/response headers, size-prefixed frames (:class:`FrameReader`),
  per-connection in-flight tracking (:class:`InFlightRequests`).
- :mod:`.messages`: kio-based control-plane messages (ApiVersions, Metadata,
  InitProducerId, ...) and version negotiation.
- :mod:`.produce`: the hand-written Produce request/response codec (hot path).
- :mod:`.metadata`: plain snapshots of Metadata responses.
"""

from kprod.protocol.framing import (
    FrameReader,
    InFlightRequest,
    InFlightRequests,
    encode_request_header,
    parse_response_header,
    request_header_version,
    response_header_version,
)
from kprod.protocol.messages import (
    CLIENT_API_VERSIONS,
    ApiKey,
    ApiVersionsResult,
    api_versions_request,
    decode_response,
    encode_request,
    init_producer_id_request,
    metadata_request,
    negotiate_versions,
    parse_api_versions_response,
    parse_init_producer_id,
    parse_metadata,
    response_type,
)
from kprod.protocol.metadata import MetadataSnapshot, PartitionSnapshot, TopicSnapshot
from kprod.protocol.produce import (
    PartitionProduceResponse,
    ProduceResponse,
    TopicProduceResponse,
    decode_produce_response,
    encode_produce_request,
    produce_partition_overhead_bytes,
    produce_request_base_overhead_bytes,
    produce_request_overhead_bytes,
    produce_topic_overhead_bytes,
)

__all__ = [
    "CLIENT_API_VERSIONS",
    "ApiKey",
    "ApiVersionsResult",
    "FrameReader",
    "InFlightRequest",
    "InFlightRequests",
    "MetadataSnapshot",
    "PartitionProduceResponse",
    "PartitionSnapshot",
    "ProduceResponse",
    "TopicProduceResponse",
    "TopicSnapshot",
    "api_versions_request",
    "decode_produce_response",
    "decode_response",
    "encode_produce_request",
    "encode_request",
    "encode_request_header",
    "init_producer_id_request",
    "metadata_request",
    "negotiate_versions",
    "parse_api_versions_response",
    "parse_init_producer_id",
    "parse_metadata",
    "parse_response_header",
    "produce_partition_overhead_bytes",
    "produce_request_base_overhead_bytes",
    "produce_request_overhead_bytes",
    "produce_topic_overhead_bytes",
    "request_header_version",
    "response_header_version",
    "response_type",
]
