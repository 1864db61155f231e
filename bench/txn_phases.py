#!/usr/bin/env python3
"""Where a short transaction's time goes: per-phase timestamps for kprod and confluent-kafka.

    python bench/txn_phases.py --per-txn 1000 --transactions 60

One Apache Kafka node (as bench/transactions.py), one topic of 6 partitions per client; the same
loop as bench/transactions.py (begin, send N 100-byte records, commit). For every transaction it
records, relative to ``begin_transaction()``:

* ``first_sent``/``first_ack``: the first Produce request of the transaction written, and its answer
  (kprod: the sender core's hooks; confluent-kafka: librdkafka's ``debug=protocol`` log lines);
* ``commit``: ``commit_transaction()`` called (every record appended);
* ``endtxn_sent``/``endtxn_ack``: EndTxn written and answered;
* ``done``: ``commit_transaction()`` returned;

plus the AddPartitionsToTxn requests and the CONCURRENT_TRANSACTIONS answers seen. librdkafka logs
with a millisecond clock, so its figures are to about 1 ms. The medians of each phase are printed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

PAYLOAD = b"x" * 100
THROUGHPUT_JVM = ("-Xms512m", "-Xmx1g", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError")


def run_kprod(
    bootstrap: str,
    topic: str,
    transactions: int,
    per_txn: int,
    version: str,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    from kprod import Producer
    from kprod._core import sender as sender_mod
    from kprod._core import transactions as txn_mod

    clock = time.perf_counter
    events: list[tuple[float, str, Any]] = []
    core_cls = sender_mod.SenderCore
    tm_cls = txn_mod.TransactionManager
    orig_on_sent, orig_on_resp = core_cls.on_sent, core_cls.on_produce_response
    orig_next, orig_on_response = tm_cls.next_request, tm_cls.on_response

    def on_sent(self: Any, plan: Any) -> Any:
        events.append((clock(), "produce_sent", len(plan.batches)))
        return orig_on_sent(self, plan)

    def on_produce_response(self: Any, plan: Any, response: Any, now_ms: int) -> Any:
        codes = [p.error_code for t in response.topics for p in t.partitions if p.error_code]
        events.append((clock(), "produce_ack", codes))
        return orig_on_resp(self, plan, response, now_ms)

    def next_request(self: Any, now_ms: int, busy: bool) -> Any:
        request = orig_next(self, now_ms, busy)
        if request is not None:
            events.append((clock(), "txn_sent", request.kind.name))
        return request

    def on_response(self: Any, request: Any, response: Any, now_ms: int) -> Any:
        codes = sorted({response.error_code, *response.partition_errors.values()} - {0})
        events.append((clock(), "txn_ack", (request.kind.name, codes, response.state)))
        return orig_on_response(self, request, response, now_ms)

    core_cls.on_sent, core_cls.on_produce_response = on_sent, on_produce_response  # type: ignore[method-assign]
    tm_cls.next_request, tm_cls.on_response = next_request, on_response  # type: ignore[method-assign]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"phases-kprod-{uuid.uuid4().hex[:6]}",
            "linger.ms": 5,
            "kprod.transaction.version": version,
            **(extra or {}),
        }
    )
    marks: list[dict[str, float]] = []
    try:
        producer.init_transactions()
        send = functools.partial(producer.send, partition=PARTITION)
        for _ in range(transactions):
            m = {"begin": clock()}
            producer.begin_transaction()
            for _ in range(per_txn):
                send(topic, PAYLOAD)
            m["commit"] = clock()
            producer.commit_transaction()
            m["done"] = clock()
            marks.append(m)
    finally:
        producer.close(10)
        core_cls.on_sent, core_cls.on_produce_response = orig_on_sent, orig_on_resp  # type: ignore[method-assign]
        tm_cls.next_request, tm_cls.on_response = orig_next, orig_on_response  # type: ignore[method-assign]
    return _phases(marks, events)


def _phases(marks: list[dict[str, float]], events: list[tuple[float, str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in marks:
        begin, done = m["begin"], m["done"]
        inside = [e for e in events if begin <= e[0] <= done]
        row: dict[str, Any] = {"commit": m["commit"] - begin, "done": done - begin}
        sent = [e for e in inside if e[1] == "produce_sent"]
        acks = [e for e in inside if e[1] == "produce_ack"]
        row["produce_requests"] = len(sent)
        row["first_sent"] = sent[0][0] - begin if sent else None
        row["first_ack"] = acks[0][0] - begin if acks else None
        row["produce_errors"] = sorted({c for e in acks for c in e[2]})
        end_sent = [e for e in inside if e[1] == "txn_sent" and e[2] == "END_TXN"]
        end_ack = [e for e in inside if e[1] == "txn_ack" and e[2][0] == "END_TXN"]
        row["last_ack_before_endtxn"] = (
            max((e[0] for e in acks if not end_sent or e[0] <= end_sent[0][0]), default=begin) - begin
        )
        row["endtxn_sent"] = end_sent[0][0] - begin if end_sent else None
        row["endtxn_ack"] = end_ack[-1][0] - begin if end_ack else None
        adds = [e for e in inside if e[1] == "txn_ack" and e[2][0] == "ADD_PARTITIONS"]
        row["add_partitions"] = len(adds)
        row["concurrent"] = sum(1 for e in adds if 51 in e[2][1]) + sum(1 for e in acks if 51 in e[2])
        row["timeline"] = [(round((e[0] - begin) * 1000, 2), e[1], e[2]) for e in inside]
        out.append(row)
    return out


CONFLUENT_CHILD = r"""
import json, sys, time, uuid
from confluent_kafka import Producer
bootstrap, topic, transactions, per_txn = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
partition = int(sys.argv[5]) if len(sys.argv) > 5 else -1
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "phases-ck-" + uuid.uuid4().hex[:6],
              "linger.ms": 5, "queue.buffering.max.messages": 1000000, "debug": "protocol,eos"})
p.init_transactions(60)
payload = b"x" * 100
marks = []
for _ in range(transactions):
    m = {"begin": time.time()}
    p.begin_transaction()
    for i in range(per_txn):
        p.produce(topic, payload, partition=partition)
        if i % 1000 == 0:
            p.poll(0)
    m["commit"] = time.time()
    p.commit_transaction(60)
    m["done"] = time.time()
    marks.append(m)
print(json.dumps(marks))
"""

_LOG = re.compile(r"^%\d\|(\d+)\.(\d{3})\|(\w+)\|[^|]*\| (.*)$")


def run_confluent(bootstrap: str, topic: str, transactions: int, per_txn: int) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CONFLUENT_CHILD,
            bootstrap,
            topic,
            str(transactions),
            str(per_txn),
            str(-1 if PARTITION is None else PARTITION),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    events: list[tuple[float, str, Any]] = []
    for line in proc.stderr.splitlines():
        match = _LOG.match(line)
        if match is None:
            continue
        t = int(match.group(1)) + int(match.group(2)) / 1000
        fac, text = match.group(3), match.group(4)
        if fac == "SEND" and "Sent ProduceRequest" in text:
            events.append((t, "produce_sent", 1))
        elif fac == "RECV" and "Received ProduceResponse" in text:
            events.append((t, "produce_ack", []))
        elif fac == "SEND" and "Sent EndTxnRequest" in text:
            events.append((t, "txn_sent", "END_TXN"))
        elif fac == "RECV" and "Received EndTxnResponse" in text:
            events.append((t, "txn_ack", ("END_TXN", [])))
        elif fac == "RECV" and "Received AddPartitionsToTxnResponse" in text:
            events.append((t, "txn_ack", ("ADD_PARTITIONS", [])))
        elif fac == "ADDPARTS" and "another concurrent operation" in text:
            events.append((t, "txn_ack", ("ADD_PARTITIONS", [51])))
    for m in marks:  # librdkafka's clock has 1 ms steps: widen the window by 1 ms at the end
        m["done"] += 0.001
    return _phases(marks, events)


def summarize(name: str, rows: list[dict[str, Any]]) -> str:
    rows = rows[len(rows) // 10 :]  # skip the first tenth (warm-up)

    def med(key: str) -> str:
        values = [r[key] * 1000 for r in rows if r[key] is not None]
        return f"{statistics.median(values):6.1f}" if values else "   n/a"

    total = sum(r["done"] for r in rows)
    concurrent = sum(1 for r in rows if r["concurrent"])
    return (
        f"| {name} | {med('first_sent')} | {med('first_ack')} | {med('commit')} | "
        f"{med('last_ack_before_endtxn')} | {med('endtxn_sent')} | {med('endtxn_ack')} | {med('done')} | "
        f"{statistics.median(r['produce_requests'] for r in rows):.0f} | {concurrent}/{len(rows)} | "
        f"{len(rows) * int(ARGS.per_txn) / total:,.0f} |"
    )


def main() -> int:
    global ARGS, PARTITION
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-txn", type=int, default=1000)
    parser.add_argument("--transactions", type=int, default=60)
    parser.add_argument("--clients", default="kprod-v2,kprod-v2-java,kprod-v1,confluent")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--kprod-config", default="", help="extra kprod settings, k=v,k=v")
    parser.add_argument("--partition", type=int, help="send every record to this partition")
    parser.add_argument("--dump", type=Path, help="write every transaction's row as JSON here")
    ARGS = parser.parse_args()
    PARTITION = ARGS.partition
    from kprod.kafka_broker import KafkaCluster

    def go(bootstrap: str, create: Any) -> None:
        header = (
            "| client (ms after begin, medians) | first Produce sent | first Produce answered | commit called | "
            "last answer before EndTxn | EndTxn sent | EndTxn answered | commit returned | Produce requests | "
            "txns with CONCURRENT_TRANSACTIONS | records/s |\n|---|" + "---:|" * 10
        )
        lines = [header]
        dump: dict[str, Any] = {}
        extra = dict(kv.split("=", 1) for kv in ARGS.kprod_config.split(",") if kv)
        for client in ARGS.clients.split(","):
            topic = f"phases-{client}-{uuid.uuid4().hex[:4]}"
            create(topic)
            if client == "confluent":
                rows = run_confluent(bootstrap, topic, ARGS.transactions, ARGS.per_txn)
            else:
                # kprod-v2-java: transactions v2 without waiting for the previous transaction's
                # markers (kprod.transaction.await.previous=false), as the Java producer does.
                java_like = {"kprod.transaction.await.previous": False} if client == "kprod-v2-java" else {}
                rows = run_kprod(
                    bootstrap,
                    topic,
                    ARGS.transactions,
                    ARGS.per_txn,
                    {"kprod-v2": "auto", "kprod-v2-java": "auto", "kprod-v1": "1"}[client],
                    {**extra, **java_like},
                )
            dump[client] = rows
            lines.append(summarize(client, rows))
            print(lines[-1], flush=True)
        print("\n".join(lines))
        if ARGS.dump:
            ARGS.dump.write_text(json.dumps(dump, indent=1))

    if ARGS.bootstrap:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": ARGS.bootstrap})

        def create(topic: str) -> None:
            admin.create_topics([NewTopic(topic, 6, 1)])[topic].result()
            time.sleep(0.5)

        go(ARGS.bootstrap, create)
    else:
        with KafkaCluster(jvm_options=THROUGHPUT_JVM) as kafka:
            go(kafka.bootstrap_servers, lambda t: kafka.create_topic(t, partitions=6))
    return 0


ARGS: Any = None
PARTITION: int | None = None

if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
