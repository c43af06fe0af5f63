"""Per-position attributions: how much each token of a document moved the probability of its predicted label.

Every component of an exported model is linear in pooled features, so its class
scores split exactly over positions (``component_scores``):

- a max-pooled dimension's term ``W[c, d] * max_t h[t, d]`` belongs to the position
  that won the max (split evenly between tied winners);
- a mean-pooled term ``W[c, D + d] * h[t, d] / L`` belongs to position ``t``, an
  attention-pooled one ``W[c, d] * alpha_t * h[t, d]`` too, and the word shortcut's
  max and mean over word vectors split the same way;
- the TF-IDF branch's margin already is a sum over positions.

The shares of one component sum to its scores less the bias (tested). Components
are then combined by their first-order effect on the final probability of the
predicted label ``y``: a softmax component with probabilities ``p`` and mixing
weight ``m`` contributes ``m * p_y * (a[t, y] - sum_c p_c a[t, c])`` at position
``t`` (the derivative of ``m * softmax(z)_y`` along the position's scores). An
ensemble member has ``m = (1 - bow_weight) / members``, the TF-IDF branch
``m = bow_weight`` with its scores scaled by its sharpness. ``y`` is the argmax of
the final probabilities, chosen in the graph, and pads get exactly 0.

:class:`ExplainingModel` is what ``lstm-export`` writes: the same probabilities
as :class:`training.model.ProbabilityModel` (same operations) plus these
attributions as a second output, so the worker explains without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.model import (
    EnsembleClassifier,
    HybridClassifier,
    LSTMClassifier,
    masked_max_mean,
    time_mask,
)

# Positions within about this of a dimension's maximum share its max-pooled term (see _max_block).
MAX_SHARE_TEMPERATURE = 0.01
# exp() of anything lower is a weight of no consequence; clamping keeps it out of float32's denormal range,
# where the CPU's arithmetic is many times slower.
LOWEST_EXPONENT = -20.0


@dataclass(frozen=True)
class Component:
    """One softmax over class scores inside the model, with each position's share of those scores."""

    mix: float  # its weight in the final probability mixture
    logits: torch.Tensor  # [B, C]
    shares: torch.Tensor  # [B, T, C]: sums over T to logits less the bias


def _max_block(x: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``[B, T, C]``: the terms ``weight[c, f] * pooled[f]`` of a max-pooled block, each at its winner(s).

    The winner is a soft argmax: positions within about :data:`MAX_SHARE_TEMPERATURE` of a
    dimension's maximum share its term. LSTM states saturate near ±1, where many positions lie
    within float rounding of the maximum; a hard winner would then be picked by the last bits,
    which differ between PyTorch and ONNX Runtime. Deleting one of several near-equal positions
    barely lowers the maximum, so sharing is also what a deletion test sees. The shares of a
    dimension sum to 1, so the block's terms sum to its part of the scores exactly.
    """
    closeness = ((x - pooled.unsqueeze(1)) / MAX_SHARE_TEMPERATURE).clamp(LOWEST_EXPONENT, 0.0)  # pads may be > max
    weights = torch.exp(closeness) * mask  # [B, T, F]
    per_unit_weight = (pooled / weights.sum(dim=1)).unsqueeze(2) * weight.t()  # [B, F, C]
    return torch.bmm(weights, per_unit_weight)


def _lstm_blocks(model: LSTMClassifier, words: torch.Tensor, states: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The pooled blocks of the classifier's input, in order: (how it is pooled, what is pooled)."""
    pooling = model.config.pooling
    blocks = [("max", states), ("mean", states)] if pooling == "max_mean" else [(pooling, states)]
    if model.config.word_shortcut:
        blocks += [("max", words), ("mean", words)]
    return blocks


def lstm_component(model: LSTMClassifier, ids: torch.Tensor, lengths: torch.Tensor, mix: float) -> Component:
    words, states, mask = model.encode(ids, lengths)
    features = model.pool(states, mask, lengths)
    if model.config.word_shortcut:
        features = torch.cat([features, masked_max_mean(words, mask, lengths)], dim=-1)
    logits = model.classifier(model.head_dropout(features))  # as LSTMClassifier.forward
    shares, start = None, 0
    for pooling, x in _lstm_blocks(model, words, states):
        end = start + x.size(-1)
        weight = model.classifier.weight[:, start:end]
        if pooling == "max":
            block = _max_block(x, mask, features[:, start:end], weight)
        elif pooling == "mean":
            block = (x @ weight.t()) * (mask / lengths.view(-1, 1, 1).to(x.dtype))
        else:  # attention: the pooled vector is sum_t alpha_t h_t
            block = (x @ weight.t()) * model.attention_weights(states, mask)
        shares, start = block if shares is None else shares + block, end
    return Component(mix, logits, shares)


def component_scores(classifier: nn.Module, ids: torch.Tensor, lengths: torch.Tensor,
                     mix: float = 1.0) -> tuple[torch.Tensor, list[Component]]:
    """``(the classifier's output, exactly as its forward computes it, [its components])``."""
    if isinstance(classifier, LSTMClassifier):
        component = lstm_component(classifier, ids, lengths, mix)
        return component.logits, [component]
    if isinstance(classifier, EnsembleClassifier):
        share = mix / len(classifier.members)
        members = [lstm_component(m, ids, lengths, share) for m in classifier.members]
        return classifier.combine([m.logits for m in members]), members
    if isinstance(classifier, HybridClassifier):
        weight, sharpness = classifier.config.bow_weight, classifier.config.bow_sharpness
        lstm_logits, components = component_scores(classifier.lstm, ids, lengths, mix * (1.0 - weight))
        branch = classifier.bag_of_words
        per_position = branch.per_position(ids, lengths)
        linear_logits = sharpness * (per_position.sum(dim=1) + branch.bias)  # as HybridClassifier.forward
        components.append(Component(mix * weight, linear_logits, sharpness * per_position))
        return classifier.mix(lstm_logits, linear_logits), components
    raise TypeError(f"no attribution for {type(classifier).__name__}")


def predicted_label_attributions(probabilities: torch.Tensor, components: list[Component],
                                 mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: each position's first-order effect on the probability of the argmax label (pads 0)."""
    classes = torch.arange(probabilities.size(-1), device=probabilities.device)
    predicted = (classes == probabilities.argmax(dim=-1, keepdim=True)).to(probabilities.dtype)  # [B, C] one-hot
    total = torch.zeros_like(mask)
    for component in components:
        # softmax, with classes below e^-60 of the top one counted as 0 (out of the denormal range)
        p = torch.exp(torch.log_softmax(component.logits, dim=-1).clamp(min=3 * LOWEST_EXPONENT))
        p_predicted = (p * predicted).sum(dim=-1, keepdim=True)  # [B, 1]
        # sum_c (1[c = y] - p_c) * shares[t, c]: the position's pull toward y against the component's average class
        effect = torch.bmm(component.shares, (predicted - p).unsqueeze(2)).squeeze(2)  # [B, T]
        total = total + component.mix * p_predicted * effect
    return total * mask


class ExplainingModel(nn.Module):
    """What is exported: ids, lengths → (class probabilities, attributions ``[B, T]`` for the predicted label)."""

    def __init__(self, classifier: LSTMClassifier | EnsembleClassifier | HybridClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, components = component_scores(self.classifier, ids, lengths)
        probabilities = torch.softmax(logits, dim=-1)
        mask = time_mask(lengths, ids.size(1)).to(probabilities.dtype)
        return probabilities, predicted_label_attributions(probabilities, components, mask)
