"""The Apache Kafka launcher (``kprod.kafka_broker``) and ``kprod broker --engine kafka``.

The shared ``kafka`` node answers the cheap questions (listeners, certificates, topic configs);
two tests start JVMs of their own because they stop them on purpose: the CLI's Ctrl-C path and a
launcher whose parent is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer as CkProducer

from helpers import alive, consume_all
from kprod.kafka_broker import (
    LISTENERS,
    USERS,
    KafkaBrokerError,
    KafkaCluster,
    _random_cluster_id,
    java_problem,
    kafka_jars,
)

pytestmark = pytest.mark.timeout(180)


def _produce_with_confluent(bootstrap: str, topic: str, n: int, **config: str | bool) -> list[str]:
    errors: list[str] = []
    producer = CkProducer({"bootstrap.servers": bootstrap, **config})
    for i in range(n):
        producer.produce(
            topic,
            b"v%d" % i,
            key=b"k%d" % i,
            on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
        )
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} records not delivered through {bootstrap}"
    return errors


def test_every_listener_takes_its_clients(kafka: KafkaCluster) -> None:
    """PLAINTEXT, SSL, mutual TLS and SASL (each mechanism) all accept confluent-kafka's producer."""
    topic = "listeners"
    kafka.create_topic(topic, partitions=1)
    certs = kafka.certificates
    tls = {"ssl.ca.location": str(certs.ca)}
    cases: list[tuple[str, dict[str, str | bool]]] = [
        ("PLAINTEXT", {}),
        ("SSL", {"security.protocol": "SSL", **tls}),
        (
            "MTLS",
            {
                "security.protocol": "SSL",
                "ssl.certificate.location": str(certs.client_cert),
                "ssl.key.location": str(certs.client_key),
                **tls,
            },
        ),
    ]
    for listener, protocol in (("SASL_PLAINTEXT", "SASL_PLAINTEXT"), ("SASL_SSL", "SASL_SSL")):
        extra = tls if protocol == "SASL_SSL" else {}
        for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            sasl = {"sasl.mechanism": mechanism, "sasl.username": "alice", "sasl.password": USERS["alice"]}
            cases.append((listener, {"security.protocol": protocol, **sasl, **extra}))
        oauth: dict[str, str | bool] = {
            "sasl.mechanism": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": "principal=admin",
        }
        cases.append((listener, {"security.protocol": protocol, **oauth, **extra}))
    for listener, config in cases:
        assert _produce_with_confluent(kafka.bootstrap(listener), topic, 5, **config) == [], (
            listener,
            config,
        )
    assert len(consume_all(kafka.bootstrap_servers, topic, 1, 5 * len(cases), timeout_s=30)) == 5 * len(cases)


def test_mutual_tls_listener_refuses_a_client_without_certificate(kafka: KafkaCluster) -> None:
    context = ssl.create_default_context(cafile=str(kafka.certificates.ca))
    host, port = kafka.bootstrap("MTLS").split(",")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            # TLS 1.3 reports a missing client certificate after the handshake, on the first read.
            tls.sendall(b"\x00\x00\x00\x00")
            with pytest.raises((ssl.SSLError, ConnectionError)):
                if not tls.recv(1):
                    raise ConnectionError("closed")


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1"])
def test_broker_certificate_verifies_for_localhost_and_the_loopback_address(
    kafka: KafkaCluster, server_name: str
) -> None:
    context = ssl.create_default_context(cafile=str(kafka.certificates.ca))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    port = int(kafka.bootstrap("SSL").split(",")[0].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_create_topic_applies_topic_configs_and_lists_leaders(kafka: KafkaCluster) -> None:
    kafka.create_topic("configured", partitions=4, configs={"max.message.bytes": "2000"})
    assert kafka.list_topics()["configured"] == 4
    assert set(kafka.partition_leaders("configured")) == {0, 1, 2, 3}
    assert set(kafka.partition_leaders("configured").values()) == {1}
    # max.message.bytes took effect: a 5,000-byte record is refused by the broker.
    producer = CkProducer({"bootstrap.servers": kafka.bootstrap_servers, "compression.type": "none"})
    errors: list[str] = []
    producer.produce("configured", b"x" * 5000, on_delivery=lambda err, _m: errors.append(str(err)))
    producer.flush(30)
    assert len(errors) == 1 and "MSG_SIZE_TOO_LARGE" in errors[0], errors
    with pytest.raises(KafkaBrokerError, match="error 36"):  # TOPIC_ALREADY_EXISTS
        kafka.create_topic("configured", partitions=4)
    kafka.delete_topic("configured")
    assert "configured" not in kafka.list_topics()


def test_listener_names_are_checked(kafka: KafkaCluster) -> None:
    assert kafka.bootstrap("PLAINTEXT") == kafka.bootstrap_servers
    assert set(LISTENERS) == {"PLAINTEXT", "SSL", "MTLS", "SASL_PLAINTEXT", "SASL_SSL"}
    with pytest.raises(KafkaBrokerError, match="unknown listener 'CONTROLLER'"):
        kafka.bootstrap("CONTROLLER")


def test_cluster_ids_never_start_with_a_dash() -> None:
    # Kafka's command-line parser takes "-abc..." for an option; Kafka re-rolls such ids too.
    ids = [_random_cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 and not i.startswith("-") and "=" not in i for i in ids)
    assert len(set(ids)) == len(ids)


def test_jars_are_fetched_once_then_found_without_maven(
    kafka: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = kafka_jars()
    assert any(p.name.startswith("kafka_2.13-") for p in libs.glob("*.jar"))
    monkeypatch.setenv("PATH", "/nonexistent")  # no mvn: the cache must be enough
    started = time.monotonic()
    assert kafka_jars() == libs
    assert time.monotonic() - started < 1.0


def test_missing_java_is_named_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    problem = java_problem()
    assert problem is not None and "Java 17" in problem and "apt-get install" in problem
    with pytest.raises(KafkaBrokerError, match="Java 17"):
        KafkaCluster().start()


@pytest.mark.kafka
def test_cli_kafka_engine_serves_until_sigterm_and_leaves_no_jvm(tmp_path: Path) -> None:
    if java_problem() is not None and not os.environ.get("CI"):
        pytest.skip(str(java_problem()))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kprod.cli.main",
            "broker",
            "--engine",
            "kafka",
            "--topic",
            "cli",
            "--partitions",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the broker is up (bounded by the test timeout)
        assert line.startswith("bootstrap.servers=127.0.0.1:"), line
        bootstrap = line.strip().split("=", 1)[1]
        assert _produce_with_confluent(bootstrap, "cli", 10) == []
        assert len(consume_all(bootstrap, "cli", 2, 10, timeout_s=30)) == 10
        jvms = _jvm_children(proc.pid)
        assert jvms, "no Kafka JVM found under the CLI"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "SASL_SSL: 127.0.0.1:" in err and "SASL users" in err
        assert all(not alive(pid) for pid in jvms), "a Kafka JVM outlived `kprod broker`"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.kafka
def test_nodes_die_with_a_killed_parent(tmp_path: Path) -> None:
    if java_problem() is not None and not os.environ.get("CI"):
        pytest.skip(str(java_problem()))
    script = textwrap.dedent(
        """
        import sys, time
        from kprod.kafka_broker import KafkaCluster
        cluster = KafkaCluster(directory=sys.argv[1])  # in the test's tmp_path: no atexit cleans up
        cluster.start()
        print(cluster.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        jvm = int(parent.stdout.readline())
        assert alive(jvm)
        parent.kill()  # no atexit, no finally: only PR_SET_PDEATHSIG can stop the JVM
        parent.wait()
        deadline = time.monotonic() + 20
        while alive(jvm) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(jvm), "the Kafka JVM outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _jvm_children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True, check=True
    ).stdout
    return [
        int(p)
        for p, pp, *args in (line.split(None, 2) for line in out.splitlines()[1:])
        if int(pp) == pid and "kafka.Kafka" in " ".join(args)
    ]
