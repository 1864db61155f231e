#!/usr/bin/env python3
"""A million (or ``--cases``) mutated response frames through every decoder kprod uses.

    python bench/fuzz.py                 # 1,000,000 cases over every frame of tests/fuzz_frames.py
    python bench/fuzz.py --cases 50000

Each case must decode or raise ProtocolError within 0.5 s; anything else (another exception, a
slow case) is printed with its seed and the run fails. A crash of the process is a failure too
(the run never prints its summary). Seeded: ``--seed`` reproduces a run.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from fuzz_frames import FRAMES, mutate  # noqa: E402
from kprod.errors import ProtocolError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frames = {name: build() for name, build in FRAMES.items()}
    names = sorted(frames)
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    failures = 0
    slowest = 0.0
    started = time.perf_counter()
    for case in range(args.cases):
        name = names[case % len(names)]
        frame, decode = frames[name]
        mutated = mutate(frame, rng)
        t = time.perf_counter()
        try:
            decode(mutated)
            outcomes["decoded"] += 1
        except ProtocolError:
            outcomes["refused"] += 1
        except Exception as exc:
            failures += 1
            print(f"case {case} ({name}, seed {args.seed}): {exc!r} for {mutated.hex()[:200]}", flush=True)
        elapsed = time.perf_counter() - t
        slowest = max(slowest, elapsed)
        if elapsed > 0.5:
            failures += 1
            print(f"case {case} ({name}): {elapsed:.2f} s", flush=True)
    total = time.perf_counter() - started
    print(
        f"{args.cases:,} cases over {len(names)} frames in {total:.0f} s: {outcomes['decoded']:,} decoded, "
        f"{outcomes['refused']:,} refused with ProtocolError, {failures} failures, slowest {slowest * 1000:.1f} ms"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
