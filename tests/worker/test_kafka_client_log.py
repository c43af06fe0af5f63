"""kafka-python's log records: silent during start-up, JSON afterwards, and read for a failed connection's cause.

The records are made the way kafka-python logs them (``Bootstrap connection to %s failed: %s``, with the
exception as an argument, and the TLS error as the exception's context); the live cases run against Apache
Kafka in tests/integration/test_security.py.
"""

from __future__ import annotations

import logging
import ssl

from kafka import errors as kafka_errors

from worker.kafka_client_log import KafkaClientLog, connection_cause


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[int, str, dict]] = []

    def log(self, level: int, event: str, **fields: object) -> None:
        self.events.append((level, event, fields))


def record(level: int, exc: BaseException, name: str = "kafka.net.manager") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "Bootstrap connection to %s failed: %s (backoff %.2f secs)",
                             ("bootstrap-0", exc, 0.1), None)


def handshake_failure(tls_error: ssl.SSLError) -> kafka_errors.KafkaConnectionError:
    """As kafka-python raises it: inside the ``except`` of the TLS handshake, so the TLS error is the context."""
    try:
        raise tls_error
    except ssl.SSLError as caught:
        try:
            raise kafka_errors.KafkaConnectionError(f"Handshake failed: {caught}")
        except kafka_errors.KafkaConnectionError as wrapped:
            return wrapped


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.verify_code, error.verify_message = code, message
    return error


def test_nothing_is_shown_before_start_then_errors_are_json_events() -> None:
    handler, recorder = KafkaClientLog(), Recorder()
    handler.configure(recorder, logging.ERROR)
    handler.emit(record(logging.ERROR, kafka_errors.KafkaConnectionError("socket disconnected")))
    assert recorder.events == []
    handler.started()
    handler.emit(record(logging.WARNING, kafka_errors.KafkaConnectionError("socket disconnected")))
    handler.emit(record(logging.ERROR, kafka_errors.KafkaConnectionError("socket disconnected")))
    [(level, event, fields)] = recorder.events
    assert (level, event, fields["logger"]) == (logging.ERROR, "kafka_client", "kafka.net.manager")
    assert "socket disconnected" in fields["message"]


def test_a_refusal_is_kept_over_the_dropped_connections_and_the_final_timeout() -> None:
    handler = KafkaClientLog()
    handler.configure(Recorder(), logging.ERROR)
    refused = kafka_errors.SaslAuthenticationFailedError("Authentication failed: Invalid username or password")
    for exc in (refused, kafka_errors.KafkaConnectionError("socket disconnected"),
                kafka_errors.KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9093")):
        handler.emit(record(logging.WARNING, exc))
    assert handler.last_failure is refused


def test_each_cause_names_its_option() -> None:
    refused = connection_cause(kafka_errors.SaslAuthenticationFailedError("Invalid username or password"), "SASL_SSL")
    assert "SASL authentication failed" in refused and "--sasl-password-file" in refused
    foreign = connection_cause(handshake_failure(verify_error(20, "unable to get local issuer certificate")), "SSL")
    assert "cannot be verified" in foreign and "--ssl-cafile" in foreign
    other_host = connection_cause(handshake_failure(verify_error(64, "IP address mismatch")), "SSL")
    assert "not valid for this host" in other_host
    plaintext = connection_cause(handshake_failure(ssl.SSLError(1, "UNEXPECTED_EOF_WHILE_READING")), "SSL")
    assert "TLS handshake failed" in plaintext and "--security-protocol" in plaintext
    nobody = connection_cause(kafka_errors.KafkaConnectionError("111 ECONNREFUSED"), "PLAINTEXT")
    assert "connection refused" in nobody and "--bootstrap-servers" in nobody
    dropped = kafka_errors.KafkaConnectionError("socket disconnected")
    assert "SASL authentication" in connection_cause(dropped, "SASL_SSL")
    assert "--security-protocol matches" in connection_cause(dropped, "PLAINTEXT")
