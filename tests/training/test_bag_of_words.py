"""The linear TF-IDF branch: the graph computes exactly the fitted scikit-learn model, per document."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.svm import LinearSVC

from core.vocab import PAD_ID, UNK_ID, pad_batch
from training.bag_of_words import fit_bag_of_words, linear_margins, token_counts, with_bag_of_words
from training.model import BagOfWordsBranch, HybridClassifier, ModelConfig, ProbabilityModel, build_model

VOCAB, CLASSES = 60, 3


def _documents(count: int, seed: int = 0, classes: int = CLASSES) -> tuple[list[np.ndarray], np.ndarray]:
    """Random documents whose class shows in which words they use, with some <unk> among them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    docs = []
    for label in labels:
        words = rng.integers(2, VOCAB, rng.integers(1, 40))
        topical = rng.integers(2 + 15 * label, 2 + 15 * (label + 1), rng.integers(3, 9))
        docs.append(np.concatenate([words, topical, [UNK_ID] * rng.integers(0, 3)]).astype(np.int64))
    return docs, labels


def _branch(docs, labels, classes: int = CLASSES, buckets: int = 0) -> BagOfWordsBranch:
    branch = BagOfWordsBranch(VOCAB, classes, buckets)
    branch.load_state_dict(fit_bag_of_words(docs, labels, VOCAB, classes, bigram_buckets=buckets))
    return branch


def _counted_by_hand(docs: list[np.ndarray], buckets: int) -> np.ndarray:
    """Dense counts: each real word's id, then each pair of adjacent real words at VOCAB + its documented hash."""
    counts = np.zeros((len(docs), VOCAB + buckets))
    for row, doc in enumerate(docs):
        for i, word in enumerate(doc):
            if word > UNK_ID:
                counts[row, word] += 1
                if buckets and i > 0 and doc[i - 1] > UNK_ID:
                    counts[row, VOCAB + (int(doc[i - 1]) * 1_000_003 + int(word)) % buckets] += 1
    return counts


def _margins(module: torch.nn.Module, docs: list[np.ndarray]) -> np.ndarray:
    ids, lengths = pad_batch(docs)
    with torch.no_grad():
        return module(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()


@pytest.mark.parametrize(("classes", "buckets"), [(2, 0), (CLASSES, 0), (2, 16), (CLASSES, 64)])
def test_graph_margins_equal_scikit_learn_tfidf_and_linear_svc(classes: int, buckets: int) -> None:
    docs, labels = _documents(300, classes=classes)
    docs[0] = np.array([5, UNK_ID, 9, 9, 5, UNK_ID], dtype=np.int64)  # an <unk> between two words breaks their pair
    graph = _margins(_branch(docs, labels, classes, buckets), docs)

    counts = _counted_by_hand(docs, buckets)
    np.testing.assert_array_equal(token_counts(docs, VOCAB, buckets).toarray(), counts)
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
    svm = LinearSVC(C=1.0, random_state=0).fit(tfidf.transform(counts), labels)
    reference = svm.decision_function(tfidf.transform(counts))
    if classes == 2:
        reference = np.stack([-reference, reference], axis=1)
    np.testing.assert_allclose(graph, reference, atol=1e-5)
    assert (graph.argmax(1) == labels).mean() > 0.9  # it learnt the topical words


@pytest.mark.parametrize("buckets", [0, 16])
def test_pads_unk_and_batch_mates_do_not_change_a_documents_margins(buckets: int) -> None:
    docs, labels = _documents(200)
    branch = _branch(docs, labels, buckets=buckets)
    sample = docs[:6]
    alone = np.concatenate([_margins(branch, [d]) for d in sample])
    np.testing.assert_allclose(_margins(branch, sample), alone, atol=1e-6)
    # Extra pads past the length, and <unk>s inside it, count for nothing.
    ids, lengths = pad_batch(sample)
    wide = np.full((len(sample), ids.shape[1] + 17), PAD_ID, dtype=np.int64)
    wide[:, : ids.shape[1]] = ids
    with torch.no_grad():
        padded = branch(torch.from_numpy(wide), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(padded, alone, atol=1e-6)
    with_unk = [np.concatenate([d, [UNK_ID, UNK_ID]]) for d in sample]
    np.testing.assert_allclose(_margins(branch, with_unk), alone, atol=1e-6)
    # Only <unk>: no words, so the margins are the intercepts.
    np.testing.assert_allclose(_margins(branch, [np.array([UNK_ID])])[0], branch.bias.numpy(), atol=1e-6)


@pytest.mark.parametrize("buckets", [0, 32])
def test_sparse_margins_used_for_the_report_match_the_graph(buckets: int) -> None:
    docs, labels = _documents(150)
    lstm = build_model(ModelConfig(vocab_size=VOCAB, num_classes=CLASSES, embed_dim=8, hidden_size=8))
    hybrid = with_bag_of_words(lstm, docs, labels, weight=0.3, sharpness=6.0, seed=0, bigram_buckets=buckets,
                               log=lambda line: None)
    assert hybrid.config.bow_bigram_buckets == buckets and len(hybrid.bag_of_words.idf) == VOCAB + buckets
    np.testing.assert_allclose(linear_margins(hybrid, docs), _margins(hybrid.bag_of_words, docs), atol=1e-5)


@pytest.mark.parametrize("members", [1, 2])
def test_hybrid_output_is_the_weighted_mix_of_both_probabilities(members: int) -> None:
    torch.manual_seed(0)
    docs, labels = _documents(150)
    lstm = build_model(ModelConfig(vocab_size=VOCAB, num_classes=CLASSES, embed_dim=8, hidden_size=8,
                                   members=members)).eval()
    hybrid = with_bag_of_words(lstm, docs, labels, weight=0.3, sharpness=6.0, seed=0, log=lambda line: None).eval()
    assert isinstance(hybrid, HybridClassifier) and hybrid.config.bow_weight == 0.3
    sample = docs[:8]
    lstm_p = torch.softmax(torch.from_numpy(_margins(lstm, sample)), dim=-1)
    linear_p = torch.softmax(6.0 * torch.from_numpy(_margins(hybrid.bag_of_words, sample)), dim=-1)
    mixed = torch.from_numpy(_margins(ProbabilityModel(hybrid), sample))
    torch.testing.assert_close(mixed, 0.7 * lstm_p + 0.3 * linear_p)
    # Saved and rebuilt from its config alone (what lstm-export and --evaluate do), it scores the same.
    rebuilt = build_model(hybrid.config.to_dict())
    rebuilt.load_state_dict(hybrid.state_dict())
    np.testing.assert_allclose(_margins(rebuilt.eval(), sample), _margins(hybrid, sample), atol=1e-6)


def test_a_class_without_training_documents_never_wins() -> None:
    docs, labels = _documents(150)
    labels = labels % 2  # class 2 of 3 never seen
    margins = _margins(_branch(docs, labels), docs)
    assert (margins.argmax(1) != 2).all() and margins[:, 2].max() < -1e3
