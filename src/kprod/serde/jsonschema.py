"""JSON values checked against a JSON Schema, in the Confluent wire format when given a registry.

::

    from kprod.serde.jsonschema import JsonSchemaSerializer
    from kprod.serde.registry import ConfluentSchemaRegistry

    registry = ConfluentSchemaRegistry("http://registry:8081")
    producer = Producer(value_serializer=JsonSchemaSerializer(SCHEMA, registry))

With a registry each value is ``0``, the 4-byte schema id, then compact UTF-8 JSON, as
confluent-kafka's ``JSONSerializer`` writes it (its ``JSONDeserializer`` reads it back).
Without one, the bare JSON. Validation uses the ``jsonschema`` package, with the draft
the schema's ``$schema`` names (the latest draft when it names none), as confluent-kafka.

Needs ``jsonschema`` (``pip install 'kprod[serde]'``); orjson is used for encoding when
installed (as by confluent-kafka), else the stdlib ``json`` with the same compact output.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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

_orjson_dumps: Callable[..., bytes] | None
try:  # pragma: no cover - depends on the environment
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_dumps = None

Headers = list[tuple[str, bytes | None]] | None

_JSON_SCALARS: Final = (str, int, float, bool, type(None))


def _find_unencodable(value: Any, path: str = "$", depth: int = 0) -> tuple[str, Any] | None:
    """The JSON path and value of the first thing that is not a plain JSON type, or None."""
    if depth > 100:
        return None
    if isinstance(value, _JSON_SCALARS):
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path} (key {k!r})", k
            found = _find_unencodable(v, f"{path}.{k}" if k.isidentifier() else f"{path}[{k!r}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _find_unencodable(v, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
        return None
    return path, value


def _schema_text(schema: str | Mapping[str, Any] | bool) -> str:
    if isinstance(schema, str):
        return schema
    return json.dumps(schema, separators=(",", ":"))


class JsonSchemaSerializer:
    """Encodes JSON values after checking them against a JSON Schema; framed when given a registry.

    ``schema`` is the JSON Schema as text or as a parsed dict; ``registry`` a
    :class:`~kprod.serde.registry.SchemaRegistry` (such as
    :class:`~kprod.serde.registry.ConfluentSchemaRegistry`) or ``None`` for bare JSON.

    * ``validate`` (default True): check each value first; a failure names the JSON path at
      fault (``$.items[2].price``) and the rule it broke. Values are validated as given, so
      they should be plain JSON types (dict, list, str, int, float, bool, None): convert others
      with ``to_dict``.
    * ``subject_name_strategy``, ``auto_register_schemas``, ``use_latest_version``, ``is_key``:
      as for :class:`~kprod.serde.avro.AvroSerializer` (the record name is the schema's
      ``title``). With ``use_latest_version`` the latest registered schema validates.
    * ``to_dict``: ``f(value) -> JSON value`` applied first.
    * ``default``: called for objects the encoder cannot encode, as ``json.dumps(default=)``.

    ``None`` gives a null (a tombstone), not the JSON text ``null``. Errors raise
    :class:`~kprod.errors.SerializationError` naming the schema, the topic and the path; an
    invalid schema raises :class:`~kprod.errors.ConfigError` here.
    """

    __slots__ = (
        "_resolver",
        "_text",
        "_validator",
        "_validators",
        "default",
        "name",
        "setting",
        "to_dict",
        "validate",
    )

    def __init__(
        self,
        schema: str | Mapping[str, Any] | bool | None,
        registry: SchemaRegistry | None = None,
        *,
        validate: bool = True,
        subject_name_strategy: SubjectNameStrategy = topic_name_strategy,
        auto_register_schemas: bool = True,
        use_latest_version: bool = False,
        is_key: bool = False,
        to_dict: Callable[[Any], Any] | None = None,
        default: Callable[[Any], Any] | None = None,
    ) -> None:
        self.setting = "key.serializer" if is_key else "value.serializer"
        where = f"JsonSchemaSerializer ({self.setting})"
        if validate:
            try:
                import jsonschema  # noqa: F401
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ConfigError(
                    f"{where} needs jsonschema to validate ({exc}); install it with: pip install 'kprod[serde]' "
                    "(or pass validate=False)"
                ) from exc
        for name, fn in (("to_dict", to_dict), ("default", default)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{where}: {name} must be a callable, got {fn!r}")
        self.validate = validate
        self.to_dict = to_dict
        self.default = default
        self._validators: dict[str, Any] = {}
        self._text: str | None = None
        self._validator: Any = None
        self.name: str | None = None
        if schema is not None:
            self._text = _schema_text(schema)
            parsed = self._parse(self._text, where)
            self.name = self._title(parsed)
            if validate:
                self._validator = self._make_validator(self._text, parsed, where)
        elif not use_latest_version or registry is None:
            raise ConfigError(
                f"{where}: a schema is required (it may be None only with a registry and use_latest_version=True)"
            )
        self._resolver: SchemaIdResolver | None = None
        if registry is not None:
            self._resolver = SchemaIdResolver(
                registry,
                RegistrySchema(self._text, "JSON") if self._text is not None else None,
                self.name,
                serializer="JsonSchemaSerializer",
                strategy=subject_name_strategy,
                auto_register=auto_register_schemas,
                use_latest=use_latest_version,
                is_key=is_key,
            )
        elif use_latest_version:
            raise ConfigError(f"{where}: use_latest_version=True needs a registry")

    # -- schema handling

    @staticmethod
    def _parse(text: str, where: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: the schema is not valid JSON: {exc}") from exc

    @staticmethod
    def _title(parsed: Any) -> str | None:
        if isinstance(parsed, Mapping):
            title = parsed.get("title")
            return title if isinstance(title, str) and title else None
        return None

    def _make_validator(self, text: str, parsed: Any, where: str) -> Any:
        validator = self._validators.get(text)
        if validator is not None:
            return validator
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        cls = validator_for(parsed)
        try:
            cls.check_schema(parsed)
        except SchemaError as exc:
            raise ConfigError(
                f"{where}: invalid JSON Schema at {exc.json_path} ({cls.__name__}): {exc.message}"
            ) from exc
        validator = cls(parsed)
        self._validators[text] = validator
        return validator

    @property
    def schema(self) -> str | None:
        """The serializer's own schema text (as registered)."""
        return self._text

    def schema_id(self, topic: str) -> int:
        """Resolve (register or look up) and cache the schema id for ``topic``; return it."""
        if self._resolver is None:
            raise ConfigError(f"JsonSchemaSerializer ({self.setting}): no registry, so no schema id")
        return self._resolver.resolve(topic)[0]

    # -- the hot path

    def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
        """The JSON encoding of ``data`` (framed with a registry); ``None`` stays ``None``."""
        if data is None:
            return None
        validator = self._validator
        schema_name = self.name
        header = b""
        if self._resolver is not None:
            schema_id, latest = self._resolver.resolve(topic)
            if latest is not None:
                validator, schema_name = self._latest(topic, latest)
            header = frame_header(schema_id)
        value = data
        if self.to_dict is not None:
            try:
                value = self.to_dict(data)
            except KprodError:
                raise
            except Exception as exc:
                raise SerializationError(
                    f"JsonSchemaSerializer ({self.setting}) for topic {topic!r}: to_dict raised "
                    f"{type(exc).__name__} on a {type(data).__qualname__}: {exc}"
                ) from exc
        if validator is not None:
            from jsonschema.exceptions import best_match

            error = best_match(validator.iter_errors(value))
            if error is not None:
                raise SerializationError(
                    f"JsonSchemaSerializer ({self.setting}): the value for topic {topic!r} does not match schema "
                    f"{schema_name or '(untitled)'}: at {error.json_path}: {error.message}"
                )
        try:
            if _orjson_dumps is not None:
                body = _orjson_dumps(value, default=self.default)
            else:
                body = json.dumps(
                    value, separators=(",", ":"), ensure_ascii=False, default=self.default
                ).encode()
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            found = _find_unencodable(value)
            at = f" at {found[0]} (a {type(found[1]).__qualname__})" if found is not None else ""
            raise SerializationError(
                f"JsonSchemaSerializer ({self.setting}) cannot encode a {type(data).__qualname__} as JSON for topic "
                f"{topic!r}{at}: {exc}; convert it with to_dict=..., or pass default=..."
            ) from exc
        return header + body

    def _latest(self, topic: str, latest: RegistrySchema) -> tuple[Any, str | None]:
        where = f"JsonSchemaSerializer ({self.setting}) for topic {topic!r}"
        if latest.schema_type.upper() != "JSON":
            raise SerializationError(
                f"{where}: the latest registered schema is {latest.schema_type}, not JSON"
            )
        try:
            parsed = self._parse(latest.schema_str, where)
            validator = self._make_validator(latest.schema_str, parsed, where) if self.validate else None
        except ConfigError as exc:
            raise SerializationError(f"{exc} (the latest registered schema)") from exc
        return validator, self._title(parsed)

    def __repr__(self) -> str:
        where = f", registry={self._resolver.registry!r}" if self._resolver is not None else ""
        return f"JsonSchemaSerializer({self.name or '(untitled)'}{where})"


__all__ = ["JsonSchemaSerializer"]
