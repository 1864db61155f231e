"""Delivery: a completed batch's outcome handed to each of its records' callbacks and futures.

The last stage of a record's path: the sender core completes a batch (acknowledged, failed, or
split and its children completed), and the engine calls :func:`complete` on the loop thread,
outside the engine's lock. Every record gets one outcome: its ``RecordMetadata`` (topic,
partition, offset, timestamp) or its error, delivered to its ``on_delivery`` callback, its
``AsyncProducer`` future, and the sync futures' waiter. A callback that raises is logged and
changes nothing else.
"""

from __future__ import annotations

import asyncio
import logging

from kprod._core.accumulator import ProducerBatch
from kprod.types import DeliveryCallback, RecordMetadata

__all__ = ["complete", "record_error", "record_metadata", "run_failed_callback"]

log = logging.getLogger("kprod.producer")

_tuple_new = tuple.__new__


def record_metadata(batch: ProducerBatch, index: int, timestamp_ms: int) -> RecordMetadata:
    """RecordMetadata of record ``index`` (CreateTime ``timestamp_ms``) of a successfully completed batch."""
    if batch.children is not None:
        batch, index = batch.resolve(index)
    base = batch.base_offset
    ts = batch.log_append_time_ms
    return RecordMetadata(
        batch.topic,
        batch.partition,
        base + index if base >= 0 else -1,
        ts if ts >= 0 else timestamp_ms,
    )


def record_error(batch: ProducerBatch, index: int) -> BaseException | None:
    """The error of record ``index`` of a completed batch, or None."""
    if batch.children is not None:
        batch, index = batch.resolve(index)
    return batch.error


def complete(batches: list[ProducerBatch], retrieved: bool = False) -> None:
    """Run the callbacks, resolve the futures and set the waiters of completed ``batches``.

    ``retrieved``: mark failed asyncio futures as retrieved (at close, so asyncio does not log
    "Future exception was never retrieved" for each: awaiting one still raises).
    """
    future_type = asyncio.Future
    for batch in batches:
        callbacks = batch.callbacks
        if callbacks:
            split = batch.children is not None
            error = batch.error
            # Per record (kprod perf registers a callback on every one): the metadata tuple is
            # built here with tuple.__new__ rather than through record_metadata() unless split.
            topic = batch.topic
            partition = batch.partition
            base = batch.base_offset
            log_append_ms = batch.log_append_time_ms
            for index, fn, timestamp_ms in callbacks:
                if split:
                    error = record_error(batch, index)
                    metadata = None if error is not None else record_metadata(batch, index, timestamp_ms)
                elif error is None:
                    metadata = _tuple_new(
                        RecordMetadata,
                        (
                            topic,
                            partition,
                            base + index if base >= 0 else -1,
                            log_append_ms if log_append_ms >= 0 else timestamp_ms,
                        ),
                    )
                else:
                    metadata = None
                if type(fn) is future_type:  # AsyncProducer.enqueue's future, stored as is
                    if not fn.done():
                        if error is None:
                            fn.set_result(metadata)
                        else:
                            fn.set_exception(error)
                            if retrieved:
                                fn.exception()  # marks it retrieved; the exception stays
                    continue
                try:
                    fn(metadata, error)
                except Exception:
                    log.exception("a delivery callback raised (topic %s)", batch.topic)
        waiter = batch.waiter
        if waiter is not None:
            waiter.set()


def run_failed_callback(fn: DeliveryCallback, error: BaseException) -> None:
    """``fn(None, error)`` for a record that failed before it entered a batch; an exception is logged."""
    try:
        fn(None, error)
    except Exception:
        log.exception("a delivery callback raised")
