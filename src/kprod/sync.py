"""The synchronous, thread-safe ``Producer``: a private asyncio loop on one daemon thread.

Callers' threads serialize, partition and append records themselves under the
engine's lock (no per-record thread hop); the I/O thread only sends batches
and delivers completions. ``on_delivery`` callbacks and ``add_done_callback``
functions run on the I/O thread: keep them short, and do not block in them.

Why one module of about 750 lines: the ``Producer`` facade and its ``RecordFuture`` are one public
class each with their docstrings, the raw-bytes fast path inlined on purpose (see ``send``), and
``send_batch``; everything they share with ``AsyncProducer`` is in ``_io/send_path.py`` and
``_io/transactional.py``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

from kprod._core.accumulator import BatchState, ProducerBatch, record_size_upper_bound
from kprod._core.appender import speedups_module as _speedups
from kprod._core.transactions import TransactionAbortableError, TxnOperation, TxnState
from kprod._io import transactional
from kprod._io.delivery import record_error, record_metadata
from kprod._io.engine import WAKE_SENDER, YIELD_GIL, ProducerEngine, Wait
from kprod._io.frontend import RecordPreparer, check_callback, check_partition, check_records
from kprod._io.send_path import PreparedRecord, SendPath, Steps
from kprod.config import ProducerConfig, check_supported
from kprod.errors import (
    BufferExhaustedError,
    KafkaError,
    KafkaTimeoutError,
    KprodError,
    ProducerClosedError,
    RecordTooLargeError,
    UnknownTopicError,
)
from kprod.types import DeliveryCallback, RecordMetadata

__all__ = ["DeliveryCallback", "Producer", "RecordFuture"]

_RECORD_OVERHEAD_BOUND = record_size_upper_bound(None, None, None)

_time_ns = time.time_ns
_sleep = time.sleep
_monotonic_ns = time.monotonic_ns

_BATCH_CHUNK = 2048
"""send_batch holds the lock for at most this many records, so the I/O thread keeps up."""


def _unpack_record(record: Any) -> tuple[Any, Any, Any, int | None, int | None]:
    """(value, key, headers, partition, timestamp) of one send_batch item."""
    if isinstance(record, tuple):
        n = len(record)
        if not 1 <= n <= 5:
            raise KprodError(
                f"a send_batch tuple has 1 to 5 items (value, key, headers, partition, timestamp), got {n}",
                stage="record creation",
            )
        padded = record + (None,) * (5 - n)
        return padded[0], padded[1], padded[2], padded[3], padded[4]
    if isinstance(record, Mapping):
        unknown = set(record) - {"value", "key", "headers", "partition", "timestamp"}
        if unknown:
            raise KprodError(f"unknown send_batch record field(s) {sorted(unknown)}", stage="record creation")
        return (
            record.get("value"),
            record.get("key"),
            record.get("headers"),
            record.get("partition"),
            record.get("timestamp"),
        )
    return record, None, None, None, None


"""record_size_upper_bound() of a record without headers, less its key and value bytes."""

log = logging.getLogger("kprod.producer")


_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0

_OPEN_PRODUCERS: weakref.WeakSet[Producer] = weakref.WeakSet()
"""Producers not closed yet: flushed at interpreter exit (``kprod.exit.flush.timeout.ms``). The I/O
thread's target holds its producer, so a producer stays here until close() even if the caller
dropped every reference to it."""
_exit_hook_registered = False
_exit_hook_lock = threading.Lock()


def _register_exit_hook() -> None:
    """Register :func:`_close_open_producers` once, at the first producer: atexit runs hooks last
    registered first, so it runs before the hooks of what the program set up before (an embedded
    broker started first is still up while its producers flush)."""
    global _exit_hook_registered
    with _exit_hook_lock:
        if not _exit_hook_registered:
            atexit.register(_close_open_producers)
            _exit_hook_registered = True


def _close_open_producers() -> None:
    """At interpreter exit (non-daemon threads have ended; the daemon I/O threads still run): close
    every open producer, giving its records ``kprod.exit.flush.timeout.ms`` to be delivered, and say
    how many were not: a script that sends and exits without flush() or close() would otherwise
    lose them without a word."""
    for producer in list(_OPEN_PRODUCERS):
        try:
            producer._close_at_exit()
        except Exception:  # pragma: no cover - the next producer must still get its turn
            log.exception("closing a kprod producer at interpreter exit failed")


class _BatchWaiter:
    """A one-shot event for a batch's completion: a bare lock, lighter than threading.Event.

    Held from creation; ``set()`` releases it; each waiter takes it and gives it back at once,
    so any number of threads wake.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        if not self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            return False
        self._lock.release()
        return True


class RecordFuture:
    """The outcome of one ``send()``: a thin view (batch, index) on the record's batch.

    Mirrors ``concurrent.futures.Future``: ``result(timeout=None)``,
    ``exception(timeout=None)``, ``done()``, ``add_done_callback(fn)``.
    Created once per record, so it holds three slots (batch, index, timestamp) and has
    no ``__init__``: each producer makes its own subclass whose class attribute
    ``_engine`` names it.
    """

    __slots__ = ("_batch", "_index", "_timestamp")
    _engine: ProducerEngine | None = None
    _error: BaseException | None = None

    _batch: ProducerBatch | None
    _index: int
    _timestamp: int  # the record's CreateTime (ms)

    @classmethod
    def failed(cls, error: BaseException) -> RecordFuture:
        """A future that already failed (the record never entered a batch)."""
        future = _FailedRecordFuture()
        future._batch = None
        future._index = -1
        future._timestamp = -1
        future._error = error
        return future

    def done(self) -> bool:
        """True once the record was acknowledged or failed. Never blocks."""
        batch = self._batch
        return batch is None or batch.state is BatchState.DONE

    def _wait(self, timeout: float | None) -> None:
        batch = self._batch
        if batch is None or batch.state is BatchState.DONE:
            return
        engine = self._engine
        assert engine is not None
        if engine.forked and engine.fatal_error is not None:
            raise engine.fatal_error
        if threading.current_thread() is engine.io_thread:
            raise KprodError(
                "result() was called on the producer's I/O thread (from a delivery callback) for a record "
                "that is not done: it would wait forever. Use on_delivery or add_done_callback instead",
                stage="producer",
            )
        event = batch.waiter
        if event is None:  # every batch _send/send_batch open gets one; kept for any other opener
            with engine.lock:
                if batch.done:  # completed while we took the lock
                    return
                event = batch.waiter
                if event is None:
                    event = batch.waiter = _BatchWaiter()
        if not event.wait(timeout):
            raise KafkaTimeoutError(
                f"result() timed out after {timeout} s; the record is still pending and will complete "
                "(at the latest after delivery.timeout.ms)",
                stage="producer",
            )

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait up to ``timeout`` seconds (None: until done) and return where the record was written.

        Raises the delivery error, or KafkaTimeoutError if ``timeout`` passes first.
        Every record completes within ``delivery.timeout.ms``, so ``None`` is bounded.
        """
        self._wait(timeout)
        error = self._error if self._batch is None else record_error(self._batch, self._index)
        if error is not None:
            raise error
        assert self._batch is not None
        return record_metadata(self._batch, self._index, self._timestamp)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait like :meth:`result`, then return the delivery error or None."""
        self._wait(timeout)
        return self._error if self._batch is None else record_error(self._batch, self._index)

    def add_done_callback(self, fn: Callable[[RecordFuture], None]) -> None:
        """Call ``fn(self)`` when done (at once, in this thread, if already done; else on the I/O thread)."""
        batch = self._batch
        engine = self._engine
        if batch is not None and engine is not None:
            with engine.lock:
                if batch.state is not BatchState.DONE:
                    batch.add_callback(self._index, lambda _md, _err: fn(self), self._timestamp)
                    return
        try:
            fn(self)
        except Exception:
            log.exception("a done-callback raised")

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<RecordFuture {state}>"


class _FailedRecordFuture(RecordFuture):
    """A record that never entered a batch, with its error."""

    __slots__ = ("_error",)


class Producer:
    """A synchronous, thread-safe Kafka producer.

    ``Producer(config: dict | None = None, **kwargs)``: Kafka property names in
    ``config`` (``"linger.ms"``), underscores as keywords (``linger_ms=``).
    ``bootstrap.servers`` is required. Unknown or invalid settings raise
    :class:`~kprod.errors.ConfigError`. Defaults are the Java 4.x producer's:
    acks=all, idempotence on, linger.ms=5, buffer.memory=32 MiB,
    max.block.ms=60000, max.request.size=1 MiB, request.timeout.ms=30000,
    delivery.timeout.ms=120000; but for batch.size, 131072 bytes (Java: 16384),
    since each batch costs kprod far more than it costs Java (see
    docs/buffering-and-batching.md).
    """

    def __init__(self, config: Mapping[str, object] | None = None, **kwargs: object) -> None:
        self.config = ProducerConfig.from_user(config, **kwargs)
        check_supported(self.config)
        self._preparer = RecordPreparer(self.config)
        self._plain = self._preparer.fast
        """Raw bytes keys and values need no serializer call (send() may take its fast path)."""
        self._linger_ms = self.config.linger_ms
        self._loop = asyncio.new_event_loop()
        try:
            self._engine = ProducerEngine(self.config, self._loop)
        except BaseException:
            self._loop.close()  # else "unclosed event loop" ResourceWarning and its fds until GC
            raise
        self._lock = self._engine.lock
        self._engine.after_fork.append(self._after_fork)
        self._append_plain = self._engine.try_append_plain
        self._path = SendPath(self._engine, self._preparer, _BatchWaiter)
        # This producer's futures: a subclass whose class attribute is the engine, so a future
        # is created with two slot stores and no __init__ (it is made once per record).
        self._future_type: type[RecordFuture] = type(
            "RecordFuture", (RecordFuture,), {"__slots__": (), "_engine": self._engine}
        )
        self._install_fast_send()
        self._closed = False
        self._close_lock = threading.Lock()
        started = threading.Event()
        _register_exit_hook()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._engine.start()
            self._loop.call_soon(started.set)
            try:
                self._loop.run_forever()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name=f"kprod-io-{self.config.client_id}", daemon=True)
        self._engine.io_thread = self._thread
        self._thread.start()
        if not started.wait(_START_TIMEOUT_S):  # pragma: no cover - the loop thread failed to start
            raise KprodError("the producer's I/O thread did not start", stage="producer")
        _OPEN_PRODUCERS.add(self)

    def _after_fork(self) -> None:
        self._lock = self._engine.lock  # the engine's new lock (see ProducerEngine.forked_into_child)
        self._install_fast_send()

    def _install_fast_send(self) -> None:
        """With the compiled fast path (``kprod._speedups``) and the default serializers,
        ``self.send`` becomes its ``FastSend``: :meth:`send`'s first branch in C, which calls
        :meth:`_send` for every other record and :meth:`send` itself for any call it does not parse
        (so errors and the signature are the Python method's). Not when a subclass has its own
        ``send``: an instance attribute would hide it."""
        vars(self).pop("send", None)
        appender = self._append_plain
        if not self._plain or _speedups is None or type(appender) is not _speedups.PlainAppender:
            return
        if type(self).send is not Producer.send:
            return
        vars(self)["send"] = _speedups.fast_send(
            appender=appender,
            lock=self._lock,
            after_append_locked=self._engine.after_append_locked,
            after_append=self._after_append,
            fallback=self._send,
            fallback_general=types.MethodType(Producer.send, self),
            future_type=self._future_type,
        )

    # -- sending ------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Any = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> RecordFuture:
        """Queue one record and return its future. Thread-safe.

        ``value=None`` is a tombstone. ``timestamp`` is ms since the epoch (default: now).
        ``headers``: (str, bytes|str|None) pairs or a mapping. ``on_delivery(metadata, error)``
        runs on the I/O thread when the record is acknowledged or fails.

        Blocks up to ``max.block.ms`` while the topic's metadata is unknown or
        ``buffer.memory`` is full, then raises UnknownTopicError / BufferExhaustedError.
        Raises at once: KafkaError (INVALID_TOPIC_EXCEPTION, TOPIC_AUTHORIZATION_FAILED, ...) for
        a topic that is not a valid name or that the brokers refused; KprodError for a
        ``partition`` that is not an int or an ``on_delivery`` that is not callable;
        SerializationError for a value the serializer rejects; ProducerClosedError after
        close(). A record too large for ``max.request.size`` fails alone: its future fails with
        RecordTooLargeError (and its ``on_delivery`` runs on the I/O thread, like every outcome).
        """
        # The common case, raw bytes with the default serializers into an open batch, in two
        # frames; try_append_plain checks the rest of the arguments.
        if (
            headers is None
            and timestamp is None
            and self._plain
            and (on_delivery is None or callable(on_delivery))  # else _send refuses it
        ):
            ts = _time_ns() // 1_000_000
            lock = self._lock
            lock.acquire()  # not ``with``: acquire/release calls cost half as much
            try:
                batch = self._append_plain(topic, partition, ts, key, value)
                if batch is not None:
                    index = batch.record_count - 1
                    if on_delivery is not None:
                        batch.add_callback(index, on_delivery, ts)
                    action = 0 if batch.accepting else self._engine.after_append_locked(batch)
            finally:
                lock.release()
            if batch is not None:
                if action:
                    self._after_append(action)
                # self._future(batch, index, ts), inlined: this runs for every record.
                future = self._future_type()
                future._batch = batch
                future._index = index
                future._timestamp = ts
                return future
        return self._send(topic, value, key, partition, timestamp, headers, on_delivery)

    def _send(
        self,
        topic: str,
        value: Any,
        key: Any,
        partition: int | None,
        timestamp: int | None,
        headers: Any,
        on_delivery: DeliveryCallback | None,
    ) -> RecordFuture:
        """send() in general (the shared SendPath): serializers, validation, new batches, waits."""
        path = self._path
        record = path.prepare(
            topic, value, key, partition, timestamp, headers, on_delivery, _time_ns() // 1_000_000
        )
        if isinstance(record, RecordTooLargeError):
            return RecordFuture.failed(record)
        with self._lock:
            appended = path.append_locked(record)
            if type(appended) is Wait:
                appended = self._wait_locked(record, appended)
        batch, index, action = appended  # type: ignore[misc]
        if action:
            self._after_append(action)
        future = self._future_type()
        future._batch = batch
        future._index = index
        future._timestamp = record[2]  # its timestamp_ms
        return future

    def _future(self, batch: ProducerBatch, index: int, timestamp_ms: int) -> RecordFuture:
        """The future of record ``index`` of ``batch`` (send() builds the same inline)."""
        future = self._future_type()
        future._batch = batch
        future._index = index
        future._timestamp = timestamp_ms
        return future

    def send_batch(
        self,
        topic: str,
        records: Iterable[Any],
        *,
        on_delivery: DeliveryCallback | None = None,
    ) -> list[RecordFuture]:
        """Queue many records for one topic at once; return one future per record, in order.

        Each record is a value (bytes, str or what ``value.serializer`` takes), a tuple
        ``(value, key[, headers[, partition[, timestamp]]])``, or a mapping with any of
        ``value``, ``key``, ``headers``, ``partition``, ``timestamp``. The lock and the clock
        are taken once per chunk, and records without headers take the same fast append as
        :meth:`send`; with kprod's C extension :meth:`send` itself is about as cheap
        (0.4-0.7 µs per record either way), without it this is the cheaper call.

        Errors are per record: a record that fails serialization, is too large or names a
        partition that does not exist gets a failed future (and its ``on_delivery`` call);
        the others go on. If ``buffer.memory`` stays full for ``max.block.ms``, that record
        and every record after it get a failed future with BufferExhaustedError (nothing
        after it is queued, so order is kept); records before it are queued and unaffected.
        ``on_delivery`` calls, failures included, run on the I/O thread, as for :meth:`send`.
        Raises ProducerClosedError; KprodError at once when ``records`` is a str, bytes or mapping
        (each would iterate into one record per element) or ``on_delivery`` is not callable;
        before anything is queued, KafkaError when the topic is refused (an invalid name, no
        authorization) and UnknownTopicError after ``max.block.ms`` when it never appears.
        """
        check_records(records)
        check_callback(on_delivery)
        preparer = self._preparer
        engine = self._engine
        items: list[PreparedRecord | RecordFuture] = []
        ts_now = time.time_ns() // 1_000_000
        limit = preparer.limit_bytes
        fast = preparer.fast
        prepare = preparer.prepare
        overhead = _RECORD_OVERHEAD_BOUND
        path = self._path
        for record in records:
            if fast and type(record) is bytes:  # the common case: a bare value
                bound = overhead + len(record)
                if bound <= limit:
                    items.append((topic, None, ts_now, None, record, None, bound, on_delivery))
                    continue
            try:
                # SendPath.prepare without its per-call checks of on_delivery (done once above).
                value, key, headers, partition, timestamp = _unpack_record(record)
                if partition is not None and type(partition) is not int:
                    partition = check_partition(partition)
                kb, vb, hdrs, ts, bound = prepare(topic, key, value, headers, timestamp, ts_now)
            except KprodError as exc:  # a too large record too: it fails alone, delivered like any outcome
                if on_delivery is not None:
                    engine.deliver_failed(on_delivery, exc)
                items.append(RecordFuture.failed(exc))
                continue
            items.append((topic, partition, ts, kb, vb, hdrs, bound, on_delivery))
        futures: list[RecordFuture] = []
        future_type = self._future_type
        append_plain = self._append_plain
        position = 0
        total = len(items)
        while position < total:
            action = 0
            with engine.lock:
                if not engine.accepting:
                    engine.check_open()
                stop = min(total, position + _BATCH_CHUNK)
                while position < stop:
                    item = items[position]
                    if isinstance(item, RecordFuture):
                        futures.append(item)
                        position += 1
                        continue
                    if item[5] is None:  # no headers: the fast append first, as send() (C when built)
                        batch = append_plain(item[0], item[1], item[2], item[3], item[4])
                        if batch is not None:
                            index = batch.record_count - 1
                            if on_delivery is not None:
                                batch.add_callback(index, on_delivery, item[2])
                            if not batch.accepting:
                                action |= engine.after_append_locked(batch)
                            future = future_type()
                            future._batch = batch
                            future._index = index
                            future._timestamp = item[2]
                            futures.append(future)
                            position += 1
                            continue
                    try:
                        appended = path.append_locked(item)
                        if type(appended) is Wait:
                            appended = self._wait_locked(item, appended)
                    except UnknownTopicError:
                        raise
                    except BufferExhaustedError as exc:
                        for _ in range(position, total):
                            if on_delivery is not None:
                                engine.deliver_failed(on_delivery, exc)
                            futures.append(RecordFuture.failed(exc))
                        position = total
                        break
                    except ProducerClosedError:
                        raise
                    except KprodError as exc:  # a bad explicit partition, a failing custom partitioner
                        if exc.stage == "metadata" and position == 0:  # the topic was refused: so is
                            raise  # every record, and none is queued yet
                        if on_delivery is not None:
                            engine.deliver_failed(on_delivery, exc)
                        futures.append(RecordFuture.failed(exc))
                        position += 1
                        continue
                    batch, index, after = appended  # type: ignore[misc]
                    if after:
                        action |= after
                    future = future_type()
                    future._batch = batch
                    future._index = index
                    future._timestamp = item[2]  # its timestamp_ms
                    futures.append(future)
                    position += 1
            if action & WAKE_SENDER:
                engine.wake()
        return futures

    def _after_append(self, action: int) -> None:
        """Act on ``ProducerEngine.after_append_locked``'s answer, the lock released."""
        if action & WAKE_SENDER:
            self._engine.wake()
        if action & YIELD_GIL:
            # Let the I/O thread have the GIL now: CPython hands it to a waiting thread only
            # after the switch interval (5 ms), and meanwhile answers sit unread and the
            # buffer fills faster than it drains (latency in seconds).
            _sleep(0)

    def _wait_locked(self, record: PreparedRecord, reason: Wait) -> tuple[ProducerBatch, int, int]:
        """Block (lock held, released while waiting) until the record fits or max.block.ms passes:
        what ``SendPath.append_locked`` returns."""
        engine = self._engine
        if threading.current_thread() is self._thread:  # a delivery callback: nothing would free room
            raise engine.wait_error(reason, record[0], 0)
        appended: tuple[ProducerBatch, int, int] = self._block_locked(self._path.append_steps(record, reason))
        return appended

    def _block_locked(self, steps: Steps) -> Any:
        """Run ``steps`` (lock held) on this facade's wait primitive: the engine's condition."""
        engine = self._engine
        engine.sync_waiters += 1
        try:
            while True:
                try:
                    wait_s = next(steps)
                except StopIteration as done:
                    return done.value
                engine.cond.wait(wait_s)
        finally:
            steps.close()
            engine.sync_waiters -= 1

    # -- flush and close ------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now (ignoring linger.ms) and wait until it all completed.

        Waits up to ``timeout`` seconds (None: until done, which delivery.timeout.ms
        bounds). Raises KafkaTimeoutError naming what is still pending if the
        timeout passes. Records that failed do not make flush() raise: their
        futures and callbacks carry the errors.
        """
        engine = self._engine
        if engine.forked and engine.fatal_error is not None:
            raise engine.fatal_error
        if threading.current_thread() is self._thread:
            raise KprodError("flush() cannot be called from a delivery callback (the I/O thread)")
        with engine.cond:
            self._block_locked(self._path.flush_steps(timeout))

    # -- transactions -------------------------------------------------------------------

    def init_transactions(self, timeout: float | None = None) -> None:
        """Initialize a transactional producer (``transactional.id`` set): find its coordinator, get
        a producer id and epoch, and fence any earlier producer with the same ``transactional.id``
        (its open transaction is aborted). Call once, before the first transaction.

        Blocks up to ``timeout`` seconds (default ``max.block.ms``).

        :raises KafkaTimeoutError: if it did not finish in time (it goes on: call it again).
        :raises ConfigError: without ``transactional.id``.
        :raises KafkaError: a fatal answer (transactional id not authorized, ...).
        """
        self._wait_txn(
            transactional.start(self._engine, "init_transactions", lambda t: t.init_transactions()), timeout
        )

    def begin_transaction(self) -> None:
        """Start a transaction: records sent from now until commit or abort belong to it. Does not block.

        :raises InvalidTxnStateError: before ``init_transactions()`` or inside a transaction.
        :raises TransactionAbortableError: if the previous transaction must be aborted first.
        :raises ProducerFencedError: if another producer took over this ``transactional.id``.
        """
        transactional.begin(self._engine)

    def send_offsets_to_transaction(
        self, offsets: transactional.OffsetsArg, group_metadata: object, timeout: float | None = None
    ) -> None:
        """Add a consumer group's offsets to the transaction (consume-transform-produce): they are
        committed if and only if the transaction is.

        :param offsets: the next offsets to consume, ``{(topic, partition): offset}``,
            ``{TopicPartition: offset}`` or a list of confluent-kafka ``TopicPartition`` with offsets.
        :param group_metadata: ``consumer.consumer_group_metadata()`` of a confluent-kafka consumer,
            or :class:`kprod.ConsumerGroupMetadata`.
        :param timeout: seconds to block (default ``max.block.ms``).
        :raises KafkaTimeoutError: if it did not finish in time.
        :raises TransactionAbortableError: e.g. the group rebalanced (abort, then process again).
        """
        offsets_map = transactional.offsets_of(offsets)
        group = transactional.group_metadata_of(group_metadata)
        operation = transactional.start(
            self._engine,
            "send_offsets_to_transaction",
            lambda t: t.send_offsets_to_transaction(offsets_map, group),
        )
        self._wait_txn(operation, timeout)

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Send every record of the transaction, wait for their acknowledgements, and commit.

        Blocks up to ``timeout`` seconds (default ``max.block.ms``). A commit that timed out goes
        on: calling ``commit_transaction()`` again waits for the same commit.

        :raises TransactionAbortableError: (or the record's error) if a record of the transaction
            failed: call ``abort_transaction()``, then the producer can begin a new transaction.
        :raises ProducerFencedError: another producer took over this ``transactional.id``: close.
        :raises KafkaTimeoutError: if it did not finish in time.
        """
        self._wait_txn(
            transactional.start(self._engine, "commit_transaction", lambda t: t.commit_transaction()), timeout
        )

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the transaction: records not sent yet fail, sent ones are never visible to
        ``read_committed`` consumers. Blocks up to ``timeout`` seconds (default ``max.block.ms``).

        :raises ProducerFencedError: another producer took over this ``transactional.id``: close.
        :raises KafkaTimeoutError: if it did not finish in time (call it again to keep waiting).
        """
        self._wait_txn(
            transactional.start(self._engine, "abort_transaction", lambda t: t.abort_transaction()), timeout
        )

    @contextlib.contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[Producer]:
        """``with producer.transaction():`` begins a transaction, commits it when the block ends
        normally and aborts it when the block raises (the exception then propagates). A commit
        that fails with an abortable error is aborted too before its error propagates.
        """
        self.begin_transaction()
        try:
            yield self
        except BaseException:
            self._abort_quietly(timeout)
            raise
        try:
            self.commit_transaction(timeout)
        except TransactionAbortableError:
            self._abort_quietly(timeout)
            raise
        except KafkaError:
            if self._engine.txn is not None and self._engine.txn.state is TxnState.ABORTABLE_ERROR:
                self._abort_quietly(timeout)
            raise

    def _abort_quietly(self, timeout: float | None) -> None:
        try:
            self.abort_transaction(timeout)
        except KprodError as exc:
            log.warning("aborting the transaction failed too: %s", exc)

    def _wait_txn(self, operation: TxnOperation, timeout: float | None) -> None:
        engine = self._engine
        if threading.current_thread() is self._thread:
            raise KprodError(f"{operation.name}() cannot be called from a delivery callback (the I/O thread)")
        with engine.cond:
            self._block_locked(self._path.transaction_steps(operation, timeout))

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop. Always returns.

        Waits up to ``timeout`` seconds (None: until every record completed,
        bounded by delivery.timeout.ms) for pending records; those still pending
        then fail with ProducerClosedError, and a warning logs how many. Sends
        from the moment close() starts (from other threads too) raise
        ProducerClosedError; every record accepted before it gets the whole
        ``timeout``. Safe to call twice.

        A producer still open when the interpreter exits is closed then, with
        ``kprod.exit.flush.timeout.ms`` (default 5000 ms) as its timeout, and a WARNING says how
        many records it could not deliver.
        """
        failed = self._close(timeout)
        if failed:
            log.warning("close(): %d record(s) were not delivered in time and failed", failed)

    def _close_at_exit(self) -> None:
        """close() at interpreter exit, with ``kprod.exit.flush.timeout.ms`` (see _close_open_producers)."""
        timeout_ms = self.config.kprod_exit_flush_timeout_ms
        failed = self._close(timeout_ms / 1000)
        if failed:
            log.warning(
                "kprod producer %s was still open at interpreter exit: %d record(s) could not be "
                "delivered within kprod.exit.flush.timeout.ms=%d and are lost. Call flush() or close() "
                "before the program ends (or raise kprod.exit.flush.timeout.ms)",
                self.config.client_id,
                failed,
                timeout_ms,
            )

    def _close(self, timeout: float | None) -> int:
        """close(): returns how many records failed because their time ran out (0 if already closed)."""
        with self._close_lock:
            if self._closed:
                return 0
            self._closed = True
        _OPEN_PRODUCERS.discard(self)
        engine = self._engine
        if engine.forked:
            return 0  # the child has no I/O thread to stop; the parent's producer is untouched
        # Refuse new records first, then flush: a record accepted while the flush ran (another
        # thread still sending) would otherwise fail at once, told that its timeout had passed.
        deadline = None if timeout is None else time.monotonic() + timeout
        with engine.lock:
            engine.begin_close()
        try:
            if self._thread.is_alive():
                try:
                    self.flush(timeout)
                except KafkaTimeoutError:
                    pass
                except KprodError:
                    pass
        finally:
            error = ProducerClosedError(
                f"close() was called and the record was not delivered within its timeout ({timeout} s)"
            )
            failed = 0
            try:
                future = asyncio.run_coroutine_threadsafe(engine.shutdown(error, deadline), self._loop)
                failed = future.result(_STOP_TIMEOUT_S)
            except Exception as exc:  # the loop is gone or stuck: nothing more can be delivered
                log.warning("kprod producer shutdown did not complete cleanly: %r", exc)
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
            except RuntimeError:
                pass
            self._thread.join(_STOP_TIMEOUT_S)
        return failed

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- introspection --------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """A snapshot of the producer's internals: buffer use, batches, in-flight requests, brokers."""
        return self._engine.metrics()

    @property
    def live_address(self) -> tuple[str, int] | None:
        """(host, port) of the ``kprod.live.port`` endpoint (``kprod top --port PORT``), or None when unset."""
        endpoint = self._engine.live_endpoint
        return None if endpoint is None else endpoint.address
