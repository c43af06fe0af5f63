"""``lstm-worker run``: the streaming classification worker."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from worker.settings import INPUT_FORMATS, LOG_FORMATS, LOG_LEVELS, PASSWORD_ENV, SECURITY_PROTOCOLS, WorkerSettings


def option(name: str, **kwargs: Any) -> Any:
    """A click option with its LSTM_WORKER_* env var shown in --help."""
    envvar = "LSTM_WORKER_" + name.lstrip("-").replace("-", "_").upper()
    return click.option(name, envvar=envvar, show_envvar=True, show_default=True, **kwargs)


@click.command("run")
@option("--topic", required=True, help="Input topic to classify.")
@option("--bootstrap-servers", default="localhost:9092", help="Kafka bootstrap servers, comma-separated host:port.")
@option("--group-id", default="lstm-worker", help="Consumer group; run more workers with the same id to scale out.")
@option("--output-topic", default=None, help="Topic for labels. [default: <topic>.labels]")
@option("--dlq-topic", default=None, help="Dead-letter topic for unclassifiable records. [default: <topic>.dlq]")
@option("--model", required=True, type=click.Path(path_type=Path),
        help="Model bundle directory written by lstm-export.")
@option("--batch-size", default=256, type=int,
        help="Close a batch at this many records; a batch is sorted by length and scored in sub-batches.")
@option("--max-wait-ms", default=20, type=int, help="Close a batch this long after its first record arrived.")
@option("--max-batch-tokens", default=65536, type=int,
        help="Close a batch at this many tokens (after truncation to the model's max length).")
@option("--provider", default="auto", type=click.Choice(["auto", "cpu", "cuda"]),
        help="ONNX Runtime provider; auto = CUDA when onnxruntime-gpu and a GPU are present, else CPU.")
@option("--threads", default=0, type=int,
        help="Parallel ONNX Runtime calls, one thread each (0 = one per usable CPU, cgroup limit included).")
@option("--input-format", default="auto", type=click.Choice(INPUT_FORMATS),
        help="auto: a JSON object is JSON, anything else text (see docs/worker.md); text; json.")
@option("--text-field", default="text", help="JSON field holding the text.")
@option("--top-k", default=3, type=int, help="How many best labels each output lists.")
@option("--max-message-bytes", default=1_000_000, type=int,
        help="Larger input values are dead-lettered as 'oversize'.")
@option("--metrics-port", default=0, type=int, help="Serve /metrics, /healthz, /readyz on this port (0 = off).")
@option("--session-timeout-ms", default=10_000, type=int,
        help="Consumer group session timeout; a dead worker's partitions move after this long.")
@option("--shutdown-timeout-s", default=20.0, type=float,
        help="Drain budget on SIGTERM: finish in-flight work, flush, commit within this many seconds.")
@option("--send-retry-backoff-max-s", default=30.0, type=float,
        help="A send the broker refuses (missing topic, no ACL, timeout) is retried after 0.5 s, doubling up "
             "to this many seconds; later outputs wait and no offset is committed past it.")
@option("--security-protocol", default="PLAINTEXT", type=click.Choice(SECURITY_PROTOCOLS, case_sensitive=False),
        help="Kafka security protocol.")
@option("--sasl-mechanism", default=None, help="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
@option("--sasl-username", default=None, help="SASL user name.")
@option("--sasl-password-file", default=None, type=click.Path(path_type=Path, dir_okay=False),
        help=f"File holding the SASL password (or set {PASSWORD_ENV}; never on the command line).")
@option("--ssl-cafile", default=None, help="CA bundle (PEM) to verify the brokers.")
@option("--ssl-certfile", default=None, help="Client certificate (PEM) for mutual TLS.")
@option("--ssl-keyfile", default=None, help="Client private key (PEM) for mutual TLS.")
@option("--exactly-once", is_flag=True, default=False,
        help="Exactly-once: outputs, dead letters and consumed offsets commit in one Kafka transaction per batch "
             "(downstream readers need isolation.level=read_committed; see docs/worker.md).")
@option("--transactional-id", default=None,
        help="Transactional id of this replica, with --exactly-once; a restart with the same id fences the old "
             "one. [default: <group-id>-<hostname>]")
@option("--log-format", default="auto", type=click.Choice(LOG_FORMATS),
        help="auto = console on a terminal, JSON lines otherwise.")
@option("--log-level", default="info", type=click.Choice(LOG_LEVELS, case_sensitive=False), help="Log level.")
def run(sasl_password_file: Path | None, **options: Any) -> None:
    """Classify records of a Kafka topic and publish labels, at least once.

    Reads --topic as consumer group --group-id, batches records through the
    model bundle with ONNX Runtime and writes one JSON label per record to
    --output-topic, keyed like the input. Records that cannot be classified
    go to --dlq-topic with error headers. Offsets are committed only after
    the broker acknowledged every result before them; with --exactly-once,
    results and offsets commit together in one transaction per batch.
    SIGTERM/SIGINT drain and exit 0; a second signal exits at once.
    """
    from worker.settings import build_settings, read_password

    options["log_level"] = options["log_level"].lower()
    settings = build_settings(sasl_password=read_password(sasl_password_file), **options)
    sys.exit(run_worker(settings))


def run_worker(settings: WorkerSettings) -> int:
    """Start-up checks, then the loop; returns the exit code. User errors become one-line ClickExceptions."""
    import structlog

    from core.bundle import load_bundle
    from core.exceptions import BundleError
    from worker.engine import InferenceEngine
    from worker.exceptions import EngineError, StartupError
    from worker.health import HealthServer, HealthState
    from worker.kafka_io import KafkaSink, KafkaSource
    from worker.logging_setup import configure_logging
    from worker.metrics import WorkerMetrics

    configure_logging(settings.log_format, settings.log_level)
    log = structlog.get_logger("lstm-worker")
    try:
        bundle = load_bundle(settings.model)
    except BundleError as exc:
        raise click.ClickException(f"--model: {exc}") from None
    try:
        engine = InferenceEngine(bundle, provider=settings.provider, threads=settings.threads,
                                 max_batch_tokens=min(settings.sub_batch_tokens, settings.max_batch_tokens),
                                 max_sub_batch=settings.max_sub_batch)
    except EngineError as exc:  # names --provider or the model file itself
        raise click.ClickException(str(exc)) from None
    log.info("model_loaded", model=bundle.model_id, provider=engine.provider, requested_provider=settings.provider,
             labels=len(bundle.labels), max_len=engine.max_len)
    health = HealthState()
    health.model_loaded = True
    metrics = WorkerMetrics()
    metrics.model_info.info({"model": bundle.model_id, "name": bundle.name, "version": bundle.version,
                             "provider": engine.provider})
    source = sink = server = None
    try:
        if settings.exactly_once:
            from worker.kafka_transactional import TransactionalSink, TransactionalSource

            source = TransactionalSource(settings)
            partitions = source.check_topic()
            sink = TransactionalSink(settings)
        else:
            source = KafkaSource(settings)
            partitions = source.check_topic()
            sink = KafkaSink(settings)
        sink.check_topic(settings.output_topic, "--output-topic")
        sink.check_topic(settings.dlq_topic, "--dlq-topic")
        if settings.exactly_once:
            sink.init_transactions()  # fences a predecessor with the same --transactional-id
        if settings.metrics_port:
            server = HealthServer(settings.metrics_host, settings.metrics_port, health, metrics.registry).start()
    except StartupError as exc:
        _close_quietly(source, sink)
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # the metrics port is taken
        _close_quietly(source, sink)
        raise click.ClickException(f"--metrics-port {settings.metrics_port}: {exc.strerror}") from None
    if settings.exactly_once:
        from worker.pipeline.transactional import TransactionalLoop as Loop
    else:
        from worker.pipeline.loop import WorkerLoop as Loop
    loop = Loop(settings, engine, source, sink, model_id=bundle.model_id, metrics=metrics, health=health, log=log)
    _install_signal_handlers(loop, log)
    log.info("worker_started", topic=settings.topic, partitions=partitions, group=settings.group_id,
             output_topic=settings.output_topic, dlq_topic=settings.dlq_topic, batch_size=settings.batch_size,
             metrics_port=server.port if server else None,
             delivery="exactly-once" if settings.exactly_once else "at-least-once",
             transactional_id=settings.transactional_id or None)
    try:
        code = loop.run()
    finally:
        engine.close()
        if server is not None:
            server.stop()
    # Evidence for operators and tests that serving stayed torch-free.
    log.info("worker_exit", exit_code=code, torch_imported="torch" in sys.modules, **metrics.totals())
    return code


def _install_signal_handlers(loop: Any, log: Any) -> None:
    received: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        if received:  # second signal: the operator wants out now; uncommitted work is re-read on restart
            os._exit(128 + signum)
        received.append(signum)
        loop.request_stop()  # only a flag; the loop drains on its own thread

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: the first tool for a stuck worker.
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _close_quietly(*clients: Any) -> None:
    for client in clients:
        if client is None:
            continue
        try:
            client.close(1.0) if hasattr(client, "producer") else client.close()
        except Exception:  # noqa: BLE001 - already failing start-up; the original error matters
            pass
