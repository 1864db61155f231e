"""``kprod produce``: a console producer with kafka-console-producer's and kcat's habits.

Reads records from stdin (or ``--file``), one per line (or split by ``--delimiter``), and sends each
with kprod's public :class:`~kprod.Producer`. Keys, headers, tombstones and explicit partitions are
parsed as the Java tool does (``--property parse.key=true --property key.separator=:``,
``parse.headers``, ``null.marker``) or as kcat does (``-K :``, ``-H name=value``); ``--format
jsonl`` takes one JSON object per line. With a schema (``--schema-registry URL --value-schema-file
F``, or the Confluent console producers' ``--property schema.registry.url=`` / ``value.schema=``)
each value (or key) is one JSON value, serialized as Avro, JSON Schema or Protobuf by kprod's own
serializers (:mod:`kprod.cli.schemas`). ``--report`` prints where each record went.

The exit status is 1 when any record failed or a record could not be read or serialized (the
records before it are still delivered; nothing after it is sent, unless ``--property
ignore.error=true``), 2 for bad options (a bad schema among them). Without a bootstrap server it
starts the embedded broker, as ``kprod perf`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, TextIO

from kprod import ConfigError, KprodError, Producer, ProducerConfig, RecordMetadata, SerializationError
from kprod.cli import schemas
from kprod.cli.options import add_bootstrap_servers
from kprod.cli.schemas import SchemaSpec
from kprod.serde.registry import ConfluentSchemaRegistry

__all__ = ["add_arguments", "parse_line", "parse_pairs", "run"]

_JAVA_PROPERTIES = {
    "parse.key": "false",
    "key.separator": "\t",
    "parse.headers": "false",
    "headers.delimiter": "\t",
    "headers.separator": ",",
    "headers.key.separator": ":",
    "null.marker": None,
    "ignore.error": "false",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", required=True, help="topic to produce to")
    add_bootstrap_servers(parser, help="brokers (default: start the embedded Tansu broker and create the topic)")
    parser.add_argument(
        "--file", type=Path, default=None, help="read records from this file instead of stdin"
    )
    parser.add_argument("--delimiter", default="\n", help="record delimiter (default: newline)")
    parser.add_argument(
        "--format", choices=("text", "jsonl"), default="text",
        help='text (default), or jsonl: {"key":..., "value":..., "headers":{...}, "partition":..., "timestamp":...}',
    )  # fmt: skip
    parser.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="K=V",
        help="the Java tool's reader properties: parse.key, key.separator, parse.headers, headers.delimiter, "
        "headers.separator, headers.key.separator, null.marker, ignore.error",
    )
    parser.add_argument(
        "-K", dest="kcat_key_separator", default=None, metavar="SEP", help="kcat: key separator"
    )
    parser.add_argument(
        "-H", dest="kcat_headers", action="append", default=[], metavar="NAME=VALUE",
        help="kcat: a header for every record (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--null-marker", default=None, help="a value equal to this is sent as null (a tombstone)"
    )
    parser.add_argument(
        "--partition", "-p", type=int, default=None, help="send every record to this partition"
    )
    parser.add_argument("--timestamp", type=int, default=None, help="record timestamp in ms (default: now)")
    parser.add_argument(
        "--compression-codec", default=None, help="compression.type (none, gzip, snappy, lz4, zstd)"
    )
    parser.add_argument(
        "--acks", "--request-required-acks", dest="acks", default=None, help="acks: all, 1, 0"
    )
    parser.add_argument(
        "--producer-property", "-X", dest="producer_property", action="append", default=[], metavar="K=V",
        help="a producer setting, Kafka name (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--producer.config", "--command-config", dest="producer_config", default=None, metavar="FILE",
        help="producer settings in a Java properties file",
    )  # fmt: skip
    parser.add_argument(
        "--report", action="store_true", help="print where each record went (or why it failed)"
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions of the topic on the embedded broker"
    )
    schemas.add_arguments(parser)


def parse_pairs(items: Sequence[str], option: str) -> dict[str, str]:
    """``NAME=VALUE`` command-line items as a dict (names stripped); ValueError naming ``option``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{option} takes NAME=VALUE items, not {item!r}")
        out[name.strip()] = value
    return out


def parse_line(
    line: str, props: dict[str, Any], fixed_headers: list[tuple[str, bytes | None]]
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]] | None]:
    """(key, value, headers) of one text record, as the Java tool's reader (and kcat's -K/-H) read it:
    headers first (``h1:v1,h2:v2`` then ``headers.delimiter``), then the key (``key.separator``)."""
    null = props.get("null.marker")
    headers: list[tuple[str, bytes | None]] = list(fixed_headers)
    if props.get("parse.headers") == "true":
        head, sep, line = line.partition(props["headers.delimiter"])
        if not sep:
            raise ValueError(f"no headers delimiter {props['headers.delimiter']!r} in {head[:40]!r}")
        if head and head != null:
            for item in head.split(props["headers.separator"]):
                name, _, value = item.partition(props["headers.key.separator"])
                headers.append((name, None if value == null else value.encode()))
    key: bytes | None = None
    if props.get("parse.key") == "true":
        raw_key, sep, line = line.partition(props["key.separator"])
        if not sep:
            raise ValueError(f"no key separator {props['key.separator']!r} in {raw_key[:40]!r}")
        key = None if raw_key == null else raw_key.encode()
    payload = None if line == null else line.encode()
    return key, payload, headers or None


def _records(stream: TextIO, delimiter: str) -> Iterator[str]:
    if delimiter == "\n":
        for line in stream:
            yield line.rstrip("\r\n")
        return
    pending = ""
    while chunk := stream.read(65536):
        pending += chunk
        *complete, pending = pending.split(delimiter)
        yield from complete
    if pending.strip("\r\n"):
        yield pending.rstrip("\r\n")


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (serializer messages may quote multi-line schemas)."""
    return " ".join(str(exc).split())


def run(args: argparse.Namespace) -> int:
    from kprod.cli.perf import parse_properties, start_embedded_broker

    registry: ConfluentSchemaRegistry | None = None
    try:
        props: dict[str, Any] = dict(_JAVA_PROPERTIES) | parse_pairs(args.property, "--property")
        if args.kcat_key_separator is not None:
            props["parse.key"], props["key.separator"] = "true", args.kcat_key_separator
        if args.null_marker is not None:
            props["null.marker"] = args.null_marker
        fixed_headers: list[tuple[str, bytes | None]] = [
            (k, v.encode()) for k, v in parse_pairs(args.kcat_headers, "-H").items()
        ]
        settings: dict[str, object] = {}
        if args.producer_config:
            settings.update(parse_properties(Path(args.producer_config).read_text(encoding="utf-8")))
        settings.update(parse_pairs(args.producer_property, "--producer-property"))
        if args.compression_codec:
            settings["compression.type"] = args.compression_codec
        if args.acks is not None:
            settings["acks"] = args.acks
        if args.bootstrap_servers:
            settings["bootstrap.servers"] = args.bootstrap_servers
        specs = schemas.specs_from(args, props)
        if specs:
            url = schemas.registry_url(args, props)
            assert url is not None  # specs_from refuses schemas without a registry
            registry = schemas.open_registry(url, props)
            for side, spec in specs.items():
                settings[f"{side}.serializer"] = schemas.make_serializer(spec, registry, props)
        ProducerConfig.from_user(settings)
    except (OSError, ValueError) as exc:  # ConfigError and SchemaOptionError are ValueErrors
        prefix = "invalid producer settings: " if isinstance(exc, ConfigError) else ""
        print(f"kprod produce: {prefix}{_one_line(exc)}", file=sys.stderr)
        if registry is not None:
            registry.close()
        return 2
    broker: Any = None
    try:
        for side, spec in specs.items():
            # Register (or look up) now: a registry that is down or refuses the schema stops the run
            # before any record is read, with the registry named, rather than at the first record.
            serializer: Any = settings[f"{side}.serializer"]
            try:
                schema_id = serializer.schema_id(args.topic)
            except SerializationError as exc:
                where = registry.url if registry is not None else "?"
                print(
                    f"kprod produce: --schema-registry {where}: {spec.source}: {_one_line(exc)}",
                    file=sys.stderr,
                )
                return 1
            print(f"# {side}s: {spec.format}, schema id {schema_id} ({spec.source})", file=sys.stderr)
        if "bootstrap.servers" not in settings:
            broker = start_embedded_broker(args.topic, args.partitions)
            settings["bootstrap.servers"] = broker.bootstrap_servers
        stream = args.file.open(encoding="utf-8") if args.file else sys.stdin
        try:
            return _produce(args, settings, props, fixed_headers, stream, specs)
        finally:
            if args.file:
                stream.close()
    except KeyboardInterrupt:
        print("kprod produce: interrupted", file=sys.stderr)
        return 130
    except (KprodError, OSError) as exc:
        print(f"kprod produce: {exc}", file=sys.stderr)
        return 1
    finally:
        if broker is not None:
            broker.stop()
        if registry is not None:
            registry.close()


def _produce(
    args: argparse.Namespace,
    settings: dict[str, object],
    props: dict[str, Any],
    fixed_headers: list[tuple[str, bytes | None]],
    stream: TextIO,
    specs: dict[str, SchemaSpec],
) -> int:
    lock = threading.Lock()
    failed = [0]
    ignore_errors = props.get("ignore.error") == "true"

    def report(number: int) -> Any:
        def on_delivery(metadata: RecordMetadata | None, error: BaseException | None) -> None:
            with lock:
                if error is not None:
                    failed[0] += 1
                    print(f"record {number}: FAILED: {error}", file=sys.stderr, flush=True)
                elif args.report:
                    assert metadata is not None
                    print(
                        f"record {number}: {metadata.topic} [{metadata.partition}] at offset {metadata.offset}, "
                        f"timestamp {metadata.timestamp}",
                        flush=True,
                    )

        return on_delivery

    sent = refused = 0
    # Records sent before a bad one are not lost: the loop stops, and closing the producer flushes them.
    with Producer(settings) as producer:
        for number, line in enumerate(_records(stream, args.delimiter), 1):
            if not line and args.format == "text" and args.delimiter == "\n":
                continue  # the Java tool skips empty lines too
            try:
                key: Any
                value: Any
                if args.format == "jsonl":
                    key, value, headers, partition, timestamp = _json_record(
                        line, props.get("null.marker"), set(specs)
                    )
                    headers = [*fixed_headers, *(headers or [])] or None
                else:
                    key, value, headers = parse_line(line, props, fixed_headers)
                    partition, timestamp = None, None
                    key = _schema_input(key, specs.get("key"))
                    value = _schema_input(value, specs.get("value"))
                producer.send(
                    args.topic,
                    value,
                    key,
                    partition=args.partition if partition is None else partition,
                    timestamp=args.timestamp if timestamp is None else timestamp,
                    headers=headers,
                    on_delivery=report(number),
                )
            except (ValueError, TypeError) as exc:  # SerializationError is a ValueError
                print(f"kprod produce: record {number}: {_describe(exc, specs)}", file=sys.stderr)
                refused += 1
                if ignore_errors:
                    continue
                break
            sent += 1
        producer.flush()
    print(
        f"# {sent} record(s) sent, {failed[0]} failed" + (f", {refused} refused" if refused else ""),
        file=sys.stderr,
    )
    return 1 if failed[0] or (refused and not ignore_errors) else 0


def _describe(exc: BaseException, specs: dict[str, SchemaSpec]) -> str:
    """Why a record was refused, on one line, naming the schema option when a serializer refused it."""
    if isinstance(exc, SerializationError):
        side = "key" if "(key.serializer)" in str(exc) else "value"
        spec = specs.get(side)
        if spec is not None:
            return f"the {side} does not fit {spec.source}: {_one_line(exc)}"
    return _one_line(exc)


def _schema_input(raw: bytes | None, spec: SchemaSpec | None) -> Any:
    """A text record's key or value as its serializer takes it: the bytes, or the JSON value they hold."""
    if spec is None or raw is None:
        return raw
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(
            f"the {spec.side} is not JSON ({exc}); with {spec.source} each {spec.side} is one JSON value"
        ) from None


def _json_record(
    line: str, null_marker: str | None, raw_fields: AbstractSet[str] = frozenset()
) -> tuple[Any, Any, list[tuple[str, bytes | None]] | None, int | None, int | None]:
    """One jsonl record; the fields in ``raw_fields`` (``"key"``, ``"value"``) stay JSON values (for a
    schema serializer), the others become bytes (a string's UTF-8, or compact JSON)."""
    doc = json.loads(line)
    if not isinstance(doc, dict):
        raise ValueError("a jsonl record must be a JSON object")

    def field(name: str) -> Any:
        value = doc.get(name)
        if value is None or value == null_marker:
            return None
        if name in raw_fields:
            return value
        return (value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))).encode()

    raw_headers = doc.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise ValueError('"headers" must be an object of name: value')
    headers = [(str(k), None if v is None else str(v).encode()) for k, v in raw_headers.items()]
    partition = doc.get("partition")
    timestamp = doc.get("timestamp")
    if partition is not None and not isinstance(partition, int):
        raise ValueError('"partition" must be an integer')
    if timestamp is not None and not isinstance(timestamp, int):
        raise ValueError('"timestamp" must be an integer (ms)')
    return field("key"), field("value"), headers or None, partition, timestamp
