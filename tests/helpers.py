"""Test helpers: read records back with confluent-kafka, and talk to an external cluster.

confluent-kafka (librdkafka) is the independent judge of what we wrote: its consumer checks every
batch CRC (``check.crcs=true``) and decodes every codec, so a record it returns was encoded right.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

__all__ = ["ConsumedRecord", "ExternalCluster", "alive", "consume_all", "wait_for_topic"]


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One record as the broker served it back."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp_ms: int
    """Milliseconds since the epoch (create time or log-append time); -1 if the broker gave none."""


class ConsumeError(AssertionError):
    """The consumer returned an error (``_BAD_MSG`` for a bad CRC or a corrupt batch, ...)."""


def consume_all(
    bootstrap: str,
    topic: str,
    partitions: int,
    expected_count: int,
    timeout_s: float,
    *,
    linger_s: float = 0.0,
    config: dict[str, str | int | bool] | None = None,
) -> list[ConsumedRecord]:
    """Read ``topic`` from the beginning of each of its ``partitions`` partitions.

    Stops once ``expected_count`` records are read (then keeps polling ``linger_s`` more seconds to
    catch extras, e.g. duplicates) or when ``timeout_s`` seconds have passed; returns what was read,
    in arrival order (per partition in offset order). It does not assert the count: the caller does.

    :raises ConsumeError: on the first consumer error, e.g. ``_BAD_MSG`` for a failed CRC check;
        a bad record is never skipped.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"kprod-tests-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "check.crcs": True,
            "api.version.request": True,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            **(config or {}),
        }
    )
    records: list[ConsumedRecord] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if len(records) >= expected_count:
                deadline = min(deadline, now + linger_s)
                if now >= deadline:
                    break
            for msg in consumer.consume(num_messages=10_000, timeout=min(0.2, deadline - now)):
                err = msg.error()
                if err is not None:
                    raise ConsumeError(
                        f"consumer error at {msg.topic()}[{msg.partition()}]@{msg.offset()}: {err}"
                    )
                partition, offset = msg.partition(), msg.offset()
                if partition is None or offset is None:
                    raise ConsumeError(f"consumer returned a record without partition/offset: {msg!r}")
                _, timestamp_ms = msg.timestamp()
                records.append(
                    ConsumedRecord(
                        topic=msg.topic() or topic,
                        partition=partition,
                        offset=offset,
                        key=msg.key(),
                        value=msg.value(),
                        headers=_headers(msg),
                        timestamp_ms=timestamp_ms,
                    )
                )
    finally:
        consumer.close()
    return records


def _headers(msg: Message) -> list[tuple[str, bytes | None]]:
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(name, value.encode() if isinstance(value, str) else value) for name, value in pairs]


def wait_for_topic(admin: AdminClient, topic: str, partitions: int, timeout_s: float) -> None:
    """Block until Metadata lists ``topic`` with ``partitions`` partitions (at most ``timeout_s`` s).

    :raises TimeoutError: at the deadline.
    """
    deadline = time.monotonic() + timeout_s
    seen = -1
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(topic, timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        except KafkaException:
            metadata = None
        if metadata is not None:
            info = metadata.topics.get(topic)
            if info is not None and info.error is None:
                seen = len(info.partitions)
                if seen == partitions:
                    return
        time.sleep(0.05)
    raise TimeoutError(f"topic {topic!r} has {seen} partitions (-1 = absent), not {partitions}")


class ExternalCluster:
    """A cluster named by ``KPROD_BOOTSTRAP_SERVERS``, with the part of EmbeddedBroker tests need."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._admin = AdminClient({"bootstrap.servers": bootstrap_servers})

    def create_topic(self, name: str, partitions: int = 1, timeout_s: float = 30.0) -> None:
        """Create ``name`` (broker-default replication) and block until Metadata shows it."""
        futures = self._admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=-1)],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        futures[name].result(timeout=timeout_s)
        wait_for_topic(self._admin, name, partitions, timeout_s)

    def delete_topic(self, name: str, timeout_s: float = 30.0) -> None:
        """Delete ``name``; blocks until the controller accepted it."""
        self._admin.delete_topics([name], operation_timeout=timeout_s)[name].result(timeout=timeout_s)


def alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie waiting for a reaper counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
