"""Faults on three Apache Kafka nodes during a load (scenarios in ``tests/kafka_faults.py``).

30,000 keyed, idempotent, ``acks=all`` records with five requests in flight, replication factor 3,
``min.insync.replicas=2``; the leader killed, frozen past ``request.timeout.ms``, shut down
cleanly; two brokers down; the controller killed; a preferred-leader election. Each must end with
every record acknowledged and in the log once, in send order per key.
"""

from __future__ import annotations

import pytest

from kafka_faults import SCENARIOS, run_scenario
from kprod.kafka_broker import KafkaCluster


@pytest.mark.timeout(400)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_record_is_lost_duplicated_or_reordered(kafka_cluster: KafkaCluster, scenario: str) -> None:
    result = run_scenario(kafka_cluster, scenario, topic=f"faults-{scenario}")
    summary = (
        f"{scenario} ({result.fault}): sent {result.sent}, acked {result.acked}, failed "
        f"{dict(result.failed)}, read {result.read}, lost {result.lost}, duplicated {result.duplicated}, "
        f"reordered {result.reordered}, {result.seconds} s, {result.retries} retries"
    )
    assert result.fault, summary
    assert result.ok, summary
