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
