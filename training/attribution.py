"""Per-position attributions: how much each token of a document moved the probability of its predicted label.

Every component of an exported model scores the classes linearly from pooled
features. A position's *share* of a component's class scores is, to first order,
how much those scores fall when the position is deleted (``component_scores``):

- max pooling: only the position holding a dimension's maximum matters (the first,
  if tied). Without it the maximum falls to the runner-up, so it gets
  ``W[c, d] * (max - runner-up)``. Over word vectors (the word shortcut), where
  every occurrence of a word repeats its value, the runner-up is the largest
  value of another word, since deleting a word deletes all its occurrences;
- mean pooling: deleting position ``t`` moves the mean by about ``-(h_t - mean) / L``,
  so it gets ``W[c, D + d] * (h_t - mean) / L``; attention pooling likewise
  ``alpha_t * (h_t - pooled)``, as the other weights renormalise;
- the TF-IDF branch: its margin is a sum over positions already.

So the shares of a component sum exactly to its scores less its *reference*
scores: the same classifier applied to the runner-ups in max-pooled dimensions and
to the pooled value in the others (the bias alone for the TF-IDF branch; tested).
Shares of the raw terms instead (``W * max`` at the winner, ``W * h_t / L`` at
every position) also sum to the scores but credit frequent words ("the", "of")
with most of the mean; against single-word deletion they ranked tokens worse
(docs/worker.md, Explanations).

Components are combined by their first-order effect on the final *log-odds* of the
predicted label ``y`` (``predicted_label_attributions``): a softmax component's
log-odds of ``y`` moves by ``a[t, y] - sum_{c != y} q_c a[t, c]`` along position
``t``'s shares ``a`` (``q``: its softmax over the other classes), and the final
probability is the mixture ``sum_k m_k p_k``; an ensemble member has
``m = (1 - bow_weight) / members``, the TF-IDF branch ``m = bow_weight`` with its
scores scaled by its sharpness. ``y`` is the argmax of the final probabilities,
chosen in the graph; pads get exactly 0. Log-odds rather than the probability
itself, because a saturated probability has no first-order change at all.

Where two positions tie for a maximum, PyTorch and ONNX Runtime may pick different
winners (their states differ in the last bits), but the runner-up then equals the
maximum and the share is about 0 either way, so the two still agree.

:class:`ExplainingModel` is what ``lstm-export`` writes: the same probabilities
as :class:`training.model.ProbabilityModel` (same operations) plus these
attributions as a second output, so the worker explains without torch.
"""

from __future__ import annotations

import math
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

# Classes less likely than e^-60 times the top one count as 0 in the combination: their products would
# fall into float32's denormal range, where the CPU's arithmetic is many times slower.
LOWEST_LOG_PROBABILITY = -60.0


@dataclass(frozen=True)
class Component:
    """One softmax over class scores inside the model, with each position's share of those scores."""

    mix: float  # its weight in the final probability mixture
    logits: torch.Tensor  # [B, C]
    shares: torch.Tensor  # [B, T, C]: sum over T = logits less the reference scores


def _max_block(x: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor,
               repeated_values: bool) -> torch.Tensor:
    """``[B, T, C]``: ``weight[c, f] * (max_f - runner-up_f)`` at the position that won dimension ``f``.

    The runner-up is 0 when nothing is left. ``repeated_values`` (word vectors): a value at another
    position equal to the maximum is the same word again, so the runner-up is the largest value
    strictly below the maximum.
    """
    masked = x.masked_fill(~mask, float("-inf"))
    steps = torch.arange(x.size(1), device=x.device).view(1, -1, 1)
    if repeated_values:
        winner = steps == masked.argmax(dim=1, keepdim=True)  # [B, T, F]: the first position holding the max
        second = masked.masked_fill(masked >= pooled.unsqueeze(1), float("-inf")).amax(dim=1)
    else:  # the two best in one pass, with a column of -inf so that a one-token document has a second
        best = torch.cat([masked, torch.full_like(masked[:, :1], float("-inf"))], dim=1).topk(2, dim=1)
        winner, second = steps == best.indices[:, :1], best.values[:, 1]
    lead = pooled - torch.where(torch.isinf(second), torch.zeros_like(second), second)  # [B, F]
    return torch.bmm(winner.to(x.dtype), lead.unsqueeze(2) * weight.t())


def _centred_block(x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, position_weights: torch.Tensor):
    """``[B, T, C]``: ``weight @ (x_t - pooled) * position_weights[t]`` (``1/L`` for a mean, alpha for attention)."""
    return (x @ weight.t() - (pooled @ weight.t()).unsqueeze(1)) * position_weights


def _lstm_blocks(model: LSTMClassifier, words: torch.Tensor,
                 states: torch.Tensor) -> list[tuple[str, torch.Tensor, int, bool]]:
    """The pooled blocks of the classifier's input, in order: (how pooled, what, its width, whether word vectors).

    Widths come from the configuration, not the tensors, so the exported weight slices are constants.
    """
    pooling, width = model.config.pooling, model.encoder.output_size
    blocks = [("max", states, width, False), ("mean", states, width, False)] if pooling == "max_mean" else \
        [(pooling, states, width, False)]
    if model.config.word_shortcut:
        blocks += [("max", words, model.config.embed_dim, True), ("mean", words, model.config.embed_dim, True)]
    return blocks


def lstm_component(model: LSTMClassifier, ids: torch.Tensor, lengths: torch.Tensor, mix: float) -> Component:
    words, states, mask = model.encode(ids, lengths)
    features = model.pool(states, mask, lengths)
    if model.config.word_shortcut:
        features = torch.cat([features, masked_max_mean(words, mask, lengths)], dim=-1)
    logits = model.classifier(model.head_dropout(features))  # as LSTMClassifier.forward
    shares, start = None, 0
    for pooling, x, width, of_words in _lstm_blocks(model, words, states):
        end = start + width
        weight, pooled = model.classifier.weight[:, start:end], features[:, start:end]
        if pooling == "max":
            block = _max_block(x, mask, pooled, weight, repeated_values=of_words)
        elif pooling == "mean":
            block = _centred_block(x, pooled, weight, mask / lengths.view(-1, 1, 1).to(x.dtype))
        else:
            block = _centred_block(x, pooled, weight, model.attention_weights(states, mask))
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


def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``log(1 / (1 + e^-x))`` without overflow or a rounding to 0 at either end (written out for the export)."""
    return torch.clamp(x, max=0.0) - torch.log(1.0 + torch.exp(-torch.abs(x)))


def predicted_label_attributions(probabilities: torch.Tensor, components: list[Component],
                                 mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: each position's first-order effect on the log-odds of the argmax label (pads 0).

    Log-odds, not the probability: a confident label's probability is flat (exactly 1 in float32 when
    saturated), so its first-order changes vanish, while its log-odds still move with every word. Within
    a document the two rank positions alike (they differ by the factor ``P_y (1 - P_y)``). With
    ``P_y = sum_k m_k sigma(l_k)``, where ``l_k`` is component k's log-odds of ``y``,
    ``d logit(P_y) = sum_k w_k dl_k`` with ``w_k = m_k sigma(l_k) sigma(-l_k) / (P_y (1 - P_y))``,
    computed in log space so that neither factor underflows.
    """
    classes = torch.arange(probabilities.size(-1), device=probabilities.device)
    predicted = classes == probabilities.argmax(dim=-1, keepdim=True)  # [B, C] one-hot
    effects, log_both, log_yes, log_no = [], [], [], []
    for component in components:
        others = component.logits.masked_fill(predicted, float("-inf"))
        log_odds = (component.logits.masked_fill(~predicted, 0.0).sum(dim=-1, keepdim=True)
                    - torch.logsumexp(others, dim=-1, keepdim=True))  # [B, 1]
        rest = torch.exp(torch.log_softmax(others, dim=-1).clamp(min=LOWEST_LOG_PROBABILITY))
        rest = rest.masked_fill(predicted, 0.0)
        # dl = shares[t, y] - sum_{c != y} q_c shares[t, c], q the softmax over the other classes
        effects.append(torch.bmm(component.shares, (predicted.to(rest.dtype) - rest).unsqueeze(2)).squeeze(2))
        log_mix = math.log(component.mix)
        yes, no = _log_sigmoid(log_odds), _log_sigmoid(-log_odds)
        log_both.append(log_mix + yes + no)
        log_yes.append(log_mix + yes)
        log_no.append(log_mix + no)
    log_normaliser = (torch.logsumexp(torch.cat(log_yes, dim=-1), dim=-1, keepdim=True)
                      + torch.logsumexp(torch.cat(log_no, dim=-1), dim=-1, keepdim=True))  # log P_y (1 - P_y)
    total = torch.zeros_like(mask)
    for effect, log_weight in zip(effects, log_both, strict=True):
        total = total + torch.exp(log_weight - log_normaliser) * effect
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
