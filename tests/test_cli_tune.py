"""``kprod tune``: the pure analysis (Pareto set, recommendation, budget planning) on hand-made points,
and one short sweep run as a user runs it (a subprocess) against the embedded Tansu broker."""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest

from kprod.cli.tune import (
    MIN_POINT_S,
    Point,
    Setting,
    analyze,
    format_table,
    percentile,
    properties_lines,
    report,
    run_sweep,
    slot_seconds,
    sweep,
    write_chart,
)


def _point(linger: int, codec: str, rps: float, p99: float, *, records: int = 1000, **kw: Any) -> Point:
    return Point(
        Setting(linger, 16384, codec, "all"),
        records=records,
        records_per_s=rps,
        p50_ms=p99 / 2,
        p99_ms=p99,
        wire_bytes_per_record=100.0,
        cpu_us_per_record=5.0,
        **kw,
    )


# A: fast but slow to ack; B: the fastest within 50 ms; C: lowest p99; D and E dominated.
A = _point(20, "zstd", 300_000, 80.0)
B = _point(5, "lz4", 250_000, 40.0)
C = _point(0, "none", 120_000, 3.0)
D = _point(0, "lz4", 110_000, 45.0)  # dominated by B (faster, lower p99) and by C
E = _point(5, "none", 250_000, 42.0)  # same throughput as B, higher p99: dominated by B
POINTS = [A, B, C, D, E]


def _ids(points: list[Point]) -> set[int]:
    return {id(p) for p in points}


def test_pareto_keeps_exactly_the_undominated_points() -> None:
    analysis = analyze(POINTS, max_p99_ms=50.0)
    assert _ids(analysis.pareto) == _ids([A, B, C])
    assert [p.p99_ms for p in analysis.pareto] == [3.0, 40.0, 80.0], "sorted by p99"
    # Every point left out is dominated by one on the front; none on the front is.
    for p in POINTS:
        dominated = any(
            q.records_per_s >= p.records_per_s
            and q.p99_ms <= p.p99_ms
            and (q.records_per_s, q.p99_ms) != (p.records_per_s, p.p99_ms)
            for q in POINTS
        )
        assert dominated == (id(p) not in _ids(analysis.pareto))


def test_recommendation_is_the_fastest_within_the_budget() -> None:
    analysis = analyze(POINTS, max_p99_ms=50.0)
    assert analysis.recommended is B and analysis.meets_budget
    # A looser budget lets the fastest point in; a tighter one leaves only C.
    assert analyze(POINTS, max_p99_ms=80.0).recommended is A
    assert analyze(POINTS, max_p99_ms=39.9).recommended is C
    # The budget is inclusive.
    assert analyze(POINTS, max_p99_ms=3.0).recommended is C
    assert properties_lines(B.setting) == [
        "linger.ms=5",
        "batch.size=16384",
        "compression.type=lz4",
        "acks=all",
    ]


def test_when_nothing_meets_the_budget_the_lowest_p99_is_recommended() -> None:
    analysis = analyze(POINTS, max_p99_ms=1.0)
    assert analysis.recommended is C and not analysis.meets_budget
    # A tie on p99 goes to the faster point.
    slow = _point(0, "gzip", 90_000, 3.0)
    assert analyze([slow, C], max_p99_ms=1.0).recommended is C


def test_with_a_paced_rate_near_equal_throughputs_tie_and_the_lower_p99_wins() -> None:
    at_rate = _point(20, "none", 50_020, 19.9)
    also_at_rate = _point(0, "zstd", 49_600, 0.7)  # 0.8% slower: a tie at 2%
    lagging = _point(0, "gzip", 45_000, 0.5)  # 10% short of the rate: not a tie
    points = [at_rate, also_at_rate, lagging]
    assert analyze(points, 50.0).recommended is at_rate, "no tolerance: the strictly fastest"
    assert analyze(points, 50.0, tie_fraction=0.02).recommended is also_at_rate
    assert analyze(points, 50.0, tie_fraction=0.005).recommended is at_rate
    # The tie only widens the choice among points within the budget.
    assert analyze(points, 0.6, tie_fraction=0.02).recommended is lagging


def test_points_that_measured_nothing_are_left_out() -> None:
    broken = _point(0, "zstd", 0.0, 0.0, records=0, error="KafkaTimeoutError: no broker")
    failed_send = _point(5, "zstd", 900_000, 0.5, error="no record acknowledged")
    analysis = analyze([broken, failed_send, D], max_p99_ms=50.0)
    assert analysis.recommended is D, "a 0-ms p99 from an empty run must not win"
    assert _ids(analysis.pareto) == _ids([D])
    assert _ids(analysis.excluded) == _ids([broken, failed_send])
    nothing = analyze([broken], max_p99_ms=50.0)
    assert nothing.recommended is None and nothing.pareto == [] and not nothing.meets_budget


def test_equal_points_are_both_on_the_front() -> None:
    twin = _point(20, "lz4", B.records_per_s, B.p99_ms)
    analysis = analyze([B, twin, D], max_p99_ms=50.0)
    assert _ids(analysis.pareto) == _ids([B, twin])


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7], 99) == 7.0
    assert percentile([], 50) == 0.0
    assert percentile([1, 2, 3, 1000], 99) == 1000.0


def test_sweep_order_and_slots() -> None:
    settings = sweep([0, 5], [16384], ["none", "lz4"], ["all"])
    assert [(s.linger_ms, s.compression) for s in settings] == [
        (0, "none"),
        (5, "none"),
        (0, "lz4"),
        (5, "lz4"),
    ]
    assert slot_seconds(60.0, 12) == 5.0
    assert slot_seconds(3.0, 12) == MIN_POINT_S, "a point never gets less than the minimum"
    assert slot_seconds(MIN_POINT_S - 0.01, 3) is None
    assert slot_seconds(10.0, 0) is None


def test_the_sweep_stops_when_the_budget_runs_out() -> None:
    now = [0.0]
    slots: list[float] = []

    def fake_measure(setting: Setting, *rest: Any) -> Point:
        slot = rest[3]  # (base_props, topic, payloads, slot, max_in_flight, throughput)
        slots.append(slot)
        now[0] += slot  # each point takes its whole slot
        return _point(setting.linger_ms, setting.compression, 1000.0, 1.0)

    settings = sweep([0, 1, 2, 3, 4, 5], [16384], ["none"], ["all"])
    points = run_sweep(
        settings, {}, "t", [b"x"], deadline=3.5, max_in_flight=10, measure=fake_measure, clock=lambda: now[0]
    )
    assert len(points) == 3, "3 s of slots fit in 3.5 s; the 0.5 s left is under the minimum"
    assert slots == [MIN_POINT_S] * 3
    assert [p.setting.linger_ms for p in points] == [0, 1, 2]


def test_table_has_one_row_per_point_with_marks() -> None:
    analysis = analyze(POINTS, max_p99_ms=50.0)
    lines = format_table(POINTS, analysis).splitlines()
    rows = lines[2:]
    assert len(rows) == len(POINTS)
    assert rows[1].endswith("pareto, recommended")  # B
    assert rows[3].split()[-3:] == ["45.00", "100.0", "5.0"], "D is neither on the front nor recommended"
    assert rows[0].endswith("pareto") and rows[4].split()[-1] == "5.0"  # A on the front, E not
    assert "250,000" in rows[1]


def _check_png(path: Path) -> tuple[int, int]:
    """Walk the PNG's chunks, checking each CRC; return (width, height)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, names, size = 8, [], (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        name = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(name + body) == crc, f"bad CRC in {name!r}"
        if name == b"IHDR":
            size = struct.unpack(">II", body[:8])
        names.append(name)
        pos += 12 + length
    assert names[0] == b"IHDR" and names[-1] == b"IEND" and b"IDAT" in names
    return size


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "sub" / "chart.png"
    write_chart(POINTS, analyze(POINTS, 50.0), path)
    width, height = _check_png(path)
    assert width > 300 and height > 200


def test_without_matplotlib_the_table_is_still_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    args = argparse.Namespace(
        max_p99_ms=50.0, chart=tmp_path / "c.png", json=tmp_path / "r.json", budget_s=10.0, throughput=-1.0
    )
    assert report(POINTS, len(POINTS), args, "t", 100.0) == 0
    out, err = capsys.readouterr()
    assert "pip install 'kprod[tune]'" in err
    assert not (tmp_path / "c.png").exists()
    assert "compression.type=lz4" in out.splitlines()
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["recommended"] == B.setting.properties() and doc["meets_budget"] is True
    assert [p["pareto"] for p in doc["points"]] == [True, True, True, False, False]


# ------------------------------------------------------------------------------ end to end


ROW = re.compile(
    r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\w+)\s+(\w+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*(.*)$"
)


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_a_short_sweep_on_the_embedded_broker(tmp_path: Path) -> None:
    chart = tmp_path / "tune.png"
    budget_s, max_p99 = 8.0, 50.0
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable, "-m", "kprod", "tune",
            "--linger-ms", "0,5", "--compression", "none,lz4", "--batch-size", "16384",
            "--budget-s", str(budget_s), "--max-p99-ms", str(max_p99), "--max-in-flight", "5000",
            "--chart", str(chart), "--json", str(tmp_path / "tune.json"),
        ],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < budget_s + 12, f"the budget bounds the run: {elapsed:.1f} s"

    # Progress: one line per point on stderr.
    for i in range(1, 5):
        assert f"[{i}/4] linger.ms=" in result.stderr, result.stderr

    # The table: one row per point, each with records acknowledged.
    rows = [m for m in map(ROW.match, result.stdout.splitlines()) if m]
    assert len(rows) == 4, result.stdout
    points = [
        (int(m[2]), m[4], float(m[6].replace(",", "")), float(m[8]), m[11]) for m in rows
    ]  # (linger, codec, records/s, p99, marks)
    assert sorted((p[0], p[1]) for p in points) == [(0, "lz4"), (0, "none"), (5, "lz4"), (5, "none")]
    assert all(p[2] > 0 for p in points), result.stdout

    # The recommendation obeys the budget rule, recomputed from the table.
    within = [p for p in points if p[3] <= max_p99]
    expected = (
        max(within, key=lambda p: (p[2], -p[3])) if within else min(points, key=lambda p: (p[3], -p[2]))
    )
    marked = [p for p in points if "recommended" in p[4]]
    assert marked == [expected], result.stdout
    lines = result.stdout.splitlines()
    for line in (
        f"linger.ms={expected[0]}",
        "batch.size=16384",
        f"compression.type={expected[1]}",
        "acks=all",
    ):
        assert line in lines, result.stdout
    head = "Recommended (highest throughput" if within else "No setting reached p99"
    assert head in result.stdout

    doc = json.loads((tmp_path / "tune.json").read_text())
    assert len(doc["points"]) == 4 and all(p["records"] > 0 and p["failed"] == 0 for p in doc["points"])
    assert all(p["wire_bytes_per_record"] > 50 and p["cpu_us_per_record"] > 0 for p in doc["points"])

    width, height = _check_png(chart)
    assert width > 300 and height > 200


@pytest.mark.timeout(60)
def test_a_topic_the_cluster_does_not_create_ends_the_sweep_within_the_budget(broker: Any) -> None:
    # A cluster without auto-creation: before, each point's warm-up waited max.block.ms (60 s).
    topic = f"kprod-tune-missing-{uuid.uuid4().hex[:8]}"
    budget_s = 6.0
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable, "-m", "kprod", "tune", "-b", broker.bootstrap_servers, "--topic", topic,
            "-X", "allow.auto.create.topics=false", "--linger-ms", "0,5", "--compression", "none",
            "--batch-size", "16384", "--budget-s", str(budget_s),
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"topic {topic!r} not present in metadata" in result.stderr
    assert f"create {topic!r} first or pass --topic" in result.stderr
    assert "[2/2]" not in result.stderr, "the sweep stops at the first point: every other would wait too"
    assert elapsed < budget_s + 10, f"the budget bounds the wait: {elapsed:.1f} s"


@pytest.mark.parametrize(
    "option",
    [
        ["--compression", "brotli"],
        ["--linger-ms", "5,x"],
        ["--acks", "2"],
        ["--budget-s", "0"],
        ["-X", "no-equals-sign"],
        ["-X", "buffer.memory=-1"],
    ],
)
def test_bad_options_exit_2_before_starting_a_broker(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from kprod.cli.main import main

    assert main(["tune", *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kprod tune: ") and "embedded broker" not in err
