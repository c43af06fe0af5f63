"""``lstm-worker tail``: print the records of a topic as they arrive (labels, dead letters, anything).

It reads every partition without joining a consumer group, so it never takes records from a worker
and commits nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from core.cli_types import FiniteFloat
from worker.kafka_tools import bootstrap_servers_option, client_config, missing_topic, quiet_client_logs, unreachable
from worker.options import option

_POLL_MS = 200


@click.command("tail")
@option("--topic", required=True, help="Topic to read, e.g. incoming.labels or incoming.dlq.")
@bootstrap_servers_option
@option("--from-beginning", is_flag=True, default=False,
        help="Start at the oldest record of each partition instead of the records that arrive from now on.")
@option("--max-messages", default=0, type=click.IntRange(0), help="Stop after this many records (0 = no limit).")
@option("--timeout", default=0.0, type=FiniteFloat(min=0.0), metavar="SECONDS",
        help="Stop when no record arrived for this long (0 = wait until Ctrl-C).")
@option("--fields", default="",
        help="Print only these comma-separated JSON fields of each record, tab-separated (e.g. id,label,score); "
             "a dead letter's error.type header counts as a field. Default: the whole value.")
def tail(topic: str, bootstrap_servers: str, from_beginning: bool, max_messages: int, timeout: float,
         fields: str) -> None:
    """Print each record of a topic, one line each, as it arrives; Ctrl-C stops (exit 0).

    \b
    Example:
      lstm-worker tail --topic incoming.labels --from-beginning --fields id,label,score
    """
    wanted = [name.strip() for name in fields.split(",") if name.strip()]
    with quiet_client_logs():
        consumer = _assigned_consumer(bootstrap_servers, topic, from_beginning)
        printed = 0
        try:
            last_arrival = time.monotonic()
            while not max_messages or printed < max_messages:
                room = max_messages - printed if max_messages else 500
                batches = consumer.poll(timeout_ms=_POLL_MS, max_records=room)
                for records in batches.values():
                    for record in records:
                        click.echo(_render(record, wanted))
                        printed += 1
                if batches:
                    last_arrival = time.monotonic()
                elif timeout and time.monotonic() - last_arrival >= timeout:
                    break
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:  # `tail ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        finally:
            consumer.close()
    click.echo(f"{printed} records from {topic}", err=True)


def _assigned_consumer(bootstrap_servers: str, topic: str, from_beginning: bool) -> KafkaConsumer:
    try:
        consumer = KafkaConsumer(**client_config(bootstrap_servers), group_id=None,
                                 enable_auto_commit=False, allow_auto_create_topics=False,
                                 isolation_level="read_committed")
    except (KafkaError, OSError) as exc:
        raise unreachable(bootstrap_servers, exc) from None
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        consumer.close()
        raise missing_topic(topic)
    assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
    consumer.assign(assigned)
    if from_beginning:
        consumer.seek_to_beginning(*assigned)
    else:
        consumer.seek_to_end(*assigned)
    return consumer


def _render(record, wanted: list[str]) -> str:
    value = record.value.decode("utf-8", "replace") if record.value is not None else "null"
    if not wanted:
        return value
    try:
        body = json.loads(value)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"text": value}  # a dead letter's original payload need not be JSON
    headers = {name: content.decode("utf-8", "replace") for name, content in record.headers or []}
    return "\t".join(_cell(body.get(name, headers.get(name, ""))) for name in wanted)


def _cell(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
