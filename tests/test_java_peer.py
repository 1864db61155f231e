"""The Java producer (kafka-clients and kafka-tools of the broker's version) as a peer.

* Keyed records written by Java's ConsoleProducer and by kprod land in the same partitions.
* ``kprod perf`` takes the flags of Java's ``ProducerPerformance`` (kafka-producer-perf-test) and
  prints the same lines: both run the same command line against the same broker here.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import consume_all
from kprod import Producer
from kprod.kafka_broker import KafkaCluster, _java, kafka_jars

pytestmark = [pytest.mark.timeout(240)]

N_KEYS = 10_000
PARTITIONS = 7
SUMMARY = re.compile(
    r"^(\d+) records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, "
    r"[\d.]+ ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, \d+ ms 99\.9th\.$",
    re.MULTILINE,
)


def _java_tool(main_class: str, *args: str, stdin: bytes | None = None, timeout_s: float = 120) -> str:
    java = _java()
    assert java is not None
    result = subprocess.run(
        [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_jars()}/*", main_class, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, (
        f"{main_class} failed ({result.returncode}):\n{out[-2000:]}{result.stderr[-3000:]!r}"
    )
    return out


def _keys() -> list[str]:
    """Varied keys: ASCII, long, and non-ASCII (their UTF-8 bytes are what both producers hash)."""
    rng = random.Random(4242)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.é漢字😀ß"
    keys = {f"user-{i}" for i in range(N_KEYS // 2)}
    while len(keys) < N_KEYS:
        keys.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))))
    return sorted(keys)


def test_java_and_kprod_put_every_key_in_the_same_partition(kafka: KafkaCluster) -> None:
    keys = _keys()
    kafka.create_topic("peer-java", partitions=PARTITIONS)
    kafka.create_topic("peer-kprod", partitions=PARTITIONS)
    lines = "".join(f"{k}\t{i}\n" for i, k in enumerate(keys)).encode()
    _java_tool(
        "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server",
        kafka.bootstrap_servers,
        "--topic",
        "peer-java",
        "--reader-property",
        "parse.key=true",
        "--reader-property",
        "key.separator=\t",
        stdin=lines,
    )
    with Producer({"bootstrap.servers": kafka.bootstrap_servers}) as producer:
        for i, k in enumerate(keys):
            producer.send("peer-kprod", str(i).encode(), key=k.encode())
    java = consume_all(kafka.bootstrap_servers, "peer-java", PARTITIONS, N_KEYS, timeout_s=90)
    ours = consume_all(kafka.bootstrap_servers, "peer-kprod", PARTITIONS, N_KEYS, timeout_s=90)
    java_place = {r.key: r.partition for r in java}
    our_place = {r.key: r.partition for r in ours}
    assert len(java_place) == len(our_place) == N_KEYS
    differ = [k for k in java_place if java_place[k] != our_place.get(k)]
    assert not differ, f"{len(differ)} keys placed differently, e.g. {differ[:3]}"
    assert len(set(our_place.values())) == PARTITIONS


PERF_ARGS = [
    "--num-records",
    "3000",
    "--record-size",
    "100",
    "--throughput",
    "-1",
    "--key-distribution",
    "range",
    "--record-key-range",
    "50",
    "--transaction-duration-ms",
    "200",
    "--reporting-interval",
    "1000",
    "--command-property",
    "acks=all",
    "linger.ms=5",
]


def test_kprod_perf_takes_the_java_tools_command_line_and_prints_its_lines(
    kafka: KafkaCluster, tmp_path: Path
) -> None:
    kafka.create_topic("perf-java", partitions=3)
    kafka.create_topic("perf-kprod", partitions=3)
    config = tmp_path / "producer.properties"
    config.write_text("# a Java client's file\nclient.id=perf-peer\n")
    common = ["--bootstrap-server", kafka.bootstrap_servers, "--command-config", str(config), *PERF_ARGS]
    java_out = _java_tool("org.apache.kafka.tools.ProducerPerformance", "--topic", "perf-java", *common)
    result = subprocess.run(
        [sys.executable, "-m", "kprod.cli.main", "perf", "--topic", "perf-kprod", *common],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ours = SUMMARY.findall(result.stdout)
    theirs = SUMMARY.findall(java_out)
    assert ours == theirs == ["3000"], f"java:\n{java_out}\nkprod:\n{result.stdout}"
    read = {
        name: consume_all(
            kafka.bootstrap_servers, name, 3, 3000, timeout_s=60, config={"isolation.level": "read_committed"}
        )
        for name in ("perf-java", "perf-kprod")
    }
    for name, records in read.items():
        assert len(records) == 3000, f"{name}: {len(records)} committed records"
        assert {r.key for r in records} == {str(k).encode() for k in range(50)}
        assert {len(r.value or b"") for r in records} == {100}
    java_place = {r.key: r.partition for r in read["perf-java"]}
    assert all(java_place[r.key] == r.partition for r in read["perf-kprod"]), "range keys placed alike"
