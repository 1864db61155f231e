"""TLS (``security.protocol=SSL``) against Apache Kafka's SSL and mutual-TLS listeners, and ACLs for
the principal a client certificate gives (``User:CN=client``).

Read back by confluent-kafka over PLAINTEXT. SASL, and TLS refusals, are in test_kafka_sasl.py.
"""

from __future__ import annotations

import time

import pytest
from kio.static.primitive import i8

from helpers import consume_all
from kprod import ConfigError, KafkaError, KprodError, Producer
from kprod.kafka_broker import KafkaCluster, make_certificates
from kprod.protocol.messages import _request

pytestmark = pytest.mark.timeout(120)


def _tls(kafka: KafkaCluster, listener: str, **extra: object) -> dict[str, object]:
    return {
        "bootstrap.servers": kafka.bootstrap(listener),
        "security.protocol": "SSL",
        "ssl.truststore.location": str(kafka.certificates.ca),
        **extra,
    }


def test_records_travel_over_tls(kafka: KafkaCluster) -> None:
    kafka.create_topic("tls", partitions=3)
    values = [b"tls-%05d" % i for i in range(5_000)]
    with Producer(_tls(kafka, "SSL")) as producer:
        futures = [producer.send("tls", v, key=v[-2:]) for v in values]
        producer.flush(timeout=60)
    assert all(f.exception(timeout=0) is None for f in futures)
    read = consume_all(kafka.bootstrap_servers, "tls", 3, len(values), timeout_s=60, linger_s=0.5)
    assert sorted(r.value or b"" for r in read) == values


def test_mutual_tls_with_librdkafka_setting_names(kafka: KafkaCluster) -> None:
    kafka.create_topic("mtls", partitions=1)
    certs = kafka.certificates
    settings = {
        "bootstrap.servers": kafka.bootstrap("MTLS"),
        "security.protocol": "SSL",
        "ssl.ca.location": str(certs.ca),
        "ssl.certificate.location": str(certs.client_cert),
        "ssl.key.location": str(certs.client_key),
    }
    with Producer(settings) as producer:
        assert producer.send("mtls", b"hello").result(timeout=30).offset == 0


def test_an_untrusted_broker_certificate_is_refused_with_the_setting_named(
    kafka: KafkaCluster, tmp_path: object
) -> None:
    from pathlib import Path

    other = make_certificates(Path(str(tmp_path)))  # a CA that did not sign the broker's certificate
    settings = _tls(kafka, "SSL", **{"ssl.truststore.location": str(other.ca), "max.block.ms": 2_000})
    with Producer(settings) as producer:
        started = time.monotonic()
        with pytest.raises(KprodError) as info:
            producer.send("tls", b"never")
        assert time.monotonic() - started < 10
    text = str(info.value)
    assert "CERTIFICATE_VERIFY_FAILED" in text and "ssl.truststore.location" in text, text


def test_bad_tls_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"ssl\.truststore\.location"):
        Producer(
            {
                "bootstrap.servers": "127.0.0.1:1",
                "security.protocol": "SSL",
                "ssl.ca.location": "/nonexistent.pem",
            }
        )
    with pytest.raises(ConfigError, match="keytool"):
        Producer({"bootstrap.servers": "127.0.0.1:1", "ssl.keystore.type": "JKS"})
    with pytest.raises(ConfigError, match="GSSAPI"):  # Java's default mechanism, which kprod lacks
        Producer({"bootstrap.servers": "127.0.0.1:1", "security.protocol": "SASL_SSL"})


def test_a_topic_the_certificate_principal_may_not_write_fails_fast(kafka: KafkaCluster) -> None:
    """ACLs (StandardAuthorizer): User:CN=client is denied WRITE on one topic; records for it fail
    at once with TOPIC_AUTHORIZATION_FAILED, records for another topic still go."""
    kafka.create_topic("acl-denied", partitions=1)
    kafka.create_topic("acl-open", partitions=1)
    _deny(kafka, resource_type=2, name="acl-denied", operation=4)  # TOPIC, WRITE
    time.sleep(1)  # ACLs reach the authorizer through the metadata log
    certs = kafka.certificates
    settings = _tls(
        kafka,
        "MTLS",
        **{
            "ssl.keystore.location": str(certs.client_cert),
            "ssl.key.location": str(certs.client_key),
            "enable.idempotence": False,
            "acks": 1,
        },
    )
    with Producer(settings) as producer:
        started = time.monotonic()
        with pytest.raises(KafkaError) as info:
            producer.send("acl-denied", b"no")
        took = time.monotonic() - started
        assert info.value.name == "TOPIC_AUTHORIZATION_FAILED", repr(info.value)
        assert "grant it WRITE" in str(info.value) and info.value.stage == "metadata"
        assert took < 10, f"an authorization failure took {took:.1f} s: it must not be retried"
        assert producer.send("acl-open", b"yes").result(timeout=30).offset == 0


def test_denying_idempotent_write_alone_does_not_stop_an_idempotent_producer(kafka: KafkaCluster) -> None:
    """KIP-679 (Kafka 3.0+): WRITE on a topic is enough for InitProducerId; a DENY on the cluster's
    IdempotentWrite alone changes nothing. CLUSTER_AUTHORIZATION_FAILED then only comes with no
    WRITE anywhere, when the topic is refused first (see the test above)."""
    kafka.create_topic("acl-idempotent", partitions=1)
    create_acls = 30  # api key
    deny = _request(
        create_acls,
        3,
        "AclCreation",
        resource_type=i8(4),  # CLUSTER
        resource_name="kafka-cluster",
        resource_pattern_type=i8(3),  # LITERAL
        principal="User:CN=client",
        host="*",
        operation=i8(12),  # IDEMPOTENT_WRITE
        permission_type=i8(2),  # DENY
    )
    assert [
        int(r.error_code)
        for r in kafka.request(_request(create_acls, 3, "CreateAclsRequest", creations=(deny,))).results
    ] == [0]
    time.sleep(1)
    certs = kafka.certificates
    settings = _tls(
        kafka,
        "MTLS",
        **{"ssl.keystore.location": str(certs.client_cert), "ssl.key.location": str(certs.client_key)},
    )
    with Producer(settings) as producer:
        metadata = producer.send("acl-idempotent", b"still idempotent").result(timeout=30)
        assert metadata.offset == 0 and producer.metrics()["producer-id"] >= 0


def _deny(kafka: KafkaCluster, resource_type: int, name: str, operation: int) -> None:
    """CreateAcls: DENY ``operation`` on the literal resource for the client certificate's principal."""
    create_acls = 30  # api key
    deny = _request(
        create_acls,
        3,
        "AclCreation",
        resource_type=i8(resource_type),
        resource_name=name,
        resource_pattern_type=i8(3),  # LITERAL
        principal="User:CN=client",
        host="*",
        operation=i8(operation),
        permission_type=i8(2),  # DENY
    )
    answer = kafka.request(_request(create_acls, 3, "CreateAclsRequest", creations=(deny,)))
    assert [int(r.error_code) for r in answer.results] == [0]
