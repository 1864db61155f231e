"""``kprod produce``, run as a user runs it (a subprocess reading stdin), read back by confluent-kafka."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from helpers import consume_all
from kprod.cli.produce import parse_line

MakeTopic = Callable[..., str]


def _produce(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kprod", "produce", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_the_java_tools_line_format() -> None:
    props = {
        "parse.key": "true", "key.separator": ":", "parse.headers": "true", "headers.delimiter": "\t",
        "headers.separator": ",", "headers.key.separator": "=", "null.marker": "NULL",
    }  # fmt: skip
    assert parse_line("a=1,b=NULL\tk:v:w", props, []) == (b"k", b"v:w", [("a", b"1"), ("b", None)])
    assert parse_line("NULL\tNULL:x", props, [("h", b"0")]) == (None, b"x", [("h", b"0")])
    with pytest.raises(ValueError, match="key separator"):
        parse_line("\tno-separator", props, [])


@pytest.mark.timeout(120)
def test_keys_headers_and_tombstones_as_the_java_tool_reads_them(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    lines = "src=web,trace=1\tk1:hello\nsrc=cli\tk2:NULL\n\tk3:world\n"
    result = _produce(
        lines,
        "--topic", topic, "--bootstrap-server", broker.bootstrap_servers,
        "--property", "parse.key=true", "--property", "key.separator=:",
        "--property", "parse.headers=true", "--property", "headers.key.separator==",
        "--property", "null.marker=NULL", "--report", "-H", "via=kprod",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"{topic} [") == 3 and "at offset" in result.stdout
    records = {r.key: r for r in consume_all(broker.bootstrap_servers, topic, 3, 3, timeout_s=60)}
    assert records[b"k1"].value == b"hello"
    assert records[b"k2"].value is None, "the null marker makes a tombstone"
    assert records[b"k3"].value == b"world"
    headers = {k: dict(r.headers or []) for k, r in records.items()}
    assert headers[b"k1"] == {"via": b"kprod", "src": b"web", "trace": b"1"}
    assert headers[b"k3"] == {"via": b"kprod"}


@pytest.mark.timeout(120)
def test_jsonl_and_kcat_key_separator(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    docs = [
        {"key": "a", "value": {"n": 1}, "partition": 2, "headers": {"h": "1"}},
        # A recent timestamp: Kafka's retention (7 days) may delete a record stamped years ago at once.
        {"key": None, "value": "plain", "partition": 0, "timestamp": int(time.time() * 1000) - 3_600_000},
    ]
    result = _produce(
        "\n".join(json.dumps(d) for d in docs) + "\n",
        "--topic", topic, "--bootstrap-server", broker.bootstrap_servers, "--format", "jsonl",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    kcat = _produce("x;1\ny;2\n", "--topic", topic, "--bootstrap-server", broker.bootstrap_servers, "-K", ";")
    assert kcat.returncode == 0, kcat.stderr
    read = consume_all(broker.bootstrap_servers, topic, 3, 4, timeout_s=60)
    by_value = {r.value: r for r in read}
    assert by_value[b'{"n":1}'].partition == 2 and by_value[b'{"n":1}'].key == b"a"
    assert by_value[b"plain"].partition == 0 and by_value[b"plain"].key is None
    assert by_value[b"1"].key == b"x" and by_value[b"2"].key == b"y"


@pytest.mark.timeout(60)
def test_failures_set_the_exit_status_and_bad_options_say_so(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(1)
    failed = _produce(
        "a\nb\n", "--topic", topic, "--bootstrap-server", broker.bootstrap_servers, "--partition", "7"
    )
    assert failed.returncode == 1 and "partition 7 does not exist" in failed.stderr, failed.stderr
    bad = _produce(
        "a\n", "--topic", topic, "--bootstrap-server", broker.bootstrap_servers, "-X", "linger.ms=-5"
    )
    assert bad.returncode == 2 and "invalid producer settings" in bad.stderr and "Traceback" not in bad.stderr
    unparsable = _produce("no-key-here\n", "--topic", topic, "-b", broker.bootstrap_servers, "-K", ":")
    assert unparsable.returncode == 1 and "record 1" in unparsable.stderr
