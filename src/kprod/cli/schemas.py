"""Schema'd keys and values for ``kprod produce``: the options, the schema files, the serializers.

``kprod produce`` takes a schema the way Confluent's console producers do
(``kafka-avro-console-producer --property schema.registry.url=URL --property value.schema=...``)
and with options of its own (``--schema-registry URL --value-format avro --value-schema-file F``).
Each record's key or value is then one JSON value, handed to kprod's own serializers
(:class:`~kprod.serde.avro.AvroSerializer`, :class:`~kprod.serde.jsonschema.JsonSchemaSerializer`,
:class:`~kprod.serde.protobuf.ProtobufSerializer`), which register the schema and frame each record in
the Confluent wire format.

This module only turns options into serializers; it knows nothing of lines or records. Every
problem is raised as :class:`SchemaOptionError`, whose message names the option at fault.
"""

from __future__ import annotations

import argparse
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from kprod import ConfigError
from kprod.serde import Serializer
from kprod.serde.registry import ConfluentSchemaRegistry, redact_url

__all__ = [
    "FORMATS",
    "SchemaOptionError",
    "SchemaSpec",
    "add_arguments",
    "make_serializer",
    "open_registry",
    "specs_from",
]

FORMATS: Final = ("avro", "json-schema", "protobuf")

_BY_EXTENSION: Final = {
    ".avsc": "avro",
    ".json": "json-schema",
    ".desc": "protobuf",
    ".protoset": "protobuf",
    ".pb": "protobuf",
    ".binpb": "protobuf",
    ".proto": "protobuf",
}

_PROTO_SOURCE = re.compile(rb"^\s*(//[^\n]*\n\s*)*(syntax|package|import|message|edition)\b")

PROTOC_HINT: Final = "compile the .proto into a descriptor set first: protoc --include_imports --descriptor_set_out=F.desc F.proto"


class SchemaOptionError(ValueError):
    """A schema option cannot be used; the message names the option (and the file) at fault."""


@dataclass(frozen=True, slots=True)
class SchemaSpec:
    """What one side (key or value) of every record is serialized with."""

    side: str
    """``"key"`` or ``"value"``."""
    format: str
    """One of :data:`FORMATS`."""
    source: str
    """The option that gave the schema, for messages: ``--value-schema-file user.avsc``."""
    text: str | None = None
    """Avro or JSON Schema text."""
    descriptor_set: bytes | None = None
    """Protobuf: a serialized ``FileDescriptorSet``."""
    message: str | None = None
    """Protobuf: the full name of the message type (default: the first of the last file)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The schema options of ``kprod produce``."""
    group = parser.add_argument_group(
        "schemas",
        "Avro, JSON Schema or Protobuf keys/values through a Schema Registry: each key or value is one JSON "
        "value, framed in the Confluent wire format. The Confluent console producers' properties work too: "
        "schema.registry.url, value.schema, value.schema.file, key.schema, key.schema.file, "
        "auto.register.schemas, use.latest.version, schema.registry.<client setting>.",
    )
    group.add_argument(
        "--schema-registry", default=None, metavar="URL",
        help="the Schema Registry (property schema.registry.url); mock://NAME is an in-memory one",
    )  # fmt: skip
    for side in ("value", "key"):
        group.add_argument(
            f"--{side}-format", choices=FORMATS, default=None,
            help=f"how {side}s are serialized (default: from the schema file's extension: .avsc avro, "
            ".json json-schema, .desc protobuf)",
        )  # fmt: skip
        group.add_argument(
            f"--{side}-schema-file", type=Path, default=None, metavar="FILE",
            help=f"the {side} schema (property {side}.schema.file): Avro .avsc, JSON Schema, or for Protobuf "
            "a descriptor set (protoc --include_imports --descriptor_set_out)",
        )  # fmt: skip
        group.add_argument(
            f"--{side}-message", default=None, metavar="NAME",
            help=f"Protobuf: the {side}'s message type, package.Message (default: the first message)",
        )  # fmt: skip


def _bool_property(props: dict[str, Any], name: str, default: bool) -> bool:
    raw = props.get(name)
    if raw is None:
        return default
    if str(raw).strip().lower() in ("true", "false"):
        return str(raw).strip().lower() == "true"
    raise SchemaOptionError(f"--property {name} must be true or false, not {raw!r}")


def registry_url(args: argparse.Namespace, props: dict[str, Any]) -> str | None:
    """``--schema-registry``, else ``--property schema.registry.url``."""
    url = args.schema_registry or props.get("schema.registry.url")
    return str(url) if url else None


def specs_from(args: argparse.Namespace, props: dict[str, Any]) -> dict[str, SchemaSpec]:
    """The key and value schemas the options ask for (``{}`` for none); reads the schema files."""
    specs: dict[str, SchemaSpec] = {}
    for side in ("key", "value"):
        fmt: str | None = getattr(args, f"{side}_format")
        path: Path | None = getattr(args, f"{side}_schema_file")
        inline = props.get(f"{side}.schema")
        message: str | None = getattr(args, f"{side}_message")
        if path is None and props.get(f"{side}.schema.file"):
            path = Path(str(props[f"{side}.schema.file"]))
            option = f"--property {side}.schema.file={path}"
        else:
            option = f"--{side}-schema-file {path}"
        if path is not None and inline:
            raise SchemaOptionError(
                f"{option} and --property {side}.schema both give the {side} schema: pass only one"
            )
        if path is None and not inline:
            if fmt is not None or message is not None:
                flag = f"--{side}-format" if fmt is not None else f"--{side}-message"
                raise SchemaOptionError(
                    f"{flag} needs a schema: --{side}-schema-file FILE (or --property {side}.schema=...)"
                )
            continue
        if path is not None:
            if fmt is None:
                fmt = _BY_EXTENSION.get(path.suffix.lower())
                if fmt is None:
                    raise SchemaOptionError(
                        f"{option}: cannot tell the format from the extension {path.suffix!r}: "
                        f"pass --{side}-format ({', '.join(FORMATS)})"
                    )
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SchemaOptionError(f"{option}: cannot read it ({exc.strerror or exc})") from None
        else:
            option = f"--property {side}.schema"
            fmt = fmt or "avro"  # the property is kafka-avro-console-producer's
            data = str(inline).encode()
        if fmt == "protobuf":
            if _PROTO_SOURCE.match(data):
                raise SchemaOptionError(f"{option}: this is .proto source; {PROTOC_HINT}")
            specs[side] = SchemaSpec(side, fmt, option, descriptor_set=data, message=message)
            continue
        if message is not None:
            raise SchemaOptionError(f"--{side}-message is for Protobuf, and the {side} format is {fmt}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SchemaOptionError(f"{option}: not UTF-8 text, so not an {fmt} schema") from None
        specs[side] = SchemaSpec(side, fmt, option, text=text)
    if specs and not registry_url(args, props):
        raise SchemaOptionError(
            f"{next(iter(specs.values())).source} needs a Schema Registry: --schema-registry URL "
            "(or --property schema.registry.url=URL)"
        )
    return specs


def open_registry(url: str, props: dict[str, Any]) -> ConfluentSchemaRegistry:
    """The registry at ``url``, with every ``schema.registry.<setting>`` property as a client setting."""
    config = {
        name.removeprefix("schema.registry."): _typed(value)
        for name, value in props.items()
        if name.startswith("schema.registry.") and name != "schema.registry.url"
    }
    try:
        return ConfluentSchemaRegistry(url, config=config)
    except ConfigError as exc:
        raise SchemaOptionError(f"--schema-registry {redact_url(url)}: {exc}") from None


def _typed(value: Any) -> Any:
    """A property's text as the registry client wants it: numbers (``max.retries``, ``timeout``) as numbers."""
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*", text):
        return float(text)
    return value


def make_serializer(spec: SchemaSpec, registry: ConfluentSchemaRegistry, props: dict[str, Any]) -> Serializer:
    """kprod's serializer for ``spec`` (the schema is checked now; it is registered on first use)."""
    auto_register = _bool_property(props, "auto.register.schemas", True)
    use_latest = _bool_property(props, "use.latest.version", False)
    if use_latest and "auto.register.schemas" not in props:
        auto_register = False  # as the Confluent serializers' use.latest.version implies
    options: dict[str, Any] = {
        "auto_register_schemas": auto_register,
        "use_latest_version": use_latest,
        "is_key": spec.side == "key",
    }
    try:
        if spec.format == "avro":
            from kprod.serde.avro import AvroSerializer

            return AvroSerializer(spec.text, registry, **options)
        if spec.format == "json-schema":
            from kprod.serde.jsonschema import JsonSchemaSerializer

            return JsonSchemaSerializer(spec.text, registry, **options)
        from kprod.serde.protobuf import ProtobufSerializer

        assert spec.descriptor_set is not None
        return ProtobufSerializer(message_class(spec), registry, **options)
    except ConfigError as exc:
        raise SchemaOptionError(f"{spec.source}: {exc}") from None


def message_class(spec: SchemaSpec) -> Any:
    """The Protobuf message class named by ``spec``, built from its descriptor set (no protoc, no _pb2)."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        from google.protobuf.message import DecodeError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SchemaOptionError(
            f"{spec.source}: Protobuf needs protobuf ({exc}): pip install 'kprod[serde]'"
        ) from None
    files = descriptor_pb2.FileDescriptorSet()
    try:
        files.ParseFromString(spec.descriptor_set or b"")
    except DecodeError:
        files.Clear()
    if not files.file or not all(f.name for f in files.file):
        raise SchemaOptionError(f"{spec.source}: not a Protobuf descriptor set; {PROTOC_HINT}")
    pool = descriptor_pool.DescriptorPool()
    pending = {f.name: f for f in files.file}
    added: set[str] = set()

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in added:
            return
        if name in chain:
            raise SchemaOptionError(
                f"{spec.source}: the files import each other in a cycle: {' -> '.join(chain)}"
            )
        proto = pending.get(name)
        if proto is None:
            proto = _well_known(name)
            if proto is None:
                raise SchemaOptionError(
                    f"{spec.source}: {chain[-1]} imports {name}, which the descriptor set lacks; "
                    "make it with protoc --include_imports"
                )
        for dep in proto.dependency:
            add(dep, (*chain, name))
        try:
            pool.Add(proto)
        except Exception as exc:  # TypeError / protobuf's own errors: an inconsistent file
            raise SchemaOptionError(f"{spec.source}: {name} is not a valid file descriptor ({exc})") from None
        added.add(name)

    for name in pending:
        add(name, ())
    if spec.message:
        try:
            descriptor = pool.FindMessageTypeByName(spec.message.lstrip("."))
        except KeyError:
            known = [
                f"{f.package + '.' if f.package else ''}{m.name}" for f in files.file for m in f.message_type
            ]
            raise SchemaOptionError(
                f"--{spec.side}-message {spec.message}: no such message in {spec.source}; it has "
                + (", ".join(known[:20]) or "no messages")
            ) from None
    else:
        last = files.file[-1]  # protoc writes the file asked for last, after its imports
        if not last.message_type:
            raise SchemaOptionError(
                f"{spec.source}: {last.name} defines no message; pass --{spec.side}-message"
            )
        package = f"{last.package}." if last.package else ""
        descriptor = pool.FindMessageTypeByName(package + last.message_type[0].name)
    return message_factory.GetMessageClass(descriptor)


def _well_known(name: str) -> Any:
    """The ``FileDescriptorProto`` of a well-known type (``google/protobuf/timestamp.proto``), or None."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    if not name.startswith("google/protobuf/") or not name.endswith(".proto"):
        return None
    module = "google.protobuf." + name.removeprefix("google/protobuf/").removesuffix(".proto") + "_pb2"
    try:
        importlib.import_module(module.replace("/", "."))
        file = descriptor_pool.Default().FindFileByName(name)
    except (ImportError, KeyError):
        return None
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto
