"""Attributions in PyTorch: exact decomposition of each component, the first-order combination, padding safety.

The references here are computed independently of ``training.attribution``: runner-ups by sorting the real
positions (for word vectors: the best value of another word id), the combination by autograd through the
model's own mixing code.
"""

from __future__ import annotations

import pytest
import torch

from training.attribution import ExplainingModel, component_scores
from training.model import (
    POOLINGS,
    EnsembleClassifier,
    HybridClassifier,
    LSTMClassifier,
    ModelConfig,
    ProbabilityModel,
    build_model,
)

CONFIGS = [dict(pooling=p) for p in POOLINGS] + [
    dict(pooling="max_mean", word_shortcut=True),
    dict(pooling="attention", word_shortcut=True),
    dict(pooling="max_mean", members=3),
    dict(pooling="max_mean", members=2, bow_weight=0.3),
    dict(pooling="max", bow_weight=0.4, word_shortcut=True),
    dict(pooling="max_mean", bow_weight=0.4, bow_bigram_buckets=8),
]


def small_model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    classifier = build_model(ModelConfig(vocab_size=40, num_classes=4, embed_dim=6, hidden_size=5, **overrides)).eval()
    if overrides.get("bow_weight"):  # a fitted branch in spirit: nonzero idf, weights and bias
        with torch.no_grad():
            classifier.bag_of_words.idf.uniform_(0.5, 3.0)
            classifier.bag_of_words.weight.normal_()
            classifier.bag_of_words.bias.normal_()
    return classifier


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three documents padded to 9: repeated words, an <unk> (id 1), and a one-token document."""
    docs = [[5, 7, 5, 9, 12, 5, 1, 30, 7], [22, 3, 3, 17], [8]]
    ids = torch.zeros(len(docs), 9, dtype=torch.long)
    for row, doc in enumerate(docs):
        ids[row, : len(doc)] = torch.tensor(doc)
    return ids, torch.tensor([len(d) for d in docs])


def reference_scores(model: LSTMClassifier, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The classifier on each block's reference: runner-ups for max pooling, the pooled value otherwise."""
    words, states, mask = model.encode(ids, lengths)
    features = model.pool(states, mask, lengths)
    blocks = [("max", states), ("mean", states)] if model.config.pooling == "max_mean" else \
        [(model.config.pooling, states)]
    if model.config.word_shortcut:
        features = torch.cat([features, words.masked_fill(~mask, -1e9).amax(1), (words * mask).sum(1) /
                              lengths[:, None]], dim=-1)
        blocks += [("max", words), ("mean", words)]
    reference, start = features.clone(), 0
    for pooling, x in blocks:
        end = start + x.size(-1)
        if pooling == "max":
            for row, n in enumerate(lengths.tolist()):
                real = x[row, :n]  # [n, F]
                for f in range(real.size(1)):
                    if x is words:  # deleting a word deletes all its occurrences: the best value of another word
                        winner = ids[row, int(real[:, f].argmax())]
                        others = real[ids[row, :n] != winner, f]
                    else:
                        others = real[:, f].sort(descending=True).values[1:]
                    reference[row, start + f] = others.max() if len(others) else 0.0
        start = end
    return model.classifier(reference)


def lstm_members(classifier: torch.nn.Module) -> list[LSTMClassifier]:
    lstm = classifier.lstm if isinstance(classifier, HybridClassifier) else classifier
    return list(lstm.members) if isinstance(lstm, EnsembleClassifier) else [lstm]


@pytest.mark.parametrize("overrides", CONFIGS, ids=str)
def test_each_component_s_shares_sum_to_its_scores_less_its_reference(overrides: dict) -> None:
    classifier = small_model(**overrides)
    ids, lengths = batch()
    with torch.no_grad():
        _, components = component_scores(classifier, ids, lengths)
        for member, component in zip(lstm_members(classifier), components, strict=False):
            torch.testing.assert_close(component.shares.sum(dim=1) + reference_scores(member, ids, lengths),
                                       component.logits, atol=1e-5, rtol=1e-5)
            assert component.shares[1, 4:].abs().max() == 0 and component.shares[2, 1:].abs().max() == 0  # pads
        if overrides.get("bow_weight"):
            branch, sharpness = classifier.bag_of_words, classifier.config.bow_sharpness
            linear = components[-1]
            torch.testing.assert_close(linear.shares.sum(dim=1) + sharpness * branch.bias, linear.logits)
            torch.testing.assert_close(linear.logits, sharpness * branch(ids, lengths))
            assert linear.shares[0, 6].abs().max() == 0  # <unk> is not counted by the branch
    assert len(components) == overrides.get("members", 1) + (1 if overrides.get("bow_weight") else 0)


@pytest.mark.parametrize("overrides", CONFIGS, ids=str)
def test_attributions_are_the_first_order_effect_on_the_predicted_log_odds(overrides: dict) -> None:
    """attribution_t = sum over components of d logit(P_y) / d z_k . shares_k[t], with the gradient by autograd."""
    classifier = small_model(**overrides)
    ids, lengths = batch()
    probabilities, attributions = ExplainingModel(classifier)(ids, lengths)
    _, components = component_scores(classifier, ids, lengths)
    logits = [c.logits.detach().requires_grad_(True) for c in components]
    if overrides.get("bow_weight"):
        lstm = logits[:-1]
        lstm_logits = classifier.lstm.combine(lstm) if len(lstm) > 1 else lstm[0]
        final = torch.softmax(classifier.mix(lstm_logits, logits[-1]), dim=-1)
    else:
        final = torch.softmax(classifier.combine(logits) if len(logits) > 1 else logits[0], dim=-1)
    predicted = final.argmax(dim=-1)
    p_y = final.gather(1, predicted[:, None])
    gradients = torch.autograd.grad((torch.log(p_y) - torch.log(1 - p_y)).sum(), logits)
    expected = sum((c.shares.detach() * g[:, None, :]).sum(-1) for c, g in zip(components, gradients, strict=True))
    torch.testing.assert_close(final, probabilities.detach())
    torch.testing.assert_close(attributions.detach(), expected * (torch.arange(9) < lengths[:, None]),
                               atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("overrides", CONFIGS, ids=str)
def test_same_probabilities_as_the_probability_model_and_padding_changes_nothing(overrides: dict) -> None:
    classifier = small_model(**overrides)
    model = ExplainingModel(classifier)
    ids, lengths = batch()
    with torch.no_grad():
        probabilities, attributions = model(ids, lengths)
        torch.testing.assert_close(probabilities, ProbabilityModel(classifier)(ids, lengths), atol=0, rtol=0)
        wider = torch.cat([ids, torch.zeros(3, 20, dtype=torch.long)], dim=1)
        p_wide, a_wide = model(wider, lengths)
        torch.testing.assert_close(p_wide, probabilities, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a_wide[:, :9], attributions, atol=1e-6, rtol=1e-5)
        assert a_wide[:, 9:].abs().max() == 0
        for row in range(3):
            n = int(lengths[row])
            p_alone, a_alone = model(ids[row : row + 1, :n], lengths[row : row + 1])
            torch.testing.assert_close(a_alone[0], attributions[row, :n], atol=1e-6, rtol=1e-5)
    assert attributions[0].abs().max() > 0


def _log_odds_gradient_attributions(classifier: torch.nn.Module, ids: torch.Tensor,
                                    lengths: torch.Tensor) -> torch.Tensor:
    """The autograd reference of the test above, for a hybrid model, in whatever dtype the model has."""
    _, components = component_scores(classifier, ids, lengths)
    logits = [c.logits.detach().requires_grad_(True) for c in components]
    lstm = classifier.lstm.combine(logits[:-1])
    log_final = torch.log_softmax(classifier.mix(lstm, logits[-1]), dim=-1)
    predicted = torch.nn.functional.one_hot(log_final.argmax(dim=-1), log_final.size(-1)).bool()
    log_odds = log_final[predicted] - torch.logsumexp(log_final.masked_fill(predicted, float("-inf")), dim=-1)
    gradients = torch.autograd.grad(log_odds.sum(), logits)
    return sum((c.shares.detach() * g[:, None, :]).sum(-1) for c, g in zip(components, gradients, strict=True))


def test_a_label_saturated_to_probability_one_is_still_explained() -> None:
    """A very confident label: 1.0 in float32, so the probability has no first-order change; its log-odds do."""
    classifier = small_model(pooling="max_mean", members=2, bow_weight=0.3)
    ids, lengths = batch()
    with torch.no_grad():  # every component sure of class 0, far past float32's 1 - 6e-8
        for member in classifier.lstm.members:
            member.classifier.bias[0] += 40.0
        classifier.bag_of_words.bias[0] += 40.0 / classifier.config.bow_sharpness
        probabilities, attributions = ExplainingModel(classifier)(ids, lengths)
    saturated = 0
    assert probabilities[saturated, 0] == 1.0  # float32 cannot tell it from certainty
    expected = _log_odds_gradient_attributions(classifier.double(), ids, lengths)  # in log space
    real = int(lengths[saturated])
    assert attributions[saturated, :real].abs().min() >= 0 and attributions[saturated, :real].abs().max() > 0.1
    torch.testing.assert_close(attributions[saturated, :real].double(), expected[saturated, :real],
                               atol=1e-3, rtol=1e-3)
