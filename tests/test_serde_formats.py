"""Tests for the Java-compatible numeric serializers and the Avro / Protobuf / JSON Schema serializers.

The schema serializers are checked byte for byte against confluent-kafka's serializers, on one
shared in-memory ``mock://`` registry (confluent-kafka's Python mock registry is per client
instance, not per URL, so both sides get the same ``SchemaRegistryClient``), and read back with
confluent-kafka's deserializers.
"""

from __future__ import annotations

import io
import json
import math
import socket
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kprod.errors import ConfigError, SerializationError
from kprod.serde import resolve_serializer
from kprod.serde.numeric import (
    DoubleSerializer,
    FloatSerializer,
    IntegerSerializer,
    LongSerializer,
    UUIDSerializer,
)
from kprod.serde.registry import (
    ConfluentSchemaRegistry,
    RegistryError,
    RegistrySchema,
    SchemaRegistry,
    frame,
    record_name_strategy,
    redact_url,
    topic_name_strategy,
    topic_record_name_strategy,
    unframe,
)

fastavro = pytest.importorskip("fastavro")
pytest.importorskip("google.protobuf")
pytest.importorskip("jsonschema")
sr = pytest.importorskip("confluent_kafka.schema_registry")

from confluent_kafka.schema_registry import (  # noqa: E402
    SchemaRegistryClient,
    record_subject_name_strategy,
    topic_record_subject_name_strategy,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer as CkAvroDeserializer  # noqa: E402
from confluent_kafka.schema_registry.avro import AvroSerializer as CkAvroSerializer  # noqa: E402
from confluent_kafka.schema_registry.json_schema import JSONDeserializer as CkJsonDeserializer  # noqa: E402
from confluent_kafka.schema_registry.json_schema import JSONSerializer as CkJsonSerializer  # noqa: E402
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer as CkProtobufDeserializer  # noqa: E402
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer as CkProtobufSerializer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402
from google.protobuf import timestamp_pb2 as _timestamp_pb2  # noqa: E402, F401  (puts Timestamp in the pool)
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as _F  # noqa: E402

from kprod.serde.avro import AvroSerializer  # noqa: E402
from kprod.serde.jsonschema import JsonSchemaSerializer  # noqa: E402
from kprod.serde.protobuf import ProtobufSerializer, encode_message_indexes, message_indexes  # noqa: E402

TOPIC_STRATEGY = {"subject.name.strategy": topic_subject_name_strategy}


def ctx(topic: str, *, key: bool = False) -> SerializationContext:
    return SerializationContext(topic, MessageField.KEY if key else MessageField.VALUE)


@pytest.fixture
def client() -> Iterator[SchemaRegistryClient]:
    c = SchemaRegistryClient.new_client({"url": "mock://kprod-tests"})
    yield c
    c.close()


@pytest.fixture
def registry(client: SchemaRegistryClient) -> ConfluentSchemaRegistry:
    return ConfluentSchemaRegistry(client)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


# ====================================================================== numeric and UUID


@pytest.mark.parametrize(
    ("serializer", "value", "expected"),
    [
        (IntegerSerializer(), 0, "00000000"),
        (IntegerSerializer(), 1, "00000001"),
        (IntegerSerializer(), -1, "ffffffff"),
        (IntegerSerializer(), 2**31 - 1, "7fffffff"),
        (IntegerSerializer(), -(2**31), "80000000"),
        (IntegerSerializer(), 0x12345678, "12345678"),
        (LongSerializer(), 1, "0000000000000001"),
        (LongSerializer(), -1, "ffffffffffffffff"),
        (LongSerializer(), 2**63 - 1, "7fffffffffffffff"),
        (LongSerializer(), -(2**63), "8000000000000000"),
        (LongSerializer(), 1_700_000_000_000, "0000018bcfe56800"),
        (FloatSerializer(), 1.0, "3f800000"),
        (FloatSerializer(), -2.5, "c0200000"),
        (FloatSerializer(), 0.1, "3dcccccd"),  # rounded to the nearest binary32, as Java's (float) 0.1
        (FloatSerializer(), math.inf, "7f800000"),
        (FloatSerializer(), math.nan, "7fc00000"),  # Java's Float.NaN
        (FloatSerializer(), 3, "40400000"),
        (DoubleSerializer(), 1.0, "3ff0000000000000"),
        (DoubleSerializer(), -2.5, "c004000000000000"),
        (DoubleSerializer(), 0.1, "3fb999999999999a"),
        (DoubleSerializer(), -math.inf, "fff0000000000000"),
        (DoubleSerializer(), -math.nan, "7ff8000000000000"),  # doubleToLongBits canonical NaN
        (DoubleSerializer(), 2**53 + 1, "4340000000000000"),  # rounded as float(n)
    ],
)
def test_numeric_known_vectors(serializer: Any, value: Any, expected: str) -> None:
    assert serializer.serialize("t", value, None) == bytes.fromhex(expected)


def test_uuid_is_the_text_form_as_java() -> None:
    # Java: UUID.fromString("123e4567-e89b-12d3-a456-426614174000").toString().getBytes("UTF8")
    u = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")
    expected = b"123e4567-e89b-12d3-a456-426614174000"
    s = UUIDSerializer()
    assert s.serialize("t", u, None) == expected
    assert s.serialize("t", "123E4567E89B12D3A456426614174000", None) == expected  # normalized
    assert s.serialize("t", "{123e4567-e89b-12d3-a456-426614174000}", None) == expected
    assert s.serialize("t", None, None) is None
    assert len(s.serialize("t", uuid.uuid4(), None) or b"") == 36


@given(st.integers(-(2**31), 2**31 - 1))
def test_integer_is_struct_i(n: int) -> None:
    assert IntegerSerializer().serialize("t", n, None) == struct.pack(">i", n)


@given(st.integers(-(2**63), 2**63 - 1))
def test_long_is_struct_q(n: int) -> None:
    assert LongSerializer().serialize("t", n, None) == struct.pack(">q", n)


@given(st.floats(width=32, allow_nan=False))
def test_float_is_struct_f(x: float) -> None:
    assert FloatSerializer().serialize("t", x, None) == struct.pack(">f", x)


@given(st.floats(allow_nan=False))
def test_double_is_struct_d(x: float) -> None:
    assert DoubleSerializer().serialize("t", x, None) == struct.pack(">d", x)


def test_numeric_none_is_null() -> None:
    for s in (IntegerSerializer(), LongSerializer(), FloatSerializer(), DoubleSerializer()):
        assert s.serialize("t", None, None) is None


@pytest.mark.parametrize(
    ("serializer", "value", "fragment"),
    [
        (IntegerSerializer(setting="key.serializer"), 2**31, "signed 32-bit range"),
        (IntegerSerializer(setting="key.serializer"), -(2**31) - 1, "use LongSerializer"),
        (LongSerializer(setting="key.serializer"), 2**63, "signed 64-bit range"),
        (IntegerSerializer(setting="key.serializer"), True, "a bool"),
        (IntegerSerializer(setting="key.serializer"), 1.0, "a float"),
        (LongSerializer(setting="key.serializer"), "12", "a str"),
        (FloatSerializer(setting="key.serializer"), 1e39, "32-bit float range"),
        (FloatSerializer(setting="key.serializer"), "1.0", "a str"),
        (DoubleSerializer(setting="key.serializer"), 10**400, "too large"),
        (DoubleSerializer(setting="key.serializer"), b"\x00", "a bytes"),
        (UUIDSerializer(setting="key.serializer"), "not-a-uuid", "not a UUID"),
        (UUIDSerializer(setting="key.serializer"), 12, "a int"),
    ],
)
def test_numeric_errors_name_serializer_setting_topic(serializer: Any, value: Any, fragment: str) -> None:
    with pytest.raises(SerializationError) as info:
        serializer.serialize("orders", value, None)
    msg = str(info.value)
    assert type(serializer).__name__ in msg and "key.serializer" in msg and "'orders'" in msg
    assert fragment in msg
    assert info.value.stage == "serialization"


def test_numeric_accepts_index_and_float_protocols() -> None:
    class Idx:
        def __index__(self) -> int:
            return 7

    assert IntegerSerializer().serialize("t", Idx(), None) == b"\x00\x00\x00\x07"
    from decimal import Decimal

    assert DoubleSerializer().serialize("t", Decimal("1.5"), None) == struct.pack(">d", 1.5)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("int", IntegerSerializer),
        ("Integer", IntegerSerializer),
        ("long", LongSerializer),
        ("float", FloatSerializer),
        ("double", DoubleSerializer),
        ("uuid", UUIDSerializer),
        ("IntegerSerializer", IntegerSerializer),
        ("org.apache.kafka.common.serialization.LongSerializer", LongSerializer),
        ("org.apache.kafka.common.serialization.FloatSerializer", FloatSerializer),
        ("DoubleSerializer", DoubleSerializer),
        ("org.apache.kafka.common.serialization.UUIDSerializer", UUIDSerializer),
    ],
)
def test_resolve_serializer_numeric_names(name: str, cls: type) -> None:
    s = resolve_serializer(name, setting="key.serializer")
    assert type(s) is cls
    assert s.setting == "key.serializer"  # type: ignore[attr-defined]


# ====================================================================== registry pieces


def test_subject_name_strategies() -> None:
    assert topic_name_strategy("orders", "com.ex.Order", False) == "orders-value"
    assert topic_name_strategy("orders", None, True) == "orders-key"
    assert record_name_strategy("orders", "com.ex.Order", False) == "com.ex.Order"
    assert topic_record_name_strategy("orders", "com.ex.Order", True) == "orders-com.ex.Order"
    with pytest.raises(SerializationError, match="named schema"):
        record_name_strategy("orders", None, False)
    with pytest.raises(SerializationError, match="named schema"):
        topic_record_name_strategy("orders", None, False)


def test_frame_and_unframe() -> None:
    assert frame(1, b"abc") == b"\x00\x00\x00\x00\x01abc"
    assert frame(0x01020304, b"", b"\x00") == b"\x00\x01\x02\x03\x04\x00"
    assert unframe(b"\x00\x00\x00\x01\x00xyz") == (256, b"xyz")
    with pytest.raises(SerializationError, match="magic byte"):
        unframe(b"\x01\x00\x00\x00\x01")
    with pytest.raises(SerializationError, match="4-byte"):
        frame(2**32, b"")


def test_redact_url() -> None:
    assert redact_url("https://user:secret@sr.example:8081/x") == "https://sr.example:8081/x"
    assert redact_url("http://a:1,http://u:p@b:2") == "http://a:1,http://b:2"
    assert redact_url("mock://scope") == "mock://scope"


def test_confluent_registry_caches_ids(client: SchemaRegistryClient, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = ConfluentSchemaRegistry(client)
    calls: list[str] = []
    real_register = client.register_schema_full_response

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real_register(*args, **kwargs)

    monkeypatch.setattr(client, "register_schema_full_response", counting)
    schema = RegistrySchema('{"type":"string"}', "AVRO")
    first = reg.register("s-value", schema)
    assert reg.register("s-value", schema) == first
    assert reg.lookup("s-value", schema) == first
    assert calls == ["s-value"]
    assert reg.get_latest("s-value") == (first, schema)
    assert isinstance(reg, SchemaRegistry)


def test_confluent_registry_latest_ttl(client: SchemaRegistryClient) -> None:
    reg = ConfluentSchemaRegistry(client, latest_ttl=0)
    v1 = RegistrySchema('{"type":"string"}', "AVRO")
    v2 = RegistrySchema('{"type":"long"}', "AVRO")
    id1 = reg.register("s", v1)
    assert reg.get_latest("s") == (id1, v1)
    id2 = reg.register("s", v2)
    assert reg.get_latest("s") == (id2, v2)  # ttl 0: not cached


def test_confluent_registry_not_found_names_url_and_subject(registry: ConfluentSchemaRegistry) -> None:
    with pytest.raises(RegistryError) as info:
        registry.get_latest("nope-value")
    err = info.value
    assert err.not_found and err.subject == "nope-value" and err.url == "mock://kprod-tests"
    assert "mock://kprod-tests" in str(err) and "'nope-value'" in str(err)
    assert isinstance(err, SerializationError)


def test_confluent_registry_config_errors() -> None:
    with pytest.raises(ConfigError, match="invalid client config"):
        ConfluentSchemaRegistry("ftp://x")
    with pytest.raises(ConfigError, match="URL str"):
        ConfluentSchemaRegistry(42)  # type: ignore[arg-type]


# ====================================================================== Avro

USER_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "User",
        "namespace": "com.example",
        "fields": [
            {"name": "name", "type": "string"},
            {"name": "age", "type": "int"},
            {"name": "score", "type": "double"},
            {"name": "id", "type": "long"},
            {"name": "email", "type": ["null", "string"], "default": None},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "attrs", "type": {"type": "map", "values": "long"}},
            {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
            {"name": "blob", "type": "bytes"},
            {
                "name": "address",
                "type": [
                    "null",
                    {"type": "record", "name": "Address", "fields": [{"name": "zip", "type": "int"}]},
                ],
                "default": None,
            },
        ],
    }
)

USER = {
    "name": "Zoë",
    "age": 42,
    "score": 2.5,
    "id": 2**40,
    "email": "z@example.com",
    "tags": ["a", "b"],
    "attrs": {"x": -1},
    "color": "GREEN",
    "blob": b"\x00\xff",
    "address": {"zip": 12345},
}


def test_avro_framed_equals_confluent(
    client: SchemaRegistryClient, registry: ConfluentSchemaRegistry
) -> None:
    kp = AvroSerializer(USER_SCHEMA, registry)
    ck = CkAvroSerializer(client, USER_SCHEMA, conf=TOPIC_STRATEGY)
    # kprod registers first on one topic, confluent-kafka on the other: the ids agree either way.
    mine = kp.serialize("users", USER, None)
    theirs = ck(USER, ctx("users"))
    assert mine == theirs
    theirs2 = ck(USER, ctx("people"))
    assert kp.serialize("people", USER, None) == theirs2
    assert mine is not None and mine[0] == 0
    assert set(client.get_subjects()) == {"users-value", "people-value"}
    assert unframe(mine)[0] == client.get_latest_version("users-value").schema_id
    # confluent-kafka reads it back.
    assert CkAvroDeserializer(client)(mine, ctx("users")) == USER


def test_avro_key_and_record_strategies_equal_confluent(
    client: SchemaRegistryClient, registry: ConfluentSchemaRegistry
) -> None:
    cases: list[tuple[Any, Any, bool, str]] = [
        (topic_name_strategy, topic_subject_name_strategy, True, "t1-key"),
        (record_name_strategy, record_subject_name_strategy, False, "com.example.User"),
        (topic_record_name_strategy, topic_record_subject_name_strategy, False, "t1-com.example.User"),
    ]
    for ours, theirs, is_key, subject in cases:
        kp = AvroSerializer(USER_SCHEMA, registry, subject_name_strategy=ours, is_key=is_key)
        ck = CkAvroSerializer(client, USER_SCHEMA, conf={"subject.name.strategy": theirs})
        assert kp.serialize("t1", USER, None) == ck(USER, ctx("t1", key=is_key))
        assert subject in client.get_subjects()


@pytest.mark.parametrize(
    ("schema", "value"),
    [('"string"', "héllo"), ('{"type": "long"}', -(2**40)), ('"bytes"', b"\x01\x02raw"), ('"double"', 0.25)],
)
def test_avro_primitives_equal_confluent(
    client: SchemaRegistryClient, registry: ConfluentSchemaRegistry, schema: str, value: Any
) -> None:
    kp = AvroSerializer(schema, registry)
    ck = CkAvroSerializer(client, schema, conf=TOPIC_STRATEGY)
    out = kp.serialize("prim", value, None)
    assert out == ck(value, ctx("prim"))
    assert CkAvroDeserializer(client)(out, ctx("prim")) == value


def test_avro_without_registry_is_bare_avro(
    client: SchemaRegistryClient, registry: ConfluentSchemaRegistry
) -> None:
    bare = AvroSerializer(USER_SCHEMA).serialize("users", USER, None)
    assert bare is not None
    parsed = fastavro.parse_schema(json.loads(USER_SCHEMA))
    assert fastavro.schemaless_reader(io.BytesIO(bare), parsed, parsed) == USER
    framed = AvroSerializer(USER_SCHEMA, registry).serialize("users", USER, None)
    assert framed is not None and framed[5:] == bare
    assert AvroSerializer('"bytes"').serialize("t", b"ab", None) == b"\x04ab"  # Avro bytes: length-prefixed


def test_avro_use_latest_version_equals_confluent(
    client: SchemaRegistryClient, registry: ConfluentSchemaRegistry
) -> None:
    v1 = json.dumps({"type": "record", "name": "P", "fields": [{"name": "a", "type": "int"}]})
    v2 = json.dumps(
        {
            "type": "record",
            "name": "P",
            "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 7}],
        }
    )
    client.register_schema("pts-value", sr.Schema(v1, "AVRO"))
    latest_id = client.register_schema("pts-value", sr.Schema(v2, "AVRO"))
    kp = AvroSerializer(v1, registry, use_latest_version=True, auto_register_schemas=False)
    ck = CkAvroSerializer(
        client, v1, conf={**TOPIC_STRATEGY, "use.latest.version": True, "auto.register.schemas": False}
    )
    record = {"a": 1, "b": 2}
    out = kp.serialize("pts", record, None)
    assert out == ck(record, ctx("pts"))
    assert out is not None and unframe(out)[0] == latest_id
    assert CkAvroDeserializer(client)(out, ctx("pts")) == record
    # No schema at all is fine with use_latest_version.
    assert (
        AvroSerializer(None, registry, use_latest_version=True, auto_register_schemas=False).serialize(
            "pts", record, None
        )
        == out
    )


def test_avro_missing_field_names_schema_and_field(registry: ConfluentSchemaRegistry) -> None:
    record = {k: v for k, v in USER.items() if k != "age"}
    for s in (AvroSerializer(USER_SCHEMA, registry), AvroSerializer(USER_SCHEMA, registry, validate=False)):
        with pytest.raises(SerializationError) as info:
            s.serialize("users", record, None)
        msg = str(info.value)
        assert "AvroSerializer" in msg and "'users'" in msg and "com.example.User" in msg
        assert "field 'age'" in msg and "expected int" in msg


def test_avro_bad_values(registry: ConfluentSchemaRegistry) -> None:
    s = AvroSerializer(USER_SCHEMA, registry)
    with pytest.raises(SerializationError, match=r"field 'age' .*expected int, got str 'x'"):
        s.serialize("users", {**USER, "age": "x"}, None)
    with pytest.raises(SerializationError, match=r"field 'age' .*out of the 32-bit range"):
        s.serialize("users", {**USER, "age": 2**40}, None)
    with pytest.raises(SerializationError, match=r"field 'zip' of record com\.example\.Address"):
        s.serialize("users", {**USER, "address": {"zip": "nope"}}, None)
    with pytest.raises(SerializationError, match=r"field 'color'.*enum com\.example\.Color"):
        s.serialize("users", {**USER, "color": "BLUE"}, None)
    # fastavro's writer alone would write these silently (1.5 as 1, 2 as true)
    with pytest.raises(SerializationError, match=r"field 'age' .*expected int, got float 1\.5"):
        s.serialize("users", {**USER, "age": 1.5}, None)
    with pytest.raises(SerializationError, match="the value itself"):
        s.serialize("users", ["not", "a", "record"], None)
    assert s.serialize("users", None, None) is None


def test_avro_to_dict(registry: ConfluentSchemaRegistry) -> None:
    from dataclasses import asdict, dataclass

    @dataclass
    class P:
        a: int

    schema = '{"type":"record","name":"P","fields":[{"name":"a","type":"int"}]}'
    s = AvroSerializer(schema, to_dict=asdict)
    assert s.serialize("t", P(3), None) == b"\x06"

    def broken(obj: Any) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(SerializationError, match="to_dict raised RuntimeError"):
        AvroSerializer(schema, to_dict=broken).serialize("t", P(3), None)


def test_avro_auto_register_off_unknown_subject(registry: ConfluentSchemaRegistry) -> None:
    s = AvroSerializer(USER_SCHEMA, registry, auto_register_schemas=False)
    with pytest.raises(RegistryError) as info:
        s.serialize("unknown", USER, None)
    msg = str(info.value)
    assert "'unknown-value'" in msg and "auto_register_schemas" in msg and "mock://kprod-tests" in msg
    assert info.value.not_found


def test_avro_registry_unreachable_names_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    reg = ConfluentSchemaRegistry(url.replace("http://", "http://me:s3cret@"), config={"max.retries": 0})
    s = AvroSerializer(USER_SCHEMA, reg)
    with pytest.raises(SerializationError) as info:
        s.serialize("users", USER, None)
    msg = str(info.value)
    assert url in msg and "'users-value'" in msg and "unreachable" in msg and "s3cret" not in msg
    assert isinstance(info.value, RegistryError) and info.value.retriable and info.value.url == url
    reg.close()


def test_avro_config_errors(registry: ConfluentSchemaRegistry) -> None:
    with pytest.raises(ConfigError, match="invalid Avro schema"):
        AvroSerializer('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(ConfigError, match="not valid JSON"):
        AvroSerializer("{oops")
    with pytest.raises(ConfigError, match="auto_register_schemas=False"):
        AvroSerializer(USER_SCHEMA, registry, use_latest_version=True)
    with pytest.raises(ConfigError, match="needs a named schema"):
        AvroSerializer('["null", "string"]', registry, subject_name_strategy=record_name_strategy)
    with pytest.raises(ConfigError, match="schema is required"):
        AvroSerializer(None, registry)
    with pytest.raises(ConfigError, match="SchemaRegistry"):
        AvroSerializer(USER_SCHEMA, object())  # type: ignore[arg-type]


class DictRegistry:
    """A minimal SchemaRegistry: the protocol is all a serializer needs."""

    url = "memory://"

    def __init__(self) -> None:
        self.subjects: dict[str, list[tuple[int, RegistrySchema]]] = {}
        self.next_id = 100

    def register(self, subject: str, schema: RegistrySchema) -> int:
        for sid, s in self.subjects.get(subject, []):
            if s == schema:
                return sid
        self.next_id += 1
        self.subjects.setdefault(subject, []).append((self.next_id, schema))
        return self.next_id

    def lookup(self, subject: str, schema: RegistrySchema) -> int:
        for sid, s in self.subjects.get(subject, []):
            if s == schema:
                return sid
        raise KeyError(subject)

    def get_latest(self, subject: str) -> tuple[int, RegistrySchema]:
        return self.subjects[subject][-1]


def test_custom_registry() -> None:
    reg = DictRegistry()
    s = AvroSerializer('"string"', reg)
    assert s.serialize("t", "x", None) == b"\x00\x00\x00\x00\x65\x02x"
    assert s.schema_id("t") == 101
    with pytest.raises(RegistryError, match=r"memory://.*'u-value'.*KeyError"):
        AvroSerializer('"string"', reg, auto_register_schemas=False).serialize("u", "x", None)


def test_serialization_error_fails_send_synchronously() -> None:
    from kprod import Producer

    schema = '{"type":"record","name":"U","fields":[{"name":"a","type":"int"}]}'
    p = Producer(bootstrap_servers=f"127.0.0.1:{closed_port()}", value_serializer=AvroSerializer(schema))
    try:
        with pytest.raises(SerializationError, match=r"field 'a' of record U"):
            p.send("t", {"b": 1})
    finally:
        p.close(timeout=0)


# ====================================================================== Protobuf


def _field(name: str, number: int, type_: int, type_name: str = "", repeated: bool = False) -> _F:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    f = _F(name=name, number=number, type=type_, label=label)  # type: ignore[arg-type]
    if type_name:
        f.type_name = type_name
    return f


def _build_proto_classes() -> dict[str, Any]:
    """Message classes built at run time from FileDescriptorProtos (no protoc needed)."""
    pool = descriptor_pool.Default()
    orders = descriptor_pb2.FileDescriptorProto(
        name="kprod_serde_tests/orders.proto",
        package="kprodtests",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    order = orders.message_type.add(name="Order")
    order.field.extend(
        [
            _field("id", 1, _F.TYPE_STRING),
            _field("amount", 2, _F.TYPE_INT64),
            _field("ts", 3, _F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
            _field("tags", 4, _F.TYPE_STRING, repeated=True),
        ]
    )
    other = orders.message_type.add(name="Other")
    deep = other.nested_type.add(name="Deep")
    deep.nested_type.add(name="First").field.extend([_field("x", 1, _F.TYPE_INT32)])
    deep.nested_type.add(name="Deeper").field.extend([_field("y", 1, _F.TYPE_SINT32)])
    pool.Add(orders)
    common = descriptor_pb2.FileDescriptorProto(
        name="kprod_serde_tests/common.proto", package="kprodtests.common", syntax="proto3"
    )
    common.message_type.add(name="Money").field.extend(
        [_field("units", 1, _F.TYPE_INT64), _field("currency", 2, _F.TYPE_STRING)]
    )
    pool.Add(common)
    pay = descriptor_pb2.FileDescriptorProto(
        name="kprod_serde_tests/pay.proto",
        package="kprodtests",
        syntax="proto3",
        dependency=["kprod_serde_tests/common.proto"],
    )
    pay.message_type.add(name="Payment").field.extend(
        [_field("money", 1, _F.TYPE_MESSAGE, ".kprodtests.common.Money"), _field("ref", 2, _F.TYPE_STRING)]
    )
    pool.Add(pay)

    def cls(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return {
        "Order": cls("kprodtests.Order"),
        "Deeper": cls("kprodtests.Other.Deep.Deeper"),
        "Payment": cls("kprodtests.Payment"),
    }


PB = _build_proto_classes()


def _sample(name: str) -> Any:
    if name == "Order":
        m = PB["Order"](id="o-1", amount=-5, tags=["a", "b"])
        m.ts.seconds = 1_700_000_000
        return m
    if name == "Deeper":
        return PB["Deeper"](y=-3)
    m = PB["Payment"](ref="r-9")
    m.money.units = 7
    m.money.currency = "EUR"
    return m


def test_message_indexes() -> None:
    assert encode_message_indexes([0]) == b"\x00"
    assert encode_message_indexes([1]) == b"\x02\x02"
    assert encode_message_indexes([0, 0]) == b"\x04\x00\x00"
    assert encode_message_indexes([1, 0, 1]) == b"\x06\x02\x00\x02"
    assert encode_message_indexes([64]) == b"\x02\x80\x01"
    assert message_indexes(PB["Order"].DESCRIPTOR) == [0]
    assert message_indexes(PB["Deeper"].DESCRIPTOR) == [1, 0, 1]


@pytest.mark.parametrize("name", ["Order", "Deeper", "Payment"])
def test_protobuf_equals_confluent(
    client: SchemaRegistryClient, registry: ConfluentSchemaRegistry, name: str
) -> None:
    cls = PB[name]
    msg = _sample(name)
    kp = ProtobufSerializer(cls, registry)
    ck = CkProtobufSerializer(cls, client, conf=TOPIC_STRATEGY)
    mine = kp.serialize("pb-a", msg, None)  # kprod registers first here...
    assert mine == ck(msg, ctx("pb-a"))
    theirs = ck(msg, ctx("pb-b"))  # ...confluent-kafka there
    assert kp.serialize("pb-b", msg, None) == theirs
    assert CkProtobufDeserializer(cls, {})(mine, ctx("pb-a")) == msg
    if name == "Payment":  # the import is registered under its file name and referenced
        assert "kprod_serde_tests/common.proto" in client.get_subjects()
        refs = client.get_latest_version("pb-a-value").schema.references or []
        assert [(r.name, r.subject, r.version) for r in refs] == [
            ("kprod_serde_tests/common.proto", "kprod_serde_tests/common.proto", 1)
        ]


def test_protobuf_strategies_and_latest(
    client: SchemaRegistryClient, registry: ConfluentSchemaRegistry
) -> None:
    msg = _sample("Order")
    kp = ProtobufSerializer(PB["Order"], registry, subject_name_strategy=record_name_strategy, is_key=True)
    ck = CkProtobufSerializer(
        PB["Order"], client, conf={"subject.name.strategy": record_subject_name_strategy}
    )
    assert kp.serialize("k", msg, None) == ck(msg, ctx("k", key=True))
    assert "kprodtests.Order" in client.get_subjects()
    latest = ProtobufSerializer(
        PB["Order"],
        registry,
        subject_name_strategy=record_name_strategy,
        use_latest_version=True,
        auto_register_schemas=False,
    )
    ck_latest = CkProtobufSerializer(
        PB["Order"],
        client,
        conf={
            "subject.name.strategy": record_subject_name_strategy,
            "use.latest.version": True,
            "auto.register.schemas": False,
        },
    )
    assert latest.serialize("k", msg, None) == ck_latest(msg, ctx("k"))


def test_protobuf_errors(registry: ConfluentSchemaRegistry) -> None:
    s = ProtobufSerializer(PB["Order"], registry)
    with pytest.raises(
        SerializationError, match=r"expects a kprodtests\.Order message .* got a builtins\.str"
    ):
        s.serialize("t", "nope", None)
    with pytest.raises(SerializationError, match=r"cannot convert a dict to kprodtests\.Order.*bogus"):
        s.serialize("t", {"bogus": 1}, None)
    assert s.serialize("t", {"id": "x"}, None) == s.serialize("t", PB["Order"](id="x"), None)
    assert s.serialize("t", None, None) is None
    with pytest.raises(ConfigError, match="message class"):
        ProtobufSerializer(dict, registry)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lookup_version"):
        ProtobufSerializer(PB["Payment"], DictRegistry())
    with pytest.raises(RegistryError, match="auto_register_schemas"):
        ProtobufSerializer(PB["Order"], registry, auto_register_schemas=False).serialize(
            "never", _sample("Order"), None
        )


# ====================================================================== JSON Schema

ORDER_JSON_SCHEMA = json.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Order",
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "price": {"type": "number", "minimum": 0}},
                    "required": ["sku", "price"],
                },
            },
        },
        "required": ["id"],
    }
)

ORDER = {"id": "ö-1", "items": [{"sku": "a", "price": 1.5}, {"sku": "b", "price": 0}]}


def test_jsonschema_equals_confluent(client: SchemaRegistryClient, registry: ConfluentSchemaRegistry) -> None:
    kp = JsonSchemaSerializer(ORDER_JSON_SCHEMA, registry)
    ck = CkJsonSerializer(ORDER_JSON_SCHEMA, client, conf=TOPIC_STRATEGY)
    mine = kp.serialize("orders", ORDER, None)
    assert mine == ck(ORDER, ctx("orders"))
    assert mine is not None and json.loads(unframe(mine)[1]) == ORDER
    assert CkJsonDeserializer(None, schema_registry_client=client)(mine, ctx("orders")) == ORDER
    kp_t = JsonSchemaSerializer(ORDER_JSON_SCHEMA, registry, subject_name_strategy=topic_record_name_strategy)
    ck_t = CkJsonSerializer(
        ORDER_JSON_SCHEMA, client, conf={"subject.name.strategy": topic_record_subject_name_strategy}
    )
    assert kp_t.serialize("orders", ORDER, None) == ck_t(ORDER, ctx("orders"))
    assert "orders-Order" in client.get_subjects()


def test_jsonschema_validation_names_path(registry: ConfluentSchemaRegistry) -> None:
    s = JsonSchemaSerializer(ORDER_JSON_SCHEMA, registry)
    bad = {"id": "x", "items": [{"sku": "a", "price": 1}, {"sku": "b", "price": -1}]}
    with pytest.raises(SerializationError) as info:
        s.serialize("orders", bad, None)
    msg = str(info.value)
    assert "JsonSchemaSerializer" in msg and "'orders'" in msg and "Order" in msg
    assert "$.items[1].price" in msg and "minimum" in msg
    with pytest.raises(SerializationError, match=r"at \$: 'id' is a required property"):
        s.serialize("orders", {"items": []}, None)
    # validate=False lets it through
    assert JsonSchemaSerializer(ORDER_JSON_SCHEMA, registry, validate=False).serialize("orders", bad, None)


def test_json_unserializable_value_names_path(registry: ConfluentSchemaRegistry) -> None:
    s = JsonSchemaSerializer(ORDER_JSON_SCHEMA, registry)
    with pytest.raises(SerializationError) as info:
        s.serialize("orders", {"id": "x", "extra": {"seen": {1, 2}}}, None)
    msg = str(info.value)
    assert "JsonSchemaSerializer" in msg and "'orders'" in msg and "$.extra.seen" in msg and "set" in msg
    s2 = JsonSchemaSerializer(ORDER_JSON_SCHEMA, default=sorted)
    assert json.loads(s2.serialize("t", {"id": "x", "s": {2, 1}}, None) or b"") == {"id": "x", "s": [1, 2]}


def test_jsonschema_without_registry_and_config_errors(registry: ConfluentSchemaRegistry) -> None:
    assert JsonSchemaSerializer({"type": "integer"}).serialize("t", 5, None) == b"5"
    assert JsonSchemaSerializer({"type": "integer"}).serialize("t", None, None) is None
    with pytest.raises(ConfigError, match=r"invalid JSON Schema at \$\.type"):
        JsonSchemaSerializer({"type": 12})
    with pytest.raises(ConfigError, match="not valid JSON"):
        JsonSchemaSerializer("{nope")
    with pytest.raises(ConfigError, match="needs a named schema"):
        JsonSchemaSerializer({"type": "object"}, registry, subject_name_strategy=record_name_strategy)


def test_jsonschema_use_latest(client: SchemaRegistryClient, registry: ConfluentSchemaRegistry) -> None:
    strict = json.dumps({"type": "object", "properties": {"n": {"type": "integer", "maximum": 10}}})
    client.register_schema("lim-value", sr.Schema(strict, "JSON"))
    s = JsonSchemaSerializer(None, registry, use_latest_version=True, auto_register_schemas=False)
    out = s.serialize("lim", {"n": 3}, None)
    assert out is not None and unframe(out) == (client.get_latest_version("lim-value").schema_id, b'{"n":3}')
    with pytest.raises(SerializationError, match=r"\$\.n.*maximum"):
        s.serialize("lim", {"n": 11}, None)
