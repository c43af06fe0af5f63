"""How optimistic are an ensemble's fold scores because its vocabulary counted every training post?

An ensemble's members share one vocabulary built from all training posts, their validation folds
included. This scores each member of a finished run on its own fold twice: as trained, and with the
vocabulary entries that exist only because the fold was counted turned into ``<unk>`` (what a
vocabulary built from the member's training part alone would give). Prints one line per member.

    python -m bench.fold_vocabulary --run artifacts/default --data ../shared/data/20news-bydate.tar.gz
"""

from __future__ import annotations

import json
from dataclasses import replace

import click
import numpy as np
import torch

from core.vocab import UNK_ID, Vocabulary
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.model import build_model
from training.pipeline import prepare_splits
from training.predict import encode_all, predict_logits
from training.prepared import PreparedData


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A finished lstm-train output folder with member-1/, member-2/, ...")
@click.option("--data", envvar="LSTM_TRAIN_DATA", required=True, show_envvar=True,
              help="The data the run trained on.")
def main(run_dir: str, data: str) -> None:
    """Each member's fold accuracy with and without the fold-only vocabulary entries."""
    stored = json.loads(open(f"{run_dir}/metrics.json", encoding="utf-8").read())["config"]
    config = TrainConfig(**{**stored, "data": data, "output": run_dir, "resume": False})
    full, _ = prepare_splits(replace(config, val_fraction=0.0))
    labels = np.asarray(full.train_labels)
    for index, (kept, held) in enumerate(PreparedData(full).folds(config)):
        checkpoint = load_checkpoint(f"{run_dir}/member-{index + 1}")
        vocab = Vocabulary.from_dict(checkpoint["vocab"])
        own = set(Vocabulary.build([full.train_texts[i] for i in kept], max_size=config.vocab_size,
                                   min_freq=config.min_freq).tokens)
        outside = np.array([token not in own for token in vocab.tokens])
        model = build_model(checkpoint["model_config"])
        model.load_state_dict(checkpoint["state_dict"])
        ids = encode_all(vocab, [full.train_texts[i] for i in held], config.max_len)
        masked = [np.where(outside[x], UNK_ID, x) for x in ids]
        scores = [float((predict_logits(model, x, torch.device("cpu")).argmax(1) == labels[held]).mean())
                  for x in (ids, masked)]
        share = sum(int((x != m).sum()) for x, m in zip(ids, masked, strict=True)) / sum(len(x) for x in ids)
        click.echo(f"member {index + 1}: fold accuracy {scores[0]:.4f} as trained, {scores[1]:.4f} with the "
                   f"{int(outside.sum())} fold-only vocabulary entries as <unk> ({share:.2%} of the fold's tokens)")


if __name__ == "__main__":
    main()
