"""``AsyncProducer``: the same engine on the caller's own asyncio loop.

Nothing crosses threads: serialization, partitioning and appends run in the
coroutine that calls ``send``/``enqueue``; the sender task runs on the same loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, NamedTuple

from kprod._core.accumulator import BatchState, ProducerBatch
from kprod._core.transactions import TransactionAbortableError, TxnOperation, TxnState
from kprod._io import transactional
from kprod._io.engine import WAIT_MEMORY, WAKE_SENDER, YIELD_GIL, ProducerEngine, Wait, wall_ms
from kprod._io.frontend import RecordPreparer, check_callback, check_partition
from kprod.config import ProducerConfig, check_supported
from kprod.errors import KafkaError, KafkaTimeoutError, KprodError, ProducerClosedError, RecordTooLargeError
from kprod.types import DeliveryCallback, RecordMetadata

__all__ = ["AsyncProducer"]

log = logging.getLogger("kprod.producer")

_time_ns = time.time_ns

_STARTED: set[AsyncProducer] = set()
"""Producers started and not closed yet, held until close(): at interpreter exit each still holding
records is reported (see _report_unclosed)."""


def _report_unclosed() -> None:
    """At interpreter exit: an AsyncProducer's loop has ended (``asyncio.run`` closes it), so its
    records can no longer be sent; say how many were lost, rather than nothing."""
    for producer in list(_STARTED):
        engine = producer._engine
        if engine is None or engine.forked:
            continue
        with engine.lock:
            lost = sum(b.record_count for b in engine.incomplete_batches())
        if lost:
            log.warning(
                "kprod AsyncProducer %s was never closed: %d record(s) were not delivered before its event "
                "loop ended and are lost. Use `async with AsyncProducer(...)` or `await producer.close()` "
                "(or `await producer.flush()`) before the loop ends",
                producer.config.client_id,
                lost,
            )


class _Pending(NamedTuple):
    """A serialized record on its way into a batch (enqueue's general path)."""

    topic: str
    partition: int | None
    ts: int
    key: bytes | None
    value: bytes | None
    headers: Any
    bound: int
    on_delivery: DeliveryCallback | None


class AsyncProducer:
    """A native asyncio Kafka producer with the settings of :class:`kprod.Producer`.

    Start it with ``async with AsyncProducer(...) as p`` or ``await p.start()``;
    the first ``send``/``enqueue`` starts it too. ``await send(...)`` waits for
    delivery; ``await enqueue(...)`` only waits for buffer space and returns a
    future of the delivery (the pipelined form for high rates).

    Close it (``await close()``, or ``async with``) before its loop ends: without the loop its
    records cannot be sent, and at interpreter exit a WARNING says how many were lost.
    """

    def __init__(self, config: Mapping[str, object] | None = None, **kwargs: object) -> None:
        self.config = ProducerConfig.from_user(config, **kwargs)
        check_supported(self.config)
        self._preparer = RecordPreparer(self.config)
        self._plain = self._preparer.fast
        """Raw bytes keys and values need no serializer call (enqueue() may take its fast path)."""
        self._engine: ProducerEngine | None = None
        self._closed = False
        self._gates: dict[str, list[Any]] = {}
        """Topics whose records wait (metadata or memory) -> [FIFO lock, tasks using it]: while a
        task waits, later enqueues of the topic queue behind it, so that records keep their order
        (a thread of the sync Producer keeps it by blocking; tasks need the queue)."""

    async def start(self) -> None:
        """Start the sender on the running loop (idempotent; does not wait for brokers)."""
        if self._engine is None:
            if self._closed:
                raise ProducerClosedError("start() after close()")
            engine = ProducerEngine(self.config, asyncio.get_running_loop())
            engine.start()
            self._engine = engine
            if not _STARTED:
                atexit.unregister(_report_unclosed)  # once, however many producers start and close
                atexit.register(_report_unclosed)
            _STARTED.add(self)

    async def _running_engine(self) -> ProducerEngine:
        if self._engine is None:
            await self.start()
        assert self._engine is not None
        return self._engine

    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Any = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> RecordMetadata:
        """Send one record and wait for its acknowledgement; returns its RecordMetadata.

        Raises the delivery error (KafkaError, KafkaTimeoutError, RecordTooLargeError, ...)
        or, before queueing, SerializationError / BufferExhaustedError / UnknownTopicError, and at
        once KafkaError for a refused topic (invalid name, no authorization) and KprodError for a
        ``partition`` that is not an int or an ``on_delivery`` that is not callable.

        Cancelling the awaiting task does not withdraw the record once it is queued: it is
        sent and may be written (as with Java's ``send`` and a cancelled ``Future``); only
        the wait ends. Cancelled while still waiting for metadata or buffer space, the
        record is not queued.
        """
        future = await self.enqueue(
            topic,
            value,
            key,
            partition=partition,
            timestamp=timestamp,
            headers=headers,
            on_delivery=on_delivery,
        )
        return await future

    async def enqueue(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Any = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record, waiting only for metadata and buffer space (up to ``max.block.ms``).

        Returns a future of the record's RecordMetadata. Raises as :meth:`send` does before
        queueing; ``on_delivery`` runs on the loop, after this call returned, for every outcome.
        """
        engine = self._engine
        if engine is None:
            engine = await self._running_engine()
        future: asyncio.Future[RecordMetadata] = engine.loop.create_future()
        # Raw bytes into an open batch: the engine's fast path, as in Producer.send.
        if (
            headers is None
            and timestamp is None
            and self._plain
            and not self._gates  # records of a topic that waits keep their order: the general way
            and (on_delivery is None or callable(on_delivery))  # else _send refuses it
        ):
            ts = _time_ns() // 1_000_000
            lock = engine.lock
            lock.acquire()
            try:
                batch = engine.try_append_plain(topic, partition, ts, key, value)
                if batch is not None:
                    index = batch.record_count - 1
                    batch.add_callback(index, future, ts)
                    if on_delivery is not None:
                        batch.add_callback(index, on_delivery, ts)
                    action = 0 if batch.accepting else engine.after_append_locked(batch)
            finally:
                lock.release()
            if batch is not None:
                if action:
                    await self._after_append(engine, action)
                return future
        return await self._enqueue(
            engine, future, topic, value, key, partition, timestamp, headers, on_delivery
        )

    async def _after_append(self, engine: ProducerEngine, action: int) -> None:
        """Act on ``ProducerEngine.after_append_locked``'s answer, the lock released."""
        if action & WAKE_SENDER:
            engine.wake()
        if action & YIELD_GIL:
            # Let the sender run (a batch is full and nothing is in flight, or answers have
            # waited a millisecond): a tight enqueue loop that never yields would fill
            # buffer.memory before anything is sent or acknowledged.
            await asyncio.sleep(0)

    async def _enqueue(
        self,
        engine: ProducerEngine,
        future: asyncio.Future[RecordMetadata],
        topic: str,
        value: Any,
        key: Any,
        partition: int | None,
        timestamp: int | None,
        headers: Any,
        on_delivery: DeliveryCallback | None,
    ) -> asyncio.Future[RecordMetadata]:
        """enqueue() in general: serializers, validation, new batches, waits for metadata or memory."""
        check_callback(on_delivery)
        partition = check_partition(partition)
        try:
            kb, vb, hdrs, ts, bound = self._preparer.prepare(topic, key, value, headers, timestamp, wall_ms())
        except RecordTooLargeError as error:  # only this record fails, delivered like any other outcome
            if on_delivery is not None:
                engine.deliver_failed(on_delivery, error)
            future.set_exception(error)
            return future
        pending = _Pending(topic, partition, ts, kb, vb, hdrs, bound, on_delivery)
        gate = self._gates.get(topic)
        if gate is None:  # nobody waits for this topic: try at once, and queue only if it must wait
            result = self._try_enqueue(engine, future, pending)
            if not isinstance(result, Wait):
                if result:
                    await self._after_append(engine, result)
                return future
            gate = self._gates[topic] = [asyncio.Lock(), 0]
        gate[1] += 1
        try:
            async with gate[0]:  # FIFO: tasks that wait append in the order they came
                await self._wait_and_enqueue(engine, future, pending)
        finally:
            gate[1] -= 1
            if gate[1] == 0 and self._gates.get(topic) is gate:
                del self._gates[topic]
        return future

    @staticmethod
    def _try_enqueue(
        engine: ProducerEngine, future: asyncio.Future[RecordMetadata], record: _Pending
    ) -> Wait | int:
        """One attempt to append, without waiting: what to wait for, or what
        ``after_append_locked`` asks the caller to do (0: nothing)."""
        with engine.lock:
            engine.check_open()
            result = engine.try_append_locked(
                record.topic,
                record.partition,
                record.ts,
                record.key,
                record.value,
                record.headers,
                record.bound,
            )
            if type(result) is Wait:
                return result
            assert isinstance(result, ProducerBatch)
            index = result.record_count - 1
            # The future itself, not a closure around it: deliver() settles futures directly.
            result.add_callback(index, future, record.ts)
            if record.on_delivery is not None:
                result.add_callback(index, record.on_delivery, record.ts)
            return engine.after_append_locked(result) if index == 0 or not result.accepting else 0

    async def _wait_and_enqueue(
        self, engine: ProducerEngine, future: asyncio.Future[RecordMetadata], record: _Pending
    ) -> None:
        """Append, waiting (up to max.block.ms) for metadata or memory."""
        start = time.monotonic()
        while True:
            result = self._try_enqueue(engine, future, record)
            if not isinstance(result, Wait):
                if result:
                    await self._after_append(engine, result)
                return
            if result is WAIT_MEMORY:
                with engine.lock:
                    engine.accumulator.memory_waiters += 1
            waited = time.monotonic_ns()
            remaining = engine.config.max_block_ms / 1000 - (time.monotonic() - start)
            try:
                if remaining <= 0:
                    raise engine.wait_error(result, record.topic, int((time.monotonic() - start) * 1000))
                engine.wake()
                waiter = engine.async_waiter()
                try:
                    await asyncio.wait_for(waiter, min(remaining, 0.5))
                except TimeoutError:
                    pass
            finally:
                if result is WAIT_MEMORY:
                    now_ns = time.monotonic_ns()
                    with engine.lock:
                        engine.accumulator.memory_waiters -= 1
                        engine.core.metrics.bufferpool_wait_ns.record(now_ns - waited, now_ns // 1_000_000)

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until it completed (up to ``timeout`` s; None: until done).

        Raises KafkaTimeoutError naming what is still pending when the timeout passes.
        """
        engine = self._engine
        if engine is None:
            return
        with engine.lock:
            pending = engine.incomplete_batches()
            if not pending:
                return
            engine.set_flushing(+1)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            engine.wake()
            for batch in pending:
                while batch.state is not BatchState.DONE:
                    if engine.fatal_error is not None:
                        return
                    wait_s = 0.5
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            left = [b for b in pending if b.state is not BatchState.DONE]
                            raise KafkaTimeoutError(
                                f"flush() timed out after {timeout} s with "
                                f"{sum(b.record_count for b in left)} record(s) in {len(left)} batch(es) pending",
                                stage="producer",
                            )
                        wait_s = min(wait_s, remaining)
                    try:
                        await asyncio.wait_for(engine.async_waiter(), wait_s)
                    except TimeoutError:
                        pass
        finally:
            with engine.lock:
                engine.set_flushing(-1)

    # -- transactions (see kprod.Producer for the semantics of each call) -----------------

    async def init_transactions(self, timeout: float | None = None) -> None:
        """Initialize the transactional producer (once, before the first transaction); waits up to
        ``timeout`` s (default ``max.block.ms``). See :meth:`kprod.Producer.init_transactions`."""
        engine = await self._running_engine()
        await self._wait_txn(
            transactional.start(engine, "init_transactions", lambda t: t.init_transactions()), timeout
        )

    async def begin_transaction(self) -> None:
        """Start a transaction (does not wait). See :meth:`kprod.Producer.begin_transaction`."""
        transactional.begin(await self._running_engine())

    async def send_offsets_to_transaction(
        self, offsets: transactional.OffsetsArg, group_metadata: object, timeout: float | None = None
    ) -> None:
        """Add a consumer group's offsets to the transaction. See
        :meth:`kprod.Producer.send_offsets_to_transaction`."""
        engine = await self._running_engine()
        offsets_map = transactional.offsets_of(offsets)
        group = transactional.group_metadata_of(group_metadata)
        operation = transactional.start(
            engine, "send_offsets_to_transaction", lambda t: t.send_offsets_to_transaction(offsets_map, group)
        )
        await self._wait_txn(operation, timeout)

    async def commit_transaction(self, timeout: float | None = None) -> None:
        """Flush and commit the transaction. See :meth:`kprod.Producer.commit_transaction`."""
        engine = await self._running_engine()
        await self._wait_txn(
            transactional.start(engine, "commit_transaction", lambda t: t.commit_transaction()), timeout
        )

    async def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the transaction. See :meth:`kprod.Producer.abort_transaction`."""
        engine = await self._running_engine()
        await self._wait_txn(
            transactional.start(engine, "abort_transaction", lambda t: t.abort_transaction()), timeout
        )

    @contextlib.asynccontextmanager
    async def transaction(self, timeout: float | None = None) -> AsyncIterator[AsyncProducer]:
        """``async with producer.transaction():`` commits on a normal exit and aborts when the block
        raises (see :meth:`kprod.Producer.transaction`)."""
        await self.begin_transaction()
        try:
            yield self
        except BaseException:
            await self._abort_quietly(timeout)
            raise
        try:
            await self.commit_transaction(timeout)
        except KafkaError:
            engine = self._engine
            if engine is not None and engine.txn is not None and engine.txn.state is TxnState.ABORTABLE_ERROR:
                await self._abort_quietly(timeout)
            raise
        except TransactionAbortableError:
            await self._abort_quietly(timeout)
            raise

    async def _abort_quietly(self, timeout: float | None) -> None:
        try:
            await self.abort_transaction(timeout)
        except KprodError as exc:
            log.warning("aborting the transaction failed too: %s", exc)

    async def _wait_txn(self, operation: TxnOperation, timeout: float | None) -> None:
        engine = self._engine
        assert engine is not None
        timeout_s = self.config.max_block_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + timeout_s
        while not operation.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise transactional.timed_out(engine, operation, timeout_s)
            try:
                await asyncio.wait_for(engine.async_waiter(), min(remaining, 0.5))
            except TimeoutError:
                pass
        transactional.result(operation)

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` s), fail what is left with ProducerClosedError, stop. Always returns."""
        if self._closed:
            return
        self._closed = True
        _STARTED.discard(self)
        engine = self._engine
        if engine is None:
            return
        with engine.lock:
            engine.begin_close()  # before the flush: every record it waits for was accepted before close()
        try:
            await self.flush(timeout)
        except KprodError:
            pass
        error = ProducerClosedError(
            f"close() was called and the record was not delivered within its timeout ({timeout} s)"
        )
        failed = await engine.shutdown(error)
        if failed:
            log.warning("close(): %d record(s) were not delivered in time and failed", failed)

    def metrics(self) -> dict[str, Any]:
        """A snapshot of the producer's internals (see :meth:`kprod.Producer.metrics`); empty before start."""
        engine = self._engine
        return {} if engine is None else engine.metrics()

    @property
    def live_address(self) -> tuple[str, int] | None:
        """(host, port) of the ``kprod.live.port`` endpoint (``kprod top --port PORT``); None when
        unset or before start()."""
        engine = self._engine
        endpoint = None if engine is None else engine.live_endpoint
        return None if endpoint is None else endpoint.address

    async def __aenter__(self) -> AsyncProducer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
