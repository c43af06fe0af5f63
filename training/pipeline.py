"""One training run end to end: data → train → test metrics → baseline → report files.

Also ``evaluate_checkpoint``: score an existing checkpoint on another data file.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from core.vocab import Vocabulary
from training.bag_of_words import features_name, part_metrics
from training.baseline import run_baseline
from training.calibration import Calibration, calibration_scores, fit_calibration
from training.checkpoint import BEST_FILE, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data import load_dataset, load_evaluation_rows
from training.data_checks import data_warnings
from training.ensemble import train_configuration
from training.exceptions import TrainingError
from training.metrics import classification_metrics, confidence_coverage
from training.model import HybridClassifier, build_model
from training.predict import encode_all, predict_logits, softmax
from training.prepared import PreparedData, member_dataset, shares_vocabulary
from training.readers import BadRow
from training.report import (
    plot_confusion,
    plot_learning_curves,
    plot_reliability,
    summary_table,
    write_metrics,
    write_validation_split,
)
from training.trainer import Log, TrainingData, TrainResult

MAX_BAD_ROWS_LISTED = 20


def describe_bad_rows(bad_rows: list[BadRow], log: Log) -> dict:
    """Log and summarise unusable rows: they are reported, never silently dropped."""
    if not bad_rows:
        return {"count": 0}
    reasons = Counter(b.reason.split(" (")[0] for b in bad_rows)
    log(f"skipped {len(bad_rows)} bad rows: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()))
    for row in bad_rows[:5]:
        log(f"  {row.source}:{row.line}: {row.reason}")
    return {"count": len(bad_rows), "reasons": dict(reasons),
            "first": [asdict(b) for b in bad_rows[:MAX_BAD_ROWS_LISTED]]}


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    return torch.device(name)


def prepare_splits(config: TrainConfig) -> tuple[TrainingData, list[BadRow]]:
    """Load the data, subsample it (``--max-train-samples``) and hold out a stratified validation split."""
    data = load_dataset(config.data, config.test_data, config.text_field, config.label_field,
                        val_fraction=config.val_fraction, max_train_samples=config.max_train_samples,
                        seed=config.seed)
    if len(data.train_texts) < len(data.label_names):
        raise TrainingError(f"only {len(data.train_texts)} training documents for {len(data.label_names)} "
                            "classes; raise --max-train-samples or lower --val-fraction")
    splits = TrainingData(
        train_texts=list(data.train_texts), train_labels=list(data.train_labels),
        val_texts=list(data.val_texts), val_labels=list(data.val_labels),
        test_texts=list(data.test_texts), test_labels=list(data.test_labels), label_names=list(data.label_names))
    return splits, list(data.bad_rows)


@dataclass
class Run:
    """One ``lstm-train`` run's place, data and clocks, as every mode (plain, time budget) uses them."""

    config: TrainConfig
    output: Path
    device: torch.device
    prepared: PreparedData  # every training document; each member (a single model: the one) takes its fold
    first: TrainingData  # member 1's train/validation split
    summary: dict
    bad: dict
    started: float  # time.time(): the budget's clock
    started_perf: float
    started_cpu: float


def start_run(config: TrainConfig, log: Log) -> Run:
    """Load the data, log its sizes and bad rows, and write ``validation.jsonl``."""
    started, started_perf, started_cpu = time.time(), time.perf_counter(), time.process_time()
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)  # as each member process does (member_processes.train_member): same arithmetic
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    dataset, bad_rows = prepare_splits(replace(config, val_fraction=0.0))
    prepared = PreparedData(dataset)
    first = member_dataset(prepared, config, 0)
    log(f"data: {len(first.train_texts)} train / {len(first.val_texts)} validation / "
        f"{len(dataset.test_texts)} test documents, {len(dataset.label_names)} classes")
    summary = {"source": config.data, "train": len(first.train_texts), "validation": len(first.val_texts),
               "test": len(dataset.test_texts), "classes": len(dataset.label_names),
               # The label mix of the labelled training documents (validation folds included: they are drawn
               # stratified, so the mix is the same); lstm-export puts it in the bundle's drift reference.
               "train_label_counts": {dataset.label_names[i]: n for i, n in
                                      sorted(Counter(dataset.train_labels).items())}}
    bad = describe_bad_rows(bad_rows, log)
    summary["warnings"] = data_warnings(dataset)
    for warning in summary["warnings"]:
        log(f"warning: {warning}")
    # Ensembles: member 1's fold (the others trained on it; the export gates compare graphs, not members).
    write_validation_split(output / "validation.jsonl", first)
    return Run(config, output, device, prepared, first, summary, bad, started, started_perf, started_cpu)


def run_training(config: TrainConfig, log: Log = print) -> dict:
    """Train and write the full report into ``config.output``; returns the metrics dict."""
    run = start_run(config, log)
    if config.time_budget is not None:
        from training.time_budget import train_within_budget

        config, result, budget = train_within_budget(run, log)
        return finish_run(run, config, result, log, time_budget=budget)
    result = train_configuration(config, run.prepared, log, output=run.output)
    return finish_run(run, config, result, log)


def finish_run(run: Run, config: TrainConfig, result: TrainResult, log: Log, time_budget: dict | None = None) -> dict:
    """Score ``result`` on the test split beside the baseline and write the report; returns the metrics."""
    dataset, device, output = run.prepared.full, run.device, run.output
    result.model.to(device)  # an ensemble is assembled on the CPU from its members
    test_ids = encode_all(result.vocab, dataset.test_texts, config.max_len)
    test_logits = predict_logits(result.model, test_ids, device)
    calibration, calibration_report = calibrate(result, output, config.seed, log)
    uncalibrated, probabilities = softmax(test_logits), calibration.apply_to_log_probabilities(test_logits)
    calibration_report["test"] = {"before": calibration_scores(uncalibrated, dataset.test_labels),
                                  "after": calibration_scores(probabilities, dataset.test_labels)}
    metrics = classification_metrics(dataset.test_labels, probabilities, dataset.label_names)
    metrics.update({
        "model": "LSTM",
        "train_seconds": round(result.train_seconds, 1),
        "train_cpu_seconds": round(result.train_cpu_seconds, 1),
        "best_epoch": result.best_epoch,
        "best_val_macro_f1": None if result.best_val_macro_f1 is None else round(result.best_val_macro_f1, 5),
        "val_out_of_fold_accuracy": result.val_score,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "embedding_init": result.embedding_source,
        "distillation": result.distillation,
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "vocab_size": len(result.vocab),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "data": run.summary,
        "bad_rows": run.bad,
        "history": result.history,
        "config": config.to_dict(),
        "model_config": result.model.config.to_dict(),
        "confidence": confidence_coverage(dataset.test_labels, probabilities),
        "calibration": calibration_report,
    })
    if shares_vocabulary(config):
        metrics["members"] = result.members
    if result.bow_selection is not None:
        metrics["bow_weight_selection"] = result.bow_selection
    if result.init is not None:
        metrics["init_from"] = result.init
    if isinstance(result.model, HybridClassifier):
        hybrid = result.model.config
        metrics["model"] = (f"LSTM + linear TF-IDF branch over {features_name(hybrid.bow_bigram_buckets)} "
                            f"(weight {hybrid.bow_weight}, sharpness {hybrid.bow_sharpness})")
        metrics["parts"] = part_metrics(result.model, test_ids, dataset.test_labels, dataset.label_names, device)
    plot_confusion(output / "confusion_matrix.png", dataset.test_labels, probabilities.argmax(1), dataset.label_names)
    plot_reliability(output / "reliability_diagram.png", dataset.test_labels, uncalibrated, probabilities)
    plot_learning_curves(output / "learning_curves.png", result.history)
    if config.baseline:
        log("baseline: TF-IDF + LinearSVC on the same split ...")
        # On what the members trained on together: every training document (a single model: its train part).
        trained_on = dataset if shares_vocabulary(config) else run.first
        metrics["baseline"] = run_baseline(trained_on.train_texts, trained_on.train_labels, dataset.test_texts,
                                           dataset.test_labels, dataset.label_names)
    if time_budget is not None:
        metrics["time_budget"] = {**time_budget, "seconds_used": round(time.time() - run.started, 1)}
    metrics["wall_seconds"] = round(time.perf_counter() - run.started_perf, 1)
    metrics["cpu_seconds"] = round(time.process_time() - run.started_cpu, 1)
    metrics["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    write_metrics(output / "metrics.json", metrics)
    log("")
    log(summary_table(metrics))
    log(f"\nwrote {output}/checkpoint.pt, metrics.json, confusion_matrix.png, reliability_diagram.png, "
        "learning_curves.png")
    return metrics


def calibrate(result: TrainResult, output: Path, seed: int, log: Log) -> tuple[Calibration, dict]:
    """Fit the calibration on ``result``'s out-of-fold predictions; store it, and them, in ``output/checkpoint.pt``."""
    if result.held_out is None:
        calibration, report = Calibration(), {"method": "none", "reason": "no validation folds (--val-fraction 0) "
                                                                          "to fit it on; scores are uncalibrated"}
    else:
        calibration, report = fit_calibration(*result.held_out, seed=seed)
    checkpoint = load_checkpoint(output / BEST_FILE)
    checkpoint["calibration"] = calibration.to_dict()
    if result.held_out is not None:  # lstm-export's drift reference where validation.jsonl is not held out
        checkpoint["held_out_probabilities"] = torch.from_numpy(np.asarray(result.held_out[0], dtype=np.float32))
    save_checkpoint(checkpoint, output / BEST_FILE)
    if "reason" in report:
        log(f"calibration: none, {report['reason']}")
    else:
        before, after = report["validation"]["before"], report["validation"]["after_cross_fitted"]
        log(f"calibration: {report['method']}, temperature {calibration.temperature:.3f}, fitted out of fold on "
            f"{report['documents']} validation documents: ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
            f"NLL {before['nll']:.4f} -> {after['nll']:.4f} (cross-fitted)")
    return calibration, report


def evaluate_checkpoint(checkpoint_dir: str, data: str, text_field: str, label_field: str, device_name: str,
                        output: str | None, log: Log = print) -> dict:
    """Test metrics of an existing checkpoint on ``data`` (the archive's test split, or a whole file)."""
    device = resolve_device(device_name)
    checkpoint = load_checkpoint(checkpoint_dir)
    labels = list(checkpoint["labels"])
    texts, y_true, bad_rows = load_evaluation_rows(data, labels, text_field, label_field)
    bad = describe_bad_rows(bad_rows, log)
    model = build_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["state_dict"])
    model.to(device)
    vocab = Vocabulary.from_dict(checkpoint["vocab"])
    max_len = int(checkpoint["preprocessing"]["max_len"])
    calibration = Calibration.from_dict(checkpoint.get("calibration"))
    probabilities = calibration.apply_to_log_probabilities(predict_logits(model, encode_all(vocab, texts, max_len),
                                                                          device))
    metrics = classification_metrics(y_true, probabilities, labels)
    metrics.update({"model": "LSTM", "checkpoint": str(checkpoint_dir), "data": str(data), "bad_rows": bad})
    if output:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        write_metrics(out / "evaluation.json", metrics)
        plot_confusion(out / "evaluation_confusion_matrix.png", y_true, probabilities.argmax(1), labels)
    log(summary_table(metrics))
    return metrics


__all__ = ["run_training", "evaluate_checkpoint", "prepare_splits", "start_run", "finish_run"]
