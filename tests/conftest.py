"""Shared fixtures: the brokers (Tansu, Apache Kafka, or an external cluster), fresh topics, the mock.

* ``broker`` (session, parametrized ``[tansu]`` and ``[kafka]``): every test that takes it runs
  twice, against the embedded Tansu broker and against one Apache Kafka node
  (:class:`kprod.kafka_broker.KafkaCluster`); the Kafka runs are the ones that decide. With
  ``KPROD_BOOTSTRAP_SERVERS`` set, ``[tansu]`` is an :class:`~helpers.ExternalCluster` for that
  cluster and ``[kafka]`` is skipped. All have ``bootstrap_servers`` and
  ``create_topic(name, partitions)``. Do not stop or kill it.
* ``kafka`` (session): the same Apache Kafka node, for tests that only the real broker can decide
  (its SSL/MTLS/SASL listeners, topic configs, ACLs, quotas).
* ``kafka_cluster`` (session): three Apache Kafka nodes (replication 3, ``min.insync.replicas=2``)
  for fault tests. Tests that stop or kill a node must start it again before they end.

Apache Kafka needs Java 17+ and Maven (the jars are fetched once into ~/.cache/kprod). Where they
are missing, Kafka runs are skipped with a message that says what to install, except under CI
(``CI`` set), where they fail. Both Kafka fixtures are started in background threads as soon as
collection shows a test that needs them, so the JVMs boot while other tests run.
* ``fresh_broker`` (function): a private embedded broker, always Tansu, for fault tests (``kill()``,
  ``restart()``) and heavy tests (Tansu never frees memory).
* ``private_broker`` (function, parametrized ``[tansu]`` and ``[kafka]``): a private broker of each
  kind that the test may freeze (``os.kill(private_broker.pid, SIGSTOP)``) or ``kill()``; a Kafka
  node costs a JVM start (~3 s), so only tests that must disturb the broker take it.
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
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from helpers import ExternalCluster
from kprod.broker import EmbeddedBroker
from kprod.kafka_broker import KafkaCluster, java_problem
from mock_cluster import MockCluster

BrokerLike = EmbeddedBroker | ExternalCluster | KafkaCluster
MakeTopic = Callable[..., str]

_BROKER_FIXTURES = frozenset(
    {"broker", "fresh_broker", "private_broker", "make_topic", "topic_factory", "topic"}
)
_KAFKA_FIXTURES = frozenset({"kafka", "kafka_cluster"})


class _Background:
    """A Kafka cluster started in a thread at collection time; :meth:`get` waits for it."""

    def __init__(self, nodes: int) -> None:
        self.cluster = KafkaCluster(nodes=nodes)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"kafka-{id(self)}", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            self.cluster.start(timeout_s=240.0)
        except BaseException as exc:
            self.error = exc

    def get(self) -> KafkaCluster:
        self.start()
        assert self.thread is not None
        self.thread.join(timeout=600.0)
        if self.error is not None:
            raise self.error
        if not self.cluster.running:
            raise RuntimeError("the Apache Kafka cluster did not start within 600 s")
        return self.cluster


_kafka = {1: _Background(1), 3: _Background(3)}


def _kafka_unavailable() -> str | None:
    """Why the Kafka runs cannot happen here (skip), or None. Under CI they fail instead."""
    if os.environ.get("KPROD_BOOTSTRAP_SERVERS"):
        return "KPROD_BOOTSTRAP_SERVERS names an external cluster: the Apache Kafka runs are skipped"
    problem = java_problem()
    if problem is not None and os.environ.get("CI"):
        pytest.fail(f"CI must run the Apache Kafka tests: {problem}", pytrace=False)
    return problem


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & (_BROKER_FIXTURES | _KAFKA_FIXTURES):
            item.add_marker(pytest.mark.broker)
        if names & _KAFKA_FIXTURES or _param_of(item, "broker", "private_broker") == "kafka":
            item.add_marker(pytest.mark.kafka)
        if "mock_cluster" in names:
            item.add_marker(pytest.mark.mock_cluster)


def _param_of(item: pytest.Item, *fixtures: str) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    return next((callspec.params[f] for f in fixtures if f in callspec.params), None)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Boot the JVMs while the first tests run: only those the selected tests need.
    if os.environ.get("KPROD_BOOTSTRAP_SERVERS") or java_problem() is not None:
        return
    single = any(
        "kafka" in getattr(i, "fixturenames", ()) or _param_of(i, "broker") == "kafka" for i in session.items
    )
    if single:
        _kafka[1].start()
    if any("kafka_cluster" in getattr(i, "fixturenames", ()) for i in session.items):
        _kafka[3].start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    for background in _kafka.values():
        if background.thread is not None:
            background.thread.join(timeout=300.0)
            background.cluster.stop()


@pytest.fixture(scope="session")
def kafka() -> KafkaCluster:
    problem = _kafka_unavailable()
    if problem is not None:
        pytest.skip(problem)
    return _kafka[1].get()


@pytest.fixture(scope="session")
def kafka_cluster() -> KafkaCluster:
    problem = _kafka_unavailable()
    if problem is not None:
        pytest.skip(problem)
    return _kafka[3].get()


@pytest.fixture(scope="session", params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerLike]:
    if request.param == "kafka":
        yield request.getfixturevalue("kafka")
        return
    external = os.environ.get("KPROD_BOOTSTRAP_SERVERS")
    if external:
        yield ExternalCluster(external)
        return
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture(params=["tansu", "kafka"])
def private_broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker | KafkaCluster]:
    if request.param == "kafka":
        problem = _kafka_unavailable()
        if problem is not None:
            pytest.skip(problem)
        with KafkaCluster() as cluster:
            yield cluster
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
