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

:func:`train_configuration` is the one way a configuration is trained: by a plain run (which gives it
an output folder for checkpoints and ``--resume``) and by each trial of a ``--time-budget`` search
(in memory, against a deadline). A single LSTM without a linear branch is its one-member case that
builds its vocabulary from its own training part and saves straight into the output folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from training.bag_of_words import features_name, with_bag_of_words
from training.bow_selection import FoldScores, choose_branch, fold_margins, mixed_probabilities
from training.checkpoint import BEST_FILE, LAST_FILE, make_checkpoint, save_checkpoint
from training.config import AUTO, TrainConfig
from training.member_processes import fit_in_processes, silent, train_member
from training.model import build_model
from training.prepared import Features, PreparedData, shares_vocabulary
from training.trainer import Log, MemberFit, MemberJob, TrainResult
from training.transfer import check_shape, init_report

MEMBER_DIR = "member-{}"


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


def _jobs(config: TrainConfig, prepared: PreparedData, features: Features, output: Path | None,
          deadline: float | None) -> list[MemberJob]:
    full, shared = prepared.full, shares_vocabulary(config)
    labels = np.asarray(full.train_labels)
    init = prepared.init_source(config)
    jobs = []
    for index, (kept, held) in enumerate(prepared.folds(config)):
        folder = None if output is None else output / MEMBER_DIR.format(index + 1) if shared else output
        jobs.append(MemberJob(
            name=f"member {index + 1}" if shared else "", seed=config.seed + index, vocab=features.vocab,
            vectors=features.vectors, train_texts=[full.train_texts[i] for i in kept],
            train_ids=[features.ids[i] for i in kept], train_labels=labels[kept].tolist(),
            val_ids=[features.ids[i] for i in held], val_labels=labels[held].tolist(),
            label_names=list(full.label_names), teacher_margins=prepared.teacher_margins(config, index),
            output=folder, deadline=deadline, init=init and init.for_member(index)))
    return jobs


def train_configuration(config: TrainConfig, prepared: PreparedData, log: Log = print, *,
                        output: Path | None = None, deadline: float | None = None, quiet: bool = False) -> TrainResult:
    """Train ``config``'s members on their folds, add the linear branch, and score the result on validation.

    ``TrainResult.val_score`` is the pooled out-of-fold accuracy of the model as built: each member's
    fold scored by that member, mixed (with the branch) with a linear model fitted without the fold.
    ``output``: write each member's checkpoints there (``--resume`` continues them) and the assembled
    model to ``checkpoint.pt``; without it nothing is written. ``deadline`` (``time.time()``): no
    training batch starts after it (``cut_short`` says whether one was stopped). ``quiet``: no log
    lines from the members (a search prints one line per trial itself).
    """
    full, shared = prepared.full, shares_vocabulary(config)
    start = time.perf_counter()
    features = prepared.features(config)
    if features.vectors is not None and not quiet:
        log(f"embeddings: {features.vectors.source} init{' for all members' if shared else ''}, coverage "
            f"{features.vectors.coverage:.1%}, {time.perf_counter() - start:.1f}s")
    init = prepared.init_source(config)
    if init is not None:
        check_shape(init, config)
    jobs = _jobs(config, prepared, features, output, deadline)
    processes = min(resolve_jobs(config), len(jobs))
    if shared and not quiet:
        log(f"{config.members} member(s) {'in memory' if output is None else f'in {output}/member-*'}, "
            f"{processes} at a time, "
            f"{len(jobs[0].train_ids)} train / {len(jobs[0].val_ids)} validation documents each")
    if (config.resume and shared and output is not None and (output / LAST_FILE).is_file()
            and not (output / MEMBER_DIR.format(1) / LAST_FILE).is_file() and not quiet):
        log(f"--resume: {output / LAST_FILE} is one LSTM with a vocabulary of its own training part "
            "(--members 1 --bow-weight 0); members share one built from every training document, "
            "so member 1 trains again")
    began, began_cpu = time.perf_counter(), time.process_time()
    if processes == 1:
        fits = [train_member(config, job, quiet, log) for job in jobs]
    else:
        fits = fit_in_processes(config, jobs, processes, quiet)
    elapsed = time.perf_counter() - began
    for index, fit in enumerate(fits):
        prepared.keep_teacher_margins(config, index, fit.teacher_margins)

    model = fits[0].model
    if config.members > 1:
        model = build_model(replace(config.model_config(len(features.vocab), len(full.label_names)),
                                    members=config.members))
        model.load_state_dict({f"members.{i}.{key}": value for i, fit in enumerate(fits)
                               for key, value in fit.model.state_dict().items()})
    folds = _scored_folds(config, prepared, features, fits)
    weight, sharpness, buckets, selection = _branch_setting(config, folds, log, quiet)
    if weight > 0:
        # On every training post, like the members together (and the baseline of such a run).
        model = with_bag_of_words(model, features.ids, full.train_labels, weight=weight, sharpness=sharpness,
                                  seed=config.seed, bigram_buckets=buckets, log=silent if quiet else log)
    held_out = _pooled(folds[buckets], weight, sharpness)
    val_score = None if held_out is None else round(float((held_out[0].argmax(axis=1) == held_out[1]).mean()), 5)
    scores = [fit.best_val_macro_f1 for fit in fits]
    mean_f1 = None if None in scores else float(np.mean(scores))  # None: no validation split
    best_epoch = max(fit.best_epoch for fit in fits)
    started_from = None if init is None else init_report(init, features.vocab, list(full.label_names))
    if not shared:
        return TrainResult(model, features.vocab, fits[0].history, best_epoch, mean_f1, fits[0].train_seconds,
                           fits[0].train_cpu_seconds, fits[0].stopped_early, fits[0].embedding_source,
                           fits[0].distillation, val_score=val_score, held_out=held_out, cut_short=fits[0].cut_short,
                           init=started_from)  # its checkpoint.pt is the one its training saved
    cpu = sum(fit.train_cpu_seconds for fit in fits) + time.process_time() - began_cpu
    history = [{**record, "member": index + 1} for index, fit in enumerate(fits) for record in fit.history]
    result = TrainResult(model, features.vocab, history, best_epoch=best_epoch, best_val_macro_f1=mean_f1,
                         train_seconds=elapsed, train_cpu_seconds=cpu,
                         stopped_early=all(fit.stopped_early for fit in fits),
                         embedding_source=fits[0].embedding_source, distillation=fits[0].distillation,
                         members=[_summary(job, fit) for job, fit in zip(jobs, fits, strict=True)],
                         bow_selection=selection, val_score=val_score, held_out=held_out,
                         cut_short=any(fit.cut_short for fit in fits),
                         init=started_from)
    if output is not None:
        save_model(output / BEST_FILE, config, result, full.label_names)
    return result


def save_model(path: Path, config: TrainConfig, result: TrainResult, label_names: Sequence[str]) -> None:
    """The trained model as ``checkpoint.pt`` (``best_val_macro_f1``: an ensemble's is its members' mean)."""
    save_checkpoint(make_checkpoint(model=result.model, vocab=result.vocab, labels=list(label_names),
                                    max_len=config.max_len, train_config=config.to_dict(), epoch=result.best_epoch,
                                    best_val_macro_f1=result.best_val_macro_f1), path)


def _summary(job: MemberJob, fit: MemberFit) -> dict:
    """What ``metrics.json`` says about one member."""
    return {"member": job.name, "seed": job.seed, "output": None if job.output is None else str(job.output),
            "train_documents": len(job.train_ids), "validation_documents": len(job.val_ids),
            "best_epoch": fit.best_epoch, "best_val_macro_f1": _rounded(fit.best_val_macro_f1),
            "epochs_run": len(fit.history), "stopped_early": fit.stopped_early,
            "train_seconds": round(fit.train_seconds, 1), "train_cpu_seconds": round(fit.train_cpu_seconds, 1),
            "distillation": fit.distillation, "embedding_init": fit.embedding_source}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


def _feature_sets(config: TrainConfig) -> tuple[int, ...]:
    """The branches scored on the folds, by bigram buckets: under ``auto``, single words as well as the pairs."""
    if config.bow_weight == AUTO and config.bow_bigram_buckets:
        return 0, config.bow_bigram_buckets
    return (config.bow_bigram_buckets,)


def _scored_folds(config: TrainConfig, prepared: PreparedData, features: Features,
                  fits: list[MemberFit]) -> dict[int, list[FoldScores]]:
    """Each validation fold scored by its member and, with a branch, by a linear model fitted without it
    (one per feature set of :func:`_feature_sets`, keyed by its bigram buckets)."""
    labels = np.asarray(prepared.full.train_labels)
    folds: dict[int, list[FoldScores]] = {buckets: [] for buckets in _feature_sets(config)}
    for (kept, held), fit in zip(prepared.folds(config), fits, strict=True):
        if fit.val_probabilities is None:
            continue
        for buckets, scored in folds.items():
            margins = None
            if config.bow_branch:
                margins = fold_margins([features.ids[i] for i in held], [features.ids[i] for i in kept],
                                       labels[kept], len(features.vocab), len(prepared.full.label_names),
                                       config.seed, buckets)
            scored.append(FoldScores(fit.val_probabilities, margins, labels[held]))
    return folds


def _branch_setting(config: TrainConfig, folds: dict[int, list[FoldScores]], log: Log,
                    quiet: bool) -> tuple[float, float, int, dict | None]:
    """The branch's (weight, sharpness, bigram buckets): the given ones, or chosen out of fold (with the scores)."""
    if config.bow_weight != AUTO:
        return float(config.bow_weight), config.bow_sharpness, config.bow_bigram_buckets, None
    if not any(folds.values()):
        reason = "no validation folds (--val-fraction 0) to choose it on; pass --bow-weight W for a branch"
        if not quiet:
            log(f"bag-of-words branch: none, {reason}")
        return 0.0, config.bow_sharpness, config.bow_bigram_buckets, {"weight": 0.0, "reason": reason}
    choice = choose_branch(folds)
    if not quiet:
        compared = ", ".join(f"{features_name(row['bigram_buckets'])} {row['accuracy']:.4f}"
                             for row in choice["features"])
        log(f"bag-of-words branch: weight {choice['weight']} (sharpness {choice['sharpness']}) over "
            f"{features_name(choice['bigram_buckets'])}, chosen out of fold on {choice['documents']} validation "
            f"documents: accuracy {choice['accuracy']:.4f} mixed ({compared}), {choice['lstm_accuracy']:.4f} "
            f"LSTM alone, {choice['linear_accuracy']:.4f} linear alone")
    return choice["weight"], choice["sharpness"], choice["bigram_buckets"], choice


def _pooled(folds: list[FoldScores], weight: float, sharpness: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Out-of-fold probabilities of the model as built, and their labels; None without validation folds."""
    if not folds:
        return None
    labels = np.concatenate([f.labels for f in folds])
    lstm = np.concatenate([f.lstm_probabilities for f in folds])
    if weight > 0:
        lstm = mixed_probabilities(lstm, np.concatenate([f.linear_margins for f in folds]), weight, sharpness)
    return lstm, labels
