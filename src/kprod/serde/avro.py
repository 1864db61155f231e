"""Avro values, with or without a schema registry (Confluent wire format), using fastavro.

::

    from kprod.serde.avro import AvroSerializer
    from kprod.serde.registry import ConfluentSchemaRegistry

    registry = ConfluentSchemaRegistry("http://registry:8081")
    producer = Producer(value_serializer=AvroSerializer(SCHEMA, registry))

With a registry, each value is ``0``, the 4-byte schema id, then the Avro binary
encoding: byte for byte what confluent-kafka's ``AvroSerializer`` (and Java's
``KafkaAvroSerializer``) writes, so their deserializers read it. Without one, the bare
Avro binary encoding (no framing), for readers that know the schema.

Needs ``fastavro`` (``pip install 'kprod[serde]'``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from kprod.errors import ConfigError, KprodError, SerializationError
from kprod.serde.registry import (
    RegistrySchema,
    SchemaIdResolver,
    SchemaRegistry,
    SubjectNameStrategy,
    frame_header,
    topic_name_strategy,
)

try:
    import fastavro
    from fastavro.validation import ValidationError as _AvroValidationError
    from fastavro.validation import validate as _avro_validate
except ImportError as _exc:  # pragma: no cover - depends on the environment
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None

Headers = list[tuple[str, bytes | None]] | None

_MAX_REPORTED: Final = 4


def _schema_text(schema: str | Mapping[str, Any] | Sequence[Any]) -> str:
    """The schema as registered: confluent-kafka's rules (strip; a bare primitive becomes ``{"type": ...}``)."""
    if isinstance(schema, str):
        text = schema.strip()
        if not text:
            raise ConfigError("AvroSerializer: the schema is an empty string")
        if text[0] not in "{[":
            text = '{"type":' + text + "}"
        return text
    return json.dumps(schema, separators=(",", ":"))


def _describe_schema(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, Mapping):
        kind = schema.get("type")
        name = schema.get("name")
        if name:
            return f"{kind} {name}"
        if kind == "array":
            return f"array of {_describe_schema(schema.get('items'))}"
        if kind == "map":
            return f"map of {_describe_schema(schema.get('values'))}"
        logical = schema.get("logicalType")
        return f"{kind} ({logical})" if logical else str(kind)
    if isinstance(schema, list):
        return "union [" + ", ".join(_describe_schema(s) for s in schema) + "]"
    return repr(schema)


def _describe_datum(datum: Any) -> str:
    if datum is None:
        return "None"
    text = repr(datum)
    if len(text) > 60:
        text = text[:50] + "..." + text[-6:]
    return f"{type(datum).__qualname__} {text}"


def _describe_errors(errors: Sequence[Any]) -> str:
    """One line per fastavro ValidationErrorData: where, what was expected, what came."""
    # Leaves first: for a union, fastavro reports every branch that failed; the deepest is the useful one.
    ordered = sorted(errors, key=lambda e: isinstance(e.datum, (dict, list)))
    parts = []
    for err in ordered[:_MAX_REPORTED]:
        field = str(err.field)
        if field:
            record, _, name = field.rpartition(".")
            where = f"field {name!r} of record {record}" if record else f"field {name!r}"
        else:
            where = "the value itself"
        got = _describe_datum(err.datum)
        if err.datum is None:
            got += " (missing or None, and the field has no default)"
        elif err.schema in ("int", "long") and type(err.datum) is int:
            got += f" (out of the {32 if err.schema == 'int' else 64}-bit range of Avro {err.schema})"
        parts.append(f"{where}: expected {_describe_schema(err.schema)}, got {got}")
    if len(ordered) > _MAX_REPORTED:
        parts.append(f"and {len(ordered) - _MAX_REPORTED} more")
    return "; ".join(parts)


def _is_raw_bytes(parsed: Any) -> bool:
    # confluent-kafka (as Java's KafkaAvroSerializer) writes a value of the primitive schema
    # "bytes" raw after the header, without Avro's length prefix.
    return parsed == "bytes" or (
        isinstance(parsed, Mapping) and parsed.get("type") == "bytes" and "logicalType" not in parsed
    )


class AvroSerializer:
    """Avro-encodes dicts (records), and any value its schema allows, with fastavro.

    ``schema`` is the Avro schema as JSON text, or the parsed JSON (a dict, or a list
    for a union). ``registry`` (a :class:`~kprod.serde.registry.SchemaRegistry`, such as
    :class:`~kprod.serde.registry.ConfluentSchemaRegistry`) switches on the Confluent wire
    format; without it the output is bare Avro.

    * ``subject_name_strategy``: ``topic_name_strategy`` (``<topic>-value``, the default),
      ``record_name_strategy`` or ``topic_record_name_strategy``, or your own
      ``f(topic, record_name, is_key) -> subject``.
    * ``auto_register_schemas`` (default True): register ``schema`` under the subject on
      first use. False: look it up, and fail if it is not registered there.
    * ``use_latest_version`` (default False): write with the latest schema registered under
      the subject, and its id (``schema`` may then be None); needs
      ``auto_register_schemas=False``.
    * ``is_key``: True for a key serializer (subject ``<topic>-key``, errors name
      ``key.serializer``).
    * ``validate`` (default True): check each value against the schema before writing.
      fastavro's writer lets some mismatches through silently (an ``int`` beyond 32 bits is
      written as a ``long`` that readers reject, ``1.5`` in an ``int`` field becomes ``1``,
      ``2`` in a ``boolean`` becomes ``true``), so this is on by default; it costs about as
      much as the write itself. With ``validate=False`` a value the writer rejects is still
      reported with the field at fault.
    * ``to_dict``: ``f(value) -> dict`` applied first (for dataclasses, pydantic models...).
    * ``strict``: reject records with fields the schema does not have (fastavro ``strict``).

    The schema id is resolved once per topic, on that topic's first record (a blocking
    registry request; call :meth:`schema_id` first to do it ahead of time, e.g. before
    using an :class:`~kprod.aio.AsyncProducer`). ``None`` gives a null (a tombstone).

    Errors raise :class:`~kprod.errors.SerializationError` from ``send()``: a value that does
    not match names the schema and the field at fault; a registry failure
    (:class:`~kprod.serde.registry.RegistryError`) names the registry URL, the subject and the
    cause. An invalid schema raises :class:`~kprod.errors.ConfigError` here.
    """

    __slots__ = (
        "_parsed",
        "_parsed_cache",
        "_raw_bytes",
        "_resolver",
        "_text",
        "name",
        "setting",
        "strict",
        "to_dict",
        "validate",
    )

    def __init__(
        self,
        schema: str | Mapping[str, Any] | Sequence[Any] | None,
        registry: SchemaRegistry | None = None,
        *,
        subject_name_strategy: SubjectNameStrategy = topic_name_strategy,
        auto_register_schemas: bool = True,
        use_latest_version: bool = False,
        is_key: bool = False,
        validate: bool = True,
        to_dict: Callable[[Any], Any] | None = None,
        strict: bool = False,
    ) -> None:
        if _IMPORT_ERROR is not None:
            raise ConfigError(
                f"AvroSerializer needs fastavro ({_IMPORT_ERROR}); install it with: pip install 'kprod[serde]'"
            )
        self.setting = "key.serializer" if is_key else "value.serializer"
        if to_dict is not None and not callable(to_dict):
            raise ConfigError(f"AvroSerializer ({self.setting}): to_dict must be a callable, got {to_dict!r}")
        self.validate = validate
        self.to_dict = to_dict
        self.strict = strict
        self._parsed_cache: dict[str, Any] = {}
        self._text: str | None = None
        self._parsed: Any = None
        self.name: str | None = None
        if schema is not None:
            self._text = _schema_text(schema)
            self._parsed = self._parse(self._text)
            self.name = self._record_name(self._parsed, self._text)
        elif not use_latest_version or registry is None:
            raise ConfigError(
                f"AvroSerializer ({self.setting}): a schema is required (it may be None only with a "
                "registry and use_latest_version=True)"
            )
        self._raw_bytes = registry is not None and _is_raw_bytes(self._parsed)
        self._resolver: SchemaIdResolver | None = None
        if registry is not None:
            self._resolver = SchemaIdResolver(
                registry,
                RegistrySchema(self._text, "AVRO") if self._text is not None else None,
                self.name,
                serializer="AvroSerializer",
                strategy=subject_name_strategy,
                auto_register=auto_register_schemas,
                use_latest=use_latest_version,
                is_key=is_key,
            )
        elif use_latest_version:
            raise ConfigError(f"AvroSerializer ({self.setting}): use_latest_version=True needs a registry")

    # -- schema handling

    def _parse(self, text: str) -> Any:
        parsed = self._parsed_cache.get(text)
        if parsed is not None:
            return parsed
        try:
            parsed = fastavro.parse_schema(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"AvroSerializer ({self.setting}): the schema is not valid JSON: {exc}"
            ) from exc
        except Exception as exc:  # fastavro's SchemaParseException, UnknownType, ValueError...
            raise ConfigError(
                f"AvroSerializer ({self.setting}): invalid Avro schema ({type(exc).__name__}: {exc})"
            ) from exc
        self._parsed_cache[text] = parsed
        return parsed

    @staticmethod
    def _record_name(parsed: Any, text: str) -> str | None:
        # As confluent-kafka: the full name of a named type, the type of a primitive, None for a union.
        if isinstance(parsed, Mapping):
            name = parsed.get("name")
            if name:
                return str(name)
            kind = json.loads(text).get("type")
            return str(kind) if isinstance(kind, str) else None
        if isinstance(parsed, str):
            return parsed
        return None

    @property
    def schema(self) -> str | None:
        """The serializer's own schema text (as registered), or None with ``use_latest_version`` and no schema."""
        return self._text

    def schema_id(self, topic: str) -> int:
        """Resolve (register or look up) and cache the schema id for ``topic``; return it.

        Raises :class:`~kprod.errors.SerializationError` on a registry failure and
        :class:`~kprod.errors.ConfigError` when there is no registry.
        """
        if self._resolver is None:
            raise ConfigError(f"AvroSerializer ({self.setting}): no registry, so no schema id")
        return self._resolver.resolve(topic)[0]

    # -- the hot path

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """Avro-encode ``data`` for ``topic`` (framed when there is a registry); ``None`` stays ``None``."""
        if data is None:
            return None
        parsed = self._parsed
        out = io.BytesIO()
        raw_bytes = self._raw_bytes
        schema_name = self.name
        if self._resolver is not None:
            schema_id, latest = self._resolver.resolve(topic)
            if latest is not None:
                parsed, schema_name = self._latest(topic, latest)
                raw_bytes = _is_raw_bytes(parsed)
            out.write(frame_header(schema_id))
        value = data
        if self.to_dict is not None:
            try:
                value = self.to_dict(data)
            except KprodError:
                raise
            except Exception as exc:
                raise SerializationError(
                    f"AvroSerializer ({self.setting}) for topic {topic!r}: to_dict raised "
                    f"{type(exc).__name__} on a {type(data).__qualname__}: {exc}"
                ) from exc
        if raw_bytes:
            if isinstance(value, (bytes, bytearray, memoryview)):
                out.write(value)
                return out.getvalue()
            if isinstance(value, str):
                out.write(value.encode())
                return out.getvalue()
        # raise_errors=False is the fast check: with True, fastavro builds (and json-dumps) an
        # exception for every union branch it tries, valid values included.
        if self.validate and not _avro_validate(value, parsed, raise_errors=False, strict=self.strict):
            try:
                _avro_validate(value, parsed, raise_errors=True, strict=self.strict)
            except _AvroValidationError as exc:
                raise self._mismatch(topic, schema_name, exc) from exc
        try:
            fastavro.schemaless_writer(out, parsed, value, strict=self.strict)
        except Exception as exc:
            try:
                _avro_validate(value, parsed, raise_errors=True, strict=self.strict)
            except _AvroValidationError as verr:
                raise self._mismatch(topic, schema_name, verr) from exc
            except Exception:
                pass
            raise SerializationError(
                f"AvroSerializer ({self.setting}) cannot encode a {type(data).__qualname__} for topic {topic!r} "
                f"with schema {schema_name or '(unnamed)'}: {type(exc).__name__}: {exc}"
            ) from exc
        return out.getvalue()

    def _latest(self, topic: str, latest: RegistrySchema) -> tuple[Any, str | None]:
        if latest.schema_type.upper() != "AVRO":
            raise SerializationError(
                f"AvroSerializer ({self.setting}) for topic {topic!r}: the latest registered schema is "
                f"{latest.schema_type}, not AVRO"
            )
        if latest.references:
            raise SerializationError(
                f"AvroSerializer ({self.setting}) for topic {topic!r}: the latest registered schema references "
                f"other schemas ({', '.join(r.name for r in latest.references)}), which kprod does not resolve; "
                "pass the full schema and use_latest_version=False"
            )
        try:
            parsed = self._parse(latest.schema_str)
        except ConfigError as exc:
            raise SerializationError(f"{exc} (the latest registered schema, for topic {topic!r})") from exc
        return parsed, self._record_name(parsed, latest.schema_str)

    def _mismatch(self, topic: str, schema_name: str | None, exc: Any) -> SerializationError:
        return SerializationError(
            f"AvroSerializer ({self.setting}): the value for topic {topic!r} does not match schema "
            f"{schema_name or '(unnamed)'}: {_describe_errors(exc.errors)}"
        )

    def __repr__(self) -> str:
        where = f", registry={self._resolver.registry!r}" if self._resolver is not None else ""
        return f"AvroSerializer({self.name or '(unnamed)'}{where})"


__all__ = ["AvroSerializer"]
