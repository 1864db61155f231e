"""Bad arguments and refused topics fail at the call, with an error that names what to change.

* Invalid topic names (illegal characters, more than 249 characters, ``.``/``..``) fail at once in
  ``send()``, not after ``max.block.ms``; so does a Metadata answer that refuses the topic for good
  (TOPIC_AUTHORIZATION_FAILED, injected on the librdkafka mock), also for a send already waiting.
* ``partition``, ``on_delivery`` and ``send_batch``'s ``records`` are checked at the call, in
  ``Producer`` and ``AsyncProducer``.
* A record too large to send fails alone and its ``on_delivery`` runs where every other outcome's
  does (the I/O thread; the loop, after ``enqueue`` returned), so its exception never escapes
  ``send()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kprod import AsyncProducer, KafkaError, KprodError, Producer, RecordMetadata, RecordTooLargeError
from mock_cluster import MockCluster

MakeTopic = Callable[..., str]

LEADER_NOT_AVAILABLE = 5
INVALID_TOPIC_EXCEPTION = 17
TOPIC_AUTHORIZATION_FAILED = 29

INVALID_NAMES = ["has space", "a" * 250, ".", "..", "caf\u00e9", "a/b", "t:1"]


class _Index:
    """An int-like object (as numpy's integers are): accepted wherever an int partition is."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


@pytest.mark.broker
@pytest.mark.timeout(60)
def test_invalid_topic_names_fail_at_once(broker: Any) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "max.block.ms": 30_000})
    try:
        for name in INVALID_NAMES:
            started = time.monotonic()
            with pytest.raises(KafkaError) as info:
                producer.send(name, b"x")
            elapsed = time.monotonic() - started
            assert elapsed < 1.0, f"send({name[:20]!r}) took {elapsed:.2f} s to fail"
            assert info.value.code == INVALID_TOPIC_EXCEPTION, info.value
            assert "valid topic name" in str(info.value) and "249" in str(info.value), str(info.value)
            with pytest.raises(KafkaError):
                producer.send_batch(name, [b"a", b"b"])
    finally:
        producer.close(10)

    async def main() -> None:
        async with AsyncProducer(bootstrap_servers=broker.bootstrap_servers, max_block_ms=30_000) as aio:
            started = time.monotonic()
            with pytest.raises(KafkaError) as info:
                await aio.send("..", b"x")
            assert time.monotonic() - started < 1.0
            assert info.value.code == INVALID_TOPIC_EXCEPTION

    asyncio.run(main())


@pytest.mark.mock_cluster
@pytest.mark.timeout(60)
def test_a_topic_the_brokers_refuse_fails_waiting_and_new_sends_promptly(mock_cluster: MockCluster) -> None:
    mock_cluster.create_topic("refused", partitions=1)
    mock_cluster.set_topic_error("refused", LEADER_NOT_AVAILABLE)  # retriable: sends wait
    producer = Producer(
        {"bootstrap.servers": mock_cluster.bootstrap_servers, "max.block.ms": 30_000, "retry.backoff.ms": 50}
    )
    try:
        outcome: list[BaseException | float] = []

        def waiting_send() -> None:
            started = time.monotonic()
            try:
                producer.send("refused", b"x")
            except BaseException as exc:
                outcome.extend([exc, time.monotonic() - started])

        thread = threading.Thread(target=waiting_send)
        thread.start()
        time.sleep(1.0)
        assert not outcome, f"the send should still wait for a retriable answer: {outcome}"
        mock_cluster.set_topic_error("refused", TOPIC_AUTHORIZATION_FAILED)
        changed = time.monotonic()
        thread.join(10)
        assert outcome, "the waiting send did not fail after the topic was refused"
        error = outcome[0]
        assert isinstance(error, KafkaError) and error.code == TOPIC_AUTHORIZATION_FAILED, error
        assert time.monotonic() - changed < 3.0, "the waiting send failed only after a long wait"
        started = time.monotonic()
        with pytest.raises(KafkaError) as info:
            producer.send("refused", b"y")
        assert time.monotonic() - started < 0.5
        assert "WRITE" in str(info.value) and "refused" in str(info.value), str(info.value)
    finally:
        producer.close(5)


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_bad_arguments_are_refused_at_the_call_naming_the_argument(
    broker: Any, make_topic: MakeTopic
) -> None:
    topic = make_topic(2)
    with Producer({"bootstrap.servers": broker.bootstrap_servers}) as producer:
        producer.send(topic, b"warm", partition=1).result(timeout=30)  # the topic's state is cached
        for bad in ("1", 1.0, True, b"1", [1]):
            with pytest.raises(KprodError, match="partition must be an int") as info:
                producer.send(topic, b"x", partition=bad)  # type: ignore[arg-type]
            assert not isinstance(info.value, TypeError) or "partition" in str(info.value)
        for bad_cb in (5, "print", b"cb"):
            with pytest.raises(KprodError, match="on_delivery must be a callable"):
                producer.send(topic, b"x", on_delivery=bad_cb)  # type: ignore[arg-type]
            with pytest.raises(KprodError, match="on_delivery must be a callable"):
                producer.send(topic, "a str value", key="k", on_delivery=bad_cb)  # type: ignore[arg-type]
            with pytest.raises(KprodError, match="on_delivery must be a callable"):
                producer.send_batch(topic, [b"x"], on_delivery=bad_cb)  # type: ignore[arg-type]
        for bad_records in ("abc", b"abc", bytearray(b"abc"), {"value": b"x"}):
            with pytest.raises(KprodError, match="records must be an iterable of records"):
                producer.send_batch(topic, bad_records)
        # An int-like partition (numpy's integers) is an int; a bad one inside send_batch fails its record.
        assert producer.send(topic, b"idx", partition=_Index(1)).result(timeout=30).partition == 1  # type: ignore[arg-type]
        futures = producer.send_batch(topic, [(b"ok", None, None, 0), (b"bad", None, None, "0")])
        assert futures[0].result(timeout=30).partition == 0
        with pytest.raises(KprodError, match="partition must be an int"):
            futures[1].result(timeout=0)

    async def main() -> None:
        async with AsyncProducer(bootstrap_servers=broker.bootstrap_servers) as aio:
            await aio.send(topic, b"warm", partition=0)
            with pytest.raises(KprodError, match="partition must be an int"):
                await aio.enqueue(topic, b"x", partition="1")  # type: ignore[arg-type]
            with pytest.raises(KprodError, match="partition must be an int"):
                await aio.send(topic, b"x", partition=0.0)  # type: ignore[arg-type]
            with pytest.raises(KprodError, match="on_delivery must be a callable"):
                await aio.enqueue(topic, b"x", on_delivery=5)  # type: ignore[arg-type]
            assert (await aio.send(topic, b"idx", partition=_Index(1))).partition == 1  # type: ignore[arg-type]

    asyncio.run(main())


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_a_too_large_records_callback_runs_like_every_other_outcome(
    broker: Any, make_topic: MakeTopic
) -> None:
    topic = make_topic(1)
    calls: list[tuple[RecordMetadata | None, BaseException | None, str]] = []
    called = threading.Event()

    def raising(md: RecordMetadata | None, err: BaseException | None) -> None:
        calls.append((md, err, threading.current_thread().name))
        called.set()
        raise RuntimeError("a callback that raises must not escape send()")

    with Producer({"bootstrap.servers": broker.bootstrap_servers, "max.request.size": 10_000}) as producer:
        future = producer.send(topic, b"x" * 20_000, on_delivery=raising)  # must not raise
        assert isinstance(future.exception(timeout=0), RecordTooLargeError)
        assert called.wait(10)
        batch_futures = producer.send_batch(topic, [b"ok", b"y" * 20_000], on_delivery=raising)
        assert batch_futures[0].result(timeout=30).offset == 0
        producer.flush(30)
    assert len(calls) == 3
    assert sum(md is None and isinstance(err, RecordTooLargeError) for md, err, _ in calls) == 2, calls
    assert sum(md is not None and err is None for md, err, _ in calls) == 1, calls
    for _, _, thread_name in calls:
        assert thread_name != threading.main_thread().name, "on_delivery ran on the caller's thread"

    async def main() -> None:
        seen: list[tuple[BaseException | None, bool]] = []
        returned = False

        def on_delivery(md: RecordMetadata | None, err: BaseException | None) -> None:
            seen.append((err, returned))
            raise RuntimeError("must not escape enqueue()")

        async with AsyncProducer(bootstrap_servers=broker.bootstrap_servers, max_request_size=10_000) as aio:
            future = await aio.enqueue(topic, b"z" * 20_000, on_delivery=on_delivery)
            returned = True
            with pytest.raises(RecordTooLargeError):
                await future
            await asyncio.sleep(0.05)
        assert len(seen) == 1 and isinstance(seen[0][0], RecordTooLargeError)
        assert seen[0][1], "on_delivery ran inside enqueue(), before it returned"

    asyncio.run(main())
