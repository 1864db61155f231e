"""One client, one workload, one process. Started by bench/run.py; prints ``BENCH-RESULT {json}`` lines.

    python bench/child.py --client kprod --workload '<Workload JSON>' --bootstrap 127.0.0.1:PORT

The measured section starts after the client is connected (one warm-up record sent and
acknowledged) and the values are generated; it ends when every record is acknowledged
(flush). CPU is this process's user+sys time over that section (every thread: kprod's I/O
thread, librdkafka's threads, ...); peak RSS is this process's VmHWM. Latency (ack time
minus send time) is taken for one record in ``--sample-every`` through each client's
delivery callback, and for every record in the one-at-a-time workload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from workloads import TOPIC, Workload, keys_for, values_for

CONFLUENT_POLL_EVERY = 1000
W5_MAX_BLOCK_MS = 100
W5_BUFFER_BYTES = 32 * 1024 * 1024
W5_STOP_AFTER_FULL = 3
"""W5 stops after this many consecutive "buffer full" answers (the broker never comes back)."""

clock = time.perf_counter_ns


def emit(doc: dict[str, Any]) -> None:
    print("BENCH-RESULT " + json.dumps(doc), flush=True)


def proc_status_mb(name: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a
    child would inherit the parent's peak."""
    return proc_status_mb("VmHWM")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile(sorted_ns: list[int], p: float) -> float | None:
    if not sorted_ns:
        return None
    return sorted_ns[min(len(sorted_ns) - 1, int(p * len(sorted_ns)))] / 1e6


class Meter:
    """Wall clock, CPU and RSS over the measured section, plus latency samples (ns)."""

    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.errors = 0
        self.first_error = ""
        self.t0 = self.cpu0 = 0.0
        self.rss0 = 0.0
        self.elapsed = self.cpu = 0.0
        self.wire_bytes: float | None = None
        """Bytes the client wrote to the brokers over the measured span (requests and all), if known."""

    def error(self, exc: object) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = repr(exc)[:300]

    def start(self) -> None:
        self.rss0 = proc_status_mb("VmRSS")
        self.cpu0 = cpu_s()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.elapsed = time.perf_counter() - self.t0
        self.cpu = cpu_s() - self.cpu0

    def on_future_done(self, t0: int, fut: asyncio.Future[Any]) -> None:
        """A done-callback for an asyncio delivery future sent at ``t0`` (``clock()`` ns)."""
        if fut.cancelled():
            self.error("cancelled")
        elif fut.exception() is not None:
            self.error(fut.exception())
        else:
            self.latencies.append(clock() - t0)

    def result(self, w: Workload, records: int) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "records": records,
            "elapsed_s": self.elapsed,
            "records_per_s": records / self.elapsed,
            "mb_per_s": records * w.value_size / self.elapsed / (1 << 20),
            "cpu_s": self.cpu,
            "cpu_us_per_record": self.cpu / records * 1e6,
            "rss_start_mb": self.rss0,
            "peak_rss_mb": peak_rss_mb(),
            "latency_samples": len(lat),
            "p50_ms": percentile(lat, 0.50),
            "p99_ms": percentile(lat, 0.99),
            "errors": self.errors,
            "first_error": self.first_error,
            "wire_bytes_per_record": None if self.wire_bytes is None else self.wire_bytes / records,
        }


def _stop_broker(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.1)


# ----------------------------------------------------------------------------- kprod


def security_props() -> dict[str, Any]:
    """TLS/SASL settings the parent passes for ``--security`` (names both kprod and librdkafka take)."""
    return dict(json.loads(os.environ.get("KPROD_BENCH_SECURITY") or "{}"))


def kprod_props(w: Workload, bootstrap: str) -> dict[str, object]:
    """kprod's settings for a workload (sync and asyncio alike)."""
    return {
        "bootstrap.servers": bootstrap,
        "acks": w.acks,
        "linger.ms": w.linger_ms,
        "compression.type": w.compression,
        "enable.idempotence": w.idempotence,
        **security_props(),
    }


def run_kprod(w: Workload, bootstrap: str, every: int, broker_pid: int) -> None:
    import kprod
    from kprod import BufferExhaustedError, Producer

    props = kprod_props(w, bootstrap)
    if w.mode == "memory":
        props["max.block.ms"] = W5_MAX_BLOCK_MS
        props["buffer.memory"] = W5_BUFFER_BYTES
    producer = Producer(props)
    producer.send(TOPIC, b"warm-up").result(30)
    values = values_for(w)
    keys = keys_for(w) or [None]
    nv, nk, n = len(values), len(keys), w.records
    m = Meter()
    base = {"client": "kprod", "version": kprod.__version__, "workload": w.name}

    if w.mode == "memory":
        _stop_broker(broker_pid)
        m.start()
        accepted = full = 0
        blocked_s: list[float] = []
        used_at_full = -1
        send = producer.send
        for i in range(n):
            t = time.perf_counter()
            try:
                send(TOPIC, values[i % nv])
            except BufferExhaustedError as exc:
                blocked_s.append(time.perf_counter() - t)
                full += 1
                if full == 1:
                    used_at_full = producer.metrics()["buffer-used-bytes"]
                    m.first_error = repr(exc)[:300]
                if full >= W5_STOP_AFTER_FULL:
                    break
                continue
            accepted += 1
            full = 0
        m.stop()
        emit(
            {
                **base,
                **_memory_result(m, w, accepted, blocked_s, W5_BUFFER_BYTES),
                "buffer_used_at_full": used_at_full,
                "raised": "BufferExhaustedError" if blocked_s else "",
                "max_block_ms": W5_MAX_BLOCK_MS,
            }
        )
        t = time.perf_counter()
        producer.close(1.0)
        emit({"close_s": time.perf_counter() - t})
        return

    lat_append = m.latencies.append

    def on_ack(t0: int, md: Any, err: BaseException | None) -> None:
        if err is None:
            lat_append(clock() - t0)
        else:
            m.error(err)

    send = producer.send
    wire0 = producer.metrics()["outgoing-byte-total"]
    m.start()
    if w.mode == "one-at-a-time":
        for i in range(n):
            t0 = clock()
            send(TOPIC, values[i % nv], keys[i % nk]).result(30)
            lat_append(clock() - t0)
    else:
        for i in range(n):
            if i % every:
                send(TOPIC, values[i % nv], keys[i % nk])
            else:
                send(TOPIC, values[i % nv], keys[i % nk], on_delivery=partial(on_ack, clock()))
        producer.flush()
    m.stop()
    m.wire_bytes = producer.metrics()["outgoing-byte-total"] - wire0
    emit({**base, **m.result(w, n)})
    producer.close(5)


def _memory_result(
    m: Meter, w: Workload, accepted: int, blocked_s: list[float], limit_bytes: int
) -> dict[str, Any]:
    peak = peak_rss_mb()
    return {
        "records": w.records,
        "accepted": accepted,
        "accepted_mb": accepted * w.value_size / (1 << 20),
        "buffer_limit_mb": limit_bytes / (1 << 20),
        "rss_start_mb": m.rss0,
        "rss_end_mb": proc_status_mb("VmRSS"),
        "peak_rss_mb": peak,
        "rss_growth_mb": peak - m.rss0,
        "full_answers": len(blocked_s),
        "blocked_ms_avg": (sum(blocked_s) / len(blocked_s) * 1000) if blocked_s else None,
        "elapsed_s": m.elapsed,
        "first_error": m.first_error,
    }


# ----------------------------------------------------------------------------- kprod-async


def run_kprod_async(w: Workload, bootstrap: str, every: int, broker_pid: int) -> None:
    """kprod's ``AsyncProducer`` on this process's loop: ``await enqueue()`` per record, then
    ``await flush()``; ``await send()`` per record in the one-at-a-time workload. Not run in W5."""
    import kprod
    from kprod import AsyncProducer

    props = kprod_props(w, bootstrap)

    async def main() -> None:
        async with AsyncProducer(props) as producer:
            await asyncio.wait_for(producer.send(TOPIC, b"warm-up"), 30)
            values = values_for(w)
            keys = keys_for(w) or [None]
            nv, nk, n = len(values), len(keys), w.records
            m = Meter()
            base = {"client": "kprod-async", "version": kprod.__version__, "workload": w.name}
            lat_append = m.latencies.append

            # As aiokafka: a done-callback on the delivery future, i.e. when a coroutine awaiting
            # it would resume (on_delivery would run one loop iteration earlier, inside the sender).
            on_done = m.on_future_done

            send = producer.send
            enqueue = producer.enqueue
            wire0 = producer.metrics()["outgoing-byte-total"]
            m.start()
            if w.mode == "one-at-a-time":
                for i in range(n):
                    t0 = clock()
                    await send(TOPIC, values[i % nv], keys[i % nk])
                    lat_append(clock() - t0)
            else:
                for i in range(n):
                    if i % every:
                        await enqueue(TOPIC, values[i % nv], keys[i % nk])
                    else:
                        t0 = clock()
                        fut = await enqueue(TOPIC, values[i % nv], keys[i % nk])
                        fut.add_done_callback(partial(on_done, t0))
                await producer.flush()
                await asyncio.sleep(0)  # let the last done-callbacks run
            m.stop()
            m.wire_bytes = producer.metrics()["outgoing-byte-total"] - wire0
            emit({**base, **m.result(w, n)})

    asyncio.run(main())


# ----------------------------------------------------------------------------- confluent-kafka


def run_confluent(w: Workload, bootstrap: str, every: int, broker_pid: int) -> None:
    import confluent_kafka
    from confluent_kafka import Producer

    conf: dict[str, Any] = {
        **security_props(),
        "bootstrap.servers": bootstrap,
        "acks": w.acks,
        "linger.ms": w.linger_ms,
        "compression.type": w.compression,
        "enable.idempotence": w.idempotence,
    }
    if w.mode == "memory":
        conf["queue.buffering.max.kbytes"] = W5_BUFFER_BYTES // 1024
        conf["queue.buffering.max.messages"] = 10_000_000
    # Bytes on the wire: librdkafka's statistics (each broker's txbytes), read before and after the
    # measured span (a statistics callback once a second costs nothing measurable).
    txbytes: list[int] = []

    def on_stats(stats_json: str) -> None:
        stats = json.loads(stats_json)
        txbytes.append(sum(b.get("txbytes", 0) for b in stats.get("brokers", {}).values()))

    conf["statistics.interval.ms"] = 1000
    conf["stats_cb"] = on_stats
    producer = Producer(conf)
    producer.produce(TOPIC, b"warm-up")
    if producer.flush(30):
        raise RuntimeError("warm-up record not delivered in 30 s")
    producer.poll(1.2)  # the first statistics: the bytes before the measured span
    values = values_for(w)
    keys = keys_for(w) or [None]
    nv, nk, n = len(values), len(keys), w.records
    m = Meter()
    base = {
        "client": "confluent-kafka",
        "version": f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})",
        "workload": w.name,
    }
    produce = producer.produce
    poll = producer.poll

    if w.mode == "memory":
        _stop_broker(broker_pid)
        m.start()
        accepted = full = 0
        blocked_s: list[float] = []
        for i in range(n):
            try:
                produce(TOPIC, values[i % nv])
            except BufferError as exc:
                t = time.perf_counter()
                poll(W5_MAX_BLOCK_MS / 1000)  # what an application does on BufferError: serve, wait, retry
                blocked_s.append(time.perf_counter() - t)
                full += 1
                if full == 1:
                    m.first_error = repr(exc)[:300]
                if full >= W5_STOP_AFTER_FULL:
                    break
                continue
            accepted += 1
            full = 0
            if i % CONFLUENT_POLL_EVERY == 0:
                poll(0)
        m.stop()
        emit(
            {
                **base,
                **_memory_result(m, w, accepted, blocked_s, W5_BUFFER_BYTES),
                "raised": "BufferError" if blocked_s else "",
                "max_block_ms": 0,
            }
        )
        producer.purge()
        os._exit(0)  # the broker is stopped: do not let the destructor wait for it

    lat_append = m.latencies.append

    def on_ack(t0: int, err: Any, msg: Any) -> None:
        if err is None:
            lat_append(clock() - t0)
        else:
            m.error(err)

    tx_before = txbytes[-1] if txbytes else None
    m.start()
    if w.mode == "one-at-a-time":
        done: list[int] = []

        def on_one(err: Any, msg: Any) -> None:
            if err is not None:
                m.error(err)
            done.append(1)

        for i in range(n):
            t0 = clock()
            produce(TOPIC, values[i % nv], keys[i % nk], on_delivery=on_one)
            while not done:
                poll(1.0)
            done.clear()
            lat_append(clock() - t0)
    else:
        for i in range(n):
            while True:
                try:
                    if i % every:
                        produce(TOPIC, values[i % nv], keys[i % nk])
                    else:
                        produce(TOPIC, values[i % nv], keys[i % nk], on_delivery=partial(on_ack, clock()))
                    break
                except BufferError:  # queue.buffering.max.messages reached: serve callbacks, retry
                    poll(0.005)
            if i % CONFLUENT_POLL_EVERY == 0:
                poll(0)
        left = producer.flush(300)
        if left:
            m.error(f"{left} records still queued after flush(300)")
    m.stop()
    if tx_before is not None:
        count = len(txbytes)
        deadline = time.monotonic() + 3
        while len(txbytes) == count and time.monotonic() < deadline:
            producer.poll(0.2)  # the next statistics, taken after the flush
        if len(txbytes) > count:
            m.wire_bytes = txbytes[-1] - tx_before
    emit({**base, **m.result(w, n)})


# ----------------------------------------------------------------------------- aiokafka


def run_aiokafka(w: Workload, bootstrap: str, every: int, broker_pid: int) -> None:
    import aiokafka
    from aiokafka import AIOKafkaProducer

    async def main() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all" if w.acks == "all" else int(w.acks),
            linger_ms=w.linger_ms,
            compression_type=None if w.compression == "none" else w.compression,
            enable_idempotence=w.idempotence,
        )
        await producer.start()
        try:
            await producer.send_and_wait(TOPIC, b"warm-up")
            values = values_for(w)
            keys = keys_for(w) or [None]
            nv, nk, n = len(values), len(keys), w.records
            m = Meter()
            lat_append = m.latencies.append

            on_done = m.on_future_done

            send = producer.send
            m.start()
            if w.mode == "one-at-a-time":
                for i in range(n):
                    t0 = clock()
                    await producer.send_and_wait(TOPIC, values[i % nv], key=keys[i % nk])
                    lat_append(clock() - t0)
            else:
                for i in range(n):
                    if i % every:
                        await send(TOPIC, values[i % nv], key=keys[i % nk])
                    else:
                        t0 = clock()
                        fut = await send(TOPIC, values[i % nv], key=keys[i % nk])
                        fut.add_done_callback(partial(on_done, t0))
                await producer.flush()
                await asyncio.sleep(0)  # let the last done-callbacks run
            m.stop()
            emit(
                {"client": "aiokafka", "version": aiokafka.__version__, "workload": w.name, **m.result(w, n)}
            )
        finally:
            await producer.stop()

    asyncio.run(main())


# ----------------------------------------------------------------------------- kafka-python


def run_kafka_python(w: Workload, bootstrap: str, every: int, broker_pid: int) -> None:
    import kafka
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all" if w.acks == "all" else int(w.acks),
        linger_ms=w.linger_ms,
        compression_type=None if w.compression == "none" else w.compression,
        enable_idempotence=w.idempotence,
    )
    producer.send(TOPIC, b"warm-up").get(30)
    values = values_for(w)
    keys = keys_for(w) or [None]
    nv, nk, n = len(values), len(keys), w.records
    m = Meter()
    lat_append = m.latencies.append

    def on_ok(t0: int, metadata: Any) -> None:
        lat_append(clock() - t0)

    send = producer.send
    m.start()
    if w.mode == "one-at-a-time":
        for i in range(n):
            t0 = clock()
            send(TOPIC, values[i % nv], key=keys[i % nk]).get(30)
            lat_append(clock() - t0)
    else:
        for i in range(n):
            if i % every:
                send(TOPIC, values[i % nv], key=keys[i % nk])
            else:
                send(TOPIC, values[i % nv], key=keys[i % nk]).add_callback(on_ok, clock()).add_errback(
                    m.error
                )
        producer.flush()
    m.stop()
    emit({"client": "kafka-python", "version": kafka.__version__, "workload": w.name, **m.result(w, n)})
    producer.close(5)


RUNNERS: dict[str, Callable[[Workload, str, int, int], None]] = {
    "kprod": run_kprod,
    "kprod-async": run_kprod_async,
    "confluent-kafka": run_confluent,
    "aiokafka": run_aiokafka,
    "kafka-python": run_kafka_python,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", required=True, choices=sorted(RUNNERS))
    parser.add_argument("--workload", required=True, help="Workload as JSON (from bench/workloads.py)")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--broker-pid", type=int, default=0, help="tansu's pid (W5 stops it with SIGSTOP)")
    parser.add_argument("--sample-every", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=600, help="SIGALRM ends this process after N s")
    args = parser.parse_args()
    signal.alarm(args.timeout)  # default action: terminate; the parent also enforces a timeout
    w = Workload.from_json(args.workload)
    if w.mode == "memory" and args.broker_pid <= 0:
        parser.error("the memory workload needs --broker-pid")
    RUNNERS[args.client](w, args.bootstrap, max(1, args.sample_every), args.broker_pid)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
