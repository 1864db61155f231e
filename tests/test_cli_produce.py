"""``kprod produce``, run as a user runs it (a subprocess reading stdin), read back by confluent-kafka."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import consume_all
from kprod.cli.produce import parse_line

MakeTopic = Callable[..., str]


def _produce(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kprod", "produce", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_the_java_tools_line_format() -> None:
    props = {
        "parse.key": "true", "key.separator": ":", "parse.headers": "true", "headers.delimiter": "\t",
        "headers.separator": ",", "headers.key.separator": "=", "null.marker": "NULL",
    }  # fmt: skip
    assert parse_line("a=1,b=NULL\tk:v:w", props, []) == (b"k", b"v:w", [("a", b"1"), ("b", None)])
    assert parse_line("NULL\tNULL:x", props, [("h", b"0")]) == (None, b"x", [("h", b"0")])
    with pytest.raises(ValueError, match="key separator"):
        parse_line("\tno-separator", props, [])


@pytest.mark.timeout(120)
def test_keys_headers_and_tombstones_as_the_java_tool_reads_them(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    lines = "src=web,trace=1\tk1:hello\nsrc=cli\tk2:NULL\n\tk3:world\n"
    result = _produce(
        lines,
        "--topic", topic, "--bootstrap-server", broker.bootstrap_servers,
        "--property", "parse.key=true", "--property", "key.separator=:",
        "--property", "parse.headers=true", "--property", "headers.key.separator==",
        "--property", "null.marker=NULL", "--report", "-H", "via=kprod",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"{topic} [") == 3 and "at offset" in result.stdout
    records = {r.key: r for r in consume_all(broker.bootstrap_servers, topic, 3, 3, timeout_s=60)}
    assert records[b"k1"].value == b"hello"
    assert records[b"k2"].value is None, "the null marker makes a tombstone"
    assert records[b"k3"].value == b"world"
    headers = {k: dict(r.headers or []) for k, r in records.items()}
    assert headers[b"k1"] == {"via": b"kprod", "src": b"web", "trace": b"1"}
    assert headers[b"k3"] == {"via": b"kprod"}


@pytest.mark.timeout(120)
def test_jsonl_and_kcat_key_separator(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(3)
    docs = [
        {"key": "a", "value": {"n": 1}, "partition": 2, "headers": {"h": "1"}},
        # A recent timestamp: Kafka's retention (7 days) may delete a record stamped years ago at once.
        {"key": None, "value": "plain", "partition": 0, "timestamp": int(time.time() * 1000) - 3_600_000},
    ]
    result = _produce(
        "\n".join(json.dumps(d) for d in docs) + "\n",
        "--topic", topic, "--bootstrap-server", broker.bootstrap_servers, "--format", "jsonl",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    kcat = _produce("x;1\ny;2\n", "--topic", topic, "--bootstrap-server", broker.bootstrap_servers, "-K", ";")
    assert kcat.returncode == 0, kcat.stderr
    read = consume_all(broker.bootstrap_servers, topic, 3, 4, timeout_s=60)
    by_value = {r.value: r for r in read}
    assert by_value[b'{"n":1}'].partition == 2 and by_value[b'{"n":1}'].key == b"a"
    assert by_value[b"plain"].partition == 0 and by_value[b"plain"].key is None
    assert by_value[b"1"].key == b"x" and by_value[b"2"].key == b"y"


@pytest.mark.timeout(60)
def test_failures_set_the_exit_status_and_bad_options_say_so(broker: Any, make_topic: MakeTopic) -> None:
    topic = make_topic(1)
    failed = _produce(
        "a\nb\n", "--topic", topic, "--bootstrap-server", broker.bootstrap_servers, "--partition", "7"
    )
    assert failed.returncode == 1 and "partition 7 does not exist" in failed.stderr, failed.stderr
    bad = _produce(
        "a\n", "--topic", topic, "--bootstrap-server", broker.bootstrap_servers, "-X", "linger.ms=-5"
    )
    assert bad.returncode == 2 and "invalid producer settings" in bad.stderr and "Traceback" not in bad.stderr
    unparsable = _produce("no-key-here\n", "--topic", topic, "-b", broker.bootstrap_servers, "-K", ":")
    assert unparsable.returncode == 1 and "record 1" in unparsable.stderr


# ------------------------------------------------------------------ schemas
# The registry: confluent-kafka's in-memory mock:// registry, as tests/test_serde_formats.py uses (no
# Schema Registry server runs in the tests). The CLI's registry lives in its own process: the test
# checks that each record is framed with the id the CLI reported, registers the same schema in a
# registry of its own, and decodes each record's payload under that id with confluent-kafka's
# deserializers (``_reframed``).

USER_AVSC = {
    "type": "record", "name": "User", "namespace": "kprod.cli",
    "fields": [
        {"name": "name", "type": "string"}, {"name": "age", "type": "int"},
        {"name": "email", "type": ["null", "string"], "default": None},
    ],
}  # fmt: skip
USERS = [
    {"name": "ann", "age": 31, "email": "ann@example.com"},
    {"name": "bob", "age": 27, "email": None},
    {"name": "cy", "age": 45, "email": None},
]
ORDER_SCHEMA = {
    "title": "Order", "type": "object", "required": ["id", "amount"], "additionalProperties": False,
    "properties": {"id": {"type": "string"}, "amount": {"type": "number", "minimum": 0},
                   "tags": {"type": "array", "items": {"type": "string"}}},
}  # fmt: skip


def _ck_client() -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": "mock://kprod-cli-tests"})


def _ctx(topic: str, key: bool = False) -> Any:
    from confluent_kafka.serialization import MessageField, SerializationContext

    return SerializationContext(topic, MessageField.KEY if key else MessageField.VALUE)


def _framed_ids(values: list[bytes | None]) -> set[int]:
    from kprod.serde.registry import unframe

    return {unframe(v)[0] for v in values if v is not None}


def _reframed(value: bytes | None, schema_id: int) -> bytes:
    """``value``'s payload (Protobuf: with its message indexes) framed with ``schema_id``."""
    from kprod.serde.registry import frame, unframe

    assert value is not None
    return frame(schema_id, unframe(value)[1])


def _schema_id_said(stderr: str, side: str = "value") -> int:
    match = re.search(rf"# {side}s: [a-z-]+, schema id (\d+)", stderr)
    assert match, stderr
    return int(match.group(1))


@pytest.mark.timeout(120)
def test_avro_values_from_a_schema_file_round_trip(
    broker: Any, make_topic: MakeTopic, tmp_path: Path
) -> None:
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    topic = make_topic(1)
    schema_file = tmp_path / "user.avsc"
    schema_file.write_text(json.dumps(USER_AVSC), encoding="utf-8")
    lines = "".join(f"u{i}:{json.dumps(u)}\n" for i, u in enumerate(USERS)) + "u9:NULL\n"
    result = _produce(
        lines,
        "--topic", topic, "-b", broker.bootstrap_servers, "--schema-registry", "mock://cli-avro",
        "--value-schema-file", str(schema_file), "-K", ":", "--null-marker", "NULL", "--report",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("at offset") == 4
    read = consume_all(broker.bootstrap_servers, topic, 1, 4, timeout_s=60)
    assert [r.key for r in read] == [b"u0", b"u1", b"u2", b"u9"]
    assert read[-1].value is None, "the null marker is still a tombstone, not an Avro null"
    assert _framed_ids([r.value for r in read]) == {_schema_id_said(result.stderr)}
    client = _ck_client()
    schema_id = client.register_schema(f"{topic}-value", Schema(json.dumps(USER_AVSC), "AVRO"))
    decode = AvroDeserializer(client)
    assert [decode(_reframed(r.value, schema_id), _ctx(topic)) for r in read[:3]] == USERS


@pytest.mark.timeout(120)
def test_json_schema_keys_and_values_with_the_confluent_properties(
    broker: Any, make_topic: MakeTopic, tmp_path: Path
) -> None:
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer

    topic = make_topic(2)
    schema_file = tmp_path / "order.schema"
    schema_file.write_text(json.dumps(ORDER_SCHEMA), encoding="utf-8")
    orders = [{"id": "o1", "amount": 9.5, "tags": ["a"]}, {"id": "o2", "amount": 0}]
    docs = [{"key": "k1", "value": orders[0], "partition": 1}, {"key": "k2", "value": orders[1]}]
    result = _produce(
        "".join(json.dumps(d) + "\n" for d in docs),
        "--topic", topic, "-b", broker.bootstrap_servers, "--format", "jsonl",
        "--property", "schema.registry.url=mock://cli-json", "--property", f"value.schema.file={schema_file}",
        "--value-format", "json-schema", "--property", 'key.schema={"type":"string"}',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    read = consume_all(broker.bootstrap_servers, topic, 2, 2, timeout_s=60)
    assert _framed_ids([r.value for r in read]) == {_schema_id_said(result.stderr)}
    assert _framed_ids([r.key for r in read]) == {_schema_id_said(result.stderr, "key")}
    client = _ck_client()
    value_id = client.register_schema(f"{topic}-value", Schema(json.dumps(ORDER_SCHEMA), "JSON"))
    decode = JSONDeserializer(None, schema_registry_client=client)
    by_id = {decode(_reframed(r.value, value_id), _ctx(topic))["id"]: r for r in read}
    assert decode(_reframed(by_id["o1"].value, value_id), _ctx(topic)) == orders[0]
    assert decode(_reframed(by_id["o2"].value, value_id), _ctx(topic)) == orders[1]
    assert by_id["o1"].partition == 1
    # key.schema is kafka-avro-console-producer's property: the key is the Avro "string" k1.
    assert by_id["o1"].key is not None and by_id["o1"].key[5:] == b"\x04k1"


def _descriptor_set(tmp_path: Path) -> tuple[Path, Any]:
    """A descriptor set (as protoc --include_imports writes) for a file importing a well-known type,
    and the message class the test decodes with (built in a pool of its own)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

    file = descriptor_pb2.FileDescriptorProto(
        name="kprod_cli_tests/shop.proto", package="kprodcli", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )  # fmt: skip
    file.message_type.add(name="Unused").field.add(
        name="x", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL
    )
    sale = file.message_type.add(name="Sale")
    sale.field.add(name="sku", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    sale.field.add(name="units", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    sale.field.add(name="at", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                   type_name=".google.protobuf.Timestamp")  # fmt: skip
    sale.field.add(name="tags", number=4, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    timestamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp)
    path = tmp_path / "shop.desc"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[timestamp, file]).SerializeToString())
    pool = descriptor_pool.DescriptorPool()
    pool.Add(timestamp)
    pool.Add(file)
    return path, message_factory.GetMessageClass(pool.FindMessageTypeByName("kprodcli.Sale"))


@pytest.mark.timeout(120)
def test_protobuf_values_from_a_descriptor_set_round_trip(
    broker: Any, make_topic: MakeTopic, tmp_path: Path
) -> None:
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
    from google.protobuf import json_format

    topic = make_topic(1)
    desc, sale_class = _descriptor_set(tmp_path)
    sales = [
        {"sku": "A-1", "units": "3", "at": "2026-01-02T03:04:05Z", "tags": ["new", "promo"]},
        {"sku": "B-2", "units": "-7"},
    ]
    result = _produce(
        "".join(json.dumps(s) + "\n" for s in sales),
        "--topic", topic, "-b", broker.bootstrap_servers, "--schema-registry", "mock://cli-pb",
        "--value-format", "protobuf", "--value-schema-file", str(desc), "--value-message", "kprodcli.Sale",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    read = consume_all(broker.bootstrap_servers, topic, 1, 2, timeout_s=60)
    assert len(read) == 2 and _framed_ids([r.value for r in read]) == {_schema_id_said(result.stderr)}
    assert all(r.value is not None and r.value[5] == 2 for r in read), "message index [1]: the second message"
    decode = ProtobufDeserializer(sale_class, {"use.deprecated.format": False})
    assert [json_format.MessageToDict(decode(r.value, _ctx(topic))) for r in read] == sales


@pytest.mark.timeout(120)
def test_a_bad_record_stops_the_run_naming_the_schema_and_keeps_the_ones_before(
    broker: Any, make_topic: MakeTopic, tmp_path: Path
) -> None:
    topic = make_topic(1)
    schema_file = tmp_path / "user.avsc"
    schema_file.write_text(json.dumps(USER_AVSC), encoding="utf-8")
    lines = [json.dumps(USERS[0]), json.dumps(USERS[1]), '{"name": "cy", "age": "old"}', json.dumps(USERS[2])]
    args = ("--topic", topic, "-b", broker.bootstrap_servers, "--schema-registry", "mock://cli-bad",
            "--value-schema-file", str(schema_file))  # fmt: skip
    result = _produce("\n".join(lines) + "\n", *args)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("kprod produce:")]
    assert len(errors) == 1 and "record 3" in errors[0] and f"--value-schema-file {schema_file}" in errors[0]
    assert "'age'" in errors[0] and "Traceback" not in result.stderr
    assert "# 2 record(s) sent, 0 failed, 1 refused" in result.stderr
    not_json = _produce("{oops\n", *args)
    assert not_json.returncode == 1 and "record 1: the value is not JSON" in not_json.stderr
    skipped = _produce("\n".join(lines) + "\n", *args, "--property", "ignore.error=true")
    assert skipped.returncode == 0 and "3 record(s) sent, 0 failed, 1 refused" in skipped.stderr
    read = consume_all(broker.bootstrap_servers, topic, 1, 5, timeout_s=60, linger_s=1)
    assert len(read) == 5, "the 2 records before the bad one, then the 3 good ones of the ignore.error run"


@pytest.mark.timeout(60)
def test_bad_schema_options_say_which_option_in_one_line(tmp_path: Path) -> None:
    bad_avro = tmp_path / "bad.avsc"
    bad_avro.write_text('{"type": "recod", "name": "X"}', encoding="utf-8")
    proto_source = tmp_path / "shop.proto"
    proto_source.write_text('syntax = "proto3";\nmessage Sale { string sku = 1; }\n', encoding="utf-8")
    garbage = tmp_path / "x.desc"
    garbage.write_bytes(b"\xff\xfe not protobuf")
    desc, _ = _descriptor_set(tmp_path)
    registry = ("--schema-registry", "mock://cli-options")
    cases = [
        ((*registry, "--value-schema-file", str(bad_avro)), f"--value-schema-file {bad_avro}", "invalid Avro schema"),
        (("--value-schema-file", str(bad_avro)), "needs a Schema Registry", "--schema-registry URL"),
        ((*registry, "--value-schema-file", str(proto_source)), ".proto source", "protoc --include_imports"),
        ((*registry, "--value-schema-file", str(garbage)), f"--value-schema-file {garbage}", "not a Protobuf"),
        ((*registry, "--value-schema-file", str(desc), "--value-message", "kprodcli.Nope"),
         "--value-message kprodcli.Nope", "kprodcli.Sale"),
        ((*registry, "--property", "value.schema.file=/nonexistent/u.avsc"), "value.schema.file=", "cannot read"),
        ((*registry, "--value-format", "avro"), "--value-format needs a schema", "--value-schema-file"),
        ((*registry, "--property", 'value.schema={"type":"string"}', "--property", "auto.register.schemas=maybe"),
         "auto.register.schemas", "true or false"),
        (("--property", "schema.registry.url=ftp://nowhere", "--property", 'value.schema="int"'),
         "ftp://nowhere", "schema registry"),
    ]  # fmt: skip
    for args, *fragments in cases:
        result = _produce("", "--topic", "t", "-b", "127.0.0.1:9", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("kprod produce: "), (args, result.stderr)
        assert all(f in lines[0] for f in fragments), (args, lines[0])


@pytest.mark.timeout(60)
def test_a_registry_that_is_down_stops_the_run_before_reading_records(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    result = _produce(
        "{}\n", "--topic", "t", "-b", "127.0.0.1:9", "--schema-registry", f"http://127.0.0.1:{port}",
        "--property", 'value.schema="string"', "--property", "schema.registry.max.retries=0",
    )  # fmt: skip
    assert result.returncode == 1
    assert f"--schema-registry http://127.0.0.1:{port}" in result.stderr and "unreachable" in result.stderr
    assert "Traceback" not in result.stderr and "record(s) sent" not in result.stderr
