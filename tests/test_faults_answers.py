"""Answers nobody planned for (issue 11): none may crash, stall or silently kill the producer.

Each test here failed before its fix. They run against the embedded Tansu broker, some behind
``tests/relay.py`` so that answers can be damaged on the wire.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from kprod import Producer
from kprod.broker import EmbeddedBroker
from kprod.errors import KprodError

pytestmark = pytest.mark.broker


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
