"""The producer's broker connections: which exist, which are being opened, and when to try again.

One :class:`BrokerConnections` per producer, used on its loop thread only (no lock: the engine's lock
guards the core, and this state is never touched from a caller's thread). It opens connections
(TLS and SASL included, through :class:`~kprod._io.connection.BrokerConnection`) with exponential
backoff per broker and per bootstrap address (``reconnect.backoff.ms`` up to
``reconnect.backoff.max.ms``, ±20 %), a setup timeout that doubles per failure
(``socket.connection.setup.timeout.ms`` up to ``...max.ms``), closes idle ones
(``connections.max.idle.ms``), honours KIP-219 throttling, and answers the sender core's question
"how many requests may go to broker N now" (:meth:`slots`). Control requests (metadata, producer
ids, transactional requests) get any ready connection, else a known broker, else bootstrap
(:meth:`any_connection`), like Java's ``leastLoadedNode``.

What it cannot decide itself it asks the engine through callbacks: ``wake`` (a connection is
ready or gone: the sender should look again), ``request_metadata_update`` (a broker failed: where
are the leaders now), ``on_refused`` (a broker or TLS refused our credentials: fail what waits for
it) and ``is_closing``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable

from kprod._core.metadata import ClusterMetadata
from kprod._io.connection import BrokerConnection
from kprod._io.sasl_login import SaslLogin
from kprod.config import ProducerConfig
from kprod.errors import AuthenticationError, BrokerConnectionError, KprodError

__all__ = ["BrokerConnections"]

log = logging.getLogger("kprod.producer")


def _monotonic_ms() -> int:
    """The engine's clock (``engine.monotonic_ms``), without importing the engine."""
    return time.monotonic_ns() // 1_000_000


class BrokerConnections:
    """Every broker connection of one producer, and the backoffs between attempts (loop thread)."""

    def __init__(
        self,
        config: ProducerConfig,
        loop: asyncio.AbstractEventLoop,
        metadata: ClusterMetadata,
        rng: random.Random,
        *,
        ssl_context: ssl.SSLContext | None,
        sasl_login: SaslLogin | None,
        wake: Callable[[], None],
        request_metadata_update: Callable[[], None],
        on_refused: Callable[[AuthenticationError, int | None], None],
        is_closing: Callable[[], bool],
    ) -> None:
        self._config = config
        self._loop = loop
        self._metadata = metadata
        self._rng = rng
        self._ssl_context = ssl_context
        self._sasl_login = sasl_login
        self._wake = wake
        self._request_metadata_update = request_metadata_update
        self._on_refused = on_refused
        self._is_closing = is_closing
        self.connections: dict[int, BrokerConnection] = {}
        """Broker id -> the connection produce requests to that broker use."""
        self.bootstrap: BrokerConnection | None = None
        """A connection to a bootstrap address (node id unknown), for control requests only."""
        self.open_conns: set[BrokerConnection] = set()
        """Every connection opened and not yet closed, whatever slot holds it (closed on shutdown)."""
        self._control_lock = asyncio.Lock()
        """Serializes any_connection so concurrent control requests share one new connection."""
        self.connecting: dict[int, asyncio.Task[None]] = {}
        self.node_backoff: dict[int, tuple[int, int]] = {}
        """Broker id -> (retry at, monotonic ms; failures so far)."""
        self.bootstrap_backoff: dict[tuple[str, int], tuple[int, int]] = {}
        """Bootstrap address -> (retry at ms, failures): bootstrap.servers back off like brokers."""
        self.throttled_until_ms: dict[int, int] = {}
        """KIP-219: a broker that throttles answers at once with throttle_time_ms and expects no
        request on that connection until it has passed (node id -> monotonic ms)."""
        self.last_auth_error: AuthenticationError | None = None
        """The last refusal of a connection (SASL or TLS), until a connection is opened again."""
        # Java's selector metrics for SASL (KIP-368 names): authentications and re-authentications.
        self.authentications = [0, 0]  # [successful, failed]
        self.reauthentications = [0, 0]

    # -- what the sender may do ------------------------------------------------------------------

    def slots(self, node_id: int) -> int:
        """How many produce requests may go to ``node_id`` now: 0 while it is throttled, connecting,
        re-authenticating or not reading what was written; -1 when there is no connection (the
        sender then lists it for :meth:`ensure`)."""
        until = self.throttled_until_ms.get(node_id)
        if until is not None:
            if _monotonic_ms() < until:
                return 0  # throttled by a quota: nothing for this broker until then
            del self.throttled_until_ms[node_id]
        conn = self.connections.get(node_id)
        if conn is not None and conn.ready:
            if conn.write_paused:
                return 0  # the broker is not reading what was written: no more until it drains
            slots = self._config.max_in_flight_requests_per_connection - conn.in_flight_count
            # Bytes the kernel did not take yet: one request per round until the buffer drains, so
            # a broker that stops reading gets at most about one request past the pause.
            return min(slots, 1) if conn.write_buffer_size else slots
        if node_id in self.connecting or (conn is not None and not conn.closed):
            return 0  # connecting, or re-authenticating (KIP-368): it wakes the sender when ready
        return -1

    def next_retry_ms(self, now_ms: int, next_ms: int) -> int:
        """``next_ms``, or earlier when a backoff or a throttle ends before it (monotonic ms)."""
        for retry_at, _ in self.node_backoff.values():
            if now_ms < retry_at < next_ms:
                next_ms = retry_at
        for until in self.throttled_until_ms.values():
            next_ms = min(next_ms, max(until, now_ms + 1))
        return next_ms

    def throttle(self, node_id: int, until_ms: int) -> None:
        """KIP-219: send nothing more to ``node_id`` before ``until_ms`` (monotonic)."""
        self.throttled_until_ms[node_id] = until_ms

    # -- opening ---------------------------------------------------------------------------------

    def ensure(self, node_id: int, now_ms: int) -> None:
        """Start connecting to ``node_id`` unless connected, connecting, or in backoff."""
        if node_id in self.connecting:
            return
        conn = self.connections.get(node_id)
        if conn is not None and not conn.closed:
            return
        backoff = self.node_backoff.get(node_id)
        if backoff is not None and backoff[0] > now_ms:
            return
        address = self._metadata.node_address(node_id)
        if address is None:
            self._request_metadata_update()
            return
        task = self._loop.create_task(self._connect_node(node_id, address[0], address[1]))
        self.connecting[node_id] = task

    async def _connect_node(self, node_id: int, host: str, port: int) -> None:
        try:
            conn = await self.open(node_id, host, port)
        except Exception as exc:  # any failure backs off: an unretrieved error here reconnected at once
            failures = self.node_backoff.get(node_id, (0, 0))[1] + 1
            self.node_backoff[node_id] = (_monotonic_ms() + self.reconnect_backoff_ms(failures), failures)
            if isinstance(exc, AuthenticationError):
                self._on_refused(exc, node_id)
            elif failures == 1 or failures % 30 == 0:
                # The first failure, then every 30th: a broker that stays down is not logged every second.
                log.warning("%s%s", exc, f" ({failures} attempts so far)" if failures > 1 else "")
            else:
                log.debug("%s (attempt %d)", exc, failures)
            self._request_metadata_update()
        else:
            self.node_backoff.pop(node_id, None)
            existing = self.connections.get(node_id)
            if existing is not None and not existing.closed:  # any_connection connected it meanwhile
                conn.close()
            else:
                self.connections[node_id] = conn
        finally:
            self.connecting.pop(node_id, None)
            self._wake()

    def reconnect_backoff_ms(self, failures: int) -> int:
        """reconnect.backoff.ms doubling per failure up to reconnect.backoff.max.ms, ±20 %."""
        base = self._config.reconnect_backoff_ms
        cap = max(base, self._config.reconnect_backoff_max_ms)
        raw = min(cap, base * 2 ** min(failures - 1, 20))
        return int(raw * (0.8 + 0.4 * self._rng.random()))

    def connect_timeout_ms(self, node_id: int) -> int:
        """socket.connection.setup.timeout.ms, doubling per failed attempt up to ...max.ms, ±20 %."""
        failures = self.node_backoff.get(node_id, (0, 0))[1] if node_id >= 0 else 0
        base = self._config.socket_connection_setup_timeout_ms
        cap = max(base, self._config.socket_connection_setup_timeout_max_ms)
        raw = min(cap, base * 2 ** min(failures, 20))
        return int(raw * (0.8 + 0.4 * self._rng.random()))

    async def open(self, node_id: int, host: str, port: int) -> BrokerConnection:
        """Open, negotiate versions and authenticate one connection (``node_id`` -1: bootstrap)."""
        config = self._config
        conn = BrokerConnection(
            node_id,
            host,
            port,
            client_id=config.client_id,
            on_closed=self._on_closed,
            send_buffer_bytes=config.send_buffer_bytes,
            receive_buffer_bytes=config.receive_buffer_bytes,
            ssl_context=self._ssl_context,
            sasl=self._sasl_login,
            on_ready=self._on_ready,
            max_transaction_version=1 if config.kprod_transaction_version == "1" else 2,
            write_buffer_high_bytes=2 * config.max_request_size,
        )
        try:
            await conn.connect(self.connect_timeout_ms(node_id))
        except AuthenticationError as exc:
            self.last_auth_error = exc
            self.authentications[1] += 1
            raise
        self.last_auth_error = None
        if self._sasl_login is not None:
            self.authentications[0] += 1
        self.open_conns.add(conn)
        return conn

    async def connect_to(self, node_id: int, address: tuple[str, int]) -> BrokerConnection:
        """A ready connection to ``node_id`` (a coordinator, perhaps not in Metadata yet) at
        ``address``: the one open, the one being opened, or a new one."""
        conn = self.connections.get(node_id)
        if conn is not None and conn.ready:
            return conn
        pending = self.connecting.get(node_id)
        if pending is not None:
            await asyncio.wait({pending})
            conn = self.connections.get(node_id)
            if conn is not None and conn.ready:
                return conn
        conn = await self.open(node_id, address[0], address[1])
        existing = self.connections.get(node_id)
        if existing is not None and existing.ready:
            conn.close()
            return existing
        self.connections[node_id] = conn
        return conn

    def _on_ready(self, conn: BrokerConnection, reauthenticated: bool) -> None:
        """A connection takes requests again: re-authenticated (KIP-368), or its writes resumed."""
        if reauthenticated:
            log.debug("%s re-authenticated (%d times)", conn, conn.reauthentications)
            self.reauthentications[0] += 1
        self._wake()

    def _on_closed(self, conn: BrokerConnection, error: BaseException | None) -> None:
        self.open_conns.discard(conn)
        if conn.reauthentication_failed:
            self.reauthentications[1] += 1
            if isinstance(error, AuthenticationError):
                self.last_auth_error = error
        if self.connections.get(conn.node_id) is conn:
            del self.connections[conn.node_id]
            if not self._is_closing() and not conn.closed_idle:
                log.info("connection to broker %d closed: %s", conn.node_id, error)
                self._request_metadata_update()
        if self.bootstrap is conn:
            self.bootstrap = None
        self._wake()

    # -- control requests ------------------------------------------------------------------------

    async def any_connection(self) -> BrokerConnection:
        """A ready connection for control requests: an existing one, else a known broker, else
        bootstrap. Raises the last refusal (AuthenticationError) or BrokerConnectionError."""
        async with self._control_lock:
            return await self._any_connection_locked()

    async def _any_connection_locked(self) -> BrokerConnection:
        ready = [conn for conn in self.connections.values() if conn.ready]
        if ready:  # the least loaded, as Java's leastLoadedNode
            return min(ready, key=lambda conn: conn.in_flight_count)
        if self.bootstrap is not None and self.bootstrap.ready:
            return self.bootstrap
        candidates: list[tuple[int, str, int]] = [(n, h, p) for n, (h, p) in self._metadata.brokers.items()]
        if not candidates or self._config.metadata_recovery_strategy == "rebootstrap":
            # Every known broker is unreachable: start again from bootstrap.servers.
            candidates += [(-1, h, p) for h, p in self._config.bootstrap_servers or ()]
        errors: list[str] = []
        refused: AuthenticationError | None = None
        now = _monotonic_ms()
        for node_id, host, port in candidates:
            if node_id >= 0:
                backoff = self.node_backoff.get(node_id)
            else:
                backoff = self.bootstrap_backoff.get((host, port))
            if backoff is not None and backoff[0] > now:
                continue
            try:
                conn = await self.open(node_id, host, port)
            except KprodError as exc:
                errors.append(str(exc))
                if isinstance(exc, AuthenticationError):
                    refused = exc
                if node_id < 0:
                    failures = (backoff[1] if backoff is not None else 0) + 1
                    retry_at = _monotonic_ms() + self.reconnect_backoff_ms(failures)
                    self.bootstrap_backoff[(host, port)] = (retry_at, failures)
                continue
            if node_id < 0:
                self.bootstrap_backoff.pop((host, port), None)
            # Another control request may have connected while we awaited: keep one, close ours.
            existing = self.connections.get(node_id) if node_id >= 0 else self.bootstrap
            if existing is not None and existing.ready:
                conn.close()
                return existing
            if node_id >= 0:
                self.connections[node_id] = conn
            else:
                self.bootstrap = conn
            return conn
        if refused is None and not errors:
            refused = self.last_auth_error  # every address waits out the backoff of a refusal
        if refused is not None:
            raise refused
        raise BrokerConnectionError(
            "no broker reachable: " + ("; ".join(errors) or "all in reconnect backoff")
        )

    # -- closing ---------------------------------------------------------------------------------

    def close_idle(self, now_ms: int) -> None:
        """Close broker connections idle for connections.max.idle.ms (-1: never)."""
        idle_ms = self._config.connections_max_idle_ms
        if idle_ms < 0:
            return
        for conn in [*self.connections.values(), *([self.bootstrap] if self.bootstrap else [])]:
            if conn.in_flight_count == 0 and now_ms - conn.last_activity_ms >= idle_ms:
                log.debug("closing %s: idle for connections.max.idle.ms=%d", conn, idle_ms)
                conn.closed_idle = True  # a normal close: no metadata refresh for it
                conn.close(BrokerConnectionError(f"idle for connections.max.idle.ms={idle_ms}"))

    async def close_all_gracefully(self, error: KprodError, linger_s: float) -> None:
        """close(): end every connection's writing half after the bytes it still holds, give the
        brokers up to ``linger_s`` s to read them and close their side, then close what is left
        with ``error``. A broker that answers acks=0 requests (Tansu) would otherwise meet a
        closed socket, be reset, and drop the requests it had not read yet."""
        if linger_s > 0:
            ending = [conn for conn in self._all_connections() if conn.ready and conn.finish_writing()]
            if ending:
                waits = [asyncio.ensure_future(conn.wait_closed()) for conn in ending]
                _, pending = await asyncio.wait(waits, timeout=linger_s)
                for wait in pending:
                    wait.cancel()
        self.close_all(error)

    def _all_connections(self) -> list[BrokerConnection]:
        """Every connection, each once: by node, bootstrap, and those still being opened."""
        every = {*self.connections.values(), *self.open_conns}
        if self.bootstrap is not None:
            every.add(self.bootstrap)
        return list(every)

    def close_all(self, error: KprodError) -> None:
        """Stop connecting and close every connection with ``error`` (the producer is closing)."""
        for task in list(self.connecting.values()):
            task.cancel()
        for conn in self._all_connections():
            conn.close(error)
