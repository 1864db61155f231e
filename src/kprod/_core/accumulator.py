"""Per-partition batches of records waiting to be sent: the RecordAccumulator.

Owns the buffering and batching stages: where an appended record goes
(the open batch of its partition, or a new one), how many bytes everything
not yet acknowledged holds (``buffer.memory``), when a batch is ready
(``batch.size`` reached, ``linger.ms`` passed, a flush or a close), and which
batches leave together for one broker (``drain``, bounded by
``max.request.size``). It does not know about sockets, threads or clocks:
callers serialize access (the I/O layer holds one lock around every call)
and pass ``now_ms``.

Invariants:
* A partition's batches leave in the order they were created; a retried batch
  goes back to the *front* of its queue, in sequence order.
* Only the last batch of a queue accepts appends; a drained batch never does.
* ``used_bytes`` counts every byte of every batch not yet completed; it only
  shrinks through :meth:`RecordAccumulator.release`.

Why one module of about 650 lines: the batch, the partition queue and the accumulator share the
buffer accounting and the batch life cycle (``move_batch``); each invariant above spans all three.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kprod.records.batch import RecordBatchBuilder

__all__ = [
    "BATCH_HEADER_BYTES",
    "BatchState",
    "BatchStateError",
    "PartitionQueue",
    "ProducerBatch",
    "RecordAccumulator",
    "move_batch",
    "record_size_upper_bound",
]

CLOSE_REASONS = ("full", "linger", "flush", "memory", "closing", "request")
"""Why a batch left: full (the next record did not fit), linger (``linger.ms`` passed), flush,
memory (``buffer.memory`` short: a send() waits), closing, request (it went along with a request
its broker was sending anyway)."""

BATCH_HEADER_BYTES = 61
"""Size of a v2 record batch header (RECORD_BATCH_OVERHEAD in Java)."""

_MAX_RECORD_OVERHEAD = 21 + 15
"""Java's 21 bytes of per-record overhead plus up to 5 bytes each for key, value and header-count varints."""


def record_size_upper_bound(key: bytes | None, value: bytes | None, headers: Sequence[Any] | None) -> int:
    """An upper bound of one record's encoded size in a batch (bytes)."""
    size = _MAX_RECORD_OVERHEAD
    if key is not None:
        size += len(key)
    if value is not None:
        size += len(value)
    if headers:
        for name, hvalue in headers:
            size += 10 + len(name) * 4 + (len(hvalue) if hvalue is not None else 0)
    return size


class BatchState(enum.Enum):
    """Where a batch is in its life. Transitions: QUEUED -> IN_FLIGHT -> (QUEUED again on retry) -> DONE."""

    QUEUED = 1
    """In its partition's queue; the last batch of a queue still accepts appends."""
    IN_FLIGHT = 2
    """Part of a request that has not been answered."""
    DONE = 3
    """Completed, successfully or not; its memory is released."""


class BatchStateError(RuntimeError):
    """A batch was moved where its life does not go (a second completion, a done batch requeued):
    a bug in the producer, refused before it double-counts memory or delivers twice."""


_NEXT_STATES: dict[BatchState, frozenset[BatchState]] = {
    BatchState.QUEUED: frozenset({BatchState.IN_FLIGHT, BatchState.DONE}),
    BatchState.IN_FLIGHT: frozenset({BatchState.QUEUED, BatchState.DONE}),
    BatchState.DONE: frozenset(),
}


def move_batch(batch: ProducerBatch, state: BatchState) -> None:
    """Move ``batch`` to ``state``, or raise BatchStateError for a transition its life does not have."""
    if state not in _NEXT_STATES[batch.state]:
        raise BatchStateError(
            f"batch of {batch.topic}-{batch.partition} ({batch.record_count} records) cannot go from "
            f"{batch.state.name} to {state.name}"
        )
    batch.state = state


class ProducerBatch(RecordBatchBuilder):
    """Records of one partition that travel together, and their single shared outcome.

    One batch is one completion: per-record futures are thin views
    (batch, index) on it, so completing a batch of N records costs one
    state change plus whatever callbacks the user registered.

    A batch *is* its :class:`RecordBatchBuilder` (records are encoded into it as
    they are appended), so the per-record path reads ``record_count`` and
    ``size_bytes`` without a hop. It holds ``size_bytes`` of ``buffer.memory``
    from its creation until :meth:`RecordAccumulator.release` (or a split).
    """

    __slots__ = (
        "accepting",
        "attempts",
        "base_offset",
        "base_sequence",
        "callbacks",
        "children",
        "created_ms",
        "doubt_settled",
        "encoded",
        "error",
        "last_error",
        "log_append_time_ms",
        "maybe_written",
        "next_retry_ms",
        "parent",
        "partition",
        "pending_children",
        "producer_epoch",
        "producer_id",
        "released",
        "sent",
        "state",
        "topic",
        "waiter",
    )

    def __init__(self, topic: str, partition: int, base_timestamp_ms: int, now_ms: int) -> None:
        self.topic = topic
        self.partition = partition
        RecordBatchBuilder.__init__(self, base_timestamp_ms)
        self.created_ms = now_ms
        self.state = BatchState.QUEUED
        # False once the batch is drained or a record did not fit: no more appends.
        self.accepting = True
        self.released = False
        """True once its memory went back to ``buffer.memory`` (completed, or split)."""
        self.attempts = 0
        self.next_retry_ms = 0
        # True once any request carrying this batch was written to a socket: from then on a
        # failure without an answer means the records are POSSIBLY persisted, never "not persisted".
        self.sent = False
        # True once a request carrying this batch went unanswered (disconnect, timeout): the
        # broker may have written it, so a later failure is POSSIBLY persisted.
        self.maybe_written = False
        # Set once an answer shows that resending under the same producer id cannot settle
        # whether an earlier attempt was written (so a producer-id reset need not wait for it).
        self.doubt_settled = False
        self.producer_id = -1
        self.producer_epoch = -1
        self.base_sequence = -1
        self.encoded: bytes | bytearray | None = None
        # (record index, callback, record timestamp ms) registered by the user or the facade. The callback is fn(metadata_or_None, error_or_None), or an object the I/O layer
        # settles itself (AsyncProducer stores its asyncio.Future as is, to save a closure per record).
        self.callbacks: list[tuple[int, Any, int]] | None = None
        # Opaque slot for the I/O layer (a one-shot waiter that wakes sync result() calls).
        self.waiter: Any = None
        self.base_offset = -1
        self.log_append_time_ms = -1
        self.error: BaseException | None = None
        self.last_error: BaseException | None = None
        # Split (MESSAGE_TOO_LARGE, KIP-126): the parent keeps its callbacks and waiter and
        # completes when all children did; records resolve to (child, index) through resolve().
        self.children: list[tuple[ProducerBatch, int]] | None = None
        self.parent: ProducerBatch | None = None
        self.pending_children = 0

    def resolve(self, index: int) -> tuple[ProducerBatch, int]:
        """The batch and index that hold record ``index`` of this batch (itself unless it was split)."""
        batch = self
        while batch.children is not None:
            for child, start in reversed(batch.children):
                if index >= start:
                    batch, index = child, index - start
                    break
        return batch, index

    @property
    def accounted_bytes(self) -> int:
        """Bytes of ``buffer.memory`` this batch holds: its size until released, then 0."""
        return 0 if self.released else self.size_bytes

    @property
    def done(self) -> bool:
        return self.state is BatchState.DONE

    def add_callback(self, index: int, fn: Any, timestamp_ms: int) -> None:
        """Call ``fn`` when record ``index`` (CreateTime ``timestamp_ms``) completes."""
        callbacks = self.callbacks
        if callbacks is None:
            self.callbacks = [(index, fn, timestamp_ms)]
        else:
            callbacks.append((index, fn, timestamp_ms))

    def __repr__(self) -> str:
        return (
            f"ProducerBatch({self.topic}-{self.partition}, records={self.record_count}, "
            f"bytes={self.size_bytes}, state={self.state.name}, attempts={self.attempts})"
        )


class PartitionQueue:
    """The queue of batches of one topic-partition."""

    __slots__ = (
        "batches",
        "in_flight",
        "last_acked_sequence",
        "next_sequence",
        "outstanding",
        "partition",
        "producer_state_known",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.batches: deque[ProducerBatch] = deque()
        self.in_flight = 0
        """Batches of this partition currently in requests."""
        # Idempotence state (used only when enable.idempotence is on).
        self.next_sequence = 0
        """Base sequence for the next batch sent for the first time."""
        self.last_acked_sequence = -1
        """Last sequence the broker acknowledged."""
        self.producer_state_known = False
        """The broker acknowledged a batch of this partition under the current producer id (any
        epoch), so it keeps sequence state for it: a new epoch must then start at sequence 0 there,
        and batches may pipeline from the first one on."""
        self.outstanding: list[int] = []
        """Base sequences sent and not yet completed, ascending. A retried batch may only go
        when it is the lowest: the broker accepts sequences strictly in order."""


class RecordAccumulator:
    """Batches per partition, bounded memory, readiness and draining (Java's RecordAccumulator).

    Settings: ``batch_size`` (bytes, ``batch.size``), ``linger_ms``
    (``linger.ms``), ``buffer_memory`` (bytes, ``buffer.memory``).
    """

    # Slots: the append fast path in C reads and writes used_bytes and full_batches at their offsets.
    __slots__ = (
        "_drain_start",
        "_nonempty",
        "_queues",
        "batch_count",
        "batch_size",
        "buffer_memory",
        "close_reasons",
        "closing",
        "flushing",
        "full_batches",
        "linger_ms",
        "memory_waiters",
        "used_bytes",
    )

    def __init__(self, *, batch_size: int, linger_ms: int, buffer_memory: int) -> None:
        self.batch_size = max(1, batch_size)
        self.linger_ms = linger_ms
        self.buffer_memory = buffer_memory
        self.used_bytes = 0
        """Bytes held by batches that are not yet completed."""
        self._queues: dict[str, dict[int, PartitionQueue]] = {}
        # Queues holding at least one batch, in first-use order (round-robin drains rotate over it).
        self._nonempty: dict[PartitionQueue, None] = {}
        self._drain_start: dict[int, int] = {}
        self.flushing = False
        """Set by flush(): every batch is ready regardless of linger.ms."""
        self.closing = False
        self.memory_waiters = 0
        self.close_reasons: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)
        """Why each batch left on its first drain (see :data:`CLOSE_REASONS`)."""
        """Callers blocked waiting for memory: batches are sent at once to free it."""
        self.batch_count = 0
        self.full_batches = 0
        """Batches closed because they were full, ever: a change tells the caller to wake the sender."""

    # -- append ----------------------------------------------------------------------

    def queue(self, topic: str, partition: int) -> PartitionQueue:
        """The queue of a partition, created on first use."""
        parts = self._queues.get(topic)
        if parts is None:
            parts = self._queues[topic] = {}
        q = parts.get(partition)
        if q is None:
            q = parts[partition] = PartitionQueue(topic, partition)
        return q

    def has_room(self, record_bound: int) -> bool:
        """Whether a record of at most ``record_bound`` bytes fits in ``buffer.memory`` now."""
        return self.used_bytes + record_bound + BATCH_HEADER_BYTES <= self.buffer_memory

    def append(
        self,
        q: PartitionQueue,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        record_bound: int,
        now_ms: int,
    ) -> ProducerBatch:
        """Append one record to the partition's open batch, opening a new batch if needed.

        The caller checked :meth:`has_room` and the size limits. Returns the batch;
        the record's index in it is ``batch.record_count - 1``. A batch whose
        ``record_count`` is 1 is new (the linger timer starts); a batch no longer
        ``accepting`` is full (ready to send).
        """
        batches = q.batches
        batch: ProducerBatch | None = None
        batch_size = self.batch_size
        if batches:
            last = batches[-1]
            if last.accepting:
                if last.size_bytes + record_bound <= batch_size:
                    batch = last
                else:
                    last.accepting = False
                    self.full_batches += 1
        if batch is None:
            batch = ProducerBatch(q.topic, q.partition, timestamp_ms, now_ms)
            if not batches:
                self._nonempty[q] = None
            batches.append(batch)
            self.used_bytes += BATCH_HEADER_BYTES
            self.batch_count += 1
        added = batch.append(timestamp_ms, key, value, headers)
        self.used_bytes += added
        if batch.size_bytes >= batch_size:
            batch.accepting = False
            self.full_batches += 1
        return batch

    # -- readiness ---------------------------------------------------------------------

    def ready(
        self, now_ms: int, leader_of: Callable[[str, int], int], can_send: Callable[[PartitionQueue], bool]
    ) -> tuple[set[int], int, set[str]]:
        """Nodes with at least one sendable batch, the next time to look again, and leaderless topics.

        A partition's head batch is sendable when it is full, waited ``linger.ms``,
        memory is short, or a flush or close is in progress, unless it backs
        off after a failure. ``can_send`` lets the sender veto a partition
        (ordering rules of idempotence, muted partitions).
        """
        ready_nodes: set[int] = set()
        unknown: set[str] = set()
        next_ms = now_ms + 3_600_000
        linger = self.linger_ms
        force = self.flushing or self.closing or self.memory_waiters > 0
        for q in self._nonempty:
            head = q.batches[0]
            leader = leader_of(q.topic, q.partition)
            if leader < 0:
                unknown.add(q.topic)
                continue
            if head.attempts > 0 and now_ms < head.next_retry_ms:
                next_ms = min(next_ms, head.next_retry_ms)
                continue
            if force or len(q.batches) > 1 or not head.accepting or head.attempts > 0:
                if leader not in ready_nodes and can_send(q):
                    ready_nodes.add(leader)
                continue
            send_at = head.created_ms + linger
            if send_at > now_ms:
                # Not sendable yet, even if its broker is: drain() leaves it to fill until then.
                if send_at < next_ms:
                    next_ms = send_at
            elif leader not in ready_nodes and can_send(q):
                ready_nodes.add(leader)
        return ready_nodes, next_ms, unknown

    def drain(
        self,
        node_id: int,
        now_ms: int,
        max_request_bytes: int,
        leader_of: Callable[[str, int], int],
        can_send: Callable[[PartitionQueue], bool],
        wire_size: Callable[[str, int], int] | None = None,
    ) -> list[ProducerBatch]:
        """Take at most one batch per partition led by ``node_id`` into one request.

        Partitions are visited round-robin from where the last drain for this
        node stopped, so no partition starves. The request holds batches up to
        ``max_request_bytes`` (by ``wire_size(topic, uncompressed_bytes)``, the
        estimated size after compression; uncompressed sizes without it), but
        always at least one.
        Drained batches stop accepting appends and leave their queue.
        """
        queues = [q for q in self._nonempty if leader_of(q.topic, q.partition) == node_id]
        if not queues:
            return []
        start = self._drain_start.get(node_id, 0) % len(queues)
        linger = self.linger_ms
        force = self.flushing or self.closing or self.memory_waiters > 0
        taken: list[ProducerBatch] = []
        size = 0
        count = len(queues)
        for i in range(count):
            q = queues[(start + i) % count]
            batches = q.batches
            head = batches[0]
            if head.attempts > 0 and now_ms < head.next_retry_ms:
                continue
            if (
                head.accepting
                and len(batches) == 1
                and head.attempts == 0
                and now_ms < head.created_ms + linger
                and not force
            ):
                continue  # still filling and within linger.ms: not sent along with the others
            if not can_send(q):
                continue
            batch_bytes = head.size_bytes
            if wire_size is not None:
                batch_bytes = wire_size(head.topic, batch_bytes)
            if taken and size + batch_bytes > max_request_bytes:
                self._drain_start[node_id] = start + i
                break
            q.batches.popleft()
            if head.attempts == 0:
                self.close_reasons[self._close_reason(head, now_ms)] += 1
            head.accepting = False
            move_batch(head, BatchState.IN_FLIGHT)
            q.in_flight += 1
            if not q.batches:
                del self._nonempty[q]
            taken.append(head)
            size += batch_bytes
        else:
            self._drain_start[node_id] = start + 1
        return taken

    def _close_reason(self, batch: ProducerBatch, now_ms: int) -> str:
        if not batch.accepting:
            return "full"  # the next record did not fit: a new batch replaced it
        if self.closing:
            return "closing"
        if self.flushing:
            return "flush"
        if self.memory_waiters:
            return "memory"
        return "linger" if now_ms >= batch.created_ms + self.linger_ms else "request"

    # -- retries, expiry, completion --------------------------------------------------

    def reenqueue(self, batch: ProducerBatch, now_ms: int, backoff_ms: int) -> None:
        """Put a failed batch back at the front of its queue, in sequence order, to retry after the backoff."""
        q = self.queue(batch.topic, batch.partition)
        q.in_flight -= 1
        move_batch(batch, BatchState.QUEUED)
        batch.attempts += 1
        batch.next_retry_ms = now_ms + backoff_ms
        batches = q.batches
        if not batches:
            self._nonempty[q] = None
        if batch.base_sequence >= 0:
            self._insert_by_sequence(batches, batch)  # retried batches stay sorted by sequence
        else:
            batches.appendleft(batch)

    def split(self, batch: ProducerBatch, now_ms: int) -> list[ProducerBatch]:
        """Split a rejected batch into halves-or-smaller batches at the front of its queue (KIP-126);
        a sequenced batch's children take over its sequences (see below).

        Each child holds at most ``batch.size`` bytes and at most half of the
        parent's records, so repeated rejections converge on single records.
        The parent leaves the queue's accounting; it completes when its children do.
        """
        q = self.queue(batch.topic, batch.partition)
        q.in_flight -= 1
        records = batch.decode_records()
        limit = min(
            self.batch_size, max(1, (batch.size_bytes - BATCH_HEADER_BYTES) // 2 + BATCH_HEADER_BYTES)
        )
        max_records = max(1, len(records) // 2)
        children: list[tuple[ProducerBatch, int]] = []
        child: ProducerBatch | None = None
        for index, (ts, key, value, headers) in enumerate(records):
            if (
                child is None
                or child.record_count >= max_records
                or child.size_bytes + record_size_upper_bound(key, value, headers) > limit
            ):
                child = ProducerBatch(batch.topic, batch.partition, ts, batch.created_ms)
                child.accepting = False
                child.parent = batch
                child.attempts = batch.attempts
                children.append((child, index))
            child.append(ts, key, value, headers or None)
        batch.children = children
        batch.pending_children = len(children)
        self.used_bytes -= batch.accounted_bytes
        batch.released = True
        self.batch_count -= 1
        out = [c for c, _ in children]
        for c in out:
            self.used_bytes += c.accounted_bytes
            self.batch_count += 1
        batches = q.batches
        if not batches:
            self._nonempty[q] = None
        if batch.base_sequence >= 0:
            # As Java: the children take over the parent's sequence range, contiguous and in order,
            # and stand among the queue's sequenced batches in sequence order (several batches of a
            # partition may be split, answered in any order).
            sequence = batch.base_sequence
            for c in out:
                c.producer_id = batch.producer_id
                c.producer_epoch = batch.producer_epoch
                c.base_sequence = sequence
                sequence = (sequence + c.record_count) & 0x7FFFFFFF
                self._insert_by_sequence(batches, c)
        else:
            for c in reversed(out):
                batches.appendleft(c)
        return out

    @staticmethod
    def _insert_by_sequence(batches: deque[ProducerBatch], batch: ProducerBatch) -> None:
        """Insert a sequenced batch after the queued batches of lower sequence, ahead of batches
        never sent (the broker takes a partition's sequences strictly in order)."""
        index = 0
        for other in batches:
            if other.base_sequence < 0 or other.base_sequence > batch.base_sequence:
                break
            index += 1
        batches.insert(index, batch)

    def reset_sequences(self, new_producer_id: bool = True, *, broker_state_lost: bool = False) -> None:
        """Forget every partition's sequence state and every queued batch's sequence: a new producer
        id, or (``new_producer_id`` False) a new epoch of the same one. The broker knows the producer
        on no partition after a new id, or when it said it lost the id (``broker_state_lost``)."""
        for parts in self._queues.values():
            for q in parts.values():
                q.next_sequence = 0
                q.last_acked_sequence = -1
                if new_producer_id or broker_state_lost:
                    q.producer_state_known = False
                q.outstanding.clear()
                for batch in q.batches:
                    batch.base_sequence = -1
                    batch.producer_id = -1
                    batch.producer_epoch = -1

    def on_in_flight_done(self, batch: ProducerBatch) -> None:
        """A request carrying ``batch`` got its final answer for it."""
        q = self.queue(batch.topic, batch.partition)
        q.in_flight -= 1

    def release(self, batch: ProducerBatch) -> None:
        """Give back the memory of a completed batch."""
        self.used_bytes -= batch.accounted_bytes
        batch.released = True
        self.batch_count -= 1

    def expired(self, now_ms: int, delivery_timeout_ms: int) -> list[ProducerBatch]:
        """Remove and return queued batches older than ``delivery.timeout.ms``."""
        limit = now_ms - delivery_timeout_ms
        out: list[ProducerBatch] = []
        for q in list(self._nonempty):
            batches = q.batches
            while batches and batches[0].created_ms <= limit:
                batch = batches.popleft()
                batch.accepting = False
                out.append(batch)
            if not batches:
                del self._nonempty[q]
        return out

    def next_expiry_ms(self, delivery_timeout_ms: int) -> int | None:
        """When the oldest queued batch reaches ``delivery.timeout.ms``, or None when nothing is queued."""
        oldest = None
        for q in self._nonempty:
            created = q.batches[0].created_ms
            if oldest is None or created < oldest:
                oldest = created
        return None if oldest is None else oldest + delivery_timeout_ms

    def abort_all(self) -> list[ProducerBatch]:
        """Remove and return every queued batch (for close and fatal errors)."""
        out: list[ProducerBatch] = []
        for q in self._nonempty:
            out.extend(q.batches)
            q.batches.clear()
        self._nonempty.clear()
        for batch in out:
            batch.accepting = False
        return out

    def abort_undrained(self) -> list[ProducerBatch]:
        """Remove and return every queued batch that never left (no sequence yet): an aborting
        transaction fails them instead of sending them. Batches in retry keep their place: the
        broker may have them, and their sequences must resolve."""
        out: list[ProducerBatch] = []
        for q in list(self._nonempty):
            kept = [b for b in q.batches if b.base_sequence >= 0]
            if len(kept) == len(q.batches):
                continue
            out.extend(b for b in q.batches if b.base_sequence < 0)
            q.batches.clear()
            q.batches.extend(kept)
            if not kept:
                del self._nonempty[q]
        for batch in out:
            batch.accepting = False
        return out

    def remove_unsent(self, predicate: Callable[[ProducerBatch], bool]) -> list[ProducerBatch]:
        """Remove and return the queued batches never written to a socket (no sequence either) for
        which ``predicate`` holds: they can fail without any doubt about the log."""
        out: list[ProducerBatch] = []
        for q in list(self._nonempty):
            gone = [b for b in q.batches if not b.sent and b.base_sequence < 0 and predicate(b)]
            if not gone:
                continue
            out.extend(gone)
            kept = [b for b in q.batches if not (not b.sent and b.base_sequence < 0 and predicate(b))]
            q.batches.clear()
            q.batches.extend(kept)
            if not kept:
                del self._nonempty[q]
        for batch in out:
            batch.accepting = False
        return out

    def queued_batches(self) -> Iterable[ProducerBatch]:
        for q in self._nonempty:
            yield from q.batches

    def queue_heads(self) -> Iterable[ProducerBatch]:
        """The first batch of every non-empty queue."""
        for q in self._nonempty:
            yield q.batches[0]

    def has_queued(self) -> bool:
        return bool(self._nonempty)

    def queue_sizes(self, topic: str, partition_count: int) -> list[int] | None:
        """Batches waiting per partition of ``topic``, for adaptive partitioning.

        None unless every partition has a queue (Java's rule: no stats until all partitions were used).
        """
        parts = self._queues.get(topic)
        if parts is None or len(parts) < partition_count:
            return None
        return [len(parts[p].batches) if p in parts else 0 for p in range(partition_count)]
