"""``lstm-worker replay``: label a slice of a topic's history with a pinned model version, then exit."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from core.cli_types import FiniteFloat
from worker.kafka_tools import bootstrap_servers_option
from worker.options import CannotStart, engine_options, option
from worker.run_command import security_options
from worker.settings import LOG_FORMATS, LOG_LEVELS


@click.command("replay")
@option("--topic", required=True, help="Input topic whose history is labelled again.")
@bootstrap_servers_option
@option("--job", required=True,
        help="Name of this replay: labels carry \"replay\": {\"job\": ...}, and its checkpoint is the offsets "
             "committed under group lstm-worker-replay-<job> (never joined). Run the same --job again to go on "
             "where it stopped; a new slice needs a new name.")
@option("--output-topic", required=True, help="Topic for the replayed labels (its own: not the live worker's).")
@option("--dlq-topic", default=None, help="Dead-letter topic of the replay. [default: <output-topic>.dlq]")
@option("--from-time", default=None, metavar="ISO-8601",
        help="Start at the first record whose timestamp is at or after this time (with a UTC offset, e.g. "
             "2026-12-07T09:30:00Z). [default: the earliest offset]")
@option("--from-offsets", default=None, metavar="P:OFFSET,...",
        help="Start each listed partition at its offset (e.g. 0:1200,1:900); partitions not listed are not replayed.")
@option("--model-version", default=None,
        help="With --model naming a store: the version that labels the slice. [default: the store's CURRENT when "
             "the job starts] It is pinned: a promotion during the replay changes nothing.")
@engine_options(batch_size=256, batch_help="Close a batch at this many records (as in run).")
@option("--max-wait-ms", default=20, type=click.IntRange(0), help="Close a batch this long after its first record.")
@option("--max-batch-tokens", default=65536, type=click.IntRange(1), help="Close a batch at this many tokens.")
@option("--max-in-flight", default=0, type=click.IntRange(0),
        help="Pause fetching above this many records polled but not yet answered (0 = 4 x --batch-size, "
             "at least 1024).")
@option("--commit-interval-ms", default=1000, type=click.IntRange(1),
        help="How often the checkpoint (offsets of answered records) is committed.")
@option("--metrics-port", default=0, type=click.IntRange(0, 65535),
        help="Serve /metrics, /healthz, /readyz on this port (0 = off).")
@option("--metrics-host", default="0.0.0.0", help="Address the metrics server listens on.")
@option("--shutdown-timeout-s", default=20.0, type=FiniteFloat(),
        help="Drain budget at the end of the slice and on SIGTERM: answer what is in hand, commit, exit.")
@option("--send-retry-backoff-max-s", default=30.0, type=FiniteFloat(),
        help="A send the broker refuses is retried after 0.5 s, doubling up to this many seconds.")
@security_options
@option("--log-format", default="auto", type=click.Choice(LOG_FORMATS),
        help="auto = console on a terminal, JSON lines otherwise.")
@option("--log-level", default="info", type=click.Choice(LOG_LEVELS, case_sensitive=False), help="Log level.")
def replay(sasl_password_file: Path | None, job: str, from_time: str | None, from_offsets: str | None,
           model_version: str | None, **options: Any) -> None:
    """Label a slice of --topic's history with one model version into --output-topic, then exit 0.

    The slice runs from the earliest offset, --from-time or --from-offsets to the end offsets recorded when the
    job first started (with read_committed, the last stable offset): records that arrive later are not part of
    it. Partitions are read by assignment, so no consumer group is joined and the live group's committed offsets
    are untouched. The worker's pipeline labels it (same batching, dead letters, at-least-once commits, metrics).
    Progress is a status line on a terminal, replay_progress log lines otherwise. SIGTERM/SIGINT drain and exit
    0; the same command then goes on from the checkpoint. Ends with a summary (replay_finished).

    Exit status: 0 after the slice or a drain; 1 failed while running; 2 could not start.
    """
    from worker.replay_source import ReplaySlice, replay_group_id
    from worker.settings import build_settings, read_password

    _require(bool(job.strip()) and job == job.strip(), "--job", "must be a name without surrounding spaces")
    _require(not (from_time and from_offsets), "--from-time", "give --from-time or --from-offsets, not both")
    replay_slice = ReplaySlice(from_time_ms=_parse_time(from_time) if from_time else None,
                               from_offsets=_parse_offsets(from_offsets) if from_offsets else None)
    options["model"] = _pinned_bundle(options["model"], model_version)
    options["log_level"] = options["log_level"].lower()
    options["dlq_topic"] = options["dlq_topic"] or f"{options['output_topic']}.dlq"
    settings = build_settings(sasl_password=read_password(sasl_password_file), group_id=replay_group_id(job),
                              replay_job=job, **options)
    _require(settings.output_topic != settings.topic, "--output-topic", "must differ from --topic")
    sys.exit(run_replay(settings, replay_slice))


def run_replay(settings: Any, replay_slice: Any) -> int:
    import structlog

    from worker.replay_progress import ReplayProgress
    from worker.replay_source import open_replay_source
    from worker.run_command import run_worker

    progress = ReplayProgress(settings.replay_job, structlog.get_logger("lstm-worker"))
    opened: list[Any] = []
    open_source = open_replay_source(replay_slice, progress)

    def open_and_keep(worker_settings: Any) -> Any:
        opened.append(open_source(worker_settings))
        return opened[-1]

    code = run_worker(settings, open_and_keep)
    source = opened[0]
    progress.finish(source.committed, source.complete, code)
    return code


def _require(condition: bool, option_name: str, message: str) -> None:
    if not condition:
        raise click.BadParameter(message, param_hint=option_name)


def _parse_time(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time with a UTC offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time (e.g. 2026-12-07T09:30:00Z)",
                                 param_hint="--from-time") from None
    _require(moment.tzinfo is not None, "--from-time", f"{text!r} has no UTC offset: add Z or +01:00")
    return int(moment.timestamp() * 1000)


def _parse_offsets(text: str) -> tuple[tuple[int, int], ...]:
    pairs = []
    for part in text.split(","):
        partition, _, offset = part.strip().partition(":")
        try:
            pairs.append((int(partition), int(offset)))
        except ValueError:
            raise click.BadParameter(f"{part.strip()!r} is not PARTITION:OFFSET", param_hint="--from-offsets") \
                from None
        _require(pairs[-1][0] >= 0 and pairs[-1][1] >= 0, "--from-offsets", f"{part.strip()!r} is negative")
    _require(len({p for p, _ in pairs}) == len(pairs), "--from-offsets", "a partition is named twice")
    return tuple(pairs)


def _pinned_bundle(model: Path, version: str | None) -> Path:
    """The bundle that labels the whole slice: a store's --model-version (or CURRENT now), never watched."""
    from core.exceptions import StoreError
    from core.model_store import ModelStore

    if not ModelStore.is_store(model):
        _require(version is None, "--model-version", "needs --model to name a model store")
        return model
    store = ModelStore(model)
    try:
        return store.bundle_path(version) if version is not None else store.current_bundle_path()
    except StoreError as exc:
        raise CannotStart(f"--model: {exc}") from None
