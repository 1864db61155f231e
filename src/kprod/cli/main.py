"""Entry point of the ``kprod`` command: argument parsing and subcommand dispatch.

``kprod broker`` lives here. Other subcommands live in their own modules under ``kprod.cli``
(``demo`` in ``kprod.cli.demo``, ``perf`` in ``kprod.cli.perf``, ``top`` in ``kprod.cli.top``, ``tune`` in
``kprod.cli.tune``), each exposing ``add_arguments(parser)`` and ``run(args) -> int | None``. Such a module
is imported only when its subcommand is the one being run, so ``kprod broker`` never pays for the
producer's imports; a module that does not exist yet simply leaves its subcommand out.
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
    "produce": "send records from stdin or a file (kafka-console-producer's and kcat's options)",
    "top": "show the live view of a producer in another process (one started with kprod.live.port)",
    "tune": "sweep linger.ms, batch.size, compression.type (and acks) and recommend settings for a p99 budget",
}


class _CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int | None: ...


def _version() -> str:
    from kprod import __version__

    return __version__


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the parser; ``argv`` decides which plugged-in subcommand module gets imported."""
    parser = argparse.ArgumentParser(prog="kprod", description="kprod: a Kafka producer for Python.")
    parser.add_argument("--version", action="version", version=f"kprod {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    broker = sub.add_parser(
        "broker",
        help="run a broker on 127.0.0.1 (embedded Tansu, or Apache Kafka) until Ctrl-C or SIGTERM",
        description="Start a broker on 127.0.0.1, create topics, print 'bootstrap.servers=HOST:PORT' and run "
        "until Ctrl-C or SIGTERM. The default engine is the embedded Tansu broker (in-memory storage, "
        "no Java needed). --engine kafka runs Apache Kafka itself (KRaft, Java 17+ and Maven; the jars "
        "are fetched once into ~/.cache/kprod) with PLAINTEXT, SSL, MTLS, SASL_PLAINTEXT and SASL_SSL "
        "listeners, and prints each listener's address, the CA file and the SASL users.",
    )
    broker.add_argument(
        "--engine",
        choices=("tansu", "kafka"),
        default="tansu",
        help="tansu (default: embedded, starts in milliseconds) or kafka (Apache Kafka 4.x from Maven Central)",
    )
    broker.add_argument(
        "--nodes",
        type=int,
        default=1,
        metavar="N",
        help="Apache Kafka nodes (--engine kafka only; default 1)",
    )
    broker.add_argument("--port", type=int, default=0, help="TCP port (Tansu only; default: a free one)")
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
    if args.engine == "kafka":
        return _run_kafka(args)
    if args.nodes != 1:
        print("kprod broker: --nodes needs --engine kafka (Tansu is a single node)", file=sys.stderr)
        return 2
    from kprod.broker import EmbeddedBroker, EmbeddedBrokerError

    stop_requested = _StopRequest()
    broker = EmbeddedBroker(port=args.port)
    try:
        broker.start()
        for topic in args.topic:
            broker.create_topic(topic, partitions=args.partitions)
        print(f"bootstrap.servers={broker.bootstrap_servers}", flush=True)
        print(f"# tansu pid {broker.pid}, log {broker.log_path}; Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop_requested.wait(0.5):
            if not broker.running:
                print("kprod broker: tansu exited unexpectedly" + broker.log_tail(), file=sys.stderr)
                return 1
        return 0
    except EmbeddedBrokerError as exc:
        print(f"kprod broker: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.stop()
        stop_requested.restore()


class _StopRequest(threading.Event):
    """Set by SIGINT or SIGTERM; :meth:`restore` puts the previous handlers back."""

    def __init__(self) -> None:
        super().__init__()
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.set()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _run_kafka(args: argparse.Namespace) -> int:
    from kprod.kafka_broker import LISTENERS, USERS, KafkaBrokerError, KafkaCluster

    if args.port:
        print("kprod broker: --port is for Tansu; Apache Kafka takes free ports", file=sys.stderr)
        return 2
    if args.nodes < 1:
        print(f"kprod broker: --nodes must be >= 1, got {args.nodes}", file=sys.stderr)
        return 2
    stop_requested = _StopRequest()
    cluster = KafkaCluster(nodes=args.nodes)
    try:
        print(
            f"# starting Apache Kafka {cluster.version} ({args.nodes} node(s))...",
            file=sys.stderr,
            flush=True,
        )
        cluster.start()
        for topic in args.topic:
            cluster.create_topic(topic, partitions=args.partitions)
        print(f"bootstrap.servers={cluster.bootstrap_servers}", flush=True)
        for listener in LISTENERS[1:]:
            print(f"# {listener}: {cluster.bootstrap(listener)}", file=sys.stderr)
        certs = cluster.certificates
        print(
            f"# CA {certs.ca}; client certificate {certs.client_cert}, key {certs.client_key}\n"
            f"# SASL users (PLAIN, SCRAM-SHA-256/512): {', '.join(f'{u}/{p}' for u, p in USERS.items())}; "
            "OAUTHBEARER takes unsecured JWTs\n"
            f"# started in {cluster.start_seconds:.1f} s; pids {[n.pid for n in cluster.nodes]}; "
            f"logs {cluster.nodes[0].log_path.parent.parent}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while not stop_requested.wait(0.5):
            dead = [n.node_id for n in cluster.nodes if not n.running]
            if dead:
                print(f"kprod broker: Kafka node(s) {dead} exited unexpectedly", file=sys.stderr)
                return 1
        return 0
    except KafkaBrokerError as exc:
        print(f"kprod broker: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        stop_requested.restore()


if __name__ == "__main__":
    raise SystemExit(main())
