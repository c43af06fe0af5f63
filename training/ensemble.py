"""``--members N``: N LSTMs trained side by side whose class probabilities are averaged.

Why: on 20 Newsgroups one LSTM's run-to-run spread (~0.8 points of test accuracy between seeds)
is as large as any setting we changed, and averaging two of them was worth 0.7-0.9 points
(docs/training.md). How each member differs from the others:

- it holds out its own validation fold (disjoint folds of one stratified shuffle; member 1's is the
  split a single model would use), stops early and picks its checkpoint on it, and trains on the
  rest, so together the members learn from every labelled document;
- it gets its own seed (``--seed`` + member index) for initialisation, batch order and dropout, and
  its own out-of-fold teacher when distillation is on.

What they share: one vocabulary and one set of initial word vectors, both built from all the
training documents (no labels involved), because the exported graph has one tokenizer and one
vocabulary. Members run in separate processes (``--jobs``, one PyTorch thread each by default), so
on two cores two members take about the time of one.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from core.vocab import Vocabulary
from training.bag_of_words import with_bag_of_words
from training.bow_selection import FoldScores, choose_bow_weight, fold_margins
from training.checkpoint import BEST_FILE, LAST_FILE, load_checkpoint, make_checkpoint, save_checkpoint
from training.config import AUTO, TrainConfig
from training.data import validation_indices
from training.model import build_model
from training.predict import encode_all, predict_logits, softmax
from training.trainer import Log, MemberSetup, TrainingData, TrainResult, initial_vectors, train

MEMBER_DIR = "member-{}"


def member_folds(full: TrainingData, config: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each member's ``(train, validation)`` indices into all training documents (its own validation fold)."""
    return [validation_indices(full.train_labels, config.val_fraction, config.seed, fold=i)
            for i in range(config.members)]


def member_dataset(full: TrainingData, config: TrainConfig, index: int) -> TrainingData:
    """Member ``index``'s train/validation split of all training documents."""
    kept, held = member_folds(full, config)[index]
    return _subset(full, kept, held)


def _subset(full: TrainingData, kept: np.ndarray, held: np.ndarray) -> TrainingData:
    return replace(full, train_texts=[full.train_texts[i] for i in kept],
                   train_labels=[int(full.train_labels[i]) for i in kept],
                   val_texts=[full.train_texts[i] for i in held], val_labels=[int(full.train_labels[i]) for i in held])


def resolve_jobs(config: TrainConfig) -> int:
    """Members trained at once: ``--jobs``, else all of them up to twice the cores at ``--threads`` each (GPU: 1).

    All at once rather than in waves of one per core: three members on two cores finish in 1.5
    member-times that way, and in 2 as two and then one (one-thread LSTM training is compute-bound,
    so sharing a core costs only time). Each member process holds about 0.8 GB on 20NG.
    """
    if config.device == "cuda":
        return 1
    if config.jobs:
        return min(config.jobs, config.members)
    # The cores this process may run on (a cpuset in a container), not the whole machine's.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_member = config.threads if config.threads > 0 else cores
    return max(1, min(config.members, 2 * cores // per_member))


def _train_member(config: TrainConfig, dataset: TrainingData, setup: MemberSetup) -> dict:
    """One member, in its own process or in this one; returns its summary (weights stay on disk)."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    setup.output.mkdir(parents=True, exist_ok=True)
    if config.resume and not (setup.output / LAST_FILE).is_file():
        config = replace(config, resume=False)  # interrupted before this member's first epoch ended
    device = torch.device(config.device)
    result = train(config, dataset, device, lambda line: print(f"[{setup.name}] {line}", flush=True), member=setup)
    # Its fold, scored by the member that did not train on it: what --bow-weight auto chooses with.
    val_ids = encode_all(setup.vocab, dataset.val_texts, config.max_len)
    val_probabilities = softmax(predict_logits(result.model, val_ids, device)) if val_ids else None
    return {"member": setup.name, "seed": setup.seed, "output": str(setup.output),
            "train_documents": len(dataset.train_texts), "validation_documents": len(dataset.val_texts),
            "best_epoch": result.best_epoch, "best_val_macro_f1": _rounded(result.best_val_macro_f1),
            "epochs_run": len(result.history), "stopped_early": result.stopped_early,
            "train_seconds": round(result.train_seconds, 1), "train_cpu_seconds": round(result.train_cpu_seconds, 1),
            "distillation": result.distillation, "embedding_init": result.embedding_source,
            "history": result.history, "val_probabilities": val_probabilities}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


def _train_in_processes(config: TrainConfig, datasets: list[TrainingData], setups: list[MemberSetup],
                        jobs: int) -> list[dict]:
    """Members in ``jobs`` processes; the first member that fails stops the others and raises its error."""
    # spawn, not fork: a forked child would inherit this process's PyTorch thread pool state.
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        pending = [pool.apply_async(_train_member, (config, d, s)) for d, s in zip(datasets, setups, strict=True)]
        while not all(p.ready() for p in pending):
            for member in pending:
                if member.ready() and not member.successful():
                    member.get()  # raises its exception; leaving the with-block terminates the others
            time.sleep(0.5)
        return [p.get() for p in pending]


def train_ensemble(config: TrainConfig, full: TrainingData, log: Log = print) -> TrainResult:
    """Train ``config.members`` members and write the averaged model to ``checkpoint.pt``.

    ``full`` holds every training document (no validation part): each member takes its own fold.
    """
    output = Path(config.output)
    vocab = Vocabulary.build(full.train_texts, max_size=config.vocab_size, min_freq=config.min_freq)
    start = time.perf_counter()
    vectors = initial_vectors(config, full.train_texts, vocab)
    if vectors is not None:
        log(f"embeddings: {vectors.source} init for all members, coverage {vectors.coverage:.1%}, "
            f"{time.perf_counter() - start:.1f}s")
    setups = [MemberSetup(f"member {i + 1}", output / MEMBER_DIR.format(i + 1), config.seed + i, vocab, vectors)
              for i in range(config.members)]
    folds = member_folds(full, config)
    datasets = [_subset(full, kept, held) for kept, held in folds]
    jobs = resolve_jobs(config)
    log(f"{config.members} member(s) in {output}/member-*, {jobs} at a time, "
        f"{len(datasets[0].train_texts)} train / {len(datasets[0].val_texts)} validation documents each")
    began, began_cpu = time.perf_counter(), time.process_time()
    if jobs == 1:
        summaries = [_train_member(config, d, s) for d, s in zip(datasets, setups, strict=True)]
    else:
        summaries = _train_in_processes(config, datasets, setups, jobs)
    elapsed = time.perf_counter() - began
    cpu = sum(s["train_cpu_seconds"] for s in summaries) + time.process_time() - began_cpu

    model = build_model(replace(config.model_config(len(vocab), len(full.label_names)), members=config.members))
    state = {}
    for index, setup in enumerate(setups):
        member_state = load_checkpoint(setup.output / BEST_FILE)["state_dict"]
        prefix = f"members.{index}." if config.members > 1 else ""
        state.update({prefix + key: value for key, value in member_state.items()})
    model.load_state_dict(state)
    selection = None
    if config.bow_branch:
        all_ids = encode_all(vocab, full.train_texts, config.max_len)
        weight, sharpness, selection = _branch_setting(config, full, folds, all_ids, summaries, len(vocab), log)
        if weight > 0:
            # On every training post, like the members together (and the baseline of such a run).
            model = with_bag_of_words(model, all_ids, full.train_labels, weight=weight, sharpness=sharpness,
                                      seed=config.seed, log=log)
    scores = [s["best_val_macro_f1"] for s in summaries]
    mean_f1 = None if None in scores else float(np.mean(scores))  # None: no validation split
    save_checkpoint(make_checkpoint(model=model, vocab=vocab, labels=list(full.label_names), max_len=config.max_len,
                                    train_config=config.to_dict(), epoch=max(s["best_epoch"] for s in summaries),
                                    best_val_macro_f1=mean_f1), output / BEST_FILE)
    history = [{**record, "member": index + 1} for index, s in enumerate(summaries) for record in s["history"]]
    for s in summaries:
        del s["history"], s["val_probabilities"]
    return TrainResult(model, vocab, history, best_epoch=max(s["best_epoch"] for s in summaries),
                       best_val_macro_f1=mean_f1, train_seconds=elapsed, train_cpu_seconds=cpu,
                       stopped_early=all(s["stopped_early"] for s in summaries),
                       embedding_source=summaries[0]["embedding_init"], distillation=summaries[0]["distillation"],
                       members=summaries, bow_selection=selection)


def _branch_setting(config: TrainConfig, full: TrainingData, folds: list[tuple[np.ndarray, np.ndarray]],
                    all_ids: list[np.ndarray], summaries: list[dict], vocab_size: int,
                    log: Log) -> tuple[float, float, dict | None]:
    """The branch's (weight, sharpness): the given ones, or chosen out of fold (with what was compared)."""
    if config.bow_weight != AUTO:
        return float(config.bow_weight), config.bow_sharpness, None
    labels = np.asarray(full.train_labels)
    scored = []
    for (kept, held), summary in zip(folds, summaries, strict=True):
        if len(held) and summary["val_probabilities"] is not None:
            margins = fold_margins([all_ids[i] for i in held], [all_ids[i] for i in kept], labels[kept], vocab_size,
                                   len(full.label_names), config.seed)
            scored.append(FoldScores(summary["val_probabilities"], margins, labels[held]))
    if not scored:
        reason = "no validation folds (--val-fraction 0) to choose it on; pass --bow-weight W for a branch"
        log(f"bag-of-words branch: none, {reason}")
        return 0.0, config.bow_sharpness, {"weight": 0.0, "reason": reason}
    choice = choose_bow_weight(scored)
    log(f"bag-of-words branch: weight {choice['weight']} (sharpness {choice['sharpness']}) chosen out of fold on "
        f"{choice['documents']} validation documents: accuracy {choice['accuracy']:.4f} mixed, "
        f"{choice['lstm_accuracy']:.4f} LSTM alone, {choice['linear_accuracy']:.4f} linear alone")
    return choice["weight"], choice["sharpness"], choice
