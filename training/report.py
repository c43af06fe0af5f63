"""The run report: metrics.json, confusion matrix and learning curves (matplotlib Agg), summary table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.metrics import confusion

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
    selection = metrics.get("bow_weight_selection")
    if selection:
        lines += ["", _selection_line(selection)]
    if metrics.get("confidence"):
        lines += ["", "lstm-worker --min-confidence T keeps the labels scoring T or more (the rest go to review):",
                  f"{'T':<12}{'kept':>14}{'accuracy':>14}"]
        for row in metrics["confidence"]:
            accuracy = f"{row['accuracy']:>14.4f}" if row["accuracy"] is not None else f"{'-':>14}"
            lines.append(f"{row['min_confidence']:<12}{row['coverage']:>14.1%}{accuracy}")
    return "\n".join(lines)


def _selection_line(selection: dict) -> str:
    """How --bow-weight auto chose the linear branch's weight."""
    if "reason" in selection:
        return f"linear branch: none ({selection['reason']})"
    return (f"linear branch weight {selection['weight']} (sharpness {selection['sharpness']}), chosen out of fold on "
            f"{selection['documents']} validation documents: {selection['accuracy']:.4f} mixed vs "
            f"{selection['lstm_accuracy']:.4f} LSTM alone and {selection['linear_accuracy']:.4f} linear alone")
