"""The producer engine: the pure core pumped on one asyncio loop, and the lock the callers share.

Owns *when* and *over which socket*: the sender loop (``_pump``, one round per call, rescheduled
by wake-ups and one timer) asks the core what to send (:meth:`SenderCore.poll`), writes produce
requests and reads their answers, refreshes metadata, obtains a producer id, sends the
transaction manager's requests, enforces ``request.timeout.ms``, and hands completions to
``_io/delivery.py``. It holds the one lock that guards the core, and the hooks of the append path
that callers run in their own thread (``_io/send_path.py``, ``_core/appender.py``).

Around it, each in its own module: broker connections and their backoffs
(``_io/connections.py``), delivery of outcomes (``_io/delivery.py``), the transactional requests'
wire mapping (``_io/txn_exchange.py``), metrics and statistics (``_io/statistics.py``).

Why one module of about 1,000 lines: what is left here is the state of the loop itself (wake-ups,
the timer, requests awaiting answers, the producer-id and transactional requests in flight) and
every method that reads or writes it; split further, each part would reach into the others'
attributes, which is what the split above removed.

Threading: every core call happens under ``self.lock``. Callers (any thread)
append under the lock and wake the loop only when a batch becomes full or a
new batch needs its linger timer; the loop thread does everything else.
Completions are delivered on the loop thread, outside the lock.

Invariants:
* If the sender task dies, every pending batch fails with the cause and every
  later send raises it (``fatal_error``).
* ``next_wakeup_ms`` is published under the lock by each poll, so a caller that
  appends after a poll knows whether the loop will look again in time.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from kprod._core.accumulator import (
    ProducerBatch,
    RecordAccumulator,
)
from kprod._core.appender import WAIT_MEMORY, WAIT_METADATA, PlainAppender, RecordAppender, Wait
from kprod._core.metadata import ClusterMetadata
from kprod._core.sender import ProduceRequestPlan, SenderCore, SenderSettings
from kprod._core.transactions import (
    CoordinatorType,
    TransactionManager,
    TxnRequest,
    TxnRequestKind,
)
from kprod._io.connection import BrokerConnection, ResponseCallback, WrittenCallback
from kprod._io.connections import BrokerConnections
from kprod._io.delivery import complete, run_failed_callback
from kprod._io.live_endpoint import LiveEndpoint, open_live_endpoint
from kprod._io.sasl_login import sasl_login
from kprod._io.security import ssl_context
from kprod._io.stages import TimedCompressor, encode_plan
from kprod._io.statistics import librdkafka_statistics, producer_metrics
from kprod._io.txn_exchange import speaks_transactions_v2, txn_exchange
from kprod.config import ProducerConfig
from kprod.errors import (
    AuthenticationError,
    BrokerConnectionError,
    BufferExhaustedError,
    ConfigError,
    KafkaError,
    KprodError,
    Persisted,
    ProducerClosedError,
    ProtocolError,
    UnknownTopicError,
    UnreadableResponseError,
    is_retriable,
)
from kprod.protocol.messages import (
    TRANSACTIONS_V2_PRODUCE,
    ApiKey,
    init_producer_id_request,
    metadata_request,
    parse_init_producer_id,
    parse_metadata,
)
from kprod.protocol.produce import decode_produce_response, encode_produce_request
from kprod.records.compression import make_compressor
from kprod.types import DeliveryCallback

__all__ = [
    "WAIT_MEMORY",
    "WAIT_METADATA",
    "WAKE_SENDER",
    "YIELD_GIL",
    "AfterAppend",
    "ProducerEngine",
    "Wait",
    "monotonic_ms",
    "wall_ms",
]

log = logging.getLogger("kprod.producer")

CLOSE_LINGER_MAX_S = 1.0
"""The longest close() waits, once its records are done or failed, for the brokers to read what was
written to them and close their side (s); within close()'s own timeout."""


class AfterAppend(enum.IntFlag):
    """What :meth:`ProducerEngine.after_append_locked` asks the caller to do, the lock released."""

    NOTHING = 0
    WAKE_SENDER = 1
    """Wake the sender loop (``wake()``)."""
    YIELD_GIL = 2
    """Then let the I/O thread run (``time.sleep(0)``, ``asyncio.sleep(0)``)."""


WAKE_SENDER = AfterAppend.WAKE_SENDER
YIELD_GIL = AfterAppend.YIELD_GIL
_WAKE_AND_YIELD = AfterAppend.WAKE_SENDER | AfterAppend.YIELD_GIL

_MAX_INT32 = 2**31 - 1


_YIELD_INTERVAL_MS = 1
"""With answers pending, an appending thread offers the I/O thread the GIL at most this often."""

STAGE_SAMPLE_INTERVAL_MS = 100
"""How often one record is sent the general way with its serialize, partition and append steps
timed (``stage-*-time-avg-us`` in metrics()): at most 10 records a second pay for the clocks."""


def monotonic_ms() -> int:
    """The scheduling clock (ms): monotonic, for deadlines and batch ages."""
    return time.monotonic_ns() // 1_000_000


def wall_ms() -> int:
    """The record clock (ms since the epoch): default record timestamps."""
    return time.time_ns() // 1_000_000


_ENGINES: weakref.WeakSet[ProducerEngine] = weakref.WeakSet()
"""Every live engine of this process, for the fork hook."""


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        engine.forked_into_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ProducerEngine:
    """Everything a producer needs at run time, driven from one asyncio loop."""

    def __init__(self, config: ProducerConfig, loop: asyncio.AbstractEventLoop) -> None:
        if not config.bootstrap_servers:
            raise ConfigError(
                "bootstrap.servers is not set: give the brokers to connect to, for example "
                "bootstrap.servers='127.0.0.1:9092' (the kprod CLI and tests start an embedded broker for you)"
            )
        self.config = config
        self.loop = loop
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.rng = random.Random()
        self.accumulator = RecordAccumulator(
            batch_size=config.batch_size, linger_ms=config.linger_ms, buffer_memory=config.buffer_memory
        )
        self.metadata = ClusterMetadata(
            max_age_ms=config.metadata_max_age_ms,
            max_idle_ms=config.metadata_max_idle_ms,
            refresh_backoff_ms=config.retry_backoff_ms,
            refresh_backoff_max_ms=config.retry_backoff_max_ms,
        )
        self.core = SenderCore(
            SenderSettings(
                acks=config.acks,
                request_timeout_ms=config.request_timeout_ms,
                delivery_timeout_ms=config.delivery_timeout_ms,
                max_request_size=config.max_request_size,
                max_in_flight=config.max_in_flight_requests_per_connection,
                retries=config.retries,
                retry_backoff_ms=config.retry_backoff_ms,
                retry_backoff_max_ms=config.retry_backoff_max_ms,
                idempotent=config.enable_idempotence,
                metrics_window_ms=config.metrics_sample_window_ms,
                metrics_num_samples=config.metrics_num_samples,
            ),
            self.accumulator,
            self.metadata,
            self.rng,
        )
        level = {
            "gzip": config.compression_gzip_level,
            "lz4": config.compression_lz4_level,
            "zstd": config.compression_zstd_level,
        }.get(config.compression_type)
        codec = make_compressor(config.compression_type, level)
        self.compressor = TimedCompressor(codec) if codec is not None else None
        """The codec, its calls timed for ``stage-compress-time-avg-us`` (once per batch)."""
        self._auth_failure_logged_ms = 0
        self._txn_requests_in_flight = 0
        self._stats_started_ns = time.monotonic_ns()
        self.conns = BrokerConnections(
            config,
            loop,
            self.metadata,
            self.rng,
            ssl_context=ssl_context(config),  # raises ConfigError now, not on the I/O thread
            sasl_login=sasl_login(config),  # likewise for missing or contradictory SASL settings
            wake=self._wake,
            request_metadata_update=self._request_metadata_update,
            on_refused=self._authentication_failed,
            is_closing=lambda: self.closing,
        )
        """Broker connections and their backoffs (``_io/connections.py``)."""
        self.connections = self.conns.connections
        """Broker id -> connection (the same dict as ``conns.connections``)."""
        self.txn: TransactionManager | None = None
        """The transaction manager, with a transactional.id; guarded by ``lock`` like the core."""
        if config.transactional_id is not None:
            self.txn = TransactionManager(
                config.transactional_id,
                transaction_timeout_ms=config.transaction_timeout_ms,
                retry_backoff_ms=config.retry_backoff_ms,
                retry_backoff_max_ms=config.retry_backoff_max_ms,
                rng=self.rng,
                await_previous=config.kprod_transaction_await_previous,
            )
            self.core.txn = self.txn
        self.transactions_v2 = False
        """A transactional producer on a cluster with transaction.version 2 (decided at
        init_transactions): Produce v12 and EndTxn v5, no AddPartitionsToTxn (KIP-890)."""
        self._coordinator_addresses: dict[int, tuple[str, int]] = {}
        """Where FindCoordinator said each coordinator is (it may not be in Metadata yet)."""
        self.appender = RecordAppender(config, self.accumulator, self.metadata, self.rng, self.txn)
        """The append path (``_core/appender.py``): partitioning, topics' append state, the fast path."""
        self.partitioners = self.appender.partitioners
        self._fast_appenders = self.appender.fast_appenders
        self.try_append_plain: PlainAppender = self.appender.try_append_plain
        self.accepting = True
        """False once closing or failed: send() then goes the slow way through check_open()."""
        # (deadline ms, plan, connection) of produce requests awaiting an answer, oldest first: one
        # request.timeout.ms for all, so the deque stays sorted and no timer per request is needed.
        self._request_deadlines: deque[tuple[int, ProduceRequestPlan, BrokerConnection]] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        # The sender loop is a callback (``_pump``) scheduled on the loop, not a task: a wake-up is
        # one ``call_soon`` rather than a future, a task step and a coroutine resume.
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._next_idle_check_ms = 0
        self.stage_sample_due = False
        """A record is to be timed stage by stage (``SendPath``); set by the sender loop every
        STAGE_SAMPLE_INTERVAL_MS while records come, with the fast path paused until then."""
        self._next_stage_sample_ms = 0
        self._timer_deadline_ms = 0
        self._woken = False
        self._wake_scheduled = False
        self._full_batches_seen = 0
        self._next_yield_ms = 0
        self.next_wakeup_ms = 0
        """When the sender loop will look again on its own (ms, monotonic); published under the lock."""
        self._pid_pending = False
        self._pid_retry_at_ms = 0
        self._pid_failures = 0
        self.flush_count = 0
        self.sync_waiters = 0
        """Threads blocked on ``cond`` (memory, metadata, flush, results): notify them on progress."""
        self._async_waiters: list[asyncio.Future[None]] = []
        self.closing = False
        self.closed = False
        self.fatal_error: BaseException | None = None
        self.last_metadata_error: BaseException | None = None
        self.io_thread: threading.Thread | None = None
        self.records_sent = 0
        self.batches_sent = 0
        self.requests_sent = 0
        self.pid = os.getpid()
        self.forked = False
        """True in a child process forked from the one that made this producer (see forked_into_child)."""
        self.after_fork: list[Callable[[], None]] = []
        """Called in the child after forked_into_child: the facades refresh what they cached."""
        _ENGINES.add(self)
        self.throttled_responses = 0
        self.live_endpoint: LiveEndpoint | None = open_live_endpoint(config, self.metrics)
        """kprod.live.port's endpoint for ``kprod top`` (``_io/live_endpoint.py``), or None."""

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender loop (call on the loop thread), and the statistics timer if asked for."""
        self._schedule_pump()
        if self.live_endpoint is not None:
            self.live_endpoint.start(self.loop)
        if self.config.statistics_interval_ms > 0 and self.config.stats_cb is not None:
            self._stats_started_ns = time.monotonic_ns()
            self.loop.call_later(self.config.statistics_interval_ms / 1000, self._emit_statistics)

    def _emit_statistics(self) -> None:
        """Call stats_cb with librdkafka's statistics JSON, then again after statistics.interval.ms."""
        if self.closed:
            return
        callback = self.config.stats_cb
        assert callback is not None
        try:
            callback(librdkafka_statistics(self, self._stats_started_ns))
        except Exception:
            log.exception("stats_cb raised")
        self.loop.call_later(self.config.statistics_interval_ms / 1000, self._emit_statistics)

    async def shutdown(self, error: KprodError, deadline_s: float | None) -> int:
        """Stop the sender, fail what is left with ``error``, close connections, giving the brokers
        until ``deadline_s`` (``time.monotonic()``; None: none), at most CLOSE_LINGER_MAX_S, to read
        what was written to them (``BrokerConnections.close_all_gracefully``). Returns the records
        failed."""
        with self.lock:
            self.closing = True
            self._stop_accepting()
            self.accumulator.closing = True
            failed = self.core.abort_incomplete(error)
        count = sum(b.record_count for b in failed)
        # One summary (the caller logs it) rather than asyncio's "Future exception was never
        # retrieved" for every dropped future of an AsyncProducer: awaiting one still raises.
        self.deliver(failed, retrieved=True)
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        self._request_deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        linger_s = CLOSE_LINGER_MAX_S if deadline_s is None else deadline_s - time.monotonic()
        await self.conns.close_all_gracefully(
            ProducerClosedError("producer closed"), min(linger_s, CLOSE_LINGER_MAX_S)
        )
        self.notify_waiters()
        if self.live_endpoint is not None:
            await self.live_endpoint.aclose()
        return count

    # -- waking the sender -----------------------------------------------------------------

    def _wake(self) -> None:
        self._woken = True
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and not self.closed:
            self._pump_scheduled = True
            self.loop.call_soon(self._pump)

    def _wake_from_thread(self) -> None:
        self._wake_scheduled = False
        if self._pump_scheduled or self.closed:
            self._woken = True
            return
        # Run the round now rather than scheduling it: one loop iteration (an epoll call and a
        # handle) less between an appending thread's wake-up and the request on the wire.
        self._pump_scheduled = True
        self._pump()

    def wake_threadsafe(self) -> None:
        """Wake the sender loop from any thread (at most one pending wake-up)."""
        if self._wake_scheduled:
            return
        self._wake_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._wake_from_thread)
        except RuntimeError:  # loop closed: nothing to wake
            self._wake_scheduled = False

    def wake(self) -> None:
        """Wake the sender loop; from the loop thread this is a plain call."""
        if self.io_thread is None or threading.current_thread() is self.io_thread:
            self._wake()
        else:
            self.wake_threadsafe()

    # -- the append path (caller's thread, under self.lock) ---------------------------------

    def begin_close(self) -> None:
        """close() started: refuse new records from now on (call under the lock)."""
        self.closing = True
        self._stop_accepting()

    def _stop_accepting(self) -> None:
        """No more appends (closing, or failed): send() goes the slow way, through check_open()."""
        self.accepting = False
        self.appender.stop()

    def forked_into_child(self) -> None:
        """The process forked: in the child this producer has no I/O thread (threads do not survive a
        fork) and shares its sockets with the parent. Make every later call fail at once with an
        error that says what to do, instead of accepting records nothing will send. The lock is new:
        the parent's may have been held by a thread that does not exist here."""
        self.forked = True
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.fatal_error = ProducerClosedError(
            f"this producer was created in process {self.pid} and cannot be used in process "
            f"{os.getpid()}, forked from it: its I/O thread does not survive a fork. Create a new "
            "producer in the child process (as with librdkafka and the Java client)",
            stage="producer",
        )
        self.accepting = False
        self.appender.stop()
        self.closed = True
        for callback in self.after_fork:
            callback()

    def check_open(self) -> None:
        """Raise if records can no longer be accepted (call under the lock)."""
        if self.fatal_error is not None:
            raise ProducerClosedError(
                f"the producer failed and accepts no records: {self.fatal_error}", stage="producer"
            ) from self.fatal_error
        if self.closing:
            raise ProducerClosedError("send() after close(): the producer accepts no more records")
        fatal = self.core.fatal_error
        if fatal is not None:
            raise fatal

    def try_append_locked(
        self,
        topic: str,
        partition: int | None,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        record_bound: int,
    ) -> ProducerBatch | Wait:
        """Partition and append one serialized record, or say what to wait for (lock held):
        :meth:`RecordAppender.try_append` at the monotonic clock's now. A record that must wait for
        metadata while the cluster refuses our credentials raises AuthenticationError at once."""
        result = self.appender.try_append(
            topic, partition, timestamp_ms, key, value, headers, record_bound, monotonic_ms()
        )
        if result is Wait.METADATA:
            self.check_metadata_wait(topic)
        return result

    def check_metadata_wait(self, topic: str) -> None:
        """Before a record waits for ``topic``'s metadata (lock held): raise AuthenticationError at
        once while the cluster refuses our credentials, since waiting ``max.block.ms`` would not
        change the answer (Java: ``waitOnMetadata`` throws it)."""
        refused = self.conns.last_auth_error
        if refused is not None and self.last_metadata_error is not None:
            raise AuthenticationError(f"no metadata for topic {topic!r}: {refused}", stage="metadata")

    def after_append_locked(self, batch: ProducerBatch) -> AfterAppend:
        """After an append that opened ``batch`` or filled it (under the lock): what the caller must do.

        Returns WAKE_SENDER and/or YIELD_GIL bits, to act on *after* releasing the
        lock (a sender woken while the lock is held would only block on it).

        A transactional request waiting to go out (the new batch's partition to add, or the
        question about the previous transaction) wakes the sender and yields to it at once.
        A batch that filled (this one, or the one a new batch replaced) is sent at
        the sender's next round. With requests in flight, their answers start
        rounds soon enough; waking the sender for each full batch as well would
        send smaller requests more often (a loopback run of 300k records: 1.7
        instead of 4+ batches per request, 2.6x the system time). With nothing
        in flight, the sender is woken at once. A new batch also wakes it when the
        loop would not look again before the batch's ``linger.ms`` runs out.
        YIELD_GIL asks the caller to let the I/O thread have the GIL: after such a
        wake-up, and at most every ``_YIELD_INTERVAL_MS`` while answers are pending.
        """
        acc = self.accumulator
        if acc.full_batches != self._full_batches_seen:
            self._full_batches_seen = acc.full_batches
            if not self.core.in_flight_count:
                return _WAKE_AND_YIELD
        if batch.record_count != 1:
            return AfterAppend.NOTHING
        txn = self.txn
        if txn is not None and txn.wants_poll:
            # The batch opened a partition of the transaction (an AddPartitionsToTxn to send) or
            # the transaction itself (a question about the previous one's markers): it goes out
            # now, not when the appending thread next blocks or the switch interval ends.
            return _WAKE_AND_YIELD
        now_ms = monotonic_ms()
        action = WAKE_SENDER if self.next_wakeup_ms > now_ms + self.config.linger_ms else AfterAppend.NOTHING
        if (self.core.in_flight_count or self._txn_requests_in_flight) and now_ms >= self._next_yield_ms:
            # An AddPartitionsToTxn in flight counts too: its answer lets the full batches behind it go.
            self._next_yield_ms = now_ms + _YIELD_INTERVAL_MS
            action |= YIELD_GIL
        return action

    def wait_error(self, reason: Wait, topic: str, waited_ms: int) -> KprodError:
        """The error for a send() that waited ``max.block.ms`` for metadata or memory."""
        max_block = self.config.max_block_ms
        if reason == WAIT_MEMORY:
            return BufferExhaustedError(
                f"send() waited {waited_ms} ms for room in the buffer and got none: "
                f"buffer.memory={self.config.buffer_memory} bytes are held by records not yet acknowledged "
                f"(max.block.ms={max_block}). Raise buffer.memory or max.block.ms, or send more slowly; "
                "nothing already accepted was dropped",
                stage="buffering",
            )
        brokers = ", ".join(f"{h}:{p}" for h, p in (self.config.bootstrap_servers or ()))
        known = ", ".join(f"{n}={h}:{p}" for n, (h, p) in sorted(self.metadata.brokers.items())) or "none"
        code = self.metadata.topic_error(topic)
        if code:
            cause = f"the brokers answered {KafkaError(code)} for it"
        elif self.last_metadata_error is not None:
            cause = f"no metadata could be fetched: {self.last_metadata_error}"
        else:
            cause = "the topic may not exist and the broker may not auto-create it"
        return UnknownTopicError(
            f"topic {topic!r} not present in metadata after {waited_ms} ms (max.block.ms={max_block}); "
            f"asked bootstrap.servers [{brokers}], known brokers [{known}]; likely cause: {cause}",
        )

    # -- completions ------------------------------------------------------------------------

    def deliver(self, batches: list[ProducerBatch], retrieved: bool = False) -> None:
        """Run callbacks and wake waiters of completed batches (loop thread, lock not held):
        :func:`~kprod._io.delivery.complete`, then the blocked callers."""
        if batches:
            complete(batches, retrieved)
            self.notify_waiters()

    def deliver_failed(self, fn: DeliveryCallback, error: BaseException) -> None:
        """Run ``fn(None, error)`` for a record that failed before it entered a batch (too large, a bad
        argument in send_batch) where every other outcome is delivered: on the loop thread, later,
        an exception logged. Any thread; runs it here only when the loop is already closed."""
        try:
            self.loop.call_soon_threadsafe(run_failed_callback, fn, error)
        except RuntimeError:  # the loop is closed: there is no other thread left to run it on
            run_failed_callback(fn, error)

    def notify_waiters(self) -> None:
        """Something changed (memory freed, metadata, completions): wake blocked callers."""
        if self.sync_waiters:
            with self.cond:
                self.cond.notify_all()
        if self._async_waiters:
            waiters, self._async_waiters = self._async_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def waiting_count(self) -> int:
        """Callers blocked now (threads on ``cond``, and tasks on an async waiter still pending: one
        whose wait timed out or was cancelled stays listed until the next notification, done)."""
        return self.sync_waiters + sum(1 for f in self._async_waiters if not f.done())

    def async_waiter(self) -> asyncio.Future[None]:
        """A future resolved at the next :meth:`notify_waiters` (loop thread only)."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self._async_waiters.append(fut)
        return fut

    def metrics(self) -> dict[str, Any]:
        """A snapshot of the internals: Java's producer metrics by name (rates and averages over
        ``metrics.num.samples`` windows of ``metrics.sample.window.ms``, as Java), per topic and per
        broker, why batches left, and kprod's own counters (``_io/statistics.py``)."""
        return producer_metrics(self)

    def incomplete_batches(self) -> list[ProducerBatch]:
        """Every batch not yet completed: queued and in flight (under the lock)."""
        out = list(self.accumulator.queued_batches())
        out.extend(self.core.in_flight_batches())
        return out

    def set_flushing(self, delta: int) -> None:
        """Count a flush starting (+1) or ending (-1); while any runs, linger.ms is ignored (under the lock)."""
        self.flush_count += delta
        self.accumulator.flushing = self.flush_count > 0

    # -- the sender loop --------------------------------------------------------------------

    def _pump(self) -> None:
        """One round of the sender loop (on the loop thread); it schedules the next one itself."""
        self._pump_scheduled = False
        if self.closed or self.fatal_error is not None:
            return
        try:
            self._woken = False
            now = monotonic_ms()
            request_deadline_ms = self._expire_requests(now)
            if now >= self._next_idle_check_ms:
                self.conns.close_idle(now)
                # About four checks per idle period: at least every 60 s, at most every 250 ms.
                self._next_idle_check_ms = now + max(
                    250, min(self.config.connections_max_idle_ms // 4, 60_000)
                )
            with self.lock:
                txn = self.txn
                if txn is not None:
                    # Committing or aborting sends everything at once, as flush() does.
                    self.accumulator.flushing = self.flush_count > 0 or txn.is_completing
                result = self.core.poll(now, self.conns.slots)
                txn_request = None
                if txn is not None:
                    txn_request = txn.next_request(
                        now, self.accumulator.has_queued() or self.core.in_flight_count > 0
                    )
                metadata = self.metadata
                refresh = metadata.should_update(now)
                topics: list[str] = []
                if refresh:
                    topics = metadata.wanted_topics(now)
                    metadata.on_update_started(now)
                own_pid = txn is None and self.core.needs_producer_id  # else init_transactions() gets it
                init_pid = own_pid and not self._pid_pending and now >= self._pid_retry_at_ms
                if init_pid:
                    self._pid_pending = True
                next_ms = min(result.next_wakeup_ms, metadata.next_update_ms(now), request_deadline_ms)
                if own_pid and not self._pid_pending:
                    next_ms = min(next_ms, self._pid_retry_at_ms)
                if txn is not None and txn_request is None:
                    txn_deadline_ms = txn.next_deadline_ms()
                    if txn_deadline_ms is not None:
                        next_ms = min(next_ms, max(txn_deadline_ms, now + 1))
                if self.conns.open_conns and self.config.connections_max_idle_ms >= 0:
                    next_ms = min(next_ms, self._next_idle_check_ms)
                next_ms = self.conns.next_retry_ms(now, next_ms)
                linger_ms = self.config.linger_ms
                if linger_ms > 0 and self.core.in_flight_count:
                    # While answers are pending, look again within linger.ms anyway: a batch created
                    # meanwhile then needs no wake-up from the appending thread (a wake-up is a
                    # syscall and a GIL hand-off; a loaded producer opens thousands of batches a
                    # second, and answers arriving start rounds of their own).
                    next_ms = min(next_ms, now + linger_ms)
                self.next_wakeup_ms = next_ms
                if now >= self._next_stage_sample_ms and not self.stage_sample_due and self.accepting:
                    # No timer of its own: while records come, rounds come; an idle producer needs none.
                    self._next_stage_sample_ms = now + STAGE_SAMPLE_INTERVAL_MS
                    self.stage_sample_due = True
                    self.appender.pause_fast()
            if refresh:
                self._spawn(self._refresh_metadata(topics))
            if init_pid:
                self._spawn(self._init_producer_id())
            if txn_request is not None:
                self._spawn(self._send_txn_request(txn_request))
            for node_id in result.connect_nodes:
                self.conns.ensure(node_id, now)
            for plan in result.requests:
                self._send_plan(plan)
            if result.completed:
                self.deliver(result.completed)
            if self._woken:
                self._schedule_pump()
            else:
                self._sleep_until(next_ms)
        except Exception as exc:  # the sender died: fail everything, loudly
            log.exception("the kprod sender task failed")
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        if self.fatal_error is not None:
            return  # already dead: fail and report once; the sender loop stops on fatal_error
        error = KprodError(f"the producer's sender task failed: {exc!r}", stage="producer")
        error.__cause__ = exc
        with self.lock:
            self.fatal_error = error
            self._stop_accepting()
            failed = self.core.abort_incomplete(error)
        self.deliver(failed)
        self.notify_waiters()

    def _sleep_until(self, deadline_ms: int) -> None:
        """Make sure a round runs by ``deadline_ms`` (a wake-up may come first)."""
        delay_ms = deadline_ms - monotonic_ms()
        if delay_ms <= 0:
            self._schedule_pump()
            return
        # One timer at a time, kept across wake-ups: a timer per round (a heap push and a cancel
        # each) is a measurable part of one-at-a-time latency. A timer that fires after an early
        # wake-up only causes one extra, harmless round.
        if self._timer is None or deadline_ms < self._timer_deadline_ms:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_deadline_ms = deadline_ms
            self._timer = self.loop.call_later(delay_ms / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            log.error("a kprod background task failed: %r", exc)
            self._die(exc)

    # -- what the connections report -------------------------------------------------------------

    def _request_metadata_update(self) -> None:
        """A broker failed or is unknown: refresh metadata at the next round (loop thread)."""
        with self.lock:
            self.metadata.request_update()

    def _authentication_failed(self, error: AuthenticationError, node_id: int | None) -> None:
        """The broker (or TLS) refused us: fail at once the batches that wait for that broker
        (``node_id`` None: every batch never sent), as retrying until delivery.timeout.ms would not
        change the answer. The producer stays usable: connections are tried again after the backoff."""
        now = monotonic_ms()
        if now - self._auth_failure_logged_ms >= 10_000:  # the same refusal, once per 10 s
            self._auth_failure_logged_ms = now
            log.error("%s", error)
        with self.lock:
            if node_id is None:
                failed = self.core.fail_unsent(error, lambda batch: True)
            else:
                leader = self.metadata.leader
                failed = self.core.fail_unsent(error, lambda b: leader(b.topic, b.partition) == node_id)
        self.deliver(failed)
        self.notify_waiters()

    # -- control requests ----------------------------------------------------------------------

    async def _refresh_metadata(self, topics: list[str]) -> None:
        try:
            conn = await self.conns.any_connection()
            snapshot = await conn.request(
                ApiKey.METADATA,
                lambda v: metadata_request(v, topics, self.config.allow_auto_create_topics),
                self.config.request_timeout_ms,
                parse_metadata,
            )
        except KprodError as exc:
            self.last_metadata_error = exc
            with self.lock:
                self.metadata.on_update_failed(monotonic_ms())
            if isinstance(exc, AuthenticationError):
                self._authentication_failed(exc, None)
            log.debug("metadata refresh failed: %s", exc)
        else:
            self.last_metadata_error = None
            with self.lock:
                before = _leaders_of(self.metadata, topics) if log.isEnabledFor(logging.DEBUG) else None
                self.metadata.on_update(snapshot, monotonic_ms())  # drops the fast path's cache
                if before is not None:
                    _log_leader_changes(before, _leaders_of(self.metadata, topics))
        self.notify_waiters()
        self._wake()

    async def _init_producer_id(self) -> None:
        try:
            conn = await self.conns.any_connection()
            if ApiKey.INIT_PRODUCER_ID not in conn.versions:
                raise ProtocolError(
                    f"broker {conn.host}:{conn.port} does not offer InitProducerId v3 or later, which the "
                    "idempotent producer needs; set enable.idempotence=false to produce without it",
                    stage="delivery",
                )
            code, producer_id, producer_epoch = await conn.request(
                ApiKey.INIT_PRODUCER_ID,
                lambda v: init_producer_id_request(v, None, _MAX_INT32),
                self.config.request_timeout_ms,
                parse_init_producer_id,
            )
            if code != 0:
                raise KafkaError(code, "InitProducerId failed", stage="delivery")
        except KprodError as exc:
            retriable = exc.retriable or (isinstance(exc, KafkaError) and is_retriable(exc.code))
            if isinstance(exc, AuthenticationError):
                # Nothing can be sent without a producer id: fail what waits, try again after the backoff.
                self._authentication_failed(exc, None)
                retriable = True
            if retriable:
                # Exponential, retry.backoff.ms up to retry.backoff.max.ms with ±20 % jitter, as every
                # other retry: a broker that keeps refusing is not asked ten times a second.
                self._pid_failures += 1
                delay_ms = self.core.backoff_ms(self._pid_failures - 1)
                self._pid_retry_at_ms = monotonic_ms() + delay_ms
                (log.info if self._pid_failures == 1 else log.debug)(
                    "InitProducerId failed (attempt %d), retrying in %d ms: %s",
                    self._pid_failures,
                    delay_ms,
                    exc,
                )
            else:
                with self.lock:
                    failed = self.core.fail_fatally(exc)
                    self._stop_accepting()
                self.deliver(failed)
        else:
            self._pid_failures = 0
            log.debug("producer id %d, epoch %d", producer_id, producer_epoch)
            with self.lock:
                self.core.on_producer_id(producer_id, producer_epoch)
        finally:
            self._pid_pending = False
            self._wake()

    # -- transactional requests ------------------------------------------------------------------

    async def _send_txn_request(self, request: TxnRequest) -> None:
        """Send one request the transaction manager asked for and hand it the answer (or the loss)."""
        txn = self.txn
        assert txn is not None
        self._txn_requests_in_flight += 1
        try:
            if request.coordinator is None:
                conn = await self.conns.any_connection()
            else:
                conn = await self._coordinator_connection(request.coordinator)
            api_key, build, parse = txn_exchange(request, txn, self._coordinator_found)
            if request.kind is TxnRequestKind.INIT_PRODUCER_ID:
                self._decide_transactions_v2(conn, txn)
            answer = await conn.request(api_key, build, self.config.request_timeout_ms, parse)
        except KprodError as exc:
            log.debug("%s request failed, will retry: %s", request.kind.name, exc)
            with self.lock:
                txn.on_request_failed(request, monotonic_ms())
        else:
            if answer.error_code:
                log.debug("%s answered %s", request.kind.name, KafkaError(answer.error_code).name)
            with self.lock:
                txn.on_response(request, answer, monotonic_ms())
        finally:
            self._txn_requests_in_flight -= 1
            self.notify_waiters()
            self._wake()

    def _decide_transactions_v2(self, conn: BrokerConnection, txn: TransactionManager) -> None:
        """Decide transactions v2 or v1 once, at init_transactions, for the producer's life, and
        whether the coordinator can be asked about the previous transaction (DescribeTransactions)."""
        v2 = speaks_transactions_v2(conn)
        with self.lock:
            self.transactions_v2 = v2
            txn.transactions_v2 = v2
            if ApiKey.DESCRIBE_TRANSACTIONS not in conn.versions:
                txn.await_previous = False

    def _coordinator_found(self, node_id: int, host: str, port: int) -> None:
        """FindCoordinator's answer: where ``node_id`` is (it may not be in Metadata yet)."""
        self._coordinator_addresses[node_id] = (host, port)

    async def _coordinator_connection(self, kind: CoordinatorType) -> BrokerConnection:
        txn = self.txn
        assert txn is not None
        node_id = txn.coordinator(kind)
        if node_id is None:
            raise BrokerConnectionError(f"the {kind.name.lower()} coordinator is not known")
        address = self._coordinator_addresses.get(node_id) or self.metadata.node_address(node_id)
        if address is None:
            raise BrokerConnectionError(f"no address for coordinator {node_id}")
        return await self.conns.connect_to(node_id, address)

    # -- produce requests ------------------------------------------------------------------------

    def _send_plan(self, plan: ProduceRequestPlan) -> None:
        conn = self.connections.get(plan.node_id)
        version = conn.versions.get(ApiKey.PRODUCE, -1) if conn is not None else -1
        if version >= TRANSACTIONS_V2_PRODUCE and not self.transactions_v2:
            version = TRANSACTIONS_V2_PRODUCE - 1  # v12 would tell the broker we use transactions v2
        topic_data, compress_ns, compressed_records = encode_plan(plan, self.compressor)
        if conn is None or conn.closed:
            self._fail_plan(plan, BrokerConnectionError(f"no connection to broker {plan.node_id}"))
            return
        correlation_id = conn.next_correlation_id()
        frame = encode_produce_request(
            version=version,
            correlation_id=correlation_id,
            client_id=self.config.client_id,
            transactional_id=plan.transactional_id,
            acks=plan.acks,
            timeout_ms=plan.timeout_ms,
            topic_data=topic_data,
        )
        callback: ResponseCallback | None = None
        on_written: WrittenCallback | None = None
        if plan.expects_response:

            def callback(frame: memoryview | bytes | None, offset: int, error: BaseException | None) -> None:
                self._on_produce_answer(plan, version, conn, frame, offset, error)

        else:

            def on_written(error: BaseException | None) -> None:
                self._on_request_written(plan, error)

        try:
            written = conn.send(ApiKey.PRODUCE, version, correlation_id, frame, callback, on_written)
        except KprodError as exc:
            self._fail_plan(plan, exc)
            return
        completed: list[ProducerBatch] = []
        with self.lock:
            metrics = self.core.metrics
            size = sum(len(part) for part in frame)
            metrics.outgoing_bytes.record(size, plan.created_ms)
            metrics.requests.record(1, plan.created_ms)
            metrics.record_compression(compress_ns, compressed_records, plan.created_ms)
            records = sum(b.record_count for b in plan.batches)
            node = metrics.node(plan.node_id)
            node["outgoing-byte"].record(size, plan.created_ms)
            node["request"].record(1, plan.created_ms)
            self.core.on_sent(plan)
            if written:
                completed = self.core.on_written(plan)
            self.records_sent += records
            self.batches_sent += len(plan.batches)
            self.requests_sent += 1
        if completed:
            self.deliver(completed)
        # A request without an answer that waits in the transport's buffer is timed out like an
        # unanswered one (plan.answered is set once it is written).
        if not written:
            self._request_deadlines.append((monotonic_ms() + plan.timeout_ms, plan, conn))

    def _on_request_written(self, plan: ProduceRequestPlan, error: BaseException | None) -> None:
        """acks=0: the request's bytes left the process (error None), or its connection closed first."""
        plan.answered = True
        if error is None:
            with self.lock:
                completed = self.core.on_written(plan)
            self.deliver(completed)
            self._wake()  # the partitions' next batches may go now
        else:
            failure = error if isinstance(error, KprodError) else BrokerConnectionError(str(error))
            self._fail_plan(plan, failure)

    def _fail_plan(self, plan: ProduceRequestPlan, error: KprodError) -> None:
        with self.lock:
            completed = self.core.on_request_failed(plan, error, monotonic_ms())
        self.deliver(completed)
        self._wake()

    def _expire_requests(self, now_ms: int) -> int:
        """Time out produce requests past request.timeout.ms; return the next request deadline (ms)."""
        deadlines = self._request_deadlines
        while deadlines:
            deadline_ms, plan, conn = deadlines[0]
            if plan.answered:
                deadlines.popleft()
            elif deadline_ms <= now_ms:
                deadlines.popleft()
                self._on_request_timeout(plan, conn)
            else:
                return deadline_ms
        return now_ms + 3_600_000

    def _on_request_timeout(self, plan: ProduceRequestPlan, conn: BrokerConnection) -> None:
        # Like the Java client: close the connection; every request on it fails and is retried.
        waited_for = "an answer" if plan.expects_response else "the broker to read the request (acks=0)"
        conn.close(
            BrokerConnectionError(
                f"waited for {waited_for} from broker {conn.node_id} longer than "
                f"request.timeout.ms={plan.timeout_ms}",
                persisted=Persisted.POSSIBLY_PERSISTED,
            )
        )

    def _on_produce_answer(
        self,
        plan: ProduceRequestPlan,
        version: int,
        conn: BrokerConnection,
        frame: memoryview | bytes | None,
        offset: int,
        error: BaseException | None,
    ) -> None:
        plan.answered = True
        now = monotonic_ms()
        if error is None and frame is not None:
            try:
                response = decode_produce_response(version, frame, offset)
            except KprodError as exc:
                # The answer was taken off the connection's in-flight list already, so closing the
                # connection does not fail this plan: retry it here, at once. The broker answered,
                # so it may have written the batches: idempotence lets the resend find out.
                log.warning(
                    "unreadable Produce answer from broker %d, resending its batches: %s", conn.node_id, exc
                )
                unreadable = UnreadableResponseError(
                    f"unreadable Produce answer from broker {conn.node_id}: {exc}",
                    persisted=Persisted.POSSIBLY_PERSISTED,
                )
                conn.close(unreadable)
                self._fail_plan(plan, unreadable)
                return
            throttle_ms = response.throttle_time_ms
            with self.lock:
                metrics = self.core.metrics
                metrics.incoming_bytes.record(len(frame), now)
                metrics.responses.record(1, now)
                metrics.produce_throttle_time.record(throttle_ms, now)
                if throttle_ms > 0:
                    self.conns.throttle(conn.node_id, now + throttle_ms)
                    self.throttled_responses += 1
                completed = self.core.on_produce_response(plan, response, now)
                if self.core.fatal_error is not None and self.accepting:
                    self._stop_accepting()  # fenced or unauthorized: send() raises from now on
        else:
            if not isinstance(error, KprodError):
                error = BrokerConnectionError(str(error))
            with self.lock:
                completed = self.core.on_request_failed(plan, error, now)
        self.deliver(completed)
        txn = self.txn
        if self.accumulator.has_queued() or self.core.wants_poll or (txn is not None and txn.wants_poll):
            # An in-flight slot is free, a retry or a producer-id reset is due, or a transactional
            # request waits (the EndTxn of a commit waits for the last answer).
            self._wake()


def _leaders_of(metadata: ClusterMetadata, topics: list[str]) -> dict[str, list[int]]:
    """Each topic's partition leaders (for the DEBUG log of changes)."""
    return {t: list(info.leaders) for t in topics if (info := metadata.topics.get(t)) is not None}


def _log_leader_changes(before: dict[str, list[int]], after: dict[str, list[int]]) -> None:
    for topic, leaders in after.items():
        old = before.get(topic)
        if old is None:
            log.debug("metadata: topic %s, %d partitions, leaders %s", topic, len(leaders), leaders)
            continue
        moved = [f"{p}: {a} -> {b}" for p, (a, b) in enumerate(zip(old, leaders, strict=False)) if a != b]
        if len(old) != len(leaders):
            moved.append(f"{len(old)} -> {len(leaders)} partitions")
        if moved:
            log.debug("metadata: topic %s leaders moved (%s)", topic, ", ".join(moved[:20]))
