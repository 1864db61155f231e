"""Shared fixtures: the Tansu broker (or an external cluster), fresh topics, the librdkafka mock.

* ``broker`` (session): the embedded Tansu broker, started once. With ``KPROD_BOOTSTRAP_SERVERS``
  set, an :class:`~helpers.ExternalCluster` for that cluster instead. Both have
  ``bootstrap_servers`` and ``create_topic(name, partitions)``. Do not stop or kill it.
* ``fresh_broker`` (function): a private embedded broker, always Tansu, for fault tests (``kill()``,
  ``restart()``) and heavy tests (Tansu never frees memory).
* ``make_topic`` / ``topic_factory`` (function): ``make_topic(partitions=3) -> str`` creates a topic
  with a fresh unique name on ``broker`` and returns the name once Metadata shows it.
* ``topic`` (function): one such topic with 3 partitions.
* ``mock_cluster`` (function): a 3-broker :class:`~mock_cluster.MockCluster`, closed afterwards.

Tests using the broker fixtures get the ``broker`` marker, and tests using ``mock_cluster`` get the
``mock_cluster`` marker, so ``pytest -m "not broker"`` runs without Tansu.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from helpers import ExternalCluster
from kprod.broker import EmbeddedBroker
from mock_cluster import MockCluster

BrokerLike = EmbeddedBroker | ExternalCluster
MakeTopic = Callable[..., str]

_BROKER_FIXTURES = frozenset({"broker", "fresh_broker", "make_topic", "topic_factory", "topic"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _BROKER_FIXTURES:
            item.add_marker(pytest.mark.broker)
        if "mock_cluster" in names:
            item.add_marker(pytest.mark.mock_cluster)


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerLike]:
    external = os.environ.get("KPROD_BOOTSTRAP_SERVERS")
    if external:
        yield ExternalCluster(external)
        return
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def fresh_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def make_topic(broker: BrokerLike, request: pytest.FixtureRequest) -> MakeTopic:
    # Kafka topic names allow [a-zA-Z0-9._-], at most 249 characters.
    prefix = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:100].strip("-.") or "t"

    def make(partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"  # unique across runs on an external cluster
        broker.create_topic(name, partitions=partitions)
        return name

    return make


@pytest.fixture
def topic_factory(make_topic: MakeTopic) -> MakeTopic:
    return make_topic


@pytest.fixture
def topic(make_topic: MakeTopic) -> str:
    return make_topic(3)


@pytest.fixture
def mock_cluster() -> Iterator[MockCluster]:
    with MockCluster(brokers=3) as cluster:
        yield cluster
