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
