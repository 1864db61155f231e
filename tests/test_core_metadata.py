"""ClusterMetadata with fake time: when to refresh, what to forget, which leaders to trust.

The refresh policy follows the Java producer's ``Metadata``/``ProducerMetadata``: a new topic is
fetched at once, ``metadata.max.age.ms`` forces a periodic refresh, requested refreshes and failed
ones are spaced by ``retry.backoff.ms``, idle topics are dropped after ``metadata.max.idle.ms``.
"""

from __future__ import annotations

import pytest

from kprod._core.metadata import ClusterMetadata
from kprod.protocol.metadata import MetadataSnapshot, PartitionSnapshot, TopicSnapshot

MAX_AGE = 300_000
MAX_IDLE = 60_000
BACKOFF = 100
BACKOFF_MAX = 1_000
BROKERS = {1: ("b1", 9092), 2: ("b2", 9092)}


def make_md() -> ClusterMetadata:
    return ClusterMetadata(
        max_age_ms=MAX_AGE,
        max_idle_ms=MAX_IDLE,
        refresh_backoff_ms=BACKOFF,
        refresh_backoff_max_ms=BACKOFF_MAX,
    )


def topic(*leaders: int, epoch: int = 5) -> TopicSnapshot:
    return TopicSnapshot(0, {p: PartitionSnapshot(leader, epoch, 0) for p, leader in enumerate(leaders)})


def snapshot(
    topics: dict[str, TopicSnapshot] | None = None, brokers: dict[int, tuple[str, int]] | None = None
) -> MetadataSnapshot:
    return MetadataSnapshot(
        brokers=BROKERS if brokers is None else brokers,
        controller_id=1,
        cluster_id="cluster",
        topics={"a": topic(1, 2, 1)} if topics is None else topics,
    )


def refreshed(now_ms: int = 0) -> ClusterMetadata:
    """Metadata that wants topic ``a`` and got it at ``now_ms``."""
    md = make_md()
    md.want_topic("a", now_ms)
    md.on_update_started(now_ms)
    md.on_update(snapshot(), now_ms)
    return md


# -- when to refresh ------------------------------------------------------------------------------


def test_an_unknown_wanted_topic_asks_for_an_update_at_once() -> None:
    md = make_md()
    md.want_topic("a", 5)
    assert md.should_update(5)
    assert md.next_update_ms(5) == 5


def test_no_refresh_after_a_successful_update_until_max_age() -> None:
    md = refreshed(1_000)
    assert not md.update_requested
    assert md.next_update_ms(1_000) == 1_000 + MAX_AGE
    assert not md.should_update(1_000 + MAX_AGE - 1)
    assert md.should_update(1_000 + MAX_AGE)


def test_known_topics_used_again_do_not_trigger_a_refresh() -> None:
    md = refreshed(1_000)
    md.want_topic("a", 2_000)
    assert not md.should_update(2_000)


def test_no_second_request_while_one_is_in_progress() -> None:
    md = make_md()
    md.want_topic("a", 0)
    md.on_update_started(0)
    md.request_update()
    assert not md.should_update(0)
    assert not md.should_update(MAX_AGE * 2)
    assert md.next_update_ms(50) > 50


def test_a_requested_update_is_spaced_by_the_backoff() -> None:
    md = refreshed(1_000)
    md.request_update()
    assert md.update_requested
    assert md.next_update_ms(1_010) == 1_000 + BACKOFF
    assert not md.should_update(1_000 + BACKOFF - 1)
    assert md.should_update(1_000 + BACKOFF)


def test_a_requested_update_long_after_the_last_goes_at_once() -> None:
    md = refreshed(1_000)
    md.request_update()
    assert md.should_update(5_000)
    assert md.next_update_ms(5_000) == 5_000


def test_a_successful_update_clears_the_request() -> None:
    md = refreshed(0)
    md.request_update()
    md.on_update_started(BACKOFF)
    md.on_update(snapshot(), BACKOFF + 5)
    assert not md.update_requested
    assert md.next_update_ms(BACKOFF + 5) == BACKOFF + 5 + MAX_AGE


def test_a_failed_update_is_retried_after_the_backoff() -> None:
    md = make_md()
    md.want_topic("a", 0)
    md.on_update_started(0)
    md.on_update_failed(10)
    assert not md.should_update(10 + BACKOFF - 1)
    assert md.should_update(10 + BACKOFF)


def test_a_failed_update_is_retried_not_before_the_backoff() -> None:
    md = make_md()
    md.want_topic("a", 0)
    md.on_update_started(0)
    md.on_update_failed(10)
    assert md.update_requested
    assert not md.should_update(10 + BACKOFF - 1)
    assert md.should_update(10 + 2 * BACKOFF)


def test_consecutive_failures_back_off_exponentially_up_to_the_maximum() -> None:
    md = make_md()
    md.want_topic("a", 0)
    now = 0
    waits: list[int] = []
    for _ in range(8):
        md.on_update_started(now)
        md.on_update_failed(now)
        waits.append(md.next_update_ms(now) - now)
        now = md.next_update_ms(now)
        assert md.should_update(now)
    assert waits == sorted(waits), waits
    assert waits[-1] == BACKOFF_MAX
    assert waits[1] == 2 * waits[0]


def test_a_success_resets_the_failure_backoff() -> None:
    md = make_md()
    md.want_topic("a", 0)
    for now in (0, 1_000, 2_000, 3_000):
        md.on_update_started(now)
        md.on_update_failed(now)
    md.on_update_started(4_000)
    md.on_update(snapshot(), 4_000)
    md.request_update()
    assert md.should_update(4_000 + BACKOFF)


def test_a_new_topic_is_fetched_at_once_even_right_after_a_refresh() -> None:
    md = refreshed(1_000)
    md.want_topic("b", 1_010)
    assert md.should_update(1_010)


def test_a_topic_wanted_while_an_update_is_in_flight_is_fetched_next() -> None:
    md = refreshed(0)
    md.on_update_started(MAX_AGE)  # periodic refresh of "a"
    md.want_topic("b", MAX_AGE + 1)
    md.on_update(snapshot(), MAX_AGE + 10)  # the answer knows nothing of "b"
    assert "b" not in md.topics
    assert md.should_update(MAX_AGE + 10 + BACKOFF)


# -- what to keep ---------------------------------------------------------------------------------


def test_topics_idle_longer_than_max_idle_are_dropped() -> None:
    md = make_md()
    md.want_topic("a", 0)
    md.want_topic("b", 0)
    md.on_update_started(0)
    md.on_update(snapshot({"a": topic(1), "b": topic(2)}), 0)
    md.want_topic("b", 30_000)
    assert md.wanted_topics(MAX_IDLE) == ["a", "b"]
    assert md.wanted_topics(MAX_IDLE + 1) == ["b"]
    assert md.partition_count("a") == 0 and md.leader("a", 0) == -1
    assert md.partition_count("b") == 1


def test_a_dropped_topic_is_fetched_again_when_used_again() -> None:
    md = refreshed(0)
    assert md.wanted_topics(MAX_IDLE + 1) == []
    md.want_topic("a", MAX_IDLE + 2)
    assert md.update_requested
    assert md.wanted_topics(MAX_IDLE + 2) == ["a"]


def test_partitions_and_leaders_come_from_the_snapshot() -> None:
    md = refreshed(0)
    assert md.partition_count("a") == 3
    assert [md.leader("a", p) for p in range(3)] == [1, 2, 1]
    assert md.topics["a"].available == [0, 1, 2]
    assert md.leader("a", 3) == -1
    assert md.partition_count("unknown") == 0
    assert md.node_address(2) == ("b2", 9092)


def test_leaders_not_among_the_brokers_count_as_unavailable() -> None:
    md = make_md()
    md.want_topic("a", 0)
    md.on_update_started(0)
    md.on_update(snapshot({"a": topic(1, 7, 2)}), 0)
    assert md.leader("a", 1) == -1
    assert md.topics["a"].available == [0, 2]
    assert md.update_requested, "a partition without a reachable leader must trigger a refresh"


def test_partitions_without_leader_are_unavailable() -> None:
    md = make_md()
    md.want_topic("a", 0)
    md.on_update_started(0)
    md.on_update(snapshot({"a": topic(-1, 2)}), 0)
    assert md.topics["a"].available == [1]
    assert md.update_requested


def test_a_topic_error_keeps_no_partitions_and_asks_again() -> None:
    md = make_md()
    md.want_topic("missing", 0)
    md.on_update_started(0)
    md.on_update(snapshot({"missing": TopicSnapshot(3)}), 0)
    assert md.topic_error("missing") == 3
    assert md.partition_count("missing") == 0
    assert md.update_requested
    assert not md.should_update(BACKOFF - 1)
    assert md.should_update(BACKOFF)


def test_every_successful_update_bumps_the_version() -> None:
    md = refreshed(0)
    before = md.version
    md.on_update_started(1)
    md.on_update(snapshot(), 1)
    assert md.version == before + 1


# -- KIP-951 leader updates -----------------------------------------------------------------------


def test_update_leader_applies_a_newer_epoch() -> None:
    md = refreshed(0)
    assert md.update_leader("a", 0, 2, 6)
    assert md.leader("a", 0) == 2


@pytest.mark.parametrize("epoch", [4, 5])
def test_update_leader_ignores_an_epoch_that_is_not_newer(epoch: int) -> None:
    md = refreshed(0)
    assert not md.update_leader("a", 0, 2, epoch)
    assert md.leader("a", 0) == 1


def test_update_leader_ignores_an_unknown_broker() -> None:
    md = refreshed(0)
    assert not md.update_leader("a", 0, 9, 100)
    assert md.leader("a", 0) == 1


def test_update_leader_ignores_unknown_topics_and_partitions() -> None:
    md = refreshed(0)
    assert not md.update_leader("nope", 0, 2, 9)
    assert not md.update_leader("a", 3, 2, 9)


def test_update_leader_makes_a_leaderless_partition_available() -> None:
    md = make_md()
    md.want_topic("a", 0)
    md.on_update_started(0)
    md.on_update(snapshot({"a": topic(-1, 2)}), 0)
    assert md.update_leader("a", 0, 1, 6)
    assert md.topics["a"].available == [0, 1]


def test_a_newer_epoch_for_the_same_leader_reports_no_change_but_is_kept() -> None:
    md = refreshed(0)
    assert not md.update_leader("a", 0, 1, 6)
    assert not md.update_leader("a", 0, 2, 6), "epoch 6 is now current: not newer"
    assert md.leader("a", 0) == 1
