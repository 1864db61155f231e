"""``kprod.live.port`` (a producer's metrics as JSON lines on the loopback) and ``kprod top`` (the live
view of that producer from another process), against the embedded Tansu broker."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kprod import AsyncProducer, ConfigError, Producer
from kprod._io import live_endpoint
from kprod._io.live_endpoint import MAX_CLIENTS, MAX_LINE_BYTES, SNAPSHOT_CACHE_S, json_safe
from kprod.broker import EmbeddedBroker
from kprod.cli.live import STAGES
from kprod.cli.main import main

TOPIC = "top"


def _strict(line: bytes) -> dict[str, Any]:
    """A snapshot line, parsed as standard JSON (NaN or Infinity would raise)."""

    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name} in {line[:200]!r}")

    doc = json.loads(line, parse_constant=refuse)
    assert isinstance(doc, dict)
    return doc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def tansu(fresh_broker: EmbeddedBroker) -> EmbeddedBroker:
    fresh_broker.create_topic(TOPIC, partitions=3)
    return fresh_broker


@pytest.fixture
def producer(tansu: EmbeddedBroker) -> Iterator[Producer]:
    p = Producer({"bootstrap.servers": tansu.bootstrap_servers, "kprod.live.port": 0, "linger.ms": 1})
    try:
        yield p
    finally:
        p.close(5)


class _Sender(threading.Thread):
    """Sends records at a bounded rate (about ``rate`` per second) until stopped."""

    def __init__(self, producer: Producer, rate: int = 2000) -> None:
        super().__init__(daemon=True)
        self.producer, self.rate, self.sent = producer, rate, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.01):
            for _ in range(self.rate // 100):
                self.producer.send(TOPIC, b"v" * 100)
                self.sent += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


# ------------------------------------------------------------------ the setting


@pytest.mark.parametrize("raw", [-1, 65536, "x", True, 1.5, "80 80"])
def test_bad_ports_are_refused_naming_the_setting(raw: object) -> None:
    with pytest.raises(ConfigError, match=r"'kprod\.live\.port'.*None \(off\), 0 \(a free port\)"):
        Producer({"bootstrap.servers": "127.0.0.1:9", "kprod.live.port": raw})


@pytest.mark.parametrize("raw", ["", "  ", "a b", 5, None])
def test_bad_hosts_are_refused_naming_the_setting(raw: object) -> None:
    with pytest.raises(ConfigError, match=r"'kprod\.live\.host'"):
        Producer({"bootstrap.servers": "127.0.0.1:9", "kprod.live.host": raw})


def test_the_setting_is_off_by_default_and_a_port_in_use_is_a_config_error() -> None:
    with Producer({"bootstrap.servers": "127.0.0.1:9"}) as off:
        assert off.live_address is None and off.config.kprod_live_port is None
        assert off.config.kprod_live_host == "127.0.0.1"
    with Producer(bootstrap_servers="127.0.0.1:9", kprod_live_port="0") as on:  # keyword, string
        host, port = on.live_address or ("", 0)
        assert host == "127.0.0.1" and port > 0
        with pytest.raises(ConfigError, match=rf"'kprod\.live\.port'={port}: cannot listen on 127\.0\.0\.1"):
            Producer({"bootstrap.servers": "127.0.0.1:9", "kprod.live.port": port})


def test_json_safe() -> None:
    doc = json_safe({"a": float("nan"), "b": float("inf"), 1: (2, {3: -float("inf")}), "c": [1.5, True]})
    assert doc == {"a": None, "b": None, "1": [2, {"3": None}], "c": [1.5, True]}
    json.dumps(doc, allow_nan=False)


# ------------------------------------------------------------------ the endpoint


@pytest.mark.timeout(30)
def test_the_endpoint_serves_the_metrics_as_strict_json_lines(producer: Producer) -> None:
    count = 1234
    for i in range(count):
        producer.send(TOPIC, b"%d" % i)
    producer.flush(10)
    address = producer.live_address
    assert address is not None
    with socket.create_connection(address, timeout=5) as sock, sock.makefile("rb") as lines:
        first = _strict(lines.readline())  # sent on connect
        assert first["kprod.live"] == 1 and first["client.id"] == producer.config.client_id
        assert abs(first["timestamp"] - time.time()) < 60
        assert first["metrics"]["record-send-total"] == count
        assert first["metrics"]["records-sent-total"] == count
        for i in range(count):
            producer.send(TOPIC, b"%d" % i)
        producer.flush(10)
        time.sleep(SNAPSHOT_CACHE_S * 1.5)  # past the snapshot cache
        sock.sendall(b"metrics\n")
        again = _strict(lines.readline())
        assert again["metrics"]["record-send-total"] == 2 * count
        assert again["timestamp"] > first["timestamp"]
        sock.sendall(b"set linger.ms=0\n")  # read-only: refused, the connection stays
        assert "error" in _strict(lines.readline())
        sock.sendall(b"\n\r\nmetrics\n")  # empty lines get no answer
        assert "metrics" in _strict(lines.readline())
    assert producer.config.linger_ms == 1


@pytest.mark.timeout(30)
def test_garbage_and_too_many_clients_do_not_hurt_the_producer(producer: Producer) -> None:
    address = producer.live_address
    assert address is not None
    clients = [socket.create_connection(address, timeout=5) for _ in range(MAX_CLIENTS)]
    try:
        for c in clients:
            assert c.makefile("rb").readline().startswith(b"{")
        extra = socket.create_connection(address, timeout=5)
        assert _strict(extra.makefile("rb").readline()) == {"error": "too many clients"}
        extra.close()
        clients[0].sendall(b"\x00\xff garbage \xc3\x28\n" * 50)  # answered with errors, never read
        clients[1].sendall(b"x" * (MAX_LINE_BYTES * 4))  # an endless line: dropped
        clients[2].sendall(b"metrics\n" * 20_000)  # asks and never reads: bounded, then dropped
        clients[3].sendall(b'{"metrics": 1}\n\n\r\n')
        clients[4].shutdown(socket.SHUT_WR)
        assert clients[1].makefile("rb").read() is not None  # the endpoint closes it
        # The producer still delivers, promptly.
        futures = [producer.send(TOPIC, b"after %d" % i) for i in range(300)]
        producer.flush(10)
        assert all(f.result(0).offset >= 0 for f in futures)
    finally:
        for c in clients:
            c.close()
    # Every slot comes back once the clients are gone (and the snapshot is recomputed, its cache past).
    time.sleep(SNAPSHOT_CACHE_S * 1.5)
    deadline = time.monotonic() + 5
    while True:
        with socket.create_connection(address, timeout=5) as sock:
            doc = _strict(sock.makefile("rb").readline())
        if "metrics" in doc or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert doc["metrics"]["record-send-total"] >= 300


@pytest.mark.timeout(30)
def test_a_client_that_asks_and_never_reads_is_dropped(
    producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_endpoint, "MIN_ANSWER_INTERVAL_S", 0.0)  # answer as fast as asked
    monkeypatch.setattr(live_endpoint, "MAX_WRITE_BUFFER_BYTES", 64 * 1024)
    address = producer.live_address
    assert address is not None
    asked = 20_000
    with socket.create_connection(address, timeout=10) as greedy:
        greedy.sendall(b"metrics\n" * asked)
        time.sleep(1)  # the answers pile up in the kernel, then in the endpoint's buffer: dropped
        received = b""
        try:
            while chunk := greedy.recv(1 << 20):
                received += chunk
        except ConnectionResetError:
            pass
    assert 0 < received.count(b"\n") < asked
    futures = [producer.send(TOPIC, b"after") for _ in range(100)]
    producer.flush(10)
    assert all(f.result(0).offset >= 0 for f in futures)


@pytest.mark.timeout(30)
def test_the_port_is_closed_with_the_producer(tansu: EmbeddedBroker) -> None:
    p = Producer({"bootstrap.servers": tansu.bootstrap_servers, "kprod.live.port": 0})
    p.send(TOPIC, b"x").result(10)
    address = p.live_address
    assert address is not None
    attached = socket.create_connection(address, timeout=5)
    attached.makefile("rb").readline()
    p.close(5)
    assert attached.makefile("rb").read() == b""  # told at once: the connection ends
    attached.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
    assert p.live_address == address  # still says where it was


@pytest.mark.timeout(30)
def test_an_async_producer_serves_it_too(tansu: EmbeddedBroker) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncProducer(bootstrap_servers=tansu.bootstrap_servers, kprod_live_port=0) as p:
            assert p.live_address is not None
            for i in range(50):
                await p.enqueue(TOPIC, b"%d" % i)
            await p.flush(10)
            reader, writer = await asyncio.open_connection(*p.live_address)
            doc = _strict(await reader.readline())
            writer.close()
            return doc

    assert asyncio.run(scenario())["metrics"]["record-send-total"] == 50


FORK_SCRIPT = textwrap.dedent(
    """
    import os, socket, sys, time
    from kprod import Producer
    producer = Producer({"bootstrap.servers": sys.argv[1], "kprod.live.port": 0})
    address = producer.live_address
    attached = socket.create_connection(address, timeout=5)
    attached.makefile("rb").readline()
    pid = os.fork()
    if pid == 0:
        time.sleep(4)
        os._exit(0)
    producer.close(5)
    attached.settimeout(2)
    print("attached:", attached.makefile("rb").read())
    try:
        socket.create_connection(address, timeout=2)
        print("port: open")
    except ConnectionRefusedError:
        print("port: refused")
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    """
)


@pytest.mark.timeout(60)
def test_a_forked_child_keeps_neither_the_port_nor_the_connections(tansu: EmbeddedBroker) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, tansu.bootstrap_servers],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "attached: b''" in result.stdout and "port: refused" in result.stdout, (
        result.stdout + result.stderr
    )


# ------------------------------------------------------------------ kprod top


def _top(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kprod", "top", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(60)
def test_top_prints_plain_lines_with_the_acked_rate_and_the_buffer(producer: Producer) -> None:
    address = producer.live_address
    assert address is not None
    sender = _Sender(producer)
    sender.start()
    try:
        result = _top("--port", str(address[1]), "--iterations", "2", "--interval-s", "0.5")
    finally:
        sender.stop()
    assert result.returncode == 0, result.stderr
    assert f"kprod top: producer {producer.config.client_id}" in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("live ") for line in lines), lines
    for line in lines:
        fields = dict(part.strip().split(" ", 1) for part in line.split("|")[1:])
        assert fields["acked"].endswith("rec/s") and fields["buffer"].endswith("%"), line
    # A first snapshot is taken at once, so the first line already has a rate.
    assert all(int(line.split("acked ")[1].split(" ")[0].replace(",", "")) > 0 for line in lines), lines


@pytest.mark.timeout(60)
def test_top_ends_cleanly_when_the_producer_closes_with_exit_on_disconnect(tansu: EmbeddedBroker) -> None:
    p = Producer({"bootstrap.servers": tansu.bootstrap_servers, "kprod.live.port": 0})
    address = p.live_address
    assert address is not None
    top = subprocess.Popen(
        [sys.executable, "-m", "kprod", "top", "--port", str(address[1]), "--interval-s", "0.2",
         "--exit-on-disconnect"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert top.stdout is not None
        assert top.stdout.readline().startswith("live ")  # attached and drawing
        p.close(5)
        _, err = top.communicate(timeout=15)
    finally:
        top.kill()
        p.close(1)
    assert top.returncode == 0, err
    assert f"the producer at 127.0.0.1:{address[1]} closed" in err


def _top_argv(*args: str) -> list[str]:
    """``kprod top ARGS`` with SIGINT handled as from a terminal: a shell without job control starts
    background jobs with SIGINT ignored, and a test runner started that way would pass it on."""
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from kprod.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", code, "top", *args]


class _Lines(threading.Thread):
    """Collects a pipe's lines as they come, so that a test can wait for one with a deadline."""

    def __init__(self, pipe: Any) -> None:
        super().__init__(daemon=True)
        self.pipe, self.lines = pipe, list[str]()
        self.start()

    def run(self) -> None:
        for line in self.pipe:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, after: int = 0, timeout_s: float = 20.0) -> int:
        """The index of the first line from ``after`` on that contains ``text``; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index in range(after, len(self.lines)):
                if text in self.lines[index]:
                    return index
            time.sleep(0.05)
        raise AssertionError(f"no line with {text!r} after line {after} in {timeout_s} s: {self.lines[-20:]}")


@pytest.mark.timeout(90)
def test_top_reconnects_when_the_producer_restarts_on_the_same_port(tansu: EmbeddedBroker) -> None:
    port = _free_port()
    settings = {"bootstrap.servers": tansu.bootstrap_servers, "kprod.live.port": port, "linger.ms": 1}
    first = Producer({**settings, "client.id": "top-first"})
    top = subprocess.Popen(
        _top_argv("--port", str(port), "--interval-s", "0.2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    second: Producer | None = None
    try:
        out, err = _Lines(top.stdout), _Lines(top.stderr)
        out.wait_for("live ")
        err.wait_for("producer top-first")
        first.close(5)
        gone = out.wait_for("disconnected, retrying")
        err.wait_for("went away")
        time.sleep(2.5)  # several attempts fail meanwhile: nothing listens on the port
        assert top.poll() is None, "top must keep retrying, not exit"
        assert sum("disconnected" in line for line in out.lines) == 1, "said once per disconnection"
        second = Producer({**settings, "client.id": "top-second"})
        sender = _Sender(second)
        sender.start()
        try:
            err.wait_for("reconnected to producer top-second", timeout_s=10)
            # Back to drawing: lines with rates again, the acked rate of the new producer above zero.
            again = out.wait_for("| acked ", after=gone + 1)
            out.wait_for("live ", after=again + 1)
        finally:
            sender.stop()
        acked = [int(line.split("acked ")[1].split(" ")[0].replace(",", "")) for line in out.lines[again:]]
        assert max(acked) > 0, out.lines[again:]
        top.send_signal(signal.SIGINT)
        assert top.wait(10) == 0
    finally:
        top.kill()
        top.wait(5)
        first.close(1)
        if second is not None:
            second.close(1)


@pytest.mark.timeout(60)
def test_top_stops_at_once_on_ctrl_c_while_the_producer_does_not_answer(tansu: EmbeddedBroker) -> None:
    """The producer's process is frozen (SIGSTOP) while top waits for its next snapshot (up to
    --timeout-s 30): Ctrl-C still ends top at once, with status 0."""
    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from kprod import Producer
            Producer({{"bootstrap.servers": "{tansu.bootstrap_servers}", "kprod.live.port": {port}}})
            print("ready", flush=True)
            time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    top: subprocess.Popen[str] | None = None
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        top = subprocess.Popen(
            _top_argv("--port", str(port), "--interval-s", "0.2", "--timeout-s", "30"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        out = _Lines(top.stdout)
        out.wait_for("live ")
        child.send_signal(signal.SIGSTOP)
        time.sleep(1.0)  # top's next question is unanswered now
        assert top.poll() is None
        start = time.monotonic()
        top.send_signal(signal.SIGINT)
        assert top.wait(10) == 0
        took = time.monotonic() - start
        assert took < 2.0, f"top took {took:.1f} s to stop"
    finally:
        if top is not None:
            top.kill()
            top.wait(5)
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.wait(5)


def test_reconnect_backoff_doubles_up_to_two_seconds_and_never_tries_early() -> None:
    from kprod.cli.live import SourceUnavailableError
    from kprod.cli.top import MAX_RECONNECT_BACKOFF_S, ReconnectingMetrics, RemoteMetrics

    class Gone:
        def __call__(self) -> dict[str, Any]:
            raise live_endpoint_gone("the producer closed the connection")

        def close(self) -> None:
            pass

    from kprod.cli.top import ProducerGone as live_endpoint_gone

    now = [100.0]
    tries: list[float] = []
    said: list[str] = []

    def connect() -> RemoteMetrics:
        tries.append(now[0])
        raise ConnectionRefusedError("refused")

    source = ReconnectingMetrics(Gone(), connect, said.append, clock=lambda: now[0])  # type: ignore[arg-type]
    with pytest.raises(SourceUnavailableError, match="disconnected, retrying"):
        source()
    assert said == ["the producer went away (the producer closed the connection); retrying"]
    for _ in range(200):  # 20 s of calls every 0.1 s
        now[0] += 0.1
        with pytest.raises(SourceUnavailableError):
            source()
    waits = [b - a for a, b in itertools.pairwise(tries)]
    backoffs = [min(0.2 * 2**n, MAX_RECONNECT_BACKOFF_S) for n in range(len(waits))]
    assert len(waits) >= 10 and backoffs[-1] == MAX_RECONNECT_BACKOFF_S
    # Never before the backoff; at the first call after it (calls come every 0.1 s).
    assert all(b - 1e-6 <= w <= b + 0.1 + 1e-6 for w, b in zip(waits, backoffs, strict=True)), waits
    assert source.attempts == len(tries) and source.reconnections == 0


def test_top_says_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    assert main(["top", "--port", str(port), "--iterations", "1"]) == 1
    err = capsys.readouterr().err
    assert f"nothing listens on 127.0.0.1:{port}" in err and f"kprod.live.port={port}" in err
    assert main(["top", "--port", "0"]) == 2


def test_top_says_when_it_is_not_a_kprod_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

        threading.Thread(target=answer, daemon=True).start()
        assert main(["top", "--port", str(port), "--iterations", "1"]) == 1
    assert "not a kprod live endpoint" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.timeout(30)
def test_top_draws_the_rich_panel_on_a_terminal(producer: Producer, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    address = producer.live_address
    assert address is not None
    producer.send(TOPIC, b"x").result(10)
    screen = _Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    assert main(["top", "--port", str(address[1]), "--iterations", "2", "--interval-s", "0.2"]) == 0
    drawn = screen.getvalue()
    assert "kprod live" in drawn and all(stage in drawn for stage in STAGES), drawn[-2000:]
    assert "rec/s acked" in drawn and "MB (" in drawn
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    assert max(len(line) for line in plain.splitlines()) <= 80, plain[-2000:]


@pytest.mark.timeout(90)
def test_perf_takes_the_setting_with_dash_x_and_says_where_to_attach() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kprod", "perf", "--topic", "perf-top", "--num-records", "2000", "--record-size",
         "10", "--throughput", "-1", "-X", "kprod.live.port=0", "-X", "linger.ms=2"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "# kprod live endpoint on 127.0.0.1:" in result.stderr and "kprod top --port " in result.stderr
    assert "2000 records sent" in result.stdout
