"""Answers nobody planned for (issue 11): none may crash, stall or silently kill the producer.

Each test here failed before its fix. They run against the embedded Tansu broker, some behind
``tests/relay.py`` so that answers can be damaged on the wire.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kprod import Producer, RecordFuture
from kprod.broker import EmbeddedBroker
from kprod.errors import KprodError, ProducerClosedError
from relay import RelayedTansu
from wire_faults import WIRE_APIS, WIRE_DELIVERY_TIMEOUT_MS, WIRE_RECORDS, run_wire_mutation

pytestmark = pytest.mark.broker


@pytest.fixture
def tansu() -> Iterator[RelayedTansu]:
    with RelayedTansu() as broker:
        yield broker


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(60)
def test_an_api_versions_answer_that_raises_a_foreign_error_closes_the_socket_and_backs_off(
    fresh_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug-like error (not a kprod one) while reading ApiVersions leaked the socket and
    reconnected at once, forever: thousands of connections a second."""
    import kprod._io.connection as connection

    calls = 0

    def broken(frame: Any, version: int, offset: int = 4) -> Any:
        nonlocal calls
        calls += 1
        raise IndexError("an answer no decoder foresaw")

    monkeypatch.setattr(connection, "parse_api_versions_response", broken)
    fresh_broker.create_topic("leak", partitions=1)
    before = _open_fds()
    producer = Producer(
        {
            "bootstrap.servers": fresh_broker.bootstrap_servers,
            "max.block.ms": 2000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 1000,
        }
    )
    try:
        with pytest.raises(KprodError):
            producer.send("leak", b"v").result(timeout=10)
        assert producer._engine.fatal_error is None, "the sender died"
        leaked = _open_fds() - before
    finally:
        producer.close(5)
    assert calls <= 30, f"{calls} connection attempts in 2 s: no backoff"
    assert leaked <= 6, f"{leaked} file descriptors leaked"


@pytest.mark.timeout(60)
def test_close_racing_sends_gives_every_accepted_record_its_whole_timeout(tansu: RelayedTansu) -> None:
    """close(10) while another thread kept sending returned in 0.14 s and failed the records that
    arrived during its flush, saying their 10 s had passed. Answers come 300 ms late here, so the
    flush inside close() lasts long enough for the other thread to add records."""
    tansu.create_topic("race", partitions=3)
    producer = Producer({"bootstrap.servers": tansu.bootstrap_servers, "linger.ms": 20})
    producer.send("race", b"warm-up").result(timeout=10)
    tansu.relay.delay_responses(300, api_keys={0})
    accepted: list[RecordFuture] = []
    started = threading.Event()
    refused: list[BaseException] = []

    def keep_sending() -> None:
        deadline = time.monotonic() + 20
        while len(accepted) < 300_000 and time.monotonic() < deadline:
            try:
                accepted.append(producer.send("race", b"x" * 100))
            except ProducerClosedError as exc:
                refused.append(exc)
                return
            if len(accepted) == 2_000:
                started.set()

    sender = threading.Thread(target=keep_sending)
    sender.start()
    assert started.wait(10)
    producer.close(10)
    sender.join(30)
    assert refused, "send() after close() started must raise ProducerClosedError"
    errors = [f.exception(timeout=0) for f in accepted]
    failed = [e for e in errors if e is not None]
    assert not failed, f"{len(failed)} of {len(accepted)} accepted records failed: {failed[0]!r}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("api_key", sorted(WIRE_APIS), ids=lambda k: WIRE_APIS[k])
def test_unreadable_answers_on_the_wire_drop_the_connection_and_retry(
    tansu: RelayedTansu, api_key: int
) -> None:
    out = run_wire_mutation(tansu, api_key)
    assert out["dead"] is None, f"the producer died: {out['dead']}"
    assert out["mutated"] == 2, "the relay damaged fewer answers than asked"
    assert out["requests_on_damaged_connections"] == 0, (
        "a connection that gave an unreadable answer was reused"
    )
    assert len(out["stalls"]) == 2, "the request was not sent again after an unreadable answer"
    failed = [e for e in out["errors"] if e is not None]
    assert not failed, f"{len(failed)} records failed: {failed[0]!r}"
    assert out["seconds"] < WIRE_DELIVERY_TIMEOUT_MS / 1000 / 6, f"took {out['seconds']:.1f} s"
    copies = collections.Counter(int(r.value) for r in out["records"])
    assert sorted(copies) == list(range(WIRE_RECORDS)), "records missing from the log"
    assert max(copies.values()) == 1, "records written twice"
    per_key: dict[bytes | None, list[int]] = collections.defaultdict(list)
    for r in sorted(out["records"], key=lambda r: (r.partition, r.offset)):
        per_key[r.key].append(int(r.value))
    assert all(seq == sorted(seq) for seq in per_key.values()), "a key's records were reordered"
    if api_key == 0:
        # An unreadable Produce answer is retried at once, not after request.timeout.ms.
        assert max(out["stalls"]) < 1.0, f"resent after {max(out['stalls']):.2f} s"
