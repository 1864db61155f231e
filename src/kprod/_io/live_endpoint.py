"""The ``kprod.live.port`` endpoint: a producer's ``metrics()`` as JSON lines, for ``kprod top``.

Opened by the engine only when ``kprod.live.port`` is set, on ``kprod.live.host`` (default
127.0.0.1, the loopback), and served on the producer's event loop. It is read-only: it accepts no
setting and runs no command, it only answers ``metrics``.

Protocol (newline-delimited JSON, UTF-8):

* On connect the endpoint writes one snapshot line.
* Each ``metrics`` line from the client is answered with one snapshot line. An empty line is
  ignored; any other line is answered with ``{"error": "..."}`` and otherwise ignored.
* A snapshot is ``{"kprod.live": 1, "client.id": ..., "pid": ..., "timestamp": <epoch s>,
  "metrics": {...}}``. ``metrics`` is :meth:`kprod.Producer.metrics` made JSON-safe: NaN and
  infinities become ``null``, mapping keys become strings, tuples become lists.

Bounds, so that no client can hurt the producer: at most :data:`MAX_CLIENTS` connections (one more
is told ``{"error": "too many clients"}`` and closed); a request line is at most
:data:`MAX_LINE_BYTES` (a longer one closes the connection); a client silent for
:data:`IDLE_TIMEOUT_S` is closed; a client answered at most every :data:`MIN_ANSWER_INTERVAL_S`;
``metrics()`` is computed at most every :data:`SNAPSHOT_CACHE_S` for all clients; a client that
does not read its answers is dropped once :data:`MAX_WRITE_BUFFER_BYTES` wait for it. The
endpoint closes (listening socket and every connection) when the producer closes; in a child
process forked from the producer's, its sockets are let go at once (so that the child does not
keep the port or the connections of the parent's endpoint open).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

from kprod.config import ProducerConfig
from kprod.errors import ConfigError

__all__ = [
    "IDLE_TIMEOUT_S",
    "MAX_CLIENTS",
    "MAX_LINE_BYTES",
    "MAX_WRITE_BUFFER_BYTES",
    "PROTOCOL_VERSION",
    "SNAPSHOT_CACHE_S",
    "LiveEndpoint",
    "json_safe",
    "open_live_endpoint",
]

log = logging.getLogger("kprod.producer")

PROTOCOL_VERSION = 1
MAX_CLIENTS = 8
MAX_LINE_BYTES = 1024
IDLE_TIMEOUT_S = 120.0
MIN_ANSWER_INTERVAL_S = 0.05
SNAPSHOT_CACHE_S = 0.1
MAX_WRITE_BUFFER_BYTES = 4 * 1024 * 1024

_TOO_MANY = b'{"error": "too many clients"}\n'
_UNKNOWN = b'{"error": "unknown request: send the line \'metrics\'"}\n'

_ENDPOINTS: weakref.WeakSet[LiveEndpoint] = weakref.WeakSet()


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None, keys as strings, tuples and sets as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_live_endpoint(config: ProducerConfig, metrics: Callable[[], dict[str, Any]]) -> LiveEndpoint | None:
    """The endpoint, listening already (in the caller's thread), or None when ``kprod.live.port`` is unset.

    Raises :class:`ConfigError` naming the setting when the address cannot be listened on.
    """
    if config.kprod_live_port is None:
        return None
    return LiveEndpoint(config.kprod_live_host, config.kprod_live_port, config.client_id, metrics)


class LiveEndpoint:
    """Serves ``metrics()`` to ``kprod top`` clients; :meth:`start` and :meth:`aclose` on the producer's loop."""

    def __init__(self, host: str, port: int, client_id: str, metrics: Callable[[], dict[str, Any]]) -> None:
        self._client_id = client_id
        self._metrics = metrics
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._sock = socket.create_server((host, port), family=family, backlog=MAX_CLIENTS)
        except OSError as exc:
            raise ConfigError(
                f"Setting 'kprod.live.port'={port}: cannot listen on {host}:{port} ({exc}); choose another "
                "port, 0 for a free one, or leave kprod.live.port unset",
                stage="config",
            ) from exc
        self._sock.setblocking(False)
        bound = self._sock.getsockname()
        self.address: tuple[str, int] = (str(bound[0]), int(bound[1]))
        """Where the endpoint listens: (host, port), the port chosen when kprod.live.port is 0."""
        self._server: asyncio.AbstractServer | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}
        self._cached: bytes = b""
        self._cached_at = -math.inf
        self.closed = False
        _ENDPOINTS.add(self)
        shown = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        log.info(
            "kprod live endpoint on %s:%d (kprod top --port %d)", shown, self.address[1], self.address[1]
        )
        if not _is_loopback(host):
            log.warning(
                "kprod.live.host=%s is not a loopback address: whoever can reach %s:%d can read this "
                "producer's metrics",
                host,
                shown,
                self.address[1],
            )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start serving (call on ``loop``'s thread, the loop running or about to run)."""
        if self.closed or self._server is not None:
            return
        self._start_task = loop.create_task(self._serve())
        self._start_task.add_done_callback(_log_failure)

    async def _serve(self) -> None:
        if self.closed:
            return
        self._server = await asyncio.start_server(self._on_client, sock=self._sock, limit=MAX_LINE_BYTES)
        if self._closed_meanwhile():
            self._server.close()

    def _closed_meanwhile(self) -> bool:
        return self.closed

    async def aclose(self) -> None:
        """Stop listening and drop every client (on the loop); safe to call twice."""
        if self.closed:
            return
        self.closed = True
        if self._server is not None:
            self._server.close()
        else:
            self._sock.close()
        tasks = list(self._clients.values())
        for writer in list(self._clients):
            writer.transport.abort()  # each client's task sees the end of its stream and returns
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
        self._clients.clear()

    def forked_into_child(self) -> None:
        """In a forked child: let go of the sockets without touching the parent's connections.

        Each descriptor is pointed at /dev/null rather than closed, so the objects that own it
        (here and in the loop) can still close it safely later, and the TCP connection and the
        listening port belong to the parent alone."""
        self.closed = True
        fds = [self._sock.fileno()]
        for writer in self._clients:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                fds.append(sock.fileno())
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in fds:
                if fd >= 0:
                    os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    # -- one client ---------------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.closed or len(self._clients) >= MAX_CLIENTS:
            writer.write(_TOO_MANY)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._clients[writer] = task
        try:
            if not self._answer(writer):
                return
            while not self.closed:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                except (TimeoutError, ValueError):  # silent too long, or a line over MAX_LINE_BYTES
                    return
                if not line:
                    return  # the client closed
                request = line.strip()
                if request == b"metrics":
                    if not self._answer(writer):
                        return
                elif request and not self._send(writer, _UNKNOWN):
                    return
                await asyncio.sleep(MIN_ANSWER_INTERVAL_S)
        except (ConnectionError, OSError):
            return
        except asyncio.CancelledError:  # the endpoint closed: end quietly (asyncio logs a cancelled handler)
            return
        finally:
            self._clients.pop(writer, None)
            writer.transport.abort()

    def _answer(self, writer: asyncio.StreamWriter) -> bool:
        """Send a snapshot; False when the client is to be dropped."""
        now = time.monotonic()
        if now - self._cached_at >= SNAPSHOT_CACHE_S:
            try:
                metrics = self._metrics()
            except Exception:
                log.exception("kprod live endpoint: metrics() raised")
                return False
            doc = {
                "kprod.live": PROTOCOL_VERSION,
                "client.id": self._client_id,
                "pid": os.getpid(),
                "timestamp": time.time(),
                "metrics": json_safe(metrics),
            }
            self._cached = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode() + b"\n"
            self._cached_at = now
        return self._send(writer, self._cached)

    @staticmethod
    def _send(writer: asyncio.StreamWriter, data: bytes) -> bool:
        transport = writer.transport
        if transport.is_closing():
            return False
        waiting = transport.get_write_buffer_size()
        if waiting and waiting + len(data) > MAX_WRITE_BUFFER_BYTES:
            return False  # it does not read its answers: drop it rather than buffer without end
        transport.write(data)
        return True


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("kprod live endpoint failed to start", exc_info=task.exception())


def _after_fork_in_child() -> None:
    for endpoint in list(_ENDPOINTS):
        if not endpoint.closed:
            endpoint.forked_into_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
