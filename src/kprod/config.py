"""Producer configuration: Kafka setting names, Java 4.x defaults and validation.

:data:`CONFIG_DEFS` is the single table of every setting (Kafka name, type,
default, parser/validator, doc); :class:`ProducerConfig`'s field defaults are
taken from it, and :meth:`ProducerConfig.from_user` parses user input with it.

Settings are given either as a mapping with Kafka names
(``{"linger.ms": 10}``) or as keywords with dots/dashes turned into underscores
(``linger_ms=10``). Strings are accepted for numbers and booleans (``"5"``,
``"true"``), as in a Java properties file. All durations are in milliseconds
and all sizes in bytes, as in Kafka.

Why one module of about 1,000 lines: most of it is the table itself, one entry per setting with its
documentation; the table, its parsers and the dataclass built from it must change together.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from kprod.errors import ConfigError
from kprod.serde.base import BUILTIN_SERIALIZER_NAMES, Serializer, resolve_serializer

Partitioner: TypeAlias = Callable[[str, bytes | None, bytes | None, int], int]
"""``partitioner(topic, key_bytes, value_bytes, num_partitions) -> partition``."""

BootstrapServers: TypeAlias = tuple[tuple[str, int], ...]
"""Parsed ``bootstrap.servers``: ``((host, port), ...)``."""

INT32_MAX: Final[int] = 2**31 - 1
INT64_MAX: Final[int] = 2**63 - 1


class _Invalid(Exception):
    """Raised by a parser: ``allowed`` describes what the setting accepts."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


Parser: TypeAlias = Callable[[str, object], Any]
"""``parse(kafka_name, raw_value) -> value``; raises ``_Invalid`` or ``ConfigError``."""


@dataclass(frozen=True, slots=True)
class ConfigDef:
    """One producer setting.

    ``name`` is the Kafka name (``linger.ms``), ``type`` a short type label for
    docs (``int``, ``long``, ``bool``, ``str``, ``list``, ``callable``,
    ``serializer``), ``default`` the Java 4.x default (already parsed),
    ``valid`` a human description of the allowed values, ``parse`` the function
    that coerces and validates a user value, ``doc`` the one-line description.
    """

    name: str
    type: str
    default: Any
    valid: str
    parse: Parser
    doc: str
    aliases: tuple[str, ...] = ()

    @property
    def attr(self) -> str:
        """The Python attribute / keyword name (dots and dashes become underscores)."""
        return attr_name(self.name)


def attr_name(kafka_name: str) -> str:
    """``"linger.ms"`` → ``"linger_ms"``."""
    return kafka_name.replace(".", "_").replace("-", "_")


# ---------------------------------------------------------------------------- parsers


def _int(lo: int, hi: int) -> Parser:
    allowed = f"an integer >= {lo}" if hi == INT64_MAX else f"an integer in [{lo}, {hi}]"

    def parse(name: str, raw: object) -> int:
        if isinstance(raw, bool):
            raise _Invalid(allowed)
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str):
            try:
                value = int(raw.strip(), 10)
            except ValueError:
                raise _Invalid(allowed) from None
        elif isinstance(raw, float) and raw.is_integer():
            value = int(raw)
        else:
            raise _Invalid(allowed)
        if not lo <= value <= hi:
            raise _Invalid(allowed)
        return value

    return parse


def _gzip_level(name: str, raw: object) -> int:
    allowed = "-1 (the zlib default) or an integer in [1, 9]"
    try:
        value: int = _int(-1, 9)(name, raw)
    except _Invalid:
        raise _Invalid(allowed) from None
    if value == 0:
        raise _Invalid(allowed)
    return value


def _bool(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text == "true":
            return True
        if text == "false":
            return False
    raise _Invalid('true or false (or the strings "true" / "false")')


def _choice(*allowed: str) -> Parser:
    desc = "one of " + ", ".join(repr(a) for a in allowed) + " (case-insensitive)"
    lowered = {a.lower(): a for a in allowed}

    def parse(name: str, raw: object) -> str:
        if isinstance(raw, str):
            hit = lowered.get(raw.strip().lower())
            if hit is not None:
                return hit
        raise _Invalid(desc)

    return parse


def _acks(name: str, raw: object) -> int:
    allowed = "'all', -1, 0 or 1 (as int or string); 'all' is the same as -1"
    if isinstance(raw, bool):
        raise _Invalid(allowed)
    if isinstance(raw, int) and raw in (-1, 0, 1):
        return raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text == "all":
            return -1
        if text in ("-1", "0", "1"):
            return int(text)
    raise _Invalid(allowed)


def _str(name: str, raw: object) -> str:
    if isinstance(raw, str):
        return raw
    raise _Invalid("a string")


def _optional_nonempty_str(name: str, raw: object) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str) and raw.strip():
        return raw
    raise _Invalid("a non-empty string, or None for no value")


def _parse_host_port(entry: str) -> tuple[str, int]:
    text = entry.strip()
    if "://" in text:  # tolerate "PLAINTEXT://host:9092" as listeners are written
        text = text.split("://", 1)[1]
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(entry)
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(entry)
    if not host or not port_text.isdigit():
        raise ValueError(entry)
    port = int(port_text)
    if not 0 < port <= 65535:
        raise ValueError(entry)
    return host, port


def _bootstrap(name: str, raw: object) -> BootstrapServers | None:
    allowed = (
        "'host:port' or a comma-separated string / list of them ('[::1]:9092' for IPv6, port 1..65535), "
        "or None to use the embedded broker"
    )
    if raw is None:
        return None
    items: list[object]
    if isinstance(raw, str):
        items = list(raw.split(","))
    elif isinstance(raw, (list, tuple)):
        if len(raw) == 2 and isinstance(raw[0], str) and isinstance(raw[1], int):
            items = [raw]  # a single (host, port) pair
        else:
            items = list(raw)
    else:
        raise _Invalid(allowed)
    out: list[tuple[str, int]] = []
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                continue  # Java skips empty entries
            try:
                out.append(_parse_host_port(item))
            except ValueError:
                raise ConfigError(
                    f"Invalid entry {item.strip()!r} in setting 'bootstrap.servers' (value {raw!r}): "
                    f"expected {allowed}"
                ) from None
        elif (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and item[0]
            and isinstance(item[1], int)
            and not isinstance(item[1], bool)
            and 0 < item[1] <= 65535
        ):
            out.append((item[0], item[1]))
        else:
            raise ConfigError(
                f"Invalid entry {item!r} in setting 'bootstrap.servers' (value {raw!r}): expected {allowed}"
            )
    if not out:
        raise _Invalid(allowed + "; the list is empty")
    return tuple(out)


LIBRDKAFKA_PARTITIONER_NAMES: Final = (
    "random",
    "consistent",
    "consistent_random",
    "murmur2",
    "murmur2_random",
    "fnv1a",
    "fnv1a_random",
)
"""librdkafka's ``partitioner`` values, accepted by name (placement checked against confluent-kafka)."""


def _partitioner(name: str, raw: object) -> Partitioner | str | None:
    allowed = (
        "None, one of librdkafka's partitioners (" + ", ".join(LIBRDKAFKA_PARTITIONER_NAMES) + "), or a "
        "callable (topic: str, key: bytes | None, value: bytes | None, num_partitions: int) -> int"
    )
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw.strip() in LIBRDKAFKA_PARTITIONER_NAMES:
            return raw.strip()
        raise _Invalid(allowed)
    if not callable(raw):
        raise _Invalid(allowed)
    try:
        sig = inspect.signature(raw)
    except (TypeError, ValueError):
        return raw
    try:
        sig.bind("t", None, None, 1)
    except TypeError:
        raise _Invalid(allowed + f"; its signature {sig} does not take those 4 arguments") from None
    return raw


def _serializer(name: str, raw: object) -> Serializer | None:
    if raw is None:
        return None
    return resolve_serializer(raw, setting=name)


def _security_protocol(name: str, raw: object) -> str:
    return str(_choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")(name, raw))


def _sasl_mechanism(name: str, raw: object) -> str:
    return str(_choice("GSSAPI", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")(name, raw))


def _optional_callable(name: str, raw: object) -> Callable[..., Any] | None:
    if raw is None:
        return None
    if not callable(raw):
        raise _Invalid("None, or a callable that returns a token")
    return raw


def _optional_float(lo: float, hi: float) -> Parser:
    def parse(name: str, raw: object) -> float:
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _Invalid(f"a number in [{lo}, {hi}]") from None
        if not lo <= value <= hi:
            raise _Invalid(f"a number in [{lo}, {hi}]")
        return value

    return parse


def _live_port(name: str, raw: object) -> int | None:
    if raw is None:
        return None
    try:
        value: int = _int(0, 65535)(name, raw)
    except _Invalid:
        raise _Invalid("None (off), 0 (a free port) or a TCP port in [1, 65535]") from None
    return value


def _live_host(name: str, raw: object) -> str:
    if isinstance(raw, str) and raw.strip() and not any(c.isspace() for c in raw.strip()):
        return raw.strip()
    raise _Invalid("a host name or IP address to listen on, such as '127.0.0.1' or '::1'")


def _login_callback_handler(name: str, raw: object) -> str | None:
    value = _optional_nonempty_str(name, raw)
    if value is not None and not value.endswith(".OAuthBearerLoginCallbackHandler"):
        raise ConfigError(
            f"Setting 'sasl.login.callback.handler.class'={value!r} names a Java class kprod cannot run; "
            "kprod knows OAuthBearerLoginCallbackHandler (the OIDC client-credentials login, KIP-768). "
            "For a login of your own, pass a Python callable as sasl.oauthbearer.token.provider",
            stage="config",
        )
    return value


def _store_type(name: str, raw: object) -> str:
    value = str(_choice("PEM", "JKS", "PKCS12")(name, raw.upper() if isinstance(raw, str) else raw))
    if value != "PEM":
        raise ConfigError(
            f"Setting '{name}'={value!r} is not supported: kprod reads PEM files. Convert the store, e.g. "
            "`keytool -importkeystore -srckeystore store.jks -destkeystore store.p12 -deststoretype PKCS12` "
            "then `openssl pkcs12 -in store.p12 -out store.pem -nodes`, and set "
            f"{name}='PEM' with the .pem file"
        )
    return value


def _protocols(name: str, raw: object) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not items:
        raise _Invalid("a comma-separated list of TLSv1.2 and TLSv1.3")
    out = tuple(str(i).strip() for i in items)
    if not set(out) <= {"TLSv1.2", "TLSv1.3"}:
        raise _Invalid("a comma-separated list of TLSv1.2 and TLSv1.3")
    return out


# ---------------------------------------------------------------------------- the table

_I32 = INT32_MAX
_I64 = INT64_MAX


def _d(name: str, type_: str, default: Any, valid: str, parse: Parser, doc: str, *aliases: str) -> ConfigDef:
    return ConfigDef(name, type_, default, valid, parse, doc, aliases)


# fmt: off
_DEFS: Final[tuple[ConfigDef, ...]] = (
    _d("bootstrap.servers", "list", None, "host:port list, or None", _bootstrap,
       "Brokers for the first connection, as 'host:port' (comma-separated string or list). "
       "Default None: a higher layer uses the embedded broker."),
    _d("client.id", "str", "", "any string", _str,
       "Sent in every request header. Default '': becomes 'kprod-producer-<n>' "
       "(or 'kprod-producer-<transactional.id>')."),
    _d("acks", "int", -1, "all, -1, 0, 1", _acks,
       "Acknowledgements required: 0 none, 1 the leader, all (-1) every in-sync replica. Default all.",
       "request.required.acks"),
    _d("linger.ms", "long", 5, "[0, ...]", _int(0, _I64),
       "Milliseconds to wait for more records before sending a non-full batch. Default 5 ms.",
       "queue.buffering.max.ms"),
    _d("batch.size", "int", 131072, "[0, ...]", _int(0, _I32),
       "Bytes per partition batch (uncompressed); also how far the sticky partitioner goes before it "
       "moves on. Default 131072 (128 KiB; the Java producer's is 16384, see "
       "docs/buffering-and-batching.md); 0 is treated as 1 (no batching)."),
    _d("buffer.memory", "long", 33554432, "[0, ...]", _int(0, _I64),
       "Total bytes for records waiting to be sent. Default 33554432 (32 MiB)."),
    _d("max.block.ms", "long", 60000, "[0, ...]", _int(0, _I64),
       "Milliseconds send()/flush-related calls may block for metadata or buffer space. Default 60000."),
    _d("max.request.size", "int", 1048576, "[0, ...]", _int(0, _I32),
       "Maximum bytes of one Produce request, and of one serialized record. Default 1048576 (1 MiB).",
       "message.max.bytes"),
    _d("request.timeout.ms", "int", 30000, "[0, ...]", _int(0, _I32),
       "Milliseconds to wait for a broker response before retrying/failing. Default 30000."),
    _d("delivery.timeout.ms", "int", 120000, "[0, ...], >= linger.ms + request.timeout.ms", _int(0, _I32),
       "Upper bound in milliseconds from send() to success/failure. Default 120000; "
       "if left unset it is raised to linger.ms + request.timeout.ms when that is larger.",
       "message.timeout.ms"),
    _d("max.in.flight.requests.per.connection", "int", 5, "[1, ...]", _int(1, _I32),
       "Unacknowledged requests per connection; at most 5 with idempotence. Default 5.",
       "max.in.flight"),
    _d("retries", "int", INT32_MAX, "[0, 2147483647]", _int(0, _I32),
       "Retries of a batch after a retriable error (delivery.timeout.ms is the real bound). "
       "Default 2147483647.",
       "message.send.max.retries"),
    _d("retry.backoff.ms", "long", 100, "[0, ...]", _int(0, _I64),
       "Initial milliseconds between retries (exponential x2, 20% jitter). Default 100."),
    _d("retry.backoff.max.ms", "long", 1000, "[0, ...]", _int(0, _I64),
       "Maximum milliseconds between retries. Default 1000."),
    _d("reconnect.backoff.ms", "long", 50, "[0, ...]", _int(0, _I64),
       "Initial milliseconds before reconnecting to a broker (exponential, 20% jitter). Default 50."),
    _d("reconnect.backoff.max.ms", "long", 1000, "[0, ...]", _int(0, _I64),
       "Maximum reconnect backoff in milliseconds. Default 1000; if only reconnect.backoff.ms is "
       "set, this becomes that value (no exponential growth)."),
    _d("enable.idempotence", "bool", True, "true, false", _bool,
       "Exactly-once, in-order writes per partition (producer id + sequence numbers). Default true; "
       "silently disabled when acks != all or retries == 0 unless set explicitly."),
    _d("transactional.id", "str", None, "non-empty string, or None", _optional_nonempty_str,
       "Enables transactions under this id (implies idempotence). Default None."),
    _d("transaction.timeout.ms", "int", 60000, "[1, ...]", _int(1, _I32),
       "Milliseconds the coordinator waits before aborting an open transaction. Default 60000."),
    _d("kprod.transaction.version", "str", "auto", "auto, 1", _choice("auto", "1"),
       "Transaction protocol: auto uses the cluster's finalized transaction.version (2 on Kafka 4.x: "
       "partitions join with the first Produce, KIP-890), as Java does; 1 adds them with "
       "AddPartitionsToTxn as librdkafka does, faster for back-to-back short transactions. Default auto."),
    _d("kprod.transaction.await.previous", "bool", True, "true, false", _bool,
       "Transactions v2 only: after a commit or abort, the next transaction's batches and offsets wait "
       "(100 ms at most) until the coordinator says (DescribeTransactions) that the ended transaction's "
       "markers are written, instead of being held 20 ms by the partition leader when they arrive "
       "too early. false sends them at once, as Java does. Default true."),
    _d("compression.type", "str", "none", "none, gzip, snappy, lz4, zstd",
       _choice("none", "gzip", "snappy", "lz4", "zstd"),
       "Batch compression codec. Default none.",
       "compression.codec"),
    _d("compression.gzip.level", "int", -1, "-1 or [1, 9]", _gzip_level,
       "gzip level; -1 is zlib's default (6). Default -1."),
    _d("compression.lz4.level", "int", 9, "[1, 17]", _int(1, 17),
       "lz4 level. Default 9."),
    _d("compression.zstd.level", "int", 3, "[-131072, 22]", _int(-131072, 22),
       "zstd level. Default 3."),
    _d("partitioner", "callable", None,
       "None, a librdkafka partitioner name, or callable(topic, key, value, num_partitions) -> int",
       _partitioner,
       "Custom partitioner over serialized key/value bytes, or one of librdkafka's by name (random, "
       "consistent, consistent_random (confluent-kafka's default: CRC32 of the key), murmur2, "
       "murmur2_random, fnv1a, fnv1a_random), placing each key where confluent-kafka does. Default None: "
       "the built-in murmur2 / uniform-sticky logic (= murmur2_random). Alias: partitioner.class.",
       "partitioner.class"),
    _d("partitioner.ignore.keys", "bool", False, "true, false", _bool,
       "If true, keys are not hashed: every record uses the uniform sticky partitioner. Default false."),
    _d("partitioner.adaptive.partitioning.enable", "bool", True, "true, false", _bool,
       "Weight the sticky partition choice by broker queue lengths (KIP-794). Default true."),
    _d("partitioner.availability.timeout.ms", "long", 0, "[0, ...]", _int(0, _I64),
       "Skip partitions whose leader has not drained for this many ms; 0 disables. Default 0."),
    _d("metadata.max.age.ms", "long", 300000, "[0, ...]", _int(0, _I64),
       "Milliseconds after which metadata is refreshed even without errors. Default 300000."),
    _d("metadata.max.idle.ms", "long", 300000, "[5000, ...]", _int(5000, _I64),
       "Milliseconds after which an unused topic is dropped from metadata. Default 300000."),
    _d("allow.auto.create.topics", "bool", True, "true, false", _bool,
       "Ask the broker to create a topic that does not exist when its metadata is requested (the Java "
       "producer always asks; the broker decides with auto.create.topics.enable). Default true."),
    _d("metadata.recovery.strategy", "str", "rebootstrap", "none, rebootstrap",
       _choice("none", "rebootstrap"),
       "What to do when no known broker is reachable: rebootstrap from bootstrap.servers, or none. "
       "Default rebootstrap."),
    _d("socket.connection.setup.timeout.ms", "long", 10000, "[0, ...]", _int(0, _I64),
       "Milliseconds allowed for a TCP connect (grows exponentially per failure). Default 10000."),
    _d("socket.connection.setup.timeout.max.ms", "long", 30000, "[0, ...]", _int(0, _I64),
       "Cap of the connect timeout in milliseconds. Default 30000."),
    _d("connections.max.idle.ms", "long", 540000, "-1 or [0, ...]", _int(-1, _I64),
       "Close connections idle for this many milliseconds; -1 never. Default 540000 (9 min)."),
    _d("send.buffer.bytes", "int", 131072, "-1 or [0, ...]", _int(-1, _I32),
       "SO_SNDBUF in bytes; -1 uses the OS default. Default 131072."),
    _d("receive.buffer.bytes", "int", 32768, "-1 or [0, ...]", _int(-1, _I32),
       "SO_RCVBUF in bytes; -1 uses the OS default. Default 32768."),
    _d("security.protocol", "str", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL", _security_protocol,
       "Protocol to talk to brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS). "
       "Default PLAINTEXT."),
    _d("ssl.truststore.type", "str", "PEM", "PEM (JKS/PKCS12: convert them)", _store_type,
       "Format of the trust store. Default PEM."),
    _d("ssl.truststore.location", "str", None, "a PEM file, or None", _optional_nonempty_str,
       "CA certificates to trust (PEM file). Default None: the system's CA store.", "ssl.ca.location"),
    _d("ssl.truststore.certificates", "str", None, "PEM text, or None", _optional_nonempty_str,
       "CA certificates to trust, inline PEM. Default None."),
    _d("ssl.keystore.type", "str", "PEM", "PEM (JKS/PKCS12: convert them)", _store_type,
       "Format of the key store. Default PEM."),
    _d("ssl.keystore.location", "str", None, "a PEM file, or None", _optional_nonempty_str,
       "The client's private key and certificate chain in one PEM file (mutual TLS). Default None.",
       "ssl.certificate.location"),
    _d("ssl.key.location", "str", None, "a PEM file, or None", _optional_nonempty_str,
       "The client's private key in its own PEM file (librdkafka's setting). Default None."),
    _d("ssl.keystore.certificate.chain", "str", None, "PEM text, or None", _optional_nonempty_str,
       "The client's certificate chain, inline PEM (with ssl.keystore.key). Default None."),
    _d("ssl.keystore.key", "str", None, "PEM text, or None", _optional_nonempty_str,
       "The client's private key, inline PEM. Default None."),
    _d("ssl.key.password", "str", None, "a string, or None", _optional_nonempty_str,
       "Password of an encrypted private key. Default None."),
    _d("ssl.endpoint.identification.algorithm", "str", "https", "https or '' (empty)", _choice("https", ""),
       "https: check the broker's host name against its certificate; '': do not. Default https."),
    _d("ssl.enabled.protocols", "list", ("TLSv1.2", "TLSv1.3"), "TLSv1.2, TLSv1.3", _protocols,
       "TLS versions allowed. Default TLSv1.2,TLSv1.3."),
    _d("ssl.cipher.suites", "str", None, "OpenSSL cipher list, or None", _optional_nonempty_str,
       "TLS 1.2 cipher suites (OpenSSL names, colon-separated). Default None: Python's defaults."),
    _d("sasl.mechanism", "str", "GSSAPI", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER", _sasl_mechanism,
       "SASL mechanism with security.protocol SASL_*. Default GSSAPI, as in Java, which kprod does not "
       "speak: set it.", "sasl.mechanisms"),
    _d("sasl.jaas.config", "password", None, "Java JAAS syntax, or None", _optional_nonempty_str,
       "A Java client's login module line (PlainLoginModule, ScramLoginModule, OAuthBearerLoginModule) "
       "with its options. Default None."),
    _d("sasl.username", "str", None, "a string, or None", _optional_nonempty_str,
       "User name for PLAIN and SCRAM (instead of sasl.jaas.config). Default None."),
    _d("sasl.password", "password", None, "a string, or None", _optional_nonempty_str,
       "Password for PLAIN and SCRAM (instead of sasl.jaas.config). Default None."),
    _d("sasl.oauthbearer.token.provider", "callable", None, "None or callable() -> token", _optional_callable,
       "OAUTHBEARER: a callable returning the access token: a str (a JWT's exp claim gives its "
       "lifetime), (token, expiry_epoch_seconds[, principal, extensions]) as confluent-kafka's oauth_cb, "
       "or kprod.sasl.OAuthBearerToken; it may take sasl.oauthbearer.config as its one argument and may be "
       "async. Default None.", "oauth_cb"),
    _d("sasl.oauthbearer.config", "str", None, "a string, or None", _optional_nonempty_str,
       "librdkafka's OAUTHBEARER configuration string, passed to the token provider and read by the "
       "unsecured JWT login (principal=..., lifeSeconds=..., scope=...). Default None."),
    _d("enable.sasl.oauthbearer.unsecure.jwt", "bool", False, "true, false", _bool,
       "librdkafka's unsecured (unsigned) JWT login for development brokers. Default false."),
    _d("sasl.oauthbearer.token.endpoint.url", "str", None, "an https URL, or None", _optional_nonempty_str,
       "OIDC token endpoint for the client-credentials login (KIP-768). Default None."),
    _d("sasl.oauthbearer.client.credentials.client.id", "str", None, "a string, or None",
       _optional_nonempty_str,
       "OIDC client id (else the JAAS option clientId). Default None.", "sasl.oauthbearer.client.id"),
    _d("sasl.oauthbearer.client.credentials.client.secret", "password", None, "a string, or None",
       _optional_nonempty_str,
       "OIDC client secret (else the JAAS option clientSecret). Default None.", "sasl.oauthbearer.client.secret"),
    _d("sasl.oauthbearer.scope", "str", None, "a string, or None", _optional_nonempty_str,
       "OIDC scope asked for (else the JAAS option scope). Default None."),
    _d("sasl.oauthbearer.extensions", "str", None, "key=value,... or None", _optional_nonempty_str,
       "OAUTHBEARER SASL extensions sent with the token (librdkafka syntax; JAAS: extension_key=\"value\"). "
       "Default None."),
    _d("sasl.oauthbearer.method", "str", "default", "default, oidc", _choice("default", "oidc"),
       "librdkafka's switch to the OIDC login; kprod uses OIDC whenever a token endpoint is set. "
       "Default default."),
    _d("sasl.login.callback.handler.class", "str", None, "OAuthBearerLoginCallbackHandler, or None",
       _login_callback_handler, "Java's OIDC login handler class name (accepted for properties files). "
       "Default None."),
    _d("sasl.login.connect.timeout.ms", "int", 10000, "[0, ...]", _int(0, _I32),
       "Milliseconds to connect to the OIDC token endpoint. Default 10000."),
    _d("sasl.login.read.timeout.ms", "int", 10000, "[0, ...]", _int(0, _I32),
       "Milliseconds to wait for the OIDC token endpoint's answer. Default 10000."),
    _d("sasl.login.refresh.window.factor", "double", 0.8, "[0.5, 1.0]", _optional_float(0.5, 1.0),
       "Fetch a new token once this fraction of its lifetime has passed. Default 0.8."),
    _d("sasl.login.refresh.buffer.seconds", "short", 300, "[0, 3600]", _int(0, 3600),
       "Fetch a new token at least this many seconds before it expires. Default 300."),
    _d("metrics.sample.window.ms", "long", 30000, "[1, ...]", _int(1, _I64),
       "Milliseconds of each sample of the windowed metrics (rates, averages, maxima). Default 30000."),
    _d("metrics.num.samples", "int", 2, "[2, ...]", _int(2, _I32),
       "Samples the windowed metrics keep (the window is this many samples long). Default 2."),
    _d("statistics.interval.ms", "int", 0, "[0, 86400000]", _int(0, 86_400_000),
       "librdkafka's: every this many ms, stats_cb gets the statistics as librdkafka's JSON; 0 off. "
       "Default 0."),
    _d("stats_cb", "callable", None, "None or callable(json_str)", _optional_callable,
       "librdkafka's (confluent-kafka's) statistics callback: called on the I/O thread with a JSON string "
       "every statistics.interval.ms. Default None."),
    _d("kprod.exit.flush.timeout.ms", "long", 5000, "[0, ...]", _int(0, _I64),
       "kprod's own: at interpreter exit, an open Producer flushes for at most this many ms, then "
       "logs a WARNING with the number of records it could not deliver; 0 only warns. Default 5000."),
    _d("kprod.live.port", "int", None, "None, 0 or [1, 65535]", _live_port,
       "kprod's own: open a read-only endpoint on kprod.live.host:PORT that serves this producer's "
       "metrics() as JSON lines, for `kprod top --port PORT`; 0 takes a free port (see "
       "Producer.live_address). Default None: no endpoint."),
    _d("kprod.live.host", "str", "127.0.0.1", "a host name or IP address", _live_host,
       "kprod's own: where the kprod.live.port endpoint listens. Default 127.0.0.1 (loopback only: "
       "anyone who can reach the port can read the metrics)."),
    _d("key.serializer", "serializer", None,
       "None, " + "/".join(BUILTIN_SERIALIZER_NAMES) + ", callable(data) -> bytes, or object.serialize()",
       _serializer,
       "Turns keys into bytes. Default None: bytes-like as is, str as UTF-8."),
    _d("value.serializer", "serializer", None,
       "None, " + "/".join(BUILTIN_SERIALIZER_NAMES) + ", callable(data) -> bytes, or object.serialize()",
       _serializer,
       "Turns values into bytes. Default None: bytes-like as is, str as UTF-8."),
)
# fmt: on

CONFIG_DEFS: Final[Mapping[str, ConfigDef]] = {d.name: d for d in _DEFS}
"""Every producer setting by Kafka name, in documentation order."""

_BY_KAFKA: Final[dict[str, str]] = {}
"""Any accepted Kafka-style name (including aliases) → canonical Kafka name."""
_BY_ATTR: Final[dict[str, str]] = {}
"""Any accepted keyword name (including aliases) → canonical Kafka name."""
for _def in _DEFS:
    for _n in (_def.name, *_def.aliases):
        _BY_KAFKA[_n] = _def.name
        _BY_ATTR[attr_name(_n)] = _def.name

_client_ids = itertools.count(1)


_DEFAULTS: Final[dict[str, Any]] = {d.name: d.default for d in _DEFS}


LIBRDKAFKA_CONVERTED: Final[dict[str, tuple[str, Callable[[object], object]]]] = {
    "queue.buffering.max.kbytes": ("buffer.memory", lambda v: int(v) * 1024),  # type: ignore[call-overload]
}
"""librdkafka settings with a Kafka twin in another unit: name -> (Kafka name, conversion)."""

LIBRDKAFKA_REFUSED: Final[dict[str, str]] = {
    "batch.num.messages": "kprod closes batches by bytes, not by count: use batch.size",
    "queue.buffering.max.messages": "kprod bounds the buffer in bytes, not in records: use buffer.memory",
    "socket.timeout.ms": "set request.timeout.ms (per request) and socket.connection.setup.timeout.ms",
    "compression.level": "levels are per codec: compression.gzip.level, compression.lz4.level, "
    "compression.zstd.level",
    "sticky.partitioning.linger.ms": "kprod's sticky partitioner (KIP-794) moves on by bytes: see batch.size",
    "queue.buffering.backpressure.threshold": "not applicable: kprod sends as soon as a batch is ready",
    "enable.gapless.guarantee": "with enable.idempotence kprod never leaves a gap: it fails the producer "
    "or bumps the epoch as Java does",
    "delivery.report.only.error": "pass on_delivery only where you want reports",
    "dr_cb": "pass on_delivery to send() (called with (metadata, error))",
    "dr_msg_cb": "pass on_delivery to send() (called with (metadata, error))",
    "error_cb": "errors are raised by send() or delivered to the record's future / on_delivery",
}
"""librdkafka settings whose meaning has no kprod twin: refused with what to set instead."""

SECRET_SETTINGS: Final[frozenset[str]] = frozenset(d.name for d in _DEFS if d.type == "password") | {
    "ssl.key.password",
    "ssl.keystore.key",
}
"""Settings whose values are secrets: never shown in reprs, error messages or :meth:`ProducerConfig.to_dict`
with ``secrets=False``."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------- the config


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """The producer's effective settings (Kafka names with dots as underscores).

    Build it with :meth:`from_user`, which parses, validates and applies Java's
    post-processing rules; constructing it directly skips all checks. Durations
    are milliseconds, sizes bytes. ``explicit`` holds the Kafka names the user
    set. Defaults are in :data:`CONFIG_DEFS`.
    """

    bootstrap_servers: BootstrapServers | None = _DEFAULTS["bootstrap.servers"]
    client_id: str = _DEFAULTS["client.id"]
    acks: int = _DEFAULTS["acks"]
    linger_ms: int = _DEFAULTS["linger.ms"]
    batch_size: int = _DEFAULTS["batch.size"]
    buffer_memory: int = _DEFAULTS["buffer.memory"]
    max_block_ms: int = _DEFAULTS["max.block.ms"]
    max_request_size: int = _DEFAULTS["max.request.size"]
    request_timeout_ms: int = _DEFAULTS["request.timeout.ms"]
    delivery_timeout_ms: int = _DEFAULTS["delivery.timeout.ms"]
    max_in_flight_requests_per_connection: int = _DEFAULTS["max.in.flight.requests.per.connection"]
    retries: int = _DEFAULTS["retries"]
    retry_backoff_ms: int = _DEFAULTS["retry.backoff.ms"]
    retry_backoff_max_ms: int = _DEFAULTS["retry.backoff.max.ms"]
    reconnect_backoff_ms: int = _DEFAULTS["reconnect.backoff.ms"]
    reconnect_backoff_max_ms: int = _DEFAULTS["reconnect.backoff.max.ms"]
    enable_idempotence: bool = _DEFAULTS["enable.idempotence"]
    transactional_id: str | None = _DEFAULTS["transactional.id"]
    transaction_timeout_ms: int = _DEFAULTS["transaction.timeout.ms"]
    kprod_transaction_version: str = _DEFAULTS["kprod.transaction.version"]
    kprod_transaction_await_previous: bool = _DEFAULTS["kprod.transaction.await.previous"]
    compression_type: str = _DEFAULTS["compression.type"]
    compression_gzip_level: int = _DEFAULTS["compression.gzip.level"]
    compression_lz4_level: int = _DEFAULTS["compression.lz4.level"]
    compression_zstd_level: int = _DEFAULTS["compression.zstd.level"]
    partitioner: Partitioner | str | None = _DEFAULTS["partitioner"]
    partitioner_ignore_keys: bool = _DEFAULTS["partitioner.ignore.keys"]
    partitioner_adaptive_partitioning_enable: bool = _DEFAULTS["partitioner.adaptive.partitioning.enable"]
    partitioner_availability_timeout_ms: int = _DEFAULTS["partitioner.availability.timeout.ms"]
    metadata_max_age_ms: int = _DEFAULTS["metadata.max.age.ms"]
    metadata_max_idle_ms: int = _DEFAULTS["metadata.max.idle.ms"]
    allow_auto_create_topics: bool = _DEFAULTS["allow.auto.create.topics"]
    metadata_recovery_strategy: str = _DEFAULTS["metadata.recovery.strategy"]
    socket_connection_setup_timeout_ms: int = _DEFAULTS["socket.connection.setup.timeout.ms"]
    socket_connection_setup_timeout_max_ms: int = _DEFAULTS["socket.connection.setup.timeout.max.ms"]
    connections_max_idle_ms: int = _DEFAULTS["connections.max.idle.ms"]
    send_buffer_bytes: int = _DEFAULTS["send.buffer.bytes"]
    receive_buffer_bytes: int = _DEFAULTS["receive.buffer.bytes"]
    security_protocol: str = _DEFAULTS["security.protocol"]
    ssl_truststore_type: str = _DEFAULTS["ssl.truststore.type"]
    ssl_truststore_location: str | None = _DEFAULTS["ssl.truststore.location"]
    ssl_truststore_certificates: str | None = _DEFAULTS["ssl.truststore.certificates"]
    ssl_keystore_type: str = _DEFAULTS["ssl.keystore.type"]
    ssl_keystore_location: str | None = _DEFAULTS["ssl.keystore.location"]
    ssl_key_location: str | None = _DEFAULTS["ssl.key.location"]
    ssl_keystore_certificate_chain: str | None = _DEFAULTS["ssl.keystore.certificate.chain"]
    ssl_keystore_key: str | None = field(default=_DEFAULTS["ssl.keystore.key"], repr=False)
    ssl_key_password: str | None = field(default=_DEFAULTS["ssl.key.password"], repr=False)
    ssl_endpoint_identification_algorithm: str = _DEFAULTS["ssl.endpoint.identification.algorithm"]
    ssl_enabled_protocols: tuple[str, ...] = _DEFAULTS["ssl.enabled.protocols"]
    ssl_cipher_suites: str | None = _DEFAULTS["ssl.cipher.suites"]
    sasl_mechanism: str = _DEFAULTS["sasl.mechanism"]
    sasl_jaas_config: str | None = field(default=_DEFAULTS["sasl.jaas.config"], repr=False)
    sasl_username: str | None = _DEFAULTS["sasl.username"]
    sasl_password: str | None = field(default=_DEFAULTS["sasl.password"], repr=False)
    sasl_oauthbearer_token_provider: Callable[..., Any] | None = _DEFAULTS["sasl.oauthbearer.token.provider"]
    sasl_oauthbearer_config: str | None = field(default=_DEFAULTS["sasl.oauthbearer.config"], repr=False)
    enable_sasl_oauthbearer_unsecure_jwt: bool = _DEFAULTS["enable.sasl.oauthbearer.unsecure.jwt"]
    sasl_oauthbearer_token_endpoint_url: str | None = _DEFAULTS["sasl.oauthbearer.token.endpoint.url"]
    sasl_oauthbearer_client_credentials_client_id: str | None = _DEFAULTS[
        "sasl.oauthbearer.client.credentials.client.id"
    ]
    sasl_oauthbearer_client_credentials_client_secret: str | None = field(
        default=_DEFAULTS["sasl.oauthbearer.client.credentials.client.secret"], repr=False
    )
    sasl_oauthbearer_scope: str | None = _DEFAULTS["sasl.oauthbearer.scope"]
    sasl_oauthbearer_extensions: str | None = _DEFAULTS["sasl.oauthbearer.extensions"]
    sasl_oauthbearer_method: str = _DEFAULTS["sasl.oauthbearer.method"]
    sasl_login_callback_handler_class: str | None = _DEFAULTS["sasl.login.callback.handler.class"]
    sasl_login_connect_timeout_ms: int = _DEFAULTS["sasl.login.connect.timeout.ms"]
    sasl_login_read_timeout_ms: int = _DEFAULTS["sasl.login.read.timeout.ms"]
    sasl_login_refresh_window_factor: float = _DEFAULTS["sasl.login.refresh.window.factor"]
    sasl_login_refresh_buffer_seconds: int = _DEFAULTS["sasl.login.refresh.buffer.seconds"]
    metrics_sample_window_ms: int = _DEFAULTS["metrics.sample.window.ms"]
    metrics_num_samples: int = _DEFAULTS["metrics.num.samples"]
    statistics_interval_ms: int = _DEFAULTS["statistics.interval.ms"]
    stats_cb: Callable[..., Any] | None = _DEFAULTS["stats_cb"]
    kprod_exit_flush_timeout_ms: int = _DEFAULTS["kprod.exit.flush.timeout.ms"]
    kprod_live_port: int | None = _DEFAULTS["kprod.live.port"]
    kprod_live_host: str = _DEFAULTS["kprod.live.host"]
    key_serializer: Serializer | None = _DEFAULTS["key.serializer"]
    value_serializer: Serializer | None = _DEFAULTS["value.serializer"]
    explicit: frozenset[str] = field(default=frozenset(), compare=False)
    """Kafka names of the settings the user gave (aliases mapped to the canonical name)."""

    @classmethod
    def from_user(cls, config: Mapping[str, object] | None = None, **kwargs: object) -> ProducerConfig:
        """Parse and validate user settings into a :class:`ProducerConfig`.

        ``config`` uses Kafka names (``{"linger.ms": 10}``); ``kwargs`` use
        underscores (``linger_ms=10``). Both may be given; a setting given in
        both spellings with different values raises :class:`ConfigError`.
        Unknown names, invalid values and conflicting settings raise
        :class:`ConfigError` naming the setting, the value and what is allowed.

        Post-processing follows the Java 4.x producer: ``acks`` is normalized
        to -1/0/1; ``batch.size`` 0 becomes 1; ``linger.ms`` is capped at
        2**31-1; ``delivery.timeout.ms`` left unset is raised to
        ``linger.ms + request.timeout.ms``; ``reconnect.backoff.max.ms`` left
        unset follows an explicit ``reconnect.backoff.ms``; the idempotence
        rules of ``ProducerConfig.postProcessAndValidateIdempotenceConfigs``
        apply; an empty ``client.id`` gets a generated one.
        """
        raw: dict[str, tuple[str, object]] = {}  # canonical name -> (spelling as given, raw value)
        parsed: dict[str, Any] = {}

        def take(spelling: str, canonical: str, value: object) -> None:
            d = CONFIG_DEFS[canonical]
            try:
                parsed_value = d.parse(canonical, value)
            except _Invalid as exc:
                given = "" if spelling == canonical else f" (given as {spelling!r})"
                shown = "(hidden)" if canonical in SECRET_SETTINGS else _show(value)
                raise ConfigError(
                    f"Invalid value {shown} for setting {canonical!r}{given}: expected {exc.allowed}"
                ) from None
            if canonical in raw:
                prev_spelling, prev_value = raw[canonical]
                if not _same(parsed[canonical], parsed_value):
                    if canonical in SECRET_SETTINGS:
                        prev_value = value = "(hidden)"
                    raise ConfigError(
                        f"Setting {canonical!r} given twice with different values: "
                        f"{prev_spelling}={_show(prev_value)} and {spelling}={_show(value)}; give it once"
                    )
                return
            raw[canonical] = (spelling, value)
            parsed[canonical] = parsed_value

        def librdkafka(key: str, value: object) -> tuple[str, object] | None:
            """A librdkafka name kprod converts (same meaning, other unit) or refuses with the Kafka
            name to use; None for any other name."""
            name = key if key in LIBRDKAFKA_REFUSED or key in LIBRDKAFKA_CONVERTED else key.replace("_", ".")
            if name in LIBRDKAFKA_REFUSED:
                raise ConfigError(f"Setting {key!r} (librdkafka's) is not taken: {LIBRDKAFKA_REFUSED[name]}")
            if name in LIBRDKAFKA_CONVERTED:
                canonical, convert = LIBRDKAFKA_CONVERTED[name]
                try:
                    return canonical, convert(value)
                except (TypeError, ValueError):
                    raise ConfigError(
                        f"Invalid value {_show(value)} for setting {key!r}: expected an integer"
                    ) from None
            return None

        if config is not None:
            if not isinstance(config, Mapping):
                raise ConfigError(
                    "config must be a mapping of Kafka setting names to values, "
                    f"not {type(config).__qualname__}"
                )
            for key, value in config.items():
                if not isinstance(key, str):
                    raise ConfigError(f"Setting names must be strings, got {key!r}")
                canonical = _BY_KAFKA.get(key)
                if canonical is None:
                    converted = librdkafka(key, value)
                    if converted is None:
                        raise ConfigError(_unknown(key, _BY_KAFKA, kw=False))
                    canonical, value = converted
                take(key, canonical, value)
        for key, value in kwargs.items():
            canonical = _BY_ATTR.get(key)
            if canonical is None:
                converted = librdkafka(key, value)
                if converted is None:
                    raise ConfigError(_unknown(key, _BY_ATTR, kw=True))
                canonical, value = converted
            take(key, canonical, value)

        explicit = frozenset(raw)
        values: dict[str, Any] = {d.name: d.default for d in _DEFS}
        values.update(parsed)

        # KafkaProducer: batch.size 0 means 1; linger.ms is capped at Integer.MAX_VALUE.
        values["batch.size"] = max(1, values["batch.size"])
        values["linger.ms"] = min(values["linger.ms"], INT32_MAX)

        # CommonClientConfigs.postProcessReconnectBackoffConfigs.
        if "reconnect.backoff.ms" in explicit and "reconnect.backoff.max.ms" not in explicit:
            values["reconnect.backoff.max.ms"] = values["reconnect.backoff.ms"]

        # KafkaProducer.configureDeliveryTimeout.
        floor = values["linger.ms"] + values["request.timeout.ms"]
        if values["delivery.timeout.ms"] < floor:
            if "delivery.timeout.ms" in explicit:
                raise ConfigError(
                    f"Invalid value {values['delivery.timeout.ms']} for setting 'delivery.timeout.ms': "
                    "it must be "
                    f">= linger.ms + request.timeout.ms = {values['linger.ms']} + "
                    f"{values['request.timeout.ms']} = {floor}; raise delivery.timeout.ms or lower the others"
                )
            values["delivery.timeout.ms"] = min(floor, INT32_MAX)

        _apply_idempotence_rules(values, explicit)

        # ProducerConfig.postProcessParsedConfig: client.id "" → generated.
        if not values["client.id"]:
            txn = values["transactional.id"]
            values["client.id"] = (
                f"kprod-producer-{txn}" if txn is not None else f"kprod-producer-{next(_client_ids)}"
            )

        return cls(**{CONFIG_DEFS[k].attr: v for k, v in values.items()}, explicit=explicit)

    def to_dict(self, *, secrets: bool = True) -> dict[str, object]:
        """The effective settings by Kafka name.

        ``bootstrap.servers`` is shown as a list of ``"host:port"`` strings
        (IPv6 hosts in brackets) or ``None``; other values are as stored. The
        result can be passed back to :meth:`from_user`. ``secrets=False`` (for
        display and logs) shows each set secret (:data:`SECRET_SETTINGS`) as ``"(hidden)"``.
        """
        out: dict[str, object] = {}
        for d in _DEFS:
            value = getattr(self, d.attr)
            if not secrets and value is not None and d.name in SECRET_SETTINGS:
                value = "(hidden)"
            if d.name == "bootstrap.servers" and value is not None:
                value = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in value]
            out[d.name] = value
        return out

    def is_explicit(self, name: str) -> bool:
        """True when the user set ``name`` (Kafka name or keyword spelling)."""
        canonical = _BY_KAFKA.get(name) or _BY_ATTR.get(name) or name
        return canonical in self.explicit


def check_supported(config: ProducerConfig) -> None:
    """Raise ConfigError for a setting that parses but that kprod cannot honour yet."""
    if config.partitioner_availability_timeout_ms:
        raise ConfigError(
            f"Setting 'partitioner.availability.timeout.ms'={config.partitioner_availability_timeout_ms} "
            "is not supported yet: kprod does not track per-broker drain latency; leave it at 0 (the "
            "default: adaptive partitioning by queue length is on)"
        )


def _same(a: object, b: object) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _unknown(name: str, known: Mapping[str, str], *, kw: bool) -> str:
    other = _BY_ATTR if not kw else _BY_KAFKA
    if name in other:  # right setting, wrong spelling for this place
        close = [attr_name(name) if kw else other[name]]
    else:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    where = "keyword" if kw else "setting"
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    spelling = (
        "keywords use underscores (linger_ms=5)" if kw else "mapping keys use Kafka names ('linger.ms')"
    )
    return (
        f"Unknown producer {where} {name!r}{hint} ({spelling}; kprod.config.CONFIG_DEFS lists every setting)"
    )


def _apply_idempotence_rules(values: dict[str, Any], explicit: frozenset[str]) -> None:
    """``ProducerConfig.postProcessAndValidateIdempotenceConfigs`` (Java 4.x), in place."""
    user_set = "enable.idempotence" in explicit
    enabled: bool = values["enable.idempotence"]
    disable = False
    how = "enable.idempotence=true" if user_set else "enable.idempotence (true by default)"
    if enabled:
        if values["retries"] == 0:
            if user_set:
                raise ConfigError(
                    "Conflicting settings 'enable.idempotence'=true and 'retries'=0: the idempotent producer "
                    "needs retries > 0; raise retries or set enable.idempotence=false"
                )
            disable = True
        if values["acks"] != -1:
            if user_set:
                raise ConfigError(
                    f"Conflicting settings 'enable.idempotence'=true and 'acks'={values['acks']}: the "
                    "idempotent producer needs acks=all; set acks='all' or enable.idempotence=false"
                )
            disable = True
        in_flight = values["max.in.flight.requests.per.connection"]
        if in_flight > 5:
            raise ConfigError(
                f"Invalid value {in_flight} for setting 'max.in.flight.requests.per.connection': "
                f"with {how} it must be set to at most 5; lower it, or set enable.idempotence=false"
            )
    if disable:
        values["enable.idempotence"] = False
        enabled = False
    if not enabled and "transactional.id" in explicit and values["transactional.id"] is not None:
        if user_set:
            reason = "enable.idempotence=false"
        else:
            causes = [f"acks={values['acks']}"] if values["acks"] != -1 else []
            causes += ["retries=0"] if values["retries"] == 0 else []
            reason = f"idempotence was turned off by {' and '.join(causes)}"
        raise ConfigError(
            f"Conflicting settings 'transactional.id'={values['transactional.id']!r} and "
            f"'enable.idempotence': transactions need idempotence, but {reason}; "
            "use acks='all', retries > 0 and leave enable.idempotence at true"
        )


__all__ = [
    "CONFIG_DEFS",
    "SECRET_SETTINGS",
    "BootstrapServers",
    "ConfigDef",
    "Partitioner",
    "ProducerConfig",
    "attr_name",
    "check_supported",
]
