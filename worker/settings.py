"""Worker configuration: built and validated once at start-up into a frozen object.

Everything downstream receives a :class:`WorkerSettings`; nothing reads the
environment or CLI again. Validation errors are ``click.BadParameter`` naming
the option, so the CLI prints one clear line.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from worker.oauth_token import OidcClientCredentials

INPUT_FORMATS = ("auto", "text", "json")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
ASSIGNMENT_STRATEGIES = ("range", "roundrobin", "cooperative-sticky")
# Where a group reads a partition it has no committed offset for (kafka-python's auto_offset_reset).
START_POSITIONS = ("earliest", "latest")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
PASSWORD_ENV = "LSTM_WORKER_SASL_PASSWORD"


def default_output_topic(topic: str) -> str:
    return f"{topic}.labels"


def default_dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def default_transactional_id(group_id: str, hostname: str, slot: int | None) -> str:
    """Unique among live workers and, where possible, stable across restarts: host plus per-host slot.

    Under Kubernetes the hostname is the pod name (stable under a StatefulSet) and
    the slot is 0; two workers on one machine get slots 0 and 1. Without a slot
    (no writable temporary directory) the process id keeps it unique, not stable.
    See docs/worker.md (Exactly-once mode).
    """
    return f"{group_id}-{hostname}-{slot if slot is not None else f'pid{os.getpid()}'}"


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # never logged
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    oauth: OidcClientCredentials | None = None  # with OAUTHBEARER only

    def client_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments for this security setup."""
        config: dict[str, Any] = {"security_protocol": self.protocol}
        if self.oauth is not None:
            from worker.oauth_token import token_provider

            config.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=token_provider(self.oauth))
        elif self.protocol.startswith("SASL"):
            config.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                          sasl_plain_password=self.sasl_password)
        if self.protocol.endswith("SSL"):
            config.update(ssl_cafile=self.ssl_cafile, ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile)
        return config


@dataclass(frozen=True)
class WorkerSettings:
    topic: str
    model: Path  # a bundle, or a model store whose CURRENT is served and watched
    model_poll_s: float = 10.0
    # A candidate scoring a share of the batches beside the primary, in metrics (and --shadow-topic) only.
    shadow_model: Path | None = None
    shadow_sample: float = 1.0
    shadow_topic: str | None = None
    # Labels whose top score is below min_confidence go to review_topic (or carry low_confidence: true).
    min_confidence: float = 0.0
    review_topic: str | None = None
    # Labels in the sliding window the drift gauges compare with the bundle's reference (worker/drift.py).
    drift_window: int = 1000
    # > 0: each label carries the K tokens that raised its probability most (worker/explanations.py).
    explain: int = 0
    bootstrap_servers: tuple[str, ...] = ("localhost:9092",)
    group_id: str = "lstm-worker"
    output_topic: str = ""
    dlq_topic: str = ""
    batch_size: int = 256
    max_wait_ms: int = 20
    max_batch_tokens: int = 65536
    # One ONNX Runtime call inside a batch: at most this many rows (0 = the engine's choice) and padded tokens.
    rows_per_call: int = 0
    tokens_per_call: int = 16384
    provider: str = "auto"
    threads: int = 0
    input_format: str = "auto"
    text_field: str = "text"
    top_k: int = 3
    max_message_bytes: int = 1_000_000
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"
    liveness_timeout_s: float = 30.0
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 60_000
    assignment_strategy: str = "range"
    # Set by `lstm-worker replay` only: every label names the job, so a replayed label can be told from a live one.
    replay_job: str = ""
    # A partition without a committed offset (a new group, or one deleted by retention) starts here; a committed
    # offset always wins. earliest: nothing the topic holds goes unlabelled (see docs/worker.md).
    start_from: str = "earliest"
    shutdown_timeout_s: float = 20.0
    log_format: str = "auto"
    log_level: str = "info"
    security: KafkaSecurity = KafkaSecurity()
    # Bound on records between poll() and an acknowledged send; above it fetching pauses.
    max_in_flight: int = 0
    commit_interval_ms: int = 1000
    # Outputs, dead letters and offsets in one Kafka transaction per batch (worker/pipeline/exactly_once.py).
    exactly_once: bool = False
    transactional_id: str = ""
    transaction_timeout_ms: int = 30_000
    # A failed send (or transaction) is retried after 0.5 s, doubling up to this.
    send_retry_backoff_max_s: float = 30.0

    @property
    def max_dead_letter_bytes(self) -> int:
        """Largest value the producer accepts (its max_request_size, less room for key and headers)."""
        return max(1 << 20, 2 * self.max_message_bytes)

    @property
    def in_flight_limit(self) -> int:
        return self.max_in_flight or max(4 * self.batch_size, 1024)

    @property
    def flush_timeout_s(self) -> float:
        """Longest wait for each step of a transaction (flush, offsets, commit): together under its timeout."""
        return self.transaction_timeout_ms / 3000

    @property
    def send_block_ms(self) -> int:
        """How long ``send`` may wait for a topic's metadata; inside a transaction, no longer than its flush."""
        return min(10_000, int(self.flush_timeout_s * 1000)) if self.exactly_once else 10_000


def _require(condition: bool, option: str, message: str) -> None:
    if not condition:
        raise click.BadParameter(message, param_hint=option)


def read_password(password_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The SASL password from ``--sasl-password-file`` or ``LSTM_WORKER_SASL_PASSWORD``; never a CLI value."""
    environ = os.environ if environ is None else environ
    if password_file is not None:
        try:
            return password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {password_file}: {exc.strerror}",
                                     param_hint="--sasl-password-file") from None
    return environ.get(PASSWORD_ENV) or None


def _check_timing(rest: dict[str, Any]) -> None:
    """Every wait of the loop ends before the group would give up on it (see docs/worker.md)."""
    poll_interval = rest.get("max_poll_interval_ms", WorkerSettings.max_poll_interval_ms)
    session = rest.get("session_timeout_ms", WorkerSettings.session_timeout_ms)
    _require(poll_interval >= session, "--max-poll-interval-ms",
             f"must be at least --session-timeout-ms ({session}), got {poll_interval}")
    if not rest.get("exactly_once"):
        return
    transaction = rest.get("transaction_timeout_ms", WorkerSettings.transaction_timeout_ms)
    _require(transaction >= 3000, "--transaction-timeout-ms", f"must be at least 3000, got {transaction}")
    _require(transaction < poll_interval, "--transaction-timeout-ms",
             f"must be below --max-poll-interval-ms ({poll_interval}): the loop does not poll while a transaction "
             f"is open, got {transaction}")


def _check_exactly_once(rest: dict[str, Any], host_slot: int | None) -> None:
    """Fill in the default transactional id, or refuse one that would be ignored."""
    transactional_id = rest.get("transactional_id")
    if not rest.get("exactly_once"):
        _require(not transactional_id, "--transactional-id", "only used with --exactly-once")
        rest.pop("transactional_id", None)
        return
    if not transactional_id:
        rest["transactional_id"] = default_transactional_id(rest.get("group_id", "lstm-worker"),
                                                            socket.gethostname(), host_slot)
    else:
        _require(bool(transactional_id.strip()), "--transactional-id", "must not be blank")


def build_settings(
    *,
    topic: str,
    model: Path,
    bootstrap_servers: str = "localhost:9092",
    output_topic: str | None = None,
    dlq_topic: str | None = None,
    security_protocol: str = "PLAINTEXT",
    sasl_mechanism: str | None = None,
    sasl_username: str | None = None,
    sasl_password: str | None = None,
    ssl_cafile: str | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    sasl_oauth_token_url: str | None = None,
    sasl_oauth_client_id: str | None = None,
    sasl_oauth_client_secret: str | None = None,
    sasl_oauth_scope: str | None = None,
    sasl_oauth_audience: str | None = None,
    host_slot: int | None = None,
    **rest: Any,
) -> WorkerSettings:
    """Validate raw option values and freeze them; raise ``click.BadParameter`` on the first bad one."""
    _require(bool(topic and topic.strip()), "--topic", "the input topic must not be empty")
    servers = tuple(s.strip() for s in bootstrap_servers.split(",") if s.strip())
    _require(bool(servers) and all(":" in s for s in servers), "--bootstrap-servers",
             f"{bootstrap_servers!r} must be a comma-separated list of host:port")
    output_topic = output_topic or default_output_topic(topic)
    dlq_topic = dlq_topic or default_dlq_topic(topic)
    _require(output_topic != topic, "--output-topic", "the output topic must differ from the input topic")
    _require(dlq_topic != topic, "--dlq-topic", "the dead-letter topic must differ from the input topic")
    _require(dlq_topic != output_topic, "--dlq-topic", "the dead-letter topic must differ from the output topic")
    review_topic = rest.get("review_topic")
    if "min_confidence" in rest:
        _require(0 <= rest["min_confidence"] <= 1, "--min-confidence",
                 f"must be in [0, 1], got {rest['min_confidence']}")
    if review_topic:
        _require(rest.get("min_confidence", 0) > 0, "--review-topic", "needs --min-confidence above 0")
        _require(review_topic not in (topic, output_topic, dlq_topic), "--review-topic",
                 "must differ from the input, output and dead-letter topics")
    shadow_topic = rest.get("shadow_topic")
    if shadow_topic:
        _require(rest.get("shadow_model") is not None, "--shadow-topic", "needs --shadow-model")
        _require(shadow_topic not in (topic, output_topic, dlq_topic, review_topic), "--shadow-topic",
                 "must differ from the input, output and dead-letter topics")
    if "shadow_sample" in rest:
        _require(0 < rest["shadow_sample"] <= 1, "--shadow-sample", f"must be in (0, 1], got {rest['shadow_sample']}")
    positive = {"batch_size": "--batch-size", "max_batch_tokens": "--max-batch-tokens", "top_k": "--top-k",
                "max_message_bytes": "--max-message-bytes", "session_timeout_ms": "--session-timeout-ms",
                "tokens_per_call": "--tokens-per-call", "commit_interval_ms": "--commit-interval-ms",
                "drift_window": "--drift-window"}
    for key, option in positive.items():
        if key in rest:
            _require(rest[key] >= 1, option, f"must be at least 1, got {rest[key]}")
    for key, option in {"max_wait_ms": "--max-wait-ms", "threads": "--threads", "rows_per_call": "--rows-per-call",
                        "max_in_flight": "--max-in-flight", "explain": "--explain"}.items():
        if key in rest:
            _require(rest[key] >= 0, option, f"must not be negative, got {rest[key]}")
    if "liveness_timeout_s" in rest:
        _require(rest["liveness_timeout_s"] > 0, "--liveness-timeout-s", "must be positive")
    if "metrics_port" in rest:
        _require(0 <= rest["metrics_port"] <= 65535, "--metrics-port", "must be 0 (off) or a TCP port")
    if "shutdown_timeout_s" in rest:
        _require(rest["shutdown_timeout_s"] > 0, "--shutdown-timeout-s", "must be positive")
    if "send_retry_backoff_max_s" in rest:
        _require(rest["send_retry_backoff_max_s"] > 0, "--send-retry-backoff-max-s", "must be positive")
    if "start_from" in rest:
        _require(rest["start_from"] in START_POSITIONS, "--start-from",
                 f"choose one of {', '.join(START_POSITIONS)}, got {rest['start_from']!r}")
    if "text_field" in rest:
        _require(bool(rest["text_field"]), "--text-field", "must not be empty")
    _check_timing(rest)
    _check_exactly_once(rest, host_slot)
    protocol = security_protocol.upper()
    _require(protocol in SECURITY_PROTOCOLS, "--security-protocol", f"choose one of {', '.join(SECURITY_PROTOCOLS)}")
    if protocol.startswith("SASL"):
        _require(bool(sasl_mechanism), "--sasl-mechanism", f"required with {protocol}")
        _require(sasl_mechanism.upper() in SASL_MECHANISMS, "--sasl-mechanism",
                 f"choose one of {', '.join(SASL_MECHANISMS)}")
        if sasl_mechanism.upper() == "OAUTHBEARER":
            _require(not sasl_username and sasl_password is None, "--sasl-username",
                     "not used with OAUTHBEARER: the token names the principal")
        else:
            _require(bool(sasl_username), "--sasl-username", f"required with {protocol}")
            _require(sasl_password is not None, "--sasl-password-file",
                     f"{protocol} needs a password: set {PASSWORD_ENV} or pass --sasl-password-file")
    else:
        _require(not sasl_mechanism and not sasl_username, "--security-protocol",
                 "SASL options given but the protocol is not SASL_PLAINTEXT or SASL_SSL")
    for value, option in ((ssl_cafile, "--ssl-cafile"), (ssl_certfile, "--ssl-certfile"),
                          (ssl_keyfile, "--ssl-keyfile")):
        if value is not None:
            _require(protocol.endswith("SSL"), option, "given but the protocol is not SSL or SASL_SSL")
            _require(Path(value).is_file(), option, f"file not found: {value}")
    from worker.oauth_settings import oauth_credentials  # it shares _require: imported here, not at the top

    mechanism = sasl_mechanism.upper() if sasl_mechanism else None
    oauth = oauth_credentials(mechanism, dict(
        sasl_oauth_token_url=sasl_oauth_token_url, sasl_oauth_client_id=sasl_oauth_client_id,
        sasl_oauth_client_secret=sasl_oauth_client_secret, sasl_oauth_scope=sasl_oauth_scope,
        sasl_oauth_audience=sasl_oauth_audience))
    security = KafkaSecurity(protocol, mechanism, sasl_username, sasl_password, ssl_cafile, ssl_certfile,
                             ssl_keyfile, oauth)
    return WorkerSettings(topic=topic, model=Path(model), bootstrap_servers=servers, output_topic=output_topic,
                          dlq_topic=dlq_topic, security=security, **rest)
