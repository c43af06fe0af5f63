"""``lstm-worker``: stream text classification over Kafka with an exported model bundle."""

from __future__ import annotations

import click

from worker import __version__
from worker.broker_command import broker
from worker.classify_command import classify
from worker.models_command import models, promote
from worker.replay_command import replay
from worker.run_command import run
from worker.send_command import send
from worker.tail_command import tail
from worker.topics_command import topics


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lstm-worker")
def main() -> None:
    """Classify text messages from Kafka with an LSTM model bundle (ONNX Runtime, no torch)."""


main.add_command(run)
main.add_command(replay)
main.add_command(classify)
main.add_command(broker)
main.add_command(topics)
main.add_command(send)
main.add_command(tail)
main.add_command(promote)
main.add_command(models)
