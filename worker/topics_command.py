"""``lstm-worker topics create``: make the topics a stream needs, without other Kafka tooling."""

from __future__ import annotations

import click

from worker.kafka_tools import bootstrap_servers_option, create_topics, with_result_topics
from worker.options import option

partitions_option = option("--partitions", default=3, type=click.IntRange(1),
                           help="Partitions of each new topic: at most this many workers share one topic.")
no_results_option = option("--no-results", is_flag=True, default=False,
                           help="Create only the topics named, not also each one's result topics NAME.labels and "
                                "NAME.dlq (the names `lstm-worker run --topic NAME` writes to by default).")


@click.group("topics")
def topics() -> None:
    """Create Kafka topics (on the development broker or any plain-text Kafka)."""


@topics.command("create")
@click.argument("names", nargs=-1, required=True)
@bootstrap_servers_option
@partitions_option
@no_results_option
def create(names: tuple[str, ...], bootstrap_servers: str, partitions: int, no_results: bool) -> None:
    """Create the topics NAMES; a topic that already exists is left as it is.

    \b
    Example:
      lstm-worker topics create incoming     # incoming, incoming.labels, incoming.dlq
    """
    wanted = list(names) if no_results else with_result_topics(names)
    created, existing = create_topics(bootstrap_servers, wanted, partitions)
    report_topics(created, existing, partitions)


def report_topics(created: list[str], existing: list[str], partitions: int) -> None:
    if created:
        click.echo(f"created {', '.join(created)} ({partitions} partitions each)", err=True)
    if existing:
        click.echo(f"already there: {', '.join(existing)}", err=True)
