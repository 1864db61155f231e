"""One TCP connection to one broker, on asyncio: framing, correlation, version negotiation.

Owns the socket and nothing else: it writes frames it is given, matches each
response to its request by correlation id (``InFlightRequests``), and hands the
response frame to the callback registered with the request. It negotiates API
versions on connect (ApiVersions v3, falling back to v0 on UNSUPPORTED_VERSION).
It makes no producer decision: retries, routing and timeouts of produce
requests are the engine's.

Why one module of about 550 lines: the socket, the in-flight table, version negotiation and the
SASL exchange with its KIP-368 re-authentication all run on the same transport and its state.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kprod.errors import (
    AuthenticationError,
    BrokerConnectionError,
    KafkaError,
    KprodError,
    ProtocolError,
    UnreadableResponseError,
)
from kprod.protocol.framing import (
    FrameReader,
    InFlightRequests,
    parse_response_header,
    response_header_version,
)
from kprod.protocol.messages import (
    API_VERSIONS_FALLBACK_VERSION,
    CLIENT_API_VERSIONS,
    UNSUPPORTED_VERSION,
    ApiKey,
    api_versions_request,
    cap_for_transaction_version,
    decode_response,
    encode_request,
    negotiate_versions,
    parse_api_versions_response,
    parse_sasl_authenticate,
    parse_sasl_handshake,
    response_type,
    sasl_authenticate_request,
    sasl_handshake_request,
)
from kprod.sasl import SaslFailure

if TYPE_CHECKING:
    from kprod._io.sasl_login import SaslLogin

__all__ = ["BrokerConnection", "ResponseCallback", "WrittenCallback"]

log = logging.getLogger("kprod.connection")

ResponseCallback = Callable[[memoryview | bytes | None, int, BaseException | None], None]
"""Called with (frame, body_offset, None) for a response, or (None, 0, error) when the connection dies."""

WrittenCallback = Callable[[BaseException | None], None]
"""Told when every byte of a request that expects no answer left the process (None), or that the
connection closed before (the error)."""

_WRITTEN_CHECK_S = 0.001
"""How often bytes that wait in the transport's buffer are looked at (s). asyncio tells a protocol
nothing when its buffer shrinks below the high-water mark, so this is a short timer that runs only
while a request without an answer (acks=0) waits there."""

_REFUSAL_WINDOW_MS = 30_000
"""A broker's close within this long of an acks=0 request is taken for a refusal of it (Kafka closes at
once); a later one (the broker's connections.max.idle.ms) is not."""

_API_VERSIONS_FIRST = 3
_UNSUPPORTED_SASL_MECHANISM = 33


_READ_BUFFER_BYTES = 256 * 1024


class BrokerConnection(asyncio.BufferedProtocol):
    """A connection to broker ``node_id`` (-1 for a bootstrap address) at ``host:port``."""

    def __init__(
        self,
        node_id: int,
        host: str,
        port: int,
        *,
        client_id: str,
        on_closed: Callable[[BrokerConnection, BaseException | None], None],
        send_buffer_bytes: int = -1,
        receive_buffer_bytes: int = -1,
        ssl_context: ssl.SSLContext | None = None,
        sasl: SaslLogin | None = None,
        on_ready: Callable[[BrokerConnection, bool], None] | None = None,
        max_transaction_version: int = 2,
        write_buffer_high_bytes: int = 0,
    ) -> None:
        self.node_id = node_id
        self._ssl_context = ssl_context
        self._sasl = sasl
        self._max_transaction_version = max_transaction_version
        self._write_buffer_high_bytes = write_buffer_high_bytes
        self._on_ready = on_ready
        self.session_lifetime_ms = 0
        """The SASL session's lifetime the broker gave (KIP-368; 0: none): re-authenticated before it ends."""
        self.reauthentications = 0
        """How many times this connection re-authenticated (KIP-368)."""
        self.reauthentication_failed = False
        """Set when a re-authentication failed and closed the connection."""
        self._reauth_handle: asyncio.TimerHandle | None = None
        self._reauth_task: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._bytes_written = 0
        """Bytes handed to the transport over the connection's life."""
        self._unwritten: deque[tuple[int, WrittenCallback]] = deque()
        """Requests without an answer whose bytes the transport still held when sent: (the value of
        ``_bytes_written`` after their last byte, whom to tell), oldest first."""
        self._written_timer: asyncio.TimerHandle | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._finishing = False
        self.requests_without_answer = 0
        """Requests written that expect no answer (acks=0 Produce)."""
        self._last_unanswered_ms = 0
        self.answered_unanswerable = 0
        """Answers the broker sent to requests that expect none (acks=0 Produce), ignored."""
        self.host = host
        self.port = port
        self.client_id = client_id
        self._on_closed = on_closed
        self._send_buffer_bytes = send_buffer_bytes
        self._receive_buffer_bytes = receive_buffer_bytes
        self._transport: asyncio.Transport | None = None
        self._reader = FrameReader()
        self._in_flight = InFlightRequests()
        self.versions: dict[int, int] = {}
        self.transaction_version = 0
        """The cluster's finalized ``transaction.version`` feature (2: KIP-890 transactions v2), capped
        by ``kprod.transaction.version``."""
        """Negotiated version per API key (after :meth:`connect`)."""
        self.ready = False
        """True once connected and versions are negotiated."""
        self.closed = False
        self.closed_idle = False
        """Set by the owner before closing an idle connection (a normal close, not a failure)."""
        self._close_error: BaseException | None = None
        self._write_paused = False
        self.last_activity_ms = time.monotonic_ns() // 1_000_000
        """When a request was last written or a response read (ms, monotonic): for connections.max.idle.ms."""
        # One receive buffer for the connection's life: a plain Protocol gets a fresh 256 KiB
        # allocation (an mmap/munmap pair) per read, which dominates one-at-a-time latency.
        self._read_buffer = bytearray(_READ_BUFFER_BYTES)
        self._read_view = memoryview(self._read_buffer)

    def __repr__(self) -> str:
        return f"BrokerConnection(node={self.node_id}, {self.host}:{self.port}, in_flight={len(self._in_flight)})"

    @property
    def in_flight_count(self) -> int:
        """Requests sent on this connection that await a response."""
        return len(self._in_flight)

    # -- connect ------------------------------------------------------------------------

    async def connect(self, timeout_ms: int) -> None:
        """Open the socket and negotiate API versions, within ``timeout_ms``.

        Raises BrokerConnectionError on failure (the connection is then closed).
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_ms / 1000):  # the TLS handshake counts too
                if self._ssl_context is None:
                    await loop.create_connection(lambda: self, self.host, self.port)
                else:
                    await loop.create_connection(
                        lambda: self, self.host, self.port, ssl=self._ssl_context, server_hostname=self.host
                    )
                await self._negotiate_versions()
                if self._sasl is not None:
                    await self._authenticate(timeout_ms)
        except TimeoutError as exc:
            error = BrokerConnectionError(
                f"connecting to broker {self.node_id} at {self.host}:{self.port} took longer than "
                f"socket.connection.setup.timeout.ms={timeout_ms}"
            )
            self.close(error)
            raise error from exc
        except ssl.SSLError as exc:
            transient = isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError)
            if isinstance(exc, ssl.SSLCertVerificationError):
                hint = (
                    f"the broker's certificate was refused ({exc.verify_message}): check "
                    "ssl.truststore.location (ssl.ca.location) and, for a host name mismatch, "
                    "ssl.endpoint.identification.algorithm"
                )
            else:
                hint = "check security.protocol (is this a TLS listener?) and the ssl.* settings"
            message = (
                f"TLS handshake with broker {self.node_id} at {self.host}:{self.port} failed: "
                f"{exc.reason or exc}; {hint}"
            )
            # A refused certificate or handshake will not pass on a retry (Java: SslAuthenticationException);
            # a connection cut during the handshake may.
            error = BrokerConnectionError(message) if transient else AuthenticationError(message)
            self.close(error)
            raise error from exc
        except KprodError as exc:  # before OSError: BrokerConnectionError is a ConnectionError
            self.close(exc)
            raise
        except OSError as exc:
            error = BrokerConnectionError(
                f"cannot connect to broker {self.node_id} at {self.host}:{self.port}: {exc}"
            )
            self.close(error)
            raise error from exc
        except Exception as exc:  # an answer no decoder foresaw: the socket must not leak
            unreadable = ProtocolError(
                f"unreadable answer from broker {self.node_id} at {self.host}:{self.port} while "
                f"negotiating API versions: {exc!r}"
            )
            self.close(unreadable)
            raise unreadable from exc
        self.ready = True
        log.debug(
            "connected to broker %d at %s:%d, versions %s", self.node_id, self.host, self.port, self.versions
        )

    # -- SASL (KIP-43 framed exchange, KIP-368 re-authentication) ------------------------------

    async def _authenticate(self, timeout_ms: int) -> None:
        """SaslHandshake, then SaslAuthenticate rounds until the mechanism is done (raises
        AuthenticationError, naming what the broker answered, if it refuses)."""
        login = self._sasl
        assert login is not None
        where = f"broker {self.node_id} at {self.host}:{self.port}"
        if ApiKey.SASL_HANDSHAKE not in self.versions or ApiKey.SASL_AUTHENTICATE not in self.versions:
            raise AuthenticationError(
                f"{where} offers no SaslHandshake v1 / SaslAuthenticate: it is not a SASL listener or too old "
                "(Kafka 1.0+ needed); check security.protocol and bootstrap.servers"
            )
        code, mechanisms = await self.request(
            ApiKey.SASL_HANDSHAKE,
            lambda v: sasl_handshake_request(v, login.mechanism),
            timeout_ms,
            parse_sasl_handshake,
        )
        if code == _UNSUPPORTED_SASL_MECHANISM:
            raise AuthenticationError(
                f"{where} does not enable SASL mechanism {login.mechanism}; it offers "
                f"{', '.join(mechanisms) or 'none'}: set sasl.mechanism to one of them"
            )
        if code != 0:
            raise AuthenticationError(
                f"{where} refused SaslHandshake for {login.mechanism}: {KafkaError(code)}; check that "
                "security.protocol matches the listener"
            )
        exchange = await login.exchange()
        message: bytes | None = exchange.first()
        lifetime_ms = 0
        while message is not None:
            code, error_message, server_message, lifetime_ms = await self.request(
                ApiKey.SASL_AUTHENTICATE,
                functools.partial(sasl_authenticate_request, auth_bytes=message),
                timeout_ms,
                parse_sasl_authenticate,
            )
            if code != 0:
                if login.mechanism == "OAUTHBEARER":
                    login.token_rejected()
                server_error = getattr(exchange, "server_error", None)
                answered = error_message or str(KafkaError(code))
                if server_error and server_error not in answered:
                    answered += f" ({server_error})"
                raise AuthenticationError(
                    f"SASL authentication ({login.describe()}) refused by {where}: {answered}; "
                    f"{login.settings_hint()}"
                )
            try:
                message = exchange.respond(server_message)
            except SaslFailure as exc:
                raise AuthenticationError(f"SASL authentication with {where} failed: {exc}") from None
        self.session_lifetime_ms = lifetime_ms
        log.debug("authenticated to %s with %s, session lifetime %d ms", where, login.describe(), lifetime_ms)
        if lifetime_ms > 0:
            # KIP-368: begin again at 85-95 % of the session, as Java does, before the broker ends it.
            delay_s = lifetime_ms * random.uniform(0.85, 0.95) / 1000
            self._reauth_handle = asyncio.get_running_loop().call_later(delay_s, self._begin_reauthentication)

    def _begin_reauthentication(self) -> None:
        self._reauth_handle = None
        if self.closed:
            return
        self.ready = False  # no new requests until the new session stands
        self._reauth_task = asyncio.get_running_loop().create_task(self._reauthenticate())

    async def _reauthenticate(self) -> None:
        """Wait for the answers of requests in flight, then authenticate again on this connection."""
        timeout_ms = max(1000, self.session_lifetime_ms // 10)
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                if len(self._in_flight):
                    self._drained = asyncio.get_running_loop().create_future()
                    await self._drained
                await self._authenticate(timeout_ms)
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, KprodError)
                else BrokerConnectionError(f"re-authentication with broker {self.node_id} failed: {exc!r}")
            )
            if isinstance(exc, TimeoutError):
                error = BrokerConnectionError(
                    f"re-authentication with broker {self.node_id} took longer than {timeout_ms} ms"
                )
            log.warning("re-authentication with broker %d failed: %s", self.node_id, error)
            self.reauthentication_failed = True
            self.close(error)
            return
        finally:
            self._drained = None
            self._reauth_task = None
        self.reauthentications += 1
        self.ready = True
        if self._on_ready is not None:
            self._on_ready(self, True)

    async def _negotiate_versions(self) -> None:
        version = _API_VERSIONS_FIRST
        for _ in range(2):
            frame = await self.request_raw(
                ApiKey.API_VERSIONS, version, api_versions_request(version, "kprod", "0.1.0")
            )
            result = parse_api_versions_response(frame, version)
            if result.error_code == UNSUPPORTED_VERSION and version != API_VERSIONS_FALLBACK_VERSION:
                version = API_VERSIONS_FALLBACK_VERSION
                continue
            if result.error_code != 0:
                raise KafkaError(
                    result.error_code, f"ApiVersions failed on {self.host}:{self.port}", stage="connection"
                )
            self.versions = negotiate_versions(CLIENT_API_VERSIONS, result.api_ranges)
            self.transaction_version = min(
                self._max_transaction_version, result.finalized_features.get("transaction.version", 0)
            )
            cap_for_transaction_version(self.versions, self.transaction_version)
            if ApiKey.PRODUCE not in self.versions:
                raise ProtocolError(
                    f"broker {self.host}:{self.port} supports no Produce version kprod speaks "
                    f"({CLIENT_API_VERSIONS[ApiKey.PRODUCE]}): it needs record batch v2 (Kafka 0.11+)"
                )
            return
        raise ProtocolError(f"ApiVersions negotiation with {self.host}:{self.port} failed")

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._write_buffer_high_bytes > 0:
            # Pause (and take no more requests) only when a broker stops reading, not for one large
            # request: the socket buffer drains those in microseconds on a live connection.
            transport.set_write_buffer_limits(high=self._write_buffer_high_bytes)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._send_buffer_bytes > 0:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer_bytes)
                if self._receive_buffer_bytes > 0:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer_bytes)
            except OSError:  # pragma: no cover - best effort tuning
                pass

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._read_view[:nbytes]))

    def data_received(self, data: bytes) -> None:
        self.last_activity_ms = time.monotonic_ns() // 1_000_000
        reader = self._reader
        reader.feed(data)
        try:
            while True:
                frame = reader.next_frame()
                if frame is None:
                    return
                self._dispatch(frame)
        except KprodError as exc:
            self.close(
                UnreadableResponseError(
                    f"unreadable answer from broker {self.node_id} ({self.host}:{self.port}): {exc}"
                )
            )

    def _dispatch(self, frame: memoryview | bytes) -> None:
        if (
            self._in_flight.sent_unanswerable
            and len(frame) >= 4
            and self._in_flight.take_unexpected_answer(int.from_bytes(frame[:4], "big"))
        ):
            # An answer to an acks=0 Produce request (Tansu answers them; Kafka does not): ignore it
            # rather than take the stream for out of step and close the connection.
            if not self.answered_unanswerable:
                log.debug("%s answers requests sent without expecting an answer (acks=0); ignored", self)
            self.answered_unanswerable += 1
            return
        oldest = self._in_flight.peek_oldest_expected()
        if oldest is None:
            raise ProtocolError(f"unexpected response from {self.host}:{self.port}: no request awaits one")
        header_version = response_header_version(oldest.api_key, oldest.api_version)
        correlation_id, offset = parse_response_header(frame, header_version)
        entry = self._in_flight.pop(correlation_id)
        callback: ResponseCallback = entry.context  # type: ignore[assignment]
        try:
            callback(frame, offset, None)
        except Exception:  # a bug in a callback must not kill the connection
            log.exception("response callback failed for api %d on %s", entry.api_key, self)
        drained = self._drained
        if drained is not None and not drained.done() and not len(self._in_flight):
            drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if (
            self._close_error is None
            and not self._finishing
            and self.requests_without_answer
            and time.monotonic_ns() // 1_000_000 - self._last_unanswered_ms < _REFUSAL_WINDOW_MS
        ):
            # Closed by the broker soon after an acks=0 request: Kafka's one way to refuse one.
            log.warning(
                "broker %d (%s:%d) closed the connection after %d acks=0 Produce request(s) on it: "
                "Kafka closes it when it refuses one (NOT_LEADER_OR_FOLLOWER, MESSAGE_TOO_LARGE, ...), "
                "and that request and those written behind it are lost without an answer to say so. "
                "Set acks=1 or all to have such records retried or failed visibly",
                self.node_id,
                self.host,
                self.port,
                self.requests_without_answer,
            )
        error = self._close_error or BrokerConnectionError(
            f"connection to broker {self.node_id} at {self.host}:{self.port} closed"
            + (f": {exc}" if exc else ""),
        )
        self._finish_close(error)

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark: the broker does not read. The engine
        gives this connection no request until it drains (:attr:`write_paused`)."""
        self._write_paused = True
        log.debug("%s: writes paused, the broker is not reading", self)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._unwritten:
            self._check_written()
        if self.ready and self._on_ready is not None:
            self._on_ready(self, False)  # the engine may send again

    @property
    def write_buffer_size(self) -> int:
        """Bytes written to the transport that the kernel has not taken yet."""
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    @property
    def write_paused(self) -> bool:
        """True while the transport's write buffer is above its high-water mark."""
        return self._write_paused

    # -- requests -----------------------------------------------------------------------

    def send(
        self,
        api_key: int,
        api_version: int,
        correlation_id: int,
        frame_parts: Sequence[bytes | bytearray | memoryview],
        callback: ResponseCallback | None,
        on_written: WrittenCallback | None = None,
    ) -> bool:
        """Write one request frame; ``callback`` gets its response (None: no response expected).

        For a request without a response, returns True when every byte of it already left the
        process (the kernel took it). Otherwise ``on_written`` is called later: with None once
        they have, or with the error if the connection closes first (a request in the transport's
        buffer then never reaches the broker). Returns False for a request that expects a response.

        Raises BrokerConnectionError if the connection is closed.
        """
        transport = self._transport
        if self.closed or transport is None:
            raise BrokerConnectionError(
                f"connection to broker {self.node_id} at {self.host}:{self.port} is closed"
            )
        self._in_flight.add(correlation_id, api_key, api_version, callback is not None, callback)
        transport.writelines(frame_parts)
        self._bytes_written += sum(len(part) for part in frame_parts)
        self.last_activity_ms = time.monotonic_ns() // 1_000_000
        if callback is not None:
            return False
        self.requests_without_answer += 1
        self._last_unanswered_ms = self.last_activity_ms
        self._in_flight.pop_no_response()
        if not self._unwritten and not transport.get_write_buffer_size():
            return True
        if on_written is not None:
            self._unwritten.append((self._bytes_written, on_written))
            self._watch_written()
        return False

    def _watch_written(self) -> None:
        if self._written_timer is None and not self.closed:
            self._written_timer = asyncio.get_running_loop().call_later(_WRITTEN_CHECK_S, self._check_written)

    def _check_written(self) -> None:
        """Tell the requests without an answer whose last byte left the process; look again soon
        while any is left. (With TLS: left Python's TLS layer, whose count of encrypted bytes is
        never below the plain bytes they carry.)"""
        self._written_timer = None
        transport = self._transport
        if self.closed or transport is None:
            return
        left_process = self._bytes_written - transport.get_write_buffer_size()
        unwritten = self._unwritten
        while unwritten and unwritten[0][0] <= left_process:
            _, on_written = unwritten.popleft()
            try:
                on_written(None)
            except Exception:  # a bug in a callback must not kill the connection
                log.exception("written callback failed on %s", self)
        if unwritten:
            self._watch_written()

    def next_correlation_id(self) -> int:
        return self._in_flight.next_correlation_id()

    def request_raw(self, api_key: int, api_version: int, entity: Any) -> asyncio.Future[memoryview | bytes]:
        """Send a kio request entity; the future resolves to the response frame."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[memoryview | bytes] = loop.create_future()

        def on_response(frame: memoryview | bytes | None, offset: int, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert frame is not None
                future.set_result(bytes(frame))

        correlation_id = self.next_correlation_id()
        self.send(
            api_key,
            api_version,
            correlation_id,
            [encode_request(entity, correlation_id=correlation_id, client_id=self.client_id)],
            on_response,
        )
        return future

    async def request(
        self,
        api_key: int,
        entity_factory: Callable[[int], Any],
        timeout_ms: int,
        parse: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Send a control-plane request at the negotiated version and return the decoded response
        (passed through ``parse`` if given: an answer it cannot read closes the connection too).

        ``entity_factory(version)`` builds the request. Raises KafkaTimeoutError-like
        BrokerConnectionError after ``timeout_ms`` (and closes the connection, as the
        Java client does, since later answers on it would be out of step).
        """
        version = self.versions.get(api_key)
        if version is None:
            raise ProtocolError(
                f"broker {self.node_id} does not support API {api_key} in a version kprod speaks"
            )
        future = self.request_raw(api_key, version, entity_factory(version))
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                frame = await future
        except TimeoutError as exc:
            error = BrokerConnectionError(
                f"no answer from broker {self.node_id} to API {api_key} within request.timeout.ms={timeout_ms}"
            )
            self.close(error)
            raise error from exc
        try:
            _, offset = parse_response_header(frame, response_header_version(api_key, version))
            response = decode_response(response_type(api_key, version), frame, offset)
            return response if parse is None else parse(response)
        except Exception as exc:
            # An answer we cannot read says nothing we can trust about this connection's stream:
            # close it (its other requests are retried like lost answers) and report the request.
            unreadable = UnreadableResponseError(
                f"unreadable answer to API {api_key} v{version} from broker {self.node_id}: {exc}"
            )
            self.close(unreadable)
            raise unreadable from exc

    # -- close --------------------------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Close the socket; every request still awaiting an answer fails with ``error``."""
        if self.closed:
            return
        self._close_error = error or BrokerConnectionError(
            f"connection to broker {self.node_id} at {self.host}:{self.port} closed by the client"
        )
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows and finishes the close
            self._finish_close(self._close_error)
        else:
            self._finish_close(self._close_error)

    def finish_writing(self) -> bool:
        """End the writing half once the transport's buffer is out (a TCP FIN after the last byte);
        answers are still read. The broker reads everything sent, then closes its side, which
        closes this connection. With TLS, which cannot half-close, the transport closes gracefully
        instead: its buffers go out, then close_notify. False if already closed."""
        transport = self._transport
        if self.closed or transport is None:
            return False
        self.ready = False  # no new request: the broker would never read it
        self._finishing = True  # the close that follows is the expected one
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        return True

    async def wait_closed(self) -> None:
        """Return once the connection is closed (by either side)."""
        if self.closed:
            return
        if self._closed_waiter is None:
            self._closed_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed_waiter)

    def _finish_close(self, error: BaseException) -> None:
        if self.closed:
            return
        self.closed = True
        self.ready = False
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        if self._reauth_handle is not None:
            self._reauth_handle.cancel()
            self._reauth_handle = None
        if self._reauth_task is not None and self._reauth_task is not asyncio.current_task():
            self._reauth_task.cancel()
        for entry in self._in_flight.drain_all():
            callback = entry.context
            if callback is not None:
                try:
                    callback(None, 0, error)  # type: ignore[operator]
                except Exception:
                    log.exception("failure callback raised on %s", self)
        if self._written_timer is not None:
            self._written_timer.cancel()
            self._written_timer = None
        while self._unwritten:  # their bytes were in the transport's buffer: they never left
            _, on_written = self._unwritten.popleft()
            try:
                on_written(error)
            except Exception:
                log.exception("failure callback raised on %s", self)
        self._on_closed(self, error)
