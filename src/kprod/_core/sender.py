"""The sender's decisions: which batches go to which broker, and what each answer means.

Owns the acknowledgement and retry stages in pure form (Java's ``Sender``
without the network): :meth:`SenderCore.poll` turns ready batches into
produce request plans per broker, assigns idempotent sequences, expires
batches past ``delivery.timeout.ms``; :meth:`SenderCore.on_produce_response`
and :meth:`SenderCore.on_request_failed` complete, retry or fail the batches
of one request. The I/O layer (``kprod._io``) calls these with ``now_ms``
under one lock, writes the requests, and delivers the completions it gets
back. Nothing here touches sockets, threads or clocks.

Invariants:
* A batch is completed exactly once (``BatchState.DONE``); answers for a batch
  that already expired are ignored.
* A batch that was written to a socket and got no answer is never reported as
  "not persisted": it fails as POSSIBLY persisted.
* With idempotence, a batch keeps its sequence across retries, and a retried
  batch only leaves when it is the partition's lowest outstanding sequence.

Why one module of about 770 lines: the drain, sequences, and the meaning of every produce answer
are one decision table over the same batch and partition state; the invariants above span it all.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from kprod._core.accumulator import (
    BATCH_HEADER_BYTES,
    BatchState,
    PartitionQueue,
    ProducerBatch,
    RecordAccumulator,
    move_batch,
)
from kprod._core.metadata import ClusterMetadata
from kprod._core.metrics import ProducerMetrics
from kprod._core.ratio import CompressionRatioEstimator
from kprod._core.transactions import TransactionManager
from kprod.errors import (
    KafkaError,
    KafkaTimeoutError,
    KprodError,
    Persisted,
    ProtocolError,
    RecordTooLargeError,
    is_invalid_metadata,
    is_retriable,
)
from kprod.protocol.produce import PartitionProduceResponse, ProduceResponse
from kprod.records.compression import Compressor

__all__ = ["PollResult", "ProduceRequestPlan", "SenderCore", "SenderSettings"]

_MESSAGE_TOO_LARGE = 10
_CLUSTER_AUTHORIZATION_FAILED = 31
_OUT_OF_ORDER_SEQUENCE_NUMBER = 45
_DUPLICATE_SEQUENCE_NUMBER = 46
_INVALID_PRODUCER_EPOCH = 47
_UNKNOWN_PRODUCER_ID = 59
_PRODUCER_FENCED = 90
_MAX_EPOCH = 32767
_FATAL_FOR_IDEMPOTENCE = frozenset({_CLUSTER_AUTHORIZATION_FAILED, _INVALID_PRODUCER_EPOCH, _PRODUCER_FENCED})
"""Errors after which an idempotent producer cannot go on (Java's fatal errors)."""


@dataclass(frozen=True, slots=True)
class SenderSettings:
    """The settings the sender decides with (Kafka names in the comments)."""

    acks: int  # acks: -1 (all), 0 or 1
    request_timeout_ms: int  # request.timeout.ms
    delivery_timeout_ms: int  # delivery.timeout.ms
    max_request_size: int  # max.request.size (bytes)
    max_in_flight: int  # max.in.flight.requests.per.connection
    retries: int  # retries
    retry_backoff_ms: int  # retry.backoff.ms
    retry_backoff_max_ms: int  # retry.backoff.max.ms
    idempotent: bool  # enable.idempotence
    metrics_window_ms: int = 30_000  # metrics.sample.window.ms
    metrics_num_samples: int = 2  # metrics.num.samples


@dataclass(slots=True, eq=False)
class ProduceRequestPlan:
    """One Produce request for one broker: the batches it carries and how to send it."""

    node_id: int
    batches: list[ProducerBatch]
    acks: int
    timeout_ms: int
    created_ms: int
    transactional_id: str | None = None
    compressed: bool = False
    """Set by :meth:`encode_batches` when a codec was applied."""
    answered: bool = False
    """Set by the I/O layer once the request got its answer (acks=0: once it was written), or its
    connection died."""

    @property
    def expects_response(self) -> bool:
        return self.acks != 0

    def encode_batches(
        self, compressor: Compressor | None
    ) -> list[tuple[str, list[tuple[int, bytes | bytearray]]]]:
        """Close every batch into its wire bytes (header, CRC, compression) and group them by topic.

        Safe to call outside the accumulator lock: drained batches are no longer
        reachable by appenders.
        """
        by_topic: dict[str, list[tuple[int, bytes | bytearray]]] = {}
        self.compressed = compressor is not None
        transactional = self.transactional_id is not None
        for batch in self.batches:
            encoded = batch.build(
                producer_id=batch.producer_id,
                producer_epoch=batch.producer_epoch,
                base_sequence=batch.base_sequence,
                transactional=transactional,
                compression=compressor,
            )
            batch.encoded = encoded
            by_topic.setdefault(batch.topic, []).append((batch.partition, encoded))
        return list(by_topic.items())


@dataclass(slots=True)
class PollResult:
    """What the I/O layer must do after one :meth:`SenderCore.poll`."""

    requests: list[ProduceRequestPlan] = field(default_factory=list)
    completed: list[ProducerBatch] = field(default_factory=list)
    connect_nodes: set[int] = field(default_factory=set)
    """Nodes with data to send and no usable connection: connect to them."""
    next_wakeup_ms: int = 0
    """Call poll again no later than this (ms)."""


class SenderCore:
    """Java's Sender loop, one step at a time, without I/O."""

    def __init__(
        self,
        settings: SenderSettings,
        accumulator: RecordAccumulator,
        metadata: ClusterMetadata,
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.accumulator = accumulator
        self.metadata = metadata
        self._rng = rng
        self.producer_id = -1
        self.producer_epoch = -1
        self._in_flight: dict[int, ProduceRequestPlan] = {}
        self.fatal_error: KprodError | None = None
        """Set when the producer can no longer send (for example a fenced producer id)."""
        # Set when a partition's sequences can no longer continue (a sequenced batch failed, a
        # real gap, an unknown producer id, a split): once nothing is in flight, the producer
        # takes a new producer id and every partition restarts at sequence 0 (KIP-360's goal:
        # one bad partition does not kill the producer).
        self._bump_required = False
        self.local_epoch_bump = True
        """KIP-360 as Java's idempotent producer does it: restart sequences under the same producer
        id with the epoch + 1, no request. Apache Kafka takes it (a new epoch may start at sequence
        0); Tansu answers PRODUCER_FENCED, and then this turns off and the producer takes a new
        producer id instead (one InitProducerId)."""
        self._state_lost = False
        """UNKNOWN_PRODUCER_ID: the broker lost its state for the producer id. The next reset still
        bumps the epoch locally, as Java does (Apache Kafka opens state for a new epoch that starts
        at sequence 0), but no partition's state is known after it: first batches go alone again."""
        self._new_id_required = False
        """UNKNOWN_PRODUCER_ID answered to a batch already sent under a local bump: this broker does
        not take bumps of an id it lost, so the next reset takes a new producer id."""
        self._epoch_base = -1
        """The epoch InitProducerId gave: a fenced answer for a later, locally bumped epoch means
        the broker refuses local bumps, not that the producer is fenced."""
        self.epoch_bumps = 0
        self.compression_ratio = CompressionRatioEstimator()
        self.metrics = ProducerMetrics(settings.metrics_window_ms, settings.metrics_num_samples)
        """Java's producer metrics, recorded per batch and per request (never per record)."""
        self._now_ms = 0
        """The time of the latest call that gave one (for completions recorded deeper down)."""
        """Observed compressed/uncompressed ratio per topic (only fed when compression is on)."""
        self._compressed = False
        self.retries_total = 0
        self.producer_id_resets = 0
        self.batch_splits = 0
        self.txn: TransactionManager | None = None
        """The transaction manager of a producer with a transactional.id: it owns the producer id
        and epoch, says which partitions may be drained, and hears of every failed batch."""

    # -- idempotence ----------------------------------------------------------------

    @property
    def needs_producer_id(self) -> bool:
        """True while an idempotent producer has no producer id: nothing may be drained.

        A transactional producer gets its id from the transaction manager (``init_transactions``),
        so the I/O layer must not ask for one itself; its batches wait all the same.
        """
        return self.settings.idempotent and self.producer_id < 0 and self.fatal_error is None

    def _sync_transactional_producer_id(self) -> None:
        """Take the transaction manager's producer id and epoch when they changed: sequences
        restart at 0 (after init_transactions, an epoch bump, or an EndTxn under transactions v2)."""
        txn = self.txn
        if txn is not None and txn.take_sequences_reset():
            same_id = txn.producer_id == self.producer_id
            self.producer_id = txn.producer_id
            self.producer_epoch = txn.producer_epoch
            self.accumulator.reset_sequences(new_producer_id=not same_id)

    def on_producer_id(self, producer_id: int, producer_epoch: int) -> None:
        """InitProducerId succeeded: sequences start from 0 under the new id."""
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self._epoch_base = producer_epoch

    def fail_fatally(self, error: KprodError) -> list[ProducerBatch]:
        """Stop sending: fail every queued batch with ``error`` and remember it for new sends."""
        self.fatal_error = error
        out: list[ProducerBatch] = []
        for batch in self.accumulator.abort_all():
            self._complete(batch, -1, -1, _possibly_persisted(error) if batch.maybe_written else error, out)
        return out

    def _can_send(self, q: PartitionQueue) -> bool:
        txn = self.txn
        if txn is not None and not txn.is_send_allowed(q.topic, q.partition):
            return False  # its AddPartitionsToTxn has not been answered yet
        if self.settings.max_in_flight == 1 and q.in_flight > 0:
            return False  # max.in.flight=1 guarantees order by sending one batch per partition at a time
        if self.settings.idempotent:
            if not q.producer_state_known and q.in_flight > 0:
                # Until the broker has acknowledged a batch of this partition under the current
                # producer id, it keeps no sequence state for it and takes a batch with any first
                # sequence (ProducerAppendInfo.checkSequence): were the first batch refused (too
                # large, say) while the second is in flight, the second would be written first.
                # So the first batch goes alone; pipelining starts after its answer. (A new epoch
                # of a known producer id must start at 0: safe to pipeline.)
                return False
            head = q.batches[0]
            if head.base_sequence >= 0 and q.outstanding and head.base_sequence != q.outstanding[0]:
                return False
            if self._bump_required and not (
                head.base_sequence >= 0 and head.maybe_written and not head.doubt_settled
            ):
                # A new producer id is pending: only batches in doubt go again first, under the old
                # id and sequence, so the broker can still recognise them as duplicates.
                return False
        return True

    def _maybe_reset_producer_id(self) -> bool:
        """Apply a pending producer-id reset once nothing is in flight; True while sending must wait."""
        if not self._bump_required:
            return False
        if self._in_flight or any(
            b.base_sequence >= 0 and b.maybe_written and not b.doubt_settled
            for b in self.accumulator.queue_heads()
        ):
            # Batches in doubt at the head of their queue resolve first (see _can_send). One behind
            # a head that is not in doubt can never go under the old id: it is not waited for.
            return False
        self._bump_required = False
        new_id, self._new_id_required = self._new_id_required, False
        state_lost, self._state_lost = self._state_lost, False
        bump = self.local_epoch_bump and not new_id and 0 <= self.producer_epoch < _MAX_EPOCH
        if bump:
            self.producer_epoch += 1
            self.epoch_bumps += 1
        else:  # a broker that refuses local bumps, or the epoch is exhausted: a new producer id
            self.producer_id = -1
            self.producer_epoch = -1
            self.producer_id_resets += 1
        self.accumulator.reset_sequences(new_producer_id=not bump, broker_state_lost=state_lost)
        return False

    # -- the loop ------------------------------------------------------------------------

    def poll(self, now_ms: int, node_slots: Callable[[int], int]) -> PollResult:
        """One sender step: expire, find ready brokers, drain their batches into request plans.

        ``node_slots(node_id)`` returns how many more requests the connection to
        that node can take now, or -1 when there is no ready connection (the node
        is then listed in ``connect_nodes``).
        """
        result = PollResult()
        self._now_ms = now_ms
        settings = self.settings
        acc = self.accumulator
        if self.txn is not None:
            self.txn.on_poll(now_ms)
            self._sync_transactional_producer_id()
            if self.txn.is_aborting:
                self._abort_undrained(result.completed)
        self._expire(now_ms, result.completed)
        metadata = self.metadata
        leader_of = metadata.leader
        if settings.idempotent and self.txn is None:
            # Before readiness: a local epoch bump needs no request, so this round may already send
            # under the new epoch (else nothing would wake the sender for the waiting batches).
            self._maybe_reset_producer_id()
        ready, next_ms, unknown = acc.ready(now_ms, leader_of, self._can_send)
        if unknown:
            metadata.request_update()
        if not self.needs_producer_id and self.fatal_error is None:
            for node_id in ready:
                slots = node_slots(node_id)
                if slots < 0:
                    result.connect_nodes.add(node_id)
                    continue
                while slots > 0:
                    batches = acc.drain(
                        node_id,
                        now_ms,
                        settings.max_request_size,
                        leader_of,
                        self._can_send,
                        self.compression_ratio.estimated_size if self._compressed else None,
                    )
                    if not batches:
                        break
                    if settings.idempotent:
                        self._assign_sequences(batches)
                    plan = ProduceRequestPlan(
                        node_id=node_id,
                        batches=batches,
                        acks=settings.acks,
                        timeout_ms=settings.request_timeout_ms,
                        created_ms=now_ms,
                        transactional_id=None if self.txn is None else self.txn.transactional_id,
                    )
                    result.requests.append(plan)
                    # acks=0 too: until on_written, its bytes may still be in the process's buffers.
                    self._in_flight[id(plan)] = plan
                    metrics = self.metrics
                    metrics.records_per_request.record(sum(b.record_count for b in batches), now_ms)
                    queue_times = [now_ms - b.created_ms for b in batches]
                    metrics.record_queue_time.record(
                        sum(queue_times), now_ms, len(queue_times), max(queue_times)
                    )
                    slots -= 1
        expiry = acc.next_expiry_ms(settings.delivery_timeout_ms)
        if expiry is not None and expiry < next_ms:
            next_ms = expiry
        for plan in self._in_flight.values():
            for batch in plan.batches:
                if not batch.done:
                    deadline = batch.created_ms + settings.delivery_timeout_ms
                    if deadline < next_ms:
                        next_ms = deadline
        result.next_wakeup_ms = max(next_ms, now_ms)
        return result

    def _abort_undrained(self, completed: list[ProducerBatch]) -> None:
        """An aborting transaction: fail the batches that never left with the transaction's error
        (Java's ``abortUndrainedBatches``); none of them can be part of a committed transaction."""
        txn = self.txn
        assert txn is not None
        undrained = self.accumulator.abort_undrained()
        if not undrained:
            return
        error = txn.last_error
        reason = (
            KprodError(
                f"the transaction was aborted before this record was sent (cause: {error})",
                stage="transactions",
            )
            if error is not None
            else KprodError("the transaction was aborted before this record was sent", stage="transactions")
        )
        for batch in undrained:
            self._complete(batch, -1, -1, reason, completed, report_to_txn=False)

    def _assign_sequences(self, batches: list[ProducerBatch]) -> None:
        acc = self.accumulator
        for batch in batches:
            q = acc.queue(batch.topic, batch.partition)
            if batch.base_sequence < 0:
                batch.producer_id = self.producer_id
                batch.producer_epoch = self.producer_epoch
                batch.base_sequence = q.next_sequence
                q.next_sequence = (q.next_sequence + batch.record_count) & 0x7FFFFFFF
                q.outstanding.append(batch.base_sequence)
                q.outstanding.sort()

    def _expire(self, now_ms: int, completed: list[ProducerBatch]) -> None:
        timeout = self.settings.delivery_timeout_ms
        for batch in self.accumulator.expired(now_ms, timeout):
            persisted = Persisted.POSSIBLY_PERSISTED if batch.maybe_written else Persisted.NOT_PERSISTED
            if batch.base_sequence >= 0:
                self._forget_sequence(self.accumulator.queue(batch.topic, batch.partition), batch)
            self._complete(batch, -1, -1, self._timeout_error(batch, now_ms, persisted), completed)
        limit = now_ms - timeout
        for key, plan in list(self._in_flight.items()):
            if all(b.done for b in plan.batches):
                del self._in_flight[key]
                continue
            for batch in plan.batches:
                if not batch.done and batch.created_ms <= limit:
                    # Its request is still unanswered: the answer will be ignored.
                    self.accumulator.on_in_flight_done(batch)
                    error = self._timeout_error(batch, now_ms, Persisted.POSSIBLY_PERSISTED)
                    self._complete(batch, -1, -1, error, completed)

    def _timeout_error(self, batch: ProducerBatch, now_ms: int, persisted: Persisted) -> KafkaTimeoutError:
        cause = batch.last_error
        text = (
            f"Expiring {batch.record_count} record(s) for {batch.topic}-{batch.partition}: "
            f"{now_ms - batch.created_ms} ms has passed since batch creation "
            f"(delivery.timeout.ms={self.settings.delivery_timeout_ms}; records are {persisted.value})"
        )
        if cause is not None:
            text += f"; last error: {cause}"
        return KafkaTimeoutError(text, stage="delivery", persisted=persisted, last_cause=cause)

    # -- answers ---------------------------------------------------------------------------

    def on_sent(self, plan: ProduceRequestPlan) -> None:
        """The request was handed to its connection (its bytes may still wait in the process).

        With acks=0 its batches complete at :meth:`on_written`, once every byte has left the
        process, as the Java producer completes them once the socket took the whole request.
        """
        compressed = plan.compressed
        metrics = self.metrics
        now_ms = plan.created_ms
        for batch in plan.batches:
            batch.sent = True
            wire = len(batch.encoded) if batch.encoded is not None else batch.size_bytes
            if compressed and batch.encoded is not None:
                self._compressed = True
                self.compression_ratio.observe(batch.topic, batch.size_bytes, wire)
            if batch.attempts == 0:
                ratio = wire / batch.size_bytes if batch.size_bytes else 1.0
                metrics.batch_size.record(wire, now_ms)
                metrics.compression_rate.record(ratio, now_ms)
                records_bytes = batch.size_bytes - BATCH_HEADER_BYTES
                if batch.record_count:
                    metrics.record_size.record(
                        records_bytes, now_ms, batch.record_count, records_bytes / batch.record_count
                    )
                topic = metrics.topic(batch.topic)
                topic["byte"].record(wire, now_ms)
                topic["compression"].record(ratio, now_ms)

    def on_written(self, plan: ProduceRequestPlan) -> list[ProducerBatch]:
        """acks=0: every byte of ``plan``'s request left the process. Its batches are done, with
        offset -1 (no answer will say more); returns them."""
        self._in_flight.pop(id(plan), None)
        out: list[ProducerBatch] = []
        for batch in plan.batches:
            if not batch.done:
                self.accumulator.on_in_flight_done(batch)
                self._complete(batch, -1, -1, None, out)
        return out

    def on_produce_response(
        self, plan: ProduceRequestPlan, response: ProduceResponse, now_ms: int
    ) -> list[ProducerBatch]:
        """Apply a Produce response: complete, retry or fail each batch of ``plan``."""
        self._in_flight.pop(id(plan), None)
        self._now_ms = now_ms
        latency = now_ms - plan.created_ms
        self.metrics.request_latency.record(latency, now_ms)
        self.metrics.node(plan.node_id)["request-latency"].record(latency, now_ms)
        for node_id, (host, port, _rack) in response.node_endpoints.items():
            self.metadata.learn_broker(node_id, host, port)  # KIP-951: new leaders' addresses
        by_tp: dict[tuple[str, int], ProducerBatch] = {(b.topic, b.partition): b for b in plan.batches}
        completed: list[ProducerBatch] = []
        for topic in response.topics:
            for part in topic.partitions:
                batch = by_tp.pop((topic.name, part.index), None)
                if batch is None or batch.done:
                    continue
                try:
                    self._handle_partition(batch, part, now_ms, completed)
                except Exception as exc:  # a bug here must not strand the batch
                    # The plan has left _in_flight: a batch that is neither queued nor done now
                    # would never resolve. Treat the answer as lost for it (retry or fail).
                    self._recover_batch(batch, exc, now_ms, completed)
        for batch in by_tp.values():
            # The broker did not answer for this partition: treat as a lost answer.
            if not batch.done:
                batch.maybe_written = True
                error = KafkaError(
                    13,
                    "no answer for this partition in the Produce response",
                    persisted=Persisted.POSSIBLY_PERSISTED,
                )
                self._retry_or_fail(batch, error, now_ms, completed)
        return completed

    def _recover_batch(
        self, batch: ProducerBatch, exc: Exception, now_ms: int, completed: list[ProducerBatch]
    ) -> None:
        """Retry (or fail) a batch whose answer could not be applied: it must end queued or done."""
        if batch.state is not BatchState.IN_FLIGHT:
            return  # already re-queued, split or completed before the failure
        batch.maybe_written = True
        error = ProtocolError(
            f"could not apply the Produce answer for {batch.topic}[{batch.partition}]: {exc!r}",
            persisted=Persisted.POSSIBLY_PERSISTED,
        )
        try:
            self._retry_or_fail(batch, error, now_ms, completed)
        except Exception:  # last resort: fail it rather than leave it pending
            if not batch.done:
                self._complete(batch, -1, -1, error, completed)

    def _handle_partition(
        self,
        batch: ProducerBatch,
        part: PartitionProduceResponse,
        now_ms: int,
        completed: list[ProducerBatch],
    ) -> None:
        acc = self.accumulator
        code = part.error_code
        idempotent = self.settings.idempotent
        if code == 0 or (code == _DUPLICATE_SEQUENCE_NUMBER and idempotent):
            acc.on_in_flight_done(batch)
            if batch.base_sequence >= 0:
                q = acc.queue(batch.topic, batch.partition)
                self._forget_sequence(q, batch)
                last = batch.base_sequence + batch.record_count - 1
                if last > q.last_acked_sequence:
                    q.last_acked_sequence = last
                if batch.producer_id == self.producer_id:
                    q.producer_state_known = True
            # DUPLICATE_SEQUENCE_NUMBER: already written earlier; the broker did not say where.
            base_offset = part.base_offset if code == 0 else -1
            self._complete(batch, base_offset, part.log_append_time_ms, None, completed)
            return
        leader = part.current_leader
        leader_moved = False
        if leader is not None and leader[0] >= 0:
            leader_moved = self.metadata.update_leader(batch.topic, batch.partition, leader[0], leader[1])
        if is_invalid_metadata(code):
            self.metadata.request_update()
        where = f"{batch.topic}-{batch.partition}"
        error: KprodError = KafkaError(code, f"{part.error_message or 'produce failed'} for {where}")
        if code == _MESSAGE_TOO_LARGE and batch.record_count > 1:
            # KIP-126: split and resend; attempts are not consumed. As in Java, the children take
            # over the parent's sequence range, contiguous and in order: the broker wrote none of
            # it, so the partition's sequences go on without a gap (batches after it that were in
            # flight are answered OUT_OF_ORDER and follow the children).
            self.batch_splits += 1
            self.metrics.batch_split.record(1, now_ms)
            children = acc.split(batch, now_ms)
            if batch.base_sequence >= 0:
                q = acc.queue(batch.topic, batch.partition)
                self._forget_sequence(q, batch)
                q.outstanding.extend(child.base_sequence for child in children)
                q.outstanding.sort()
            return
        if code == _MESSAGE_TOO_LARGE:
            error = RecordTooLargeError(
                f"the broker rejected a record of {batch.size_bytes} bytes for {where} as too large "
                "(MESSAGE_TOO_LARGE): the topic's max.message.bytes (or the broker's message.max.bytes) is "
                "smaller; raise it, or send smaller records (max.request.size only bounds requests)"
            )
        if (
            idempotent
            and self.txn is None
            and code in (_PRODUCER_FENCED, _INVALID_PRODUCER_EPOCH)
            and batch.producer_epoch > self._epoch_base
            and batch.producer_id == self.producer_id
        ):
            # Our own local epoch bump was refused (Tansu): not fenced. Take a new producer id
            # from now on; the batch was not written and goes again under it.
            self.local_epoch_bump = False
            batch.doubt_settled = True
            self._bump_required = True
            self._retry_or_fail(batch, error, now_ms, completed)
            return
        if idempotent and code in _FATAL_FOR_IDEMPOTENCE:
            # The producer id is fenced or not authorized: nothing more can be sent with it.
            acc.on_in_flight_done(batch)
            self._complete(batch, -1, -1, error, completed)
            self.fail_fatally_into(error, completed)
            return
        retriable = is_retriable(code)
        if idempotent and code in (_OUT_OF_ORDER_SEQUENCE_NUMBER, _UNKNOWN_PRODUCER_ID):
            # OUT_OF_ORDER proves no earlier attempt was written (that would be answered
            # DUPLICATE_SEQUENCE_NUMBER). UNKNOWN_PRODUCER_ID proves nothing (the broker lost our
            # state), but resending under the old id cannot tell either: stop waiting on it.
            if code == _OUT_OF_ORDER_SEQUENCE_NUMBER:
                batch.maybe_written = False
            batch.doubt_settled = True
            q = acc.queue(batch.topic, batch.partition)
            if code == _UNKNOWN_PRODUCER_ID or batch.base_sequence == q.last_acked_sequence + 1:
                # The broker lost our state, or a real gap: restart sequences under a new epoch
                # (Java's canRetry bumps for both) and retry.
                self._bump_required = True
                if code == _UNKNOWN_PRODUCER_ID:
                    self._state_lost = True
                    if batch.producer_id == self.producer_id and batch.producer_epoch > self._epoch_base:
                        # Lost again under a local bump: bumps do not help here, a new id does.
                        self._new_id_required = True
            # Otherwise an earlier batch failed first: this one goes again after it (Java's rule).
            retriable = True
        if retriable:
            # KIP-951: the answer named a new leader, so the retry goes there without backing off.
            self._retry_or_fail(batch, error, now_ms, completed, skip_backoff=leader_moved)
        else:
            acc.on_in_flight_done(batch)
            if batch.base_sequence >= 0:
                self._forget_sequence(acc.queue(batch.topic, batch.partition), batch)
            self._complete(batch, -1, -1, error, completed)

    def fail_fatally_into(self, error: KprodError, completed: list[ProducerBatch]) -> None:
        completed.extend(self.fail_fatally(error))

    def on_request_failed(
        self, plan: ProduceRequestPlan, error: KprodError, now_ms: int
    ) -> list[ProducerBatch]:
        """No answer came for ``plan`` (disconnect or request timeout): retry or fail its batches."""
        self._in_flight.pop(id(plan), None)
        self._now_ms = now_ms
        self.metadata.request_update()
        completed: list[ProducerBatch] = []
        for batch in plan.batches:
            if not batch.done:
                if batch.sent:
                    batch.maybe_written = True
                    batch.doubt_settled = False
                self._retry_or_fail(batch, error, now_ms, completed)
        return completed

    def _retry_or_fail(
        self,
        batch: ProducerBatch,
        error: KprodError,
        now_ms: int,
        completed: list[ProducerBatch],
        *,
        skip_backoff: bool = False,
    ) -> None:
        settings = self.settings
        acc = self.accumulator
        batch.last_error = error
        deadline = batch.created_ms + settings.delivery_timeout_ms
        if batch.attempts < settings.retries and now_ms < deadline and self.fatal_error is None:
            self.retries_total += 1
            self.metrics.record_retry.record(batch.record_count, now_ms)
            self.metrics.topic(batch.topic)["record-retry"].record(batch.record_count, now_ms)
            acc.reenqueue(batch, now_ms, 0 if skip_backoff else self.backoff_ms(batch.attempts))
            return
        acc.on_in_flight_done(batch)
        if batch.base_sequence >= 0:
            self._forget_sequence(acc.queue(batch.topic, batch.partition), batch)
        # A broker error answer means that attempt was not written; an earlier unanswered one may have been.
        maybe = batch.maybe_written or (batch.sent and not isinstance(error, KafkaError))
        persisted = Persisted.POSSIBLY_PERSISTED if maybe else Persisted.NOT_PERSISTED
        if now_ms >= deadline:
            error = self._timeout_error(batch, now_ms, persisted)
        elif error.persisted is not persisted and error.persisted is not Persisted.PERSISTED:
            # A copy: the error object may be shared by every batch of a plan or a connection, and
            # whether the log may hold the records is this batch's own story.
            error = _with_persisted(error, persisted)
        self._complete(batch, -1, -1, error, completed)

    def backoff_ms(self, attempts: int) -> int:
        """Exponential retry backoff with ±20 % jitter (retry.backoff.ms up to retry.backoff.max.ms)."""
        base = self.settings.retry_backoff_ms
        cap = max(base, self.settings.retry_backoff_max_ms)
        raw = min(cap, base * (2 ** min(attempts, 30)))
        jitter = 1.0 + (self._rng.random() * 0.4 - 0.2)
        return max(0, min(cap, int(raw * jitter)))

    @staticmethod
    def _forget_sequence(q: PartitionQueue, batch: ProducerBatch) -> None:
        try:
            q.outstanding.remove(batch.base_sequence)
        except ValueError:
            pass

    def _complete(
        self,
        batch: ProducerBatch,
        base_offset: int,
        log_append_time_ms: int,
        error: BaseException | None,
        completed: list[ProducerBatch],
        report_to_txn: bool = True,
    ) -> None:
        """Complete ``batch`` once, release its memory, and list it (and a finished split parent).

        ``report_to_txn`` False: the failure is the transaction's own abort, not news for it.
        Raises BatchStateError for a batch completed already.
        """
        move_batch(batch, BatchState.DONE)
        now_ms = self._now_ms  # a split parent is not counted: its children are
        outcome = "record-send" if error is None else "record-error"
        (self.metrics.record_send if error is None else self.metrics.record_error).record(
            batch.record_count, now_ms
        )
        self.metrics.topic(batch.topic)[outcome].record(batch.record_count, now_ms)
        batch.base_offset = base_offset
        batch.log_append_time_ms = log_append_time_ms
        batch.error = error
        self.accumulator.release(batch)
        completed.append(batch)
        txn = self.txn
        if error is not None and txn is not None and report_to_txn:
            # A failed record makes its transaction abortable (fenced or epoch errors: fatal); the
            # transaction manager owns the producer id, so no producer-id reset here.
            txn.on_batch_error(error, sequenced=batch.base_sequence >= 0)
        elif error is not None and txn is None and batch.base_sequence >= 0:
            # Later sequences of this partition now follow a gap: start again under a new producer id.
            self._bump_required = True
        parent = batch.parent
        while parent is not None:  # a split batch completes when all its children did (recursively)
            parent.pending_children -= 1
            if error is not None and parent.error is None:
                parent.error = error
            if parent.pending_children:
                break
            move_batch(parent, BatchState.DONE)
            completed.append(parent)
            parent = parent.parent

    def fail_unsent(
        self, error: KprodError, predicate: Callable[[ProducerBatch], bool]
    ) -> list[ProducerBatch]:
        """Fail the queued batches that never left for which ``predicate`` holds (an authentication
        failure: waiting for ``delivery.timeout.ms`` would not change the answer)."""
        out: list[ProducerBatch] = []
        for batch in self.accumulator.remove_unsent(predicate):
            self._complete(batch, -1, -1, error, out)
        return out

    def abort_incomplete(self, error: KprodError) -> list[ProducerBatch]:
        """Fail every batch not yet completed, queued or in flight (close with a timeout, or a dead I/O task)."""
        out: list[ProducerBatch] = []
        for batch in self.accumulator.abort_all():
            self._complete(batch, -1, -1, _possibly_persisted(error) if batch.maybe_written else error, out)
        for plan in self._in_flight.values():
            for batch in plan.batches:
                if not batch.done:
                    # Written to a socket and never answered: the broker may have it.
                    err = _possibly_persisted(error)
                    self._complete(batch, -1, -1, err if batch.sent else error, out)
        self._in_flight.clear()
        return out

    def in_flight_batches(self) -> list[ProducerBatch]:
        """Batches in requests that were not answered yet."""
        return [b for plan in self._in_flight.values() for b in plan.batches if not b.done]

    @property
    def wants_poll(self) -> bool:
        """True when the next poll has work even without new records (a pending producer-id reset)."""
        return self._bump_required

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)


def _with_persisted(error: KprodError, persisted: Persisted) -> KprodError:
    """A copy of ``error`` (same class, message and attributes) marked ``persisted``."""
    err = error.__class__.__new__(error.__class__)
    err.args = error.args
    err.__dict__.update(error.__dict__)
    err.persisted = persisted
    err.__cause__ = error
    return err


def _possibly_persisted(error: KprodError) -> KprodError:
    """A copy of ``error`` (same class, message and attributes) marked POSSIBLY_PERSISTED."""
    return _with_persisted(error, Persisted.POSSIBLY_PERSISTED)
