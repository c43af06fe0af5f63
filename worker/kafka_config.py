"""The kafka-python client configurations, built once from the settings, and the start-up errors they share.

One consumer and one producer configuration serve both delivery guarantees; exactly-once only adds
the transactional id. A broker that cannot be reached, or that refuses this worker's principal an
operation, becomes one line naming the cause and the fix.
"""

from __future__ import annotations

from typing import Any

from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)

from worker.exceptions import StartupError
from worker.kafka_client_log import CLIENT_LOG, connection_cause
from worker.settings import WorkerSettings

ASSIGNORS = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
             "cooperative-sticky": CooperativeStickyAssignor}
_BOOTSTRAP_TIMEOUT_MS = 10_000


def _client_id(settings: WorkerSettings) -> str:
    return f"lstm-worker-{settings.group_id}"


def consumer_config(settings: WorkerSettings) -> dict[str, Any]:
    return dict(
        bootstrap_servers=list(settings.bootstrap_servers),
        group_id=settings.group_id,
        client_id=_client_id(settings),
        enable_auto_commit=False,  # offsets move only with answered records (worker/pipeline/guarantee.py)
        auto_offset_reset=settings.start_from,  # only where the group committed nothing
        # Records of aborted upstream transactions are never classified, whichever guarantee this worker gives.
        isolation_level="read_committed",
        partition_assignment_strategy=(ASSIGNORS[settings.assignment_strategy],),
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.session_timeout_ms // 3),
        max_poll_records=max(settings.batch_size * 4, 500),
        max_poll_interval_ms=settings.max_poll_interval_ms,  # also the rebalance timeout
        fetch_max_bytes=16 * 1024 * 1024,  # bounds fetched-but-unpolled memory (RSS budget)
        max_partition_fetch_bytes=max(1 << 20, settings.max_message_bytes + 1024),
        fetch_min_bytes=1,
        fetch_max_wait_ms=25,  # bounds the latency an idle fetch adds (some brokers hold a fetch for all of it)
        bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
        **settings.security.client_config(),
    )


def producer_config(settings: WorkerSettings) -> dict[str, Any]:
    config: dict[str, Any] = dict(
        bootstrap_servers=list(settings.bootstrap_servers),
        client_id=_client_id(settings),
        acks="all",
        enable_idempotence=True,  # keeps per-partition order with several requests in flight and retries
        max_in_flight_requests_per_connection=5,
        linger_ms=5,
        batch_size=256 * 1024,
        max_request_size=settings.max_dead_letter_bytes + 65536,  # room for key, headers, batch overhead
        # send() waits this long for a missing topic's metadata, on the loop thread: well below /healthz's limit.
        max_block_ms=settings.send_block_ms,
        bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
        **settings.security.client_config(),
    )
    if settings.exactly_once:
        config.update(transactional_id=settings.transactional_id,
                      transaction_timeout_ms=settings.transaction_timeout_ms)
    return config


def connect_error(settings: WorkerSettings, exc: Exception) -> StartupError:
    """One line: where, over which protocol, and why the last attempt failed (the client only says it timed out)."""
    servers = ",".join(settings.bootstrap_servers)
    where = f"cannot reach Kafka at {servers} ({settings.security.protocol})"
    return StartupError(f"{where}: {connection_cause(CLIENT_LOG.last_failure or exc, settings.security.protocol)}")


def principal(settings: WorkerSettings) -> str:
    """Who the broker sees: the SASL user, the client certificate's subject (mutual TLS), or ANONYMOUS."""
    security = settings.security
    if security.oauth is not None:
        return f"the subject of the OAUTHBEARER token of client {security.oauth.client_id!r}"
    if security.protocol.startswith("SASL"):
        return f"User:{security.sasl_username}"
    if security.ssl_certfile:
        return f"the subject of --ssl-certfile ({security.ssl_certfile})"
    return "User:ANONYMOUS"


def refused_permission(settings: WorkerSettings, exc: Exception, output_topic: str | None = None) -> str:
    """The ACL (operation on resource) an authorization error says this worker lacks; docs/security.md lists them."""
    if isinstance(exc, GroupAuthorizationFailedError):
        return f"READ on group {settings.group_id!r}"
    if isinstance(exc, TransactionalIdAuthorizationFailedError):
        return f"WRITE on transactional id {settings.transactional_id!r}"
    if isinstance(exc, ClusterAuthorizationFailedError):
        return "IDEMPOTENT_WRITE on the cluster"
    if output_topic is not None:
        return f"WRITE on topic {output_topic!r}"
    return f"READ on topic {settings.topic!r}"


def not_authorized(settings: WorkerSettings, exc: Exception, output_topic: str | None = None) -> StartupError:
    return StartupError(f"not authorized: the broker refuses {principal(settings)} "
                        f"{refused_permission(settings, exc, output_topic)} ({type(exc).__name__}): grant that "
                        "ACL (docs/security.md lists every ACL the worker needs)")
