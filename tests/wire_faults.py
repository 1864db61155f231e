"""Answers damaged on the wire: a producer sends keyed records through ``tests/relay.py`` while the
relay makes the next answers of one API unreadable. Shared by ``tests/test_faults_answers.py`` and
``bench/reliability.py``."""

from __future__ import annotations

import random
import time
from typing import Any

from fuzz_frames import malformed
from helpers import consume_all
from kprod import Producer
from relay import RelayedTansu

__all__ = [
    "WIRE_APIS",
    "WIRE_DELIVERY_TIMEOUT_MS",
    "WIRE_RECORDS",
    "WIRE_REQUEST_TIMEOUT_MS",
    "run_wire_mutation",
]

WIRE_APIS = {0: "Produce", 3: "Metadata", 18: "ApiVersions", 22: "InitProducerId"}
WIRE_RECORDS = 3_000
WIRE_DELIVERY_TIMEOUT_MS = 60_000
WIRE_REQUEST_TIMEOUT_MS = 5_000


def run_wire_mutation(tansu: RelayedTansu, api_key: int, count: int = 2, seed: int = 0) -> dict[str, Any]:
    """Damage the next ``count`` answers of ``api_key`` on the wire (each one unreadable) while an
    idempotent producer sends ``WIRE_RECORDS`` keyed records; return what happened. Shared with
    ``bench/reliability.py``."""
    topic = f"wire-{api_key}-{seed}"
    tansu.create_topic(topic, partitions=3)
    rng = random.Random(f"wire-{api_key}-{seed}")
    tansu.relay.mutate_responses(
        count, {api_key}, lambda key, version, frame: malformed(key, version, frame, rng)
    )
    config = {
        "bootstrap.servers": tansu.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "request.timeout.ms": WIRE_REQUEST_TIMEOUT_MS,
        "delivery.timeout.ms": WIRE_DELIVERY_TIMEOUT_MS,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 200,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 200,
        "metadata.max.age.ms": 500,  # Metadata answers keep coming while records flow
    }
    started = time.monotonic()
    producer = Producer(config)
    try:
        futures = []
        for i in range(WIRE_RECORDS):
            futures.append(producer.send(topic, b"%06d" % i, key=b"k%02d" % (i % 30)))
            if i % 300 == 299:
                time.sleep(0.05)  # several rounds of requests, so later answers are damaged mid-stream
        errors = [f.exception(timeout=WIRE_DELIVERY_TIMEOUT_MS / 1000) for f in futures]
        seconds = time.monotonic() - started
        dead = producer._engine.fatal_error
        retries = producer.metrics()["record-retry-total"]
    finally:
        producer.close(10)
    records = consume_all(tansu.bootstrap_servers, topic, 3, WIRE_RECORDS, 30, linger_s=0.3)
    requests = tansu.relay.requests(api_key)
    mutated = [m for m in tansu.relay.mutated if m[1] == api_key]
    stalls = []
    reused = 0
    for at, _, conn in mutated:
        later = [r.at for r in requests if r.at > at]
        if later:
            stalls.append(min(later) - at)
        # Requests the client wrote before it read the damaged answer may still follow it closely.
        reused += sum(1 for r in tansu.relay.requests() if r.connection == conn and r.at > at + 0.25)
    return {
        "errors": errors,
        "seconds": seconds,
        "dead": dead,
        "retries": retries,
        "records": records,
        "mutated": len(mutated),
        "stalls": stalls,
        "requests_on_damaged_connections": reused,
    }
