"""Tests for kprod.config: defaults, spelling, coercion, validation and Java's post-processing."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kprod.config import CONFIG_DEFS, ProducerConfig, attr_name
from kprod.errors import ConfigError
from kprod.serde import DefaultSerializer, JsonSerializer, StringSerializer

# Java 4.x producer defaults (java-producer.md §1), by Kafka name; batch.size is kprod's own
# (128 KiB against Java's 16384: docs/buffering-and-batching.md says why).
JAVA_DEFAULTS: dict[str, object] = {
    "acks": -1,
    "linger.ms": 5,
    "batch.size": 131072,
    "buffer.memory": 33554432,
    "max.block.ms": 60000,
    "max.request.size": 1048576,
    "request.timeout.ms": 30000,
    "delivery.timeout.ms": 120000,
    "max.in.flight.requests.per.connection": 5,
    "retries": 2147483647,
    "retry.backoff.ms": 100,
    "retry.backoff.max.ms": 1000,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 1000,
    "enable.idempotence": True,
    "transactional.id": None,
    "transaction.timeout.ms": 60000,
    "compression.type": "none",
    "compression.gzip.level": -1,
    "compression.lz4.level": 9,
    "compression.zstd.level": 3,
    "partitioner": None,
    "partitioner.ignore.keys": False,
    "partitioner.adaptive.partitioning.enable": True,
    "partitioner.availability.timeout.ms": 0,
    "metadata.max.age.ms": 300000,
    "metadata.max.idle.ms": 300000,
    "metadata.recovery.strategy": "rebootstrap",
    "socket.connection.setup.timeout.ms": 10000,
    "socket.connection.setup.timeout.max.ms": 30000,
    "connections.max.idle.ms": 540000,
    "send.buffer.bytes": 131072,
    "receive.buffer.bytes": 32768,
    "security.protocol": "PLAINTEXT",
    # Java's stores default to JKS; kprod reads PEM only, so PEM is its default (JKS is refused).
    "ssl.truststore.type": "PEM",
    "ssl.truststore.location": None,
    "ssl.truststore.certificates": None,
    "ssl.keystore.type": "PEM",
    "ssl.keystore.location": None,
    "ssl.key.location": None,
    "ssl.keystore.certificate.chain": None,
    "ssl.keystore.key": None,
    "ssl.key.password": None,
    "ssl.endpoint.identification.algorithm": "https",
    "ssl.enabled.protocols": ("TLSv1.2", "TLSv1.3"),
    "ssl.cipher.suites": None,
    "sasl.mechanism": "GSSAPI",
    "metrics.sample.window.ms": 30000,
    "metrics.num.samples": 2,
    "sasl.jaas.config": None,
    "sasl.login.callback.handler.class": None,
    "sasl.login.refresh.window.factor": 0.8,
    "sasl.login.refresh.buffer.seconds": 300,
    "sasl.oauthbearer.token.endpoint.url": None,
    "sasl.oauthbearer.scope": None,
    "sasl.oauthbearer.client.credentials.client.id": None,
    "sasl.oauthbearer.client.credentials.client.secret": None,
    "bootstrap.servers": None,
    "key.serializer": None,
    "value.serializer": None,
}


def err(config: Mapping[str, object] | None = None, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        ProducerConfig.from_user(config, **kwargs)
    assert info.value.stage == "config"
    return str(info.value)


# ------------------------------------------------------------------ defaults and the table


def test_defaults_equal_java() -> None:
    cfg = ProducerConfig.from_user()
    shown = cfg.to_dict()
    for name, value in JAVA_DEFAULTS.items():
        assert shown[name] == value, name
        assert CONFIG_DEFS[name].default == value or name == "client.id", name
    assert cfg.explicit == frozenset()


def test_table_and_dataclass_agree() -> None:
    field_names = [f.name for f in dataclasses.fields(ProducerConfig) if f.name != "explicit"]
    assert field_names == [d.attr for d in CONFIG_DEFS.values()]
    by_attr = {d.attr: d for d in CONFIG_DEFS.values()}
    for f in dataclasses.fields(ProducerConfig):
        if f.name != "explicit":
            assert f.default == by_attr[f.name].default, f.name
    # allow.auto.create.topics is librdkafka's name; the Java producer always asks (true).
    # kprod.exit.flush.timeout.ms is kprod's own (a Java or librdkafka client has no exit hook).
    assert set(CONFIG_DEFS) == set(JAVA_DEFAULTS) | {
        "client.id",
        "allow.auto.create.topics",
        "kprod.exit.flush.timeout.ms",
        "kprod.transaction.version",
        "kprod.transaction.await.previous",
        "kprod.live.port",
        "kprod.live.host",
        # librdkafka's (and confluent-kafka's) SASL settings, and kprod's token provider.
        "sasl.username",
        "sasl.password",
        "sasl.oauthbearer.token.provider",
        "sasl.oauthbearer.config",
        "enable.sasl.oauthbearer.unsecure.jwt",
        "sasl.oauthbearer.extensions",
        "sasl.oauthbearer.method",
        "statistics.interval.ms",
        "stats_cb",
        # Java's default is null (no timeout); kprod bounds the token endpoint's call.
        "sasl.login.connect.timeout.ms",
        "sasl.login.read.timeout.ms",
    }
    for d in CONFIG_DEFS.values():
        assert d.doc and d.valid and d.type
        assert d.attr == attr_name(d.name)


def test_every_default_parses_to_itself() -> None:
    for d in CONFIG_DEFS.values():
        if d.name == "bootstrap.servers":
            continue
        assert d.parse(d.name, d.default) == d.default, d.name


def test_client_id_generated_and_unique() -> None:
    a = ProducerConfig.from_user().client_id
    b = ProducerConfig.from_user().client_id
    assert re.fullmatch(r"kprod-producer-\d+", a)
    assert a != b
    assert ProducerConfig.from_user(client_id="me").client_id == "me"
    assert ProducerConfig.from_user(transactional_id="tx").client_id == "kprod-producer-tx"


# ------------------------------------------------------------------ spelling


def test_dict_and_keyword_spelling() -> None:
    a = ProducerConfig.from_user({"linger.ms": 7, "batch.size": 100, "client.id": "x"})
    b = ProducerConfig.from_user(linger_ms=7, batch_size=100, client_id="x")
    c = ProducerConfig.from_user({"linger.ms": 7}, batch_size=100, client_id="x")
    assert a == b == c
    assert a.linger_ms == 7 and a.batch_size == 100
    assert a.explicit == frozenset({"linger.ms", "batch.size", "client.id"})
    assert a.is_explicit("linger_ms") and a.is_explicit("linger.ms") and not a.is_explicit("acks")


def test_same_setting_twice() -> None:
    # Same value in two spellings (even "5" vs 5) is fine.
    assert ProducerConfig.from_user({"linger.ms": "5"}, linger_ms=5).linger_ms == 5
    msg = err({"linger.ms": 1}, linger_ms=2)
    assert "linger.ms" in msg and "linger_ms" in msg and "1" in msg and "2" in msg
    msg = err({"acks": "all"}, acks=1)
    assert "acks" in msg


def test_partitioner_class_alias() -> None:
    def part(topic: str, key: bytes | None, value: bytes | None, n: int) -> int:
        return 0

    assert ProducerConfig.from_user({"partitioner.class": part}).partitioner is part
    assert ProducerConfig.from_user(partitioner_class=part).partitioner is part
    cfg = ProducerConfig.from_user(partitioner=part, partitioner_class=part)
    assert cfg.explicit == frozenset({"partitioner"})

    def other(topic: str, key: bytes | None, value: bytes | None, n: int) -> int:
        return 1

    assert "partitioner" in err(partitioner=part, partitioner_class=other)


def test_unknown_name_suggests_close_match() -> None:
    msg = err({"lingr.ms": 5})
    assert "'lingr.ms'" in msg and "'linger.ms'" in msg
    msg = err(lingerms=5)
    assert "'lingerms'" in msg and "'linger_ms'" in msg
    msg = err({"linger_ms": 5})  # keyword spelling in the mapping
    assert "'linger.ms'" in msg
    msg = err(batchsize=1)
    assert "batch_size" in msg
    msg = err({"totally.unrelated": 1})
    assert "totally.unrelated" in msg and "did you mean" not in msg


def test_non_mapping_config() -> None:
    assert "mapping" in err(["linger.ms"])  # type: ignore[arg-type]
    assert "strings" in err({1: 2})  # type: ignore[dict-item]


# ------------------------------------------------------------------ coercion


def test_string_coercion() -> None:
    cfg = ProducerConfig.from_user(
        {
            "linger.ms": " 10 ",
            "batch.size": "0",
            "enable.idempotence": "TRUE",
            "partitioner.ignore.keys": "true",
            "compression.type": "ZSTD",
            "compression.zstd.level": "-5",
            "metadata.recovery.strategy": "None",
            "security.protocol": "plaintext",
        }
    )
    assert cfg.linger_ms == 10
    assert cfg.batch_size == 1  # 0 means 1, as Java
    assert cfg.enable_idempotence is True
    assert cfg.partitioner_ignore_keys is True
    assert cfg.compression_type == "zstd"
    assert cfg.compression_zstd_level == -5
    assert cfg.metadata_recovery_strategy == "none"
    assert cfg.security_protocol == "PLAINTEXT"
    assert ProducerConfig.from_user(partitioner_ignore_keys="false").partitioner_ignore_keys is False
    assert ProducerConfig.from_user(buffer_memory=64e6).buffer_memory == 64_000_000


@given(st.integers(min_value=0, max_value=2**40))
def test_int_string_roundtrip(n: int) -> None:
    assert ProducerConfig.from_user({"buffer.memory": str(n)}).buffer_memory == n


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("all", -1), ("ALL", -1), (" all ", -1), ("-1", -1), (-1, -1), (0, 0), ("0", 0), (1, 1), ("1", 1)],
)
def test_acks_normalization(raw: object, expected: int) -> None:
    cfg = ProducerConfig.from_user(acks=raw)
    assert cfg.acks == expected
    assert ProducerConfig.from_user({"acks": raw}).acks == expected


@pytest.mark.parametrize("raw", [2, "2", "none", True, 1.5, None, "-2"])
def test_acks_invalid(raw: object) -> None:
    msg = err(acks=raw)
    assert "'acks'" in msg and "all" in msg


# ------------------------------------------------------------------ invalid values


INVALID: list[tuple[str, object, str]] = [
    ("acks", 2, "'all', -1, 0 or 1"),
    ("linger.ms", -1, ">= 0"),
    ("kprod.exit.flush.timeout.ms", -1, ">= 0"),
    ("kprod.transaction.version", "3", "'auto'"),
    ("kprod.transaction.await.previous", "sometimes", "true"),
    ("kprod.live.port", -1, "None (off), 0 (a free port) or a TCP port in [1, 65535]"),
    ("kprod.live.port", 65536, "[1, 65535]"),
    ("kprod.live.port", "on", "[1, 65535]"),
    ("kprod.live.host", "", "a host name or IP address"),
    ("metrics.sample.window.ms", 0, ">= 1"),
    ("metrics.num.samples", 1, "[2, 2147483647]"),
    ("statistics.interval.ms", -1, "[0, 86400000]"),
    ("stats_cb", "print", "callable"),
    ("linger.ms", "soon", ">= 0"),
    ("linger.ms", True, ">= 0"),
    ("linger.ms", 1.5, ">= 0"),
    ("batch.size", 2**31, "2147483647"),
    ("buffer.memory", -5, ">= 0"),
    ("max.block.ms", [], ">= 0"),
    ("max.request.size", -1, "[0, 2147483647]"),
    ("request.timeout.ms", -1, "[0, 2147483647]"),
    ("delivery.timeout.ms", -1, "[0, 2147483647]"),
    ("max.in.flight.requests.per.connection", 0, "[1, 2147483647]"),
    ("retries", -1, "[0, 2147483647]"),
    ("retry.backoff.ms", -1, ">= 0"),
    ("retry.backoff.max.ms", -1, ">= 0"),
    ("reconnect.backoff.ms", -1, ">= 0"),
    ("reconnect.backoff.max.ms", -1, ">= 0"),
    ("enable.idempotence", "yes", "true or false"),
    ("enable.idempotence", 1, "true or false"),
    ("transactional.id", "", "non-empty"),
    ("transactional.id", 5, "non-empty"),
    ("transaction.timeout.ms", 0, "[1, 2147483647]"),
    ("compression.type", "brotli", "'zstd'"),
    ("compression.gzip.level", 0, "[1, 9]"),
    ("compression.gzip.level", 10, "-1 (the zlib default) or an integer in [1, 9]"),
    ("compression.lz4.level", 18, "[1, 17]"),
    ("compression.zstd.level", 23, "[-131072, 22]"),
    ("compression.zstd.level", -131073, "[-131072, 22]"),
    ("partitioner", 5, "callable"),
    ("partitioner.ignore.keys", "maybe", "true or false"),
    ("partitioner.adaptive.partitioning.enable", None, "true or false"),
    ("partitioner.availability.timeout.ms", -1, ">= 0"),
    ("metadata.max.age.ms", -1, ">= 0"),
    ("metadata.max.idle.ms", 4999, ">= 5000"),
    ("metadata.recovery.strategy", "always", "'rebootstrap'"),
    ("allow.auto.create.topics", "maybe", "true or false"),
    ("socket.connection.setup.timeout.ms", -1, ">= 0"),
    ("socket.connection.setup.timeout.max.ms", -1, ">= 0"),
    ("connections.max.idle.ms", -2, ">= -1"),
    ("send.buffer.bytes", -2, "[-1, 2147483647]"),
    ("receive.buffer.bytes", -2, "[-1, 2147483647]"),
    ("security.protocol", "TCP", "'PLAINTEXT'"),
    ("ssl.truststore.type", "JKS", "keytool"),
    ("ssl.truststore.location", "", "non-empty"),
    ("ssl.truststore.certificates", 5, "non-empty"),
    ("ssl.keystore.type", "PKCS12", "keytool"),
    ("ssl.keystore.location", "", "non-empty"),
    ("ssl.key.location", 5, "non-empty"),
    ("ssl.keystore.certificate.chain", "", "non-empty"),
    ("ssl.keystore.key", "", "non-empty"),
    ("ssl.key.password", "", "non-empty"),
    ("sasl.mechanism", "GSSAPI2", "'SCRAM-SHA-512'"),
    ("sasl.jaas.config", "", "non-empty"),
    ("sasl.username", 5, "non-empty"),
    ("sasl.password", "", "non-empty"),
    ("sasl.oauthbearer.token.provider", "token", "callable"),
    ("sasl.oauthbearer.config", 5, "non-empty"),
    ("enable.sasl.oauthbearer.unsecure.jwt", "yes", "true or false"),
    ("sasl.oauthbearer.token.endpoint.url", "", "non-empty"),
    ("sasl.oauthbearer.client.credentials.client.id", 5, "non-empty"),
    ("sasl.oauthbearer.client.credentials.client.secret", "", "non-empty"),
    ("sasl.oauthbearer.scope", 5, "non-empty"),
    ("sasl.oauthbearer.extensions", 5, "non-empty"),
    ("sasl.oauthbearer.method", "magic", "'oidc'"),
    ("sasl.login.callback.handler.class", 5, "non-empty"),
    ("sasl.login.connect.timeout.ms", -1, "[0, 2147483647]"),
    ("sasl.login.read.timeout.ms", -1, "[0, 2147483647]"),
    ("sasl.login.refresh.window.factor", 0.2, "[0.5, 1.0]"),
    ("sasl.login.refresh.buffer.seconds", 4000, "[0, 3600]"),
    ("ssl.endpoint.identification.algorithm", "http", "'https'"),
    ("ssl.enabled.protocols", "TLSv1.1", "TLSv1.2"),
    ("ssl.cipher.suites", "", "non-empty"),
    ("client.id", 5, "string"),
    ("bootstrap.servers", 5, "host:port"),
    ("bootstrap.servers", "", "empty"),
    ("bootstrap.servers", [], "empty"),
    ("key.serializer", 5, "serialize"),
    ("value.serializer", "avro", "'json'"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), INVALID, ids=[f"{n}={v!r}" for n, v, _ in INVALID])
def test_invalid_value_names_setting_value_and_range(name: str, value: object, allowed: str) -> None:
    for msg in (err({name: value}), err(None, **{attr_name(name): value})):
        assert repr(name) in msg, msg
        assert allowed in msg, msg
        if not (isinstance(value, str) and value == ""):
            assert repr(value)[:20] in msg or str(value) in msg, msg


def test_every_setting_has_an_invalid_case() -> None:
    tested = {n for n, _, _ in INVALID}
    assert tested == set(CONFIG_DEFS)


@pytest.mark.parametrize("proto", ["SASL_PLAINTEXT", "sasl_ssl"])
def test_sasl_protocols_are_accepted(proto: str) -> None:
    cfg = ProducerConfig.from_user(security_protocol=proto, sasl_mechanism="scram-sha-512")
    assert cfg.security_protocol == proto.upper() and cfg.sasl_mechanism == "SCRAM-SHA-512"


def test_ssl_is_accepted_and_the_key_password_stays_out_of_the_repr() -> None:
    cfg = ProducerConfig.from_user({"security.protocol": "ssl", "ssl.key.password": "s3cret"})
    assert cfg.security_protocol == "SSL" and "s3cret" not in repr(cfg)


# ------------------------------------------------------------------ bootstrap.servers


def test_bootstrap_parsing() -> None:
    cfg = ProducerConfig.from_user(bootstrap_servers="a:1, b.example.com:9092,,[::1]:9093")
    assert cfg.bootstrap_servers == (("a", 1), ("b.example.com", 9092), ("::1", 9093))
    assert cfg.to_dict()["bootstrap.servers"] == ["a:1", "b.example.com:9092", "[::1]:9093"]
    assert ProducerConfig.from_user({"bootstrap.servers": ["h:1", ("k", 2)]}).bootstrap_servers == (
        ("h", 1),
        ("k", 2),
    )
    assert ProducerConfig.from_user(bootstrap_servers=("h", 5)).bootstrap_servers == (("h", 5),)
    assert ProducerConfig.from_user(bootstrap_servers="PLAINTEXT://h:9").bootstrap_servers == (("h", 9),)
    assert ProducerConfig.from_user(bootstrap_servers=None).bootstrap_servers is None


@pytest.mark.parametrize("bad", ["host", "host:", ":9092", "host:0", "host:65536", "host:x", "[::1]9092"])
def test_bootstrap_invalid_entry(bad: str) -> None:
    msg = err(bootstrap_servers=f"ok:1,{bad}")
    assert "bootstrap.servers" in msg and repr(bad) in msg and "host:port" in msg


# ------------------------------------------------------------------ delivery.timeout.ms


def test_delivery_timeout_raised_when_default() -> None:
    cfg = ProducerConfig.from_user(linger_ms=100_000, request_timeout_ms=30_000)
    assert cfg.delivery_timeout_ms == 130_000
    assert "delivery.timeout.ms" not in cfg.explicit
    assert ProducerConfig.from_user(linger_ms=1000).delivery_timeout_ms == 120_000


def test_delivery_timeout_explicit_too_low() -> None:
    msg = err(delivery_timeout_ms=30_004)
    assert "delivery.timeout.ms" in msg and "linger.ms" in msg and "request.timeout.ms" in msg
    assert "30005" in msg and "30004" in msg
    assert ProducerConfig.from_user(delivery_timeout_ms=30_005).delivery_timeout_ms == 30_005
    assert ProducerConfig.from_user(delivery_timeout_ms=10, linger_ms=0, request_timeout_ms=10).linger_ms == 0


def test_linger_capped_to_int_max() -> None:
    cfg = ProducerConfig.from_user(linger_ms=2**40)
    assert cfg.linger_ms == 2**31 - 1
    assert cfg.delivery_timeout_ms == 2**31 - 1


def test_reconnect_backoff_max_follows_explicit_min() -> None:
    assert ProducerConfig.from_user(reconnect_backoff_ms=200).reconnect_backoff_max_ms == 200
    cfg = ProducerConfig.from_user(reconnect_backoff_ms=200, reconnect_backoff_max_ms=5000)
    assert cfg.reconnect_backoff_max_ms == 5000


# ------------------------------------------------------------------ idempotence rules


@pytest.mark.parametrize(
    ("extra", "other"), [({"acks": 1}, "acks"), ({"acks": "0"}, "acks"), ({"retries": 0}, "retries")]
)
def test_idempotence_explicit_conflicts(extra: dict[str, Any], other: str) -> None:
    for flag in (True, "true"):
        msg = err({"enable.idempotence": flag, **extra})
        assert "enable.idempotence" in msg and repr(other) in msg


def test_idempotence_explicit_max_in_flight() -> None:
    msg = err({"enable.idempotence": True, "max.in.flight.requests.per.connection": 6})
    assert "enable.idempotence" in msg and "max.in.flight.requests.per.connection" in msg
    assert "at most 5" in msg


@pytest.mark.parametrize("extra", [{"acks": 1}, {"acks": 0}, {"retries": 0}, {"acks": "1", "retries": "0"}])
def test_idempotence_implicitly_disabled(extra: dict[str, Any]) -> None:
    cfg = ProducerConfig.from_user(extra)
    assert cfg.enable_idempotence is False
    assert "enable.idempotence" not in cfg.explicit


def test_max_in_flight_with_default_idempotence_is_error() -> None:
    # Java 4: the in-flight check runs while idempotence is (default) on, even with acks=1.
    for extra in ({}, {"acks": 1}):
        msg = err({"max.in.flight.requests.per.connection": 6, **extra})
        assert "max.in.flight.requests.per.connection" in msg and "at most 5" in msg
        assert "enable.idempotence=false" in msg
    cfg = ProducerConfig.from_user(max_in_flight_requests_per_connection=10, enable_idempotence=False)
    assert cfg.max_in_flight_requests_per_connection == 10 and cfg.enable_idempotence is False
    assert ProducerConfig.from_user(max_in_flight_requests_per_connection=5).enable_idempotence is True


def test_idempotence_explicit_false_allows_anything() -> None:
    cfg = ProducerConfig.from_user(enable_idempotence="false", acks=0, retries=0)
    assert cfg.enable_idempotence is False and cfg.acks == 0 and cfg.retries == 0


def test_transactional_id_needs_idempotence() -> None:
    msg = err(transactional_id="tx", enable_idempotence=False)
    assert "transactional.id" in msg and "enable.idempotence" in msg
    msg = err(transactional_id="tx", acks=1)  # implicitly disabled → still an error (Java)
    assert "transactional.id" in msg and "acks=1" in msg
    msg = err(transactional_id="tx", retries=0)
    assert "retries=0" in msg
    cfg = ProducerConfig.from_user(transactional_id="tx")
    assert cfg.enable_idempotence is True and cfg.transactional_id == "tx"
    assert ProducerConfig.from_user(transactional_id=None, acks=1).enable_idempotence is False


# ------------------------------------------------------------------ serializers and to_dict


def test_serializers_resolved() -> None:
    cfg = ProducerConfig.from_user({"value.serializer": "json"}, key_serializer="str")
    assert isinstance(cfg.value_serializer, JsonSerializer)
    assert isinstance(cfg.key_serializer, StringSerializer)
    assert cfg.value_serializer.serialize("t", {"a": 1}, None) == b'{"a":1}'
    fn_cfg = ProducerConfig.from_user(value_serializer=lambda d: bytes(d))
    assert fn_cfg.value_serializer is not None
    assert fn_cfg.value_serializer.serialize("t", [1, 2], None) == b"\x01\x02"
    assert ProducerConfig.from_user(value_serializer="default").value_serializer is not None
    from_class = ProducerConfig.from_user(value_serializer=DefaultSerializer).value_serializer
    assert isinstance(from_class, DefaultSerializer)


def test_to_dict_roundtrip() -> None:
    cfg = ProducerConfig.from_user(
        bootstrap_servers="h:1,[fe80::1]:2", acks="1", linger_ms="20", value_serializer="json"
    )
    d = cfg.to_dict()
    assert list(d) == list(CONFIG_DEFS)
    assert d["acks"] == 1 and d["linger.ms"] == 20 and d["enable.idempotence"] is False
    again = ProducerConfig.from_user(d)
    assert again == cfg
    assert again.explicit == frozenset(CONFIG_DEFS)


def test_frozen() -> None:
    cfg = ProducerConfig.from_user()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.linger_ms = 1  # type: ignore[misc]


def test_librdkafka_names_with_the_same_meaning_are_taken() -> None:
    """A confluent-kafka config dict works where the meaning is the same (units converted)."""
    cfg = ProducerConfig.from_user(
        {
            "queue.buffering.max.ms": 20,
            "queue.buffering.max.kbytes": 1024,
            "compression.codec": "lz4",
            "request.required.acks": 1,
            "message.timeout.ms": 40_000,
            "message.max.bytes": 2_000_000,
            "message.send.max.retries": 7,
            "max.in.flight": 3,
            "sasl.mechanisms": "PLAIN",
            "ssl.ca.location": "/etc/ca.pem",
            "partitioner": "consistent_random",
            "enable.idempotence": False,
        }
    )
    assert (cfg.linger_ms, cfg.buffer_memory, cfg.compression_type, cfg.acks) == (20, 1_048_576, "lz4", 1)
    assert (cfg.delivery_timeout_ms, cfg.max_request_size, cfg.retries) == (40_000, 2_000_000, 7)
    assert (cfg.max_in_flight_requests_per_connection, cfg.sasl_mechanism) == (3, "PLAIN")
    assert (cfg.ssl_truststore_location, cfg.partitioner) == ("/etc/ca.pem", "consistent_random")
    assert ProducerConfig.from_user(queue_buffering_max_kbytes=4).buffer_memory == 4096
    with pytest.raises(ConfigError, match="given twice"):
        ProducerConfig.from_user({"linger.ms": 5, "queue.buffering.max.ms": 10})


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("batch.num.messages", "batch.size"),
        ("queue.buffering.max.messages", "buffer.memory"),
        ("socket.timeout.ms", "request.timeout.ms"),
        ("compression.level", "compression.zstd.level"),
        ("dr_msg_cb", "on_delivery"),
    ],
)
def test_librdkafka_names_without_a_twin_are_refused_with_the_kafka_name(name: str, hint: str) -> None:
    msg = err({name: 1})
    assert repr(name) in msg and "librdkafka" in msg and hint in msg, msg
