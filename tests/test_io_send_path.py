"""The general send path both facades share (kprod._io.send_path): its waits clean up after themselves
however they end (answer, timeout, cancellation), with either facade's wait primitive.

The broker is the embedded Tansu, frozen with SIGSTOP so that nothing is acknowledged and the buffer
stays full for as long as a test needs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from helpers import consume_all
from kprod import AsyncProducer, KafkaTimeoutError, Producer


@contextmanager
def frozen(broker: Any) -> Iterator[None]:
    pid = broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _engine(producer: Producer | AsyncProducer) -> Any:
    return producer._engine  # the tests look at the waiter counts the steps keep


def _value(i: int) -> bytes:
    return b"%08d" % i + b"." * 92


def _wait_for(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.timeout(120)
def test_sync_waiter_is_counted_while_blocked_and_released_after(fresh_broker: Any) -> None:
    topic = "send-path-sync"
    fresh_broker.create_topic(topic, partitions=1)
    producer = Producer(
        {"bootstrap.servers": fresh_broker.bootstrap_servers}, buffer_memory=32 * 1024, max_block_ms=30_000
    )
    futures: list[Any] = []
    stop = threading.Event()

    def fill() -> None:  # 32 KiB hold ~300 records of 100 B: with the broker frozen, a send blocks
        i = 0
        while not stop.is_set() and i < 20_000:
            futures.append(producer.send(topic, _value(i)))
            i += 1

    try:
        producer.send(topic, b"warm-up").result(timeout=30)
        engine = _engine(producer)
        with frozen(fresh_broker):
            filler = threading.Thread(target=fill)
            filler.start()
            assert _wait_for(lambda: engine.accumulator.memory_waiters == 1), "no send() waits for memory"
            assert engine.sync_waiters == 1
            assert producer.metrics()["waiting-threads"] == 1
            time.sleep(0.2)
            assert engine.accumulator.memory_waiters == 1  # still blocked: nothing was acknowledged
            stop.set()
        filler.join(timeout=30)  # thawed: acknowledgements free memory and the blocked send goes through
        assert not filler.is_alive()
        producer.flush(timeout=30)
        assert all(f.result(timeout=0).offset >= 0 for f in futures)
        assert engine.accumulator.memory_waiters == 0
        assert engine.sync_waiters == 0
        assert producer.metrics()["bufferpool-wait-time-ns-total"] >= 0.2e9
    finally:
        producer.close(timeout=30)
    records = consume_all(
        fresh_broker.bootstrap_servers, topic, 1, len(futures) + 1, timeout_s=60, linger_s=0.5
    )
    assert [r.value for r in records] == [b"warm-up"] + [_value(i) for i in range(len(futures))]


@pytest.mark.timeout(120)
def test_flush_timeout_in_either_facade_ends_the_flush_mark(fresh_broker: Any) -> None:
    topic = "send-path-flush"
    fresh_broker.create_topic(topic, partitions=1)
    config = {"bootstrap.servers": fresh_broker.bootstrap_servers, "linger.ms": 3_600_000}
    producer = Producer(config)

    async def async_side() -> None:
        aproducer = AsyncProducer(config)
        try:
            await aproducer.enqueue(topic, b"warm-up")
            await aproducer.flush(timeout=30)  # linger.ms is an hour: only a flush sends
            with frozen(fresh_broker):
                await aproducer.enqueue(topic, b"pending")
                with pytest.raises(KafkaTimeoutError, match=r"1 record\(s\) in 1 batch"):
                    await aproducer.flush(timeout=0.3)
                # The flush mark (linger.ms ignored while a flush runs) ended with the flush.
                assert not _engine(aproducer).accumulator.flushing
                assert _engine(aproducer).flush_count == 0
            await aproducer.flush(timeout=30)
        finally:
            await aproducer.close(timeout=30)

    try:
        producer.send(topic, b"warm-up")
        producer.flush(timeout=30)  # linger.ms is an hour: only a flush sends
        with frozen(fresh_broker):
            producer.send(topic, b"pending")
            with pytest.raises(KafkaTimeoutError, match=r"1 record\(s\) in 1 batch"):
                producer.flush(timeout=0.3)
            assert not _engine(producer).accumulator.flushing
            assert _engine(producer).sync_waiters == 0
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=30)
    asyncio.run(async_side())


@pytest.mark.timeout(120)
def test_cancelled_async_wait_for_memory_leaves_no_waiter_and_queues_nothing(fresh_broker: Any) -> None:
    topic = "send-path-cancel"
    fresh_broker.create_topic(topic, partitions=1)
    attempted: list[int] = []

    async def fill(producer: AsyncProducer) -> None:
        for i in range(20_000):
            attempted.append(i)
            await producer.enqueue(topic, _value(i))

    async def main() -> None:
        producer = AsyncProducer(
            {"bootstrap.servers": fresh_broker.bootstrap_servers},
            buffer_memory=32 * 1024,
            max_block_ms=30_000,
        )
        try:
            await (await producer.enqueue(topic, b"warm-up"))
            engine = _engine(producer)
            with frozen(fresh_broker):
                filler = asyncio.ensure_future(fill(producer))
                for _ in range(1000):
                    await asyncio.sleep(0.01)
                    if engine.accumulator.memory_waiters:
                        break
                assert engine.accumulator.memory_waiters == 1, "no enqueue waits for memory"
                assert producer.metrics()["waiting-threads"] == 1
                filler.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await filler
                # The steps were closed: no memory waiter is left to make the sender drain eagerly.
                assert engine.accumulator.memory_waiters == 0
                assert producer.metrics()["waiting-threads"] == 0
            await producer.flush(timeout=30)
            last = await producer.send(topic, b"after")
            # warm-up at 0, then every record but the cancelled one (the last attempted)
            assert last.offset == len(attempted)
        finally:
            await producer.close(timeout=30)

    asyncio.run(main())
    records = consume_all(
        fresh_broker.bootstrap_servers, topic, 1, len(attempted) + 1, timeout_s=60, linger_s=0.5
    )
    cancelled = _value(attempted[-1])
    assert [r.value for r in records] == [b"warm-up"] + [_value(i) for i in attempted[:-1]] + [b"after"]
    assert cancelled not in {r.value for r in records}
