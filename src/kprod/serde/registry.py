"""Schema Registry access for the Avro, Protobuf and JSON Schema serializers.

* :class:`SchemaRegistry`: the small interface the serializers need
  (``register``, ``lookup``, ``get_latest``); implement it to use another registry.
* :class:`ConfluentSchemaRegistry`: the implementation over confluent-kafka's
  ``SchemaRegistryClient`` (HTTP, auth, TLS, retries are its own), with id caching. A
  ``mock://`` URL gives confluent-kafka's in-memory registry, for tests.
* Subject name strategies: :func:`topic_name_strategy` (the default),
  :func:`record_name_strategy`, :func:`topic_record_name_strategy`.
* The Confluent wire format: :func:`frame` / :func:`unframe` (magic byte ``0``,
  the 4-byte big-endian schema id, the payload).

Registry failures raise :class:`RegistryError` (a
:class:`~kprod.errors.SerializationError`) naming the registry URL, the subject and
the cause.

Why one module of about 650 lines: the registry interface, its Confluent implementation, the
subject strategies and the wire framing are what every schema serializer imports together.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from kprod.errors import ConfigError, SerializationError

if TYPE_CHECKING:  # pragma: no cover
    from confluent_kafka.schema_registry import Schema as _CkSchema
    from confluent_kafka.schema_registry import SchemaRegistryClient

MAGIC_BYTE: Final = 0
"""The first byte of a Confluent-framed payload."""

_HEADER: Final = struct.Struct(">bI")

SCHEMA_TYPES: Final[tuple[str, ...]] = ("AVRO", "PROTOBUF", "JSON")


# ---------------------------------------------------------------------------- schemas


@dataclass(frozen=True, slots=True)
class SchemaReference:
    """A reference from one schema to another registered one (an Avro named type, an imported .proto)."""

    name: str
    """The name the referencing schema uses: an Avro full name, a .proto file name, a JSON Schema URL."""
    subject: str
    """The subject the referenced schema is registered under."""
    version: int
    """Its version in that subject."""


@dataclass(frozen=True, slots=True)
class RegistrySchema:
    """A schema as the registry stores it: its text, its type and its references."""

    schema_str: str
    """Avro or JSON Schema JSON text; for Protobuf, the base64 of a serialized ``FileDescriptorProto``
    (what confluent-kafka sends) or .proto source."""
    schema_type: str = "AVRO"
    """``"AVRO"``, ``"PROTOBUF"`` or ``"JSON"``."""
    references: tuple[SchemaReference, ...] = ()


@runtime_checkable
class SchemaRegistry(Protocol):
    """What the serializers need from a schema registry.

    Implementations should cache: the serializers call ``register`` / ``lookup``
    once per subject and then keep the id, but ``get_latest`` is called for every
    record when ``use_latest_version`` is on. Errors should be raised as
    :class:`RegistryError` (others are wrapped by the serializer).
    """

    @property
    def url(self) -> str:
        """The registry's address, for error messages (without credentials)."""
        ...

    def register(self, subject: str, schema: RegistrySchema) -> int:
        """Register ``schema`` under ``subject`` (a no-op if it is there) and return its id."""
        ...

    def lookup(self, subject: str, schema: RegistrySchema) -> int:
        """The id of ``schema`` registered under ``subject``; raise if it is not registered."""
        ...

    def get_latest(self, subject: str) -> tuple[int, RegistrySchema]:
        """The id and schema of the latest version registered under ``subject``."""
        ...


@runtime_checkable
class VersionedSchemaRegistry(SchemaRegistry, Protocol):
    """A registry that also tells a schema's version in a subject.

    Needed by :class:`~kprod.serde.protobuf.ProtobufSerializer` for a .proto that
    imports other (non-well-known) files: each import is registered under its own
    subject and referenced by (name, subject, version).
    """

    def lookup_version(self, subject: str, schema: RegistrySchema) -> int:
        """The version of ``schema`` under ``subject``; raise if it is not registered."""
        ...


class RegistryError(SerializationError):
    """A schema registry request failed.

    ``url`` is the registry (credentials removed), ``subject`` the subject
    concerned, ``status`` the HTTP status (``None`` when no answer came), ``code``
    the registry's error code (``40401`` subject not found, ``40403`` schema not
    found, ``-1`` unknown, ``None`` when no answer came).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        subject: str | None,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.subject = subject
        self.status = status
        self.code = code

    @property
    def not_found(self) -> bool:
        """True when the registry answered that the subject, version or schema does not exist."""
        return self.status == 404

    @property
    def retriable(self) -> bool:
        """True when no answer came or the registry was unavailable: a later attempt may succeed."""
        return self.status is None or self.status in (408, 429) or self.status >= 500


# ---------------------------------------------------------------------------- subject name strategies

SubjectNameStrategy: TypeAlias = Callable[[str, "str | None", bool], str]
"""``strategy(topic, record_name, is_key) -> subject``. ``record_name`` is the schema's
full name (Avro ``namespace.name``, Protobuf ``package.Message``, JSON Schema ``title``)
or ``None`` when the schema has none."""


def topic_name_strategy(topic: str, record_name: str | None, is_key: bool) -> str:
    """``<topic>-key`` or ``<topic>-value`` (the default, as Java's ``TopicNameStrategy``)."""
    return f"{topic}-key" if is_key else f"{topic}-value"


def record_name_strategy(topic: str, record_name: str | None, is_key: bool) -> str:
    """``<fully qualified record name>`` (Java's ``RecordNameStrategy``): one subject per record type."""
    if not record_name:
        raise SerializationError(
            "record_name_strategy needs a named schema (an Avro record, a Protobuf message, "
            "a JSON Schema with a 'title'); use topic_name_strategy for this schema"
        )
    return record_name


def topic_record_name_strategy(topic: str, record_name: str | None, is_key: bool) -> str:
    """``<topic>-<fully qualified record name>`` (Java's ``TopicRecordNameStrategy``)."""
    if not record_name:
        raise SerializationError(
            "topic_record_name_strategy needs a named schema (an Avro record, a Protobuf message, "
            "a JSON Schema with a 'title'); use topic_name_strategy for this schema"
        )
    return f"{topic}-{record_name}"


_NEEDS_RECORD_NAME: Final = (record_name_strategy, topic_record_name_strategy)


def check_strategy(strategy: object, record_name: str | None, serializer: str) -> SubjectNameStrategy:
    """Check a ``subject_name_strategy`` argument at construction; raise :class:`ConfigError` if unusable."""
    if not callable(strategy):
        raise ConfigError(
            f"{serializer}: subject_name_strategy must be a callable(topic, record_name, is_key) -> str, "
            f"such as topic_name_strategy; got {strategy!r}"
        )
    if strategy in _NEEDS_RECORD_NAME and not record_name:
        raise ConfigError(
            f"{serializer}: {getattr(strategy, '__name__', strategy)} needs a named schema (an Avro record, "
            "a Protobuf message, a JSON Schema with a 'title'), and this schema has no name; "
            "use topic_name_strategy"
        )
    return strategy


# ---------------------------------------------------------------------------- wire format


def frame(schema_id: int, payload: bytes, message_indexes: bytes = b"") -> bytes:
    """The Confluent wire format: ``0``, the schema id (4 bytes, big-endian), ``message_indexes``, ``payload``.

    ``message_indexes`` is only for Protobuf (see
    :func:`kprod.serde.protobuf.encode_message_indexes`).
    """
    return frame_header(schema_id) + message_indexes + payload


def frame_header(schema_id: int) -> bytes:
    """The 5-byte prefix of :func:`frame`; raises :class:`SerializationError` for an id out of range."""
    if not 0 <= schema_id <= 0xFFFFFFFF:
        raise SerializationError(
            f"schema id {schema_id} does not fit the 4-byte id of the Confluent wire format"
        )
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def unframe(data: bytes) -> tuple[int, bytes]:
    """Split a Confluent-framed payload into (schema id, the rest). The inverse of :func:`frame`.

    For Protobuf the rest starts with the message indexes.
    """
    if len(data) < 5 or data[0] != MAGIC_BYTE:
        raise SerializationError(
            f"not a Confluent-framed payload: expected magic byte 0 and a 4-byte schema id, got {bytes(data[:5])!r}"
        )
    return int.from_bytes(data[1:5], "big"), bytes(data[5:])


# ---------------------------------------------------------------------------- per-serializer id resolution


class SchemaIdResolver:
    """The registry half of a schema serializer: topic -> subject -> schema id, cached.

    ``serializer`` names the serializer in errors (``"AvroSerializer"``); ``schema`` is the
    serializer's own schema (``None`` only with ``use_latest_version``), or a function
    building it, called once on first use (Protobuf registers imported files there); ``record_name``
    feeds the subject name strategy. With ``use_latest_version`` the id (and the schema,
    returned by :meth:`resolve`) of the subject's latest version are used; otherwise
    ``schema`` is registered (``auto_register``) or looked up, once per topic.
    """

    __slots__ = (
        "_by_topic",
        "_lock",
        "auto_register",
        "is_key",
        "record_name",
        "registry",
        "schema",
        "serializer",
        "setting",
        "strategy",
        "use_latest",
    )

    def __init__(
        self,
        registry: SchemaRegistry,
        schema: RegistrySchema | Callable[[], RegistrySchema] | None,
        record_name: str | None,
        *,
        serializer: str,
        strategy: object,
        auto_register: bool,
        use_latest: bool,
        is_key: bool,
    ) -> None:
        self.setting = "key.serializer" if is_key else "value.serializer"
        where = f"{serializer} ({self.setting})"
        for name in ("register", "lookup", "get_latest"):
            if not callable(getattr(registry, name, None)):
                raise ConfigError(
                    f"{where}: registry must be a SchemaRegistry (with register, lookup and get_latest), "
                    f"such as ConfluentSchemaRegistry(url); got {registry!r}, which has no {name}()"
                )
        if use_latest and auto_register:
            raise ConfigError(
                f"{where}: use_latest_version=True and auto_register_schemas=True cannot be combined "
                "(the latest registered schema is used, so nothing is registered); "
                "pass auto_register_schemas=False"
            )
        if schema is None and not use_latest:
            raise ConfigError(f"{where}: a schema is required unless use_latest_version=True")
        self.registry = registry
        self.schema = schema
        self.record_name = record_name
        self.serializer = serializer
        self.strategy = check_strategy(strategy, record_name, where)
        self.auto_register = auto_register
        self.use_latest = use_latest
        self.is_key = is_key
        self._by_topic: dict[str, int] = {}
        self._lock = threading.Lock()

    def subject(self, topic: str) -> str:
        """The subject for ``topic``, from the strategy."""
        try:
            subject = self.strategy(topic, self.record_name, self.is_key)
        except SerializationError as exc:
            raise SerializationError(
                f"{self.serializer} ({self.setting}) for topic {topic!r}: {exc}"
            ) from exc
        except Exception as exc:
            raise SerializationError(
                f"{self.serializer} ({self.setting}) for topic {topic!r}: subject_name_strategy "
                f"{getattr(self.strategy, '__name__', self.strategy)!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(subject, str) or not subject:
            raise SerializationError(
                f"{self.serializer} ({self.setting}) for topic {topic!r}: subject_name_strategy returned "
                f"{subject!r}; it must return a non-empty str"
            )
        return subject

    def resolve(self, topic: str) -> tuple[int, RegistrySchema | None]:
        """(schema id, the latest schema or ``None``) for a record on ``topic``.

        The schema is only returned with ``use_latest_version`` (the serializer then
        writes with it); otherwise it is ``None`` and the serializer's own schema applies.
        """
        if not self.use_latest:
            schema_id = self._by_topic.get(topic)
            if schema_id is not None:
                return schema_id, None
        subject = self.subject(topic)
        try:
            if self.use_latest:
                schema_id, latest = self.registry.get_latest(subject)
                return schema_id, latest
            with self._lock:
                schema_id = self._by_topic.get(topic)
                if schema_id is None:
                    if callable(self.schema):
                        self.schema = self.schema()
                    assert self.schema is not None
                    if self.auto_register:
                        schema_id = self.registry.register(subject, self.schema)
                    else:
                        schema_id = self.registry.lookup(subject, self.schema)
                    self._by_topic[topic] = schema_id
            return schema_id, None
        except RegistryError as exc:
            raise self._wrap(topic, subject, exc) from exc
        except SerializationError as exc:
            raise SerializationError(
                f"{self.serializer} ({self.setting}) for topic {topic!r}, subject {subject!r}: {exc}"
            ) from exc
        except Exception as exc:
            url = getattr(self.registry, "url", repr(self.registry))
            raise RegistryError(
                f"{self.serializer} ({self.setting}) for topic {topic!r}: schema registry {url}: "
                f"request for subject {subject!r} failed ({type(exc).__name__}: {exc})",
                url=str(url),
                subject=subject,
            ) from exc

    def _wrap(self, topic: str, subject: str, exc: RegistryError) -> RegistryError:
        hint = ""
        if exc.not_found:
            if self.use_latest:
                hint = (
                    f"; use_latest_version=True needs a schema registered under subject {subject!r} "
                    "(register one, or pass the schema and auto_register_schemas=True)"
                )
            elif not self.auto_register:
                hint = (
                    f"; the schema is not registered under subject {subject!r} and auto_register_schemas "
                    "is False: register it first, or pass auto_register_schemas=True"
                )
        return RegistryError(
            f"{self.serializer} ({self.setting}) for topic {topic!r}: {exc}{hint}",
            url=exc.url,
            subject=exc.subject,
            status=exc.status,
            code=exc.code,
        )


# ---------------------------------------------------------------------------- Confluent implementation


def redact_url(url: str) -> str:
    """``url`` without ``user:password@`` (each of a comma-separated list)."""
    out = []
    for one in url.split(","):
        one = one.strip()
        try:
            parts = urlsplit(one)
        except ValueError:
            out.append(one)
            continue
        if parts.username is not None or parts.password is not None:
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
            one = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        out.append(one)
    return ",".join(out)


class ConfluentSchemaRegistry:
    """A :class:`SchemaRegistry` over confluent-kafka's ``SchemaRegistryClient``.

    ``registry`` is the registry URL (``"http://registry:8081"``; a comma-separated list
    for fail-over; ``"mock://<anything>"`` for confluent-kafka's in-memory registry) or an
    existing ``SchemaRegistryClient`` (shared, not closed by :meth:`close`). ``config``
    adds client settings, with confluent-kafka's names: ``"basic.auth.user.info"``,
    ``"ssl.ca.location"``, ``"timeout"`` (seconds per request), ``"max.retries"`` (default 3),
    ``"retries.wait.ms"``, ``"bearer.auth.*"``...

    Ids are cached per (subject, schema) for the life of the object; ``get_latest`` is cached
    for ``latest_ttl`` seconds (``None``, the default, keeps it until :meth:`clear_cache`,
    as confluent-kafka does).

    Note: confluent-kafka's Python mock registry is per client *instance*, not per URL (Java's
    ``MockSchemaRegistry`` scopes by URL): to share one between two serializers, pass the same
    ``SchemaRegistryClient`` (or the same ``ConfluentSchemaRegistry``) to both.

    Raises :class:`ConfigError` when confluent-kafka's Schema Registry support is not
    installed (``pip install 'kprod[serde]'``) or the URL/config is invalid.
    """

    def __init__(
        self,
        registry: str | SchemaRegistryClient,
        *,
        config: Mapping[str, Any] | None = None,
        latest_ttl: float | None = None,
    ) -> None:
        try:
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as exc:
            raise ConfigError(
                f"ConfluentSchemaRegistry needs confluent-kafka's Schema Registry client ({exc}); "
                "install it with: pip install 'kprod[serde]'"
            ) from exc
        if isinstance(registry, str):
            conf = {"url": registry, **(config or {})}
            try:
                self._client: SchemaRegistryClient = SchemaRegistryClient.new_client(conf)
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"schema registry {redact_url(registry)}: invalid client config: {exc}"
                ) from exc
            self._owned = True
        elif isinstance(registry, SchemaRegistryClient):
            if config:
                raise ConfigError(
                    "ConfluentSchemaRegistry: pass config only with a URL; an existing SchemaRegistryClient "
                    "is used as configured"
                )
            self._client = registry
            self._owned = False
        else:
            raise ConfigError(
                "ConfluentSchemaRegistry: registry must be a URL str or a "
                f"confluent_kafka.schema_registry.SchemaRegistryClient, got a {type(registry).__qualname__}"
            )
        if latest_ttl is not None and latest_ttl < 0:
            raise ConfigError(f"ConfluentSchemaRegistry: latest_ttl must be >= 0 or None, got {latest_ttl!r}")
        self._url = redact_url(str(self._client.config().get("url", "?")))  # type: ignore[no-untyped-call]
        self._latest_ttl = latest_ttl
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, RegistrySchema], int] = {}
        self._versions: dict[tuple[str, RegistrySchema], int] = {}
        self._latest: dict[str, tuple[float, int, RegistrySchema]] = {}

    @property
    def url(self) -> str:
        """The registry URL, without credentials."""
        return self._url

    @property
    def client(self) -> SchemaRegistryClient:
        """The underlying confluent-kafka ``SchemaRegistryClient``."""
        return self._client

    def register(self, subject: str, schema: RegistrySchema) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its id."""
        key = (subject, schema)
        schema_id = self._ids.get(key)
        if schema_id is not None:
            return schema_id
        with self._lock:
            schema_id = self._ids.get(key)
            if schema_id is None:
                registered = self._call("register a schema", subject, self._register_full, subject, schema)
                schema_id = int(registered.schema_id)
                self._ids[key] = schema_id
                if registered.version is not None:
                    self._versions[key] = int(registered.version)
        return schema_id

    def lookup(self, subject: str, schema: RegistrySchema) -> int:
        """The id of ``schema`` under ``subject``; :class:`RegistryError` (``not_found``) if not registered."""
        key = (subject, schema)
        schema_id = self._ids.get(key)
        if schema_id is not None:
            return schema_id
        self._lookup(subject, schema)
        return self._ids[key]

    def lookup_version(self, subject: str, schema: RegistrySchema) -> int:
        """The version of ``schema`` under ``subject``; :class:`RegistryError` if not registered."""
        key = (subject, schema)
        version = self._versions.get(key)
        if version is not None:
            return version
        self._lookup(subject, schema)
        return self._versions[key]

    def _lookup(self, subject: str, schema: RegistrySchema) -> None:
        with self._lock:
            key = (subject, schema)
            if key in self._versions:
                return
            registered = self._call(
                "look up a schema", subject, self._client.lookup_schema, subject, self._to_confluent(schema)
            )
            self._ids[key] = int(registered.schema_id)
            self._versions[key] = int(registered.version)

    def get_latest(self, subject: str) -> tuple[int, RegistrySchema]:
        """The id and schema of the latest version under ``subject`` (cached, see ``latest_ttl``)."""
        now = time.monotonic()
        hit = self._latest.get(subject)
        if hit is not None and (self._latest_ttl is None or now - hit[0] < self._latest_ttl):
            return hit[1], hit[2]
        registered = self._call("get the latest schema", subject, self._client.get_latest_version, subject)
        schema = self._from_confluent(registered.schema)
        schema_id = int(registered.schema_id)
        with self._lock:
            self._latest[subject] = (now, schema_id, schema)
            if registered.version is not None:
                self._versions[(subject, schema)] = int(registered.version)
                self._ids[(subject, schema)] = schema_id
        return schema_id, schema

    def clear_cache(self) -> None:
        """Forget every cached id, version and latest schema (this object's and the client's)."""
        with self._lock:
            self._ids.clear()
            self._versions.clear()
            self._latest.clear()
        clear = getattr(self._client, "clear_caches", None)
        if callable(clear):
            clear()

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owned:
            self._client.close()

    def __enter__(self) -> ConfluentSchemaRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ConfluentSchemaRegistry({self._url!r})"

    # -- helpers

    def _register_full(self, subject: str, schema: RegistrySchema) -> Any:
        return self._client.register_schema_full_response(subject, self._to_confluent(schema))

    @staticmethod
    def _to_confluent(schema: RegistrySchema) -> _CkSchema:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry import SchemaReference as CkReference

        refs = [CkReference(r.name, r.subject, r.version) for r in schema.references]
        return Schema(schema.schema_str, schema.schema_type, refs)

    @staticmethod
    def _from_confluent(schema: _CkSchema) -> RegistrySchema:
        refs = tuple(
            SchemaReference(str(r.name), str(r.subject), int(r.version or 0))
            for r in (schema.references or ())
        )
        return RegistrySchema(str(schema.schema_str or ""), str(schema.schema_type or "AVRO"), refs)

    def _call(self, action: str, subject: str, fn: Callable[..., Any], *args: Any) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return fn(*args)
        except SchemaRegistryError as exc:
            status = exc.http_status_code
            code = exc.error_code
            if status == 404:
                what = {
                    40401: "subject not found",
                    40402: "version not found",
                    40403: "schema not found",
                }.get(code, "not found")
                cause = f"{what} ({exc})"
            else:
                cause = str(exc)
            raise RegistryError(
                f"schema registry {self._url}: cannot {action} for subject {subject!r}: {cause}",
                url=self._url,
                subject=subject,
                status=status,
                code=code,
            ) from exc
        except Exception as exc:
            # Transport errors (connection refused, DNS, TLS, timeouts) come from httpx.
            raise RegistryError(
                f"schema registry {self._url}: cannot {action} for subject {subject!r}: "
                f"registry unreachable or failed ({type(exc).__name__}: {exc})",
                url=self._url,
                subject=subject,
            ) from exc


__all__ = [
    "MAGIC_BYTE",
    "SCHEMA_TYPES",
    "ConfluentSchemaRegistry",
    "RegistryError",
    "RegistrySchema",
    "SchemaIdResolver",
    "SchemaReference",
    "SchemaRegistry",
    "SubjectNameStrategy",
    "VersionedSchemaRegistry",
    "check_strategy",
    "frame",
    "frame_header",
    "record_name_strategy",
    "redact_url",
    "topic_name_strategy",
    "topic_record_name_strategy",
    "unframe",
]
