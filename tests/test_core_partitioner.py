"""StickyPartitioner (KIP-794): when it switches, where it goes, and how often.

The switching rule and the adaptive weights are Java's ``BuiltInPartitioner`` (java-producer.md §3.2).
Randomness is an injected ``random.Random``: a scripted one makes every switch visible as a change of
partition, a seeded one makes the distribution tests deterministic.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

import pytest

from kprod._core.partitioner import StickyPartitioner

BATCH_SIZE = 1_000
ALL4 = [0, 1, 2, 3]

# Upper 0.1 % points of the chi-square distribution (the seeds are fixed, so these never flake).
CHI2_999 = {2: 13.82, 3: 16.27, 7: 24.32}


class CyclingRandom(random.Random):
    """``randrange(n)`` returns 0, 1, 2, ... modulo n: each new choice differs from the previous one."""

    def __init__(self) -> None:
        super().__init__(0)
        self.calls = 0

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        n = start if stop is None else stop - start
        value = self.calls % n
        self.calls += 1
        return value if stop is None else start + value


def sticky() -> StickyPartitioner:
    part = StickyPartitioner(BATCH_SIZE, CyclingRandom())
    assert part.partition(4, ALL4, lambda: None) == 0
    return part


def feed(part: StickyPartitioner, appended: int, full: bool) -> int:
    """Account an append the way the producer does: switch when on_append says so."""
    if part.on_append(appended, full):
        part.next_partition(4, ALL4, None)
    return part.partition(4, ALL4, lambda: None)


def chi_square(counts: Counter[int], expected: dict[int, float]) -> float:
    return sum((counts[k] - e) ** 2 / e for k, e in expected.items())


def switches(
    part: StickyPartitioner, n: int, count: int, available: Sequence[int], queue_sizes: Sequence[int] | None
) -> Counter[int]:
    """Force ``n`` switches (2 * batch.size appended each time) and count where the partitioner went."""
    seen: Counter[int] = Counter()
    for _ in range(n):
        assert part.on_append(2 * BATCH_SIZE, True)
        part.next_partition(count, available, queue_sizes)
        seen[part.partition(count, available, lambda: queue_sizes)] += 1
    return seen


# -- the switching rule ---------------------------------------------------------------------------


def test_stays_on_one_partition_below_batch_size() -> None:
    part = sticky()
    for _ in range(9):
        assert feed(part, 100, full=True) == 0  # 900 bytes < batch.size, even with a full batch


def test_does_not_switch_past_batch_size_while_the_last_batch_is_not_full() -> None:
    part = sticky()
    assert feed(part, 1_500, full=False) == 0
    assert feed(part, 499, full=False) == 0  # 1999 < 2 * batch.size


def test_switches_at_batch_size_once_the_last_batch_is_full() -> None:
    part = sticky()
    assert feed(part, 999, full=True) == 0
    assert feed(part, 1, full=True) == 1  # exactly batch.size and full: move on


def test_switches_when_the_batch_fills_after_passing_batch_size() -> None:
    part = sticky()
    assert feed(part, 1_200, full=False) == 0
    assert feed(part, 10, full=True) == 1


def test_switches_unconditionally_at_twice_batch_size() -> None:
    part = sticky()
    assert feed(part, 1_999, full=False) == 0
    assert feed(part, 1, full=False) == 1


def test_byte_count_restarts_on_the_new_partition() -> None:
    part = sticky()
    assert feed(part, 2_000, full=False) == 1
    assert feed(part, 999, full=True) == 1  # 999 since the switch: stay
    assert feed(part, 1, full=True) == 2


def test_a_fresh_choice_is_made_when_the_partition_count_shrinks() -> None:
    part = StickyPartitioner(BATCH_SIZE, CyclingRandom())
    part.current = 7
    assert part.partition(4, ALL4, lambda: None) in ALL4


# -- where it goes --------------------------------------------------------------------------------


def test_picks_only_partitions_with_a_leader() -> None:
    part = StickyPartitioner(BATCH_SIZE, random.Random(7))
    seen = switches(part, 400, 4, [1, 3], None)
    assert set(seen) == {1, 3}


def test_picks_any_partition_when_none_has_a_leader() -> None:
    part = StickyPartitioner(BATCH_SIZE, random.Random(7))
    seen = switches(part, 400, 4, [], None)
    assert set(seen) == set(ALL4)


def test_single_available_partition_is_always_chosen() -> None:
    part = StickyPartitioner(BATCH_SIZE, random.Random(7))
    assert set(switches(part, 50, 4, [2], None)) == {2}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_switches_spread_uniformly_over_partitions(seed: int) -> None:
    n, count = 8_000, 8
    part = StickyPartitioner(BATCH_SIZE, random.Random(seed))
    seen = switches(part, n, count, list(range(count)), None)
    stat = chi_square(seen, {p: n / count for p in range(count)})
    assert stat < CHI2_999[count - 1], (stat, seen)


# -- adaptive partitioning ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12])
def test_adaptive_weights_follow_javas_table(seed: int) -> None:
    # Java's example: queue sizes 0 3 1 -> weights 4 1 3: a longer queue is chosen less often.
    n = 8_000
    part = StickyPartitioner(BATCH_SIZE, random.Random(seed))
    seen = switches(part, n, 3, [0, 1, 2], [0, 3, 1])
    assert seen[1] < seen[2] < seen[0]
    stat = chi_square(seen, {0: n * 4 / 8, 1: n * 1 / 8, 2: n * 3 / 8})
    assert stat < CHI2_999[2], (stat, seen)


def test_adaptive_weights_match_the_cumulative_table_exactly() -> None:
    # CFT of 4 1 3 is 4 5 8: draws 0..3 -> p0, 4 -> p1, 5..7 -> p2.
    class Scripted(random.Random):
        def __init__(self, draws: Iterable[int]) -> None:
            super().__init__(0)
            self.draws = iter(draws)

        def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
            assert stop is None and start == 8, "the draw must range over the total weight"
            return next(self.draws)

    part = StickyPartitioner(BATCH_SIZE, Scripted(range(8)))
    got = []
    for _ in range(8):
        part.next_partition(3, [0, 1, 2], [0, 3, 1])
        got.append(part.current)
    assert got == [0, 0, 0, 0, 1, 2, 2, 2]


def test_equal_queue_sizes_mean_uniform_choice() -> None:
    n = 6_000
    part = StickyPartitioner(BATCH_SIZE, random.Random(5))
    seen = switches(part, n, 3, [0, 1, 2], [2, 2, 2])
    assert chi_square(seen, {p: n / 3 for p in range(3)}) < CHI2_999[2], seen


def test_adaptive_choice_skips_partitions_without_a_leader() -> None:
    part = StickyPartitioner(BATCH_SIZE, random.Random(3))
    seen = switches(part, 2_000, 3, [1, 2], [0, 3, 1])
    assert set(seen) == {1, 2}
    assert seen[1] < seen[2]  # among the available, weights 1 and 3
