"""``lstm-worker broker``: a local in-memory Kafka-protocol broker for trying the tool."""

from __future__ import annotations

import signal

import click


@click.command("broker")
@click.option("--port", default=9092, show_default=True, type=click.IntRange(1, 65535),
              envvar="LSTM_WORKER_BROKER_PORT", show_envvar=True, help="TCP port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="LSTM_WORKER_BROKER_HOST",
              show_envvar=True, help="Address to listen on and advertise to clients.")
def broker(port: int, host: str) -> None:
    """Run a development Kafka broker (Tansu, in memory) in the foreground; Ctrl-C stops it.

    Everything is lost when it stops. For demos and trying lstm-worker, not production.
    """
    from worker.devbroker import BrokerError, DevBroker

    dev = DevBroker(port=port, host=host)
    try:
        dev.start(foreground=True)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Tansu broker listening on {dev.bootstrap_servers} (in memory); Ctrl-C to stop", err=True)
    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C, so the child is always reaped
    try:
        code = dev.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        dev.stop()
    if code:
        raise click.ClickException(f"tansu exited with code {code}")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt
