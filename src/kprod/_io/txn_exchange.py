"""The transactional requests on the wire: which API, how to build it, how to read its answer.

The transaction manager (``_core/transactions.py``) decides *what* to ask (a
:class:`~kprod._core.transactions.TxnRequest`) and what an answer means (a
:class:`~kprod._core.transactions.TxnResponse`); the engine sends it. This module is the mapping
between the two and the protocol's builders and parsers (``protocol/txn.py``,
``protocol/messages.py``), with the version negotiated on the connection chosen at send time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kprod._core.transactions import TransactionManager, TxnRequest, TxnRequestKind, TxnResponse
from kprod._io.connection import BrokerConnection
from kprod.protocol.messages import (
    TRANSACTIONS_V2_END_TXN,
    TRANSACTIONS_V2_PRODUCE,
    ApiKey,
    init_producer_id_request,
    parse_init_producer_id,
)
from kprod.protocol.txn import (
    add_offsets_to_txn_request,
    add_partitions_to_txn_request,
    describe_transactions_request,
    end_txn_request,
    find_coordinator_request,
    parse_add_offsets_to_txn,
    parse_add_partitions_to_txn,
    parse_describe_transactions,
    parse_end_txn,
    parse_find_coordinator,
    parse_txn_offset_commit,
    txn_offset_commit_request,
)

__all__ = ["speaks_transactions_v2", "txn_exchange"]


def speaks_transactions_v2(conn: BrokerConnection) -> bool:
    """Whether to use transactions v2 (KIP-890) with the coordinator on ``conn``: its cluster has
    transaction.version 2 and it speaks Produce v12 and EndTxn v5, as the Java producer decides."""
    return (
        conn.transaction_version >= 2
        and conn.versions.get(ApiKey.PRODUCE, 0) >= TRANSACTIONS_V2_PRODUCE
        and conn.versions.get(ApiKey.END_TXN, 0) >= TRANSACTIONS_V2_END_TXN
    )


def txn_exchange(
    request: TxnRequest, txn: TransactionManager, on_found: Callable[[int, str, int], None]
) -> tuple[int, Callable[[int], Any], Callable[[Any], TxnResponse]]:
    """The API key, the request builder (by version) and the answer parser for ``request``.

    ``on_found(node_id, host, port)`` is called with a coordinator that FindCoordinator located.
    """
    txn_id = txn.transactional_id
    kind = request.kind
    if kind is TxnRequestKind.FIND_COORDINATOR:
        key = request.coordinator_key

        def found(response: Any) -> TxnResponse:
            answer = parse_find_coordinator(response, key)
            if answer.error_code == 0 and answer.node_id >= 0:
                on_found(answer.node_id, answer.host, answer.port)
            return TxnResponse(
                error_code=answer.error_code, node_id=answer.node_id, message=answer.message
            )

        return (
            ApiKey.FIND_COORDINATOR,
            lambda v: find_coordinator_request(v, int(request.find_type), key),
            found,
        )
    if kind in (TxnRequestKind.INIT_PRODUCER_ID, TxnRequestKind.EPOCH_BUMP):
        pid, epoch = (txn.producer_id, txn.producer_epoch) if request.bump_epoch else (-1, -1)

        def initialized(response: Any) -> TxnResponse:
            code, producer_id, producer_epoch = parse_init_producer_id(response)
            return TxnResponse(error_code=code, producer_id=producer_id, producer_epoch=producer_epoch)

        return (
            ApiKey.INIT_PRODUCER_ID,
            lambda v: init_producer_id_request(v, txn_id, txn.transaction_timeout_ms, pid, epoch),
            initialized,
        )
    if kind is TxnRequestKind.DESCRIBE_TRANSACTION:

        def described(response: Any) -> TxnResponse:
            code, state = parse_describe_transactions(response, txn_id)
            return TxnResponse(error_code=code, state=state)

        return (
            ApiKey.DESCRIBE_TRANSACTIONS,
            lambda v: describe_transactions_request(v, txn_id),
            described,
        )
    pid, epoch = txn.producer_id, txn.producer_epoch
    if kind is TxnRequestKind.ADD_PARTITIONS:
        return (
            ApiKey.ADD_PARTITIONS_TO_TXN,
            lambda v: add_partitions_to_txn_request(v, txn_id, pid, epoch, request.partitions),
            lambda r: TxnResponse(partition_errors=parse_add_partitions_to_txn(r)),
        )
    if kind is TxnRequestKind.ADD_OFFSETS:
        assert request.group is not None
        group_id = request.group.group_id
        return (
            ApiKey.ADD_OFFSETS_TO_TXN,
            lambda v: add_offsets_to_txn_request(v, txn_id, pid, epoch, group_id),
            lambda r: TxnResponse(error_code=parse_add_offsets_to_txn(r)),
        )
    if kind is TxnRequestKind.TXN_OFFSET_COMMIT:
        group = request.group
        assert group is not None
        return (
            ApiKey.TXN_OFFSET_COMMIT,
            lambda v: txn_offset_commit_request(
                v,
                txn_id,
                group.group_id,
                pid,
                epoch,
                request.offsets,
                group.generation_id,
                group.member_id,
                group.group_instance_id,
            ),
            lambda r: TxnResponse(partition_errors=parse_txn_offset_commit(r)),
        )

    def ended(response: Any) -> TxnResponse:
        code, producer_id, producer_epoch = parse_end_txn(response)
        return TxnResponse(error_code=code, producer_id=producer_id, producer_epoch=producer_epoch)

    return (
        ApiKey.END_TXN,
        lambda v: end_txn_request(v, txn_id, pid, epoch, request.committed),
        ended,
    )
