"""``--bow-weight``: fit the linear TF-IDF branch that ``HybridClassifier`` mixes with the LSTMs.

Why: on 20 Newsgroups the LSTMs and a TF-IDF linear model are about equally accurate on the
later test posts (0.856 and 0.861) but wrong on different documents, and their probabilities
mixed beat both (docs/training.md, round 5). The branch is fitted in closed form after the
LSTMs have trained: scikit-learn's TfidfTransformer and LinearSVC on the *same* token ids the
exported graph sees (first ``--max-len`` tokens, the model's vocabulary, pads and ``<unk>``
left out), so what the graph computes is exactly the fitted model. It costs a few seconds of
training and, next to the LSTMs, nothing when serving.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.svm import LinearSVC

from core.vocab import UNK_ID
from training.metrics import classification_metrics
from training.model import HybridClassifier, ModelConfig
from training.predict import predict_logits


def token_counts(id_lists: Sequence[np.ndarray], vocab_size: int) -> sp.csr_matrix:
    """``[documents, vocab]`` counts of the real tokens (``<unk>`` and pads left out)."""
    rows = np.concatenate([np.full(len(ids), i) for i, ids in enumerate(id_lists)]) if id_lists else np.zeros(0)
    cols = np.concatenate(list(id_lists)) if id_lists else np.zeros(0, dtype=np.int64)
    keep = cols > UNK_ID
    values = np.ones(int(keep.sum()), dtype=np.float64)
    return sp.csr_matrix((values, (rows[keep], cols[keep])), shape=(len(id_lists), vocab_size))


def fit_bag_of_words(id_lists: Sequence[np.ndarray], labels: Sequence[int], vocab_size: int, num_classes: int,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """The branch's buffers (``idf``, ``weight`` [vocab, classes], ``bias``) fitted on these documents."""
    counts = token_counts(id_lists, vocab_size)
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
    labels_array = np.asarray(labels)
    svm = LinearSVC(C=1.0, random_state=seed).fit(tfidf.transform(counts), labels_array)
    coef, intercept = svm.coef_, svm.intercept_
    if coef.shape[0] == 1:  # two classes: scikit-learn keeps the positive class's margin only
        coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
    weight = np.zeros((vocab_size, num_classes), dtype=np.float32)
    # A class with no training document can never win: a margin far below any real one.
    bias = np.full(num_classes, -1e4, dtype=np.float32)
    weight[:, svm.classes_] = coef.T
    bias[svm.classes_] = intercept
    return {"idf": torch.from_numpy(tfidf.idf_.astype(np.float32)), "weight": torch.from_numpy(weight),
            "bias": torch.from_numpy(bias)}


def with_bag_of_words(lstm: torch.nn.Module, id_lists: Sequence[np.ndarray], labels: Sequence[int], *,
                      weight: float, sharpness: float, seed: int, log=print) -> HybridClassifier:
    """``lstm`` (trained) plus a branch fitted on ``id_lists``/``labels``, mixed with ``weight``."""
    config: ModelConfig = lstm.config
    started = time.perf_counter()
    hybrid = HybridClassifier(replace(config, bow_weight=weight, bow_sharpness=sharpness))
    hybrid.lstm.load_state_dict(lstm.state_dict())
    hybrid.bag_of_words.load_state_dict(fit_bag_of_words(id_lists, labels, config.vocab_size, config.num_classes,
                                                         seed))
    log(f"bag-of-words branch: TF-IDF + LinearSVC on {len(id_lists)} documents' first tokens, weight {weight}, "
        f"sharpness {sharpness}, {time.perf_counter() - started:.1f}s")
    return hybrid


def branch_margins(buffers: dict[str, torch.Tensor], id_lists: Sequence[np.ndarray]) -> np.ndarray:
    """A fitted branch's margins computed the scikit-learn way (sparse TF-IDF rows), outside the graph."""
    idf, weight, bias = (buffers[name].cpu().numpy().astype(np.float64)  # the model may sit on a GPU
                         for name in ("idf", "weight", "bias"))
    tfidf = TfidfTransformer(sublinear_tf=True)
    tfidf.idf_ = idf  # the fitted branch's idf: the same transform fit_bag_of_words used
    return np.asarray(tfidf.transform(token_counts(id_lists, len(idf))) @ weight) + bias


def linear_margins(model: HybridClassifier, id_lists: Sequence[np.ndarray]) -> np.ndarray:
    """The branch of ``model`` alone, for scoring it in the report."""
    return branch_margins({name: model.bag_of_words.get_buffer(name) for name in ("idf", "weight", "bias")},
                          id_lists)


def part_metrics(model: HybridClassifier, id_lists: Sequence[np.ndarray], labels: Sequence[int],
                 label_names: Sequence[str], device: torch.device) -> dict[str, dict]:
    """Test accuracy, macro-F1 and MAP of the LSTM part and of the linear part alone: what each brings."""
    keys = ("accuracy", "macro_f1", "mean_average_precision")
    parts = {"lstm": predict_logits(model.lstm, id_lists, device), "bag_of_words": linear_margins(model, id_lists)}
    return {name: {k: classification_metrics(labels, scores, list(label_names))[k] for k in keys}
            for name, scores in parts.items()}
