"""TLS for broker connections: the ``ssl.SSLContext`` built from the ``ssl.*`` settings.

Owns the translation of Kafka's (and librdkafka's) TLS settings into one context per producer,
built once when the producer starts so that a wrong path or password fails at construction with
the setting named, never later on the I/O thread. Knows nothing of connections.
"""

from __future__ import annotations

import os
import ssl
import tempfile

from kprod.config import ProducerConfig
from kprod.errors import ConfigError

__all__ = ["ssl_context"]

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def ssl_context(config: ProducerConfig) -> ssl.SSLContext | None:
    """The TLS context for ``security.protocol`` SSL and SASL_SSL, or None for the others.

    :raises ConfigError: naming the setting whose file or PEM cannot be loaded (secrets are never
        part of the message).
    """
    if config.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if config.ssl_truststore_location:
            context.load_verify_locations(cafile=config.ssl_truststore_location)
        if config.ssl_truststore_certificates:
            context.load_verify_locations(cadata=config.ssl_truststore_certificates)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the trusted CA certificates (ssl.truststore.location / ssl.ca.location / "
            f"ssl.truststore.certificates): {exc}",
            stage="connection",
        ) from None
    _load_client_certificate(context, config)
    context.check_hostname = config.ssl_endpoint_identification_algorithm == "https"
    versions = sorted(_VERSIONS[v] for v in config.ssl_enabled_protocols)
    context.minimum_version, context.maximum_version = versions[0], versions[-1]
    if config.ssl_cipher_suites:
        try:
            context.set_ciphers(config.ssl_cipher_suites)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"ssl.cipher.suites={config.ssl_cipher_suites!r}: {exc}", stage="connection"
            ) from None
    return context


def _load_client_certificate(context: ssl.SSLContext, config: ProducerConfig) -> None:
    """Mutual TLS: a PEM keystore file (key and chain, or with ssl.key.location) or inline PEM."""
    password = config.ssl_key_password
    try:
        if config.ssl_keystore_location:
            context.load_cert_chain(config.ssl_keystore_location, config.ssl_key_location, password)
        elif config.ssl_keystore_certificate_chain and config.ssl_keystore_key:
            # The ssl module loads certificates from files only: a private temporary file, removed at once.
            fd, path = tempfile.mkstemp(prefix="kprod-keystore-", suffix=".pem")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(config.ssl_keystore_key.strip() + "\n" + config.ssl_keystore_certificate_chain)
                context.load_cert_chain(path, None, password)
            finally:
                os.unlink(path)
        elif config.ssl_key_location:
            raise ConfigError(
                "ssl.key.location is set without a certificate: set ssl.keystore.location "
                "(or librdkafka's ssl.certificate.location) to the client certificate",
                stage="connection",
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "cannot load the client certificate and key (ssl.keystore.location / ssl.certificate.location, "
            f"ssl.key.location, ssl.keystore.certificate.chain + ssl.keystore.key, ssl.key.password): {exc}",
            stage="connection",
        ) from None
