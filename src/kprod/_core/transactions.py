"""The transaction manager: the transactional producer's state machine, in pure form.

Owns what Java's ``TransactionManager`` owns for a producer with a ``transactional.id``: the
transaction state and its valid transitions, the producer id and epoch, the coordinators, the
partitions and offsets added to the current transaction, the queue of transactional requests (one
in flight at a time, in priority order), what each answer means, and the user operations
(``init_transactions``, ``commit_transaction``, ...) those requests complete. It decides *what* to
send; the I/O layer turns each :class:`TxnRequest` into a kio request, sends it to the node the
request names (or the least-loaded node for ``FindCoordinator``), and hands the decoded answer back
to :meth:`TransactionManager.on_response`. Nothing here touches sockets, threads or clocks: every
call that needs time takes ``now_ms``.

Why one module of this size: the states, the request queue and the meaning of every answer are one
state machine; split, each part would need the others' private state (Java's ``TransactionManager``
keeps them in one class too).

Rules this module keeps:

* Every state change goes through :meth:`TransactionManager._transition`, which checks the table
  :data:`VALID_SOURCES` (Java's ``State.isTransitionValid``) and raises
  :class:`InvalidTxnStateError` for anything else.
* At most one transactional request is in flight (:attr:`TransactionManager.in_flight`): the
  coordinator sees the operations of one producer in the order the user asked for them.
* A user operation is completed exactly once (:class:`TxnOperation` refuses a second completion).
  An operation whose caller stopped waiting (its timeout passed) keeps going; calling the same
  method again returns the same operation, so a timed-out commit or abort completes the outcome
  it began, never the other one.
* Errors are sorted as Java sorts them (KIP-1050): *retriable* answers are retried with backoff
  inside the operation; *abortable* ones move the transaction to ``ABORTABLE_ERROR``, after which
  only ``abort_transaction`` works and the producer is usable again; *fatal* ones (fenced, wrong
  epoch, transactional-id authorization) move to ``FATAL_ERROR``, where only closing is left.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from kprod.errors import KafkaError, KprodError, is_retriable

__all__ = [
    "VALID_SOURCES",
    "ConsumerGroupMetadata",
    "CoordinatorType",
    "InvalidTxnStateError",
    "ProducerFencedError",
    "TransactionAbortableError",
    "TransactionManager",
    "TxnOperation",
    "TxnRequest",
    "TxnRequestKind",
    "TxnResponse",
    "TxnState",
]

TopicPartition = tuple[str, int]

# Kafka error codes this module reasons about (Errors.java).
_NONE = 0
_UNKNOWN_TOPIC_OR_PARTITION = 3
_REQUEST_TIMED_OUT = 7
_COORDINATOR_LOAD_IN_PROGRESS = 14
_COORDINATOR_NOT_AVAILABLE = 15
_NOT_COORDINATOR = 16
_ILLEGAL_GENERATION = 22
_UNKNOWN_MEMBER_ID = 25
_TOPIC_AUTHORIZATION_FAILED = 29
_GROUP_AUTHORIZATION_FAILED = 30
_CLUSTER_AUTHORIZATION_FAILED = 31
_INVALID_PRODUCER_EPOCH = 47
_INVALID_TXN_STATE = 48
_INVALID_PRODUCER_ID_MAPPING = 49
_TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
_CONCURRENT_TRANSACTIONS = 51
_UNSUPPORTED_VERSION = 35
_OPERATION_NOT_ATTEMPTED = 55
_UNKNOWN_PRODUCER_ID = 59
_FENCED_INSTANCE_ID = 82
_PRODUCER_FENCED = 90
_TRANSACTION_ABORTABLE = 120

_COORDINATOR_MOVED = frozenset({_COORDINATOR_NOT_AVAILABLE, _NOT_COORDINATOR})
_FENCED = frozenset({_INVALID_PRODUCER_EPOCH, _PRODUCER_FENCED})
_ADD_PARTITIONS_RETRY_BACKOFF_MS = 20
"""Java's short backoff for the first AddPartitionsToTxn that meets CONCURRENT_TRANSACTIONS: the
previous transaction is still being completed and will be done in a few milliseconds. kprod starts
lower (:data:`_ADD_PARTITIONS_FIRST_RETRY_MS`) and doubles up to it: on Kafka 4.4 the markers of
the previous transaction are written 2-5 ms after its EndTxn, so a first wait of 20 ms made every
back-to-back transaction 20 ms longer (measured: 1,000-record transactions 30 -> 44 k records/s)."""
_ADD_PARTITIONS_FIRST_RETRY_MS = 2
_AWAIT_PREVIOUS_MAX_MS = 100
"""How long after an EndTxn answer, at most, a transactions-v2 producer holds the next
transaction's batches and offsets while the ended transaction's markers are still being written
(see :meth:`TransactionManager.on_poll`): the broker's own retry of such a Produce,
``add.partitions.to.txn.retry.backoff.max.ms``, also stops at 100 ms. After it they go out and
the broker's retry takes over, as for the Java producer."""
_PREVIOUS_COMPLETING = frozenset({"PrepareCommit", "PrepareAbort"})
"""DescribeTransactions states in which the previous transaction's markers are not all written."""


class TxnState(enum.Enum):
    """The states of a transactional producer (Java's ``TransactionManager.State``)."""

    UNINITIALIZED = "uninitialized"
    INITIALIZING = "initializing"
    READY = "ready"
    IN_TRANSACTION = "in transaction"
    COMMITTING = "committing"
    ABORTING = "aborting"
    ABORTABLE_ERROR = "abortable error"
    FATAL_ERROR = "fatal error"


_S = TxnState
VALID_SOURCES: Mapping[TxnState, frozenset[TxnState]] = {
    _S.UNINITIALIZED: frozenset({_S.READY, _S.ABORTABLE_ERROR}),
    _S.INITIALIZING: frozenset({_S.UNINITIALIZED, _S.ABORTING, _S.COMMITTING}),
    _S.READY: frozenset({_S.INITIALIZING, _S.COMMITTING, _S.ABORTING}),
    _S.IN_TRANSACTION: frozenset({_S.READY}),
    _S.COMMITTING: frozenset({_S.IN_TRANSACTION}),
    _S.ABORTING: frozenset({_S.IN_TRANSACTION, _S.ABORTABLE_ERROR}),
    _S.ABORTABLE_ERROR: frozenset({_S.IN_TRANSACTION, _S.COMMITTING, _S.ABORTABLE_ERROR}),
    _S.FATAL_ERROR: frozenset(TxnState),
}
"""For each state, the states it may be entered from (Java's table, with two differences).
``INITIALIZING`` is entered from ``COMMITTING``/``ABORTING`` when an epoch bump follows EndTxn
(Java passes through READY). ``ABORTABLE_ERROR`` is not entered from ``INITIALIZING``: an error
while initializing leaves no transaction to abort, so it is fatal (Java 4 makes an authorization
error there abortable)."""


class InvalidTxnStateError(KprodError):
    """A transactional method was called in a state that does not allow it (e.g. ``send`` before
    ``begin_transaction``, ``commit_transaction`` twice). Nothing was sent; the state is unchanged."""

    stage = "transactions"


class ProducerFencedError(KafkaError):
    """Another producer with the same ``transactional.id`` has initialized (a newer epoch exists).

    Fatal: this producer cannot send, commit or abort any more; close it. Nothing of its open
    transaction becomes visible to ``read_committed`` consumers.
    """

    stage = "transactions"


class TransactionAbortableError(KprodError):
    """The current transaction cannot commit (a record or request in it failed): call
    ``abort_transaction()``, after which the producer can begin a new transaction.

    ``cause`` is the error that made the transaction abortable.
    """

    stage = "transactions"

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class CoordinatorType(enum.IntEnum):
    """FindCoordinator's key type."""

    GROUP = 0
    TRANSACTION = 1


class TxnRequestKind(enum.IntEnum):
    """The transactional requests, in Java's priority order (lower goes first)."""

    FIND_COORDINATOR = 0
    INIT_PRODUCER_ID = 1
    DESCRIBE_TRANSACTION = 2
    ADD_PARTITIONS = 3
    ADD_OFFSETS = 4
    TXN_OFFSET_COMMIT = 5
    END_TXN = 6
    EPOCH_BUMP = 7


@dataclass(frozen=True, slots=True)
class ConsumerGroupMetadata:
    """The consumer group a transaction's offsets belong to (KIP-447).

    Take it from a consumer (confluent-kafka's ``consumer_group_metadata()`` is accepted by the
    facades too). ``generation_id`` -1 and ``member_id`` "" skip the broker's generation check,
    as for a consumer that is not in a group.
    """

    group_id: str
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None


def _finish(operation: TxnOperation) -> None:
    """Complete ``operation`` successfully unless an error completed it first: an abortable error
    fails the user's pending call at once, while that call's request may still be answered."""
    if not operation.done:
        operation.complete()


class TxnOperation:
    """One user call in progress (``init_transactions``, ``commit_transaction``, ...).

    The facade waits on it; the core completes it once, with or without an error.
    """

    __slots__ = ("_error", "done", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = False
        self._error: BaseException | None = None

    @property
    def error(self) -> BaseException | None:
        """The error the operation failed with, or None (also while it is not done)."""
        return self._error

    def complete(self, error: BaseException | None = None) -> None:
        """Mark the operation done, failed when ``error`` is given.

        :raises InvalidTxnStateError: if it was completed before (a bug in the caller).
        """
        if self.done:
            raise InvalidTxnStateError(f"the {self.name} operation was completed twice")
        self.done = True
        self._error = error

    def __repr__(self) -> str:
        state = "pending" if not self.done else ("failed" if self._error else "done")
        return f"<TxnOperation {self.name} {state}>"


@dataclass(slots=True, eq=False)
class TxnRequest:
    """A request the I/O layer should send, and what it belongs to.

    ``coordinator`` None means any broker (FindCoordinator); otherwise the request goes to the
    coordinator of that type, whose node id :meth:`TransactionManager.coordinator` gives.
    """

    kind: TxnRequestKind
    operation: TxnOperation
    coordinator: CoordinatorType | None = CoordinatorType.TRANSACTION
    coordinator_key: str = ""
    find_type: CoordinatorType = CoordinatorType.TRANSACTION
    partitions: tuple[TopicPartition, ...] = ()
    group: ConsumerGroupMetadata | None = None
    offsets: Mapping[TopicPartition, int] = field(default_factory=dict)
    committed: bool = False
    bump_epoch: bool = False
    not_before_ms: int = 0
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class TxnResponse:
    """A decoded answer, reduced to what the decisions need.

    ``error_code`` is the request's top-level error; ``partition_errors`` holds per-partition codes
    (AddPartitionsToTxn, TxnOffsetCommit); ``node_id`` the coordinator FindCoordinator named;
    ``producer_id``/``producer_epoch`` what InitProducerId (or EndTxn under transactions v2) gave;
    ``state`` the transaction's state DescribeTransactions named.
    """

    error_code: int = _NONE
    partition_errors: Mapping[TopicPartition, int] = field(default_factory=dict)
    node_id: int = -1
    producer_id: int = -1
    producer_epoch: int = -1
    message: str | None = None
    state: str = ""


class TransactionManager:
    """The state machine of one transactional producer.

    :param transactional_id: ``transactional.id``.
    :param transaction_timeout_ms: ``transaction.timeout.ms``, sent with InitProducerId.
    :param retry_backoff_ms: ``retry.backoff.ms``, the first backoff of a retried request.
    :param retry_backoff_max_ms: ``retry.backoff.max.ms``, where the exponential backoff stops.
    :param rng: the randomness for backoff jitter (±20 %, as Java).
    :param can_bump_epoch: whether the coordinator takes InitProducerId v3+ with the current id and
        epoch (KIP-360); without it, errors that Java recovers from by an epoch bump are fatal.
    :param await_previous: ``kprod.transaction.await.previous``: under transactions v2, hold the
        next transaction's batches and offsets until the coordinator says the ended one is
        complete (see :meth:`_await_previous`); False sends them at once, as Java does.
    """

    def __init__(
        self,
        transactional_id: str,
        transaction_timeout_ms: int,
        retry_backoff_ms: int,
        retry_backoff_max_ms: int,
        rng: random.Random,
        can_bump_epoch: bool = True,
        await_previous: bool = False,
    ) -> None:
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self._retry_backoff_ms = retry_backoff_ms
        self._retry_backoff_max_ms = max(retry_backoff_ms, retry_backoff_max_ms)
        self._rng = rng
        self.can_bump_epoch = can_bump_epoch
        self.await_previous = await_previous
        self.transactions_v2 = False
        """KIP-890 part 2: the broker adds partitions on Produce and bumps the epoch at every EndTxn."""
        self.state = TxnState.UNINITIALIZED
        self.last_error: BaseException | None = None
        self.producer_id = -1
        self.producer_epoch = -1
        self._coordinators: dict[CoordinatorType, int | None] = {
            CoordinatorType.TRANSACTION: None,
            CoordinatorType.GROUP: None,
        }
        self._new_partitions: set[TopicPartition] = set()
        self._pending_partitions: set[TopicPartition] = set()
        self._partitions: set[TopicPartition] = set()
        self._transaction_started = False
        """Something was added on the broker's side (partitions or offsets): EndTxn is needed."""
        self._txn_started_ms: int | None = None
        """When the coordinator first heard of the current transaction (its timeout runs from there)."""
        self._epoch_bump_required = False
        self._sequences_reset = False
        self._queue: list[TxnRequest] = []
        self.in_flight: TxnRequest | None = None
        self._pending_call: tuple[str, TxnOperation] | None = None
        """The user call (init, commit, abort) whose caller may have timed out: a repeat returns it."""
        self._hold_until_ms: int | None = None
        """Transactions v2: while set, the next transaction's batches and offsets wait (until then
        at most) for a DescribeTransactions answer saying the ended transaction is complete."""
        self.previous_waits = 0
        """Transactions whose batches or offsets found the previous one still completing and waited."""
        self.previous_checks = 0
        """DescribeTransactions requests sent to see whether the ended transaction is complete."""

    # ----------------------------------------------------------------- state

    def _transition(self, target: TxnState, error: BaseException | None = None) -> None:
        if self.state not in VALID_SOURCES[target]:
            raise InvalidTxnStateError(
                f"transactional.id {self.transactional_id!r}: cannot go from {self.state.value} "
                f"to {target.value}"
            )
        if target in (TxnState.ABORTABLE_ERROR, TxnState.FATAL_ERROR):
            assert error is not None, "an error state needs its error"
            self.last_error = error
        else:
            self.last_error = None
        self.state = target

    @property
    def has_producer_id(self) -> bool:
        """True once InitProducerId answered: records may be sent under this id and epoch."""
        return self.producer_id >= 0

    def coordinator(self, kind: CoordinatorType) -> int | None:
        """The node id of the transaction or group coordinator, or None while unknown."""
        return self._coordinators[kind]

    def phase(self) -> str:
        """Where the current operation is, in words (for the error of a call that timed out)."""
        if self.in_flight is not None:
            return f"waiting for the answer to {self.in_flight.kind.name}"
        if self._queue:
            head = self._queue[0]
            if head.kind is TxnRequestKind.END_TXN:
                return "EndTxn waits for the transaction's records to be acknowledged"
            retry = f", retry {head.attempts}" if head.attempts else ""
            return f"{head.kind.name} queued{retry}"
        return f"state {self.state.value}"

    def take_sequences_reset(self) -> bool:
        """True once after the producer id or epoch changed: the sender restarts every partition's
        sequence at 0 (Java's ``resetSequenceNumbers``)."""
        reset, self._sequences_reset = self._sequences_reset, False
        return reset

    def _raise_if_error(self, operation: str) -> None:
        if self.state is TxnState.FATAL_ERROR:
            raise self._fatal_error_for(operation)
        if self.state is TxnState.ABORTABLE_ERROR:
            raise TransactionAbortableError(
                f"cannot {operation}: the transaction must be aborted first (abort_transaction()) "
                f"because of an earlier error: {self.last_error}",
                self.last_error,
            )

    def _fatal_error_for(self, operation: str) -> KprodError:
        error = self.last_error
        if isinstance(error, KprodError):
            return error
        return InvalidTxnStateError(
            f"cannot {operation}: the producer had a fatal error ({error!r}); close it"
        )

    def _cached_call(self, name: str, pending_state: TxnState) -> TxnOperation | None:
        """The operation of an earlier call of ``name`` that is still in progress, if any.

        :raises InvalidTxnStateError: if an earlier, different call is still in progress.
        """
        if self._pending_call is None:
            return None
        pending_name, operation = self._pending_call
        if operation.done:
            self._pending_call = None
            return None
        if pending_name == name and self.state in (pending_state, TxnState.INITIALIZING):
            return operation
        raise InvalidTxnStateError(
            f"cannot {name}: the previous {pending_name} timed out and is still in progress; "
            f"call {pending_name}() again to wait for it"
        )

    # ----------------------------------------------------------------- user calls

    def init_transactions(self) -> TxnOperation:
        """Begin ``init_transactions``: find the coordinator and get a producer id and epoch (fencing
        any earlier producer with this ``transactional.id``). A repeat after a timeout returns the
        same operation.

        :raises InvalidTxnStateError: if the producer was initialized already.
        """
        cached = self._cached_call("init_transactions", TxnState.INITIALIZING)
        if cached is not None:
            return cached
        self._raise_if_error("init_transactions")
        if self.state is not TxnState.UNINITIALIZED:
            raise InvalidTxnStateError(
                f"init_transactions() was called already (state {self.state.value}); call it once per producer"
            )
        self._transition(TxnState.INITIALIZING)
        operation = TxnOperation("init_transactions")
        self._pending_call = ("init_transactions", operation)
        self._enqueue(TxnRequest(TxnRequestKind.INIT_PRODUCER_ID, operation))
        return operation

    def begin_transaction(self) -> None:
        """Start a transaction (client side only: nothing is sent until a record or offsets are added).

        :raises InvalidTxnStateError: unless the producer is initialized and not in a transaction.
        :raises TransactionAbortableError: if the previous transaction still needs aborting.
        :raises ProducerFencedError: after a fatal error.
        """
        self._raise_if_error("begin_transaction")
        if self.state is not TxnState.READY:
            raise InvalidTxnStateError(self._not_ready_message("begin_transaction"))
        self._transition(TxnState.IN_TRANSACTION)

    def _not_ready_message(self, operation: str) -> str:
        if self.state in (TxnState.UNINITIALIZED, TxnState.INITIALIZING):
            return f"cannot {operation} before init_transactions() has completed"
        if self.state is TxnState.IN_TRANSACTION:
            return f"cannot {operation}: a transaction is in progress already"
        return f"cannot {operation} while the transaction is {self.state.value}"

    def add_partition(self, topic: str, partition: int) -> None:
        """Record that a record for ``topic``/``partition`` is being sent in this transaction.

        Call it before appending the record. Under transactions v2 the broker adds the partition
        itself (the batch may have to wait for the previous transaction's markers first, see
        :meth:`on_poll`); otherwise an AddPartitionsToTxn goes out before the partition's first batch.

        :raises InvalidTxnStateError: outside a transaction.
        :raises TransactionAbortableError: if the transaction must be aborted.
        :raises ProducerFencedError: after a fatal error.
        """
        if self.state is not TxnState.IN_TRANSACTION:
            self._raise_if_error("send")
            raise InvalidTxnStateError(
                f"cannot send to {topic}[{partition}] outside a transaction: call begin_transaction() first"
                if self.state is TxnState.READY
                else self._not_ready_message("send")
            )
        tp = (topic, partition)
        if self.transactions_v2:
            self._partitions.add(tp)
            self._transaction_started = True
            return
        if tp in self._partitions or tp in self._pending_partitions or tp in self._new_partitions:
            return
        self._new_partitions.add(tp)

    def is_send_allowed(self, topic: str, partition: int) -> bool:
        """May the sender drain a batch of ``topic``/``partition`` now (its AddPartitionsToTxn is
        done; under transactions v2, the previous transaction is not being waited for)?"""
        if self.state is TxnState.FATAL_ERROR or self._hold_until_ms is not None:
            return False
        return (topic, partition) in self._partitions

    def _await_previous(self, now_ms: int) -> None:
        """A transactions-v2 EndTxn was just answered: until the coordinator says the transaction
        is complete, hold the next one's batches and offsets, and ask.

        Under transactions v2 the coordinator answers EndTxn once it has logged PrepareCommit (or
        PrepareAbort), and writes the markers after. A Produce of the next transaction that arrives
        meanwhile is held by the partition leader, which retries adding the partition every
        ``add.partitions.to.txn.retry.backoff.ms`` (20 ms); an AddOffsetsToTxn is answered
        CONCURRENT_TRANSACTIONS. Asking (DescribeTransactions, from now on, while the caller builds
        the next transaction: again at once after each of the first three answers that say
        PrepareCommit/PrepareAbort, then after 1, 2, 4, then every 8 ms) sends them once the
        markers are written instead, usually within a few milliseconds of EndTxn.
        """
        self._hold_until_ms = now_ms + _AWAIT_PREVIOUS_MAX_MS
        self._enqueue(TxnRequest(TxnRequestKind.DESCRIBE_TRANSACTION, TxnOperation("describe_transaction")))

    def _release_held(self) -> None:
        if self._hold_until_ms is not None and (
            self._partitions or any(r.kind is TxnRequestKind.ADD_OFFSETS for r in self._queue)
        ):
            self.previous_waits += 1  # the next transaction had batches or offsets held
        self._hold_until_ms = None
        self._queue = [r for r in self._queue if r.kind is not TxnRequestKind.DESCRIBE_TRANSACTION]

    def on_poll(self, now_ms: int) -> None:
        """A sender round begins at ``now_ms``: a transaction held for its predecessor longer than
        :data:`_AWAIT_PREVIOUS_MAX_MS` goes out now whatever the coordinator says."""
        if self._hold_until_ms is not None and now_ms >= self._hold_until_ms:
            self._release_held()

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, int], group: ConsumerGroupMetadata
    ) -> TxnOperation:
        """Begin adding consumer offsets to the transaction: AddOffsetsToTxn to the transaction
        coordinator, then TxnOffsetCommit to the group's coordinator. ``offsets`` are the next
        offsets to consume (last processed + 1).

        :raises InvalidTxnStateError: outside a transaction, or for an empty group id or a negative offset.
        """
        self._raise_if_error("send_offsets_to_transaction")
        if self.state is not TxnState.IN_TRANSACTION:
            raise InvalidTxnStateError(self._not_ready_message("send_offsets_to_transaction"))
        if not group.group_id:
            raise InvalidTxnStateError("send_offsets_to_transaction needs a consumer group id")
        bad = [tp for tp, offset in offsets.items() if offset < 0]
        if bad:
            raise InvalidTxnStateError(f"offsets must be >= 0, got {[(tp, offsets[tp]) for tp in bad]}")
        operation = TxnOperation("send_offsets_to_transaction")
        self._enqueue(TxnRequest(TxnRequestKind.ADD_OFFSETS, operation, group=group, offsets=dict(offsets)))
        return operation

    def commit_transaction(self) -> TxnOperation:
        """Begin committing: remaining partitions are added, every batch is flushed, then EndTxn.
        A repeat after a timeout returns the same operation.

        :raises TransactionAbortableError: if the transaction must be aborted instead.
        :raises InvalidTxnStateError: outside a transaction, or while an abort is in progress.
        """
        cached = self._cached_call("commit_transaction", TxnState.COMMITTING)
        if cached is not None:
            return cached
        self._raise_if_error("commit_transaction")
        if self.state is not TxnState.IN_TRANSACTION:
            raise InvalidTxnStateError(self._not_ready_message("commit_transaction"))
        self._transition(TxnState.COMMITTING)
        return self._begin_completion("commit_transaction", committed=True)

    def abort_transaction(self) -> TxnOperation:
        """Begin aborting: batches not yet sent are failed by the sender (see :meth:`is_aborting`),
        in-flight ones are waited for, then EndTxn(abort). Works from ``ABORTABLE_ERROR`` too.
        A repeat after a timeout returns the same operation.

        :raises ProducerFencedError: after a fatal error.
        :raises InvalidTxnStateError: outside a transaction, or while a commit is in progress.
        """
        cached = self._cached_call("abort_transaction", TxnState.ABORTING)
        if cached is not None:
            return cached
        if self.state is TxnState.FATAL_ERROR:
            raise self._fatal_error_for("abort_transaction")
        if self.state not in (TxnState.IN_TRANSACTION, TxnState.ABORTABLE_ERROR):
            raise InvalidTxnStateError(self._not_ready_message("abort_transaction"))
        self._transition(TxnState.ABORTING)
        self._new_partitions.clear()
        return self._begin_completion("abort_transaction", committed=False)

    def _begin_completion(self, name: str, committed: bool) -> TxnOperation:
        operation = TxnOperation(name)
        self._pending_call = (name, operation)
        # Requests of the transaction still queued (an AddOffsetsToTxn, say) keep their place: EndTxn
        # has the lowest priority, so it goes after them.
        self._enqueue(TxnRequest(TxnRequestKind.END_TXN, operation, committed=committed))
        return operation

    @property
    def is_aborting(self) -> bool:
        """True while aborting or in an abortable error: the sender fails batches it has not sent
        (with :attr:`last_error`, or a "transaction aborted" error) instead of sending them."""
        return self.state in (TxnState.ABORTING, TxnState.ABORTABLE_ERROR)

    @property
    def is_completing(self) -> bool:
        """True while committing or aborting: the accumulator should flush everything."""
        return self.state in (TxnState.COMMITTING, TxnState.ABORTING)

    # ----------------------------------------------------------------- errors from records

    def on_batch_error(self, error: BaseException, sequenced: bool = False) -> None:
        """A batch of the transaction failed: the transaction can no longer commit.

        Fenced and epoch errors are fatal; anything else makes the transaction abortable. A batch
        that had a sequence leaves a gap in its partition's sequences, so the abort ends with an
        epoch bump (sequences restart at 0), or, where the coordinator cannot bump epochs, the
        producer cannot go on (Java's ``handleFailedBatch``).
        """
        if self.state in (TxnState.FATAL_ERROR, TxnState.UNINITIALIZED):
            return
        code = error.code if isinstance(error, KafkaError) else None
        if code in _FENCED:
            self._fail_fatal(self._fenced_error(code or _PRODUCER_FENCED))
            return
        if sequenced or code in (_UNKNOWN_PRODUCER_ID, _INVALID_PRODUCER_ID_MAPPING):
            self._abortable_if_possible(error)
            return
        if self.state is TxnState.READY:
            return
        self._abortable(error)

    def close(self, error: BaseException) -> None:
        """The producer is closing: fail every queued or in-flight request's operation with ``error``."""
        for request in [*self._queue, *([self.in_flight] if self.in_flight else [])]:
            if not request.operation.done:
                request.operation.complete(error)
        self._queue.clear()
        self.in_flight = None
        self._hold_until_ms = None

    # ----------------------------------------------------------------- requests

    def _enqueue(self, request: TxnRequest) -> None:
        self._queue.append(request)
        # Stable: equal priorities keep their order.
        self._queue.sort(key=lambda r: r.kind)

    def next_request(self, now_ms: int, has_incomplete_batches: bool) -> TxnRequest | None:
        """The next request to send, or None (one in flight already, backing off, or EndTxn waiting
        for the transaction's batches). The caller must send it (and later report its outcome with
        :meth:`on_response` or :meth:`on_request_failed`).
        """
        if self.transactions_v2 and self._transaction_started and self._txn_started_ms is None:
            # KIP-890: the transaction began on the broker with its first Produce, about now.
            self._txn_started_ms = now_ms
        if self.in_flight is not None:
            return None
        if self._new_partitions and self.state in (TxnState.IN_TRANSACTION, TxnState.COMMITTING):
            self._pending_partitions |= self._new_partitions
            partitions = tuple(sorted(self._pending_partitions))
            self._new_partitions.clear()
            queued = next((r for r in self._queue if r.kind is TxnRequestKind.ADD_PARTITIONS), None)
            if queued is not None:
                queued.partitions = partitions
            else:
                self._enqueue(
                    TxnRequest(
                        TxnRequestKind.ADD_PARTITIONS, TxnOperation("add_partitions"), partitions=partitions
                    )
                )
        while self._queue:
            request = self._queue[0]
            if request.not_before_ms > now_ms:
                return None
            if request.kind is TxnRequestKind.END_TXN and has_incomplete_batches:
                return None
            if self._terminate_in_error_state(request):
                self._queue.pop(0)
                continue
            if request.coordinator is not None and self._coordinators[request.coordinator] is None:
                self._lookup_coordinator(request.coordinator, self._key_of(request))
                continue
            self._queue.pop(0)
            if request.kind is TxnRequestKind.DESCRIBE_TRANSACTION:
                self.previous_checks += 1
            if request.kind is TxnRequestKind.END_TXN and not self._transaction_started:
                # Nothing reached the broker: there is no transaction there to end.
                self._complete_transaction()
                _finish(request.operation)
                continue
            self.in_flight = request
            return request
        return None

    def _key_of(self, request: TxnRequest) -> str:
        if request.coordinator is CoordinatorType.GROUP:
            assert request.group is not None
            return request.group.group_id
        return self.transactional_id

    def _terminate_in_error_state(self, request: TxnRequest) -> bool:
        """In an error state, queued requests fail with the error instead of going out; a
        FindCoordinator still goes out in ABORTABLE_ERROR (the abort will need the coordinator)."""
        if self.state is TxnState.FATAL_ERROR:
            error: BaseException | None = self._fatal_error_for(request.operation.name)
        elif self.state is TxnState.ABORTABLE_ERROR and request.kind is not TxnRequestKind.FIND_COORDINATOR:
            error = self.last_error
        else:
            return False
        if request.kind is TxnRequestKind.DESCRIBE_TRANSACTION:
            self._hold_until_ms = None  # the held batches fail with the transaction instead
        if not request.operation.done:
            request.operation.complete(error)
        return True

    def _lookup_coordinator(self, kind: CoordinatorType, key: str) -> None:
        self._coordinators[kind] = None
        if any(r.kind is TxnRequestKind.FIND_COORDINATOR and r.find_type is kind for r in self._queue):
            return
        self._enqueue(
            TxnRequest(
                TxnRequestKind.FIND_COORDINATOR,
                TxnOperation("find_coordinator"),
                coordinator=None,
                coordinator_key=key,
                find_type=kind,
            )
        )

    @property
    def wants_poll(self) -> bool:
        """True when a request waits to go out and none is in flight (the sender should run a
        round, e.g. the EndTxn held back until the last batch of the transaction was answered)."""
        return self.in_flight is None and bool(self._queue or self._new_partitions)

    def next_deadline_ms(self) -> int | None:
        """When :meth:`next_request` or :meth:`on_poll` may have something new without an answer
        arriving (a backoff ending, held batches released), or None."""
        held = self._hold_until_ms
        if self.in_flight is not None or not self._queue:
            return held
        due = self._queue[0].not_before_ms
        return due if held is None else min(due, held)

    def _retry(self, request: TxnRequest, now_ms: int, backoff_ms: int | None = None) -> None:
        request.attempts += 1
        if backoff_ms is None:
            base = min(
                self._retry_backoff_ms * 2 ** min(request.attempts - 1, 20), self._retry_backoff_max_ms
            )
            backoff_ms = int(base * self._rng.uniform(0.8, 1.2))
        request.not_before_ms = now_ms + backoff_ms
        self._enqueue(request)

    def on_request_failed(self, request: TxnRequest, now_ms: int) -> None:
        """The request got no answer (connection lost, timed out): look the coordinator up again
        and retry with backoff."""
        self._take_in_flight(request)
        if request.coordinator is not None:
            self._lookup_coordinator(request.coordinator, self._key_of(request))
        if request.kind is TxnRequestKind.DESCRIBE_TRANSACTION:
            # Only a shortcut was lost: the held batches go out, the broker retries them if need be.
            self._release_held()
            _finish(request.operation)
            return
        self._retry(request, now_ms)

    def _take_in_flight(self, request: TxnRequest) -> None:
        if self.in_flight is not request:
            raise InvalidTxnStateError(f"an answer for a {request.kind.name} request that is not in flight")
        self.in_flight = None

    def on_response(self, request: TxnRequest, response: TxnResponse, now_ms: int) -> None:
        """Apply the answer to ``request`` (the one :meth:`next_request` returned)."""
        self._take_in_flight(request)
        if self.state is TxnState.FATAL_ERROR:
            # Nothing an answer says matters any more; its caller gets the fatal error.
            if not request.operation.done:
                request.operation.complete(self._fatal_error_for(request.operation.name))
            return
        handler = {
            TxnRequestKind.FIND_COORDINATOR: self._on_find_coordinator,
            TxnRequestKind.INIT_PRODUCER_ID: self._on_init_producer_id,
            TxnRequestKind.EPOCH_BUMP: self._on_init_producer_id,
            TxnRequestKind.ADD_PARTITIONS: self._on_add_partitions,
            TxnRequestKind.ADD_OFFSETS: self._on_add_offsets,
            TxnRequestKind.TXN_OFFSET_COMMIT: self._on_txn_offset_commit,
            TxnRequestKind.END_TXN: self._on_end_txn,
            TxnRequestKind.DESCRIBE_TRANSACTION: self._on_describe_transaction,
        }[request.kind]
        handler(request, response, now_ms)

    # ----------------------------------------------------------------- answers

    def _common(self, request: TxnRequest, code: int, now_ms: int, message: str | None) -> bool:
        """The handling every coordinator request shares; True if ``code`` was dealt with."""
        if code in _COORDINATOR_MOVED:
            assert request.coordinator is not None
            self._lookup_coordinator(request.coordinator, self._key_of(request))
            self._retry(request, now_ms)
            return True
        if code in _FENCED:
            self._fail_fatal(self._fenced_error(code, now_ms), request)
            return True
        if code == _TRANSACTION_ABORTABLE:
            self._abortable(KafkaError(code, message, stage="transactions"), request)
            return True
        return False

    def _on_find_coordinator(self, request: TxnRequest, response: TxnResponse, now_ms: int) -> None:
        code = response.error_code
        if code == _NONE and response.node_id >= 0:
            self._coordinators[request.find_type] = response.node_id
            _finish(request.operation)
        elif code == _NONE or is_retriable(code):
            self._retry(request, now_ms)
        elif code == _TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
            self._fail_fatal(self._authorization_error(code, response.message), request)
        elif code == _GROUP_AUTHORIZATION_FAILED:
            self._abortable(
                KafkaError(code, f"group {request.coordinator_key!r}", stage="transactions"), request
            )
        elif code == _TRANSACTION_ABORTABLE:
            self._abortable(KafkaError(code, response.message, stage="transactions"), request)
        else:
            self._fail_fatal(
                KafkaError(code, f"FindCoordinator for {request.coordinator_key!r}", stage="transactions"),
                request,
            )

    def _on_init_producer_id(self, request: TxnRequest, response: TxnResponse, now_ms: int) -> None:
        code = response.error_code
        if code == _NONE:
            self.producer_id, self.producer_epoch = response.producer_id, response.producer_epoch
            self._sequences_reset = True
            self._epoch_bump_required = False
            if self.state is not TxnState.READY:
                self._transition(TxnState.READY)
            self._finish_call(request.operation)
        elif self._common(request, code, now_ms, response.message):
            return
        elif is_retriable(code) or code == _CONCURRENT_TRANSACTIONS:
            self._retry(request, now_ms)
        elif code in (_TRANSACTIONAL_ID_AUTHORIZATION_FAILED, _CLUSTER_AUTHORIZATION_FAILED):
            self._fail_fatal(self._authorization_error(code, response.message), request)
        else:
            self._fail_fatal(KafkaError(code, response.message, stage="transactions"), request)

    def _on_add_partitions(self, request: TxnRequest, response: TxnResponse, now_ms: int) -> None:
        errors = dict(response.partition_errors)
        if response.error_code != _NONE:
            errors = {tp: response.error_code for tp in request.partitions}
        unauthorized: set[str] = set()
        other: dict[TopicPartition, int] = {}
        for tp, code in sorted(errors.items()):
            if code == _NONE:
                continue
            if self._common(request, code, now_ms, response.message):
                return
            if code == _CONCURRENT_TRANSACTIONS:
                self._retry(request, now_ms, self._concurrent_backoff_ms(request))
                return
            if is_retriable(code):
                self._retry(request, now_ms)
                return
            if code == _INVALID_TXN_STATE:
                self._fail_fatal(KafkaError(code, response.message, stage="transactions"), request)
                return
            if code == _TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
                self._fail_fatal(self._authorization_error(code, response.message), request)
                return
            if code in (_UNKNOWN_PRODUCER_ID, _INVALID_PRODUCER_ID_MAPPING):
                self._abortable_if_possible(KafkaError(code, response.message, stage="transactions"), request)
                return
            if code == _TOPIC_AUTHORIZATION_FAILED:
                unauthorized.add(tp[0])
            elif code != _OPERATION_NOT_ATTEMPTED:
                other[tp] = code
        added = set(errors) or set(request.partitions)
        # Whatever happened, these partitions are no longer "being added": after an error the
        # transaction will be aborted, and batches in retry for the added ones must still drain.
        self._pending_partitions -= added
        if unauthorized:
            self._abortable(
                KafkaError(
                    _TOPIC_AUTHORIZATION_FAILED, f"topics {sorted(unauthorized)}", stage="transactions"
                ),
                request,
            )
        elif other:
            self._abortable(
                KprodError(f"could not add partitions to the transaction: {other}", stage="transactions"),
                request,
            )
        else:
            self._partitions |= added
            self._mark_started(now_ms)
            _finish(request.operation)

    def _concurrent_backoff_ms(self, request: TxnRequest) -> int | None:
        """The backoff after CONCURRENT_TRANSACTIONS: the previous transaction is still completing
        (or, under transactions v2, a Produce is adding a partition of this one) and will be done in
        a few milliseconds, so 2, 4, 8, 16, then 20 ms. Java's 20 ms covers only the transaction's
        first AddPartitionsToTxn and kprod keeps that condition for it (None, the usual backoff,
        once the coordinator has taken a partition); for AddOffsetsToTxn Java waits the full
        ``retry.backoff.ms`` (100 ms), which made each back-to-back consume-transform-produce
        transaction 100 ms long, so kprod uses the short backoff for it always."""
        if request.kind is TxnRequestKind.ADD_PARTITIONS and self._partitions:
            return None
        return min(_ADD_PARTITIONS_RETRY_BACKOFF_MS, _ADD_PARTITIONS_FIRST_RETRY_MS << min(request.attempts, 4))

    def _on_add_offsets(self, request: TxnRequest, response: TxnResponse, now_ms: int) -> None:
        code = response.error_code
        assert request.group is not None
        if code == _NONE:
            self._mark_started(now_ms)
            # The offsets themselves go to the group's coordinator, under the same operation.
            self._enqueue(
                TxnRequest(
                    TxnRequestKind.TXN_OFFSET_COMMIT,
                    request.operation,
                    coordinator=CoordinatorType.GROUP,
                    group=request.group,
                    offsets=request.offsets,
                )
            )
        elif self._common(request, code, now_ms, response.message):
            return
        elif code == _CONCURRENT_TRANSACTIONS:
            self._retry(request, now_ms, self._concurrent_backoff_ms(request))
        elif is_retriable(code):
            self._retry(request, now_ms)
        elif code in (_UNKNOWN_PRODUCER_ID, _INVALID_PRODUCER_ID_MAPPING):
            self._abortable_if_possible(KafkaError(code, response.message, stage="transactions"), request)
        elif code in (_TRANSACTIONAL_ID_AUTHORIZATION_FAILED, _INVALID_TXN_STATE):
            error = (
                self._authorization_error(code, response.message)
                if code == _TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                else KafkaError(code, response.message, stage="transactions")
            )
            self._fail_fatal(error, request)
        elif code == _GROUP_AUTHORIZATION_FAILED:
            self._abortable(
                KafkaError(code, f"group {request.group.group_id!r}", stage="transactions"), request
            )
        else:
            self._fail_fatal(KafkaError(code, response.message, stage="transactions"), request)

    def _on_txn_offset_commit(self, request: TxnRequest, response: TxnResponse, now_ms: int) -> None:
        assert request.group is not None
        errors = dict(response.partition_errors)
        if response.error_code != _NONE:
            errors = {tp: response.error_code for tp in request.offsets}
        retry: dict[TopicPartition, int] = {}
        for tp, code in sorted(errors.items()):
            if code == _NONE:
                continue
            if code in (*_COORDINATOR_MOVED, _REQUEST_TIMED_OUT):
                self._lookup_coordinator(CoordinatorType.GROUP, request.group.group_id)
                retry[tp] = request.offsets[tp]
            elif code in (_COORDINATOR_LOAD_IN_PROGRESS, _UNKNOWN_TOPIC_OR_PARTITION) or is_retriable(code):
                retry[tp] = request.offsets[tp]
            elif code in _FENCED:
                self._fail_fatal(self._fenced_error(code, now_ms), request)
                return
            elif code == _TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
                self._fail_fatal(self._authorization_error(code, response.message), request)
                return
            elif code in (_UNKNOWN_MEMBER_ID, _ILLEGAL_GENERATION):
                error = KafkaError(
                    code,
                    f"the consumer group {request.group.group_id!r} rebalanced (generation "
                    f"{request.group.generation_id}, member {request.group.member_id!r}): the offsets "
                    "cannot be committed; abort the transaction and process the records again",
                    stage="transactions",
                )
                self._abortable(error, request)
                return
            elif code in (_GROUP_AUTHORIZATION_FAILED, _FENCED_INSTANCE_ID, _TRANSACTION_ABORTABLE):
                self._abortable(KafkaError(code, response.message, stage="transactions"), request)
                return
            else:
                self._fail_fatal(KafkaError(code, response.message, stage="transactions"), request)
                return
        if retry:
            request.offsets = retry
            self._retry(request, now_ms)
        else:
            _finish(request.operation)

    def _on_describe_transaction(self, request: TxnRequest, response: TxnResponse, now_ms: int) -> None:
        if self._hold_until_ms is None:
            _finish(request.operation)  # released meanwhile (held too long, or the transaction ended)
            return
        if response.error_code == _NONE and response.state in _PREVIOUS_COMPLETING:
            # The markers are usually written within a few round trips: ask again at once, then
            # back off so a transaction that takes long to complete (a broker pause: 30-50 ms
            # measured) is asked about 15 times in 100 ms, not 300, and found done 8 ms late at most.
            attempts = request.attempts
            self._retry(request, now_ms, 0 if attempts < 3 else min(1 << (attempts - 3), 8))
            return
        # Complete (or anything else, errors included: asking is only a shortcut).
        if response.error_code in (_TRANSACTIONAL_ID_AUTHORIZATION_FAILED, _UNSUPPORTED_VERSION):
            # The principal may not DESCRIBE its transactional id, or the coordinator refuses the
            # request: asking after every EndTxn would only cost a round trip.
            self.await_previous = False
        self._release_held()
        _finish(request.operation)

    def _on_end_txn(self, request: TxnRequest, response: TxnResponse, now_ms: int) -> None:
        code = response.error_code
        if code == _NONE:
            if self.transactions_v2 and response.producer_epoch >= 0:
                # KIP-890: every EndTxn bumps the epoch; the answer carries the new one.
                self.producer_id, self.producer_epoch = response.producer_id, response.producer_epoch
                self._sequences_reset = True
            self._complete_transaction()
            if self.transactions_v2 and self.await_previous and not self._epoch_bump_required:
                self._await_previous(now_ms)
            if self._epoch_bump_required:
                self._transition(TxnState.INITIALIZING)
                self._enqueue(TxnRequest(TxnRequestKind.EPOCH_BUMP, request.operation, bump_epoch=True))
                return
            self._finish_call(request.operation)
        elif self._common(request, code, now_ms, response.message):
            return
        elif is_retriable(code) or code == _CONCURRENT_TRANSACTIONS:
            self._retry(request, now_ms)
        elif code in (_UNKNOWN_PRODUCER_ID, _INVALID_PRODUCER_ID_MAPPING):
            self._abortable_if_possible(KafkaError(code, response.message, stage="transactions"), request)
        elif code == _TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
            self._fail_fatal(self._authorization_error(code, response.message), request)
        else:
            # INVALID_TXN_STATE is what Kafka 4 answers under transactions v2 once the coordinator
            # aborted a transaction that outlived its timeout.
            message = self._expired_hint(now_ms) or response.message
            self._fail_fatal(KafkaError(code, message, stage="transactions"), request)

    def _expired_hint(self, now_ms: int) -> str | None:
        """If the transaction outlived transaction.timeout.ms, the words that say so."""
        started = self._txn_started_ms
        if started is None or now_ms - started < self.transaction_timeout_ms:
            return None
        return (
            f"the transaction was open {now_ms - started} ms, longer than "
            f"transaction.timeout.ms={self.transaction_timeout_ms}, so the broker aborted it and bumped "
            "the epoch"
        )

    def _finish_call(self, operation: TxnOperation) -> None:
        """A user call's operation succeeded: complete it and forget it as the call to resume."""
        _finish(operation)
        if self._pending_call is not None and self._pending_call[1] is operation:
            self._pending_call = None

    def _mark_started(self, now_ms: int) -> None:
        self._transaction_started = True
        if self._txn_started_ms is None:
            self._txn_started_ms = now_ms

    def _complete_transaction(self) -> None:
        if self.state in (TxnState.COMMITTING, TxnState.ABORTING) and not self._epoch_bump_required:
            self._transition(TxnState.READY)
        self._partitions.clear()
        self._pending_partitions.clear()
        self._new_partitions.clear()
        self._transaction_started = False
        self._txn_started_ms = None

    # ----------------------------------------------------------------- error transitions

    def _fenced_error(self, code: int, now_ms: int | None = None) -> ProducerFencedError:
        # The coordinator aborts a transaction that outlived transaction.timeout.ms and bumps the
        # epoch, so the answer looks like fencing (Kafka 4 says PRODUCER_FENCED under v1).
        hint = None if now_ms is None else self._expired_hint(now_ms)
        if hint is not None:
            why = hint + " (or a newer producer with the same transactional.id took over)"
        else:
            why = "a newer producer with the same transactional.id took over"
        return ProducerFencedError(
            _PRODUCER_FENCED,
            f"transactional.id {self.transactional_id!r} (producer id {self.producer_id}, epoch "
            f"{self.producer_epoch}) was fenced: {why} (the broker answered {KafkaError(code).name}); "
            "close this producer",
            stage="transactions",
        )

    def _authorization_error(self, code: int, message: str | None) -> KafkaError:
        return KafkaError(
            code,
            f"transactional.id {self.transactional_id!r} is not authorized"
            + (f" ({message})" if message else "")
            + ": grant the principal WRITE and DESCRIBE on the TransactionalId resource",
            stage="transactions",
        )

    def _fail_fatal(self, error: BaseException, request: TxnRequest | None = None) -> None:
        if self.state is not TxnState.FATAL_ERROR:
            self._transition(TxnState.FATAL_ERROR, error)
        if request is not None and not request.operation.done:
            request.operation.complete(error)
        if self._pending_call is not None and not self._pending_call[1].done:
            self._pending_call[1].complete(error)
        self._pending_call = None

    def _abortable(self, error: BaseException, request: TxnRequest | None = None) -> None:
        if request is not None and not request.operation.done:
            request.operation.complete(error)
        if self.state is TxnState.READY:
            # A batch of a finished transaction failed late: the next abort must still bump the
            # epoch (if asked), but there is no transaction to make abortable.
            return
        if self.state is TxnState.ABORTING:
            # Already aborting: the abort goes on; the error is only this request's.
            return
        if self.state is TxnState.INITIALIZING:
            self._fail_fatal(error)
            return
        self._transition(TxnState.ABORTABLE_ERROR, error)
        # A commit's EndTxn still queued must never go out now: only an abort may end this transaction.
        for queued in [r for r in self._queue if r.kind is TxnRequestKind.END_TXN]:
            self._queue.remove(queued)
            if not queued.operation.done:
                queued.operation.complete(error)
        if self._pending_call is not None and not self._pending_call[1].done:
            self._pending_call[1].complete(error)
            self._pending_call = None

    def _abortable_if_possible(self, error: BaseException, request: TxnRequest | None = None) -> None:
        """Java's rule for a lost producer id: abortable, with an epoch bump after the abort, when
        the coordinator can bump epochs (InitProducerId v3+); fatal otherwise."""
        if self.can_bump_epoch:
            self._epoch_bump_required = True
            self._abortable(error, request)
        else:
            self._fail_fatal(error, request)
