"""``lstm-worker run``: the streaming classification worker."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from core.cli_types import FiniteFloat
from worker.kafka_tools import bootstrap_servers_option
from worker.oauth_settings import client_secret_from_file
from worker.options import CannotStart, engine_options, open_engine, option
from worker.settings import (
    ASSIGNMENT_STRATEGIES,
    LOG_FORMATS,
    LOG_LEVELS,
    PASSWORD_ENV,
    SECURITY_PROTOCOLS,
    START_POSITIONS,
    WorkerSettings,
)


def security_options(command: Callable) -> Callable:
    """How to reach a secured broker: the same options in every command that reads or writes the worker's topics."""
    decorators = [
        option("--security-protocol", default="PLAINTEXT",
               type=click.Choice(SECURITY_PROTOCOLS, case_sensitive=False),
               help="Kafka security protocol."),
        option("--sasl-mechanism", default=None,
               help="SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (OIDC client credentials: "
                    "--sasl-oauth-*)."),
        option("--sasl-username", default=None, help="SASL user name."),
        option("--sasl-password-file", default=None, type=click.Path(path_type=Path, dir_okay=False),
               help=f"File holding the SASL password (or set {PASSWORD_ENV}; never on the command line)."),
        option("--ssl-cafile", default=None, help="CA bundle (PEM) to verify the brokers."),
        option("--ssl-certfile", default=None, help="Client certificate (PEM) for mutual TLS."),
        option("--ssl-keyfile", default=None, help="Client private key (PEM) for mutual TLS."),
        option("--sasl-oauth-token-url", default=None,
               help="With --sasl-mechanism OAUTHBEARER: the OIDC token endpoint the worker asks for tokens "
                    "(client-credentials grant); a token is renewed at 80% of its lifetime."),
        option("--sasl-oauth-client-id", default=None, help="With OAUTHBEARER: the OIDC client id."),
        option("--sasl-oauth-client-secret-file", "sasl_oauth_client_secret", default=None,
               type=click.Path(path_type=Path, dir_okay=False), callback=client_secret_from_file,
               help="With OAUTHBEARER: file holding the OIDC client secret (never on the command line)."),
        option("--sasl-oauth-scope", default=None, help="With OAUTHBEARER: scope requested with each token."),
        option("--sasl-oauth-audience", default=None,
               help="With OAUTHBEARER: audience requested with each token (sent as the audience parameter)."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


@click.command("run")
@option("--topic", required=True, help="Input topic to classify.")
@bootstrap_servers_option
@option("--group-id", default="lstm-worker", help="Consumer group; run more workers with the same id to scale out.")
@option("--start-from", default="earliest", type=click.Choice(START_POSITIONS),
        help="Where the group starts reading a partition it has no committed offset for (a new group, or an "
             "offset deleted by retention): earliest labels everything the topic holds, latest only what arrives "
             "after the partition is assigned. A committed offset always wins (to re-label a "
             "slice of history: lstm-worker replay).")
@option("--output-topic", default=None, help="Topic for labels. [default: <topic>.labels]")
@option("--dlq-topic", default=None, help="Dead-letter topic for unclassifiable records. [default: <topic>.dlq]")
@option("--model-poll-s", default=10.0, type=FiniteFloat(min=0.1),
        help="With --model naming a store: how often CURRENT is checked; a new version is loaded and self-tested "
             "beside the serving one, then swapped in without a restart (SIGHUP checks at once).")
@option("--review-topic", default=None,
        help="Where labels below --min-confidence go instead of --output-topic (same JSON plus the reason, same key "
             "and headers, same delivery guarantee).")
@option("--drift-window", default=1000, type=click.IntRange(1),
        help="The drift gauges compare the last this many labels with the bundle's reference (label mix, share "
             "below the confidence threshold, mean confidence); NaN until that many arrived, reset by a model swap.")
@option("--shadow-model", default=None, type=click.Path(path_type=Path),
        help="A bundle or store whose model scores the same batches after the primary answered; only metrics (and "
             "--shadow-topic) see its results. A store is watched like --model's.")
@option("--shadow-sample", default=1.0, type=FiniteFloat(),
        help="Share of batches the shadow scores (0-1]; under load it is skipped first, and the skips counted.")
@option("--shadow-topic", default=None, help="Also publish the shadow's labels here (its own model field).")
@engine_options(batch_size=256, batch_help="Close a batch at this many records; a batch is sorted by length and "
                                           "scored in ONNX Runtime calls (--rows-per-call, --tokens-per-call).")
@option("--max-wait-ms", default=20, type=click.IntRange(0),
        help="Close a batch this long after its first record arrived.")
@option("--max-batch-tokens", default=65536, type=click.IntRange(1),
        help="Close a batch at this many tokens (after truncation to the model's max length).")
@option("--max-in-flight", default=0, type=click.IntRange(0),
        help="Pause fetching above this many records polled but not yet answered (0 = 4 x --batch-size, "
             "at least 1024).")
@option("--commit-interval-ms", default=1000, type=click.IntRange(1),
        help="How often offsets of answered records are committed (at-least-once); with --exactly-once, how often "
             "a partition with nothing in flight commits a position that moved past transaction markers.")
@option("--metrics-port", default=0, type=click.IntRange(0, 65535),
        help="Serve /metrics, /healthz, /readyz on this port (0 = off).")
@option("--metrics-host", default="0.0.0.0", help="Address the metrics server listens on.")
@option("--liveness-timeout-s", default=30.0, type=FiniteFloat(),
        help="/healthz fails when the loop has not come round for this long.")
@option("--session-timeout-ms", default=10_000, type=click.IntRange(1),
        help="Consumer group session timeout; a dead worker's partitions move after this long.")
@option("--max-poll-interval-ms", default=60_000, type=click.IntRange(1),
        help="The group gives up on a worker that does not poll for this long (also the rebalance timeout).")
@option("--assignment-strategy", default="range", type=click.Choice(ASSIGNMENT_STRATEGIES),
        help="How the group shares partitions: range or roundrobin (eager: every rebalance pauses the group), or "
             "cooperative-sticky (incremental; see docs/worker.md for its limits with this client). Every member of "
             "a group must use the same protocol.")
@option("--shutdown-timeout-s", default=20.0, type=FiniteFloat(),
        help="Drain budget on SIGTERM: finish in-flight work, store results, commit and leave within this long.")
@option("--send-retry-backoff-max-s", default=30.0, type=FiniteFloat(),
        help="A send (or transaction) the broker refuses is retried after 0.5 s, doubling up to this many seconds; "
             "later outputs wait and no offset is committed past it.")
@security_options
@option("--exactly-once", is_flag=True, default=False,
        help="Exactly-once: outputs, dead letters and consumed offsets commit in one Kafka transaction per batch "
             "(downstream readers need isolation.level=read_committed; see docs/worker.md).")
@option("--transactional-id", default=None,
        help="Transactional id of this worker, with --exactly-once: unique among live workers; a restart with the "
             "same id aborts the predecessor's open transaction. [default: <group-id>-<hostname>-<slot>, slot = "
             "lowest free on this host]")
@option("--transaction-timeout-ms", default=30_000, type=click.IntRange(1),
        help="With --exactly-once: the broker aborts a transaction open this long; each step of one waits at most "
             "a third of it. Must be below --max-poll-interval-ms.")
@option("--log-format", default="auto", type=click.Choice(LOG_FORMATS),
        help="auto = console on a terminal, JSON lines otherwise.")
@option("--log-level", default="info", type=click.Choice(LOG_LEVELS, case_sensitive=False), help="Log level.")
def run(sasl_password_file: Path | None, **options: Any) -> None:
    """Classify records of a Kafka topic and publish labels, at least once or exactly once.

    Reads --topic as consumer group --group-id, batches records through the
    model bundle with ONNX Runtime and writes one JSON label per record to
    --output-topic, keyed like the input. Records that cannot be classified
    go to --dlq-topic with error headers. Offsets are committed only after
    the broker acknowledged every result before them; with --exactly-once,
    results and offsets commit together in one transaction per batch.
    SIGTERM/SIGINT drain and exit 0; a second signal exits at once.

    Exit status: 0 after a clean drain; 1 failed while running (fenced, or a
    bug); 2 could not start (a bad option, bundle, provider, broker or topic).
    """
    from worker.host_slot import claim_host_slot
    from worker.settings import build_settings, read_password

    options["log_level"] = options["log_level"].lower()
    slot = claim_host_slot(options["group_id"]) if options["exactly_once"] and not options["transactional_id"] \
        else None
    settings = build_settings(sasl_password=read_password(sasl_password_file), host_slot=slot, **options)
    sys.exit(run_worker(settings))


def run_worker(settings: WorkerSettings, open_source: Callable[[WorkerSettings], Any] | None = None) -> int:
    """Start-up checks, then the loop; returns the exit code. User errors become one-line ClickExceptions.

    ``open_source`` builds the consumer (default: the subscribed :class:`worker.kafka_io.KafkaSource`); replay
    passes its bounded, assigned one (worker/replay_source.py), so both run the one pipeline.
    """
    import structlog

    from core.model_store import ModelStore
    from worker.exceptions import StartupError
    from worker.health import HealthServer, HealthState
    from worker.kafka_client_log import CLIENT_LOG
    from worker.kafka_io import KafkaSink, KafkaSource
    from worker.logging_setup import configure_logging
    from worker.metrics import WorkerMetrics
    from worker.oauth_token import checked_token_provider
    from worker.offsets import OffsetTracker
    from worker.pipeline.loop import Pipeline
    from worker.pipeline.models import ModelWatcher, ServedModel, describe

    configure_logging(settings.log_format, settings.log_level)
    log = structlog.get_logger("lstm-worker")
    engine_settings = dict(provider=settings.provider, threads=settings.threads, rows_per_call=settings.rows_per_call,
                           tokens_per_call=settings.tokens_per_call, explain=settings.explain > 0)
    engine = open_engine(settings.model, **engine_settings)
    bundle = engine.bundle
    store = ModelStore(settings.model) if ModelStore.is_store(settings.model) else None
    served = ServedModel(engine, bundle.path.name if store is not None else None)
    log.info("model_loaded", model=bundle.model_id, provider=engine.provider, requested_provider=settings.provider,
             labels=len(bundle.labels), max_len=engine.max_len, store=str(settings.model) if store else None)
    health = HealthState(settings.liveness_timeout_s)
    health.model_loaded = True
    metrics = WorkerMetrics()
    describe(metrics, served)
    models = ModelWatcher(store, served, poll_s=settings.model_poll_s, engine_settings=engine_settings,
                          metrics=metrics, log=log)
    # The shadow explains nothing: only its labels are compared and published.
    shadow = _open_shadow(settings, {**engine_settings, "explain": False}, metrics, log) if settings.shadow_model \
        else None
    source = sink = server = None
    try:
        if settings.security.oauth is not None:  # a token now, and /readyz says when tokens stop coming
            provider = checked_token_provider(settings.security.oauth)
            health.credential_problem = lambda: provider.problem
        source = (open_source or KafkaSource)(settings)
        partitions = source.check_topic()
        sink = KafkaSink(settings)
        sink.check_topic(settings.output_topic, "--output-topic")
        sink.check_topic(settings.dlq_topic, "--dlq-topic")
        if settings.shadow_topic:
            sink.check_topic(settings.shadow_topic, "--shadow-topic")
        if settings.review_topic:
            sink.check_topic(settings.review_topic, "--review-topic")
        if settings.exactly_once:
            sink.init_transactions()  # aborts a predecessor's open transaction with the same --transactional-id
        if settings.metrics_port:
            server = HealthServer(settings.metrics_host, settings.metrics_port, health, metrics.registry).start()
    except StartupError as exc:
        _close_quietly(source, sink)
        engine.close()
        raise CannotStart(str(exc)) from None
    except OSError as exc:  # the metrics port is taken
        _close_quietly(source, sink)
        engine.close()
        raise CannotStart(f"--metrics-port {settings.metrics_port}: {exc.strerror}") from None
    tracker = OffsetTracker()
    common = (settings, sink, source, tracker, metrics, log)
    if settings.exactly_once:
        from worker.pipeline.exactly_once import ExactlyOnce

        guarantee = ExactlyOnce(*common, new_producer=lambda: _transactional_producer(settings))
    else:
        from worker.pipeline.at_least_once import AtLeastOnce

        # A refusal kafka-python makes fatal to the producer (a Write ACL taken away) ends with a new one.
        guarantee = AtLeastOnce(*common, new_producer=lambda: KafkaSink(settings))
    pipeline = Pipeline(settings, served, models, source, guarantee, tracker, metrics, health, log, shadow)
    _install_signal_handlers(pipeline, models)
    log.info("worker_started", topic=settings.topic, partitions=partitions, group=settings.group_id,
             output_topic=settings.output_topic, dlq_topic=settings.dlq_topic, batch_size=settings.batch_size,
             metrics_port=server.port if server else None,
             delivery="exactly-once" if settings.exactly_once else "at-least-once",
             assignment_strategy=settings.assignment_strategy, start_from=settings.start_from,
             transactional_id=settings.transactional_id or None)
    CLIENT_LOG.started()  # the client's own errors show from now on (as JSON lines); start-up failed in one line
    try:
        code = pipeline.run()
    finally:
        pipeline.served.engine.close()
        if server is not None:
            server.stop()
    # Evidence for operators and tests that serving stayed torch-free.
    log.info("worker_exit", exit_code=code, torch_imported="torch" in sys.modules, **metrics.totals())
    return code


def _open_shadow(settings: WorkerSettings, engine_settings: dict[str, Any], metrics: Any, log: Any) -> Any:
    """The shadow model, verified like the primary; a store is watched like --model's."""
    from core.model_store import ModelStore
    from worker.pipeline.models import ModelWatcher, ServedModel
    from worker.pipeline.shadow import Shadow

    try:
        engine = open_engine(settings.shadow_model, **engine_settings)
    except CannotStart as exc:
        raise CannotStart(f"--shadow-model: {exc.message}") from None
    store = ModelStore(settings.shadow_model) if ModelStore.is_store(settings.shadow_model) else None
    served = ServedModel(engine, engine.bundle.path.name if store is not None else None)
    log.info("shadow_model_loaded", model=served.model_id, sample=settings.shadow_sample,
             topic=settings.shadow_topic)
    watcher = ModelWatcher(store, served, poll_s=settings.model_poll_s, engine_settings=engine_settings,
                           metrics=metrics, log=log)
    return Shadow(settings, served, watcher, metrics, log)


def _transactional_producer(settings: WorkerSettings) -> Any:
    """A replacement transactional producer (same id): its start aborts whatever the old one left open."""
    from worker.kafka_io import KafkaSink

    sink = KafkaSink(settings)
    try:
        sink.init_transactions()
    except Exception:
        sink.close(1.0)
        raise
    return sink


def _install_signal_handlers(pipeline: Any, models: Any) -> None:
    received: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        if received:  # second signal: the operator wants out now; uncommitted work is re-read on restart
            os._exit(128 + signum)
        received.append(signum)
        pipeline.request_stop()  # only a flag; the loop drains on its own thread

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: models.request_check())  # check the store's CURRENT now
    # `kill -USR1 <pid>` prints every thread's stack to stderr: the first tool for a stuck worker.
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _close_quietly(*clients: Any) -> None:
    for client in clients:
        try:
            if client is not None:
                client.close(1.0)
        except Exception:  # noqa: BLE001 - already failing start-up; the original error matters
            pass
