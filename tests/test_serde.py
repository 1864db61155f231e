"""Tests for kprod.serde: built-in serializers and resolve_serializer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kprod.errors import ConfigError, SerializationError
from kprod.serde import (
    BytesSerializer,
    CallableSerializer,
    DefaultSerializer,
    JsonSerializer,
    Serializer,
    StringSerializer,
    base,
    resolve_serializer,
)

Headers = list[tuple[str, bytes | None]] | None


# ------------------------------------------------------------------ BytesSerializer


def test_bytes_serializer() -> None:
    s = BytesSerializer()
    b = b"abc"
    assert s.serialize("t", b, None) is b
    assert s.serialize("t", bytearray(b"xy"), None) == b"xy"
    out = s.serialize("t", memoryview(b"hello")[1:3], None)
    assert out == b"el" and type(out) is bytes
    assert s.serialize("t", None, None) is None


def test_bytes_serializer_rejects_other_types() -> None:
    with pytest.raises(SerializationError) as info:
        BytesSerializer(setting="key.serializer").serialize("orders", "text", None)
    msg = str(info.value)
    assert "BytesSerializer" in msg and "'orders'" in msg and "str" in msg and "key.serializer" in msg
    assert info.value.stage == "serialization"
    with pytest.raises(SerializationError, match=r"value\.serializer"):
        BytesSerializer().serialize("t", 5, None)


# ------------------------------------------------------------------ StringSerializer


def test_string_serializer() -> None:
    assert StringSerializer().serialize("t", "héllo", None) == "héllo".encode()
    assert StringSerializer("latin-1").serialize("t", "é", None) == b"\xe9"
    assert StringSerializer().serialize("t", None, None) is None

    class S(str):
        pass

    assert StringSerializer().serialize("t", S("x"), None) == b"x"


def test_string_serializer_errors() -> None:
    with pytest.raises(SerializationError, match=r"'t'.*bytes|bytes.*'t'"):
        StringSerializer().serialize("t", b"x", None)
    with pytest.raises(SerializationError, match="ascii"):
        StringSerializer("ascii").serialize("t", "é", None)
    with pytest.raises(ConfigError, match="no-such-codec"):
        StringSerializer("no-such-codec")


# ------------------------------------------------------------------ JsonSerializer


def test_json_serializer() -> None:
    s = JsonSerializer()
    assert s.serialize("t", {"a": [1, 2], "b": "é"}, None) == '{"a":[1,2],"b":"é"}'.encode()
    assert s.serialize("t", None, None) is None  # tombstone, not b"null"
    assert s.serialize("t", 1, None) == b"1"
    assert isinstance(s.serialize("t", [], None), bytes)


def test_json_serializer_errors_and_default() -> None:
    with pytest.raises(SerializationError) as info:
        JsonSerializer().serialize("topic-x", {"a": object()}, None)
    assert "JsonSerializer" in str(info.value) and "'topic-x'" in str(info.value)
    s = JsonSerializer(default=lambda o: "OBJ")
    assert s.serialize("t", {"a": object()}, None) == b'{"a":"OBJ"}'


def test_json_stdlib_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_orjson_dumps", None)
    s = JsonSerializer()
    assert s.serialize("t", {"a": 1, "b": "é"}, None) == '{"a":1,"b":"é"}'.encode()
    with pytest.raises(SerializationError):
        s.serialize("t", {1j}, None)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
        max_leaves=20,
    )
)
def test_json_roundtrip(obj: Any) -> None:
    out = JsonSerializer().serialize("t", obj, None)
    if obj is None:
        assert out is None
    else:
        assert out is not None and json.loads(out) == obj


# ------------------------------------------------------------------ DefaultSerializer


def test_default_serializer() -> None:
    s = DefaultSerializer()
    b = b"raw"
    assert s.serialize("t", b, None) is b
    assert s.serialize("t", "é", None) == "é".encode()
    assert s.serialize("t", bytearray(b"a"), None) == b"a"
    assert s.serialize("t", memoryview(b"ab"), None) == b"ab"
    assert s.serialize("t", None, None) is None
    with pytest.raises(SerializationError) as info:
        s.serialize("events", {"a": 1}, None)
    msg = str(info.value)
    assert "dict" in msg and "'events'" in msg and "value.serializer" in msg and "json" in msg


@given(st.binary() | st.text())
def test_default_serializer_property(data: bytes | str) -> None:
    out = DefaultSerializer().serialize("t", data, None)
    assert out == (data.encode() if isinstance(data, str) else data)


# ------------------------------------------------------------------ resolve_serializer


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("bytes", BytesSerializer),
        ("BYTES", BytesSerializer),
        ("str", StringSerializer),
        ("string", StringSerializer),
        ("json", JsonSerializer),
        ("default", DefaultSerializer),
        ("org.apache.kafka.common.serialization.StringSerializer", StringSerializer),
        ("ByteArraySerializer", BytesSerializer),
    ],
)
def test_resolve_names(name: str, cls: type) -> None:
    s = resolve_serializer(name, setting="key.serializer")
    assert isinstance(s, cls)
    assert isinstance(s, (BytesSerializer, StringSerializer, JsonSerializer, DefaultSerializer))
    assert s.setting == "key.serializer"


def test_resolve_none_is_default() -> None:
    assert isinstance(resolve_serializer(None, setting="value.serializer"), DefaultSerializer)


def test_resolve_object_and_class() -> None:
    class Upper:
        def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
            if headers is not None:
                headers.append(("seen", b"1"))
            return str(data).upper().encode()

    obj = Upper()
    assert resolve_serializer(obj, setting="value.serializer") is obj
    from_class = resolve_serializer(Upper, setting="value.serializer")
    assert isinstance(from_class, Upper)
    assert isinstance(from_class, Serializer)
    hdrs: list[tuple[str, bytes | None]] = []
    assert from_class.serialize("t", "a", hdrs) == b"A" and hdrs == [("seen", b"1")]

    class NeedsArgs:
        def __init__(self, x: int) -> None:
            self.x = x

        def serialize(self, topic: str, data: Any, headers: Headers) -> bytes | None:
            return None

    with pytest.raises(ConfigError, match=r"value\.serializer"):
        resolve_serializer(NeedsArgs, setting="value.serializer")


def test_resolve_callable() -> None:
    s = resolve_serializer(lambda d: d.encode("ascii"), setting="value.serializer")
    assert isinstance(s, CallableSerializer)
    assert s.serialize("t", "ab", None) == b"ab"
    assert resolve_serializer(lambda d: None, setting="v").serialize("t", 1, None) is None
    assert resolve_serializer(lambda d: bytearray(b"z"), setting="v").serialize("t", 1, None) == b"z"

    bad_return = resolve_serializer(lambda d: "not bytes", setting="value.serializer")
    with pytest.raises(SerializationError, match="returned a str"):
        bad_return.serialize("t", 1, None)

    def boom(d: object) -> bytes:
        raise RuntimeError("nope")

    with pytest.raises(SerializationError, match=r"RuntimeError.*nope") as info:
        resolve_serializer(boom, setting="key.serializer").serialize("t", 1, None)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "key.serializer" in str(info.value)


def test_resolve_callable_arity_checked() -> None:
    with pytest.raises(ConfigError, match=r"value\.serializer"):
        resolve_serializer(lambda topic, data: b"", setting="value.serializer")
    # builtins without an inspectable signature are trusted
    assert resolve_serializer(bytes, setting="v").serialize("t", 3, None) == b"\x00\x00\x00"


@pytest.mark.parametrize("bad", [5, 1.5, ["json"], b"json"])
def test_resolve_rejects(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_serializer(bad, setting="key.serializer")
    assert "'key.serializer'" in str(info.value)


def test_resolve_unknown_name_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_serializer("jsn", setting="value.serializer")
    msg = str(info.value)
    assert "'jsn'" in msg and "'value.serializer'" in msg and "'json'" in msg


def test_builtins_satisfy_protocol() -> None:
    for s in (BytesSerializer(), StringSerializer(), JsonSerializer(), DefaultSerializer()):
        assert isinstance(s, Serializer)
        assert repr(s)
