"""SASL without a broker: the mechanisms' messages against the RFC test vectors, Java's JAAS syntax,
token handling, and the settings that must fail at construction (and never show a secret)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from kprod import ConfigError, Producer
from kprod._io.sasl_login import sasl_login
from kprod.config import ProducerConfig
from kprod.sasl import (
    OAuthBearerExchange,
    PlainExchange,
    SaslFailure,
    ScramExchange,
    jwt_expiry_ms,
    parse_jaas_config,
    unsecured_jwt,
)

SECRET = "s3cr3t-Pa55"


# ---------------------------------------------------------------------------- RFC vectors


def test_scram_sha_256_rfc7677_vector() -> None:
    """RFC 7677 section 3: user "user", password "pencil"."""
    exchange = ScramExchange("SCRAM-SHA-256", "user", "pencil", client_nonce="rOprNGfwEbeRWgbNEkqO")
    assert exchange.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = exchange.respond(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert not exchange.complete
    assert exchange.respond(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") is None
    assert exchange.complete


def test_scram_rfc5802_vector_through_the_same_exchange() -> None:
    """RFC 5802 section 5 (SCRAM-SHA-1, which Kafka does not offer, but the exchange is the same)."""
    exchange = ScramExchange("SCRAM-SHA-1", "user", "pencil", client_nonce="fyko+d2lbbFgONRv9qkxdawL")
    assert exchange.first() == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    final = exchange.respond(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    assert final == b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    assert exchange.respond(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=") is None and exchange.complete


def test_scram_refuses_a_server_that_does_not_know_the_password() -> None:
    exchange = ScramExchange("SCRAM-SHA-256", "user", "pencil", client_nonce="rOprNGfwEbeRWgbNEkqO")
    exchange.first()
    exchange.respond(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    with pytest.raises(SaslFailure, match="does not verify"):
        exchange.respond(b"v=" + base64.b64encode(b"\0" * 32))
    assert not exchange.complete
    other = ScramExchange("SCRAM-SHA-256", "user", "pencil", client_nonce="abc")
    other.first()
    with pytest.raises(SaslFailure):  # the server's nonce must extend ours
        other.respond(b"r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def test_scram_escapes_user_names() -> None:
    """RFC 5802: ',' and '=' in a user name are sent as =2C and =3D."""
    assert ScramExchange("SCRAM-SHA-512", "a,b=c", "p", client_nonce="n").first() == b"n,,n=a=2Cb=3Dc,r=n"


def test_plain_and_oauthbearer_messages() -> None:
    plain = PlainExchange("alice", SECRET)
    assert plain.first() == b"\0alice\0" + SECRET.encode()
    assert plain.respond(b"") is None and plain.complete
    assert SECRET not in repr(plain)
    oauth = OAuthBearerExchange("tok.en.", {"b": "2", "a": "1"})
    assert oauth.first() == b"n,,\x01auth=Bearer tok.en.\x01a=1\x01b=2\x01\x01"
    # A refused token: the broker's JSON error is kept and acknowledged with ^A (RFC 7628 3.2.3).
    assert oauth.respond(b'{"status":"invalid_token"}') == b"\x01"
    assert oauth.server_error == '{"status":"invalid_token"}' and not oauth.complete


def test_jwt_expiry_and_unsecured_tokens() -> None:
    token = unsecured_jwt({"sub": "admin", "exp": 1_700_000_000})
    header, _claims, signature = token.split(".")
    assert signature == ""
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "none"}
    assert jwt_expiry_ms(token) == 1_700_000_000_000
    assert jwt_expiry_ms("opaque-token") == -1
    assert jwt_expiry_ms("a.!!!.c") == -1


# ---------------------------------------------------------------------------- JAAS


def test_jaas_config_as_java_writes_it() -> None:
    jaas = parse_jaas_config(
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" '
        "password='single quoted' tokenauth=false;"
    )
    assert jaas.login_module.endswith("ScramLoginModule") and jaas.control_flag == "required"
    assert jaas.mechanisms == ("SCRAM-SHA-256", "SCRAM-SHA-512")
    assert jaas.options == {"username": "alice", "password": "single quoted", "tokenauth": "false"}
    escaped = parse_jaas_config(
        'org.apache.kafka.common.security.plain.PlainLoginModule required\n  username="a\\"b"\n  password="x;y";'
    )
    assert escaped.options == {"username": 'a"b', "password": "x;y"}
    assert SECRET not in repr(parse_jaas_config(f'x.Y required password="{SECRET}";'))


@pytest.mark.parametrize(
    "text, complaint",
    [
        ('org.Foo required username="a"', "ending with ';'"),
        ('org.Foo mandatory username="a";', "control flag"),
        ('org.Foo required username "a";', 'key=\\"value\\"'),
        ('org.Foo required a="1"; org.Bar required b="2";', "more than one"),
    ],
)
def test_bad_jaas_config_is_refused_without_showing_values(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=r"sasl\.jaas\.config") as info:
        parse_jaas_config(text)
    assert complaint.replace("\\", "") in str(info.value)


# ---------------------------------------------------------------------------- settings


def _login(**settings: object):  # type: ignore[no-untyped-def]
    return sasl_login(ProducerConfig.from_user({"security.protocol": "SASL_PLAINTEXT", **settings}))


def test_credentials_from_the_plain_settings_or_from_jaas() -> None:
    assert (
        _login(**{"sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": SECRET}).username == "u"
    )
    login = _login(
        **{
            "sasl.mechanisms": "SCRAM-SHA-512",  # librdkafka's spelling
            "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="bob" password="{SECRET}";',
        }
    )
    assert login is not None and login.mechanism == "SCRAM-SHA-512" and login.username == "bob"
    assert SECRET not in repr(login) and SECRET not in login.describe()


@pytest.mark.parametrize(
    "settings, complaint",
    [
        ({}, "GSSAPI"),
        ({"sasl.mechanism": "PLAIN", "sasl.username": "u"}, "sasl.password"),
        (
            {
                "sasl.mechanism": "PLAIN",
                "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="u" password="{SECRET}";',
            },
            "does not serve sasl.mechanism=PLAIN",
        ),
        ({"sasl.mechanism": "OAUTHBEARER"}, "sasl.oauthbearer.token.provider"),
        (
            {"sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.token.endpoint.url": "https://idp/token"},
            "client credentials",
        ),
        ({"sasl.mechanism": "OAUTHBEARER", "enable.sasl.oauthbearer.unsecure.jwt": True}, "principal"),
        ({"sasl.mechanism": "PLAIN", "sasl.login.callback.handler.class": "com.acme.Handler"}, "Java class"),
    ],
)
def test_incomplete_sasl_settings_fail_at_construction(settings: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as info:
        Producer({"bootstrap.servers": "127.0.0.1:1", "security.protocol": "SASL_SSL", **settings})
    assert SECRET not in str(info.value)


def test_secrets_stay_out_of_reprs_and_errors() -> None:
    config = ProducerConfig.from_user(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            "sasl.password": SECRET,
            "sasl.jaas.config": f'org.apache.kafka.common.security.plain.PlainLoginModule required password="{SECRET}";',
        }
    )
    assert SECRET not in repr(config)
    shown = config.to_dict(secrets=False)
    assert shown["sasl.password"] == "(hidden)" and SECRET not in repr(shown)
    assert config.to_dict()["sasl.password"] == SECRET  # the full dict still round-trips
    with pytest.raises(ConfigError) as info:
        ProducerConfig.from_user({"sasl.password": SECRET}, sasl_password=SECRET + "x")
    assert SECRET not in str(info.value)


def test_token_provider_shapes_and_refresh() -> None:
    """str (lifetime from the JWT), confluent-kafka's oauth_cb tuple with the config string, async."""
    calls: list[object] = []

    def confluent_style(config_string: str) -> tuple[str, float]:
        calls.append(config_string)
        return "opaque", time.time() + 3600

    login = _login(
        **{"sasl.mechanism": "OAUTHBEARER", "oauth_cb": confluent_style, "sasl.oauthbearer.config": "x=1"}
    )
    assert login is not None
    token = asyncio.run(login.token())
    assert token.value == "opaque" and calls == ["x=1"]
    asyncio.run(login.token())
    assert len(calls) == 1  # cached until 80 % of its lifetime (sasl.login.refresh.window.factor)
    login.token_rejected()
    asyncio.run(login.token())
    assert len(calls) == 2  # a token the broker refused is fetched again
    expired = _login(
        **{
            "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.token.provider": lambda: unsecured_jwt(
                {"sub": "a", "exp": int(time.time()) - 5}
            ),
        }
    )
    assert expired is not None
    with pytest.raises(Exception, match="expired"):
        asyncio.run(expired.token())

    async def from_coroutine() -> str:
        return unsecured_jwt({"sub": "a", "exp": int(time.time()) + 100})

    agen = _login(**{"sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.token.provider": from_coroutine})
    assert agen is not None
    assert asyncio.run(agen.token()).expires_at_ms // 1000 == pytest.approx(time.time() + 100, abs=3)


def test_broker_messages_that_do_not_parse_only_fail_the_exchange() -> None:
    """The SCRAM and OAUTHBEARER exchanges read what a broker sends: 5,000 damaged server messages (bit
    flips, cuts, insertions) give SaslFailure or an answer, never another exception."""
    import random

    rng = random.Random(2026)
    first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    final = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    for case in range(5_000):
        message = bytearray(first if case % 2 else final)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(message) or 1)
            op = rng.randrange(3)
            if op == 0 and message:
                message[at] = rng.randrange(256)
            elif op == 1:
                del message[at : at + rng.randint(1, 8)]
            else:
                message[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        scram = ScramExchange("SCRAM-SHA-256", "user", "pencil", client_nonce="rOprNGfwEbeRWgbNEkqO")
        scram.first()
        try:
            if case % 2:
                scram.respond(bytes(message))
            else:
                scram.respond(first)
                scram.respond(bytes(message))
        except SaslFailure:
            pass
        oauth = OAuthBearerExchange("t")
        oauth.first()
        assert oauth.respond(bytes(message)) in (b"\x01", None)


def test_a_broker_asking_for_billions_of_scram_iterations_is_refused_not_obeyed() -> None:
    exchange = ScramExchange("SCRAM-SHA-512", "user", "pencil", client_nonce="abc")
    exchange.first()
    with pytest.raises(SaslFailure, match="at most 16384"):
        exchange.respond(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4000000000")
