"""The main job, ``kprod demo``, and ``kprod --version``, run as a user runs them (a subprocess).

* Run twice against the same topic, the second run verifies only its own records (from the
  offsets where it began) and finds no duplicates.
* ``--acks 0`` says what acks=0 cannot tell, checks what it can, and does not wait for records
  it cannot know about.
* Without confluent-kafka the read-back is skipped and said to be, not reported as a failure.
* Bad options and Ctrl-C end with one line on stderr, no traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

import kprod

MakeTopic = Callable[..., str]


def _demo(
    *args: str, timeout_s: float = 90.0, block_confluent: bool = False
) -> subprocess.CompletedProcess[str]:
    prelude = "import sys; sys.modules['confluent_kafka'] = None; " if block_confluent else "import sys; "
    code = prelude + "from kprod.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "demo", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_two_runs_on_one_topic_each_verify_their_own_records(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    for run in range(2):
        result = _demo(
            "--bootstrap-servers", broker.bootstrap_servers, "--topic", topic, "--num-records", "3000"
        )
        assert result.returncode == 0, f"run {run}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        assert "verified byte-exact 3,000" in result.stdout, result.stdout
        assert "read twice" not in result.stdout


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_acks_0_says_what_it_cannot_know_and_does_not_wait_for_it(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    started = time.monotonic()
    result = _demo(
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--topic",
        topic,
        "--num-records",
        "5000",
        "--acks",
        "0",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "acks=0: the broker confirms nothing" in result.stdout, result.stdout
    assert "written (acks=0)" in result.stdout and "result              OK" in result.stdout
    assert elapsed < 30, f"kprod demo --acks 0 took {elapsed:.1f} s"


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_without_confluent_kafka_the_read_back_is_skipped_not_failed() -> None:
    result = _demo("--num-records", "2000", block_confluent=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "verification        skipped: confluent-kafka is not installed" in result.stdout, result.stdout
    assert "result              OK" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--acks", "2"], "invalid producer settings: Invalid value '2' for setting 'acks'"),
        (["--compression", "brotli"], "setting 'compression.type'"),
        (["--producer-props", "linger.ms"], "--producer-props takes NAME=VALUE items"),
        (["--producer-props", "no.such.setting=1"], "Unknown producer setting 'no.such.setting'"),
        (["--num-records", "0"], "--num-records must be > 0"),
        (["--record-size", "5"], "--record-size must be >= 13"),
    ],
)
def test_bad_options_end_with_one_line_not_a_traceback(args: list[str], message: str) -> None:
    result = _demo(*args, timeout_s=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kprod demo: ") and message in lines[0], result.stderr


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_ctrl_c_ends_with_one_line_not_a_traceback() -> None:
    # As from a terminal: a shell without job control starts background jobs with SIGINT ignored,
    # and a test runner started that way would pass that on.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from kprod.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    demo = subprocess.Popen(
        [sys.executable, "-u", "-c", code, "demo", "--num-records", "50000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("  ") and "sent" in line:  # a progress line: records are flowing
                break
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    assert demo.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "kprod demo: interrupted", err


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kprod", "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kprod {kprod.__version__}"
