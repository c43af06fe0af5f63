"""``lstm-worker send``: a file (CSV, TSV, JSONL or text) or stdin to a topic, every record's delivery checked.

A CSV or TSV row becomes a JSON object of its columns (the worker's ``--text-field`` picks the text);
any other file is one record per non-empty line, sent as it is (a JSONL line stays JSON, a text line
stays text). A row's ``--key-field`` value, when present, is the record key, so its label keeps it.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import click
from kafka import KafkaProducer
from kafka.errors import KafkaError

from worker.kafka_tools import bootstrap_servers_option, client_config, quiet_client_logs, require_topic, unreachable
from worker.options import CannotStart, option

DELIMITERS = {".csv": ",", ".tsv": "\t"}
Record = tuple[bytes | None, bytes]


@click.command("send")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default="-")
@option("--topic", required=True, help="Topic to write to (it must exist: `lstm-worker topics create`).")
@bootstrap_servers_option
@option("--key-field", default="id",
        help="Column or JSON field whose value becomes the record key (and the label's id); rows without it "
             "get no key.")
@option("--limit", default=0, type=click.IntRange(0), help="Send at most this many records (0 = all).")
def send(source: Path, topic: str, bootstrap_servers: str, key_field: str, limit: int) -> None:
    """Send SOURCE (a .csv/.tsv file, a JSONL or text file, or - for stdin) to a topic, one record each.

    \b
    Examples:
      lstm-worker send messages.csv --topic incoming
      echo "win a free cruise, reply now" | lstm-worker send --topic incoming
    """
    if str(source) != "-" and not source.is_file():
        raise CannotStart(f"{source}: no such file")
    require_topic(bootstrap_servers, topic)
    with _open(source) as stream:
        records = _records(stream, DELIMITERS.get(source.suffix.lower()), key_field)
        sent = _send_all(bootstrap_servers, topic, records, limit)
    click.echo(f"sent {sent} records to {topic} ({bootstrap_servers}), every one acknowledged", err=True)


def _open(source: Path) -> TextIO:
    if str(source) == "-":
        return open(sys.stdin.fileno(), encoding="utf-8-sig", errors="strict", closefd=False)
    return source.open(encoding="utf-8-sig", newline="")


def _records(stream: TextIO, delimiter: str | None, key_field: str) -> Iterator[Record]:
    if delimiter is None:
        for line in stream:
            line = line.rstrip("\r\n")
            if line.strip():
                yield _key_of_json_line(line, key_field), line.encode("utf-8")
        return
    reader = csv.DictReader(stream, delimiter=delimiter)
    for row in reader:
        row = {name: value for name, value in row.items() if name is not None}  # cells past the header's columns
        key = row.get(key_field)
        yield (key.encode("utf-8") if key else None), json.dumps(row, ensure_ascii=False).encode("utf-8")


def _key_of_json_line(line: str, key_field: str) -> bytes | None:
    if not line.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(line).get(key_field)
    except (ValueError, AttributeError):
        return None  # the worker dead-letters it and says why; the record is still sent
    return str(value).encode("utf-8") if value is not None else None


def _send_all(bootstrap_servers: str, topic: str, records: Iterator[Record], limit: int) -> int:
    with quiet_client_logs():
        try:
            producer = KafkaProducer(**client_config(bootstrap_servers), acks="all",
                                     linger_ms=5, allow_auto_create_topics=False)
        except (KafkaError, OSError) as exc:
            raise unreachable(bootstrap_servers, exc) from None
        futures = []
        try:
            for number, (key, value) in enumerate(records, start=1):
                futures.append((number, producer.send(topic, key=key, value=value)))
                if number == limit:
                    break
            producer.flush(timeout=60)
            for number, future in futures:
                try:
                    future.get(timeout=0)
                except KafkaError as exc:
                    raise click.ClickException(f"record {number} was not delivered ({type(exc).__name__}: "
                                               f"{exc}); records before it may have been") from None
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"the input is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                       f"the {len(futures)} records before it were sent") from None
        except csv.Error as exc:
            raise click.ClickException(f"the input is not valid CSV ({exc}); "
                                       f"the {len(futures)} records before it were sent") from None
        finally:
            producer.close(timeout=10)
    return len(futures)
