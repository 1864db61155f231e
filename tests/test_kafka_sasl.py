"""SASL and TLS against Apache Kafka's own listeners (issue 12).

* Every combination: SSL, SSL with a client certificate, SASL_PLAINTEXT and SASL_SSL with PLAIN,
  SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER: 10,000 records each, read back by confluent-kafka
  configured with the same credentials over the same listener.
* A Java client's properties (``sasl.jaas.config``) work as they are; so do librdkafka's names.
* OIDC client credentials (KIP-768) against a token endpoint run by the test.
* Refusals fail fast (seconds, not ``max.block.ms``) with ``AuthenticationError`` naming the setting:
  wrong password, unknown user, unknown mechanism, expired token, rejected token, unknown CA, wrong
  host name, expired certificate; no secret in the message or the logs.
* KIP-368: a broker with a 3-second ``connections.max.reauth.ms`` under a 60-second load: every
  connection re-authenticates many times, 0 records lost, 0 duplicated.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kio.static.primitive import i8, i32

from helpers import consume_all
from kprod import AuthenticationError, Producer
from kprod.cli.perf import parse_properties
from kprod.kafka_broker import USERS, KafkaCluster, _java, kafka_jars, make_certificates
from kprod.protocol.messages import _request
from kprod.sasl import unsecured_jwt

pytestmark = pytest.mark.timeout(240)

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
COUNT = 10_000


def _token(sub: str = "admin", lifetime_s: int = 600) -> str:
    return unsecured_jwt({"sub": sub, "exp": int(time.time()) + lifetime_s})


def _security(
    kafka: KafkaCluster, listener: str, mechanism: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(kprod settings, confluent-kafka settings) for ``listener`` with ``mechanism``."""
    ca = str(kafka.certificates.ca)
    protocol = {"MTLS": "SSL"}.get(listener, listener)
    ours: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap(listener), "security.protocol": protocol}
    theirs: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap(listener), "security.protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        ours["ssl.truststore.location"] = ca
        theirs["ssl.ca.location"] = ca
    if listener == "MTLS":
        certs = kafka.certificates
        ours.update(
            {"ssl.keystore.location": str(certs.client_cert), "ssl.key.location": str(certs.client_key)}
        )
        theirs.update(
            {"ssl.certificate.location": str(certs.client_cert), "ssl.key.location": str(certs.client_key)}
        )
    if mechanism == "OAUTHBEARER":
        ours.update({"sasl.mechanism": mechanism, "sasl.oauthbearer.token.provider": _token})
        theirs.update(
            {
                "sasl.mechanism": mechanism,
                "enable.sasl.oauthbearer.unsecure.jwt": True,
                "sasl.oauthbearer.config": "principal=admin",
            }
        )
    elif mechanism is not None:
        creds = {"sasl.mechanism": mechanism, "sasl.username": "alice", "sasl.password": USERS["alice"]}
        ours.update(creds)
        theirs.update(creds)
    return ours, theirs


_COMBINATIONS = [("SSL", None), ("MTLS", None)] + [
    (listener, mechanism) for listener in ("SASL_PLAINTEXT", "SASL_SSL") for mechanism in MECHANISMS
]


@pytest.mark.parametrize(
    "listener, mechanism", _COMBINATIONS, ids=[f"{lst}-{m or 'tls'}" for lst, m in _COMBINATIONS]
)
def test_ten_thousand_records_through_each_listener_and_mechanism(
    kafka: KafkaCluster, listener: str, mechanism: str | None
) -> None:
    topic = f"sec-{listener}-{mechanism or 'tls'}".lower()
    kafka.create_topic(topic, partitions=3)
    ours, theirs = _security(kafka, listener, mechanism)
    values = [b"%s-%05d" % (topic.encode(), i) for i in range(COUNT)]
    with Producer(ours) as producer:
        futures = [producer.send(topic, v, key=v[-3:]) for v in values]
        producer.flush(timeout=60)
        if mechanism is not None:
            assert producer.metrics()["successful-authentication-total"] >= 1
    assert [f.exception(timeout=0) for f in futures if f.exception(timeout=0) is not None] == []
    read = consume_all(
        theirs["bootstrap.servers"], topic, 3, COUNT, timeout_s=60, linger_s=0.5, config=theirs
    )
    assert sorted(r.value or b"" for r in read) == values


def test_a_java_properties_file_works_as_it_is(kafka: KafkaCluster, tmp_path: Path) -> None:
    """``sasl.jaas.config`` for each login module, as a Java client's client.properties has it (the
    unsecured OAUTHBEARER login options of Kafka's default login handler too); the SCRAM file drives
    Java's own ProducerPerformance and ``kprod perf --producer.config`` alike."""
    kafka.create_topic("jaas", partitions=1)
    ca = kafka.certificates.ca
    modules = {
        "PLAIN": 'org.apache.kafka.common.security.plain.PlainLoginModule required username="bob" '
        f'password="{USERS["bob"]}";',
        "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule required\n"
        f'    username="bob"\n    password="{USERS["bob"]}";',
        "OAUTHBEARER": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
        'unsecuredLoginStringClaim_sub="bob" unsecuredLoginLifetimeSeconds="120";',
    }
    files: dict[str, Path] = {}
    for mechanism, jaas in modules.items():
        files[mechanism] = properties = tmp_path / f"{mechanism}.properties"
        jaas_lines = jaas.replace("\n", " \\\n")
        properties.write_text(
            f"# a Java client's file\nsecurity.protocol=SASL_SSL\nsasl.mechanism={mechanism}\n"
            f"sasl.jaas.config={jaas_lines}\nssl.truststore.type=PEM\nssl.truststore.location={ca}\nacks=all\n"
        )
        settings = {
            "bootstrap.servers": kafka.bootstrap("SASL_SSL"),
            **parse_properties(properties.read_text()),
        }
        with Producer(settings) as producer:
            metadata = producer.send("jaas", mechanism.encode()).result(timeout=30)
        assert metadata.topic == "jaas" and metadata.offset >= 0
    read = consume_all(kafka.bootstrap_servers, "jaas", 1, len(modules), timeout_s=30)
    assert [r.value for r in read] == [m.encode() for m in modules]

    kafka.create_topic("jaas-perf", partitions=1)
    perf = ["--topic", "jaas-perf", "--num-records", "2000", "--record-size", "100", "--throughput", "-1"]
    common = [
        "--bootstrap-server",
        kafka.bootstrap("SASL_SSL"),
        "--producer.config",
        str(files["SCRAM-SHA-512"]),
    ]
    java = _java()
    assert java is not None
    for argv in (
        [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_jars()}/*",
         "org.apache.kafka.tools.ProducerPerformance", *perf, *common],
        [sys.executable, "-m", "kprod.cli.main", "perf", *perf, *common],
    ):  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "2000 records sent" in result.stdout, result.stdout[-2000:]
    assert len(consume_all(kafka.bootstrap_servers, "jaas-perf", 1, 4000, timeout_s=60)) == 4000

    # The main job takes the same file; its read-back consumer gets the same credentials.
    for mechanism in ("SCRAM-SHA-512", "OAUTHBEARER"):
        demo = subprocess.run(
            [sys.executable, "-m", "kprod", "demo", "--quiet", "--num-records", "20000", "--bootstrap-servers",
             kafka.bootstrap("SASL_SSL"), "--producer.config", str(files[mechanism])],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "verified byte-exact 20,000" in demo.stdout and "result              OK" in demo.stdout


def test_librdkafka_setting_names_for_sasl(kafka: KafkaCluster) -> None:
    """A confluent-kafka user's dict: sasl.mechanisms, unsecured JWT with sasl.oauthbearer.config,
    oauth_cb with the config string."""
    kafka.create_topic("rdkafka-names", partitions=1)
    base = {"bootstrap.servers": kafka.bootstrap("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT"}
    seen: list[str] = []

    def oauth_cb(config: str) -> tuple[str, float]:
        seen.append(config)
        return _token("alice"), time.time() + 600

    for extra in (
        {"sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "bob", "sasl.password": USERS["bob"]},
        {
            "sasl.mechanisms": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": "principal=bob lifeSeconds=300",
        },
        {"sasl.mechanisms": "OAUTHBEARER", "oauth_cb": oauth_cb, "sasl.oauthbearer.config": "from=test"},
    ):
        with Producer({**base, **extra}) as producer:
            assert producer.send("rdkafka-names", b"x").result(timeout=30).offset >= 0
    assert seen == ["from=test"]


class _TokenEndpoint(http.server.BaseHTTPRequestHandler):
    """An OIDC token endpoint for the client-credentials grant (the identity provider, not a broker)."""

    requests: list[dict[str, Any]] = []  # noqa: RUF012 - shared with the test through the class

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        auth = self.headers.get("Authorization", "")
        user, _, secret = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        self.requests.append({"form": form, "client": user})
        if (user, secret) != ("kprod-client", "client-secret"):
            self._answer(401, {"error": "invalid_client"})
            return
        self._answer(200, {"access_token": _token("alice", 300), "token_type": "bearer", "expires_in": 300})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def token_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    _TokenEndpoint.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/token"
    server.shutdown()
    server.server_close()


def test_oidc_client_credentials(kafka: KafkaCluster, token_endpoint: str) -> None:
    """KIP-768: the token comes from the endpoint (grant_type=client_credentials, HTTP basic auth,
    the scope asked); wrong client credentials fail fast, naming the settings."""
    kafka.create_topic("oidc", partitions=1)
    settings = {
        "bootstrap.servers": kafka.bootstrap("SASL_PLAINTEXT"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.login.callback.handler.class": "org.apache.kafka.common.security.oauthbearer."
        "OAuthBearerLoginCallbackHandler",
        "sasl.oauthbearer.token.endpoint.url": token_endpoint,
        "sasl.jaas.config": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
        'clientId="kprod-client" clientSecret="client-secret" scope="produce";',
    }
    with Producer(settings) as producer:
        assert producer.send("oidc", b"via-oidc").result(timeout=30).offset == 0
    first = _TokenEndpoint.requests[0]
    assert first["client"] == "kprod-client"
    assert first["form"] == {"grant_type": ["client_credentials"], "scope": ["produce"]}
    assert len(_TokenEndpoint.requests) == 1  # one token for every connection while it is valid

    wrong = {**settings, "sasl.jaas.config": settings["sasl.jaas.config"].replace("client-secret", "nope")}
    started = time.monotonic()
    with Producer(wrong) as producer, pytest.raises(AuthenticationError) as info:
        producer.send("oidc", b"never")
    assert time.monotonic() - started < 10
    assert "HTTP 401" in str(info.value) and "client.secret" in str(info.value)
    assert "nope" not in str(info.value)


# ---------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def strict_kafka(kafka: KafkaCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A private node: SCRAM-SHA-256 not enabled on SASL_PLAINTEXT, sessions of 3 s (KIP-368), a
    certificate for another host name on SSL and an expired one on SASL_SSL."""
    directory = tmp_path_factory.mktemp("strict-certs")
    wrong_host = make_certificates(directory / "wrong-host", hosts=("wrong.example",))
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    expired = make_certificates(directory / "expired", valid_days=1, not_before=past)
    config = {
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512,OAUTHBEARER",
        "connections.max.reauth.ms": "3000",
        "listener.name.ssl.ssl.keystore.type": "PEM",
        "listener.name.ssl.ssl.keystore.location": str(wrong_host.broker_keystore),
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": str(expired.broker_keystore),
    }
    with KafkaCluster(broker_config=config) as cluster:
        cluster.create_topic("strict", partitions=3)
        cluster.wrong_host_ca = wrong_host.ca  # type: ignore[attr-defined]
        cluster.expired_ca = expired.ca  # type: ignore[attr-defined]
        yield cluster


def _refused(settings: dict[str, Any], caplog: pytest.LogCaptureFixture, secret: str | None = None) -> str:
    """send() on a producer the cluster refuses: AuthenticationError within 10 s (not max.block.ms=60 s)."""
    caplog.set_level(logging.DEBUG, logger="kprod")
    started = time.monotonic()
    with Producer(settings) as producer, pytest.raises(AuthenticationError) as info:
        producer.send("strict", b"never").result(timeout=60)
    took = time.monotonic() - started
    assert took < 10, f"a refusal took {took:.1f} s: it must not be retried until a timeout"
    assert not info.value.retriable
    if secret is not None:
        assert secret not in str(info.value) and secret not in caplog.text
    return str(info.value)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_a_wrong_password_fails_fast(strict_kafka: KafkaCluster, mechanism: str, caplog: Any) -> None:
    settings = {
        "bootstrap.servers": strict_kafka.bootstrap("SASL_PLAINTEXT"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": "alice",
        "sasl.password": "Wrong-Password-123",
    }
    text = _refused(settings, caplog, secret="Wrong-Password-123")
    assert mechanism in text and "sasl.password" in text and "alice" in text
    assert "Authentication failed" in text  # what the broker answered


def test_an_unknown_user_fails_fast(strict_kafka: KafkaCluster, caplog: Any) -> None:
    settings = {
        "bootstrap.servers": strict_kafka.bootstrap("SASL_PLAINTEXT"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "mallory",
        "sasl.password": "Whatever-456",
    }
    assert "mallory" in _refused(settings, caplog, secret="Whatever-456")


def test_a_mechanism_the_listener_does_not_enable_fails_fast(strict_kafka: KafkaCluster, caplog: Any) -> None:
    settings = {
        "bootstrap.servers": strict_kafka.bootstrap("SASL_PLAINTEXT"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": USERS["alice"],
    }
    text = _refused(settings, caplog)
    assert (
        "SCRAM-SHA-256" in text and "PLAIN, SCRAM-SHA-512, OAUTHBEARER" in text and "sasl.mechanism" in text
    )


def test_an_expired_or_refused_token_fails_fast(strict_kafka: KafkaCluster, caplog: Any) -> None:
    base = {
        "bootstrap.servers": strict_kafka.bootstrap("SASL_PLAINTEXT"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
    }
    # The provider says the token is valid, the broker reads its exp claim: refused, with its JSON status.
    stale = unsecured_jwt({"sub": "admin", "exp": int(time.time()) - 60})
    text = _refused({**base, "oauth_cb": lambda: (stale, time.time() + 600)}, caplog)
    assert "invalid_token" in text and "OAUTHBEARER" in text and "token" in text
    # A token kprod can see is expired is not even sent.
    text = _refused({**base, "sasl.oauthbearer.token.provider": lambda: stale}, caplog)
    assert "expired" in text


def test_a_certificate_for_another_host_fails_fast(strict_kafka: KafkaCluster, caplog: Any) -> None:
    settings = {
        "bootstrap.servers": strict_kafka.bootstrap("SSL"),
        "security.protocol": "SSL",
        "ssl.truststore.location": str(strict_kafka.wrong_host_ca),  # type: ignore[attr-defined]
    }
    text = _refused(settings, caplog)
    assert "ssl.endpoint.identification.algorithm" in text and "mismatch" in text.lower(), text
    # With host name checks off (as the setting says), the same certificate is accepted.
    with Producer({**settings, "ssl.endpoint.identification.algorithm": ""}) as producer:
        assert producer.send("strict", b"no-host-check").result(timeout=30).offset >= 0


def test_an_expired_certificate_fails_fast(strict_kafka: KafkaCluster, caplog: Any) -> None:
    settings = {
        "bootstrap.servers": strict_kafka.bootstrap("SASL_SSL"),
        "security.protocol": "SASL_SSL",
        "ssl.truststore.location": str(strict_kafka.expired_ca),  # type: ignore[attr-defined]
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": USERS["alice"],
    }
    text = _refused(settings, caplog)
    assert "expired" in text and "ssl.truststore.location" in text, text


def test_an_unknown_ca_fails_fast(strict_kafka: KafkaCluster, kafka: KafkaCluster, caplog: Any) -> None:
    settings = {
        "bootstrap.servers": kafka.bootstrap("SSL"),
        "security.protocol": "SSL",
        "ssl.truststore.location": str(strict_kafka.wrong_host_ca),  # type: ignore[attr-defined]
    }
    text = _refused(settings, caplog)
    assert "CERTIFICATE_VERIFY_FAILED" in text and "ssl.truststore.location" in text, text


def test_reauthentication_under_load_loses_and_duplicates_nothing(strict_kafka: KafkaCluster) -> None:
    """KIP-368: sessions of 3 s, 60 s of load through SCRAM-SHA-512 with idempotence off (a duplicate
    would show): each connection re-authenticates about every 2.7 s between requests."""
    strict_kafka.create_topic("reauth", partitions=3)
    settings = {
        "bootstrap.servers": strict_kafka.bootstrap("SASL_PLAINTEXT"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": USERS["alice"],
        "enable.idempotence": False,
        "acks": "all",
        "linger.ms": 5,
    }
    sent = 0
    deadline = time.monotonic() + 60
    with Producer(settings) as producer:
        failures: list[BaseException] = []

        def record(_metadata: object, error: BaseException | None) -> None:
            if error is not None:
                failures.append(error)

        while time.monotonic() < deadline and sent < 400_000:
            for _ in range(100):  # about 5,000 records/s: the load lasts the whole minute
                producer.send("reauth", b"%08d" % sent, on_delivery=record)
                sent += 1
            time.sleep(0.02)
        producer.flush(timeout=60)
        metrics = producer.metrics()
    assert failures == []
    assert metrics["successful-reauthentication-total"] >= 20, metrics
    assert metrics["failed-reauthentication-total"] == 0
    read = consume_all(strict_kafka.bootstrap_servers, "reauth", 3, sent, timeout_s=90, linger_s=1.0)
    values = [r.value for r in read]
    assert len(values) == sent and len(set(values)) == sent  # 0 lost, 0 duplicated


def _scram_credentials(kafka: KafkaCluster, user: str, password: str | None) -> None:
    """Create (password) or delete (None) ``user``'s SCRAM-SHA-512 credential (AlterUserScramCredentials)."""
    api = 51
    mechanism = i8(2)  # SCRAM-SHA-512
    if password is None:
        change: dict[str, Any] = {
            "deletions": (_request(api, 0, "ScramCredentialDeletion", name=user, mechanism=mechanism),),
            "upsertions": (),
        }
    else:
        salt = os.urandom(16)
        salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 4096)
        upsertion = _request(
            api, 0, "ScramCredentialUpsertion", name=user, mechanism=mechanism, iterations=i32(4096),
            salt=salt, salted_password=salted,
        )  # fmt: skip
        change = {"deletions": (), "upsertions": (upsertion,)}
    answer = kafka.request(_request(api, 0, "AlterUserScramCredentialsRequest", **change))
    assert [int(r.error_code) for r in answer.results] == [0], answer


def test_credentials_revoked_while_producing_fail_the_waiting_records_fast(
    strict_kafka: KafkaCluster,
) -> None:
    """A SCRAM user deleted on the broker while its producer runs: the next re-authentication (sessions
    of 3 s) is refused, and records sent from then on fail within seconds with AuthenticationError,
    not after delivery.timeout.ms (120 s); records acknowledged before stay acknowledged."""
    _scram_credentials(strict_kafka, "carol", "carol-secret-1")
    time.sleep(1)  # the credential reaches the broker through the metadata log
    settings = {
        "bootstrap.servers": strict_kafka.bootstrap("SASL_PLAINTEXT"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "carol",
        "sasl.password": "carol-secret-1",
        "enable.idempotence": False,
        "acks": 1,
    }
    with Producer(settings) as producer:
        before = [producer.send("strict", b"before-%d" % i) for i in range(100)]
        assert all(f.result(timeout=30).offset >= 0 for f in before)
        _scram_credentials(strict_kafka, "carol", None)
        deadline = time.monotonic() + 20
        error: BaseException | None = None
        while error is None and time.monotonic() < deadline:
            started = time.monotonic()
            future = producer.send("strict", b"after")
            try:
                future.result(timeout=15)
            except AuthenticationError as exc:
                error = exc
                took = time.monotonic() - started
            else:
                time.sleep(0.2)  # the session still stands: the broker has not asked yet
        assert error is not None, "records kept going after the credential was deleted"
        assert took < 5, f"a record waited {took:.1f} s after the refusal"
        assert "carol" in str(error) and "SCRAM-SHA-512" in str(error)
        assert "carol-secret-1" not in str(error)
        assert (
            producer.metrics()["failed-reauthentication-total"]
            + producer.metrics()["failed-authentication-total"]
            >= 1
        )
