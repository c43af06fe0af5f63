"""``--bow-weight``: fit the linear TF-IDF branch that ``HybridClassifier`` mixes with the LSTMs.

Why: on 20 Newsgroups the LSTMs and a TF-IDF linear model are about equally accurate on the
later test posts (0.856 and 0.861) but wrong on different documents, and their probabilities
mixed beat both (docs/training.md, round 5). The branch is fitted in closed form after the
LSTMs have trained: scikit-learn's TfidfTransformer and LinearSVC on the *same* token ids the
exported graph sees (first ``--max-len`` tokens, the model's vocabulary, pads and ``<unk>``
left out), so what the graph computes is exactly the fitted model. Its features are the words
and, with ``--bow-bigram-buckets``, adjacent word pairs hashed into that many columns: pairs
carry what single words cannot ("hard disk", "space station") and lifted the out-of-fold
accuracy of the mixed model (docs/training.md). It costs a few seconds of
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
from training.model import HybridClassifier, ModelConfig, bigram_column
from training.predict import predict_logits


def features_name(bigram_buckets: int) -> str:
    """What a branch counts, in words: one phrase for the log, the report and ``metrics.json``."""
    return f"words and word pairs in {bigram_buckets} buckets" if bigram_buckets else "single words"


def token_counts(id_lists: Sequence[np.ndarray], vocab_size: int, bigram_buckets: int = 0) -> sp.csr_matrix:
    """``[documents, vocab + bigram_buckets]`` counts of the real tokens (``<unk>`` and pads left out), then
    of the hashed pairs of adjacent real tokens (a pair across an ``<unk>`` is none), as the graph counts them."""
    rows, cols = [], []
    for row, ids in enumerate(id_lists):
        ids = np.asarray(ids, dtype=np.int64)
        real = ids > UNK_ID
        rows.append(np.full(int(real.sum()), row))
        cols.append(ids[real])
        if bigram_buckets:
            paired = real[:-1] & real[1:]
            rows.append(np.full(int(paired.sum()), row))
            cols.append(vocab_size + bigram_column(ids[:-1][paired], ids[1:][paired], bigram_buckets))
    all_rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    all_cols = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix((np.ones(len(all_cols)), (all_rows, all_cols)),
                         shape=(len(id_lists), vocab_size + bigram_buckets))


def fit_bag_of_words(id_lists: Sequence[np.ndarray], labels: Sequence[int], vocab_size: int, num_classes: int,
                     seed: int = 0, bigram_buckets: int = 0, c: float = 1.0) -> dict[str, torch.Tensor]:
    """The branch's buffers (``idf``, ``weight`` [vocab + buckets, classes], ``bias``) fitted on these documents
    (``c``: LinearSVC's regularisation; the model uses 1, ``bench.branch_variants`` compares others)."""
    counts = token_counts(id_lists, vocab_size, bigram_buckets)
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
    labels_array = np.asarray(labels)
    svm = LinearSVC(C=c, random_state=seed).fit(tfidf.transform(counts), labels_array)
    coef, intercept = svm.coef_, svm.intercept_
    if coef.shape[0] == 1:  # two classes: scikit-learn keeps the positive class's margin only
        coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
    weight = np.zeros((counts.shape[1], num_classes), dtype=np.float32)
    # A class with no training document can never win: a margin far below any real one.
    bias = np.full(num_classes, -1e4, dtype=np.float32)
    weight[:, svm.classes_] = coef.T
    bias[svm.classes_] = intercept
    return {"idf": torch.from_numpy(tfidf.idf_.astype(np.float32)), "weight": torch.from_numpy(weight),
            "bias": torch.from_numpy(bias)}


def with_bag_of_words(lstm: torch.nn.Module, id_lists: Sequence[np.ndarray], labels: Sequence[int], *,
                      weight: float, sharpness: float, seed: int, bigram_buckets: int = 0,
                      log=print) -> HybridClassifier:
    """``lstm`` (trained) plus a branch fitted on ``id_lists``/``labels``, mixed with ``weight``."""
    config: ModelConfig = lstm.config
    started = time.perf_counter()
    hybrid = HybridClassifier(replace(config, bow_weight=weight, bow_sharpness=sharpness,
                                      bow_bigram_buckets=bigram_buckets))
    hybrid.lstm.load_state_dict(lstm.state_dict())
    hybrid.bag_of_words.load_state_dict(fit_bag_of_words(id_lists, labels, config.vocab_size, config.num_classes,
                                                         seed, bigram_buckets))
    log(f"bag-of-words branch: TF-IDF ({features_name(bigram_buckets)}) + LinearSVC on {len(id_lists)} documents' "
        f"first tokens, weight {weight}, sharpness {sharpness}, {time.perf_counter() - started:.1f}s")
    return hybrid


def branch_margins(buffers: dict[str, torch.Tensor], id_lists: Sequence[np.ndarray],
                   bigram_buckets: int = 0) -> np.ndarray:
    """A fitted branch's margins computed the scikit-learn way (sparse TF-IDF rows), outside the graph."""
    idf, weight, bias = (buffers[name].cpu().numpy().astype(np.float64)  # the model may sit on a GPU
                         for name in ("idf", "weight", "bias"))
    tfidf = TfidfTransformer(sublinear_tf=True)
    tfidf.idf_ = idf  # the fitted branch's idf: the same transform fit_bag_of_words used
    counts = token_counts(id_lists, len(idf) - bigram_buckets, bigram_buckets)
    return np.asarray(tfidf.transform(counts) @ weight) + bias


def linear_margins(model: HybridClassifier, id_lists: Sequence[np.ndarray]) -> np.ndarray:
    """The branch of ``model`` alone, for scoring it in the report."""
    branch = model.bag_of_words
    return branch_margins({name: branch.get_buffer(name) for name in ("idf", "weight", "bias")}, id_lists,
                          branch.bigram_buckets)


def part_metrics(model: HybridClassifier, id_lists: Sequence[np.ndarray], labels: Sequence[int],
                 label_names: Sequence[str], device: torch.device) -> dict[str, dict]:
    """Test accuracy, macro-F1 and MAP of the LSTM part and of the linear part alone: what each brings."""
    keys = ("accuracy", "macro_f1", "mean_average_precision")
    parts = {"lstm": predict_logits(model.lstm, id_lists, device), "bag_of_words": linear_margins(model, id_lists)}
    return {name: {k: classification_metrics(labels, scores, list(label_names))[k] for k in keys}
            for name, scores in parts.items()}
