"""The ``server.properties`` of a one-node KRaft test broker, and its log4j2 configuration.

Listeners, each on its own loopback port: PLAINTEXT, SSL (client certificates requested, not required),
SASL_SSL (SCRAM-SHA-512 and PLAIN) for clients, SSL_WRONG_HOST (TLS with a certificate for another host name,
which hostname verification must refuse); INTERNAL (inter-broker: the transaction coordinator writes its
markers through it) and CONTROLLER, both SASL_PLAINTEXT as the user ``broker``, so that with the authorizer on the
broker is a named super user rather than ``User:ANONYMOUS``, which every PLAINTEXT client also is. With
``oauth`` set, one more: SASL_OAUTH (SASL_SSL, OAUTHBEARER only), whose tokens Kafka's own validator checks
against an OIDC issuer's JWKS, and which makes every client re-authenticate (KIP-368) as often as ``reauth_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devtools.kafka_tls import TestCertificates

HOST = "127.0.0.1"
CLIENT_LISTENERS = ("PLAINTEXT", "SSL", "SASL_SSL", "SSL_WRONG_HOST")
OAUTH_LISTENER = "SASL_OAUTH"
OAUTH_VALIDATOR = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
# Kafka 4 fetches a JWKS (or a token) only from URLs this JVM system property lists.
ALLOWED_URLS_PROPERTY = "org.apache.kafka.sasl.oauthbearer.allowed.urls"
BROKER_USER = "broker"
ADMIN_USER = "admin"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"

# What makes one node a fast test broker: internal topics that one replica satisfies and that are small to
# create, no wait for more members before a group's first rebalance, session timeouts as short as tests use,
# and records as large as the test producer sends (the Java default is about 1 MB).
TEST_BROKER_SETTINGS = {
    "offsets.topic.replication.factor": 1,
    "offsets.topic.num.partitions": 5,
    "transaction.state.log.replication.factor": 1,
    "transaction.state.log.min.isr": 1,
    "transaction.state.log.num.partitions": 5,
    "share.coordinator.state.topic.replication.factor": 1,
    "share.coordinator.state.topic.min.isr": 1,
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
    "num.partitions": 1,
    "message.max.bytes": 8_388_608,
    "num.network.threads": 2,
    "num.io.threads": 4,
    "log.cleaner.dedupe.buffer.size": 8_388_608,
}


@dataclass(frozen=True)
class OAuthValidation:
    """Whose tokens the SASL_OAUTH listener accepts, and how long an authenticated session lives."""

    jwks_url: str
    issuer: str
    audience: str
    reauth_ms: int  # connections.max.reauth.ms: a session is re-validated (a fresh token) at least this often


@dataclass(frozen=True)
class BrokerLayout:
    """Where one broker listens and keeps its files, and who may log in."""

    ports: dict[str, int]  # listener name -> port: CLIENT_LISTENERS, INTERNAL, CONTROLLER
    data_dir: Path
    log_dir: Path
    tls: TestCertificates
    users: dict[str, str]  # client users (SCRAM and PLAIN alike) -> password
    broker_password: str
    authorizer: bool
    oauth: OAuthValidation | None = None


def client_listeners(oauth: bool) -> tuple[str, ...]:
    return (*CLIENT_LISTENERS, OAUTH_LISTENER) if oauth else CLIENT_LISTENERS


def _oauth_properties(oauth: OAuthValidation) -> dict[str, object]:
    listener = f"listener.name.{OAUTH_LISTENER.lower()}"
    return {
        f"{listener}.sasl.enabled.mechanisms": "OAUTHBEARER",
        f"{listener}.oauthbearer.sasl.jaas.config":
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
        f"{listener}.oauthbearer.sasl.server.callback.handler.class": OAUTH_VALIDATOR,
        "connections.max.reauth.ms": oauth.reauth_ms,
        "sasl.oauthbearer.jwks.endpoint.url": oauth.jwks_url,
        "sasl.oauthbearer.expected.issuer": oauth.issuer,
        "sasl.oauthbearer.expected.audience": oauth.audience,
    }


def _plain_login(users: dict[str, str], login_as: tuple[str, str] | None = None) -> str:
    own = f' username="{login_as[0]}" password="{login_as[1]}"' if login_as else ""
    accepted = "".join(f' user_{name}="{password}"' for name, password in users.items())
    return f"org.apache.kafka.common.security.plain.PlainLoginModule required{own}{accepted};"


def server_properties(layout: BrokerLayout) -> dict[str, object]:
    ports = layout.ports
    broker_login = _plain_login({BROKER_USER: layout.broker_password}, (BROKER_USER, layout.broker_password))
    properties: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.bootstrap.servers": f"{HOST}:{ports['CONTROLLER']}",
        "listeners": ",".join(f"{name}://{HOST}:{port}" for name, port in ports.items()),
        "advertised.listeners": ",".join(f"{name}://{HOST}:{ports[name]}"
                                         for name in (*client_listeners(layout.oauth is not None), "INTERNAL")),
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,SSL_WRONG_HOST:SSL,"
                                          "INTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
                                          + (f",{OAUTH_LISTENER}:SASL_SSL" if layout.oauth else ""),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "INTERNAL",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": broker_login,
        "listener.name.internal.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.internal.plain.sasl.jaas.config": broker_login,
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": _plain_login(layout.users),
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.ssl.ssl.client.auth": "requested",
        "listener.name.ssl_wrong_host.ssl.keystore.type": "PEM",
        "listener.name.ssl_wrong_host.ssl.keystore.location": layout.tls.wrong_host_keystore,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": layout.tls.broker_keystore,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": layout.tls.ca_cert,
        "log.dirs": layout.data_dir,
        **TEST_BROKER_SETTINGS,
    }
    if layout.oauth is not None:
        properties |= _oauth_properties(layout.oauth)
    if layout.authorizer:
        properties |= {
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "super.users": f"User:{BROKER_USER};User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
        }
    return properties


def write_properties(path: Path, properties: dict[str, object]) -> Path:
    # Backslashes are escapes in a .properties file; none of these values needs one.
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    return path


def write_log4j2(path: Path, log_file: Path) -> Path:
    """The broker logs to ``log_file`` only (INFO, WARN and ERROR), never to the terminal."""
    path.write_text(
        "status = warn\n"
        "appender.file.type = File\n"
        "appender.file.name = file\n"
        f"appender.file.fileName = {log_file}\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.file.ref = file\n"
        # The request and state-change chatter is per request; warnings still come through.
        "logger.state.name = state.change.logger\n"
        "logger.state.level = WARN\n"
        "logger.request.name = kafka.request.logger\n"
        "logger.request.level = WARN\n"
    )
    return path
