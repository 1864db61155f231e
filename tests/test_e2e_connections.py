"""Connection management against Tansu: idle connections close and come back; connect timeouts grow."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from kprod import ConfigError, Producer
from kprod.broker import EmbeddedBroker

pytestmark = pytest.mark.broker


@pytest.mark.timeout(60)
def test_idle_connections_close_after_connections_max_idle_ms_and_reopen(
    broker: EmbeddedBroker, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=1)
    with Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "connections.max.idle.ms": 1000}
    ) as producer:
        producer.send(topic, b"before").result(timeout=10)
        engine = producer._engine
        assert engine.connections, "a broker connection is open after a send"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (engine.connections or engine.conns.bootstrap is not None):
            time.sleep(0.2)
        assert not engine.connections and engine.conns.bootstrap is None, "idle connections stayed open"
        # A new record reconnects as needed.
        md = producer.send(topic, b"after").result(timeout=10)
        assert md.offset == 1


def test_connect_timeout_doubles_per_failure_up_to_the_max() -> None:
    producer = Producer(
        {
            "bootstrap.servers": "127.0.0.1:9",
            "socket.connection.setup.timeout.ms": 1000,
            "socket.connection.setup.timeout.max.ms": 5000,
        }
    )
    try:
        engine = producer._engine
        for failures, expected in [(0, 1000), (1, 2000), (2, 4000), (3, 5000), (10, 5000)]:
            engine.conns.node_backoff[7] = (0, failures)
            samples = [engine.conns.connect_timeout_ms(7) for _ in range(200)]
            assert 0.8 * expected <= min(samples) and max(samples) <= 1.2 * expected, (failures, samples[:5])
    finally:
        producer.close(1)


def test_unsupported_partitioner_availability_timeout_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"partitioner\.availability\.timeout\.ms"):
        Producer({"bootstrap.servers": "127.0.0.1:9", "partitioner.availability.timeout.ms": 100})
