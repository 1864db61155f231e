"""Transactions while the transaction coordinator's broker dies, on three Apache Kafka nodes.

The coordinator's node is SIGKILLed in the middle of a commit. Every transaction must end up
entirely visible or entirely invisible to ``read_committed`` readers, every commit that returned
must be visible, and the producer must go on committing once the coordinator has moved."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from helpers import consume_all
from kprod import KafkaTimeoutError, KprodError, Producer
from kprod.kafka_broker import KafkaCluster
from kprod.protocol.txn import find_coordinator_request, parse_find_coordinator

TXNS = 24
PER_TXN = 200
TXN_ID = "txn-failover-1"


def _coordinator(cluster: KafkaCluster) -> int:
    deadline = time.monotonic() + 30
    while True:
        answer = parse_find_coordinator(cluster.request(find_coordinator_request(4, 1, TXN_ID)), TXN_ID)
        if answer.error_code == 0:
            return answer.node_id
        assert time.monotonic() < deadline, f"no transaction coordinator: error {answer.error_code}"
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_a_killed_coordinator_leaves_every_transaction_whole(kafka_cluster: KafkaCluster) -> None:
    topic = "txn-failover"
    kafka_cluster.create_topic(topic, partitions=3)
    producer = Producer(
        {"bootstrap.servers": kafka_cluster.bootstrap_servers, "transactional.id": TXN_ID},
        request_timeout_ms=5_000,
        delivery_timeout_ms=60_000,
    )
    committed: list[int] = []
    aborted: list[int] = []
    victim = -1
    try:
        producer.init_transactions(timeout=60)
        for t in range(TXNS):
            producer.begin_transaction()
            for i in range(PER_TXN):
                producer.send(topic, b"%02d-%03d" % (t, i), key=b"k%d" % i)
            killer = None
            if t == TXNS // 3:
                victim = _coordinator(kafka_cluster)
                killer = threading.Timer(0.005, kafka_cluster.kill_node, args=(victim,))
                killer.start()
            try:
                _commit(producer)
                committed.append(t)
            except KprodError:
                producer.abort_transaction(timeout=60)
                aborted.append(t)
            finally:
                if killer is not None:
                    killer.join()
        assert victim > 0
        assert committed[-TXNS // 3 :] == list(range(TXNS - TXNS // 3, TXNS)), (
            f"the producer did not go on after the coordinator moved: committed {committed}, aborted {aborted}"
        )
        assert _coordinator(kafka_cluster) != victim, "the coordinator should have moved"
    finally:
        producer.close(timeout=10)
        if victim > 0 and not kafka_cluster.node(victim).running:
            kafka_cluster.start_node(victim, timeout_s=90)
        kafka_cluster.wait_ready(90)

    records = consume_all(
        kafka_cluster.bootstrap_servers,
        topic,
        3,
        len(committed) * PER_TXN,
        timeout_s=90,
        linger_s=2.0,
        config={"isolation.level": "read_committed"},
    )
    per_txn = Counter(int(r.value.split(b"-")[0]) for r in records if r.value is not None)
    partial = {t: n for t, n in per_txn.items() if n != PER_TXN}
    assert not partial, f"transactions visible in part: {partial}"
    assert set(per_txn) == set(committed), (
        f"visible {sorted(per_txn)}, committed {committed}, aborted {aborted}"
    )
    assert len({r.value for r in records}) == len(records), "a committed record is visible twice"


def _commit(producer: Producer) -> None:
    """Commit, resuming a commit that timed out (it goes on in the background) until it settles."""
    deadline = time.monotonic() + 90
    while True:
        try:
            producer.commit_transaction(timeout=15)
            return
        except KafkaTimeoutError:
            if time.monotonic() > deadline:
                raise
