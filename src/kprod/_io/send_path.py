"""The general send path, flush and transactional waits, written once for both facades.

``Producer`` (threads) and ``AsyncProducer`` (one asyncio loop) differ only in how they wait:
the first blocks on the engine's condition with its lock held (``Condition.wait`` releases it
while blocked), the second awaits ``engine.async_waiter()`` and takes the lock for each step.
So everything that waits is written here as a generator of *steps*, in the manner of a sans-I/O
state machine: each step runs with the engine's lock held and either yields how long to wait
(seconds) for something to change, or returns its result, or raises. A facade's driver runs the
steps with its own wait primitive between them and closes the generator (lock held) however the
wait ends, so the clean-up in the steps (waiter counts, the flushing mark) always runs.

Only the per-record fast paths (raw bytes into an open batch) stay inlined in each facade: they
are a few bytecodes that a shared call would double.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, TypeAlias

from kprod._core.accumulator import BatchState, ProducerBatch
from kprod._core.appender import Wait
from kprod._core.transactions import TxnOperation
from kprod._io import transactional
from kprod._io.engine import ProducerEngine, monotonic_ms
from kprod._io.frontend import RecordPreparer, check_callback, check_partition
from kprod.errors import KafkaTimeoutError, RecordTooLargeError
from kprod.types import DeliveryCallback

__all__ = ["PreparedRecord", "SendPath", "Steps"]

Steps = Generator[float, None, Any]
"""A waiting operation: yields seconds to wait (lock released meanwhile), returns its result."""

_MAX_WAIT_S = 0.5
"""The longest single wait: a waiter looks at its deadline and the producer's state this often
even when no notification comes (a notification can be missed by an async waiter created late)."""


PreparedRecord: TypeAlias = (
    "tuple[str, int | None, int, bytes | None, bytes | None, list[tuple[str, bytes | None]] | None, int, "
    "DeliveryCallback | None]"
)
"""A record serialized and checked, ready for the accumulator:
``(topic, partition, timestamp_ms, key, value, headers, bound, on_delivery)``, where ``bound`` is the
upper bound of its encoded size in bytes (what it may take of ``buffer.memory``). A plain tuple, not
a NamedTuple: building one costs 0.1 µs more (measured), on every record off the fast paths."""


class SendPath:
    """One producer's general path from a ``send`` call to a record in a batch, and its waits.

    ``new_waiter``: called for each batch this path opens, to give it a ``waiter`` (the sync
    futures wait on it without the engine's lock); None: batches need none.
    """

    __slots__ = ("_engine", "_new_waiter", "_preparer", "_serialize_ns")

    def __init__(
        self, engine: ProducerEngine, preparer: RecordPreparer, new_waiter: Callable[[], Any] | None = None
    ) -> None:
        self._engine = engine
        self._preparer = preparer
        self._new_waiter = new_waiter
        self._serialize_ns = -1
        """The serialization time of the record being sampled (``engine.stage_sample_due``), or -1."""

    def prepare(
        self,
        topic: str,
        value: Any,
        key: Any,
        partition: Any,
        timestamp: Any,
        headers: Any,
        on_delivery: Any,
        now_ms: int,
    ) -> PreparedRecord | RecordTooLargeError:
        """Check the arguments and serialize (no lock). Raises KprodError/SerializationError for
        bad arguments; returns the error for a record too large, which fails alone: its
        ``on_delivery`` is already scheduled, like any other outcome's."""
        # The checks' common cases inline: this runs for every record off the fast paths.
        if on_delivery is not None and not callable(on_delivery):
            check_callback(on_delivery)  # raises
        if partition is not None and type(partition) is not int:
            partition = check_partition(partition)
        try:
            if self._engine.stage_sample_due:  # read without the lock: a sample more or less is harmless
                started_ns = time.perf_counter_ns()
                kb, vb, hdrs, ts, bound = self._preparer.prepare(topic, key, value, headers, timestamp, now_ms)
                self._serialize_ns = time.perf_counter_ns() - started_ns
            else:
                kb, vb, hdrs, ts, bound = self._preparer.prepare(topic, key, value, headers, timestamp, now_ms)
        except RecordTooLargeError as error:
            if on_delivery is not None:
                self._engine.deliver_failed(on_delivery, error)
            return error
        return (topic, partition, ts, kb, vb, hdrs, bound, on_delivery)

    def append_locked(
        self, record: PreparedRecord, completion: Any = None
    ) -> tuple[ProducerBatch, int, int] | Wait:
        """One attempt (lock held) to put ``record`` into a batch: ``(batch, index, action)``, or the
        Wait that says what it needs first (then nothing changed: try again after waiting).

        ``index`` is the record's position in ``batch``; ``action`` is what the caller must do once
        the lock is released (AfterAppend bits, or 0: a plain int, IntFlag operators are Python
        calls). ``completion`` (an asyncio future, or None) is attached to the record's outcome, as
        is its ``on_delivery``. Raises ProducerClosedError after close, and what partitioning raises
        (KprodError naming the partition or the partitioner). One call for try-and-attach: this runs
        for every record that misses the facades' raw-bytes fast path.
        """
        engine = self._engine
        if not engine.accepting:
            engine.check_open()
        topic, partition, ts, key, value, headers, bound, on_delivery = record
        if engine.stage_sample_due:
            result = self._append_sampled(record)
        else:
            result = engine.appender.try_append(topic, partition, ts, key, value, headers, bound, monotonic_ms())
        if type(result) is Wait:
            if result is Wait.METADATA:
                engine.check_metadata_wait(topic)
            return result
        batch: ProducerBatch = result  # type: ignore[assignment]  # (a cast() would be a call)
        index = batch.record_count - 1
        if completion is not None:
            batch.add_callback(index, completion, ts)
        if on_delivery is not None:
            batch.add_callback(index, on_delivery, ts)
        if index == 0:
            if self._new_waiter is not None:
                batch.waiter = self._new_waiter()
            # A new batch may need the sender's linger timer, a full one the sender at once.
            return batch, 0, engine.after_append_locked(batch)
        if not batch.accepting:
            return batch, index, engine.after_append_locked(batch)
        return batch, index, 0

    def _append_sampled(self, record: PreparedRecord) -> ProducerBatch | Wait:
        """``RecordAppender.try_append`` with its steps timed, for the stage metrics (lock held).

        Once the record is in a batch: its serialize (when :meth:`prepare` timed it), partition and
        append times are recorded, the sample is taken and the fast path resumes."""
        engine = self._engine
        appender = engine.appender
        topic, partition, ts, key, value, headers, bound, _ = record
        result, partition_ns, append_ns = appender.try_append_timed(
            time.perf_counter_ns, topic, partition, ts, key, value, headers, bound, monotonic_ms()
        )
        if type(result) is Wait:
            return result  # not placed: the next record is sampled instead
        now_ms = monotonic_ms()
        engine.core.metrics.record_stage_sample(self._serialize_ns, partition_ns, append_ns, now_ms)
        self._serialize_ns = -1
        engine.stage_sample_due = False
        appender.resume_fast()
        return result

    def append_steps(
        self, record: PreparedRecord, reason: Wait, completion: Any = None
    ) -> Generator[float, None, tuple[ProducerBatch, int, int]]:
        """Wait up to ``max.block.ms`` (from now) for what ``reason`` says, then append: what
        :meth:`append_locked` returns.

        Raises BufferExhaustedError / UnknownTopicError naming the settings when the time runs out,
        ProducerClosedError when the producer closes meanwhile. ``bufferpool-wait-time`` and the
        count of memory waiters (which makes the sender free memory eagerly) are kept here.
        """
        engine = self._engine
        start = time.monotonic()
        deadline = start + engine.config.max_block_ms / 1000
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise engine.wait_error(reason, record[0], int((time.monotonic() - start) * 1000))
            memory = reason is Wait.MEMORY
            if memory:
                engine.accumulator.memory_waiters += 1
            engine.wake()
            waited_ns = time.monotonic_ns()
            try:
                yield min(remaining, _MAX_WAIT_S)
            finally:
                if memory:
                    engine.accumulator.memory_waiters -= 1
                    now_ns = time.monotonic_ns()
                    engine.core.metrics.bufferpool_wait_ns.record(now_ns - waited_ns, now_ns // 1_000_000)
            result = self.append_locked(record, completion)
            if type(result) is not Wait:
                return result  # type: ignore[return-value]
            reason = result

    def flush_steps(self, timeout: float | None) -> Generator[float, None, None]:
        """Send everything queued now (ignoring ``linger.ms``) and wait until it all completed.

        Ends early when the producer failed (the futures carry the error) or its I/O thread is
        gone; raises KafkaTimeoutError naming what is pending after ``timeout`` s (None: none).
        """
        engine = self._engine
        pending = engine.incomplete_batches()
        if not pending:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        engine.set_flushing(+1)
        try:
            engine.wake()
            i = 0
            while i < len(pending):
                if pending[i].state is BatchState.DONE:
                    i += 1
                    continue
                thread = engine.io_thread
                if engine.fatal_error is not None or (thread is not None and not thread.is_alive()):
                    return
                wait_s = _MAX_WAIT_S
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        left = [b for b in pending[i:] if b.state is not BatchState.DONE]
                        raise KafkaTimeoutError(
                            f"flush() timed out after {timeout} s with {sum(b.record_count for b in left)} "
                            f"record(s) in {len(left)} batch(es) still pending",
                            stage="producer",
                        )
                    wait_s = min(wait_s, remaining)
                yield wait_s
        finally:
            engine.set_flushing(-1)

    def transaction_steps(
        self, operation: TxnOperation, timeout: float | None
    ) -> Generator[float, None, None]:
        """Wait for a transactional operation (up to ``timeout`` s, default ``max.block.ms``); raise
        its error, or KafkaTimeoutError (the operation goes on: calling again waits for it)."""
        engine = self._engine
        timeout_s = engine.config.max_block_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + timeout_s
        while not operation.done:
            thread = engine.io_thread
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (thread is not None and not thread.is_alive()):
                raise transactional.timed_out(engine, operation, timeout_s)
            yield min(remaining, _MAX_WAIT_S)
        transactional.result(operation)
