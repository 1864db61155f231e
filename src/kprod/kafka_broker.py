"""Apache Kafka itself as a child process: one KRaft node or an N-node cluster on loopback.

This module owns the lifecycle of real Kafka brokers for tests, benchmarks and ``kprod broker
--engine kafka``: fetching the jars from Maven Central into a cache outside the checkout (once;
offline afterwards), making the TLS certificates, writing each node's ``server.properties``,
formatting KRaft storage, starting the JVMs, waiting until every broker is registered, creating
topics, and stopping or crashing nodes on purpose. It knows nothing about the producer; the
producer never imports it. :class:`KafkaCluster` has the interface of
:class:`kprod.broker.EmbeddedBroker` (``start``, ``stop``, ``bootstrap_servers``,
``create_topic``, ...), so a test can take either.

Every node has these listeners, each on its own free loopback port:

* ``PLAINTEXT``: no TLS, no SASL (the inter-broker listener; also what ``bootstrap_servers`` names);
* ``SSL``: TLS, server certificate only;
* ``MTLS``: TLS with ``ssl.client.auth=required`` (mutual TLS);
* ``SASL_PLAINTEXT`` and ``SASL_SSL``: SASL over plain TCP and over TLS, with the mechanisms
  PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER (unsecured JWTs: tests only);
* ``CONTROLLER``: KRaft's own, not for clients.

Users (:data:`USERS`) exist for PLAIN and both SCRAM mechanisms. The authorizer is
``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=true``: nothing is denied until a
test adds ACLs. ``User:admin`` and ``User:ANONYMOUS`` (the PLAINTEXT listener's principal) are
super users.

Why one module of about 1,000 lines: jar fetching, certificates, node configuration and the process
lifecycle only ever change together with the launcher, and nothing else in kprod imports them.

Rules this file keeps (as ``kprod.broker`` does): every wait has a deadline and a timeout error
carries the tail of the node's log; nodes run in their own sessions, die with their parent
(``PR_SET_PDEATHSIG``) and are stopped at interpreter exit; storage lives in a temporary
directory removed at exit.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime
import fcntl
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from kprod.broker import HOST, _free_port, _pdeathsig_preexec, _recv_exact
from kprod.errors import KprodError

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "LISTENERS",
    "USERS",
    "Certificates",
    "KafkaBrokerError",
    "KafkaCluster",
    "KafkaNode",
    "java_problem",
    "kafka_jars",
    "make_certificates",
]

DEFAULT_KAFKA_VERSION = "4.4.0"
"""The Kafka release fetched by default (``KPROD_KAFKA_VERSION`` overrides it)."""

LISTENERS: tuple[str, ...] = ("PLAINTEXT", "SSL", "MTLS", "SASL_PLAINTEXT", "SASL_SSL")
"""Client listeners of every node, by name (see the module docstring)."""

USERS: dict[str, str] = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
"""SASL users (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and their passwords. ``admin`` is a super user."""

_LOG4J_VERSION = "2.25.3"
_DEPENDENCY_PLUGIN_VERSION = "3.8.1"
_LOG_TAIL_LINES = 30
_READY_MARKER = ".complete"
_PROTOCOL_OF = {
    "PLAINTEXT": "PLAINTEXT",
    "SSL": "SSL",
    "MTLS": "SSL",
    "SASL_PLAINTEXT": "SASL_PLAINTEXT",
    "SASL_SSL": "SASL_SSL",
    "CONTROLLER": "PLAINTEXT",
}
_DELETE_TOPICS = 20  # api key
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

# Sized for a 2-core machine shared with the tests: a small heap, the serial collector (no GC
# threads competing for the cores), and C1 only, which starts the broker about twice as fast.
DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms192m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
"""JVM flags of every node; ``jvm_options=`` replaces them (e.g. without C1-only for throughput runs)."""


class KafkaBrokerError(KprodError):
    """Apache Kafka could not be fetched, started, reached or told to do something.

    The message says what failed and, when a node was involved, ends with the tail of its log.
    """

    stage = "broker"


# ----------------------------------------------------------------------------- Java and jars


def java_problem() -> str | None:
    """Why Apache Kafka cannot run here (no Java 17+, no Maven and no cached jars), or None if it can."""
    java = _java()
    if java is None:
        return "Apache Kafka needs Java 17 or newer: install it (apt-get install openjdk-17-jre-headless)"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {java} -version: {exc}"
    match = re.search(rb'version "(\d+)', out.stderr + out.stdout)
    if match is None or int(match.group(1)) < 17:
        return f"Apache Kafka 4 needs Java 17 or newer; {java} is {out.stderr[:80]!r}"
    if not _jars_complete(_cache_dir(_kafka_version())) and shutil.which("mvn") is None:
        return "fetching Apache Kafka's jars needs Maven: install it (apt-get install maven)"
    return None


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _kafka_version() -> str:
    return os.environ.get("KPROD_KAFKA_VERSION", DEFAULT_KAFKA_VERSION)


def _cache_dir(version: str) -> Path:
    root = os.environ.get("KPROD_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    base = Path(root).expanduser() / ("" if "KPROD_CACHE_DIR" in os.environ else "kprod")
    return base / f"kafka-{version}"


def _jars_complete(directory: Path) -> bool:
    return (directory / _READY_MARKER).is_file()


def kafka_jars(
    version: str | None = None, progress: Callable[[str], None] | None = None, timeout_s: float = 900.0
) -> Path:
    """Return the directory holding Apache Kafka's jars (broker, tools, clients, log4j), fetching them once.

    The first call for a version runs Maven (``dependency:copy-dependencies`` of a throw-away pom)
    into ``~/.cache/kprod/kafka-VERSION/libs`` (``$KPROD_CACHE_DIR`` or ``$XDG_CACHE_HOME`` move
    it), showing Maven's progress lines through ``progress`` (default: stderr); later calls only
    check the directory. Concurrent callers (several test processes) wait on a file lock. Blocks
    for at most ``timeout_s`` seconds of download.

    :raises KafkaBrokerError: if Maven is missing or fails (the message ends with its output).
    """
    version = version or _kafka_version()
    directory = _cache_dir(version)
    libs = directory / "libs"
    if _jars_complete(directory):
        return libs
    directory.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same version
        if _jars_complete(directory):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaBrokerError(
                "fetching Apache Kafka's jars needs Maven: install it (apt-get install maven)"
            )
        shutil.rmtree(libs, ignore_errors=True)
        (directory / "pom.xml").write_text(_pom(version))
        say(f"[kprod] fetching Apache Kafka {version} jars with Maven into {libs} (once)")
        argv = [
            mvn,
            "-B",
            "--no-transfer-progress",
            "-f",
            str(directory / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ]
        output: list[str] = []
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
        )
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                output.append(line.rstrip())
                if "Copying" in line or "BUILD" in line or "ERROR" in line:
                    say("[mvn] " + line.rstrip())
            status = proc.wait()
        finally:
            timer.cancel()
        jars = sorted(libs.glob("*.jar")) if libs.is_dir() else []
        if status != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
            tail = "\n".join("    " + line for line in output[-_LOG_TAIL_LINES:])
            raise KafkaBrokerError(
                f"Maven could not fetch Apache Kafka {version} (exit {status}, {len(jars)} jars); "
                f"check network access to Maven Central or set KPROD_KAFKA_VERSION:\n{tail}"
            )
        (directory / _READY_MARKER).write_text("\n".join(j.name for j in jars) + "\n")
        say(f"[kprod] {len(jars)} jars ready in {libs}")
        return libs


def _pom(version: str) -> str:
    dependencies = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>{v}</dependency>"
        for g, a, v in (
            ("org.apache.kafka", "kafka_2.13", f"<version>{version}</version>"),
            ("org.apache.kafka", "kafka-tools", f"<version>{version}</version>"),
            ("org.apache.kafka", "kafka-clients", f"<version>{version}</version>"),
            # Kafka logs through slf4j 1.7: the binding is log4j-slf4j-impl, not the slf4j2 one.
            ("org.apache.logging.log4j", "log4j-core", f"<version>{_LOG4J_VERSION}</version>"),
            ("org.apache.logging.log4j", "log4j-slf4j-impl", f"<version>{_LOG4J_VERSION}</version>"),
        )
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>kprod</groupId><artifactId>kafka-jars</artifactId><version>{version}</version>"
        f"<packaging>pom</packaging><dependencies>{dependencies}</dependencies>"
        "<build><pluginManagement><plugins><plugin><groupId>org.apache.maven.plugins</groupId>"
        "<artifactId>maven-dependency-plugin</artifactId>"
        f"<version>{_DEPENDENCY_PLUGIN_VERSION}</version></plugin></plugins></pluginManagement></build>"
        "</project>\n"
    )


# ----------------------------------------------------------------------------- certificates


@dataclass(frozen=True, slots=True)
class Certificates:
    """PEM files the launcher made: a CA, the brokers' certificate, and a client certificate.

    :ivar ca: the CA certificate (a client's ``ssl.truststore.location`` / ``ssl.ca.location``).
    :ivar broker_keystore: the brokers' PKCS#8 key followed by their certificate chain.
    :ivar client_cert: a certificate for mutual TLS, signed by the same CA (subject CN=client).
    :ivar client_key: its PKCS#8 private key, unencrypted.
    """

    ca: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path


def make_certificates(
    directory: Path,
    hosts: Sequence[str] = ("localhost", HOST),
    *,
    valid_days: int = 30,
    not_before: datetime.datetime | None = None,
) -> Certificates:
    """Make a CA and certificates for ``hosts`` (DNS names and IP addresses) in ``directory``.

    Uses the ``cryptography`` package (``pip install 'kprod[kafka]'``). ``not_before`` and
    ``valid_days`` let tests make expired certificates.

    :raises KafkaBrokerError: if ``cryptography`` is missing.
    """
    try:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:
        raise KafkaBrokerError(
            "making TLS certificates needs the cryptography package: pip install 'kprod[kafka]'"
        ) from exc

    start = not_before or (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1))
    end = start + datetime.timedelta(days=valid_days)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("kprod test CA"))
        .issuer_name(name("kprod test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common_name: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return pem_key(key), cert.public_bytes(serialization.Encoding.PEM)

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    broker_key, broker_cert = leaf(hosts[0] if hosts else "broker", sans, ExtendedKeyUsageOID.SERVER_AUTH)
    client_key, client_cert = leaf("client", [], ExtendedKeyUsageOID.CLIENT_AUTH)
    paths = Certificates(
        ca=directory / "ca.pem",
        broker_keystore=directory / "broker-keystore.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    paths.ca.write_bytes(ca_pem)
    paths.broker_keystore.write_bytes(broker_key + broker_cert + ca_pem)
    paths.client_cert.write_bytes(client_cert)
    paths.client_key.write_bytes(client_key)
    return paths


# ----------------------------------------------------------------------------- nodes


@dataclass
class KafkaNode:
    """One node of a :class:`KafkaCluster`: broker and controller in one JVM.

    :ivar node_id: Kafka's ``node.id`` (1..N).
    :ivar ports: listener name -> TCP port on 127.0.0.1 (``LISTENERS`` plus ``CONTROLLER``).
    :ivar directory: holds ``server.properties``, ``data/`` and ``kafka.log``.
    """

    node_id: int
    ports: dict[str, int]
    directory: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """True while the JVM is alive (it may be stopped with SIGSTOP)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The JVM's process id, or None when it is not running."""
        return self.proc.pid if self.running and self.proc is not None else None

    @property
    def log_path(self) -> Path:
        """The node's stdout and stderr, appended across restarts."""
        return self.directory / "kafka.log"

    def address(self, listener: str = "PLAINTEXT") -> str:
        """``"127.0.0.1:PORT"`` of one of the node's listeners."""
        return f"{HOST}:{self.ports[listener]}"


class KafkaCluster:
    """Apache Kafka (KRaft) on 127.0.0.1: one combined broker+controller node, or ``nodes`` of them.

    ``KafkaCluster()`` does nothing until :meth:`start` (or ``with KafkaCluster() as kafka:``).
    Not thread-safe: drive one instance from one thread.

    :param nodes: how many nodes (each broker and controller); default 1. With 3 or more, topics
        default to replication factor 3 and ``min.insync.replicas`` 2 (internal topics too).
    :param broker_config: extra ``server.properties`` entries for every node (strings).
    :param directory: where nodes keep their data and logs; default a temporary directory removed
        when the cluster is stopped for good or the interpreter exits.
    :param jvm_options: JVM flags; default :data:`DEFAULT_JVM_OPTIONS`.
    :param version: Kafka release; default ``KPROD_KAFKA_VERSION`` or :data:`DEFAULT_KAFKA_VERSION`.
    :param advertised_ports: for a single node, listener name -> the port to name in Metadata
        instead of the listener's own (a fault-injecting relay in front of it: clients then open
        every connection through the relay). Admin requests and readiness probes go direct.
    """

    def __init__(
        self,
        nodes: int = 1,
        broker_config: Mapping[str, str] | None = None,
        directory: str | os.PathLike[str] | None = None,
        jvm_options: Sequence[str] | None = None,
        version: str | None = None,
        advertised_ports: Mapping[str, int] | None = None,
    ) -> None:
        if nodes < 1:
            raise KafkaBrokerError(f"nodes must be >= 1, got {nodes}")
        if advertised_ports and nodes != 1:
            raise KafkaBrokerError("advertised_ports is for a single node")
        unknown = set(advertised_ports or ()) - set(LISTENERS)
        if unknown:
            raise KafkaBrokerError(f"unknown listener(s) in advertised_ports: {sorted(unknown)}")
        self._advertised_ports = dict(advertised_ports or {})
        self.version = version or _kafka_version()
        self._node_count = nodes
        self._broker_config = dict(broker_config or {})
        self._directory = Path(directory) if directory is not None else None
        self._own_directory = directory is None
        self._jvm_options = tuple(jvm_options) if jvm_options is not None else DEFAULT_JVM_OPTIONS
        self._nodes: list[KafkaNode] = []
        self._cluster_id = ""
        self._libs: Path | None = None
        self._certs: Certificates | None = None
        self._atexit_registered = False
        self.start_seconds = 0.0
        """Wall time of the last :meth:`start` (jar fetch excluded), for the docs."""

    # ----------------------------------------------------------------- properties

    @property
    def nodes(self) -> list[KafkaNode]:
        """The nodes, ``node_id`` 1..N in order (empty before :meth:`start`)."""
        return list(self._nodes)

    def node(self, node_id: int) -> KafkaNode:
        """The node with ``node_id``.

        :raises KafkaBrokerError: if there is no such node.
        """
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise KafkaBrokerError(f"no node {node_id} (nodes: {[n.node_id for n in self._nodes]})")

    @property
    def running(self) -> bool:
        """True while every node's JVM is alive."""
        return bool(self._nodes) and all(n.running for n in self._nodes)

    @property
    def pid(self) -> int | None:
        """The first node's process id (the only one on a single node), or None when it is not running."""
        return self._nodes[0].pid if self._nodes else None

    @property
    def port(self) -> int:
        """The first node's PLAINTEXT port (the only one on a single node)."""
        if not self._nodes:
            raise KafkaBrokerError("the Kafka cluster has not been started: it has no port yet")
        return self._nodes[0].ports["PLAINTEXT"]

    @property
    def log_path(self) -> Path:
        """The first node's log."""
        if not self._nodes:
            raise KafkaBrokerError("the Kafka cluster has not been started: it has no log yet")
        return self._nodes[0].log_path

    def bootstrap(self, listener: str = "PLAINTEXT") -> str:
        """Comma-separated ``host:port`` of every node's ``listener``, for ``bootstrap.servers``.

        :raises KafkaBrokerError: before :meth:`start`, or for an unknown listener.
        """
        if not self._nodes:
            raise KafkaBrokerError("the Kafka cluster has not been started: it has no address yet")
        if listener not in LISTENERS:
            raise KafkaBrokerError(f"unknown listener {listener!r}; one of {', '.join(LISTENERS)}")
        return ",".join(n.address(listener) for n in self._nodes)

    @property
    def bootstrap_servers(self) -> str:
        """Every node's PLAINTEXT address, comma-separated."""
        return self.bootstrap("PLAINTEXT")

    @property
    def certificates(self) -> Certificates:
        """The CA and the certificates of the TLS listeners (made at the first start)."""
        if self._certs is None:
            raise KafkaBrokerError("the Kafka cluster has not been started: no certificates yet")
        return self._certs

    @property
    def cluster_id(self) -> str:
        """KRaft's cluster id (22 characters of base64url)."""
        return self._cluster_id

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout_s: float = 120.0) -> None:
        """Fetch the jars if needed, format storage and start every node; block until every broker
        is registered and answers Metadata (at most ``timeout_s`` s after the jars are there).

        :raises KafkaBrokerError: if Java or Maven is missing, a node exits, or the cluster is not
            ready in time (the message ends with the log tail of a node that failed).
        """
        if self._nodes:
            raise KafkaBrokerError(
                "the Kafka cluster was started already; use restart_node() or a new instance"
            )
        problem = java_problem()
        if problem is not None:
            raise KafkaBrokerError(problem)
        self._libs = kafka_jars(self.version)
        began = time.monotonic()
        deadline = began + timeout_s
        base = self._ensure_directory()
        self._certs = make_certificates(base / "certs")
        self._cluster_id = _random_cluster_id()
        if not self._atexit_registered:
            atexit.register(self._atexit)
            self._atexit_registered = True
        used: set[int] = set()
        for node_id in range(1, self._node_count + 1):
            ports: dict[str, int] = {}
            for listener in (*LISTENERS, "CONTROLLER"):
                port = _free_port()
                while port in used:
                    port = _free_port()
                used.add(port)
                ports[listener] = port
            directory = base / f"node-{node_id}"
            directory.mkdir(parents=True, exist_ok=True)
            self._nodes.append(KafkaNode(node_id, ports, directory))
        for node in self._nodes:
            self._write_properties(node)
        # Formatting is one short JVM per node: run them side by side.
        formatters = [self._format(node) for node in self._nodes]
        for node, proc in zip(self._nodes, formatters, strict=True):
            self._wait_formatted(node, proc, deadline)
        for node in self._nodes:
            self._spawn(node)
        self.wait_ready(deadline - time.monotonic())
        self.start_seconds = time.monotonic() - began

    def wait_ready(self, timeout_s: float = 60.0, nodes: Iterable[KafkaNode] | None = None) -> None:
        """Block until each of ``nodes`` (default: every running node) answers Metadata listing every
        running node, for at most ``timeout_s`` s.

        :raises KafkaBrokerError: if a node exits or the deadline passes.
        """
        deadline = time.monotonic() + timeout_s
        waiting = list(nodes) if nodes is not None else [n for n in self._nodes if n.running]
        last_error: BaseException | None = None
        while waiting:
            node = waiting[0]
            if not node.running:
                raise KafkaBrokerError(
                    f"Kafka node {node.node_id} exited during startup"
                    + ("" if node.proc is None else f" with status {node.proc.returncode}")
                    + self._log_tail(node)
                )
            expected = {n.node_id for n in self._nodes if n.running}
            try:
                brokers = set(
                    self.describe_brokers(node, timeout_s=min(2.0, max(0.1, deadline - time.monotonic())))
                )
                if expected <= brokers:
                    waiting.pop(0)
                    continue
                last_error = KafkaBrokerError(
                    f"Metadata lists brokers {sorted(brokers)}, want {sorted(expected)}"
                )
            except (OSError, KprodError) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                raise KafkaBrokerError(
                    f"Kafka node {node.node_id} was not ready in time (last: {last_error!r}); "
                    "raise start(timeout_s=...)" + self._log_tail(node)
                )
            time.sleep(0.1)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop every node: ``SIGTERM`` (a controlled shutdown) to all at once, then ``SIGKILL`` for
        those still running after ``timeout_s`` s. Idempotent; removes a temporary directory.
        """
        for node in self._nodes:
            if node.proc is not None and node.running:
                _signal(node.proc, signal.SIGCONT)  # a paused node cannot shut down
                _signal(node.proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in self._nodes:
            self._reap(node, max(0.0, deadline - time.monotonic()))
        self._nodes = []
        if self._own_directory and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def kill(self) -> None:
        """``SIGKILL`` every node (a crash of the whole cluster); data stays for :meth:`start_node`."""
        for node in self._nodes:
            self._reap(node, 0.0)

    def kill_node(self, node_id: int) -> None:
        """``SIGKILL`` one node (a crash) and reap it; its data stays for :meth:`start_node`."""
        node = self.node(node_id)
        self._reap(node, 0.0)

    def stop_node(self, node_id: int, timeout_s: float = 30.0) -> None:
        """``SIGTERM`` one node (controlled shutdown: its leaderships move first) and wait for it to
        exit, ``SIGKILL`` after ``timeout_s`` s. Its data stays for :meth:`start_node`.
        """
        node = self.node(node_id)
        if node.proc is not None and node.running:
            _signal(node.proc, signal.SIGCONT)
            _signal(node.proc, signal.SIGTERM)
        self._reap(node, timeout_s)

    def start_node(self, node_id: int, timeout_s: float = 60.0, wait: bool = True) -> None:
        """Start a stopped or killed node again with its data and ports; with ``wait``, block until
        it is registered again (at most ``timeout_s`` s).

        :raises KafkaBrokerError: if it is running, exits, or is not ready in time.
        """
        node = self.node(node_id)
        if node.running:
            raise KafkaBrokerError(f"Kafka node {node_id} is already running (pid {node.pid})")
        self._spawn(node)
        if wait:
            self.wait_ready(timeout_s, nodes=[node])

    def pause_node(self, node_id: int) -> None:
        """``SIGSTOP`` one node: it keeps its sockets and answers nothing until :meth:`resume_node`."""
        node = self.node(node_id)
        if node.proc is None or not node.running:
            raise KafkaBrokerError(f"Kafka node {node_id} is not running")
        _signal(node.proc, signal.SIGSTOP)

    def resume_node(self, node_id: int) -> None:
        """``SIGCONT`` a node paused with :meth:`pause_node`."""
        node = self.node(node_id)
        if node.proc is not None and node.running:
            _signal(node.proc, signal.SIGCONT)

    def __enter__(self) -> KafkaCluster:
        if not self._nodes:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- admin requests

    def request(self, entity: Any, node_id: int | None = None, timeout_s: float = 10.0) -> Any:
        """Send one kio request entity to a node's PLAINTEXT listener and return the decoded response.

        ``node_id`` None picks the first running node. Blocks for at most ``timeout_s`` s. Used for
        topic administration here and by tests for anything else (ACLs, quotas, elections).

        :raises KafkaBrokerError: if no node runs or the answer is malformed; ``OSError`` on
            connection failure or timeout.
        """
        if node_id is None:
            running = [n for n in self._nodes if n.running]
            if not running:
                raise KafkaBrokerError("no Kafka node is running")
            node = running[0]
        else:
            node = self.node(node_id)
        return _admin_request(node.ports["PLAINTEXT"], entity, timeout_s)

    def describe_brokers(self, node: KafkaNode | None = None, timeout_s: float = 5.0) -> dict[int, str]:
        """``{node_id: "host:port"}`` of the brokers a node's Metadata lists (registered, unfenced)."""
        response = self._metadata(None, node, timeout_s)
        return {int(b.node_id): f"{b.host}:{int(b.port)}" for b in response.brokers}

    def partition_leaders(self, topic: str, timeout_s: float = 5.0) -> dict[int, int]:
        """``{partition: leader node id}`` of ``topic`` (-1 for a partition without a leader)."""
        response = self._metadata([topic], None, timeout_s)
        for t in response.topics:
            if t.name == topic:
                return {int(p.partition_index): int(p.leader_id) for p in t.partitions}
        return {}

    def active_controller(self, timeout_s: float = 10.0) -> int:
        """The node id of the KRaft quorum's leader (the active controller), from DescribeQuorum.

        :raises KafkaBrokerError: if the answer has an error or no leader.
        """
        from kprod.protocol.messages import _request

        describe_quorum = 55  # api key
        partition = _request(describe_quorum, 2, "PartitionData", partition_index=0)
        topic = _request(
            describe_quorum, 2, "TopicData", topic_name="__cluster_metadata", partitions=(partition,)
        )
        response = self.request(
            _request(describe_quorum, 2, "DescribeQuorumRequest", topics=(topic,)), timeout_s=timeout_s
        )
        answers = [p for t in response.topics for p in t.partitions]
        if (
            int(response.error_code)
            or not answers
            or int(answers[0].error_code)
            or int(answers[0].leader_id) < 0
        ):
            raise KafkaBrokerError(f"DescribeQuorum gave no leader: {response!r}"[:500])
        return int(answers[0].leader_id)

    def elect_preferred_leaders(
        self, topic: str, partitions: Sequence[int], timeout_s: float = 30.0
    ) -> dict[int, int]:
        """Run a preferred-leader election (ElectLeaders) for ``partitions`` of ``topic``; return
        ``{partition: error code}`` (0 elected, 84 ELECTION_NOT_NEEDED: already the preferred leader)."""
        from kio.static.primitive import i8

        from kprod.protocol.messages import _request

        elect_leaders = 43  # api key
        wanted = _request(elect_leaders, 2, "TopicPartitions", topic=topic, partitions=tuple(partitions))
        request = _request(
            elect_leaders,
            2,
            "ElectLeadersRequest",
            election_type=i8(0),
            topic_partitions=(wanted,),
            timeout=_ms(int(timeout_s * 1000)),
        )
        response = self.request(request, timeout_s=timeout_s)
        return {
            int(p.partition_id): int(p.error_code)
            for r in response.replica_election_results
            for p in r.partition_result
        }

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        configs: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        replication_factor: int | None = None,
    ) -> None:
        """Create ``name`` and block until every partition has a leader (at most ``timeout_s`` s).

        ``replication_factor`` defaults to min(3, nodes). ``configs`` are topic configs
        (``max.message.bytes``, ``message.timestamp.type``, ``min.insync.replicas``, ...).

        :raises KafkaBrokerError: if the broker refuses (the message gives its error) or the topic
            is not ready in time.
        """
        from kprod.protocol.messages import ApiKey, _request

        if partitions < 1:
            raise KafkaBrokerError(f"partitions must be >= 1, got {partitions}")
        deadline = time.monotonic() + timeout_s
        rf = replication_factor if replication_factor is not None else min(3, self._node_count)
        version = 5
        topic = _request(
            ApiKey.CREATE_TOPICS,
            version,
            "CreatableTopic",
            name=name,
            num_partitions=partitions,
            replication_factor=rf,
            assignments=(),
            configs=tuple(
                _request(ApiKey.CREATE_TOPICS, version, "CreatableTopicConfig", name=k, value=str(v))
                for k, v in (configs or {}).items()
            ),
        )
        request = _request(
            ApiKey.CREATE_TOPICS,
            version,
            "CreateTopicsRequest",
            topics=(topic,),
            timeout=_ms(int(timeout_s * 1000)),
            validate_only=False,
        )
        response = self.request(request, timeout_s=timeout_s)
        for result in response.topics:
            if int(result.error_code) != 0:
                raise KafkaBrokerError(
                    f"CreateTopics {name!r} failed with error {int(result.error_code)}: {result.error_message}"
                )
        while True:
            step_s = max(0.1, min(5.0, deadline - time.monotonic()))
            leaders = self.partition_leaders(name, timeout_s=step_s)
            if (
                len(leaders) == partitions
                and all(leader >= 0 for leader in leaders.values())
                and self._leaders_serve(name, leaders, step_s)
            ):
                return
            if time.monotonic() >= deadline:
                raise KafkaBrokerError(
                    f"topic {name!r} has leaders {leaders} at the deadline, or they do not serve it "
                    "yet; raise timeout_s"
                )
            time.sleep(0.05)

    def _leaders_serve(self, topic: str, leaders: Mapping[int, int], timeout_s: float) -> bool:
        """True when each partition's leader answers ListOffsets for it without an error.

        A broker puts a new partition in its metadata cache before its replica manager takes it
        (``BrokerMetadataPublisher``): in between, Metadata names the leader but the leader answers
        NOT_LEADER_OR_FOLLOWER, and to an ``acks=0`` Produce it closes the connection, losing what
        the client wrote behind it. A test that writes at once must wait for this.
        """
        from kprod.protocol.messages import _request

        list_offsets, version = 2, 7
        by_leader: dict[int, list[int]] = {}
        for partition, leader in leaders.items():
            by_leader.setdefault(leader, []).append(partition)
        for leader, owned in by_leader.items():
            wanted = tuple(
                _request(list_offsets, version, "ListOffsetsPartition", partition_index=p, timestamp=-1)
                for p in owned
            )
            request = _request(
                list_offsets,
                version,
                "ListOffsetsRequest",
                replica_id=-1,
                isolation_level=0,
                topics=(_request(list_offsets, version, "ListOffsetsTopic", name=topic, partitions=wanted),),
            )
            try:
                response = self.request(request, node_id=leader, timeout_s=timeout_s)
            except (OSError, KafkaBrokerError):
                return False
            if any(int(p.error_code) for t in response.topics for p in t.partitions):
                return False
        return True

    def delete_topic(self, name: str, timeout_s: float = 30.0) -> None:
        """Delete ``name``; blocks until Metadata no longer lists it (at most ``timeout_s`` s).

        :raises KafkaBrokerError: if the broker refuses or the topic is still listed at the deadline.
        """
        from kprod.protocol.messages import _request

        deadline = time.monotonic() + timeout_s
        request = _request(
            _DELETE_TOPICS, 4, "DeleteTopicsRequest", topic_names=(name,), timeout=_ms(int(timeout_s * 1000))
        )
        response = self.request(request, timeout_s=timeout_s)
        for result in response.responses:
            if int(result.error_code) != 0:
                raise KafkaBrokerError(f"DeleteTopics {name!r} failed with error {int(result.error_code)}")
        while self.partition_leaders(name):
            if time.monotonic() >= deadline:
                raise KafkaBrokerError(f"topic {name!r} is still listed at the deadline; raise timeout_s")
            time.sleep(0.05)

    def list_topics(self, timeout_s: float = 10.0) -> dict[str, int]:
        """``{topic: partition count}`` of the topics Metadata lists (internal topics included)."""
        response = self._metadata(None, None, timeout_s)
        return {str(t.name): len(t.partitions) for t in response.topics if int(t.error_code) == 0}

    def _metadata(self, topics: list[str] | None, node: KafkaNode | None, timeout_s: float) -> Any:
        from kprod.protocol.messages import metadata_request

        request = metadata_request(12, topics, allow_auto_topic_creation=False)
        port = (node or self._first_running()).ports["PLAINTEXT"]
        return _admin_request(port, request, timeout_s)

    def _first_running(self) -> KafkaNode:
        for node in self._nodes:
            if node.running:
                return node
        raise KafkaBrokerError("no Kafka node is running")

    # ----------------------------------------------------------------- internals

    def _ensure_directory(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="kprod-kafka-"))
        self._directory.mkdir(parents=True, exist_ok=True)
        return self._directory

    def _properties(self, node: KafkaNode) -> dict[str, str]:
        certs = self.certificates
        many = self._node_count >= 3
        replication = "3" if many else "1"
        min_isr = "2" if many else "1"
        voters = ",".join(f"{n.node_id}@{HOST}:{n.ports['CONTROLLER']}" for n in self._nodes)
        listeners = ",".join(f"{name}://{HOST}:{node.ports[name]}" for name in (*LISTENERS, "CONTROLLER"))
        props: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": listeners,
            "advertised.listeners": ",".join(
                f"{name}://{HOST}:{self._advertised_ports.get(name, node.ports[name])}" for name in LISTENERS
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in _PROTOCOL_OF.items()),
            "log.dirs": str(node.directory / "data"),
            "num.partitions": "1",
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.dedupe.buffer.size": "8388608",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "auto.create.topics.enable": "false",
            "auto.leader.rebalance.enable": "false",
            # Quotas measure over 2 one-second samples instead of 11: a test sees throttling after
            # a few hundred KB, not after ten seconds of traffic.
            "quota.window.num": "2",
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            # TLS (PEM, no store passwords); MTLS also asks for a client certificate.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(certs.broker_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(certs.ca),
            "listener.name.mtls.ssl.client.auth": "required",
            # SASL on both SASL listeners, every mechanism; SCRAM users are added at format time.
            "sasl.enabled.mechanisms": ",".join(_SASL_MECHANISMS),
            # ACLs: nothing denied until a test adds ACLs.
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "true",
            "super.users": "User:admin;User:ANONYMOUS",
        }
        plain_users = " ".join(f'user_{user}="{password}"' for user, password in USERS.items())
        for listener in ("sasl_plaintext", "sasl_ssl"):
            prefix = f"listener.name.{listener}"
            props[f"{prefix}.sasl.enabled.mechanisms"] = ",".join(_SASL_MECHANISMS)
            props[f"{prefix}.plain.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="admin" password="{USERS["admin"]}" {plain_users};'
            )
            for mechanism in ("scram-sha-256", "scram-sha-512"):
                props[f"{prefix}.{mechanism}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
            props[f"{prefix}.oauthbearer.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                'unsecuredLoginStringClaim_sub="admin";'
            )
        props.update(self._broker_config)
        return props

    def _write_properties(self, node: KafkaNode) -> None:
        text = "".join(f"{k}={_escape(v)}\n" for k, v in self._properties(node).items())
        (node.directory / "server.properties").write_text(text)
        (node.directory / "log4j2.properties").write_text(_LOG4J_PROPERTIES)

    def _java_argv(self, node: KafkaNode, main_class: str, *args: str) -> list[str]:
        java = _java()
        assert java is not None and self._libs is not None
        return [
            java,
            *self._jvm_options,
            f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
            "-cp",
            str(self._libs / "*"),
            main_class,
            *args,
        ]

    def _format(self, node: KafkaNode) -> subprocess.Popen[bytes]:
        scram = [
            arg
            for user, password in USERS.items()
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
        ]
        argv = self._java_argv(
            node,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={self._cluster_id}",
            "-c",
            str(node.directory / "server.properties"),
            *scram,
        )
        log = open(node.log_path, "ab")  # noqa: SIM115 - closed when the child is reaped
        try:
            log.write(f"--- kprod: {' '.join(argv)}\n".encode())
            log.flush()
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def _wait_formatted(self, node: KafkaNode, proc: subprocess.Popen[bytes], deadline: float) -> None:
        try:
            status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait()
            raise KafkaBrokerError(
                f"formatting node {node.node_id} timed out" + self._log_tail(node)
            ) from exc
        if status != 0:
            raise KafkaBrokerError(
                f"formatting node {node.node_id} failed (exit {status})" + self._log_tail(node)
            )

    def _spawn(self, node: KafkaNode) -> None:
        argv = self._java_argv(node, "kafka.Kafka", str(node.directory / "server.properties"))
        with open(node.log_path, "ab") as log:
            log.write(f"--- kprod: starting node {node.node_id}\n".encode())
            log.flush()
            try:
                node.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_pdeathsig_preexec(),
                )
            except OSError as exc:
                raise KafkaBrokerError(f"cannot run {argv[0]}: {exc}") from exc

    def _reap(self, node: KafkaNode, grace_s: float) -> None:
        proc = node.proc
        if proc is None:
            return
        if proc.poll() is None and grace_s > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
        if proc.poll() is None:
            _signal(proc, signal.SIGKILL)
            try:
                proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired as exc:
                raise KafkaBrokerError(
                    f"Kafka node {node.node_id} (pid {proc.pid}) survived SIGKILL"
                ) from exc
        node.proc = None

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout_s=5.0)

    def _log_tail(self, node: KafkaNode) -> str:
        try:
            with open(node.log_path, "rb") as f:
                f.seek(max(0, node.log_path.stat().st_size - 16384))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        tail = "\n".join("    " + line for line in lines[-_LOG_TAIL_LINES:])
        return f"\n  kafka log {node.log_path} (last {_LOG_TAIL_LINES} lines):\n{tail}"


_LOG4J_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def _random_cluster_id() -> str:
    # Kafka's Uuid.randomUuid() form: 16 random bytes in base64url without padding. Like Kafka,
    # re-roll an id that starts with "-", which command-line parsers take for an option.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _escape(value: str) -> str:
    # Java properties: a backslash escapes; values here hold no newlines.
    return value.replace("\\", "\\\\")


def _ms(value_ms: int) -> Any:
    from kprod.protocol.messages import _ms as to_timedelta

    return to_timedelta(value_ms)


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Each node leads its own session, so its process group id is its pid; only signal it while it
    # is unreaped, after which the id may belong to someone else.
    with contextlib.suppress(ProcessLookupError):
        if proc.returncode is None:
            os.killpg(proc.pid, sig)


def _admin_request(port: int, entity: Any, timeout_s: float) -> Any:
    """One request/response on a fresh blocking socket; kio encodes and decodes."""
    from kprod.protocol.messages import decode_response, encode_request, response_type

    correlation_id = 0x4B50
    frame = encode_request(entity, correlation_id=correlation_id, client_id="kprod-launcher")
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(frame)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if not 4 <= size <= 64 << 20:
            raise KafkaBrokerError(f"answer of {size} bytes from {HOST}:{port}")
        body = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", body)
    if got != correlation_id:
        raise KafkaBrokerError(
            f"answer from {HOST}:{port} has correlation id {got}, expected {correlation_id}"
        )
    offset = 4
    if entity.__flexible__ and entity.__api_key__ != 18:  # ApiVersions answers with header v0
        count = body[offset]
        if count & 0x80 or count:  # no response-header tags are defined; refuse rather than misparse
            raise KafkaBrokerError(f"answer from {HOST}:{port} carries response-header tags")
        offset += 1
    return decode_response(response_type(entity.__api_key__, entity.__version__), body, offset)
