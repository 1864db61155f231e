"""``kprod top``: the live view of a producer running in another process, through its ``kprod.live.port``.

A producer opens its endpoint only when ``kprod.live.port`` is set (``kprod perf -X
kprod.live.port=9999``, or ``Producer({..., "kprod.live.port": 9999})``; 0 takes a free port, logged
at INFO and given by ``Producer.live_address``). ``kprod top --port 9999`` connects to it, asks for
the producer's metrics every ``--interval-s`` and draws them with :class:`kprod.cli.live.LiveView`:
a Rich panel of the nine stages on a terminal, one plain line per interval otherwise.

When the producer goes away (it closed, or its process ended or restarts), ``kprod top`` shows
``disconnected, retrying`` and connects again, waiting 0.1 s, then twice as long each time up to
:data:`MAX_RECONNECT_BACKOFF_S` between tries, and draws the new producer on that port (its rates
start afresh); ``--exit-on-disconnect`` makes it end instead.

Exit status: 0 after ``--iterations`` redraws, on Ctrl-C, or with ``--exit-on-disconnect`` when the
producer closes (``kprod top`` says so on stderr); 1 when nothing listens there at the start, the
endpoint refuses (too many clients) or does not answer within ``--timeout-s``; 2 for bad arguments.

Everything read from the endpoint is untrusted: :func:`parse_snapshot` takes any line and either
returns a snapshot dict or raises :class:`EndpointError`, and the view draws any dict.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from kprod.cli.live import SourceUnavailableError

__all__ = [
    "MAX_RECONNECT_BACKOFF_S",
    "EndpointError",
    "ProducerGone",
    "ReconnectingMetrics",
    "RemoteMetrics",
    "add_arguments",
    "parse_snapshot",
    "run",
]

FIRST_RECONNECT_BACKOFF_S = 0.1
MAX_RECONNECT_BACKOFF_S = 2.0
"""The longest wait between two attempts to reconnect."""

MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
"""The longest snapshot line read (a producer with very many topics and brokers writes long ones)."""


class EndpointError(ConnectionError):
    """The endpoint refused us, or answered something that is not a snapshot."""


class ProducerGone(EndpointError):
    """The endpoint closed the connection: the producer closed (or its process ended)."""


def _restore_nan(value: Any, depth: int = 0) -> Any:
    """JSON ``null`` back to NaN (the endpoint writes NaN and infinities as null): 'no value yet'.

    Containers nested deeper than a real snapshot's few levels are dropped (None), not walked."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _restore_nan(v, depth + 1) for k, v in value.items()} if depth < 16 else None
    if isinstance(value, list):
        return [_restore_nan(v, depth + 1) for v in value] if depth < 16 else None
    return value


def parse_snapshot(line: bytes) -> dict[str, Any]:
    """One line from the endpoint as a snapshot dict with a ``metrics`` dict.

    Raises :class:`EndpointError` for anything else: not UTF-8, not JSON, nested too deep for the
    parser, a number too long to read, not an object, an ``{"error": ...}`` answer, no ``metrics``
    object. Never anything else, whatever the line (``tests/test_protocol_fuzz.py``)."""
    shown = line[:60]
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise EndpointError(f"not a kprod live endpoint: it answered {shown!r}") from None
    if not isinstance(doc, dict):
        raise EndpointError(f"not a kprod live endpoint: it answered {shown!r}")
    if "error" in doc:
        raise EndpointError(f"the endpoint refused: {str(doc['error'])[:200]!r}")
    if not isinstance(doc.get("metrics"), dict):
        raise EndpointError(f"not a kprod live endpoint: it answered {shown!r}")
    return doc


class RemoteMetrics:
    """A ``metrics()`` callable that asks a producer's ``kprod.live.port`` endpoint.

    Connecting reads the snapshot the endpoint sends first (:attr:`first`); each call sends
    ``metrics`` and returns the next snapshot's ``metrics``. Raises :class:`EndpointError` (an
    :class:`OSError`) when the endpoint closes or answers badly, and :class:`OSError` when it
    cannot be reached or does not answer within ``timeout_s``.
    """

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._file: BinaryIO = self._sock.makefile("rb")
        self.first = self._read()

    def _read(self) -> dict[str, Any]:
        line = self._file.readline(MAX_SNAPSHOT_BYTES)
        if not line:
            raise ProducerGone("the producer closed the connection")
        return parse_snapshot(line)

    def snapshot(self) -> dict[str, Any]:
        """The next whole snapshot (``kprod.live``, ``client.id``, ``pid``, ``timestamp``, ``metrics``)."""
        try:
            self._sock.sendall(b"metrics\n")
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ProducerGone(f"the producer closed the connection ({exc})") from None
        try:
            return self._read()
        except ConnectionResetError as exc:
            raise ProducerGone(f"the producer closed the connection ({exc})") from None

    def __call__(self) -> dict[str, Any]:
        metrics: dict[str, Any] = _restore_nan(self.snapshot()["metrics"])
        return metrics

    def close(self) -> None:
        """Close the connection; a read another thread waits in returns at once (it sees the end)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # before closing the file: a read holds its lock
        self._file.close()
        self._sock.close()


def describe(snapshot: dict[str, Any]) -> str:
    """``producer <client.id> (pid <pid>)`` from a snapshot, printable whatever the endpoint sent."""

    def clean(value: object) -> str:
        return "".join(ch if ch.isprintable() else "?" for ch in str(value)[:100])

    return f"producer {clean(snapshot.get('client.id'))} (pid {clean(snapshot.get('pid'))})"


class ReconnectingMetrics:
    """A ``metrics()`` callable over :class:`RemoteMetrics` that survives the producer going away.

    When the connection is lost (the producer closed, or its process ended) a call raises
    :class:`~kprod.cli.live.SourceUnavailableError` (``disconnected, retrying``) instead, and later
    calls try to connect again, no sooner than a backoff that starts at
    :data:`FIRST_RECONNECT_BACKOFF_S` and doubles up to :data:`MAX_RECONNECT_BACKOFF_S`; a call
    before that raises at once without trying. Once connected again the call returns the new
    producer's metrics. ``say`` is told of each loss and each reconnection (one line each).

    ``connect`` makes a connected :class:`RemoteMetrics`; ``clock`` gives monotonic seconds. Both are
    arguments so that tests can step the backoff by hand.
    """

    def __init__(
        self,
        first: RemoteMetrics,
        connect: Callable[[], RemoteMetrics],
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._remote: RemoteMetrics | None = first
        self._connect = connect
        self._say = say
        self._clock = clock
        self._backoff_s = FIRST_RECONNECT_BACKOFF_S
        self._next_try = 0.0
        self._why = ""
        self.attempts = 0
        """Reconnection attempts made since the connection was last lost."""
        self.reconnections = 0
        """How many times a lost connection was made again."""

    def __call__(self) -> dict[str, Any]:
        if self._remote is None:
            return self._reconnect()
        try:
            return self._remote()
        except OSError as exc:  # ProducerGone, EndpointError, a reset or a timeout
            self._lost(exc)
            raise SourceUnavailableError(f"disconnected, retrying ({self._why})") from None

    def _lost(self, exc: OSError) -> None:
        if self._remote is not None:
            self._remote.close()
        self._remote = None
        self._why = str(exc)[:120] or type(exc).__name__
        self._backoff_s = FIRST_RECONNECT_BACKOFF_S
        self._next_try = self._clock() + self._backoff_s
        self.attempts = 0
        self._say(f"the producer went away ({self._why}); retrying")

    def _reconnect(self) -> dict[str, Any]:
        now = self._clock()
        if now < self._next_try:
            raise SourceUnavailableError(f"disconnected, retrying ({self._why})")
        self.attempts += 1
        try:
            remote = self._connect()
        except OSError as exc:
            self._why = str(exc)[:120] or type(exc).__name__
            self._backoff_s = min(MAX_RECONNECT_BACKOFF_S, self._backoff_s * 2)
            self._next_try = self._clock() + self._backoff_s
            raise SourceUnavailableError(
                f"disconnected, retrying (attempt {self.attempts}: {self._why})"
            ) from None
        self._remote = remote
        self.reconnections += 1
        self._say(f"reconnected to {describe(remote.first)}")
        metrics: dict[str, Any] = _restore_nan(remote.first["metrics"])
        return metrics

    @property
    def backoff_s(self) -> float:
        """The wait before the next attempt, once the connection is lost."""
        return self._backoff_s

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Show the nine stages of a producer running in another process, as kprod perf --live does for "
        "its own: a panel on a terminal (with Rich), one line per interval otherwise. The producer must "
        "have been started with kprod.live.port set (e.g. kprod perf -X kprod.live.port=9999)."
    )
    parser.add_argument("--port", type=int, required=True, help="the producer's kprod.live.port")
    parser.add_argument(
        "--host", default="127.0.0.1", help="the producer's kprod.live.host (default 127.0.0.1)"
    )
    parser.add_argument(
        "--interval-s", type=float, default=1.0, metavar="SECONDS", help="seconds between redraws (default 1)"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        metavar="N",
        help="stop after N redraws (default: run until Ctrl-C or until the producer closes)",
    )
    parser.add_argument(
        "--exit-on-disconnect", action="store_true",
        help="end when the producer goes away (default: show 'disconnected, retrying' and reconnect, "
        f"waiting at most {MAX_RECONNECT_BACKOFF_S:g} s between tries)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout-s", type=float, default=10.0, metavar="SECONDS",
        help="give up when the producer does not answer within this many seconds (default 10)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port <= 65535:
        print(f"kprod top: --port must be in [1, 65535], got {args.port}", file=sys.stderr)
        return 2
    if not 0.05 <= args.interval_s <= 60:
        print(f"kprod top: --interval-s must be in [0.05, 60], got {args.interval_s}", file=sys.stderr)
        return 2
    if args.iterations is not None and args.iterations < 1:
        print(f"kprod top: --iterations must be >= 1, got {args.iterations}", file=sys.stderr)
        return 2
    if not args.timeout_s > 0:
        print(f"kprod top: --timeout-s must be > 0, got {args.timeout_s}", file=sys.stderr)
        return 2
    where = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
    timeout_s = max(args.timeout_s, args.interval_s)
    try:
        first = RemoteMetrics(args.host, args.port, timeout_s=timeout_s)
    except ConnectionRefusedError:
        print(
            f"kprod top: nothing listens on {where}: is the producer running, with kprod.live.port="
            f"{args.port}" + ("" if args.host == "127.0.0.1" else f" and kprod.live.host={args.host}") + "?",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"kprod top: cannot read a producer's metrics at {where}: {exc}", file=sys.stderr)
        return 1

    from kprod.cli.live import LiveView

    def say(text: str) -> None:
        print(f"kprod top: {where}: {text}", file=sys.stderr, flush=True)

    remote: RemoteMetrics | ReconnectingMetrics = first
    if not args.exit_on_disconnect:
        remote = ReconnectingMetrics(
            first, lambda: RemoteMetrics(args.host, args.port, timeout_s=timeout_s), say
        )
    print(
        f"kprod top: {describe(first.first)} at {where}; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    view = LiveView(remote, interval_s=args.interval_s, stream=sys.stdout, iterations=args.iterations)
    try:
        view.start()
        while view.is_alive():
            view.join(0.2)
    except KeyboardInterrupt:
        # Ctrl-C: stop at once, even while the drawing thread waits for an answer (up to --timeout-s).
        view.request_stop()
        remote.close()
        view.stop()
        return 0
    finally:
        remote.close()
    if isinstance(view.error, ProducerGone):
        print(f"kprod top: the producer at {where} closed; bye", file=sys.stderr)
        return 0
    if view.error is not None:
        print(f"kprod top: lost the producer at {where}: {view.error}", file=sys.stderr)
        return 1
    return 0
