"""``lstm-train --time-budget 20m``: the best model this machine can train on this data within the budget.

1. Look at the data (:mod:`training.budget_plan`): token lengths give the max-length candidates (the
   95th and 75th percentiles, capped at 256), the size gives the hidden size, and the command line's
   ``--epochs`` and half of it the epoch candidates.
2. Probe: the base shape trained for one epoch is the first trial; its time per epoch, scaled by tokens
   read and LSTM size, estimates every other trial. A trial trains the final model's three members on
   their own validation folds, side by side, in memory, and is scored by their pooled out-of-fold accuracy
   with the linear branch chosen out of fold (``train_configuration``'s ``val_score``): validation data
   only, never the test split.
3. Trials run, cheapest first after the base, while each fits before the report's reserve; with time
   left, the best shape made larger one way at a time (hidden units, epochs, reading length) follows.
   The best score wins; ties (short budgets on easy data tie out of fold) go to the lower out-of-fold
   log-loss after a temperature (the better-trained candidate), then to the cheaper shape.
4. The final model is the winning trial as it was trained (at most 3 members: the default's serving
   cost), so nothing trains after the search but the report. Every step has a deadline inside the budget.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
import torch

from training.bag_of_words import features_name
from training.budget_plan import Shape, candidate_shapes, larger_shapes, profile_data, relative_work
from training.calibration import calibrated_log_loss
from training.checkpoint import BEST_FILE
from training.config import TrainConfig
from training.ensemble import save_model, train_configuration
from training.predict import predict_logits
from training.prepared import PreparedData
from training.trainer import Log, TrainResult

MAX_MEMBERS = 3  # the final model's: more would serve slower than the default
# A trial trains the final model's members, side by side: the best trial is then the final model, and no
# member has to train alone after the search (one member after two cost as much wall time as the two).
TRIAL_MEMBERS = MAX_MEMBERS
SAFETY = 1.25  # estimates are multiplied by this before they are trusted
SCORING_SAMPLE = 300  # documents the probe's model scores to time the report's scoring of the test split
BASELINE_SECONDS_PER_DOCUMENT = 1e-3  # TF-IDF + LinearSVC: a few seconds on 20 Newsgroups' 11k posts


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _with_shape(config: TrainConfig, shape: Shape, members: int) -> TrainConfig:
    return replace(config, max_len=shape.max_len, hidden_size=shape.hidden_size, epochs=shape.epochs,
                   members=members)


def _epoch_seconds(result: TrainResult) -> float:
    """Wall seconds of one epoch of one member while the trial's members trained side by side."""
    rows = result.history
    whole = [r["seconds"] for r in rows if "share_of_epoch" not in r]
    if whole:
        return sum(whole) / len(whole)
    return max(r["seconds"] / max(r["share_of_epoch"], 1e-3) for r in rows)  # cut by the deadline: extrapolated


class Search:
    """The trials of one budgeted run and what they measured."""

    def __init__(self, config: TrainConfig, prepared: PreparedData, started: float, log: Log):
        self.config, self.prepared, self.started, self.log = config, prepared, started, log
        self.budget = float(config.time_budget)
        self.cores = _cores()
        full = prepared.full
        self.profile = profile_data(full.train_texts, full.train_labels, seed=config.seed)
        self.shapes = candidate_shapes(self.profile, config.epochs)
        self.trials: list[dict] = []
        self.results: dict[Shape, TrainResult] = {}
        self.epoch_seconds: float | None = None  # of the base shape, per member, two at once
        self.overhead = 0.0  # the probe's seconds beyond its epoch (processes, teachers, branch fits)
        self.trial_overhead = 0.0  # the same for the latest trial (teachers by then prepared)
        self.teacher_seconds = 0.0  # one member's teacher: what a member beyond the trials' needs first
        self.fallback: TrainResult | None = None  # the best trial a deadline cut short: the model of last resort
        self.fallback_shape: Shape | None = None
        self.scoring_seconds = 0.0  # per document and member, timed after the probe

    def left(self) -> float:
        return self.started + self.budget - time.time()

    def estimate(self, shape: Shape, overhead: float | None = None) -> float:
        """Seconds to train ``shape``'s members side by side (at most the probe's count, whose time per epoch
        this scales: fewer are not assumed to go faster).

        ``overhead``: the seconds beyond the epochs; by default what a new member needs (the latest
        trial's, plus fitting its own teacher; at first the probe's, which include everything prepared once).
        """
        base = self.shapes[0]
        scale = relative_work(shape, self.profile, self.config.embed_dim) / relative_work(
            base, self.profile, self.config.embed_dim)
        overhead = self.overhead if overhead is None else overhead
        return SAFETY * (overhead + self.epoch_seconds * scale * shape.epochs)

    def run_trial(self, shape: Shape, deadline: float) -> TrainResult:
        began = time.time()
        result = train_configuration(_with_shape(self.config, shape, TRIAL_MEMBERS), self.prepared, self.log,
                                     deadline=deadline, quiet=True)
        seconds = time.time() - began
        selection = result.bow_selection or {}
        number = sum(1 for t in self.trials if t["trial"] is not None) + 1
        row = {"trial": number, **shape.to_dict(), "members": TRIAL_MEMBERS,
               "val_accuracy": result.val_score, "val_log_loss": None if result.held_out is None else _log_loss(result),
               "lstm_val_accuracy": selection.get("lstm_accuracy"),
               "linear_val_accuracy": selection.get("linear_accuracy"), "bow_weight": selection.get("weight"),
               "bow_bigram_buckets": selection.get("bigram_buckets"),
               "epochs_run": max(len([h for h in result.history if h.get("member") == m])
                                 for m in range(1, TRIAL_MEMBERS + 1)),
               "seconds": round(seconds, 1), "status": "cut short by the search deadline" if result.cut_short
               else "done"}
        self.trials.append(row)
        if not result.cut_short:
            self.results[shape] = result
        elif self.fallback is None or (result.val_score or 0) > (self.fallback.val_score or 0):
            self.fallback, self.fallback_shape = result, shape
        branch = f"{row['bow_weight']}"
        if row["bow_weight"]:
            branch += f" over {features_name(row['bow_bigram_buckets'])}"
        self.log(f"trial {row['trial']}: max_len {shape.max_len}, hidden {shape.hidden_size}, {shape.epochs} "
                 f"epoch(s): validation accuracy {_fmt(result.val_score)} (LSTM {_fmt(row['lstm_val_accuracy'])}, "
                 f"linear {_fmt(row['linear_val_accuracy'])}, branch weight {branch}), {seconds:.0f}s"
                 f"{'' if row['status'] == 'done' else ', ' + row['status']}; {self.left():.0f}s of the budget left")
        return result

    def probe(self, deadline: float) -> None:
        """The base shape for one epoch: the first trial, and the clock every estimate is scaled from."""
        shape = replace(self.shapes[0], epochs=1)
        result = self.run_trial(shape, deadline=deadline)
        self.epoch_seconds = _epoch_seconds(result)
        self.overhead = self.trial_overhead = max(0.0, self.trials[-1]["seconds"] - self.epoch_seconds)
        self.teacher_seconds = max((m["distillation"].get("teacher_seconds", 0.0) for m in result.members),
                                   default=0.0)
        self.scoring_seconds = self._time_scoring(result, shape)

    def _time_scoring(self, probe: TrainResult, shape: Shape) -> float:
        """Seconds to score one document with one member, timed: the probe's model scores a random sample of
        training documents here, in this process, as the report will score the test split."""
        ids = self.prepared.features(_with_shape(self.config, shape, TRIAL_MEMBERS)).ids
        chosen = np.random.default_rng(0).choice(len(ids), size=min(SCORING_SAMPLE, len(ids)), replace=False)
        began = time.perf_counter()
        predict_logits(probe.model, [ids[i] for i in chosen], torch.device("cpu"))
        return (time.perf_counter() - began) / len(chosen) / TRIAL_MEMBERS

    def reserve_for(self, members: int) -> float:
        """Seconds kept for the end of a model of ``members`` members: scoring the test split (the model, then
        its LSTM part alone), the baseline, the plots."""
        full = self.prepared.full
        scoring = 2 * members * self.scoring_seconds * len(full.test_texts)
        return 5.0 + 0.01 * self.budget + SAFETY * (scoring + BASELINE_SECONDS_PER_DOCUMENT * len(full.train_texts))

    def search(self) -> None:
        """The candidate shapes, the base first, then cheapest first, each while it fits; then, with time left,
        the best one made larger one way at a time (:func:`larger_shapes`).

        A trial fits when it and the report's reserve fit in what is left of the budget: a trial is a
        whole final model, so nothing else has to fit after it.
        """
        for shape in sorted(self.shapes, key=lambda s: (s != self.shapes[0], self.estimate(s))):
            self._try(shape)
        tried = {(t["max_len"], t["hidden_size"], t["epochs"]) for t in self.trials}
        if self.results:
            for shape in larger_shapes(self.best(), self.profile):
                if (shape.max_len, shape.hidden_size, shape.epochs) not in tried:
                    self._try(shape)

    def _try(self, shape: Shape) -> None:
        end = self.started + self.budget - self.reserve_for(MAX_MEMBERS)
        needed = self.estimate(shape, overhead=self.trial_overhead)
        if time.time() + needed > end:
            self.trials.append({"trial": None, **shape.to_dict(), "members": TRIAL_MEMBERS,
                                "status": f"skipped: estimated {needed:.0f}s; {max(0.0, end - time.time()):.0f}s "
                                          "left"})
            return
        result = self.run_trial(shape, deadline=end)
        ran = self.trials[-1]
        scale = relative_work(shape, self.profile, self.config.embed_dim) / relative_work(
            self.shapes[0], self.profile, self.config.embed_dim)
        if not result.cut_short:  # a whole trial times epochs better than the probe's one epoch did
            self.epoch_seconds = _epoch_seconds(result) / scale
            # Teachers and vectors are prepared once: later trials (and new members) cost less beyond epochs.
            self.trial_overhead = max(0.0, ran["seconds"] - ran["epochs_run"] * self.epoch_seconds * scale)
            self.overhead = self.trial_overhead + self.teacher_seconds

    def best(self) -> Shape:
        """The best scored shape; ties go to the lower out-of-fold log-loss, then to the cheaper shape."""
        scored = [s for s, r in self.results.items() if r.val_score is not None]
        if not scored:  # nothing finished, or no validation folds: the base shape
            return next(iter(self.results), self.shapes[0])
        return max(scored, key=lambda s: (self.results[s].val_score, -_log_loss(self.results[s]), -self.estimate(s)))


def _log_loss(result: TrainResult) -> float:
    """The trial's out-of-fold log-loss after a temperature (infinite without validation folds)."""
    return float("inf") if result.held_out is None else round(calibrated_log_loss(*result.held_out), 5)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def plan_final(search: Search, shape: Shape) -> tuple[TrainConfig, TrainResult | None, str]:
    """The final configuration; the trial result that already is the final model, if one is; why.

    A finished trial of the best shape is the model (it trained the final model's members). When only the
    one-epoch probe finished, the base shape is trained properly if that fits: as many members as fit (at
    most :data:`MAX_MEMBERS`), else fewer epochs.
    """
    trial = search.results.get(shape)

    def left(members: int) -> float:
        return search.left() - search.reserve_for(members)

    if trial is not None and shape.epochs < search.config.epochs and len(search.results) == 1:
        # Only the one-epoch probe finished: train the base shape properly if that fits, else keep the probe.
        proper = replace(shape, epochs=search.config.epochs)
        if search.estimate(replace(proper, epochs=1)) <= left(TRIAL_MEMBERS):
            trial, shape = None, proper

    def wall(epochs: int) -> float:
        return search.estimate(replace(shape, epochs=epochs))

    if trial is None and search.estimate(replace(shape, epochs=1)) > left(1):
        trial = search.fallback  # no time to train anything more: the best there is, even if cut short
        if trial is not None:
            shape = search.fallback_shape
    if trial is not None:
        return (_with_shape(search.config, shape, TRIAL_MEMBERS), trial,
                f"the best trial is the model (its {TRIAL_MEMBERS} members, each on its own validation fold)")
    members = next((n for n in range(MAX_MEMBERS, 0, -1) if wall(shape.epochs) <= left(n)), 0)
    epochs = shape.epochs
    if not members:
        members = min(MAX_MEMBERS, search.cores)
        epochs = next((e for e in range(shape.epochs, 0, -1) if wall(e) <= left(members)), 1)
    probe = search.results.get(replace(shape, epochs=1))
    if probe is not None and epochs == 1 and members <= TRIAL_MEMBERS:
        return (_with_shape(search.config, replace(shape, epochs=1), TRIAL_MEMBERS), probe,
                f"the probe is the model: {max(0.0, left(members)):.0f}s left fit no more than it trained")
    why = f"{members} member(s) of {epochs} epoch(s): what fits in the {max(0.0, left(members)):.0f}s left"
    return _with_shape(search.config, replace(shape, epochs=epochs), members), None, why


def budget_report(search: Search, final: TrainConfig, result: TrainResult, why: str, reserve: float) -> dict:
    """The ``time_budget`` section of ``metrics.json``."""
    return {"budget_seconds": search.budget, "cores": search.cores, "profile": search.profile.to_dict(),
            "candidates": [s.to_dict() for s in search.shapes], "epoch_seconds": round(search.epoch_seconds, 1),
            "trial_overhead_seconds": round(search.overhead, 1), "report_reserve_seconds": round(reserve, 1),
            "trials": search.trials,
            "chosen": {"max_len": final.max_len, "hidden_size": final.hidden_size, "epochs": final.epochs,
                       "members": final.members, "val_accuracy": result.val_score,
                       "why": "the best validation accuracy of the trials (ties: the lower validation log-loss, "
                              "then the cheaper shape); " + why}}


def train_within_budget(run, log: Log) -> tuple[TrainConfig, TrainResult, dict]:
    """Search and train within ``run.config.time_budget``: the final configuration, its result, the report section."""
    config = run.config
    search = Search(config, run.prepared, run.started, log)
    lengths = search.profile.length_percentiles
    log(f"time budget {search.budget:.0f}s: {search.profile.documents} documents, {search.profile.classes} classes, "
        f"tokens per document p50 {lengths['p50']} / p95 {lengths['p95']} / max {lengths['max']}; candidates: "
        + ", ".join(f"max_len {s.max_len} hidden {s.hidden_size} {s.epochs} epochs" for s in search.shapes))
    search.probe(deadline=run.started + 0.5 * search.budget)
    search.search()
    shape = search.best()
    final, result, why = plan_final(search, shape)
    reserve = search.reserve_for(final.members)
    log(f"final: max_len {final.max_len}, hidden {final.hidden_size}, {final.epochs} epochs, {final.members} "
        f"member(s): {why}")
    if result is None:
        result = train_configuration(final, run.prepared, log, deadline=run.started + search.budget - reserve)
    save_model(run.output / BEST_FILE, final, result, run.prepared.full.label_names)
    if result.cut_short:
        log("the budget's deadline stopped a member early; its best finished epoch is kept")
    return final, result, budget_report(search, final, result, why, reserve)
