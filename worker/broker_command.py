"""``lstm-worker broker``: a local in-memory Kafka-protocol broker for trying the tool."""

from __future__ import annotations

import signal

import click

from worker.options import CannotStart, option
from worker.topics_command import no_results_option, partitions_option, report_topics


@click.command("broker")
@click.option("--port", default=9092, show_default=True, type=click.IntRange(1, 65535),
              envvar="LSTM_WORKER_BROKER_PORT", show_envvar=True, help="TCP port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="LSTM_WORKER_BROKER_HOST",
              show_envvar=True, help="Address to listen on and advertise to clients.")
@option("--topics", default="", metavar="NAME[,NAME...]",
        help="Topics to create once the broker is up (as `lstm-worker topics create` does).")
@partitions_option
@no_results_option
def broker(port: int, host: str, topics: str, partitions: int, no_results: bool) -> None:
    """Run a development Kafka broker (Tansu, in memory) in the foreground; Ctrl-C stops it.

    Everything is lost when it stops. For demos and trying lstm-worker, not production.

    \b
    Example:
      lstm-worker broker --topics incoming   # incoming, incoming.labels, incoming.dlq
    """
    from worker.devbroker import BrokerError, DevBroker
    from worker.kafka_tools import create_topics, with_result_topics

    names = [name.strip() for name in topics.split(",") if name.strip()]
    dev = DevBroker(port=port, host=host)
    try:
        dev.start(foreground=True)
    except BrokerError as exc:  # not installed, port taken, Tansu did not start: nothing runs
        raise CannotStart(str(exc)) from None
    # Stop like Ctrl-C, so the child is always reaped; a SIGKILL is covered by the child's death signal.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        if names:
            created, existing = create_topics(dev.bootstrap_servers,
                                              names if no_results else with_result_topics(names), partitions)
            report_topics(created, existing, partitions)
        click.echo(f"Tansu broker listening on {dev.bootstrap_servers} (in memory); Ctrl-C to stop", err=True)
        code = dev.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        dev.stop()
    if code:
        raise click.ClickException(f"tansu exited with code {code}")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt
