"""Exceptions raised by kprod and the table of Kafka protocol error codes.

A leaf module: any layer may import it, and it imports nothing of kprod's.

Every error names the pipeline stage it comes from (``stage``) and, where one
exists, the setting a user can change to avoid it. Broker error codes map to
:class:`KafkaError` with the Java producer's classification (retriable,
invalid-metadata) from ``org.apache.kafka.common.protocol.Errors``.
"""

from __future__ import annotations

import enum
from typing import Final


class Persisted(enum.Enum):
    """Whether a failed record may have been written by the broker.

    The same three states as librdkafka's message status.
    """

    NOT_PERSISTED = "not persisted"
    """The record was never sent, or the broker answered with an error: it is not in the log."""
    POSSIBLY_PERSISTED = "possibly persisted"
    """The record was sent but no answer came (timeout, disconnect): it may be in the log."""
    PERSISTED = "persisted"
    """The broker wrote the record (used for a callback error after a successful write)."""


class KprodError(Exception):
    """Base class of every error kprod raises or delivers.

    ``stage`` names the pipeline stage (``"config"``, ``"serialization"``,
    ``"partitioning"``, ``"buffering"``, ``"batching"``, ``"delivery"``,
    ``"metadata"``, ``"connection"``, ``"producer"``); ``persisted`` says
    whether the record may be in the log.
    """

    stage: str = "producer"
    persisted: Persisted = Persisted.NOT_PERSISTED

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        persisted: Persisted | None = None,
    ) -> None:
        super().__init__(message)
        if stage is not None:
            self.stage = stage
        if persisted is not None:
            self.persisted = persisted

    @property
    def retriable(self) -> bool:
        """True when retrying the same operation later may succeed."""
        return False


class ConfigError(KprodError, ValueError):
    """An unknown or invalid setting, raised when the producer is constructed."""

    stage = "config"


class SerializationError(KprodError, ValueError):
    """A key or value serializer failed; raised synchronously by ``send()``."""

    stage = "serialization"


class ProducerClosedError(KprodError):
    """The producer was closed before the record could be delivered."""

    stage = "producer"


class KafkaTimeoutError(KprodError, TimeoutError):
    """A deadline passed: ``max.block.ms``, ``delivery.timeout.ms`` or a call's timeout.

    ``last_cause`` is the last error seen before the deadline, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        persisted: Persisted | None = None,
        last_cause: BaseException | None = None,
    ) -> None:
        super().__init__(message, stage=stage, persisted=persisted)
        self.last_cause = last_cause

    @property
    def retriable(self) -> bool:
        return True


class BufferExhaustedError(KafkaTimeoutError):
    """``send()`` waited ``max.block.ms`` for room in ``buffer.memory`` and got none."""

    stage = "buffering"


class RecordTooLargeError(KprodError, ValueError):
    """One record is larger than ``max.request.size`` or ``buffer.memory``.

    Only that record fails; everything else already accepted is unaffected.
    """

    stage = "batching"


class UnknownTopicError(KafkaTimeoutError):
    """A topic did not appear in metadata within ``max.block.ms``."""

    stage = "metadata"


class BrokerConnectionError(KprodError, ConnectionError):
    """A connection to a broker failed or was closed."""

    stage = "connection"

    @property
    def retriable(self) -> bool:
        return True


class ProtocolError(KprodError):
    """The broker sent bytes that do not parse, or the client cannot speak its versions."""

    stage = "connection"


class UnreadableResponseError(ProtocolError, BrokerConnectionError):
    """An answer could not be read (damaged, truncated, or a layout kprod does not know): its
    connection was closed, and the request, like every other request on that connection, is
    retried as if the answer had been lost."""

    stage = "connection"


class AuthenticationError(BrokerConnectionError):
    """The broker refused who we are (SASL: wrong password, unknown mechanism, expired or rejected
    token) or TLS refused the broker's certificate (unknown CA, wrong host name, expired). Not
    retriable, as in Java (``AuthenticationException``): records waiting for a connection fail at
    once instead of after ``delivery.timeout.ms``. The message names the mechanism or certificate
    problem, the setting to change and what the broker answered; never a secret."""

    stage = "connection"

    @property
    def retriable(self) -> bool:
        return False


# code: (name, retriable, invalid_metadata). Taken from Kafka's Errors.java (4.0):
# retriable = subclass of RetriableException; invalid_metadata = subclass of
# InvalidMetadataException (the client refreshes metadata on these).
ERROR_CODES: Final[dict[int, tuple[str, bool, bool]]] = {
    -1: ("UNKNOWN_SERVER_ERROR", False, False),
    0: ("NONE", False, False),
    1: ("OFFSET_OUT_OF_RANGE", False, False),
    2: ("CORRUPT_MESSAGE", True, False),
    3: ("UNKNOWN_TOPIC_OR_PARTITION", True, True),
    4: ("INVALID_FETCH_SIZE", False, False),
    5: ("LEADER_NOT_AVAILABLE", True, True),
    6: ("NOT_LEADER_OR_FOLLOWER", True, True),
    7: ("REQUEST_TIMED_OUT", True, False),
    8: ("BROKER_NOT_AVAILABLE", False, False),
    9: ("REPLICA_NOT_AVAILABLE", True, True),
    10: ("MESSAGE_TOO_LARGE", False, False),
    11: ("STALE_CONTROLLER_EPOCH", False, False),
    12: ("OFFSET_METADATA_TOO_LARGE", False, False),
    13: ("NETWORK_EXCEPTION", True, True),
    14: ("COORDINATOR_LOAD_IN_PROGRESS", True, False),
    15: ("COORDINATOR_NOT_AVAILABLE", True, False),
    16: ("NOT_COORDINATOR", True, False),
    17: ("INVALID_TOPIC_EXCEPTION", False, False),
    18: ("RECORD_LIST_TOO_LARGE", False, False),
    19: ("NOT_ENOUGH_REPLICAS", True, False),
    20: ("NOT_ENOUGH_REPLICAS_AFTER_APPEND", True, False),
    21: ("INVALID_REQUIRED_ACKS", False, False),
    22: ("ILLEGAL_GENERATION", False, False),
    23: ("INCONSISTENT_GROUP_PROTOCOL", False, False),
    24: ("INVALID_GROUP_ID", False, False),
    25: ("UNKNOWN_MEMBER_ID", False, False),
    26: ("INVALID_SESSION_TIMEOUT", False, False),
    27: ("REBALANCE_IN_PROGRESS", False, False),
    28: ("INVALID_COMMIT_OFFSET_SIZE", False, False),
    29: ("TOPIC_AUTHORIZATION_FAILED", False, False),
    30: ("GROUP_AUTHORIZATION_FAILED", False, False),
    31: ("CLUSTER_AUTHORIZATION_FAILED", False, False),
    32: ("INVALID_TIMESTAMP", False, False),
    33: ("UNSUPPORTED_SASL_MECHANISM", False, False),
    34: ("ILLEGAL_SASL_STATE", False, False),
    35: ("UNSUPPORTED_VERSION", False, False),
    36: ("TOPIC_ALREADY_EXISTS", False, False),
    37: ("INVALID_PARTITIONS", False, False),
    38: ("INVALID_REPLICATION_FACTOR", False, False),
    39: ("INVALID_REPLICA_ASSIGNMENT", False, False),
    40: ("INVALID_CONFIG", False, False),
    41: ("NOT_CONTROLLER", True, False),
    42: ("INVALID_REQUEST", False, False),
    43: ("UNSUPPORTED_FOR_MESSAGE_FORMAT", False, False),
    44: ("POLICY_VIOLATION", False, False),
    45: ("OUT_OF_ORDER_SEQUENCE_NUMBER", False, False),
    46: ("DUPLICATE_SEQUENCE_NUMBER", False, False),
    47: ("INVALID_PRODUCER_EPOCH", False, False),
    48: ("INVALID_TXN_STATE", False, False),
    49: ("INVALID_PRODUCER_ID_MAPPING", False, False),
    50: ("INVALID_TRANSACTION_TIMEOUT", False, False),
    51: ("CONCURRENT_TRANSACTIONS", True, False),
    52: ("TRANSACTION_COORDINATOR_FENCED", False, False),
    53: ("TRANSACTIONAL_ID_AUTHORIZATION_FAILED", False, False),
    54: ("SECURITY_DISABLED", False, False),
    55: ("OPERATION_NOT_ATTEMPTED", False, False),
    56: ("KAFKA_STORAGE_ERROR", True, True),
    57: ("LOG_DIR_NOT_FOUND", False, False),
    58: ("SASL_AUTHENTICATION_FAILED", False, False),
    59: ("UNKNOWN_PRODUCER_ID", False, False),
    60: ("REASSIGNMENT_IN_PROGRESS", False, False),
    61: ("DELEGATION_TOKEN_AUTH_DISABLED", False, False),
    62: ("DELEGATION_TOKEN_NOT_FOUND", False, False),
    63: ("DELEGATION_TOKEN_OWNER_MISMATCH", False, False),
    64: ("DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", False, False),
    65: ("DELEGATION_TOKEN_AUTHORIZATION_FAILED", False, False),
    66: ("DELEGATION_TOKEN_EXPIRED", False, False),
    67: ("INVALID_PRINCIPAL_TYPE", False, False),
    68: ("NON_EMPTY_GROUP", False, False),
    69: ("GROUP_ID_NOT_FOUND", False, False),
    70: ("FETCH_SESSION_ID_NOT_FOUND", True, False),
    71: ("INVALID_FETCH_SESSION_EPOCH", True, False),
    72: ("LISTENER_NOT_FOUND", True, True),
    73: ("TOPIC_DELETION_DISABLED", False, False),
    74: ("FENCED_LEADER_EPOCH", True, True),
    75: ("UNKNOWN_LEADER_EPOCH", True, False),
    76: ("UNSUPPORTED_COMPRESSION_TYPE", False, False),
    77: ("STALE_BROKER_EPOCH", False, False),
    78: ("OFFSET_NOT_AVAILABLE", True, False),
    79: ("MEMBER_ID_REQUIRED", False, False),
    80: ("PREFERRED_LEADER_NOT_AVAILABLE", True, True),
    81: ("GROUP_MAX_SIZE_REACHED", False, False),
    82: ("FENCED_INSTANCE_ID", False, False),
    83: ("ELIGIBLE_LEADERS_NOT_AVAILABLE", True, True),
    84: ("ELECTION_NOT_NEEDED", True, True),
    85: ("NO_REASSIGNMENT_IN_PROGRESS", False, False),
    86: ("GROUP_SUBSCRIBED_TO_TOPIC", False, False),
    87: ("INVALID_RECORD", False, False),
    88: ("UNSTABLE_OFFSET_COMMIT", True, False),
    89: ("THROTTLING_QUOTA_EXCEEDED", True, False),
    90: ("PRODUCER_FENCED", False, False),
    91: ("RESOURCE_NOT_FOUND", False, False),
    92: ("DUPLICATE_RESOURCE", False, False),
    93: ("UNACCEPTABLE_CREDENTIAL", False, False),
    94: ("INCONSISTENT_VOTER_SET", False, False),
    95: ("INVALID_UPDATE_VERSION", False, False),
    96: ("FEATURE_UPDATE_FAILED", False, False),
    97: ("PRINCIPAL_DESERIALIZATION_FAILURE", False, False),
    98: ("SNAPSHOT_NOT_FOUND", False, False),
    100: ("UNKNOWN_TOPIC_ID", True, True),
    101: ("DUPLICATE_BROKER_REGISTRATION", False, False),
    102: ("BROKER_ID_NOT_REGISTERED", False, False),
    103: ("INCONSISTENT_TOPIC_ID", True, True),
    104: ("INCONSISTENT_CLUSTER_ID", False, False),
    105: ("TRANSACTIONAL_ID_NOT_FOUND", False, False),
    106: ("FETCH_SESSION_TOPIC_ID_ERROR", True, False),
    107: ("INELIGIBLE_REPLICA", False, False),
    108: ("NEW_LEADER_ELECTED", False, False),
    120: ("TRANSACTION_ABORTABLE", False, False),
    122: ("SHARE_SESSION_NOT_FOUND", True, False),
    123: ("INVALID_SHARE_SESSION_EPOCH", True, False),
}


def error_name(code: int) -> str:
    """The Kafka name of a protocol error code (``UNKNOWN_CODE_<n>`` if unlisted)."""
    entry = ERROR_CODES.get(code)
    return entry[0] if entry is not None else f"UNKNOWN_CODE_{code}"


class KafkaError(KprodError):
    """A broker answered with a Kafka protocol error code.

    ``code`` is the numeric code, ``name`` its Kafka name (``NOT_LEADER_OR_FOLLOWER``),
    ``retriable`` and ``invalid_metadata`` follow Kafka's ``Errors.java``.
    """

    stage = "delivery"

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        stage: str | None = None,
        persisted: Persisted | None = None,
    ) -> None:
        self.code = code
        self.name = error_name(code)
        text = f"{self.name} ({code})"
        if message:
            text = f"{text}: {message}"
        super().__init__(text, stage=stage, persisted=persisted)

    @property
    def retriable(self) -> bool:
        entry = ERROR_CODES.get(self.code)
        return entry[1] if entry is not None else False

    @property
    def invalid_metadata(self) -> bool:
        """True when the client should refresh metadata after this error."""
        entry = ERROR_CODES.get(self.code)
        return entry[2] if entry is not None else False


def is_retriable(code: int) -> bool:
    """Kafka's classification: may a request that failed with ``code`` be retried."""
    entry = ERROR_CODES.get(code)
    return entry[1] if entry is not None else False


def is_invalid_metadata(code: int) -> bool:
    """Kafka's classification: does ``code`` mean the client's metadata is stale."""
    entry = ERROR_CODES.get(code)
    return entry[2] if entry is not None else False


__all__ = [
    "ERROR_CODES",
    "AuthenticationError",
    "BrokerConnectionError",
    "BufferExhaustedError",
    "ConfigError",
    "KafkaError",
    "KafkaTimeoutError",
    "KprodError",
    "Persisted",
    "ProducerClosedError",
    "ProtocolError",
    "RecordTooLargeError",
    "SerializationError",
    "UnknownTopicError",
    "error_name",
    "is_invalid_metadata",
    "is_retriable",
]
