"""A TCP relay between a Kafka client and one broker, with faults switched on and off at run time.

The relay runs its own asyncio loop on a daemon thread, so synchronous tests drive it directly::

    with Relay(upstream_port=broker_port) as relay:          # listens on 127.0.0.1:relay.port
        relay.delay_responses(1500, api_keys={0})             # Produce answers arrive 1.5 s late
        relay.blackhole()                                      # answers vanish (connections stall)
        relay.cut()                                            # close every connection now
        relay.refuse()                                         # new connections are closed at once
        relay.mutate_responses(2, {3}, damage)                 # the next 2 Metadata answers damaged
        relay.replay_requests(1)                               # the next Produce request sent twice
        relay.record_responses()                               # keep Produce answers for the test
        relay.clear()                                          # every fault off

It frames both directions (4-byte size prefix), so each fault applies to whole responses and can
be limited to some API keys: a response is matched to its request by correlation id. Responses
leave in the order the broker sent them (a late or held response also holds back every later
response on its connection, as on a real stalled TCP stream; the client checks that order).

Faults:

* ``delay_responses(ms)``: every matching response is forwarded ``ms`` after it arrived (and
  never before an earlier response of its connection).
* ``blackhole()``: the first matching response on a connection is swallowed, and so is every
  later response on that connection, forever (the connection stays open, requests still reach
  the broker). Turning it off does not revive a stalled connection; new connections work.
* ``cut()``: every open connection is aborted (both sides see a reset).
* ``refuse()``: new connections are accepted and closed at once (a broker that is down).
* ``mutate_responses(count, api_keys, mutation)``: the next ``count`` matching responses are
  replaced by ``mutation(api_key, api_version, frame)`` (``frame``: after the size prefix, from the
  correlation id on; the relay writes the new size prefix). ``mutated`` lists when each went out.
* ``replay_requests(count, api_keys)``: the next ``count`` matching requests reach the broker
  twice, back to back on their connection. The broker's answer to the first copy is held back
  (kept in ``replays`` beside the answer to the second), and the second copy's answer goes to the
  client: what a client would see had its own resend met a request the broker already took.
* ``record_responses(api_keys)``: keep every matching response, with when the relay read it from
  the broker (``responses()``), e.g. to decode sequence errors or throttle times.

:class:`RelayedTansu` starts Tansu behind a relay, advertising the relay's address in Metadata so
that every connection the client opens crosses the relay, and can kill and restart the broker on
its port while the relay keeps its own.

Bounds: at most ``max_connections`` connections, at most ``max_queued_bytes`` of delayed
responses (reading from the broker pauses beyond that), a bounded request log, and every
control call and :meth:`Relay.stop` waits a bounded time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from kprod.broker import EmbeddedBroker
from kprod.protocol.framing import parse_response_header, response_header_version
from kprod.protocol.produce import ProduceResponse, decode_produce_response

__all__ = ["HOST", "Relay", "RelayedRequest", "RelayedResponse", "RelayedTansu", "Replay", "free_port"]

HOST = "127.0.0.1"
_CONTROL_TIMEOUT_S = 5.0
_UPSTREAM_CONNECT_TIMEOUT_S = 2.0
_MAX_FRAME_BYTES = 256 << 20
_REQUEST_LOG_SIZE = 100_000
_RESPONSE_LOG_SIZE = 10_000

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class RelayedRequest:
    """One request the relay forwarded: on which connection, which API, and when (monotonic s)."""

    connection: int
    api_key: int
    api_version: int
    correlation_id: int
    at: float


@dataclass(frozen=True, slots=True)
class RelayedResponse:
    """One response the relay read from the broker: on which connection, for which request, when
    (monotonic s, as the relay read it, before any delay), and the frame after its size prefix."""

    connection: int
    api_key: int
    api_version: int
    correlation_id: int
    at: float
    frame: bytes

    def produce(self) -> ProduceResponse:
        """Decode this frame as the Produce response it is (``api_key`` must be 0)."""
        if self.api_key != 0:
            raise ValueError(f"api key {self.api_key} is not Produce")
        _, offset = parse_response_header(self.frame, response_header_version(0, self.api_version))
        return decode_produce_response(self.api_version, self.frame, offset)


@dataclass(frozen=True, slots=True)
class Replay:
    """A request the relay sent twice: the broker's answers to the first and to the second copy."""

    original: RelayedResponse
    duplicate: RelayedResponse


class _Connection:
    """One client connection and its broker connection."""

    def __init__(self, number: int, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.number = number
        self.client = client
        self.upstream = upstream
        self.pending: dict[int, int] = {}  # correlation id -> api key, for requests not yet answered
        self.replayed: dict[int, RelayedResponse | None] = {}
        """Correlation ids sent twice -> the answer to the first copy, once read (held back)."""
        self.versions: dict[int, int] = {}  # correlation id -> api version, likewise
        self.out: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.queued_bytes = 0
        self.room = asyncio.Event()
        self.room.set()
        self.last_release = 0.0
        self.stalled = False

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()


def _matches(api_key: int | None, keys: frozenset[int] | None) -> bool:
    return keys is None or (api_key is not None and api_key in keys)


class Relay:
    """A fault-injecting TCP relay from ``127.0.0.1:port`` to ``upstream_host:upstream_port``.

    ``port=0`` picks a free port at :meth:`start`. Control methods are thread-safe and return once
    the relay's loop applied them.
    """

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = HOST,
        *,
        port: int = 0,
        max_connections: int = 64,
        max_queued_bytes: int = 64 << 20,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = port
        self.max_connections = max_connections
        self.max_queued_bytes = max_queued_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._numbers = 0
        # Faults (read and written on the relay's loop only).
        self._delay_s = 0.0
        self._delay_keys: frozenset[int] | None = None
        self._blackhole = False
        self._blackhole_keys: frozenset[int] | None = None
        self._refusing = False
        self._corrupt_left = 0
        self._mangle_left = 0
        self._mangle_keys: frozenset[int] | None = None
        self._corrupt_keys: frozenset[int] | None = None
        self._corrupt_from_end = 0
        self._mutate_left = 0
        self._mutate_keys: frozenset[int] | None = None
        self._mutation: Callable[[int, int, bytes], bytes] | None = None
        self._replay_left = 0
        self._replay_keys: frozenset[int] | None = None
        self.replays: list[Replay] = []
        """Each request ``replay_requests`` sent twice, with the broker's two answers."""
        self._recording = False
        self._record_keys: frozenset[int] | None = None
        self._responses: collections.deque[RelayedResponse] = collections.deque(maxlen=_RESPONSE_LOG_SIZE)
        self.mutated: list[tuple[float, int, int]] = []
        """(monotonic s, api key, connection) of each response replaced by ``mutate_responses``."""
        self._requests: collections.deque[RelayedRequest] = collections.deque(maxlen=_REQUEST_LOG_SIZE)
        self.stats: collections.Counter[str] = collections.Counter()
        """Counters: connections, refused, requests, responses, delayed, held, held_bytes, cut."""

    # ----------------------------------------------------------------- lifecycle

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``: give it to a client as ``bootstrap.servers``."""
        return f"{HOST}:{self.port}"

    def start(self, timeout_s: float = _CONTROL_TIMEOUT_S) -> Relay:
        """Listen and return once connections are accepted; raises OSError if the port is taken."""
        if self._thread is not None:
            raise RuntimeError("the relay is already started")
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"relay-{self.upstream_port}", daemon=True)
        self._thread.start()
        if not started.wait(timeout_s):  # pragma: no cover - the thread did not start
            raise RuntimeError("the relay's loop did not start")
        try:
            self._call(self._listen(), timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self, timeout_s: float = _CONTROL_TIMEOUT_S) -> None:
        """Close the listener and every connection, stop the loop and join its thread (bounded). Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            with contextlib.suppress(Exception):
                self._call(self._shutdown(), timeout_s)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        handlers = list(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def __enter__(self) -> Relay:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float = _CONTROL_TIMEOUT_S) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the relay is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    def _apply(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self._call(run())

    # ----------------------------------------------------------------- faults

    def delay_responses(self, ms: int, api_keys: Iterable[int] | None = None) -> None:
        """Forward each response ``ms`` after it arrived (0: no delay); only for ``api_keys`` if given."""
        keys = frozenset(api_keys) if api_keys is not None else None

        def apply() -> None:
            self._delay_s = max(0, ms) / 1000
            self._delay_keys = keys

        self._apply(apply)

    def blackhole(self, on: bool = True, api_keys: Iterable[int] | None = None) -> None:
        """Swallow responses (only ``api_keys`` ones if given) and stall their connections for good."""
        keys = frozenset(api_keys) if api_keys is not None else None

        def apply() -> None:
            self._blackhole = on
            self._blackhole_keys = keys

        self._apply(apply)

    def corrupt_requests(
        self, count: int = 1, api_keys: Iterable[int] | None = (0,), from_end: int = 16
    ) -> None:
        """Flip every bit of one byte ``from_end`` bytes before the end of the next ``count``
        matching requests on their way to the broker. In a Produce request (the default) that byte
        is in the records of the request's last batch, so the batch's CRC-32C no longer matches
        (the producer's own copy stays intact)."""

        def apply() -> None:
            self._corrupt_left = count
            self._corrupt_keys = None if api_keys is None else frozenset(api_keys)
            self._corrupt_from_end = from_end

        self._apply(apply)

    def mangle_responses(self, count: int = 1, api_keys: Iterable[int] | None = (0,)) -> None:
        """Cut the body of the next ``count`` matching responses to three bytes (the frame stays
        well formed: size prefix and correlation id intact), so the client cannot decode them."""

        def apply() -> None:
            self._mangle_left = count
            self._mangle_keys = None if api_keys is None else frozenset(api_keys)

        self._apply(apply)

    def mutate_responses(
        self, count: int, api_keys: Iterable[int] | None, mutation: Callable[[int, int, bytes], bytes]
    ) -> None:
        """Replace the next ``count`` matching responses by ``mutation(api_key, api_version, frame)``
        (``frame`` starts at the correlation id; the size prefix is rewritten to fit the result)."""

        def apply() -> None:
            self._mutate_left = count
            self._mutate_keys = None if api_keys is None else frozenset(api_keys)
            self._mutation = mutation

        self._apply(apply)

    def replay_requests(self, count: int = 1, api_keys: Iterable[int] | None = (0,)) -> None:
        """Send the next ``count`` matching requests (Produce by default) to the broker twice, back
        to back; the client gets the answer to the second copy, and ``replays`` keeps both."""

        def apply() -> None:
            self._replay_left = count
            self._replay_keys = None if api_keys is None else frozenset(api_keys)

        self._apply(apply)

    def record_responses(self, on: bool = True, api_keys: Iterable[int] | None = (0,)) -> None:
        """Keep the matching responses (Produce by default; the last 10,000) for :meth:`responses`;
        switching it on empties the record first."""

        def apply() -> None:
            if on:
                self._responses.clear()
            self._recording = on
            self._record_keys = None if api_keys is None else frozenset(api_keys)

        self._apply(apply)

    def responses(self, api_key: int | None = None) -> list[RelayedResponse]:
        """The responses kept by :meth:`record_responses` (only ``api_key`` ones if given), oldest first."""
        return self._apply(lambda: [r for r in self._responses if api_key is None or r.api_key == api_key])

    def refuse(self, on: bool = True) -> None:
        """Close every new connection at once (``on=False``: accept again)."""

        def apply() -> None:
            self._refusing = on

        self._apply(apply)

    def cut(self) -> int:
        """Abort every open connection now; returns how many were cut."""

        def apply() -> int:
            conns = list(self._conns)
            for conn in conns:
                conn.abort()
            self.stats["cut"] += len(conns)
            return len(conns)

        return self._apply(apply)

    def clear(self) -> None:
        """Every fault off (stalled connections stay stalled until they close)."""

        def apply() -> None:
            self._delay_s = 0.0
            self._delay_keys = None
            self._blackhole = False
            self._blackhole_keys = None
            self._refusing = False
            self._corrupt_left = 0
            self._mangle_left = 0
            self._mutate_left = 0
            self._replay_left = 0
            self._recording = False

        self._apply(apply)

    @property
    def open_connections(self) -> int:
        return self._apply(lambda: len(self._conns))

    def requests(self, api_key: int | None = None) -> list[RelayedRequest]:
        """The requests forwarded (the last 100,000; only ``api_key`` ones if given), oldest first."""
        return self._apply(lambda: [r for r in self._requests if api_key is None or r.api_key == api_key])

    # ----------------------------------------------------------------- the relay itself

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        # Never cancelled (asyncio logs a cancelled client handler as an error): it ends on its own
        # once its pumps end, and _shutdown waits for it.
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        if self._refusing or len(self._conns) >= self.max_connections:
            self.stats["refused"] += 1
            cwriter.transport.abort()
            return
        try:
            ureader, uwriter = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port), _UPSTREAM_CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError, asyncio.CancelledError):
            self.stats["upstream_failed"] += 1
            cwriter.transport.abort()
            return
        self._numbers += 1
        conn = _Connection(self._numbers, cwriter, uwriter)
        self._conns.add(conn)
        self.stats["connections"] += 1
        for writer in (cwriter, uwriter):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pumps = [
            self._spawn(self._pump_requests(conn, creader)),
            self._spawn(self._pump_responses(conn, ureader)),
            self._spawn(self._write_responses(conn)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            conn.abort()
            self._conns.discard(conn)

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readexactly(4)
        (size,) = struct.unpack(">i", head)
        if not 0 <= size <= _MAX_FRAME_BYTES:
            raise ConnectionError(f"frame size {size} out of range")
        return head + await reader.readexactly(size)

    async def _pump_requests(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            while True:
                frame = await self._read_frame(reader)
                if len(frame) >= 12:
                    api_key, api_version, correlation_id = struct.unpack_from(">hhi", frame, 4)
                    if len(conn.pending) >= _REQUEST_LOG_SIZE:  # requests never answered (acks=0)
                        conn.pending.clear()
                        conn.versions.clear()
                    conn.pending[correlation_id] = api_key
                    conn.versions[correlation_id] = api_version
                    self._requests.append(
                        RelayedRequest(conn.number, api_key, api_version, correlation_id, time.monotonic())
                    )
                    self.stats["requests"] += 1
                    if (
                        self._corrupt_left > 0
                        and _matches(api_key, self._corrupt_keys)
                        and len(frame) > self._corrupt_from_end + 12
                    ):
                        damaged = bytearray(frame)
                        damaged[-self._corrupt_from_end] ^= 0xFF
                        frame = bytes(damaged)
                        self._corrupt_left -= 1
                        self.stats["corrupted"] += 1
                    if self._replay_left > 0 and _matches(api_key, self._replay_keys):
                        # Both copies back to back: the broker reads them one after the other (it
                        # takes a connection's next request once it answered the previous one).
                        self._replay_left -= 1
                        self.stats["replayed"] += 1
                        conn.replayed[correlation_id] = None
                        conn.upstream.write(frame)
                conn.upstream.write(frame)
                await conn.upstream.drain()

    async def _pump_responses(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            while True:
                frame = await self._read_frame(reader)
                api_key = api_version = None
                if len(frame) >= 8:
                    (correlation_id,) = struct.unpack_from(">i", frame, 4)
                    if correlation_id in conn.replayed:
                        response = RelayedResponse(
                            conn.number,
                            conn.pending.get(correlation_id, -1),
                            conn.versions.get(correlation_id, -1),
                            correlation_id,
                            time.monotonic(),
                            frame[4:],
                        )
                        original = conn.replayed.pop(correlation_id)
                        if original is None:  # the first copy's answer: held back for good
                            conn.replayed[correlation_id] = response
                            self.stats["replay_held"] += 1
                            continue
                        self.replays.append(Replay(original, response))
                    api_key = conn.pending.pop(correlation_id, None)
                    api_version = conn.versions.pop(correlation_id, None)
                    if (
                        self._recording
                        and api_key is not None
                        and api_version is not None
                        and _matches(api_key, self._record_keys)
                    ):
                        self._responses.append(
                            RelayedResponse(
                                conn.number, api_key, api_version, correlation_id, time.monotonic(), frame[4:]
                            )
                        )
                self.stats["responses"] += 1
                if self._mangle_left > 0 and _matches(api_key, self._mangle_keys) and len(frame) >= 8:
                    frame = struct.pack(">i", 7) + frame[4:8] + b"\x00\x00\x01"
                    self._mangle_left -= 1
                    self.stats["mangled"] += 1
                mutation = self._mutation
                if (
                    self._mutate_left > 0
                    and mutation is not None
                    and api_key is not None
                    and api_version is not None
                    and _matches(api_key, self._mutate_keys)
                ):
                    body = mutation(api_key, api_version, frame[4:])
                    frame = struct.pack(">i", len(body)) + body
                    self._mutate_left -= 1
                    self.stats["mutated"] += 1
                    self.mutated.append((time.monotonic(), api_key, conn.number))
                if conn.stalled or (self._blackhole and _matches(api_key, self._blackhole_keys)):
                    conn.stalled = True  # held forever: this and every later response
                    self.stats["held"] += 1
                    self.stats["held_bytes"] += len(frame)
                    continue
                now = loop.time()
                release = now
                if self._delay_s > 0 and _matches(api_key, self._delay_keys):
                    release = now + self._delay_s
                    self.stats["delayed"] += 1
                release = max(release, conn.last_release)
                conn.last_release = release
                while conn.queued_bytes >= self.max_queued_bytes:
                    conn.room.clear()
                    await conn.room.wait()
                conn.queued_bytes += len(frame)
                conn.out.put_nowait((release, frame))

    async def _write_responses(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                release, frame = await conn.out.get()
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                conn.queued_bytes -= len(frame)
                conn.room.set()
                conn.client.write(frame)
                await conn.client.drain()


# --------------------------------------------------------------------------- Tansu behind a relay


class RelayedTansu:
    """A Tansu broker whose clients all go through a :class:`Relay`.

    Tansu (an :class:`~kprod.broker.EmbeddedBroker`) listens on a private port and advertises the
    relay's port in Metadata, so a client that bootstraps from :attr:`bootstrap_servers` never
    bypasses the relay. :meth:`kill` (SIGKILL) and :meth:`start_broker` restart the broker on the
    same private port while the relay keeps listening; storage is ``memory://``, so a restart loses
    every topic and record.
    """

    def __init__(self) -> None:
        self.broker_port = free_port()
        self.relay = Relay(upstream_port=self.broker_port)
        self.broker: EmbeddedBroker | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The relay's address: what clients should use."""
        return self.relay.address

    @property
    def direct_bootstrap_servers(self) -> str:
        """Tansu's own address (bypasses the relay; its Metadata still names the relay)."""
        return f"{HOST}:{self.broker_port}"

    def start(self) -> RelayedTansu:
        self.relay.start()
        try:
            self.broker = EmbeddedBroker(port=self.broker_port, advertised_port=self.relay.port)
            self.start_broker()
        except BaseException:
            self.stop()
            raise
        return self

    def start_broker(self, timeout_s: float = 10.0) -> None:
        """Start Tansu (again) on its private port and wait until it answers ApiVersions."""
        assert self.broker is not None, "start() first"
        self.broker.start(timeout_s)

    def kill(self) -> None:
        """SIGKILL the broker and reap it (a crash). Idempotent."""
        if self.broker is not None:
            self.broker.kill()

    def stop(self) -> None:
        """Kill the broker and stop the relay. Idempotent."""
        if self.broker is not None:
            self.broker.kill()
            self.broker.stop()
        self.relay.stop()

    def __enter__(self) -> RelayedTansu:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def create_topic(self, name: str, partitions: int = 1, timeout_s: float = 10.0) -> None:
        """Create ``name`` and wait until Metadata lists it (see EmbeddedBroker.create_topic)."""
        assert self.broker is not None, "start() first"
        self.broker.create_topic(name, partitions, timeout_s=timeout_s)
