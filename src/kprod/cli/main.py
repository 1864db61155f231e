"""Entry point of the ``kprod`` command: argument parsing and subcommand dispatch.

``kprod broker`` lives here. Other subcommands live in their own modules under ``kprod.cli``
(``demo`` in ``kprod.cli.demo``, ``perf`` in ``kprod.cli.perf``), each exposing
``add_arguments(parser)`` and ``run(args) -> int | None``. Such a module is imported only when its
subcommand is the one being run, so ``kprod broker`` never pays for the producer's imports; a module
that does not exist yet simply leaves its subcommand out.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Protocol, cast

_PLUGGED_COMMANDS: dict[str, str] = {
    "demo": "produce records to a broker (embedded by default), read them back and print a summary",
    "perf": "measure producer throughput and latency",
}


class _CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int | None: ...


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the parser; ``argv`` decides which plugged-in subcommand module gets imported."""
    parser = argparse.ArgumentParser(prog="kprod", description="kprod: a Kafka producer for Python.")
    sub = parser.add_subparsers(dest="command", required=True)

    broker = sub.add_parser(
        "broker",
        help="run the embedded Tansu broker until Ctrl-C or SIGTERM",
        description="Start the embedded Tansu broker (in-memory storage) on 127.0.0.1, create topics, "
        "print 'bootstrap.servers=127.0.0.1:PORT' and run until Ctrl-C or SIGTERM.",
    )
    broker.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    broker.add_argument(
        "--topic", action="extend", nargs="+", default=[], metavar="NAME", help="topic(s) to create"
    )
    broker.add_argument(
        "--partitions", type=int, default=3, metavar="N", help="partitions per topic (default: 3)"
    )
    broker.set_defaults(func=_run_broker)

    # The top-level parser has no options that take a value, so the first positional is the command.
    selected = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, help_text in _PLUGGED_COMMANDS.items():
        module_name = f"kprod.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = cast(_CommandModule, importlib.import_module(module_name))
            module.add_arguments(command)
            command.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kprod`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    status = args.func(args)
    return 0 if status is None else int(status)


def _run_broker(args: argparse.Namespace) -> int:
    from kprod.broker import EmbeddedBroker, EmbeddedBrokerError

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port=args.port)
    try:
        broker.start()
        for topic in args.topic:
            broker.create_topic(topic, partitions=args.partitions)
        print(f"bootstrap.servers={broker.bootstrap_servers}", flush=True)
        print(f"# tansu pid {broker.pid}, log {broker.log_path}; Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop_requested.wait(0.5):
            if not broker.running:
                print("kprod broker: tansu exited unexpectedly; see " + str(broker.log_path), file=sys.stderr)
                return 1
        return 0
    except EmbeddedBrokerError as exc:
        print(f"kprod broker: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())
