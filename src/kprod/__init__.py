"""kprod: a Kafka producer for Python, written from the wire protocol up.

``Producer`` (synchronous, thread-safe) and ``AsyncProducer`` (asyncio) share one
pipeline: record creation, serialization, partitioning, buffering, batching,
compression, acknowledgements, retries and metadata. See ARCHITECTURE.md.
"""

from kprod._core.transactions import (
    ConsumerGroupMetadata,
    InvalidTxnStateError,
    ProducerFencedError,
    TransactionAbortableError,
)
from kprod.aio import AsyncProducer
from kprod.config import ProducerConfig
from kprod.errors import (
    AuthenticationError,
    BrokerConnectionError,
    BufferExhaustedError,
    ConfigError,
    KafkaError,
    KafkaTimeoutError,
    KprodError,
    Persisted,
    ProducerClosedError,
    RecordTooLargeError,
    SerializationError,
    UnknownTopicError,
)
from kprod.sasl import OAuthBearerToken
from kprod.sync import Producer, RecordFuture
from kprod.types import RecordMetadata

__version__ = "0.1.0"

__all__ = [
    "AsyncProducer",
    "AuthenticationError",
    "BrokerConnectionError",
    "BufferExhaustedError",
    "ConfigError",
    "ConsumerGroupMetadata",
    "InvalidTxnStateError",
    "KafkaError",
    "KafkaTimeoutError",
    "KprodError",
    "OAuthBearerToken",
    "Persisted",
    "Producer",
    "ProducerClosedError",
    "ProducerConfig",
    "ProducerFencedError",
    "RecordFuture",
    "RecordMetadata",
    "RecordTooLargeError",
    "SerializationError",
    "TransactionAbortableError",
    "UnknownTopicError",
    "__version__",
]
