"""The transaction manager (``kprod._core.transactions``) stepped by hand with canned answers.

Like Kafka's ``TransactionManagerTest``: no broker, no clock; each test plays the coordinator by
answering the requests :meth:`TransactionManager.next_request` hands out, and checks the states,
the requests and the outcome of the user's operations. The error sorting follows Java's
``TransactionManager`` handlers (retriable, abortable, fatal).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kprod._core.transactions import (
    VALID_SOURCES,
    ConsumerGroupMetadata,
    CoordinatorType,
    InvalidTxnStateError,
    ProducerFencedError,
    TransactionAbortableError,
    TransactionManager,
    TxnOperation,
    TxnRequest,
    TxnRequestKind,
    TxnResponse,
    TxnState,
)
from kprod.errors import KafkaError

K = TxnRequestKind
TXN_COORDINATOR = 2
GROUP_COORDINATOR = 3


def manager(can_bump_epoch: bool = True, await_previous: bool = False) -> TransactionManager:
    return TransactionManager(
        "txn-1",
        transaction_timeout_ms=60_000,
        retry_backoff_ms=100,
        retry_backoff_max_ms=1_000,
        rng=random.Random(7),
        can_bump_epoch=can_bump_epoch,
        await_previous=await_previous,
    )


def expect(
    tm: TransactionManager, kind: TxnRequestKind, now_ms: int = 0, incomplete: bool = False
) -> TxnRequest:
    request = tm.next_request(now_ms, incomplete)
    assert request is not None, f"expected a {kind.name} request, got none (state {tm.state})"
    assert request.kind is kind, f"expected {kind.name}, got {request.kind.name}"
    return request


def answer_coordinator(tm: TransactionManager, node: int = TXN_COORDINATOR, now_ms: int = 0) -> None:
    request = expect(tm, K.FIND_COORDINATOR, now_ms)
    assert request.coordinator is None  # FindCoordinator goes to any broker
    tm.on_response(request, TxnResponse(node_id=node), now_ms)


def initialized(can_bump_epoch: bool = True, await_previous: bool = False) -> TransactionManager:
    tm = manager(can_bump_epoch, await_previous)
    operation = tm.init_transactions()
    assert tm.state is TxnState.INITIALIZING
    answer_coordinator(tm)
    request = expect(tm, K.INIT_PRODUCER_ID)
    tm.on_response(request, TxnResponse(producer_id=1000, producer_epoch=0), 0)
    assert operation.done and operation.error is None
    assert tm.state is TxnState.READY and tm.take_sequences_reset()
    return tm


def in_transaction_with(tm: TransactionManager, *partitions: tuple[str, int]) -> None:
    tm.begin_transaction()
    for topic, partition in partitions:
        tm.add_partition(topic, partition)
    request = expect(tm, K.ADD_PARTITIONS)
    assert set(request.partitions) == set(partitions)
    tm.on_response(request, TxnResponse(partition_errors=dict.fromkeys(partitions, 0)), 0)


# ----------------------------------------------------------------------------- the happy path


def test_init_begin_add_partitions_commit() -> None:
    tm = initialized()
    assert tm.producer_id == 1000 and tm.producer_epoch == 0
    assert tm.coordinator(CoordinatorType.TRANSACTION) == TXN_COORDINATOR
    tm.begin_transaction()
    tm.add_partition("t", 0)
    tm.add_partition("t", 1)
    tm.add_partition("t", 0)  # once is enough
    assert not tm.is_send_allowed("t", 0), "a partition may not be drained before it is added"
    request = expect(tm, K.ADD_PARTITIONS)
    assert request.partitions == (("t", 0), ("t", 1))
    assert tm.next_request(0, False) is None, "one transactional request in flight at a time"
    tm.on_response(request, TxnResponse(partition_errors={("t", 0): 0, ("t", 1): 0}), 0)
    assert tm.is_send_allowed("t", 0) and tm.is_send_allowed("t", 1)
    commit = tm.commit_transaction()
    assert tm.state is TxnState.COMMITTING and tm.is_completing
    assert tm.next_request(0, has_incomplete_batches=True) is None, "EndTxn waits for the batches"
    end = expect(tm, K.END_TXN)
    assert end.committed
    tm.on_response(end, TxnResponse(), 0)
    assert commit.done and commit.error is None
    assert tm.state is TxnState.READY
    assert not tm.is_send_allowed("t", 0), "a new transaction adds its partitions again"


def test_partitions_added_while_a_request_is_in_flight_go_in_the_next_add_partitions() -> None:
    tm = initialized()
    tm.begin_transaction()
    tm.add_partition("t", 0)
    first = expect(tm, K.ADD_PARTITIONS)
    tm.add_partition("t", 1)
    tm.on_response(first, TxnResponse(partition_errors={("t", 0): 0}), 0)
    second = expect(tm, K.ADD_PARTITIONS)
    assert second.partitions == (("t", 1),)


def test_commit_of_an_empty_transaction_sends_no_end_txn() -> None:
    tm = initialized()
    tm.begin_transaction()
    commit = tm.commit_transaction()
    assert tm.next_request(0, False) is None
    assert commit.done and commit.error is None and tm.state is TxnState.READY


def test_abort_fails_nothing_and_ends_the_transaction() -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))
    abort = tm.abort_transaction()
    assert tm.is_aborting
    end = expect(tm, K.END_TXN)
    assert not end.committed
    tm.on_response(end, TxnResponse(), 0)
    assert abort.done and abort.error is None and tm.state is TxnState.READY


def test_send_offsets_adds_offsets_then_commits_them_at_the_group_coordinator() -> None:
    tm = initialized()
    tm.begin_transaction()
    group = ConsumerGroupMetadata("g1", generation_id=4, member_id="m-1")
    operation = tm.send_offsets_to_transaction({("in", 0): 42, ("in", 1): 7}, group)
    add = expect(tm, K.ADD_OFFSETS)
    assert add.group == group and add.coordinator is CoordinatorType.TRANSACTION
    tm.on_response(add, TxnResponse(), 0)
    assert not operation.done, "the offsets are not committed yet"
    find = expect(tm, K.FIND_COORDINATOR)
    assert find.find_type is CoordinatorType.GROUP and find.coordinator_key == "g1"
    tm.on_response(find, TxnResponse(node_id=GROUP_COORDINATOR), 0)
    commit_offsets = expect(tm, K.TXN_OFFSET_COMMIT)
    assert commit_offsets.coordinator is CoordinatorType.GROUP
    assert tm.coordinator(CoordinatorType.GROUP) == GROUP_COORDINATOR
    assert dict(commit_offsets.offsets) == {("in", 0): 42, ("in", 1): 7}
    tm.on_response(commit_offsets, TxnResponse(partition_errors={("in", 0): 0, ("in", 1): 0}), 0)
    assert operation.done and operation.error is None
    commit = tm.commit_transaction()
    end = expect(tm, K.END_TXN)  # offsets alone make a transaction that must be ended
    tm.on_response(end, TxnResponse(), 0)
    assert commit.done and commit.error is None


# ----------------------------------------------------------------------------- the state table


def test_calls_in_the_wrong_state_raise_and_change_nothing() -> None:
    tm = manager()
    with pytest.raises(InvalidTxnStateError, match="before init_transactions"):
        tm.begin_transaction()
    with pytest.raises(InvalidTxnStateError, match="before init_transactions"):
        tm.add_partition("t", 0)
    assert tm.state is TxnState.UNINITIALIZED
    tm = initialized()
    with pytest.raises(InvalidTxnStateError, match="init_transactions\\(\\) was called already"):
        tm.init_transactions()
    with pytest.raises(InvalidTxnStateError, match="begin_transaction\\(\\) first"):
        tm.add_partition("t", 0)
    with pytest.raises(InvalidTxnStateError):
        tm.commit_transaction()
    with pytest.raises(InvalidTxnStateError):
        tm.abort_transaction()
    tm.begin_transaction()
    with pytest.raises(InvalidTxnStateError, match="in progress already"):
        tm.begin_transaction()
    assert tm.state is TxnState.IN_TRANSACTION


def test_an_operation_refuses_a_second_completion() -> None:
    operation = TxnOperation("commit_transaction")
    operation.complete()
    with pytest.raises(InvalidTxnStateError, match="completed twice"):
        operation.complete(RuntimeError("late"))


def test_the_transition_table_refuses_what_it_does_not_list() -> None:
    tm = manager()
    for target in TxnState:
        allowed = TxnState.UNINITIALIZED in VALID_SOURCES[target]
        probe = manager()
        if target in (TxnState.ABORTABLE_ERROR, TxnState.FATAL_ERROR):
            continue
        if allowed:
            probe._transition(target)
            assert probe.state is target
        else:
            with pytest.raises(InvalidTxnStateError, match="cannot go from uninitialized"):
                probe._transition(target)
    assert tm.state is TxnState.UNINITIALIZED


# ----------------------------------------------------------------------------- retriable


def test_coordinator_moved_is_looked_up_again_and_the_request_retried() -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))
    tm.commit_transaction()
    end = expect(tm, K.END_TXN)
    tm.on_response(end, TxnResponse(error_code=16), 0)  # NOT_COORDINATOR
    assert tm.coordinator(CoordinatorType.TRANSACTION) is None
    answer_coordinator(tm, node=5, now_ms=0)  # the lookup goes at once, the retry after a backoff
    assert tm.next_request(0, False) is None, "backing off"
    assert tm.coordinator(CoordinatorType.TRANSACTION) == 5
    again = expect(tm, K.END_TXN, now_ms=1_000)
    assert again is end and again.attempts == 1
    tm.on_response(again, TxnResponse(), 1_000)
    assert tm.state is TxnState.READY


def test_a_lost_answer_retries_after_a_new_lookup() -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))
    tm.commit_transaction()
    end = expect(tm, K.END_TXN)
    tm.on_request_failed(end, 0)
    assert tm.coordinator(CoordinatorType.TRANSACTION) is None
    answer_coordinator(tm, now_ms=500)
    assert expect(tm, K.END_TXN, now_ms=500) is end


def test_retriable_errors_back_off_exponentially_up_to_the_max() -> None:
    tm = manager()
    tm.init_transactions()
    answer_coordinator(tm)
    now = 0
    waits = []
    for _ in range(6):
        request = expect(tm, K.INIT_PRODUCER_ID, now)
        tm.on_response(request, TxnResponse(error_code=14), now)  # COORDINATOR_LOAD_IN_PROGRESS
        deadline = tm.next_deadline_ms()
        assert deadline is not None
        waits.append(deadline - now)
        assert tm.next_request(deadline - 1, False) is None
        now = deadline
    assert [80 <= w <= 120 for w in waits[:1]] == [True]
    assert 160 <= waits[1] <= 240 and 320 <= waits[2] <= 480
    assert all(800 <= w <= 1_200 for w in waits[4:]), waits
    request = expect(tm, K.INIT_PRODUCER_ID, now)
    tm.on_response(request, TxnResponse(producer_id=9, producer_epoch=3), now)
    assert tm.state is TxnState.READY


def test_concurrent_transactions_on_the_first_add_partitions_retries_quickly() -> None:
    tm = initialized()
    tm.begin_transaction()
    tm.add_partition("t", 0)
    request = expect(tm, K.ADD_PARTITIONS)
    # The previous transaction is finishing (its markers take a few ms): 2, 4, 8, 16, then Java's
    # 20 ms between tries, never retry.backoff.ms.
    now = 1_000
    waits = []
    for _ in range(6):
        tm.on_response(request, TxnResponse(partition_errors={("t", 0): 51}), now)
        deadline = tm.next_deadline_ms()
        assert deadline is not None
        waits.append(deadline - now)
        assert tm.next_request(deadline - 1, False) is None
        now = deadline
        assert expect(tm, K.ADD_PARTITIONS, now) is request
    assert waits == [2, 4, 8, 16, 20, 20]


@pytest.mark.parametrize("v2", [False, True])
def test_concurrent_transactions_on_add_offsets_retries_quickly_too(v2: bool) -> None:
    """Java waits retry.backoff.ms (100 ms) here: a consume-transform-produce loop whose offsets
    met the previous transaction's markers took 100 ms per transaction."""
    tm = initialized()
    tm.transactions_v2 = v2
    tm.begin_transaction()
    if v2:
        tm.add_partition("t", 0)  # records first: under v2 nothing is asked for them
    operation = tm.send_offsets_to_transaction({("in", 0): 1}, ConsumerGroupMetadata("g"))
    request = expect(tm, K.ADD_OFFSETS)
    now, waits = 1_000, []
    for _ in range(6):
        tm.on_response(request, TxnResponse(error_code=51), now)
        deadline = tm.next_deadline_ms()
        assert deadline is not None
        waits.append(deadline - now)
        now = deadline
        assert expect(tm, K.ADD_OFFSETS, now) is request
    assert waits == [2, 4, 8, 16, 20, 20]
    tm.on_response(request, TxnResponse(), now)
    answer_coordinator(tm, GROUP_COORDINATOR, now)
    tm.on_response(expect(tm, K.TXN_OFFSET_COMMIT, now), TxnResponse(partition_errors={("in", 0): 0}), now)
    assert operation.done and operation.error is None


def test_txn_offset_commit_retries_only_the_partitions_that_failed() -> None:
    tm = initialized()
    tm.begin_transaction()
    operation = tm.send_offsets_to_transaction({("in", 0): 1, ("in", 1): 2}, ConsumerGroupMetadata("g"))
    tm.on_response(expect(tm, K.ADD_OFFSETS), TxnResponse(), 0)
    answer_coordinator(tm, node=GROUP_COORDINATOR)
    request = expect(tm, K.TXN_OFFSET_COMMIT)
    tm.on_response(request, TxnResponse(partition_errors={("in", 0): 0, ("in", 1): 14}), 0)
    retry = expect(tm, K.TXN_OFFSET_COMMIT, now_ms=10_000)
    assert dict(retry.offsets) == {("in", 1): 2}
    tm.on_response(retry, TxnResponse(partition_errors={("in", 1): 0}), 10_000)
    assert operation.done and operation.error is None


# ----------------------------------------------------------------------------- abortable


def test_a_failed_record_makes_the_transaction_abortable_then_abort_recovers() -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))
    tm.on_batch_error(KafkaError(10, "record too large"))
    assert tm.state is TxnState.ABORTABLE_ERROR and tm.is_aborting
    with pytest.raises(TransactionAbortableError, match="must be aborted") as info:
        tm.commit_transaction()
    assert isinstance(info.value.cause, KafkaError) and info.value.cause.code == 10
    with pytest.raises(TransactionAbortableError):
        tm.add_partition("t", 1)
    abort = tm.abort_transaction()
    end = expect(tm, K.END_TXN)
    tm.on_response(end, TxnResponse(), 0)
    assert abort.done and abort.error is None and tm.state is TxnState.READY
    in_transaction_with(tm, ("t", 0))  # usable again
    assert tm.state is TxnState.IN_TRANSACTION


def test_a_record_failing_during_commit_fails_the_commit_and_its_end_txn_is_not_sent() -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))
    commit = tm.commit_transaction()
    assert tm.next_request(0, has_incomplete_batches=True) is None
    tm.on_batch_error(KafkaError(6))
    assert commit.done and isinstance(commit.error, KafkaError)
    assert tm.next_request(0, has_incomplete_batches=False) is None, "a commit EndTxn must not follow"
    abort = tm.abort_transaction()
    end = expect(tm, K.END_TXN)
    assert not end.committed
    tm.on_response(end, TxnResponse(), 0)
    assert abort.done and abort.error is None


def test_topic_authorization_failure_is_abortable_and_names_the_topic() -> None:
    tm = initialized()
    tm.begin_transaction()
    tm.add_partition("secret", 0)
    tm.add_partition("open", 0)
    request = expect(tm, K.ADD_PARTITIONS)
    tm.on_response(request, TxnResponse(partition_errors={("secret", 0): 29, ("open", 0): 55}), 0)
    assert tm.state is TxnState.ABORTABLE_ERROR
    assert isinstance(tm.last_error, KafkaError) and "secret" in str(tm.last_error)
    assert not tm.is_send_allowed("open", 0)


def test_rebalanced_group_makes_the_offsets_commit_abortable() -> None:
    tm = initialized()
    tm.begin_transaction()
    operation = tm.send_offsets_to_transaction({("in", 0): 5}, ConsumerGroupMetadata("g", 3, "m"))
    tm.on_response(expect(tm, K.ADD_OFFSETS), TxnResponse(), 0)
    answer_coordinator(tm, node=GROUP_COORDINATOR)
    tm.on_response(expect(tm, K.TXN_OFFSET_COMMIT), TxnResponse(partition_errors={("in", 0): 22}), 0)
    assert operation.done and "rebalanced" in str(operation.error)
    assert tm.state is TxnState.ABORTABLE_ERROR


def test_unknown_producer_id_is_abortable_and_the_abort_bumps_the_epoch() -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))
    tm.take_sequences_reset()
    tm.on_batch_error(KafkaError(59))
    assert tm.state is TxnState.ABORTABLE_ERROR
    abort = tm.abort_transaction()
    tm.on_response(expect(tm, K.END_TXN), TxnResponse(), 0)
    assert tm.state is TxnState.INITIALIZING and not abort.done
    bump = expect(tm, K.EPOCH_BUMP)
    assert bump.bump_epoch
    tm.on_response(bump, TxnResponse(producer_id=1000, producer_epoch=1), 0)
    assert abort.done and abort.error is None
    assert tm.state is TxnState.READY and tm.producer_epoch == 1 and tm.take_sequences_reset()


def test_unknown_producer_id_is_fatal_where_the_coordinator_cannot_bump_epochs() -> None:
    tm = initialized(can_bump_epoch=False)
    in_transaction_with(tm, ("t", 0))
    tm.on_batch_error(KafkaError(59))
    assert tm.state is TxnState.FATAL_ERROR


# ----------------------------------------------------------------------------- fatal


@pytest.mark.parametrize("code", [90, 47])  # PRODUCER_FENCED, INVALID_PRODUCER_EPOCH
def test_fenced_is_fatal_for_every_later_call(code: int) -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))
    commit = tm.commit_transaction()
    tm.on_response(expect(tm, K.END_TXN), TxnResponse(error_code=code), 0)
    assert tm.state is TxnState.FATAL_ERROR
    assert isinstance(commit.error, ProducerFencedError) and commit.error.code == 90
    assert "fenced" in str(commit.error) and "txn-1" in str(commit.error)
    for call in (tm.begin_transaction, tm.abort_transaction, lambda: tm.add_partition("t", 0)):
        with pytest.raises(ProducerFencedError):
            call()
    assert not tm.is_send_allowed("t", 0)


def test_transactional_id_authorization_is_fatal_and_says_what_to_grant() -> None:
    tm = manager()
    operation = tm.init_transactions()
    answer_coordinator(tm)
    tm.on_response(expect(tm, K.INIT_PRODUCER_ID), TxnResponse(error_code=53), 0)
    assert tm.state is TxnState.FATAL_ERROR
    assert operation.done and "TransactionalId" in str(operation.error)


def test_queued_requests_fail_with_the_fatal_error() -> None:
    tm = initialized()
    tm.begin_transaction()
    tm.add_partition("t", 0)
    add = expect(tm, K.ADD_PARTITIONS)
    offsets = tm.send_offsets_to_transaction({("in", 0): 1}, ConsumerGroupMetadata("g"))
    tm.on_response(add, TxnResponse(partition_errors={("t", 0): 90}), 0)
    assert tm.next_request(0, False) is None
    assert offsets.done and isinstance(offsets.error, ProducerFencedError)


# ----------------------------------------------------------------------------- timeouts


def test_a_timed_out_commit_is_resumed_by_calling_commit_again_and_abort_is_refused() -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))
    commit = tm.commit_transaction()
    # The caller's timeout passes here; the commit goes on.
    assert tm.commit_transaction() is commit
    with pytest.raises(InvalidTxnStateError, match="previous commit_transaction timed out"):
        tm.abort_transaction()
    tm.on_response(expect(tm, K.END_TXN), TxnResponse(), 0)
    assert commit.done and tm.state is TxnState.READY
    tm.begin_transaction()  # the cached call is gone once done


def test_a_timed_out_init_is_resumed_by_calling_init_again() -> None:
    tm = manager()
    init = tm.init_transactions()
    assert tm.init_transactions() is init


def test_close_fails_every_pending_operation() -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))
    commit = tm.commit_transaction()
    error = RuntimeError("closed")
    tm.close(error)
    assert commit.done and commit.error is error
    assert tm.next_request(0, False) is None


# ----------------------------------------------------------------------------- transactions v2


def test_transactions_v2_adds_partitions_implicitly_and_takes_the_epoch_from_end_txn() -> None:
    tm = initialized()
    tm.transactions_v2 = True
    tm.begin_transaction()
    tm.add_partition("t", 0)
    assert tm.is_send_allowed("t", 0), "KIP-890: Produce adds the partition"
    commit = tm.commit_transaction()
    end = expect(tm, K.END_TXN)  # no AddPartitionsToTxn went out
    tm.take_sequences_reset()
    tm.on_response(end, TxnResponse(producer_id=1000, producer_epoch=1), 0)
    assert commit.done and tm.producer_epoch == 1 and tm.take_sequences_reset()


# ----------------------------------------------------------------------------- any sequence


_CALLS = ["begin", "add", "offsets", "commit", "abort", "batch_error", "answer_ok", "answer_err", "lost"]
_ERROR_CODES = [6, 14, 15, 16, 29, 47, 51, 53, 59, 90, 120, 22]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_CALLS), st.sampled_from(_ERROR_CODES)), max_size=40),
    st.booleans(),
    st.sampled_from([1, 30, 1_000]),
)
def test_any_sequence_keeps_the_invariants(steps: list[tuple[str, int]], v2: bool, step_ms: int) -> None:
    """Whatever the user calls and the broker answers: no path attempts a transition the table does
    not list (``_transition`` would raise "cannot go from"), a refused call changes nothing, at most
    one request is in flight, nothing is completed twice (TxnOperation would raise), a fatal
    state is never left, and (transactions v2) no batch is held for the previous transaction
    longer than 100 ms."""
    tm = initialized(await_previous=True)
    tm.transactions_v2 = v2
    seen_fatal = False
    now = 0
    in_flight: TxnRequest | None = None
    added_ms: dict[int, int] = {}
    for call, code in steps:
        before = tm.state
        now += step_ms
        tm.on_poll(now)
        if tm.state not in (TxnState.IN_TRANSACTION, TxnState.COMMITTING):
            added_ms.clear()
        for partition, since in added_ms.items():
            assert now - since < 100 or tm.is_send_allowed("t", partition), "held over 100 ms"
        try:
            if call == "begin":
                tm.begin_transaction()
            elif call == "add":
                tm.add_partition("t", code % 3)
                if v2:
                    added_ms.setdefault(code % 3, now)
            elif call == "offsets":
                tm.send_offsets_to_transaction({("in", 0): code}, ConsumerGroupMetadata("g"))
            elif call == "commit":
                tm.commit_transaction()
            elif call == "abort":
                tm.abort_transaction()
            elif call == "batch_error":
                tm.on_batch_error(KafkaError(code))
        except (InvalidTxnStateError, TransactionAbortableError, KafkaError) as exc:
            assert "cannot go from" not in str(exc), exc
            assert tm.state is before, "a refused call must not change the state"
        if in_flight is None:
            in_flight = tm.next_request(now, False)
        elif call in ("answer_ok", "answer_err", "lost"):
            request, in_flight = in_flight, None
            if call == "lost":
                tm.on_request_failed(request, now)
            elif call == "answer_err":
                errors = {tp: code for tp in request.partitions} or {tp: code for tp in request.offsets}
                tm.on_response(request, TxnResponse(error_code=code, partition_errors=errors), now)
            else:
                state = ("PrepareCommit", "PrepareAbort", "CompleteCommit")[code % 3]
                tm.on_response(
                    request, TxnResponse(node_id=1, producer_id=1000, producer_epoch=1, state=state), now
                )
        assert tm.in_flight is in_flight
        seen_fatal = seen_fatal or tm.state is TxnState.FATAL_ERROR
        assert not seen_fatal or tm.state is TxnState.FATAL_ERROR


@pytest.mark.parametrize(
    ("answered_ms", "expected"), [(1_000, "newer producer"), (70_000, "longer than transaction")]
)
def test_the_fenced_error_says_when_the_transaction_outlived_its_timeout(
    answered_ms: int, expected: str
) -> None:
    tm = initialized()
    in_transaction_with(tm, ("t", 0))  # the coordinator heard of the transaction at 0 ms
    commit = tm.commit_transaction()
    tm.on_response(expect(tm, K.END_TXN, answered_ms), TxnResponse(error_code=90), answered_ms)
    assert isinstance(commit.error, ProducerFencedError) and expected in str(commit.error)
    if answered_ms > 60_000:
        assert "transaction.timeout.ms=60000" in str(commit.error)


# ----------------------------------------------------------------------------- v2: the previous transaction


def committed_v2(await_previous: bool = True, ended_ms: int = 0) -> TransactionManager:
    """A transactions-v2 manager whose first transaction's EndTxn was answered at ``ended_ms``."""
    tm = initialized(await_previous=await_previous)
    tm.transactions_v2 = True
    tm.begin_transaction()
    tm.add_partition("t", 0)
    tm.commit_transaction()
    end = expect(tm, K.END_TXN, ended_ms)
    tm.on_response(end, TxnResponse(producer_id=1000, producer_epoch=1), ended_ms)
    assert tm.state is TxnState.READY
    return tm


def test_v2_holds_the_next_transaction_until_the_coordinator_says_the_ended_one_is_complete() -> None:
    tm = committed_v2(ended_ms=10)
    ask = expect(tm, K.DESCRIBE_TRANSACTION, 10)  # at once, while the caller builds the next one
    assert ask.coordinator is CoordinatorType.TRANSACTION
    tm.begin_transaction()
    tm.add_partition("t", 1)
    assert not tm.is_send_allowed("t", 1), "the markers of the ended transaction may be unwritten"
    asked = [10]
    for now in range(11, 15):  # three answers asked again at once, then after 1 ms
        tm.on_response(ask, TxnResponse(state="PrepareCommit"), now)
        tm.add_partition("t", 2)  # joins the held transaction, no question of its own
        assert not tm.is_send_allowed("t", 1) and not tm.is_send_allowed("t", 2)
        if len(asked) == 4:
            assert tm.next_request(now, False) is None and tm.next_deadline_ms() == now + 1
            now += 1
        ask = expect(tm, K.DESCRIBE_TRANSACTION, now)
        asked.append(now)
    assert asked == [10, 11, 12, 13, 15]
    tm.on_response(ask, TxnResponse(state="CompleteCommit"), 16)
    assert tm.is_send_allowed("t", 1) and tm.is_send_allowed("t", 2)
    assert tm.next_request(16, False) is None
    assert (tm.previous_checks, tm.previous_waits) == (5, 1)


def test_v2_questions_back_off_to_8_ms() -> None:
    tm = committed_v2()
    now, asked = 0, []
    while now < 100:
        ask = tm.next_request(now, False)
        if ask is None:
            assert tm.next_deadline_ms() is not None
            now = max(now + 1, tm.next_deadline_ms() or 0)
            tm.on_poll(now)
            continue
        asked.append(now)
        tm.on_response(ask, TxnResponse(state="PrepareCommit"), now)
    assert asked == [0, 0, 0, 0, 1, 3, 7, 15, 23, 31, 39, 47, 55, 63, 71, 79, 87, 95]
    assert tm.next_request(100, False) is None and not tm.wants_poll, "given up after 100 ms"


def test_v2_a_transaction_begun_after_the_answer_does_not_wait() -> None:
    tm = committed_v2()
    tm.on_response(expect(tm, K.DESCRIBE_TRANSACTION, 0), TxnResponse(state="CompleteCommit"), 1)
    tm.begin_transaction()
    tm.add_partition("t", 0)
    assert tm.is_send_allowed("t", 0) and tm.next_request(1, False) is None
    assert (tm.previous_checks, tm.previous_waits) == (1, 0)


def test_v2_asks_nothing_when_disabled_or_under_v1() -> None:
    java = committed_v2(await_previous=False)
    assert java.next_request(0, False) is None
    java.begin_transaction()
    java.add_partition("t", 0)
    assert java.is_send_allowed("t", 0) and java.next_request(1, False) is None
    v1 = initialized(await_previous=True)
    in_transaction_with(v1, ("t", 0))
    v1.commit_transaction()
    v1.on_response(expect(v1, K.END_TXN), TxnResponse(), 0)
    assert v1.next_request(0, False) is None
    v1.begin_transaction()
    v1.add_partition("t", 0)
    assert expect(v1, K.ADD_PARTITIONS, 1).partitions == (("t", 0),)


def test_v2_hold_ends_100_ms_after_end_txn_whatever_the_coordinator_says() -> None:
    tm = committed_v2(ended_ms=5)
    ask = expect(tm, K.DESCRIBE_TRANSACTION, 5)
    tm.begin_transaction()
    tm.add_partition("t", 0)
    tm.on_poll(104)
    assert not tm.is_send_allowed("t", 0)
    assert tm.next_deadline_ms() == 105, "the sender must wake when the hold ends"
    tm.on_poll(105)
    assert tm.is_send_allowed("t", 0)
    tm.on_response(ask, TxnResponse(state="PrepareCommit"), 106)  # late: changes nothing
    assert tm.is_send_allowed("t", 0) and tm.next_request(200, False) is None
    assert ask.operation.done and ask.operation.error is None


@pytest.mark.parametrize("outcome", ["lost", "not_coordinator", "not_authorized", "other_state"])
def test_v2_hold_ends_on_any_answer_but_prepare(outcome: str) -> None:
    """Asking is a shortcut: an error, a lost answer or any other state lets the batches go (the
    partition leader then retries them itself, as for Java's)."""
    tm = committed_v2()
    ask = expect(tm, K.DESCRIBE_TRANSACTION, 1)
    tm.begin_transaction()
    tm.add_partition("t", 0)
    if outcome == "lost":
        tm.on_request_failed(ask, 2)
        expect(tm, K.FIND_COORDINATOR, 2)  # the coordinator is looked up again, nothing is asked again
    else:
        code, state = {"not_coordinator": (16, ""), "not_authorized": (53, ""), "other_state": (0, "Empty")}[
            outcome
        ]
        tm.on_response(ask, TxnResponse(error_code=code, state=state), 2)
        assert tm.next_request(2, False) is None
    assert tm.is_send_allowed("t", 0) and tm.state is TxnState.IN_TRANSACTION


@pytest.mark.parametrize("code", [53, 35])
def test_v2_stops_asking_where_it_may_not_or_cannot(code: int) -> None:
    """TRANSACTIONAL_ID_AUTHORIZATION_FAILED (no DESCRIBE on the id) or UNSUPPORTED_VERSION (a
    coordinator that refuses the request's version): the batches go, and later transactions are not
    held or asked about at all. (A coordinator that does not offer the API at all is found at
    init_transactions: the engine then turns the questions off.)"""
    tm = committed_v2()
    tm.on_response(expect(tm, K.DESCRIBE_TRANSACTION, 0), TxnResponse(error_code=code), 1)
    assert tm.state is TxnState.READY and not tm.await_previous
    tm.begin_transaction()
    tm.add_partition("t", 0)
    assert tm.is_send_allowed("t", 0)
    tm.commit_transaction()
    tm.on_response(expect(tm, K.END_TXN, 2), TxnResponse(producer_id=1000, producer_epoch=2), 2)
    assert tm.next_request(2, False) is None and tm.previous_checks == 1


def test_v2_offsets_wait_behind_the_question_too() -> None:
    tm = committed_v2()
    ask = expect(tm, K.DESCRIBE_TRANSACTION, 0)
    tm.begin_transaction()
    offsets = tm.send_offsets_to_transaction({("in", 0): 1}, ConsumerGroupMetadata("g"))
    tm.on_response(ask, TxnResponse(state="PrepareAbort"), 0)
    # Not AddOffsetsToTxn, which would meet CONCURRENT_TRANSACTIONS: the question again.
    tm.on_response(expect(tm, K.DESCRIBE_TRANSACTION, 1), TxnResponse(state="CompleteAbort"), 1)
    add = expect(tm, K.ADD_OFFSETS, 1)
    tm.on_response(add, TxnResponse(), 1)
    answer_coordinator(tm, GROUP_COORDINATOR, 1)
    commit = expect(tm, K.TXN_OFFSET_COMMIT, 1)
    tm.on_response(commit, TxnResponse(partition_errors={("in", 0): 0}), 1)
    assert offsets.done and offsets.error is None and tm.previous_waits == 1


def test_v2_abort_while_held_ends_the_transaction_after_the_question() -> None:
    tm = committed_v2()
    ask = expect(tm, K.DESCRIBE_TRANSACTION, 0)
    tm.begin_transaction()
    tm.add_partition("t", 0)
    abort = tm.abort_transaction()
    tm.on_response(ask, TxnResponse(state="PrepareCommit"), 0)
    # Not EndTxn, which would meet CONCURRENT_TRANSACTIONS: the question again.
    tm.on_response(expect(tm, K.DESCRIBE_TRANSACTION, 1), TxnResponse(state="CompleteCommit"), 1)
    end = expect(tm, K.END_TXN, 1)
    assert not end.committed
    tm.on_response(end, TxnResponse(producer_id=1000, producer_epoch=2), 1)
    assert abort.done and abort.error is None and tm.state is TxnState.READY
    assert expect(tm, K.DESCRIBE_TRANSACTION, 1), "and the abort's markers are waited for in turn"
