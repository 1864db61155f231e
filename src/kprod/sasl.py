"""SASL for broker connections, the pure part: mechanisms as message exchanges, JAAS parsing, tokens.

A :class:`SaslExchange` turns the broker's challenges into the client's answers for one
authentication (PLAIN, SCRAM-SHA-256/512 through ``scramp``, OAUTHBEARER); it never touches a
socket, so the same exchange runs under asyncio in ``kprod._io.connection`` and in unit tests fed
the RFC test vectors. :func:`parse_jaas_config` reads a Java ``sasl.jaas.config`` value, so that a
Java client's properties file works as it is. Nothing here holds a secret in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Final

import scramp  # type: ignore[import-untyped]

from kprod.errors import ConfigError

__all__ = [
    "MECHANISMS",
    "JaasConfig",
    "OAuthBearerToken",
    "SaslExchange",
    "SaslFailure",
    "jwt_expiry_ms",
    "new_exchange",
    "parse_jaas_config",
    "unsecured_jwt",
]

MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
"""The SASL mechanisms kprod speaks (GSSAPI/Kerberos is not supported)."""

_LOGIN_MODULES: Final[dict[str, tuple[str, ...]]] = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": ("PLAIN",),
    "org.apache.kafka.common.security.scram.ScramLoginModule": ("SCRAM-SHA-256", "SCRAM-SHA-512"),
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule": ("OAUTHBEARER",),
}


class SaslFailure(Exception):
    """The exchange cannot go on (a server message that does not verify or parse): the text says why,
    never a secret."""


# ---------------------------------------------------------------------------- JAAS


@dataclass(frozen=True, slots=True)
class JaasConfig:
    """One login module of a ``sasl.jaas.config`` value: its class, control flag and options."""

    login_module: str
    control_flag: str
    options: dict[str, str] = field(repr=False)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The SASL mechanisms this login module serves (empty for a module kprod does not know)."""
        return _LOGIN_MODULES.get(self.login_module, ())


_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'|([^\s=;"\']+)|(=)|(;))', re.S)


def parse_jaas_config(text: str) -> JaasConfig:
    """Parse Java's ``sasl.jaas.config`` syntax: ``<LoginModule> <flag> key=value ... ;``.

    Values are quoted (``"..."`` or ``'...'``, with backslash escapes) or bare words. Exactly one
    login module is allowed, as in Kafka's ``JaasConfig`` for a client.

    :raises ConfigError: naming ``sasl.jaas.config`` and what is wrong (option values are never shown).
    """
    tokens: list[tuple[str, str]] = []  # (kind, text): kind in word, str, =, ;
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None:
            raise ConfigError(
                f"sasl.jaas.config cannot be parsed near character {pos}: expected "
                '<LoginModule class> required key="value" ... ;',
                stage="config",
            )
        pos = m.end()
        double, single, word, equals, _semi = m.groups()
        if double is not None or single is not None:
            raw = double if double is not None else single
            assert raw is not None
            tokens.append(("str", re.sub(r"\\(.)", r"\1", raw)))
        elif word is not None:
            tokens.append(("word", word))
        elif equals is not None:
            tokens.append(("=", "="))
        else:
            tokens.append((";", ";"))
    if len(tokens) < 3 or tokens[0][0] != "word" or tokens[1][0] != "word" or tokens[-1][0] != ";":
        raise ConfigError(
            "sasl.jaas.config must be '<LoginModule class> <required|requisite|sufficient|optional> "
            "key=\"value\" ... ;' (one login module ending with ';')",
            stage="config",
        )
    module, flag = tokens[0][1], tokens[1][1].lower()
    if flag not in ("required", "requisite", "sufficient", "optional"):
        raise ConfigError(
            f"sasl.jaas.config: control flag {tokens[1][1]!r} after {module} must be required, "
            "requisite, sufficient or optional",
            stage="config",
        )
    body = tokens[2:-1]
    if any(kind == ";" for kind, _ in body):
        raise ConfigError(
            "sasl.jaas.config holds more than one login module; a client takes exactly one", stage="config"
        )
    options: dict[str, str] = {}
    i = 0
    while i < len(body):
        if (
            i + 2 >= len(body)
            or body[i][0] != "word"
            or body[i + 1][0] != "="
            or body[i + 2][0] not in ("word", "str")
        ):
            name = body[i][1] if body[i][0] == "word" else "?"
            raise ConfigError(
                f'sasl.jaas.config: option {name!r} of {module} must be written key="value"', stage="config"
            )
        options[body[i][1]] = body[i + 2][1]
        i += 3
    return JaasConfig(module, flag, options)


# ---------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class OAuthBearerToken:
    """An OAUTHBEARER access token and when it expires (ms since the epoch; -1: unknown)."""

    value: str = field(repr=False)
    expires_at_ms: int = -1
    principal: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def jwt_expiry_ms(token: str) -> int:
    """The ``exp`` claim of a JWT in ms since the epoch, or -1 when the token is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return -1
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return -1
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return int(exp * 1000) if isinstance(exp, int | float) and not isinstance(exp, bool) else -1


def unsecured_jwt(claims: dict[str, object]) -> str:
    """An unsigned JWT (``alg: none``) with ``claims``: what Kafka's unsecured OAUTHBEARER login makes
    for development brokers (never accepted by a broker that validates signatures)."""

    def enc(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'none'})}.{enc(claims)}."


# ---------------------------------------------------------------------------- exchanges


class SaslExchange:
    """One SASL authentication as a sequence of messages.

    :meth:`first` gives the client's first message; :meth:`respond` takes each server message and
    gives the next client message, or None when the client has nothing more to send. ``complete``
    turns True once the client has verified everything it can (SCRAM checks the server's signature).
    """

    mechanism: str = ""

    def __init__(self) -> None:
        self.complete = False

    def first(self) -> bytes:
        raise NotImplementedError

    def respond(self, server_message: bytes) -> bytes | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mechanism={self.mechanism!r}, complete={self.complete})"


class PlainExchange(SaslExchange):
    """RFC 4616: one message, ``authzid NUL authcid NUL password`` (empty authzid)."""

    mechanism = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        super().__init__()
        self._message = b"\0" + username.encode() + b"\0" + password.encode()

    def first(self) -> bytes:
        return self._message

    def respond(self, server_message: bytes) -> bytes | None:
        self.complete = True
        return None


class ScramExchange(SaslExchange):
    """RFC 5802 / RFC 7677 through ``scramp``: client-first, client-final, then the server's signature
    is verified (a broker that does not know the password cannot pass)."""

    def __init__(self, mechanism: str, username: str, password: str, client_nonce: str | None = None) -> None:
        super().__init__()
        self.mechanism = mechanism
        self._client = scramp.ScramClient([mechanism], username, password, c_nonce=client_nonce)
        self._step = 0

    def first(self) -> bytes:
        self._step = 1
        return str(self._client.get_client_first()).encode()

    def respond(self, server_message: bytes) -> bytes | None:
        try:
            text = server_message.decode()
            if self._step == 1:
                self._step = 2
                iterations = _scram_iterations(text)
                if iterations > _MAX_SCRAM_ITERATIONS:
                    # PBKDF2 runs on the I/O thread: a broker asking for billions of rounds would stall it.
                    raise SaslFailure(
                        f"{self.mechanism}: the broker asks for {iterations} iterations; Kafka allows at most "
                        f"{_MAX_SCRAM_ITERATIONS}"
                    )
                self._client.set_server_first(text)
                return str(self._client.get_client_final()).encode()
            if self._step == 2:
                self._step = 3
                self._client.set_server_final(text)
                self.complete = True
                return None
        except (scramp.ScramException, UnicodeDecodeError, ValueError) as exc:
            raise SaslFailure(f"{self.mechanism}: the broker's message does not verify: {exc}") from None
        raise SaslFailure(f"{self.mechanism}: the broker sent a message after the exchange ended")


_MAX_SCRAM_ITERATIONS: Final = 16_384
"""Kafka's upper bound for SCRAM iterations (ScramMechanism.maxIterations)."""


def _scram_iterations(server_first: str) -> int:
    """The ``i=`` attribute of a server-first message (0 when absent or not a number: scramp refuses it)."""
    for attribute in server_first.split(","):
        if attribute.startswith("i=") and attribute[2:].isdigit():
            return int(attribute[2:])
    return 0


class OAuthBearerExchange(SaslExchange):
    """RFC 7628 as Kafka speaks it: ``n,,^Aauth=Bearer <token>[^Akey=value...]^A^A``. A broker that
    refuses the token answers with a JSON error; the client acknowledges it with ``^A`` and the broker
    then fails the authentication, naming the error kept in :attr:`server_error`."""

    mechanism = "OAUTHBEARER"

    def __init__(self, token: str, extensions: dict[str, str] | None = None) -> None:
        super().__init__()
        ext = "".join(f"\x01{k}={v}" for k, v in sorted((extensions or {}).items()))
        self._message = f"n,,\x01auth=Bearer {token}{ext}\x01\x01".encode()
        self._sent = False
        self.server_error: str | None = None

    def first(self) -> bytes:
        self._sent = True
        return self._message

    def respond(self, server_message: bytes) -> bytes | None:
        if server_message:
            self.server_error = server_message.decode("utf-8", "replace")[:500]
            return b"\x01"
        self.complete = True
        return None


def new_exchange(
    mechanism: str,
    *,
    username: str | None = None,
    password: str | None = None,
    token: OAuthBearerToken | None = None,
) -> SaslExchange:
    """A fresh exchange for ``mechanism`` with the given credentials (one per authentication)."""
    if mechanism == "PLAIN":
        assert username is not None and password is not None
        return PlainExchange(username, password)
    if mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        assert username is not None and password is not None
        return ScramExchange(mechanism, username, password)
    if mechanism == "OAUTHBEARER":
        assert token is not None
        return OAuthBearerExchange(token.value, token.extensions)
    raise ConfigError(
        f"sasl.mechanism={mechanism!r} is not supported: kprod speaks {', '.join(MECHANISMS)}", stage="config"
    )
