"""Types of the optional C fast path (src/kprod/_speedups.c)."""

from typing import Any

from kprod._core.accumulator import ProducerBatch

class PlainAppender:
    def __call__(
        self, topic: Any, partition: Any, timestamp_ms: Any, key: Any, value: Any, /
    ) -> ProducerBatch | None: ...

def plain_appender(
    *,
    accumulator: object,
    fast_appenders: dict[str, Any],
    switch_sticky: Any,
    txn: object,
    in_transaction: object,
    max_bytes: int,
    memory_limit: int,
    batch_limit: int,
    batch_size: int,
    ignore_keys: bool,
    batch_type: type,
    appender_type: type,
    queue_type: type,
    sticky_type: type,
) -> PlainAppender: ...

def murmur2_u32(data: bytes, /) -> int: ...

class FastSend:
    """``Producer.send``'s common case; same signature as ``Producer.send``."""

    def __call__(self, topic: Any, value: Any = ..., key: Any = ..., **kwargs: Any) -> Any: ...

def fast_send(
    *,
    appender: PlainAppender,
    lock: Any,
    after_append_locked: Any,
    after_append: Any,
    fallback: Any,
    fallback_general: Any,
    future_type: type,
) -> FastSend: ...

class FastEnqueue:
    """``AsyncProducer.enqueue``'s common case: the future, (future, action), or None."""

    def __call__(
        self, topic: Any, value: Any, key: Any, partition: Any, timestamp: Any, headers: Any, on_delivery: Any, /
    ) -> Any: ...

def fast_enqueue(
    *, appender: PlainAppender, lock: Any, after_append_locked: Any, create_future: Any, batch_type: type
) -> FastEnqueue: ...
