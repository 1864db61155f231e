"""What a producer shows of itself: ``metrics()`` (Java's names, and kprod's own) and librdkafka's
statistics JSON for ``statistics.interval.ms`` + ``stats_cb`` (confluent-kafka's names).


Dashboards and scripts built on confluent-kafka's ``stats_cb`` read a JSON document of librdkafka's
shape; this fills the fields kprod has a meaning for (top level, ``brokers``, ``topics`` with their
``partitions``) from the engine's metrics, in librdkafka's units (microseconds for ``ts``/``age``/
``rtt``, milliseconds for ``metadata_age``). Fields without a kprod counterpart are left out rather
than invented.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kprod._io.engine import ProducerEngine

__all__ = ["librdkafka_statistics", "producer_metrics"]


def producer_metrics(engine: ProducerEngine) -> dict[str, Any]:
    """A snapshot of the internals: Java's producer metrics by name (rates and averages over
    ``metrics.num.samples`` windows of ``metrics.sample.window.ms``, as Java), per topic and per
    broker, why batches left, and kprod's own counters: ``ProducerEngine.metrics`` (any thread;
    takes the engine's lock)."""
    with engine.lock:
        core = engine.core
        now = time.monotonic_ns() // 1_000_000
        java = core.metrics.snapshot(now)
        java["batch-close-reasons"] = dict(engine.accumulator.close_reasons)
        java["buffer-available-bytes"] = engine.config.buffer_memory - engine.accumulator.used_bytes
        java["records-queued"] = sum(b.record_count for b in engine.accumulator.queued_batches())
        java["batch-size-limit"] = engine.config.batch_size
        java["waiting-threads"] = engine.waiting_count()
        java["connection-count"] = len(engine.conns.open_conns)
        last = engine.metadata.last_refresh_ms
        java["metadata-age"] = (now - last) / 1000 if last >= 0 else -1.0
        return java | {
            "buffer-total-bytes": engine.config.buffer_memory,
            "buffer-used-bytes": engine.accumulator.used_bytes,
            "batches-incomplete": engine.accumulator.batch_count,
            "requests-in-flight": core.in_flight_count,
            "connection-unwritten-bytes": sum(
                conn.write_buffer_size for conn in list(engine.conns.open_conns)
            ),
            "record-retry-total": core.retries_total,
            "records-sent-total": engine.records_sent,
            "batches-sent-total": engine.batches_sent,
            "produce-requests-total": engine.requests_sent,
            "batch-split-total": core.batch_splits,
            "produce-throttled-responses": engine.throttled_responses,
            "producer-id-resets": core.producer_id_resets,
            "producer-epoch-bumps": core.epoch_bumps,
            "producer-id": core.producer_id,
            "producer-epoch": core.producer_epoch,
            "compression-rate": {t: round(r, 4) for t, r in core.compression_ratio.ratios().items()},
            "brokers": dict(engine.metadata.brokers),
            "transaction-version": (2 if engine.transactions_v2 else 1) if engine.txn is not None else 0,
            "txn-previous-checks-total": engine.txn.previous_checks if engine.txn is not None else 0,
            "txn-previous-waits-total": engine.txn.previous_waits if engine.txn is not None else 0,
            "successful-authentication-total": engine.conns.authentications[0],
            "failed-authentication-total": engine.conns.authentications[1],
            "successful-reauthentication-total": engine.conns.reauthentications[0],
            "failed-reauthentication-total": engine.conns.reauthentications[1],
        }


def librdkafka_statistics(engine: ProducerEngine, started_ns: int) -> str:
    """The statistics document at this moment (call on the loop thread; takes the engine's lock)."""
    with engine.lock:
        now_ns = time.monotonic_ns()
        now_ms = now_ns // 1_000_000
        core = engine.core
        metrics = core.metrics
        acc = engine.accumulator
        queued = Counter[tuple[str, int]]()
        for batch in engine.incomplete_batches():
            queued[batch.topic, batch.partition] += batch.record_count
        last_refresh = engine.metadata.last_refresh_ms
        brokers: dict[str, Any] = {}
        for node_id, (host, port) in sorted(engine.metadata.brokers.items()):
            conn = engine.connections.get(node_id)
            node = metrics.nodes.get(node_id)
            latency = node["request-latency"] if node is not None else None
            brokers[f"{host}:{port}/{node_id}"] = {
                "name": f"{host}:{port}/{node_id}",
                "nodeid": node_id,
                "nodename": f"{host}:{port}",
                "state": "UP" if conn is not None and conn.ready else "DOWN",
                "waitresp_cnt": conn.in_flight_count if conn is not None else 0,
                "tx": int(node["request"].total) if node is not None else 0,
                "txbytes": int(node["outgoing-byte"].total) if node is not None else 0,
                "rtt": {
                    "avg": _us(latency.avg(now_ms)) if latency is not None else 0,
                    "max": _us(latency.max(now_ms)) if latency is not None else 0,
                },
            }
        topics: dict[str, Any] = {}
        for name, info in sorted(engine.metadata.topics.items()):
            stats = metrics.topics.get(name)
            partitions = {
                str(p): {
                    "partition": p,
                    "leader": leader,
                    "msgq_cnt": queued[name, p],
                }
                for p, leader in enumerate(info.leaders)
            }
            topics[name] = {
                "topic": name,
                "metadata_age": now_ms - last_refresh if last_refresh >= 0 else 0,
                "txmsgs": int(stats["record-send"].total) if stats is not None else 0,
                "txbytes": int(stats["byte"].total) if stats is not None else 0,
                "partitions": partitions,
            }
        document = {
            "name": engine.config.client_id,
            "client_id": engine.config.client_id,
            "type": "producer",
            "ts": now_ns // 1000,
            "time": int(time.time()),
            "age": (now_ns - started_ns) // 1000,
            "replyq": 0,
            "msg_cnt": sum(queued.values()),
            "msg_size": acc.used_bytes,
            "msg_size_max": engine.config.buffer_memory,
            "tx": int(metrics.requests.total),
            "tx_bytes": int(metrics.outgoing_bytes.total),
            "rx": int(metrics.responses.total),
            "rx_bytes": int(metrics.incoming_bytes.total),
            "txmsgs": int(metrics.record_send.total),
            "txmsg_bytes": int(sum(s["byte"].total for s in metrics.topics.values())),
            "brokers": brokers,
            "topics": topics,
        }
    return json.dumps(document, separators=(",", ":"))


def _us(ms: float) -> int:
    return 0 if ms != ms else int(ms * 1000)  # NaN (no sample) reads as 0, as librdkafka's empty windows
