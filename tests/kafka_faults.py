"""Fault scenarios on a three-node Apache Kafka cluster, shared by the tests and the reliability bench.

Each scenario runs a paced load of keyed, idempotent, ``acks=all`` records with five requests in
flight per connection against a topic with replication factor 3 and ``min.insync.replicas=2``,
does one fault to the cluster while the load runs, brings the cluster back, and then judges the
log as confluent-kafka reads it back: every acknowledged record present, none twice, and every
key's records in send order. ``tests/test_faults_kafka.py`` asserts the verdict;
``bench/reliability.py`` prints it in docs/reliability.md.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from helpers import consume_all
from kprod import Producer
from kprod.kafka_broker import KafkaCluster

__all__ = ["SCENARIOS", "FaultRun", "producer_settings", "run_scenario"]

Fault = Callable[[KafkaCluster, str], str]


def producer_settings(cluster: KafkaCluster) -> dict[str, Any]:
    """The producer of every scenario (Kafka names)."""
    return {
        "bootstrap.servers": cluster.bootstrap_servers,
        "acks": "all",
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "request.timeout.ms": 5_000,
        "delivery.timeout.ms": 120_000,
        "linger.ms": 5,
    }


def _leader(cluster: KafkaCluster, topic: str, partition: int = 0) -> int:
    deadline = time.monotonic() + 30
    while True:
        leader = cluster.partition_leaders(topic).get(partition, -1)
        if leader > 0:
            return leader
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic}[{partition}] has no leader")
        time.sleep(0.1)


def leader_killed(cluster: KafkaCluster, topic: str) -> str:
    node = _leader(cluster, topic)
    cluster.kill_node(node)
    time.sleep(3)
    cluster.start_node(node, timeout_s=90)
    return f"node {node} (leader of {topic}[0]) SIGKILLed, restarted after 3 s"


def leader_stopped(cluster: KafkaCluster, topic: str) -> str:
    node = _leader(cluster, topic)
    cluster.pause_node(node)
    time.sleep(7)  # past request.timeout.ms=5000 and broker.session.timeout.ms=4000 (fenced)
    cluster.resume_node(node)
    cluster.wait_ready(90)
    return f"node {node} (leader) SIGSTOPped for 7 s (request.timeout.ms 5 s), then SIGCONT"


def controlled_shutdown(cluster: KafkaCluster, topic: str) -> str:
    node = _leader(cluster, topic)
    cluster.stop_node(node)
    time.sleep(2)
    cluster.start_node(node, timeout_s=90)
    return f"node {node} (leader) stopped with SIGTERM (controlled shutdown), restarted after 2 s"


def two_down(cluster: KafkaCluster, topic: str) -> str:
    first = _leader(cluster, topic)
    second = next(n.node_id for n in cluster.nodes if n.node_id != first)
    cluster.kill_node(first)
    cluster.kill_node(second)
    time.sleep(4)  # one replica left: below min.insync.replicas=2, and no KRaft quorum
    cluster.start_node(second, timeout_s=90)
    time.sleep(2)
    cluster.start_node(first, timeout_s=90)
    return f"nodes {first} and {second} SIGKILLed; {second} back after 4 s, {first} 2 s later"


def controller_killed(cluster: KafkaCluster, topic: str) -> str:
    node = cluster.active_controller()
    cluster.kill_node(node)
    time.sleep(3)
    cluster.start_node(node, timeout_s=90)
    return f"node {node} (the active controller) SIGKILLed, restarted after 3 s"


def preferred_election(cluster: KafkaCluster, topic: str) -> str:
    node = _leader(cluster, topic)
    cluster.stop_node(node)  # its leaderships move to the other replicas
    cluster.start_node(node, timeout_s=90)
    time.sleep(1)
    partitions = sorted(cluster.partition_leaders(topic))
    results = cluster.elect_preferred_leaders(topic, partitions)
    moved = sorted(p for p, code in results.items() if code == 0)
    return (
        f"node {node} restarted as follower, then a preferred-leader election moved partitions {moved} back"
    )


SCENARIOS: dict[str, Fault] = {
    "kafka-leader-killed": leader_killed,
    "kafka-leader-sigstop": leader_stopped,
    "kafka-controlled-shutdown": controlled_shutdown,
    "kafka-two-brokers-down": two_down,
    "kafka-controller-killed": controller_killed,
    "kafka-preferred-election": preferred_election,
}


@dataclass
class FaultRun:
    """The outcome of one scenario, as the log tells it."""

    name: str
    fault: str = ""
    sent: int = 0
    acked: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    read: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    seconds: float = 0.0
    retries: int = 0

    @property
    def ok(self) -> bool:
        clean = not (self.lost or self.duplicated or self.reordered or self.failed)
        return clean and self.acked == self.sent


def run_scenario(
    cluster: KafkaCluster,
    name: str,
    topic: str,
    records: int = 30_000,
    duration_s: float = 10.0,
    partitions: int = 6,
    keys: int = 300,
) -> FaultRun:
    """Create ``topic``, run the load with scenario ``name``'s fault a quarter of the way in,
    restore the cluster, and judge the log. Bounded: the load takes about ``duration_s``, the
    flush at most 150 s, the read-back at most 120 s."""
    fault = SCENARIOS[name]
    cluster.create_topic(topic, partitions=partitions, replication_factor=3)
    result = FaultRun(name)
    acked: set[int] = set()
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def on_delivery(index: int, metadata: Any, error: BaseException | None) -> None:
        with lock:
            if error is None:
                acked.add(index)
            else:
                errors[type(error).__name__ + ": " + str(error)[:120]] += 1

    fault_error: list[BaseException] = []

    def do_fault() -> None:
        try:
            result.fault = fault(cluster, topic)
        except BaseException as exc:
            fault_error.append(exc)

    started = time.monotonic()
    faulter = threading.Timer(duration_s / 4, do_fault)
    producer = Producer(producer_settings(cluster))
    try:
        faulter.start()
        for i in range(records):
            producer.send(
                topic,
                b"%07d" % i,
                key=b"k%04d" % (i % keys),
                on_delivery=functools.partial(on_delivery, i),
            )
            result.sent = i + 1
            ahead = started + duration_s * (i + 1) / records - time.monotonic()
            if ahead > 0.002:
                time.sleep(ahead)
        producer.flush(timeout=150)
        result.retries = int(producer.metrics()["record-retry-total"])
    finally:
        faulter.join(timeout=180)
        producer.close(timeout=10)
        for node in cluster.nodes:  # whatever happened, leave three running nodes
            if not node.running:
                cluster.start_node(node.node_id, timeout_s=90)
        cluster.wait_ready(90)
    result.seconds = round(time.monotonic() - started, 1)
    if fault_error:
        raise fault_error[0]
    result.acked = len(acked)
    result.failed = errors
    log = consume_all(cluster.bootstrap_servers, topic, partitions, result.acked, timeout_s=120, linger_s=2.0)
    result.read = len(log)
    seen = Counter(int(r.value or b"-1") for r in log)
    result.lost = len(acked - set(seen))
    result.duplicated = sum(c - 1 for c in seen.values() if c > 1)
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    for r in log:
        by_key[r.key].append(int(r.value or b"-1"))
    result.reordered = sum(1 for values in by_key.values() for a, b in itertools.pairwise(values) if b < a)
    return result
