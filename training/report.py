"""The run report: metrics.json, confusion matrix and learning curves (matplotlib Agg), summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.bag_of_words import features_name
from training.metrics import confusion

if TYPE_CHECKING:
    from training.trainer import TrainingData

METRIC_ROWS = (("accuracy", "accuracy"), ("macro-F1", "macro_f1"), ("MAP", "mean_average_precision"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and servers have no display
    import matplotlib.pyplot as plt

    return plt


def write_metrics(path: Path, metrics: dict) -> None:
    path.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")


def plot_confusion(path: Path, y_true, y_pred, label_names: list[str]) -> None:
    plt = _pyplot()
    matrix = confusion(y_true, y_pred, len(label_names))
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.45 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(label_names)), label_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(label_names)), label_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Test confusion matrix (row-normalised; numbers are counts)")
    if len(label_names) <= 30:
        for i in range(len(label_names)):
            for j in range(len(label_names)):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=5,
                            color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(path: Path, y_true, uncalibrated: np.ndarray, calibrated: np.ndarray) -> None:
    """Test reliability diagram: accuracy against mean top score per confidence bin, before and after calibration."""
    from training.calibration import ECE_BINS, expected_calibration_error, reliability_bins

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated: accuracy = score")
    for title, probabilities in (("raw", uncalibrated), ("calibrated", calibrated)):
        bins = reliability_bins(probabilities, y_true)
        ax.plot([confidence for _, confidence, _ in bins], [accuracy for _, _, accuracy in bins], marker="o",
                label=f"{title} (ECE {expected_calibration_error(probabilities, y_true):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"top score (mean per bin, {ECE_BINS} equal-width bins)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title("Test reliability diagram")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_learning_curves(path: Path, history: list[dict]) -> None:
    """Loss and scores per epoch; an ensemble's records carry ``member`` and get one line each."""
    plt = _pyplot()
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for member in sorted({h.get("member", 0) for h in history}):
        rows = [h for h in history if h.get("member", 0) == member]
        epochs = [h["epoch"] for h in rows]
        tag = f"member {member} " if member else ""
        loss_ax.plot(epochs, [h["train_loss"] for h in rows], marker="o", label=f"{tag}train loss")
        score_ax.plot(epochs, [h["train_accuracy"] for h in rows], marker="o", label=f"{tag}train accuracy")
        if rows[0].get("val_loss") is None:
            continue  # --val-fraction 0: no validation curves
        loss_ax.plot(epochs, [h["val_loss"] for h in rows], marker="o", label=f"{tag}validation loss")
        score_ax.plot(epochs, [h["val_accuracy"] for h in rows], marker="o", label=f"{tag}validation accuracy")
        score_ax.plot(epochs, [h["val_macro_f1"] for h in rows], marker="o", label=f"{tag}validation macro-F1")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, score_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    loss_ax.set_xlabel("epoch")
    loss_ax.legend(fontsize=7)
    score_ax.set_xlabel("epoch")
    score_ax.set_ylim(0, 1)
    score_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_table(metrics: dict) -> str:
    """The model vs the baseline, one metric per row; a hybrid model also shows its two parts alone."""
    columns = [("model" if "parts" in metrics else "LSTM", metrics)]
    if "parts" in metrics:
        columns += [("LSTM part", metrics["parts"]["lstm"]), ("linear part", metrics["parts"]["bag_of_words"])]
    if metrics.get("baseline"):
        columns.append(("TF-IDF+SVC", metrics["baseline"]))
    header = f"{'metric':<12}" + "".join(f"{title:>14}" for title, _ in columns)
    lines = [f"Test set: {metrics['examples']} documents, {len(metrics['per_class'])} classes", header,
             "-" * len(header)]
    for title, key in METRIC_ROWS:
        lines.append(f"{title:<12}" + "".join(f"{values[key]:>14.4f}" for _, values in columns))
    if "train_seconds" in metrics:
        lines.append(f"{'train s':<12}" + "".join(
            f"{values['train_seconds']:>14.1f}" if "train_seconds" in values else f"{'':>14}" for _, values in columns))
    if metrics.get("baseline"):
        lines += ["", _baseline_verdict(metrics)]
    data = metrics.get("data")  # --evaluate: the data file's path, no summary
    lines += [f"warning: {warning}" for warning in (data.get("warnings", []) if isinstance(data, dict) else [])]
    selection = metrics.get("bow_weight_selection")
    if selection:
        lines += ["", _selection_line(selection)]
    if metrics.get("time_budget"):
        lines += ["", *_budget_lines(metrics["time_budget"])]
    if metrics.get("calibration"):
        lines += ["", *_calibration_lines(metrics["calibration"])]
    if metrics.get("confidence"):
        lines += ["", "lstm-worker --min-confidence T keeps the labels scoring T or more (the rest go to review):",
                  f"{'T':<12}{'kept':>14}{'accuracy':>14}"]
        for row in metrics["confidence"]:
            accuracy = f"{row['accuracy']:>14.4f}" if row["accuracy"] is not None else f"{'-':>14}"
            lines.append(f"{row['min_confidence']:<12}{row['coverage']:>14.1%}{accuracy}")
    return "\n".join(lines)


def _calibration_lines(calibration: dict) -> list[str]:
    """ECE, NLL and Brier before and after calibration, on validation (cross-fitted) and on the test split."""
    if "reason" in calibration:
        return [f"calibration: none ({calibration['reason']})"]
    lines = [f"calibration: {calibration['method']}, temperature {calibration['temperature']:.3f}, fitted on "
             f"{calibration['documents']} out-of-fold validation documents (validation 'after' is cross-fitted):",
             f"{'split':<12}{'ECE':>16}{'NLL':>18}{'Brier':>18}"]
    for split, after_key in (("validation", "after_cross_fitted"), ("test", "after")):
        scores = calibration.get(split)
        if scores:
            before, after = scores["before"], scores[after_key]
            lines.append(f"{split:<12}" + "".join(f"{before[key]:>8.4f}->{after[key]:.4f}".rjust(width)
                                                  for key, width in (("ece", 16), ("nll", 18), ("brier", 18))))
    return lines


def _baseline_verdict(metrics: dict) -> str:
    """Whether the model beats the TF-IDF + LinearSVC baseline on this test split, in one line."""
    ours, theirs = metrics["accuracy"], metrics["baseline"]["accuracy"]
    verdict = "beats" if ours > theirs else "matches" if ours == theirs else "does NOT beat"
    line = (f"the model {verdict} its TF-IDF + LinearSVC baseline on this test split: accuracy {ours:.4f} "
            f"vs {theirs:.4f}")
    if ours <= theirs:
        line += ("; to try: more labelled examples; --time-budget 10m (searches the settings on validation); "
                 "or, if the baseline is good enough, a model that leans on its kind: --bow-weight 0.9")
    return line


def _budget_lines(budget: dict) -> list[str]:
    """What a --time-budget search tried (validation scores only) and what it chose."""
    lines = [f"time budget {budget['budget_seconds']:.0f}s, {budget.get('seconds_used', 0):.0f}s used; trials "
             "(validation accuracy and log-loss after a temperature, out of fold; LSTM and linear parts alone):",
             f"{'trial':<7}{'max_len':>8}{'hidden':>8}{'epochs':>8}{'val acc':>9}{'loss':>8}{'LSTM':>8}{'linear':>8}"
             f"{'weight':>8}"
             f"{'pairs':>7}{'s':>7}  status"]
    for t in budget["trials"]:
        scores = "".join(_cell(t.get(key), width, digits) for key, width, digits in (
            ("val_accuracy", 9, 4), ("val_log_loss", 8, 4), ("lstm_val_accuracy", 8, 4), ("linear_val_accuracy", 8, 4),
            ("bow_weight", 8, 2)))
        pairs = "-" if not t.get("bow_weight") else "yes" if t.get("bow_bigram_buckets") else "no"
        lines.append(f"{t['trial'] or '-'!s:<7}{t['max_len']:>8}{t['hidden_size']:>8}{t['epochs']:>8}{scores}"
                     f"{pairs:>7}{_cell(t.get('seconds'), 7, 0)}  {t['status']}")
    chosen = budget["chosen"]
    lines.append(f"chosen: max_len {chosen['max_len']}, hidden {chosen['hidden_size']}, {chosen['epochs']} epochs, "
                 f"{chosen['members']} member(s): {chosen['why']}")
    return lines


def _cell(value, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _selection_line(selection: dict) -> str:
    """How --bow-weight auto chose the linear branch's weight."""
    if "reason" in selection:
        return f"linear branch: none ({selection['reason']})"
    line = (f"linear branch weight {selection['weight']} (sharpness {selection['sharpness']}), chosen out of fold on "
            f"{selection['documents']} validation documents: {selection['accuracy']:.4f} mixed vs "
            f"{selection['lstm_accuracy']:.4f} LSTM alone and {selection['linear_accuracy']:.4f} linear alone")
    compared = selection.get("features", [])
    if len(compared) > 1:
        line += "; features: " + ", ".join(
            f"{features_name(row['bigram_buckets'])} {row['accuracy']:.4f}"
            f"{' (kept)' if row['bigram_buckets'] == selection['bigram_buckets'] else ''}" for row in compared)
    return line


def write_validation_split(path: Path, dataset: TrainingData) -> None:
    """The validation split as JSONL: ``lstm-export``'s parity gate replays it."""
    with path.open("w", encoding="utf-8") as handle:
        for text, label in zip(dataset.val_texts, dataset.val_labels, strict=True):
            handle.write(json.dumps({"text": text, "label": dataset.label_names[label]}, ensure_ascii=False) + "\n")
