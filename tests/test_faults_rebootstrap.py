"""metadata.recovery.strategy: when every known broker is gone, go back to bootstrap.servers.

Two Tansu brokers, A and B (both node 111), and a relay as the only bootstrap address. The relay
first leads to B, whose metadata names B's own address; then B is killed and the relay is pointed at
A. Only a producer that rebootstraps (asks the bootstrap address again) finds A.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import consume_all
from kprod import KafkaTimeoutError, Producer
from kprod.broker import EmbeddedBroker
from relay import Relay

pytestmark = pytest.mark.broker

TOPIC = "rebootstrap"


@pytest.fixture
def two_brokers() -> Iterator[tuple[EmbeddedBroker, EmbeddedBroker, Relay]]:
    with EmbeddedBroker() as a, EmbeddedBroker() as b:
        a.create_topic(TOPIC, partitions=1)
        b.create_topic(TOPIC, partitions=1)
        relay = Relay(upstream_port=b.port).start()
        try:
            yield a, b, relay
        finally:
            relay.stop()


def settings(relay: Relay, strategy: str) -> dict[str, object]:
    return {
        "bootstrap.servers": relay.address,
        "metadata.recovery.strategy": strategy,
        "linger.ms": 0,
        "request.timeout.ms": 1000,
        "delivery.timeout.ms": 6000,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 200,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 200,
    }


@pytest.mark.timeout(60)
def test_rebootstrap_finds_a_broker_through_bootstrap_servers(
    two_brokers: tuple[EmbeddedBroker, EmbeddedBroker, Relay],
) -> None:
    a, b, relay = two_brokers
    with Producer(settings(relay, "rebootstrap")) as producer:
        first = producer.send(TOPIC, b"to-b").result(timeout=10)
        assert first.offset == 0
        assert producer.metrics()["brokers"] == {111: ("127.0.0.1", b.port)}, "B advertises itself"
        relay.upstream_port = a.port  # new connections through the bootstrap address now reach A
        b.kill()
        md = producer.send(TOPIC, b"to-a").result(timeout=15)
        assert producer.metrics()["brokers"] == {111: ("127.0.0.1", a.port)}
    assert md.offset == 0
    records = consume_all(a.bootstrap_servers, TOPIC, 1, 1, 20, linger_s=0.3)
    assert [r.value for r in records] == [b"to-a"]


@pytest.mark.timeout(60)
def test_without_rebootstrap_the_producer_stays_with_the_dead_broker(
    two_brokers: tuple[EmbeddedBroker, EmbeddedBroker, Relay],
) -> None:
    a, b, relay = two_brokers
    with Producer(settings(relay, "none")) as producer:
        producer.send(TOPIC, b"to-b").result(timeout=10)
        relay.upstream_port = a.port
        b.kill()
        future = producer.send(TOPIC, b"lost")
        with pytest.raises(KafkaTimeoutError):
            future.result(timeout=20)
        producer.close(2)
