"""SASL logins: the credentials or token a connection authenticates with, from the ``sasl.*`` settings.

Built once when the producer starts (:func:`sasl_login`), so that a missing password, a JAAS line
for the wrong mechanism or GSSAPI fail at construction with the setting named. For OAUTHBEARER it
owns the token: fetched from the user's provider callable, from an OIDC token endpoint with the
client-credentials grant (KIP-768), or made unsigned for development brokers, then cached and
fetched again once ``sasl.login.refresh.window.factor`` of its lifetime has passed. Connections
ask it for a fresh :class:`~kprod.sasl.SaslExchange` per authentication and re-authentication.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from kprod.config import ProducerConfig
from kprod.errors import AuthenticationError, BrokerConnectionError, ConfigError
from kprod.sasl import (
    OAuthBearerToken,
    SaslExchange,
    jwt_expiry_ms,
    new_exchange,
    parse_jaas_config,
    unsecured_jwt,
)

__all__ = ["SaslLogin", "sasl_login"]

log = logging.getLogger("kprod.sasl")

TokenSource = Callable[[], Awaitable[OAuthBearerToken]]


class SaslLogin:
    """The mechanism and credentials of one producer; hands out one exchange per authentication."""

    def __init__(
        self,
        mechanism: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token_source: TokenSource | None = None,
        token_origin: str = "",
        refresh_window_factor: float = 0.8,
        refresh_buffer_ms: int = 300_000,
    ) -> None:
        self.mechanism = mechanism
        self.username = username
        self._password = password
        self._token_source = token_source
        self.token_origin = token_origin
        self._refresh_window_factor = refresh_window_factor
        self._refresh_buffer_ms = refresh_buffer_ms
        self._token: OAuthBearerToken | None = None
        self._refresh_at_ms = 0
        self._fetching: asyncio.Future[OAuthBearerToken] | None = None

    def __repr__(self) -> str:
        return f"SaslLogin({self.describe()})"

    def describe(self) -> str:
        """Mechanism and who logs in, for messages (never a secret)."""
        if self.mechanism == "OAUTHBEARER":
            return f"OAUTHBEARER with a token from {self.token_origin}"
        return f"{self.mechanism} as user {self.username!r}"

    def settings_hint(self) -> str:
        """The settings a user changes when this login is refused."""
        if self.mechanism == "OAUTHBEARER":
            return f"check the token ({self.token_origin}) and sasl.mechanism"
        return "check sasl.username/sasl.password (or sasl.jaas.config) and sasl.mechanism"

    async def exchange(self) -> SaslExchange:
        """A new exchange; for OAUTHBEARER with a token valid now (fetched if due)."""
        if self.mechanism != "OAUTHBEARER":
            return new_exchange(self.mechanism, username=self.username, password=self._password)
        return new_exchange(self.mechanism, token=await self.token())

    async def token(self) -> OAuthBearerToken:
        """The cached token, or a new one once its refresh time has come (one fetch at a time)."""
        now_ms = time.time_ns() // 1_000_000
        if self._token is not None and now_ms < self._refresh_at_ms:
            return self._token
        if self._fetching is None:
            assert self._token_source is not None
            self._fetching = asyncio.ensure_future(self._token_source())
        fetching = self._fetching
        try:
            token = await asyncio.shield(fetching)
        finally:
            if fetching.done() and self._fetching is fetching:
                self._fetching = None
        now_ms = time.time_ns() // 1_000_000
        if 0 <= token.expires_at_ms <= now_ms:
            raise AuthenticationError(
                f"OAUTHBEARER: the token from {self.token_origin} expired "
                f"{(now_ms - token.expires_at_ms) / 1000:.0f} s ago; the provider must return a valid token"
            )
        self._token = token
        self._refresh_at_ms = self._refresh_time_ms(token, now_ms)
        log.debug(
            "OAUTHBEARER token from %s, expires in %s",
            self.token_origin,
            "?" if token.expires_at_ms < 0 else f"{(token.expires_at_ms - now_ms) / 1000:.0f} s",
        )
        return token

    def _refresh_time_ms(self, token: OAuthBearerToken, now_ms: int) -> int:
        """Java's rule, simplified: after ``window factor`` of the lifetime, or ``buffer`` before the
        expiry if that is earlier, but not before half the lifetime; unknown expiry: one hour."""
        if token.expires_at_ms < 0:
            return now_ms + 3_600_000
        lifetime = token.expires_at_ms - now_ms
        at = min(
            now_ms + int(lifetime * self._refresh_window_factor),
            token.expires_at_ms - self._refresh_buffer_ms,
        )
        return max(at, now_ms + lifetime // 2)

    def token_rejected(self) -> None:
        """The broker refused the token: the next authentication fetches a new one."""
        self._token = None
        self._refresh_at_ms = 0


# ---------------------------------------------------------------------------- token sources


def _normalize_token(result: object, origin: str) -> OAuthBearerToken:
    """A provider's answer as a token: str, OAuthBearerToken, or confluent-kafka's oauth_cb tuple
    (token, expiry_epoch_seconds[, principal[, extensions]])."""
    if isinstance(result, OAuthBearerToken):
        return result
    if isinstance(result, str) and result:
        return OAuthBearerToken(result, jwt_expiry_ms(result))
    if isinstance(result, tuple) and 2 <= len(result) <= 4 and isinstance(result[0], str) and result[0]:
        expiry = result[1]
        if not isinstance(expiry, int | float) or isinstance(expiry, bool):
            raise AuthenticationError(
                f"OAUTHBEARER: {origin} returned an expiry of type {type(expiry).__name__}; "
                "it must be seconds since the epoch"
            )
        principal = result[2] if len(result) > 2 else None
        extensions = result[3] if len(result) > 3 else None
        return OAuthBearerToken(
            result[0],
            int(expiry * 1000),
            principal if isinstance(principal, str) else None,
            dict(extensions) if isinstance(extensions, dict) else {},
        )
    raise AuthenticationError(
        f"OAUTHBEARER: {origin} returned {type(result).__name__}; it must return the token as a str, "
        "a (token, expiry_epoch_seconds) tuple or a kprod.OAuthBearerToken"
    )


def _callable_source(provider: Callable[..., Any], config_string: str | None) -> TokenSource:
    """The user's provider, called on a worker thread (it may block on a network call) or awaited."""
    try:
        takes_config = len(inspect.signature(provider).parameters) >= 1
    except (TypeError, ValueError):
        takes_config = False
    args: tuple[object, ...] = (config_string,) if takes_config else ()
    origin = "sasl.oauthbearer.token.provider"

    async def fetch() -> OAuthBearerToken:
        try:
            if inspect.iscoroutinefunction(provider):
                result = await provider(*args)
            else:
                result = await asyncio.to_thread(provider, *args)
                if inspect.isawaitable(result):
                    result = await result
        except AuthenticationError:
            raise
        except Exception as exc:
            raise AuthenticationError(
                f"OAUTHBEARER: sasl.oauthbearer.token.provider raised {type(exc).__name__}: {exc}"
            ) from exc
        return _normalize_token(result, origin)

    return fetch


def _oidc_source(
    url: str, client_id: str, client_secret: str, scope: str | None, timeout_ms: int
) -> TokenSource:
    """KIP-768: POST grant_type=client_credentials (HTTP basic auth) to the token endpoint."""

    def post() -> OAuthBearerToken:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        basic = base64.b64encode(
            f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(client_secret)}".encode()
        ).decode()
        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(form).encode(),
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_ms / 1000) as response:
                body = response.read(1 << 20)
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode("utf-8", "replace")
            if 400 <= exc.code < 500:
                raise AuthenticationError(
                    f"OAUTHBEARER: the token endpoint {url} refused client {client_id!r}: HTTP {exc.code} "
                    f"{detail}; check sasl.oauthbearer.client.credentials.client.id/.client.secret "
                    "(or the JAAS clientId/clientSecret) and sasl.oauthbearer.scope"
                ) from None
            raise BrokerConnectionError(
                f"OAUTHBEARER: the token endpoint {url} answered HTTP {exc.code}: {detail}"
            ) from None
        except (OSError, ValueError) as exc:
            raise BrokerConnectionError(
                f"OAUTHBEARER: cannot reach the token endpoint {url} (sasl.oauthbearer.token.endpoint.url): {exc}"
            ) from None
        try:
            answer = json.loads(body)
            access_token = answer["access_token"]
            if not isinstance(access_token, str) or not access_token:
                raise ValueError("access_token is not a non-empty string")
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthenticationError(
                f"OAUTHBEARER: the token endpoint {url} answered without a usable access_token: {exc}"
            ) from None
        expires_at = jwt_expiry_ms(access_token)
        expires_in = answer.get("expires_in")
        if expires_at < 0 and isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            expires_at = time.time_ns() // 1_000_000 + int(expires_in * 1000)
        return OAuthBearerToken(access_token, expires_at)

    async def fetch() -> OAuthBearerToken:
        return await asyncio.to_thread(post)

    return fetch


def _unsecured_source(
    claims: dict[str, object], lifetime_s: float, extensions: dict[str, str]
) -> TokenSource:
    """An unsigned JWT made here (Kafka's unsecured login, librdkafka's unsecure.jwt): tests only."""

    async def fetch() -> OAuthBearerToken:
        now_s = time.time()
        body = {**claims, "iat": int(now_s), "exp": int(now_s + lifetime_s)}
        return OAuthBearerToken(unsecured_jwt(body), int((now_s + lifetime_s) * 1000), extensions=extensions)

    return fetch


def _parse_pairs(text: str | None, setting: str, separator: str | None = None) -> dict[str, str]:
    """``key=value`` items split on ``separator`` (None: white space)."""
    out: dict[str, str] = {}
    for item in (i.strip() for i in (text or "").split(separator)):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{setting}: {item!r} is not key=value", stage="config")
        out[key] = value
    return out


# ---------------------------------------------------------------------------- resolution


def sasl_login(config: ProducerConfig) -> SaslLogin | None:
    """The login for ``security.protocol`` SASL_PLAINTEXT / SASL_SSL, or None for the others.

    :raises ConfigError: naming the setting to change (GSSAPI, missing credentials, a JAAS login
        module for another mechanism, an OIDC endpoint without client credentials).
    """
    if not config.security_protocol.startswith("SASL"):
        return None
    mechanism = config.sasl_mechanism
    if mechanism == "GSSAPI":
        raise ConfigError(
            f"security.protocol={config.security_protocol} with sasl.mechanism=GSSAPI (the default, as in Java): "
            "kprod does not speak GSSAPI/Kerberos; set sasl.mechanism to PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 "
            "or OAUTHBEARER",
            stage="config",
        )
    options: dict[str, str] = {}
    if config.sasl_jaas_config is not None:
        jaas = parse_jaas_config(config.sasl_jaas_config)
        if mechanism not in jaas.mechanisms:
            raise ConfigError(
                f"sasl.jaas.config names {jaas.login_module}, which does not serve sasl.mechanism={mechanism}"
                + (f" (it serves {', '.join(jaas.mechanisms)})" if jaas.mechanisms else "")
                + "; make the two agree",
                stage="config",
            )
        if jaas.options.get("tokenauth", "false").lower() == "true":
            raise ConfigError(
                "sasl.jaas.config: tokenauth=true (delegation tokens) is not supported", stage="config"
            )
        options = jaas.options
    factor = config.sasl_login_refresh_window_factor
    buffer_ms = config.sasl_login_refresh_buffer_seconds * 1000
    if mechanism != "OAUTHBEARER":
        username = config.sasl_username or options.get("username")
        password = config.sasl_password or options.get("password")
        if not username or not password:
            raise ConfigError(
                f"sasl.mechanism={mechanism} needs a user name and password: set sasl.username and "
                "sasl.password, or sasl.jaas.config "
                f"({'PlainLoginModule' if mechanism == 'PLAIN' else 'ScramLoginModule'} required "
                'username="..." password="...";)',
                stage="config",
            )
        return SaslLogin(mechanism, username=username, password=password)
    extensions = {k[len("extension_") :]: v for k, v in options.items() if k.startswith("extension_")}
    extensions.update(_parse_pairs(config.sasl_oauthbearer_extensions, "sasl.oauthbearer.extensions", ","))
    if config.sasl_oauthbearer_token_provider is not None:
        source = _callable_source(config.sasl_oauthbearer_token_provider, config.sasl_oauthbearer_config)
        origin = "sasl.oauthbearer.token.provider"
        if extensions:
            inner = source

            async def with_extensions() -> OAuthBearerToken:
                token = await inner()
                return OAuthBearerToken(
                    token.value, token.expires_at_ms, token.principal, {**extensions, **token.extensions}
                )

            source = with_extensions
    elif config.sasl_oauthbearer_token_endpoint_url is not None:
        client_id = config.sasl_oauthbearer_client_credentials_client_id or options.get("clientId")
        secret = config.sasl_oauthbearer_client_credentials_client_secret or options.get("clientSecret")
        if not client_id or not secret:
            raise ConfigError(
                "sasl.oauthbearer.token.endpoint.url is set without client credentials: set "
                "sasl.oauthbearer.client.credentials.client.id and .client.secret (or the JAAS options "
                "clientId and clientSecret)",
                stage="config",
            )
        url = config.sasl_oauthbearer_token_endpoint_url
        timeout_ms = config.sasl_login_connect_timeout_ms + config.sasl_login_read_timeout_ms
        scope = config.sasl_oauthbearer_scope or options.get("scope")
        token_source = _oidc_source(url, client_id, secret, scope, timeout_ms)
        origin = f"the token endpoint {url}"
        if extensions:

            async def oidc_with_extensions() -> OAuthBearerToken:
                token = await token_source()
                return OAuthBearerToken(token.value, token.expires_at_ms, None, extensions)

            source = oidc_with_extensions
        else:
            source = token_source
    elif any(k.startswith("unsecuredLogin") for k in options):
        # Kafka's OAuthBearerUnsecuredLoginCallbackHandler options.
        claim_name = options.get("unsecuredLoginPrincipalClaimName", "sub")
        claims: dict[str, object] = {}
        for key, value in options.items():
            if key.startswith("unsecuredLoginStringClaim_"):
                claims[key[len("unsecuredLoginStringClaim_") :]] = value
            elif key.startswith("unsecuredLoginNumberClaim_"):
                claims[key[len("unsecuredLoginNumberClaim_") :]] = (
                    float(value) if "." in value else int(value)
                )
            elif key.startswith("unsecuredLoginListClaim_"):
                sep, items = value[:1], value[1:]
                claims[key[len("unsecuredLoginListClaim_") :]] = (
                    [i for i in items.split(sep) if i] if sep else []
                )
            elif key.startswith("unsecuredLoginExtension_"):
                extensions[key[len("unsecuredLoginExtension_") :]] = value
        if claim_name not in claims:
            raise ConfigError(
                f"sasl.jaas.config: the unsecured OAUTHBEARER login needs unsecuredLoginStringClaim_{claim_name}",
                stage="config",
            )
        lifetime = float(options.get("unsecuredLoginLifetimeSeconds", "3600"))
        source = _unsecured_source(claims, lifetime, extensions)
        origin = "the unsecured login of sasl.jaas.config (development brokers only)"
    elif config.enable_sasl_oauthbearer_unsecure_jwt:
        pairs = _parse_pairs(config.sasl_oauthbearer_config, "sasl.oauthbearer.config")
        principal = pairs.pop("principal", None)
        if not principal:
            raise ConfigError(
                "enable.sasl.oauthbearer.unsecure.jwt needs sasl.oauthbearer.config='principal=<name>'",
                stage="config",
            )
        unsecured_claims: dict[str, object] = {"sub": principal}
        if "scope" in pairs:
            unsecured_claims["scope"] = pairs["scope"].split(",")
        for key, value in pairs.items():
            if key.startswith("extension_"):
                extensions[key[len("extension_") :]] = value
        source = _unsecured_source(unsecured_claims, float(pairs.get("lifeSeconds", "3600")), extensions)
        origin = "the unsecured JWT of sasl.oauthbearer.config (development brokers only)"
    else:
        raise ConfigError(
            "sasl.mechanism=OAUTHBEARER needs a token: set sasl.oauthbearer.token.provider (a callable, as "
            "confluent-kafka's oauth_cb), or sasl.oauthbearer.token.endpoint.url with client credentials "
            "(OIDC, KIP-768)",
            stage="config",
        )
    return SaslLogin(
        mechanism,
        token_source=source,
        token_origin=origin,
        refresh_window_factor=factor,
        refresh_buffer_ms=buffer_ms,
    )
