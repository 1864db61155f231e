"""``kprod top``: the live view of a producer running in another process, through its ``kprod.live.port``.

A producer opens its endpoint only when ``kprod.live.port`` is set (``kprod perf -X
kprod.live.port=9999``, or ``Producer({..., "kprod.live.port": 9999})``; 0 takes a free port, logged
at INFO and given by ``Producer.live_address``). ``kprod top --port 9999`` connects to it, asks for
the producer's metrics every ``--interval-s`` and draws them with :class:`kprod.cli.live.LiveView`:
a Rich panel of the nine stages on a terminal, one plain line per interval otherwise.

Exit status: 0 after ``--iterations`` redraws, on Ctrl-C, or when the producer closes (it was
seen, and it went away: ``kprod top`` says so on stderr); 1 when nothing listens there, the endpoint
refuses (too many clients) or does not answer within ``--timeout-s``; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
from typing import Any, BinaryIO

__all__ = ["EndpointError", "ProducerGone", "RemoteMetrics", "add_arguments", "run"]

MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
"""The longest snapshot line read (a producer with very many topics and brokers writes long ones)."""


class EndpointError(ConnectionError):
    """The endpoint refused us, or answered something that is not a snapshot."""


class ProducerGone(EndpointError):
    """The endpoint closed the connection: the producer closed (or its process ended)."""


def _restore_nan(value: Any) -> Any:
    """JSON ``null`` back to NaN (the endpoint writes NaN and infinities as null): 'no value yet'."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _restore_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_nan(v) for v in value]
    return value


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
        try:
            doc = json.loads(line)
        except ValueError:
            raise EndpointError(f"not a kprod live endpoint: it answered {line[:60]!r}") from None
        if not isinstance(doc, dict):
            raise EndpointError(f"not a kprod live endpoint: it answered {line[:60]!r}")
        if "error" in doc:
            raise EndpointError(f"the endpoint refused: {doc['error']}")
        if not isinstance(doc.get("metrics"), dict):
            raise EndpointError(f"not a kprod live endpoint: it answered {line[:60]!r}")
        return doc

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
        self._file.close()
        self._sock.close()


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
    try:
        remote = RemoteMetrics(args.host, args.port, timeout_s=max(args.timeout_s, args.interval_s))
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

    first = remote.first
    print(
        f"kprod top: producer {first.get('client.id')!s} (pid {first.get('pid')}) at {where}; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    view = LiveView(remote, interval_s=args.interval_s, stream=sys.stdout, iterations=args.iterations)
    try:
        view.start()
        while view.is_alive():
            view.join(0.2)
    except KeyboardInterrupt:
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
