"""A script that sends and exits without flush() or close() loses nothing silently.

Each test runs a short script in a subprocess: at interpreter exit an open ``Producer`` flushes for
up to ``kprod.exit.flush.timeout.ms`` and logs a WARNING with the number of records it could not
deliver; an ``AsyncProducer`` whose loop ended unclosed says how many records it lost.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest

from helpers import consume_all

MakeTopic = Callable[..., str]


def _run(script: str, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_records_sent_without_flush_are_delivered_at_exit(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    n = 2_000
    # linger.ms=2000: without the exit hook every record is still in its batch when the script ends.
    result = _run(
        """
        import sys
        from kprod import Producer
        producer = Producer({"bootstrap.servers": sys.argv[1], "linger.ms": 2000})
        for i in range(int(sys.argv[3])):
            producer.send(sys.argv[2], b"record-%d" % i, key=b"k%d" % (i % 7))
        print("sent", flush=True)
        """,
        broker.bootstrap_servers,
        topic,
        str(n),
    )
    assert result.returncode == 0, result.stderr
    assert "sent" in result.stdout
    assert "could not be delivered" not in result.stderr, result.stderr
    records = consume_all(broker.bootstrap_servers, topic, 3, n, timeout_s=60, linger_s=0.5)
    assert sorted(r.value or b"" for r in records) == sorted(b"record-%d" % i for i in range(n))


@pytest.mark.broker
@pytest.mark.timeout(60)
def test_records_that_cannot_be_delivered_at_exit_are_counted_in_a_warning() -> None:
    # The script's own broker is killed once the records are queued: none can be delivered.
    started = time.monotonic()
    result = _run(
        """
        from kprod import Producer
        from kprod.broker import EmbeddedBroker
        broker = EmbeddedBroker()
        broker.start()
        broker.create_topic("t", partitions=1)
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 60_000,
             "kprod.exit.flush.timeout.ms": 500}
        )
        producer.send_batch("t", [b"x"] * 123)
        broker.kill()
        """,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "123 record(s) could not be delivered" in result.stderr, result.stderr
    assert "kprod.exit.flush.timeout.ms=500" in result.stderr, result.stderr
    assert elapsed < 20, f"the exit flush took {elapsed:.1f} s with a 500 ms bound"


@pytest.mark.broker
@pytest.mark.timeout(60)
def test_an_async_producer_whose_loop_ended_unclosed_reports_its_lost_records(
    broker: Any, make_topic: MakeTopic
) -> None:
    topic = make_topic(1)
    result = _run(
        """
        import asyncio, sys
        from kprod import AsyncProducer

        async def main():
            producer = AsyncProducer(bootstrap_servers=sys.argv[1], linger_ms=60_000)
            for i in range(42):
                await producer.enqueue(sys.argv[2], b"x")  # queued; the loop ends before linger.ms

        asyncio.run(main())
        """,
        broker.bootstrap_servers,
        topic,
    )
    assert result.returncode == 0, result.stderr
    assert "was never closed: 42 record(s) were not delivered" in result.stderr, result.stderr


@pytest.mark.timeout(120)
def test_futures_dropped_and_failed_by_close_give_one_summary_not_one_log_each() -> None:
    """AsyncProducer futures nobody awaits, failed by close(): one WARNING with the count instead of
    asyncio's "Future exception was never retrieved" per record; a kept future still raises."""
    result = _run(
        """
        import asyncio, gc, logging, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        from kprod import AsyncProducer, ProducerClosedError
        from kprod.broker import EmbeddedBroker

        async def main():
            broker = EmbeddedBroker()
            broker.start()
            broker.create_topic("dropped", partitions=1)
            producer = AsyncProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=60_000,
                                     batch_size=1 << 20, delivery_timeout_ms=120_000, request_timeout_ms=60_000)
            await producer.start()
            first = await producer.enqueue("dropped", b"first")
            await producer.flush(10)
            await first  # metadata known, connection up
            broker.stop()  # nothing more can be delivered
            kept = await producer.enqueue("dropped", b"kept")
            for i in range(3000):
                await producer.enqueue("dropped", b"x")  # dropped at once
            await producer.close(timeout=0.2)
            try:
                await kept
            except ProducerClosedError:
                print("kept future raised ProducerClosedError")
            del kept
            gc.collect()

        asyncio.run(main())
        gc.collect()
        print("done")
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kept future raised ProducerClosedError" in result.stdout and "done" in result.stdout
    assert result.stderr.count("never retrieved") == 0, result.stderr[-3000:]
    assert re.search(r"close\(\): 3001 record\(s\) were not delivered", result.stderr), result.stderr[-3000:]
