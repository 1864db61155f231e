"""A forked child inherits a producer without its I/O thread: every call there must say so at once,
and the parent's producer must go on untouched."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from helpers import consume_all

MakeTopic = Callable[..., str]

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from kprod import Producer, ProducerClosedError
    bootstrap, topic = sys.argv[1], sys.argv[2]
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.send(topic, b"parent-before").result(timeout=30)
    pid = os.fork()
    if pid == 0:
        problems = []
        started = time.monotonic()
        for name, call in (
            ("send", lambda: producer.send(topic, b"child")),
            ("flush", lambda: producer.flush(timeout=5)),
        ):
            try:
                call()
                problems.append(name + " did not raise")
            except ProducerClosedError as exc:
                if "create a new producer in the child" not in str(exc).lower():
                    problems.append(name + ": " + str(exc))
        producer.close(timeout=3)
        if time.monotonic() - started > 2:
            problems.append("took %.1f s" % (time.monotonic() - started))
        print("CHILD", problems, flush=True)
        os._exit(0 if not problems else 3)
    _, status = os.waitpid(pid, 0)
    producer.send(topic, b"parent-after").result(timeout=30)
    producer.close(timeout=10)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.timeout(90)
def test_a_forked_child_gets_a_clear_error_and_the_parent_goes_on(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(1)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, broker.bootstrap_servers, topic],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "CHILD []" in result.stdout
    values = [r.value for r in consume_all(broker.bootstrap_servers, topic, 1, 2, timeout_s=30, linger_s=0.5)]
    assert values == [b"parent-before", b"parent-after"], "the child wrote nothing and the parent went on"
