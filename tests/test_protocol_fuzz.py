"""Every response decoder fed damaged frames: nothing but ProtocolError may come out, and nothing
may take the process down.

Valid frames are built with kio's writer (the broker's side of the wire) for each API kprod reads
through kio, then mutated with a seeded generator: bit flips, "interesting" integers written over
length fields, truncation, extension, inserted bytes. Each mutated frame goes through the same
function the producer uses (``decode_response`` then the parser), and must either decode or raise
:class:`ProtocolError`, within 0.5 s. A quick slice runs here; ``bench/fuzz.py`` runs a million.
The native decoder's real danger (an array length of 2**32-1 makes it abort the process) is shown
in a subprocess, then shown to be refused by the guard.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fuzz_frames import FRAMES, mutate
from kprod.errors import ProtocolError
from kprod.protocol.guard import check_frame
from kprod.protocol.messages import decode_response, parse_metadata

CASES_PER_FRAME = 1_000


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_mutated_frames_decode_or_raise_protocol_error(name: str) -> None:
    frame, decode = FRAMES[name]()
    decode(frame)  # the valid frame decodes
    rng = random.Random(f"kprod-fuzz-{name}")
    slowest = 0.0
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(CASES_PER_FRAME):
        mutated = mutate(frame, rng)
        started = time.perf_counter()
        try:
            decode(mutated)
            outcomes["decoded"] += 1
        except ProtocolError:
            outcomes["refused"] += 1
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.5, f"a mutated {name} frame took {slowest:.2f} s"
    assert outcomes["refused"] > 0, (
        f"no mutation of {name} was refused: the fuzzer is not biting ({outcomes})"
    )


def test_a_huge_array_length_aborts_kio_but_not_kprod() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[2])
        from fuzz_frames import huge_array_metadata
        frame, offset, cls = huge_array_metadata()
        if sys.argv[1] == "kio":
            from kio.serial import entity_reader
            entity_reader(cls)(frame, offset)   # the native decoder alone
        else:
            from kprod.errors import ProtocolError
            from kprod.protocol.messages import decode_response
            try:
                decode_response(cls, frame, offset)
            except ProtocolError as exc:
                print("refused:", exc)
        """
    )
    tests_dir = str(Path(__file__).parent)
    raw = subprocess.run(
        [sys.executable, "-c", script, "kio", tests_dir], capture_output=True, timeout=120, check=False
    )
    assert raw.returncode != 0, "kio decoded a 2**32-1 array length without failing: the guard may be moot"
    guarded = subprocess.run(
        [sys.executable, "-c", script, "kprod", tests_dir],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert "refused: malformed MetadataResponse" in guarded.stdout and "cannot fit" in guarded.stdout


def test_unknown_tagged_fields_are_skipped() -> None:
    from fuzz_frames import metadata_frame, with_unknown_tag

    frame, offset, cls = metadata_frame(12)
    tagged = with_unknown_tag(frame)
    assert check_frame(cls, tagged, offset) != tagged, "the unknown tag must be cut out"
    assert parse_metadata(decode_response(cls, tagged, offset)) == parse_metadata(
        decode_response(cls, frame, offset)
    )


def test_a_null_array_is_refused_or_empty_never_a_type_error() -> None:
    from fuzz_frames import metadata_frame

    frame, offset, cls = metadata_frame(12)
    # The brokers array comes right after throttle_time (4 bytes): 0 means null in a compact array.
    nulled = frame[: offset + 4] + b"\x00" + frame[offset + 5 :]
    try:
        snapshot = parse_metadata(decode_response(cls, nulled, offset))
    except ProtocolError:
        return
    assert snapshot.brokers == {}


# ------------------------------------------------------------------ kprod top's input, the live endpoint's
# ``kprod top`` reads JSON lines from another process's ``kprod.live.port``: untrusted socket input.
# Each hostile line goes through what top does with a line (``parse_snapshot``, then the view's model
# and both renderings); the only error allowed is EndpointError from the parser, and no rendered
# line may pass 80 columns.

LIVE_CASES = 3_000
_HOSTILE_VALUES: list[object] = [
    10**400, -(10**400), 1e308, -1e308, 2**63, -1, 0, None, True, False, "", "[/bold]\x1b[2J\x07",
    "[red]x[/red]", "\u202e" * 50, "x" * 10_000, [], {}, [1, [2, [3]]], {"a": {"b": {"c": {}}}},
    {"[/]": 1, "\x1b]0;owned\x07": "2"}, {"1": "not a number", "2": None, "3": {"request-total": "x"}},
    0.5, float("1e-320"),
]  # fmt: skip


def _live_snapshot_line() -> bytes:
    """A snapshot line as a real producer's endpoint writes it (its metrics, made JSON-safe)."""
    import json

    from kprod import Producer
    from kprod._io.live_endpoint import json_safe

    with Producer({"bootstrap.servers": "127.0.0.1:9", "client.id": "fuzz"}) as producer:
        metrics = producer.metrics()
    doc = {"kprod.live": 1, "client.id": "fuzz", "pid": 1, "timestamp": 0.0, "metrics": json_safe(metrics)}
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _hostile_line(base: bytes, keys: list[str], rng: random.Random) -> bytes:
    import json

    kind = rng.randrange(4)
    if kind == 0:
        return mutate(base, rng)  # bytes flipped, cut, extended: mostly not JSON any more
    if kind == 1:  # well-formed JSON, hostile values where the view expects numbers and maps
        doc = json.loads(base)
        for key in rng.sample(keys, rng.randint(1, 12)):
            doc["metrics"][key] = rng.choice(_HOSTILE_VALUES)
        if rng.random() < 0.2:
            for key in rng.sample(keys, len(keys) // 2):
                del doc["metrics"][key]  # fields missing
        return json.dumps(doc).encode()
    if kind == 2:  # nested beyond any parser's patience, or numbers too long to read
        depth = rng.choice((10, 1_000, 100_000))
        inner = rng.choice([b"[" * depth + b"]" * depth, b"1" * rng.choice((10, 5_000, 50_000)), b"null"])
        return b'{"metrics": {"record-send-total": ' + inner + b"}}"
    return rng.choice(
        [b"", b"\xff\xfe\xfd", b"\xc3\x28" * 100, b"null", b"[]", b"1e999", b'"metrics"', b'{"metrics": 1}',
         b'{"error": "\x1b[2J"}', b'{"metrics": {}}', base[: rng.randrange(len(base))], base.replace(b"{", b"[")]
    )  # fmt: skip


def test_hostile_live_lines_never_crash_top_s_model_or_renderers() -> None:
    import io

    from rich.console import Console

    from kprod.cli.live import panel, plain_line, render_lines, stage_rows
    from kprod.cli.top import EndpointError, _restore_nan, parse_snapshot

    base = _live_snapshot_line()
    good = _restore_nan(parse_snapshot(base)["metrics"])
    keys = sorted(good)
    assert len(keys) > 30 and len(render_lines(good, good, 1.0, 1.0)) == 10
    rng = random.Random("kprod-fuzz-live")
    outcomes = {"refused": 0, "drawn": 0}
    slowest = 0.0
    for _ in range(LIVE_CASES):
        line = _hostile_line(base, keys, rng)
        started = time.perf_counter()
        try:
            metrics = _restore_nan(parse_snapshot(line)["metrics"])
        except EndpointError:
            outcomes["refused"] += 1
            continue
        before = rng.choice([None, good, metrics])
        seconds = rng.choice([1.0, 0.0, -1.0, 1e-9])
        rows = stage_rows(metrics, before, seconds)
        assert len(rows) == 9 and all(isinstance(text, str) and "\x1b" not in text for _, text in rows)
        assert all(len(text) <= 80 for text in render_lines(metrics, before, seconds, 1.0))
        assert "\x1b" not in plain_line(metrics, before, seconds, 1.0)
        screen = io.StringIO()
        Console(file=screen, width=80, force_terminal=True).print(panel(metrics, before, seconds, 1.0))
        drawn = screen.getvalue()  # no escape sequence from the snapshot reaches the terminal (Rich's own do)
        assert "\x1b]0;" not in drawn and "\x07" not in drawn and "\x1b[2J" not in drawn
        outcomes["drawn"] += 1
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.5, f"a hostile snapshot took {slowest:.2f} s to draw"
    assert outcomes["refused"] > LIVE_CASES // 10 and outcomes["drawn"] > LIVE_CASES // 10, outcomes


@pytest.mark.timeout(60)
def test_hostile_request_lines_to_the_live_endpoint_get_an_error_or_a_close() -> None:
    """The producer's side: its endpoint parses request lines (only ``metrics`` is one). Random and
    hostile lines from several clients get ``{"error": ...}``, a snapshot, or a close, and the
    endpoint keeps answering a well-behaved client."""
    import json
    import socket
    import threading

    from kprod import Producer
    from kprod._io.live_endpoint import MAX_CLIENTS, MAX_LINE_BYTES

    lines_per_client = 40
    with Producer({"bootstrap.servers": "127.0.0.1:9", "kprod.live.port": 0}) as producer:
        address = producer.live_address
        assert address is not None
        answers: dict[str, int] = {"error": 0, "snapshot": 0, "closed": 0}
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(f"kprod-fuzz-endpoint-{seed}")
            sock = socket.create_connection(address, timeout=10)
            reader = sock.makefile("rb")
            try:
                assert b"metrics" in reader.readline()  # the greeting snapshot
                for _ in range(lines_per_client):
                    line = rng.choice([
                        rng.randbytes(rng.randint(1, 200)).replace(b"\n", b"") or b"x",
                        b"metrics\x00", b"METRICS", b" metrics \r", b"\xff\xfe", b"metrics" * 10,
                        b"x" * (MAX_LINE_BYTES + rng.randint(1, 100)), "métriques".encode(), b"{}", b"\t",
                    ])  # fmt: skip
                    if not line.strip():
                        continue  # blank lines get no answer, by design
                    sock.sendall(line + b"\n")
                    answer = reader.readline()
                    kind = "closed" if not answer else "error" if b'"error"' in answer else "snapshot"
                    if answer:
                        json.loads(answer)  # whatever it answers is JSON
                    with lock:
                        answers[kind] += 1
                    if kind == "closed":
                        return
            finally:
                reader.close()
                sock.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(MAX_CLIENTS - 1)]
        for t in threads:
            t.start()
        with socket.create_connection(address, timeout=10) as steady:
            reader = steady.makefile("rb")
            reader.readline()
            for _ in range(20):
                steady.sendall(b"metrics\n")
                assert "metrics" in json.loads(reader.readline())
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert answers["error"] > 0 and answers["closed"] > 0, answers
        assert producer.metrics()["record-send-total"] == 0  # the producer itself is untouched
