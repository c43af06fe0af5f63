"""Would a stronger linear TF-IDF branch lift the default hybrid model? (#18)

Takes a finished default run (its members, vocabulary and folds) and swaps only the linear model
mixed with the LSTMs. Every variant is chosen and scored exactly the way ``lstm-train`` chooses
today's branch: on fold k, member k's probabilities and a linear model fitted on the fold's
complement; ``choose_bow_weight`` picks (weight, sharpness) on the pooled folds. The test split is
only reported beside that choice, never used to make it.

Variants (all on the checkpoint's vocabulary ids, ``<unk>`` left out, like the exported branch):

- the tokens read: the first ``max_len`` the LSTMs see, or the whole document;
- word bigrams: two consecutive token ids that are both real words. A ``<unk>`` between two words
  breaks the pair (the words either side of it were never adjacent), so each bigram is a
  position t with ``ids[t-1] > UNK_ID`` and ``ids[t] > UNK_ID``, hashed into ``buckets`` columns
  with ``(prev * BIGRAM_HASH_MULTIPLIER + cur) mod buckets`` (int64 Mul/Add/Mod: the graph can compute it);
  one sublinear TF-IDF over ``[vocab | buckets]`` columns and one LinearSVC;
- LinearSVC's C.

    python -m bench.branch_variants --checkpoint /tmp/default-run2/checkpoint.pt \\
        --data /work/shared/data/20news-bydate.tar.gz

Writes ``bench/results/branch-variants-<UTC timestamp>.json``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click
import numpy as np
import torch

from bench.provenance import command_line, write_result
from core.vocab import UNK_ID, Vocabulary
from training.bag_of_words import branch_margins, fit_bag_of_words, token_counts
from training.bow_selection import FoldScores, choose_bow_weight, mixed_probabilities
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.model import BIGRAM_HASH_MULTIPLIER, build_model
from training.pipeline import prepare_splits
from training.predict import encode_all, predict_logits, softmax
from training.prepared import PreparedData

ROOT = Path(__file__).resolve().parents[1]
WHOLE_DOCUMENT = 1_000_000  # a max_len no 20 Newsgroups post reaches: every token is read
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Variant:
    name: str
    max_len: int  # tokens read per document (WHOLE_DOCUMENT: all)
    buckets: int = 0  # hashed bigram columns (0: unigrams only)
    c: float = 1.0  # LinearSVC's C


def variants(max_len: int) -> list[Variant]:
    base = [Variant(f"unigram-{max_len}", max_len), Variant("unigram-whole", WHOLE_DOCUMENT)]
    for tokens, label in ((max_len, str(max_len)), (WHOLE_DOCUMENT, "whole")):
        for bits in (18, 20):
            base.append(Variant(f"bigram{bits}-{label}", tokens, 2**bits))
    with_c = [replace(v, name=f"{v.name}-C{c:g}", c=c) for v in base[2:] for c in (0.5, 2.0)]
    return base + with_c


def distinct_bigrams(id_lists: Sequence[np.ndarray], vocab_size: int) -> int:
    """Different real-word bigrams before hashing (to read the buckets' collisions against)."""
    pairs = [ids[:-1] * vocab_size + ids[1:] for ids in id_lists]
    real = [p[(ids[:-1] > UNK_ID) & (ids[1:] > UNK_ID)] for p, ids in zip(pairs, id_lists, strict=True)]
    return int(len(np.unique(np.concatenate(real))))


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return round(float((scores.argmax(axis=1) == labels).mean()), 5)


def measure(variant: Variant, data: dict, log) -> dict:
    """One variant: chosen out of fold like the default branch, then scored on the test split."""
    vocab_size, classes, seed = data["vocab_size"], data["classes"], data["seed"]
    ids = [x[: variant.max_len] for x in data["train_ids"]]
    counts = token_counts(ids, vocab_size, variant.buckets)  # only to count the features used
    labels = data["train_labels"]

    def fitted(rows) -> dict:  # the model's own fit (float32 buffers), at this variant's C
        return fit_bag_of_words([ids[i] for i in rows], labels[rows], vocab_size, classes, seed, variant.buckets,
                                c=variant.c)

    folds = []
    for (kept, held), probabilities in zip(data["folds"], data["fold_probabilities"], strict=True):
        margins = branch_margins(fitted(kept), [ids[i] for i in held], variant.buckets)
        folds.append(FoldScores(probabilities, margins, labels[held]))
    choice = choose_bow_weight(folds)
    started = time.perf_counter()
    buffers = fitted(np.arange(len(ids)))
    fit_seconds = time.perf_counter() - started
    test_margins = branch_margins(buffers, [x[: variant.max_len] for x in data["test_ids"]], variant.buckets)
    mixed = mixed_probabilities(data["test_lstm"], test_margins, choice["weight"], choice["sharpness"])
    row = {**asdict(variant), "max_len": "whole" if variant.max_len == WHOLE_DOCUMENT else variant.max_len,
           "features": int(counts.shape[1]), "active_features": int((counts.getnnz(axis=0) > 0).sum()),
           "oof_linear_accuracy": choice["linear_accuracy"], "oof_lstm_accuracy": choice["lstm_accuracy"],
           "oof_mixed_accuracy": choice["accuracy"], "weight": choice["weight"], "sharpness": choice["sharpness"],
           "test_linear_accuracy": accuracy(test_margins, data["test_labels"]),
           "test_mixed_accuracy": accuracy(mixed, data["test_labels"]), "fit_seconds": round(fit_seconds, 1)}
    log(f"{variant.name:<22} OOF linear {row['oof_linear_accuracy']:.4f} mixed {row['oof_mixed_accuracy']:.4f} "
        f"(w {row['weight']}, s {row['sharpness']:g}) | test linear {row['test_linear_accuracy']:.4f} mixed "
        f"{row['test_mixed_accuracy']:.4f} | {row['active_features']} features, fit {fit_seconds:.1f}s")
    return {"row": row, "test_margins": test_margins}


def lstm_part(checkpoint: dict, data: dict, log) -> dict:
    """Member k's probabilities on fold k (as the run chose with) and the ensemble's on the test split."""
    model = build_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["state_dict"])
    ensemble = model.lstm  # HybridClassifier: the members' average of probabilities, then the branch
    started = time.perf_counter()
    short = [x[: data["max_len"]] for x in data["train_ids"]]
    fold_probabilities = [softmax(predict_logits(member, [short[i] for i in held], CPU))
                          for member, (_, held) in zip(ensemble.members, data["folds"], strict=True)]
    test_lstm = softmax(predict_logits(ensemble, [x[: data["max_len"]] for x in data["test_ids"]], CPU))
    log(f"LSTM part: {len(fold_probabilities)} folds and the test split scored in {time.perf_counter() - started:.0f}s")
    buffers = {name: checkpoint["state_dict"][f"bag_of_words.{name}"] for name in ("idf", "weight", "bias")}
    stored_margins = branch_margins(buffers, [x[: data["max_len"]] for x in data["test_ids"]],
                                    model.config.bow_bigram_buckets)
    return {"fold_probabilities": fold_probabilities, "test_lstm": test_lstm, "stored_margins": stored_margins,
            "bow_weight": model.config.bow_weight, "bow_sharpness": model.config.bow_sharpness,
            "bow_bigram_buckets": model.config.bow_bigram_buckets}


def load(checkpoint: dict, data_path: str, log) -> dict:
    """The run's documents, folds and ids: its own config, vocabulary and split code."""
    config = TrainConfig(**{**checkpoint["train_config"], "data": data_path, "resume": False})
    full, _ = prepare_splits(replace(config, val_fraction=0.0))
    vocab = Vocabulary.from_dict(checkpoint["vocab"])
    started = time.perf_counter()
    train_ids = encode_all(vocab, full.train_texts, WHOLE_DOCUMENT)  # a prefix of it is what max_len reads
    test_ids = encode_all(vocab, full.test_texts, WHOLE_DOCUMENT)
    lengths = np.array([len(x) for x in train_ids])
    log(f"data: {len(train_ids)} train / {len(test_ids)} test documents encoded in "
        f"{time.perf_counter() - started:.0f}s; train tokens per document: median {np.median(lengths):.0f}, "
        f"over {config.max_len}: {(lengths > config.max_len).mean():.1%}, longest {lengths.max()}")
    return {"train_ids": train_ids, "test_ids": test_ids, "train_labels": np.asarray(full.train_labels),
            "test_labels": np.asarray(full.test_labels), "folds": PreparedData(full).folds(config),
            "vocab_size": len(vocab), "classes": len(full.label_names), "seed": config.seed,
            "max_len": config.max_len, "config": config.to_dict(),
            "train_tokens": {"median": float(np.median(lengths)), "longest": int(lengths.max()),
                             "share_over_max_len": round(float((lengths > config.max_len).mean()), 4)}}


@click.command()
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(exists=True),
              help="A default run's checkpoint.pt (an ensemble with a linear branch), or its folder.")
@click.option("--data", envvar="LSTM_TRAIN_DATA", required=True, show_envvar=True,
              help="The data the run trained on (its test split is only reported).")
@click.option("--only", multiple=True, help="Measure only this variant (repeat); default: all.")
@click.option("--threads", default=2, show_default=True, help="PyTorch threads for the LSTM part.")
@click.option("--output", type=click.Path(path_type=Path), default=ROOT / "bench/results", show_default=True,
              help="Folder for branch-variants-<UTC timestamp>.json.")
def main(checkpoint_path: str, data: str, only: tuple[str, ...], threads: int, output: Path) -> None:
    """OOF (choice) and test (report) accuracy of the default model with each linear branch variant."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    log = click.echo
    checkpoint = load_checkpoint(checkpoint_path)
    inputs = load(checkpoint, data, log)
    lstm = lstm_part(checkpoint, inputs, log)
    inputs.update(fold_probabilities=lstm["fold_probabilities"], test_lstm=lstm["test_lstm"])
    labels = inputs["test_labels"]
    stored_mix = mixed_probabilities(lstm["test_lstm"], lstm["stored_margins"], lstm["bow_weight"],
                                     lstm["bow_sharpness"])
    reference = {"test_lstm_accuracy": accuracy(lstm["test_lstm"], labels),
                 "test_stored_branch_accuracy": accuracy(lstm["stored_margins"], labels),
                 "test_stored_model_accuracy": accuracy(stored_mix, labels),
                 "stored_weight": lstm["bow_weight"], "stored_sharpness": lstm["bow_sharpness"]}
    log(f"checkpoint as saved: test LSTM {reference['test_lstm_accuracy']:.4f}, branch "
        f"{reference['test_stored_branch_accuracy']:.4f}, model {reference['test_stored_model_accuracy']:.4f}")
    chosen = [v for v in variants(inputs["max_len"]) if not only or v.name in only]
    rows = []
    for variant in chosen:
        measured = measure(variant, inputs, log)
        if (variant.max_len, variant.buckets, variant.c) == (inputs["max_len"], lstm["bow_bigram_buckets"], 1.0):
            # Refitted on every training post like the saved branch: its test margins must be the saved ones.
            reference["refit_matches_stored_branch"] = bool(
                np.allclose(measured["test_margins"], lstm["stored_margins"], atol=1e-4))
        if variant.buckets:
            measured["row"]["distinct_bigrams"] = distinct_bigrams(
                [x[: variant.max_len] for x in inputs["train_ids"]], inputs["vocab_size"])
        rows.append(measured["row"])
    result = {"command": command_line("bench.branch_variants"),
              "measured_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "checkpoint": str(checkpoint_path), "train_config": inputs["config"],
              "train_tokens": inputs["train_tokens"], "hash": f"(prev * {BIGRAM_HASH_MULTIPLIER} + cur) mod buckets",
              "reference": reference, "variants": rows, "torch_threads": torch.get_num_threads(),
              "wall_seconds": round(time.perf_counter() - started, 1),
              "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    path = write_result(output / f"branch-variants-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json", result)
    log(f"wrote {path} ({result['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
