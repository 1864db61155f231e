"""The producer's view of the cluster: brokers, topics, partition leaders, and when to refresh.

Owns the decision of *when* metadata must be fetched (a topic nobody knows,
a stale leader reported by an error, ``metadata.max.age.ms``) and forgets
topics unused for ``metadata.max.idle.ms``. It does not fetch anything: the
I/O layer asks :meth:`ClusterMetadata.should_update`, sends a Metadata
request, and feeds the parsed snapshot to :meth:`ClusterMetadata.on_update`.
Pure: time arrives as ``now_ms``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from kprod.protocol.metadata import MetadataSnapshot

__all__ = ["TOPIC_NAME_MAX_LENGTH", "ClusterMetadata", "TopicInfo", "topic_name_problem"]

TOPIC_NAME_MAX_LENGTH: Final = 249
"""Kafka's limit on a topic name's length (``Topic.MAX_NAME_LENGTH``)."""
_LEGAL_TOPIC_NAME: Final = re.compile(r"[a-zA-Z0-9._-]+")


def topic_name_problem(topic: str) -> str | None:
    """Why ``topic`` can never be a Kafka topic name, or None if it can (Java's ``Topic.validate``).

    A name has 1 to 249 characters of ``[a-zA-Z0-9._-]`` and is neither ``.`` nor ``..``. Every
    broker answers such a name INVALID_TOPIC_EXCEPTION, so the producer refuses it before asking.
    """
    if not topic:
        return "it is empty"
    if topic in (".", ".."):
        return f"{topic!r} is reserved"
    if len(topic) > TOPIC_NAME_MAX_LENGTH:
        return f"it has {len(topic)} characters, more than {TOPIC_NAME_MAX_LENGTH}"
    if _LEGAL_TOPIC_NAME.fullmatch(topic) is None:
        bad = sorted({c for c in topic if _LEGAL_TOPIC_NAME.fullmatch(c) is None})
        shown = ", ".join(repr(c) for c in bad)
        return f"it contains {shown}: only ASCII letters, digits, '.', '_' and '-' are allowed"
    return None


@dataclass(slots=True)
class TopicInfo:
    """What the producer knows about one topic.

    ``leaders[p]`` is the leader node id of partition ``p`` (-1 when it has none);
    ``available`` lists the partitions that have a leader, in order.
    """

    name: str
    error_code: int = 0
    leaders: list[int] = field(default_factory=list)
    leader_epochs: list[int] = field(default_factory=list)
    available: list[int] = field(default_factory=list)

    @property
    def partition_count(self) -> int:
        return len(self.leaders)


class ClusterMetadata:
    """Brokers and topic leadership, with the refresh policy of the Java producer.

    ``refresh_backoff_ms`` spaces out repeated refreshes (Java uses
    ``retry.backoff.ms``); ``max_age_ms`` forces a refresh even when nothing
    went wrong; ``max_idle_ms`` drops topics that no record used for that long.
    """

    def __init__(
        self,
        *,
        max_age_ms: int,
        max_idle_ms: int,
        refresh_backoff_ms: int,
        refresh_backoff_max_ms: int = 1000,
    ) -> None:
        self.max_age_ms = max_age_ms
        self.max_idle_ms = max_idle_ms
        self.refresh_backoff_ms = refresh_backoff_ms
        self.refresh_backoff_max_ms = max(refresh_backoff_ms, refresh_backoff_max_ms)
        self._failures = 0
        # A topic nobody knows was asked for: fetch at once, without the refresh backoff (Java's
        # requestUpdateForNewTopics), since a send() is blocked on it.
        self._new_topic_wanted = False
        self.brokers: dict[int, tuple[str, int]] = {}
        self.topics: dict[str, TopicInfo] = {}
        self.cluster_id: str | None = None
        # Topics the producer wants metadata for, with the last time a record used them.
        self._wanted: dict[str, int] = {}
        self._update_requested = False
        self._last_refresh_ms = -1
        self._last_attempt_ms = -1
        self._in_progress = False
        self.version = 0
        """Incremented on every change of the view (an update, a leader learned from a Produce answer,
        a broker added, an idle topic dropped): cheap change detection for caches."""
        self._subscribers: list[Callable[[], None]] = []

    @property
    def last_refresh_ms(self) -> int:
        """When the last Metadata answer arrived (monotonic ms; -1: never)."""
        return self._last_refresh_ms

    def subscribe(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` after every change of the view (under whatever lock guards this
        object), e.g. to drop a cache built from it."""
        self._subscribers.append(on_change)

    def _changed(self) -> None:
        self.version += 1
        for on_change in self._subscribers:
            on_change()

    # -- what the producer wants -------------------------------------------------

    def want_topic(self, topic: str, now_ms: int) -> None:
        """Mark ``topic`` as used now; request an update if it is not known yet."""
        if topic not in self._wanted:
            self._wanted[topic] = now_ms
            if topic not in self.topics:
                self._update_requested = True
                self._new_topic_wanted = True
        else:
            self._wanted[topic] = now_ms

    def request_update(self) -> None:
        """Ask for a refresh at the next opportunity (after the backoff)."""
        self._update_requested = True

    @property
    def update_requested(self) -> bool:
        return self._update_requested

    def wanted_topics(self, now_ms: int) -> list[str]:
        """Topics to ask for, dropping those idle for longer than ``max_idle_ms``."""
        idle_before = now_ms - self.max_idle_ms
        idle = [t for t, used in self._wanted.items() if used < idle_before]
        for topic in idle:
            del self._wanted[topic]
            self.topics.pop(topic, None)
        if idle:
            self._changed()
        return list(self._wanted)

    # -- refresh policy ------------------------------------------------------------

    def next_update_ms(self, now_ms: int) -> int:
        """The earliest time at which a Metadata request should be sent."""
        if self._in_progress:
            return now_ms + self.max_age_ms
        if self._last_refresh_ms < 0 and self._last_attempt_ms < 0:
            return now_ms
        if self._new_topic_wanted and self._failures == 0:
            return now_ms
        if self._update_requested:
            # Exponential while refreshes fail (no broker answers), so a dead cluster is not hammered.
            backoff: int = min(
                self.refresh_backoff_max_ms, self.refresh_backoff_ms << min(max(self._failures - 1, 0), 20)
            )
            return max(now_ms, self._last_attempt_ms + backoff)
        return max(now_ms, self._last_refresh_ms + self.max_age_ms)

    def should_update(self, now_ms: int) -> bool:
        """True when a Metadata request should go out now."""
        return not self._in_progress and self.next_update_ms(now_ms) <= now_ms

    def on_update_started(self, now_ms: int) -> None:
        self._in_progress = True
        self._last_attempt_ms = now_ms
        self._new_topic_wanted = False

    def on_update_failed(self, now_ms: int) -> None:
        """The request failed (no broker answered): retry after the backoff."""
        self._in_progress = False
        self._update_requested = True
        self._last_attempt_ms = now_ms
        self._failures += 1

    def on_update(self, snapshot: MetadataSnapshot, now_ms: int) -> None:
        """Replace the view of the brokers and of every topic in ``snapshot``."""
        self._in_progress = False
        self._last_refresh_ms = now_ms
        self._last_attempt_ms = now_ms
        self._update_requested = False
        self._failures = 0
        if snapshot.brokers:
            self.brokers = dict(snapshot.brokers)
        self.cluster_id = snapshot.cluster_id
        for name, topic in snapshot.topics.items():
            if topic.error_code != 0 or not topic.partitions:
                # Keep no partitions: senders wait for the topic and time out with a clear error.
                self.topics[name] = TopicInfo(name=name, error_code=topic.error_code)
                if name in self._wanted:
                    self._update_requested = True
                continue
            count = max(topic.partitions) + 1
            leaders = [-1] * count
            epochs = [-1] * count
            for index, part in topic.partitions.items():
                leader = part.leader_id
                # A leader that is not among the brokers cannot be reached.
                leaders[index] = leader if leader in self.brokers else -1
                epochs[index] = part.leader_epoch
            available = [p for p in range(count) if leaders[p] >= 0]
            if len(available) < count:
                self._update_requested = True
            self.topics[name] = TopicInfo(
                name=name, error_code=0, leaders=leaders, leader_epochs=epochs, available=available
            )
        # A topic wanted while this request was in flight is not in it: ask again at once.
        if any(t not in snapshot.topics and t not in self.topics for t in self._wanted):
            self._update_requested = True
            self._new_topic_wanted = True
        self._changed()

    # -- queries -------------------------------------------------------------------

    def partition_count(self, topic: str) -> int:
        """Number of partitions of ``topic``, or 0 while unknown."""
        info = self.topics.get(topic)
        return len(info.leaders) if info is not None else 0

    def topic_error(self, topic: str) -> int:
        """The error code the last Metadata response gave for ``topic`` (0 if none)."""
        info = self.topics.get(topic)
        return info.error_code if info is not None else 0

    def leader(self, topic: str, partition: int) -> int:
        """Leader node id of a partition, or -1 when unknown."""
        info = self.topics.get(topic)
        if info is None or partition >= len(info.leaders):
            return -1
        return info.leaders[partition]

    def update_leader(self, topic: str, partition: int, leader_id: int, leader_epoch: int) -> bool:
        """Apply a newer leader learned from a Produce response (KIP-951).

        Ignored unless the epoch is newer and the broker is known. Returns
        True when the leader changed.
        """
        info = self.topics.get(topic)
        if info is None or partition >= len(info.leaders) or leader_id not in self.brokers:
            return False
        if leader_epoch <= info.leader_epochs[partition] and info.leader_epochs[partition] >= 0:
            return False
        changed = info.leaders[partition] != leader_id
        info.leaders[partition] = leader_id
        info.leader_epochs[partition] = leader_epoch
        info.available = [p for p in range(len(info.leaders)) if info.leaders[p] >= 0]
        self._changed()
        return changed

    def learn_broker(self, node_id: int, host: str, port: int) -> bool:
        """A broker named in a Produce response's NodeEndpoints (KIP-951) that this view does not
        know yet: add it, so that a leader it names can be routed to before the next refresh.
        Known brokers keep the address the last Metadata answer gave. Returns True when added."""
        if node_id < 0 or node_id in self.brokers or not host or not 0 < port < 65536:
            return False
        self.brokers[node_id] = (host, port)
        self._changed()
        return True

    def node_address(self, node_id: int) -> tuple[str, int] | None:
        return self.brokers.get(node_id)
