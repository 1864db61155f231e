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
from typing import Any

from kprod._core.accumulator import ProducerBatch
from kprod._core.appender import speedups_module as _speedups
from kprod._core.transactions import TransactionAbortableError, TxnOperation, TxnState
from kprod._io import transactional
from kprod._io.engine import WAKE_SENDER, YIELD_GIL, ProducerEngine, Wait, wall_ms
from kprod._io.frontend import RecordPreparer
from kprod._io.send_path import SendPath, Steps
from kprod.config import ProducerConfig, check_supported
from kprod.errors import KafkaError, KprodError, ProducerClosedError, RecordTooLargeError
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
        self._path: SendPath | None = None
        self._closed = False
        self._fast_enqueue: Any = None
        """The compiled enqueue fast path (kprod._speedups.FastEnqueue) once started, or None."""
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
            self._path = SendPath(engine, self._preparer)
            appender = engine.try_append_plain
            if self._plain and _speedups is not None and type(appender) is _speedups.PlainAppender:
                self._fast_enqueue = _speedups.fast_enqueue(
                    appender=appender,
                    lock=engine.lock,
                    after_append_locked=engine.after_append_locked,
                    create_future=engine.loop.create_future,
                    batch_type=ProducerBatch,
                )
                engine.after_fork.append(self._drop_fast_enqueue)
            if not _STARTED:
                atexit.unregister(_report_unclosed)  # once, however many producers start and close
                atexit.register(_report_unclosed)
            _STARTED.add(self)

    def _drop_fast_enqueue(self) -> None:
        """In a forked child: the compiled path holds the parent's lock; the general path raises."""
        self._fast_enqueue = None

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
        fast = self._fast_enqueue
        if fast is not None:
            # In C: the default serializers' bytes and str, int timestamps, common header forms; a
            # topic that waits keeps its order (the general way). What it refuses, the Python
            # branch below would refuse too: straight to the general path.
            if not self._gates:
                got = fast(topic, value, key, partition, timestamp, headers, on_delivery)
                if got is not None:
                    if type(got) is tuple:
                        await self._after_append(engine, got[1])
                        return got[0]  # type: ignore[no-any-return]
                    return got  # type: ignore[no-any-return]
            future: asyncio.Future[RecordMetadata] = engine.loop.create_future()
            return await self._enqueue(
                engine, future, topic, value, key, partition, timestamp, headers, on_delivery
            )
        future = engine.loop.create_future()
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
        """enqueue() in general (the shared SendPath): serializers, validation, new batches, waits."""
        path = self._path
        assert path is not None
        record = path.prepare(topic, value, key, partition, timestamp, headers, on_delivery, wall_ms())
        if isinstance(record, RecordTooLargeError):  # only this record fails, delivered like any other
            future.set_exception(record)
            return future
        gate = self._gates.get(topic)
        if gate is None:  # nobody waits for this topic: try at once, and queue only if it must wait
            with engine.lock:
                appended = path.append_locked(record, future)
            if type(appended) is not Wait:
                action = appended[2]  # type: ignore[index]
                if action:
                    await self._after_append(engine, action)
                return future
            gate = self._gates[topic] = [asyncio.Lock(), 0]
        gate[1] += 1
        try:
            async with gate[0]:  # FIFO: tasks that wait append in the order they came
                with engine.lock:
                    appended = path.append_locked(record, future)
                if isinstance(appended, Wait):
                    appended = await self._await_steps(engine, path.append_steps(record, appended, future))
                action = appended[2]
                if action:
                    await self._after_append(engine, action)
        finally:
            gate[1] -= 1
            if gate[1] == 0 and self._gates.get(topic) is gate:
                del self._gates[topic]
        return future

    @staticmethod
    async def _await_steps(engine: ProducerEngine, steps: Steps) -> Any:
        """Run ``steps`` (taking the lock for each) on this facade's wait primitive: the engine's
        async waiter, resolved at its next notification."""
        try:
            while True:
                with engine.lock:
                    try:
                        wait_s = next(steps)
                    except StopIteration as done:
                        return done.value
                try:
                    await asyncio.wait_for(engine.async_waiter(), wait_s)
                except TimeoutError:
                    pass
        finally:
            with engine.lock:
                steps.close()

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until it completed (up to ``timeout`` s; None: until done).

        Raises KafkaTimeoutError naming what is still pending when the timeout passes.
        """
        engine = self._engine
        if engine is None:
            return
        assert self._path is not None
        await self._await_steps(engine, self._path.flush_steps(timeout))

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
        engine, path = self._engine, self._path
        assert engine is not None and path is not None
        await self._await_steps(engine, path.transaction_steps(operation, timeout))

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` s), fail what is left with ProducerClosedError, stop. Always returns."""
        if self._closed:
            return
        self._closed = True
        _STARTED.discard(self)
        engine = self._engine
        if engine is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with engine.lock:
            engine.begin_close()  # before the flush: every record it waits for was accepted before close()
        try:
            await self.flush(timeout)
        except KprodError:
            pass
        error = ProducerClosedError(
            f"close() was called and the record was not delivered within its timeout ({timeout} s)"
        )
        failed = await engine.shutdown(error, deadline)
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
