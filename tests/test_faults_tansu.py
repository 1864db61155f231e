"""Fault tolerance against a real broker process: Tansu behind a fault-injecting TCP relay.

Tansu enforces idempotent sequences (DUPLICATE_SEQUENCE_NUMBER for a resent batch it already
wrote, UNKNOWN_PRODUCER_ID after it lost its state), so here duplicates and reorders are
forbidden, with five requests in flight. Tansu advertises the relay's address (``RelayedTansu``),
so every connection kprod opens, bootstrap or not, crosses the relay; records are read back with
confluent-kafka through the relay too (``check.crcs=true``).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers import ConsumedRecord, consume_all
from kprod import KafkaTimeoutError, Persisted, Producer, RecordMetadata
from kprod.errors import BrokerConnectionError
from relay import Relay, RelayedTansu

pytestmark = pytest.mark.broker

PRODUCE = 0
TOPIC = "faults"
PARTITIONS = 3


@pytest.fixture
def tansu() -> Iterator[RelayedTansu]:
    with RelayedTansu() as broker:
        broker.create_topic(TOPIC, PARTITIONS)
        yield broker


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def value_of(i: int) -> bytes:
    return b"%06d" % i


def key_of(i: int) -> bytes:
    return b"k%02d" % (i % 40)


def assert_once_in_order(records: list[ConsumedRecord], expected: set[int]) -> None:
    """Each expected record exactly once, nothing else, and each key's records in send order."""
    numbers = Counter(int(r.value or b"-1") for r in records)
    duplicates = {n: c for n, c in numbers.items() if c > 1}
    assert not duplicates, (
        f"{len(duplicates)} records are in the log more than once, e.g. {list(duplicates)[:5]}"
    )
    missing = expected - set(numbers)
    assert not missing, f"{len(missing)} records are missing, e.g. {sorted(missing)[:5]}"
    extra = set(numbers) - expected
    assert not extra, f"{len(extra)} unexpected records, e.g. {sorted(extra)[:5]}"
    per_key: dict[bytes | None, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        per_key[r.key].append(int(r.value or b"-1"))
    for key, seq in per_key.items():
        assert seq == sorted(seq), f"key {key!r}: records out of send order"


class Deliveries:
    """on_delivery outcomes by record number, with the monotonic time each arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: dict[int, tuple[float, RecordMetadata | None, BaseException | None]] = {}

    def callback(self, i: int) -> Callable[[RecordMetadata | None, BaseException | None], None]:
        def on_delivery(md: RecordMetadata | None, error: BaseException | None) -> None:
            with self.lock:
                assert i not in self.outcomes, f"record {i} completed twice"
                self.outcomes[i] = (time.monotonic(), md, error)

        return on_delivery

    def acked(self, after: float = 0.0) -> set[int]:
        with self.lock:
            return {i for i, (t, _, e) in self.outcomes.items() if e is None and t >= after}

    def failed(self) -> dict[int, BaseException]:
        with self.lock:
            return {i: e for i, (_, _, e) in self.outcomes.items() if e is not None}


def send_range(
    producer: Producer, deliveries: Deliveries, start: int, stop: int, pause_every: int = 0
) -> None:
    for i in range(start, stop):
        producer.send(TOPIC, value_of(i), key=key_of(i), on_delivery=deliveries.callback(i))
        if pause_every and i % pause_every == pause_every - 1:
            time.sleep(0.005)


def settings(tansu: RelayedTansu, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": tansu.bootstrap_servers,
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


# ----------------------------------------------------------------------------- delayed responses


@pytest.mark.timeout(60)
def test_responses_delayed_past_request_timeout_are_resent_without_duplicates(tansu: RelayedTansu) -> None:
    """Produce answers arrive 1.5 s late, request.timeout.ms is 1 s: kprod gives up on the
    connection and resends batches Tansu already wrote. Tansu answers those with
    DUPLICATE_SEQUENCE_NUMBER, so every record is in the log exactly once, in order.
    """
    deliveries = Deliveries()
    producer = Producer(settings(tansu, **{"request.timeout.ms": 1000, "delivery.timeout.ms": 30000}))
    try:
        send_range(producer, deliveries, 0, 2000)
        producer.flush(10)
        tansu.relay.delay_responses(1500, api_keys={PRODUCE})
        send_range(producer, deliveries, 2000, 4000, pause_every=100)
        wait_until(
            lambda: producer.metrics()["record-retry-total"] > 0, 10, "a resend after a request timeout"
        )
        tansu.relay.delay_responses(0)
        producer.flush(20)
        retries = producer.metrics()["record-retry-total"]
    finally:
        producer.close(10)
    assert not deliveries.failed(), Counter(repr(e) for e in deliveries.failed().values())
    assert deliveries.acked() == set(range(4000))
    assert tansu.relay.stats["delayed"] > 0
    with deliveries.lock:
        unknown_offsets = sum(
            1 for _, md, _ in deliveries.outcomes.values() if md is not None and md.offset < 0
        )
    # The resent batches were already written: Tansu acknowledged them as duplicates (offset unknown).
    assert unknown_offsets > 0
    assert retries > 0
    records = consume_all(tansu.bootstrap_servers, TOPIC, PARTITIONS, 4000, 30, linger_s=0.5)
    assert_once_in_order(records, set(range(4000)))


# ----------------------------------------------------------------------------- kill and restart


@pytest.mark.timeout(60)
def test_broker_killed_and_restarted_mid_stream(tansu: RelayedTansu) -> None:
    """SIGKILL Tansu while Produce requests are in flight, restart it (empty memory storage).

    * Records in flight at the kill (written by the old broker, answers held by the relay) are
      resent and acknowledged after the restart; nothing fails, so nothing that was sent is
      reported NOT_PERSISTED.
    * The producer survives: the new broker does not know its producer id (UNKNOWN_PRODUCER_ID).
      As Java does, it bumps its epoch first; Tansu answers UNKNOWN_PRODUCER_ID to the bumped
      epoch too, so it takes a new producer id and restarts its sequences.
    * Every record acknowledged after the restart is in the new log, exactly once, in order.
    """
    deliveries = Deliveries()
    producer = Producer(
        settings(
            tansu,
            **{"request.timeout.ms": 3000, "delivery.timeout.ms": 15000, "allow.auto.create.topics": False},
        )
    )
    engine = producer._engine
    try:
        send_range(producer, deliveries, 0, 1000)
        producer.flush(10)
        assert deliveries.acked() == set(range(1000))
        resets_before = engine.core.producer_id_resets
        bumps_before = engine.core.epoch_bumps

        # Hold Produce answers so that requests are surely in flight (and written) at the kill.
        tansu.relay.blackhole(api_keys={PRODUCE})
        send_range(producer, deliveries, 1000, 2000, pause_every=100)
        wait_until(lambda: tansu.relay.stats["held"] > 0, 5, "a Produce answer held by the relay")
        in_flight_at_kill = set(range(1000, 2000)) - deliveries.acked()
        assert in_flight_at_kill, "nothing was in flight at the kill"

        tansu.relay.refuse()  # keep kprod out until the topic exists again (Tansu accepts unknown topics)
        tansu.kill()
        tansu.relay.cut()
        tansu.relay.blackhole(False)
        send_range(producer, deliveries, 2000, 2500)  # sent while the broker is down
        time.sleep(0.5)
        tansu.start_broker()
        tansu.create_topic(TOPIC, PARTITIONS)
        restarted_at = time.monotonic()
        tansu.relay.refuse(False)

        send_range(producer, deliveries, 2500, 3000, pause_every=100)
        producer.flush(30)
        assert engine.fatal_error is None and engine.core.fatal_error is None
        assert engine.core.producer_id_resets > resets_before, "no new producer id after the restart"
        assert engine.core.epoch_bumps > bumps_before, "UNKNOWN_PRODUCER_ID should bump the epoch first"
        # Still alive: one more record after everything.
        producer.send(TOPIC, value_of(3000), key=key_of(3000), on_delivery=deliveries.callback(3000)).result(
            10
        )
    finally:
        producer.close(10)

    failed = deliveries.failed()
    assert not failed, Counter(f"{type(e).__name__}/{getattr(e, 'persisted', None)}" for e in failed.values())
    acked_after = deliveries.acked(after=restarted_at)
    assert in_flight_at_kill <= acked_after, "records in flight at the kill were not resent after the restart"
    assert set(range(2000, 3001)) <= acked_after
    records = consume_all(tansu.bootstrap_servers, TOPIC, PARTITIONS, len(acked_after), 30, linger_s=0.5)
    # The new log holds exactly what was acknowledged after the restart (the old log died with the broker).
    assert_once_in_order(records, acked_after)


# ----------------------------------------------------------------------------- black hole


@pytest.mark.timeout(60)
def test_black_holed_connection_fails_records_after_delivery_timeout_possibly_persisted(
    tansu: RelayedTansu,
) -> None:
    """Every answer vanishes (the connection stalls, requests still reach Tansu): the records fail
    after delivery.timeout.ms with KafkaTimeoutError, POSSIBLY_PERSISTED; and they are in fact in the
    log, once each.
    """
    producer = Producer(
        settings(
            tansu,
            **{
                "request.timeout.ms": 1000,
                "delivery.timeout.ms": 3000,
                "socket.connection.setup.timeout.ms": 1000,
            },
        )
    )
    try:
        producer.send(TOPIC, value_of(0), key=key_of(0)).result(10)
        tansu.relay.blackhole()
        started = time.monotonic()
        futures = [producer.send(TOPIC, value_of(i), key=key_of(i)) for i in range(1, 501)]
        errors = [f.exception(10) for f in futures]
        elapsed = time.monotonic() - started
        started = time.monotonic()
        producer.flush(2)
        producer.close(2)
        assert time.monotonic() - started < 3
    finally:
        producer.close(2)
    for error in errors:
        assert isinstance(error, KafkaTimeoutError), repr(error)
        assert error.persisted is Persisted.POSSIBLY_PERSISTED
        assert isinstance(error.last_cause, BrokerConnectionError)
        assert "delivery.timeout.ms=3000" in str(error)
    assert 2.9 <= elapsed <= 4.5, f"records failed after {elapsed:.2f} s, delivery.timeout.ms is 3 s"
    assert tansu.relay.stats["held"] > 0
    tansu.relay.clear()
    records = consume_all(tansu.bootstrap_servers, TOPIC, PARTITIONS, 501, 30, linger_s=0.5)
    # The first attempt went through to Tansu: "possibly persisted" was right.
    assert_once_in_order(records, set(range(501)))


# ----------------------------------------------------------------------------- the relay itself


class _FramedEcho:
    """A tiny Kafka-framed peer: answers each request frame with (correlation id + the request body)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    head = _recv_exact(conn, 4)
                    body = _recv_exact(conn, struct.unpack(">i", head)[0])
                    correlation_id = body[4:8]
                    conn.sendall(struct.pack(">i", 4 + len(body)) + correlation_id + body)
            except OSError:
                return

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _request(api_key: int, correlation_id: int) -> bytes:
    body = struct.pack(">hhih", api_key, 1, correlation_id, 1) + b"c"
    return struct.pack(">i", len(body)) + body


def _answer(sock: socket.socket, timeout_s: float) -> int | None:
    """The correlation id of the next answer, or None if none came within ``timeout_s``."""
    sock.settimeout(timeout_s)
    try:
        head = _recv_exact(sock, 4)
        body = _recv_exact(sock, struct.unpack(">i", head)[0])
    except TimeoutError:
        return None
    correlation_id: int = struct.unpack_from(">i", body)[0]
    return correlation_id


@pytest.mark.timeout(30)
def test_relay_delays_holds_cuts_and_refuses_at_run_time() -> None:
    echo = _FramedEcho()
    relay = Relay(upstream_port=echo.port).start()
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=2) as client:
            client.sendall(_request(PRODUCE, 1))
            assert _answer(client, 2) == 1
            relay.delay_responses(300, api_keys={PRODUCE})
            started = time.monotonic()
            client.sendall(_request(PRODUCE, 2) + _request(3, 3))
            assert _answer(client, 2) == 2
            assert time.monotonic() - started >= 0.29
            assert _answer(client, 2) == 3  # not delayed itself, but never overtakes the delayed answer
            relay.clear()
            relay.blackhole(api_keys={PRODUCE})
            client.sendall(_request(3, 4) + _request(PRODUCE, 5) + _request(3, 6))
            assert _answer(client, 2) == 4
            assert _answer(client, 0.3) is None  # 5 is swallowed, and 6 behind it: the connection stalls
            relay.blackhole(False)
            client.sendall(_request(3, 7))
            assert _answer(client, 0.3) is None  # a stalled connection stays stalled
        assert relay.stats["held"] == 3
        assert [r.correlation_id for r in relay.requests(PRODUCE)] == [1, 2, 5]

        with socket.create_connection(("127.0.0.1", relay.port), timeout=2) as client:
            client.sendall(_request(PRODUCE, 1))
            assert _answer(client, 2) == 1  # a new connection works
            assert relay.cut() >= 1
            client.settimeout(2)
            with pytest.raises((ConnectionError, OSError)):
                client.sendall(_request(PRODUCE, 2))
                if not client.recv(100):
                    raise ConnectionError("closed by the relay")

        relay.refuse()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=2) as client:
            client.settimeout(2)
            with pytest.raises((ConnectionError, OSError)):
                client.sendall(_request(PRODUCE, 1))
                if not client.recv(100):
                    raise ConnectionError("closed by the relay")
        assert relay.stats["refused"] >= 1
    finally:
        started = time.monotonic()
        relay.stop()
        assert time.monotonic() - started < 3
        echo.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", relay.port), timeout=1).close()


# ----------------------------------------------------------------------------- a replayed request


@pytest.mark.timeout(60)
def test_a_replayed_produce_request_is_answered_duplicate_sequence_number(tansu: RelayedTansu) -> None:
    """The relay sends one Produce request twice. Tansu writes the first copy and answers the
    second DUPLICATE_SEQUENCE_NUMBER without offsets (Apache Kafka answers NONE with the original
    offsets: tests/test_kafka_only.py), which kprod takes as success with offset -1 for the records
    of that request. Nothing is written twice, and every other record reports its log offset."""
    relay = tansu.relay
    with Producer(settings(tansu)) as producer:
        for partition in range(PARTITIONS):  # pipelining starts once each partition has producer state
            producer.send(TOPIC, b"-1", partition=partition).result(timeout=10)
        relay.replay_requests(1)
        futures = {i: producer.send(TOPIC, value_of(i), key=key_of(i)) for i in range(600)}
        producer.flush(timeout=30)
        metadata = {i: f.result(timeout=0) for i, f in futures.items()}
    assert len(relay.replays) == 1
    replay = relay.replays[0]
    original = [(p.index, p.error_code) for t in replay.original.produce().topics for p in t.partitions]
    duplicate = [(p.index, p.error_code) for t in replay.duplicate.produce().topics for p in t.partitions]
    assert original and {code for _, code in original} == {0}, original
    assert duplicate == [(index, 46) for index, _ in original], duplicate  # DUPLICATE_SEQUENCE_NUMBER
    read = consume_all(
        tansu.bootstrap_servers, TOPIC, PARTITIONS, 600 + PARTITIONS, timeout_s=30, linger_s=0.5
    )
    assert_once_in_order([r for r in read if r.value != b"-1"], set(range(600)))
    offsets = {int(r.value or b"-1"): (r.partition, r.offset) for r in read if r.value != b"-1"}
    unknown = {i for i, md in metadata.items() if md.offset == -1}
    replayed_partitions = {index for index, _ in original}
    assert unknown, "the records of the replayed request should report offset -1"
    assert {metadata[i].partition for i in unknown} <= replayed_partitions
    assert all((md.partition, md.offset) == offsets[i] for i, md in metadata.items() if i not in unknown)


@pytest.mark.timeout(120)
def test_a_broker_that_stops_reading_is_given_no_more_requests(fresh_broker: Any) -> None:
    """The broker process is frozen (SIGSTOP) while 50 requests of ~1 MB may be in flight: once the
    kernel's buffers are full, the connection's writes pause and the producer stops writing to it
    (the transport holds at most about 2 x max.request.size more), instead of copying every request
    into the transport's buffer; after SIGCONT everything is delivered once."""
    import os
    import signal

    fresh_broker.create_topic("frozen", partitions=1)
    request = 1_048_576
    settings = {
        "bootstrap.servers": fresh_broker.bootstrap_servers,
        "acks": 1,
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 50,
        "linger.ms": 0,
        "batch.size": 1_000_000,
        "max.request.size": request,
        "buffer.memory": 128 << 20,
        "request.timeout.ms": 60_000,
        "delivery.timeout.ms": 120_000,
    }
    value = b"v" * 900_000
    pid = fresh_broker.pid
    with Producer(settings) as producer:
        assert producer.send("frozen", b"first").result(timeout=30).offset == 0
        os.kill(pid, signal.SIGSTOP)
        try:
            futures = [producer.send("frozen", value) for _ in range(60)]
            deadline = time.monotonic() + 10
            conn = producer._engine.connections[next(iter(producer._engine.connections))]
            while not conn.write_paused and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # a sender that ignored the pause would keep writing now
            assert conn.write_paused
            buffered = conn.write_buffer_size
            assert buffered <= 3 * request, f"{buffered:,} bytes piled up in the transport"
            assert conn.in_flight_count < 50
        finally:
            os.kill(pid, signal.SIGCONT)
        producer.flush(timeout=60)
    assert all(f.exception(timeout=0) is None for f in futures)
    assert len(consume_all(fresh_broker.bootstrap_servers, "frozen", 1, 61, timeout_s=60)) == 61


@pytest.mark.timeout(60)
def test_a_broker_that_stays_down_is_not_logged_every_second(
    fresh_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Reconnection attempts to a dead broker: a WARNING for the first failure (then every 30th), the
    rest at DEBUG with their attempt number."""
    import logging

    fresh_broker.create_topic("down", partitions=1)
    caplog.set_level(logging.DEBUG, logger="kprod")
    with Producer(
        {"bootstrap.servers": fresh_broker.bootstrap_servers, "reconnect.backoff.max.ms": 200}
    ) as producer:
        assert producer.send("down", b"up").result(timeout=30).offset == 0
        fresh_broker.kill()
        producer.send("down", b"queued")  # keeps the sender trying to reach the leader
        time.sleep(4)
        failures = [r for r in caplog.records if "cannot connect to broker" in r.getMessage()]
        warnings = [r for r in failures if r.levelno >= logging.WARNING]
        assert len(failures) >= 5, [r.getMessage() for r in caplog.records][-20:]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        producer.close(0)
