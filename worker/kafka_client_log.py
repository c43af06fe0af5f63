"""kafka-python's own log records: kept out of the start-up, structured afterwards, and read for a failure's cause.

kafka-python retries a failing connection until its bootstrap timeout and then raises a bare
``KafkaTimeoutError('Unable to bootstrap ...')``; why each attempt failed (refused, a TLS certificate,
a SASL password) is only in the records it logs on the way. This module is the one place that reads
those records: a handler on the ``kafka`` logger remembers the last connection failure for the
start-up error (:func:`connection_cause`) and, once the worker has started, renders the records as
JSON lines through structlog instead of plain text in the middle of them. During start-up they are
not shown at all: the start-up error names the cause in one line.
"""

from __future__ import annotations

import errno
import logging
import ssl
from typing import Any

from kafka import errors as kafka_errors

# OpenSSL's verification results for a certificate that does not name the host connected to.
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


class KafkaClientLog(logging.Handler):
    """Installed on the ``kafka`` logger by :func:`worker.logging_setup.configure_logging`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last_failure: BaseException | None = None
        self.show_from = logging.CRITICAL + 1  # nothing is shown until the worker has started
        self.started_level = logging.ERROR
        self.log: Any = None

    def configure(self, log: Any, level: int) -> None:
        """Where records go once started, and from which level (everything when the worker logs at debug)."""
        self.log, self.started_level = log, level
        self.last_failure = None
        self.show_from = logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL + 1

    def started(self) -> None:
        """Start-up is over: client records at the configured level are logged from now on."""
        self.show_from = self.started_level

    def emit(self, record: logging.LogRecord) -> None:
        failure = next((arg for arg in _args(record) if isinstance(arg, BaseException)), None)
        # The final "Unable to bootstrap" timeout says nothing new: the attempt before it says why. A broker
        # that refused a password or a certificate may only drop the next attempts: the refusal is kept.
        if failure is not None and record.levelno >= logging.WARNING \
                and not isinstance(failure, kafka_errors.KafkaTimeoutError) \
                and (_specific(failure) or not _specific(self.last_failure)):
            self.last_failure = failure
        if record.levelno >= self.show_from and self.log is not None:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record must not break the worker's logging
                message = str(record.msg)
            self.log.log(record.levelno, "kafka_client", logger=record.name, message=message)


def _args(record: logging.LogRecord) -> tuple[Any, ...]:
    args = record.args
    if isinstance(args, tuple):
        return args
    return () if args is None else (args,)


def _specific(failure: BaseException | None) -> bool:
    """A refused password or a failed TLS handshake: says more than any later dropped connection."""
    return isinstance(failure, kafka_errors.SaslAuthenticationFailedError) or (
        failure is not None and isinstance(failure.__context__, ssl.SSLError))


CLIENT_LOG = KafkaClientLog()


def connection_cause(failure: BaseException, protocol: str) -> str:
    """What a connection failure over ``protocol`` means, in words that name the option to fix."""
    text = str(failure)
    if isinstance(failure, kafka_errors.SaslAuthenticationFailedError):
        detail = text.split(": ", 2)[-1] if ": " in text else text
        return (f"SASL authentication failed ({detail}): check --sasl-username, --sasl-mechanism and the password "
                "(--sasl-password-file)")
    tls = failure.__context__ if isinstance(failure.__context__, ssl.SSLError) else None
    if isinstance(tls, ssl.SSLCertVerificationError):
        if tls.verify_code in _NAME_MISMATCH:
            return (f"the broker's TLS certificate is not valid for this host ({tls.verify_message}): connect with a "
                    "name in the certificate (--bootstrap-servers) or give the broker a certificate for this name")
        return (f"the broker's TLS certificate cannot be verified ({tls.verify_message}): --ssl-cafile must hold "
                "the CA that signed it")
    if tls is not None:
        reason = getattr(tls, "reason", None) or tls  # OpenSSL's short name, when OpenSSL raised it
        return (f"the TLS handshake failed ({reason}): check that --security-protocol matches the listener and the "
                "client certificate and key (--ssl-certfile, --ssl-keyfile)")
    if "ECONNREFUSED" in text or errno.errorcode.get(getattr(failure, "errno", None) or 0) == "ECONNREFUSED":
        return ("connection refused, nothing listens there: check --bootstrap-servers, or start a local broker with "
                "`lstm-worker broker`")
    dropped = isinstance(failure, (kafka_errors.KafkaConnectionError, kafka_errors.InvalidReceiveError))
    if dropped and protocol.startswith("SASL"):
        # Apache Kafka often refuses a SCRAM password by closing the connection before its error reaches the client.
        return (f"the broker closed the connection ({text}), as it does on a failed SASL authentication: check "
                "--sasl-username, --sasl-mechanism and the password (--sasl-password-file), and that "
                "--security-protocol matches the listener")
    if dropped:
        return (f"the broker closed the connection ({text}): check that --security-protocol matches the listener "
                "(PLAINTEXT, SSL, SASL_SSL)")
    return f"{type(failure).__name__}: {text}: check --bootstrap-servers and that the brokers are up"
