"""The LSTM text classifier, built only from a :class:`ModelConfig`.

Serving-safe by construction: a document's scores depend only on its own
tokens. The forward direction of an LSTM over a right-padded batch is exact at
every real position (pads come after them). The backward direction is run
over each sequence reversed *within its own length* (a gather), so it too
starts at the document's last real token and never reads a pad. Pooling masks
the pads. The same graph exports to ONNX, so PyTorch training, the exported
model and the worker compute one function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from core.vocab import UNK_ID

POOLINGS = ("max", "mean", "attention", "max_mean")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    num_classes: int
    embed_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.3
    embed_dropout: float = 0.2
    pooling: str = "attention"
    pad_id: int = 0
    # Also feed the max- and mean-pooled word vectors straight to the classifier (a fastText-like
    # shortcut beside the LSTM): with LSA-initialised vectors it carries the topical signal from
    # the first step, so the LSTM only has to add what word order tells. Padding-safe (masked).
    word_shortcut: bool = False
    # > 1: that many independently trained networks of this shape whose probabilities are averaged.
    members: int = 1
    # > 0: the LSTM(s)' probabilities are mixed with a linear TF-IDF model's over the same tokens,
    # (1 - bow_weight) * lstm + bow_weight * softmax(bow_sharpness * margins); see HybridClassifier.
    bow_weight: float = 0.0
    bow_sharpness: float = 6.0
    # > 0: the branch also counts adjacent word pairs, hashed into this many columns (see bigram_column).
    bow_bigram_buckets: int = 0

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {self.pooling!r}")
        if min(self.vocab_size, self.num_classes, self.embed_dim, self.hidden_size, self.num_layers,
               self.members) < 1:
            raise ValueError("sizes must be positive")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.embed_dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if not 0.0 <= self.bow_weight < 1.0 or self.bow_sharpness <= 0:
            raise ValueError("bow_weight must be in [0, 1) and bow_sharpness positive")
        if self.bow_bigram_buckets < 0:
            raise ValueError("bow_bigram_buckets must be 0 or positive")

    def to_dict(self) -> dict:
        return asdict(self)


def time_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, T]`` bool: True at real tokens."""
    steps = torch.arange(width, device=lengths.device).unsqueeze(0)
    return steps < lengths.unsqueeze(1)


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each ``x[b, :lengths[b]]`` in time, leaving its pads where they are."""
    width = x.size(1)
    steps = torch.arange(width, device=x.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.size(2)))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum(dim=1) / lengths.unsqueeze(1).to(x.dtype)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask, float("-inf")).amax(dim=1)


def masked_max_mean(x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.cat([masked_max(x, mask), masked_mean(x, mask, lengths)], dim=-1)


class LengthAwareBiLSTM(nn.Module):
    """Stacked (bi)LSTM over right-padded batches whose outputs ignore the pads."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool, dropout: float):
        super().__init__()
        self.bidirectional = bidirectional
        directions = 2 if bidirectional else 1
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for layer in range(num_layers):
            size = input_size if layer == 0 else hidden_size * directions
            self.forward_layers.append(nn.LSTM(size, hidden_size, batch_first=True))
            if bidirectional:
                self.backward_layers.append(nn.LSTM(size, hidden_size, batch_first=True))
        self.between_layers = nn.Dropout(dropout)
        self.output_size = hidden_size * directions

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for layer, forward_lstm in enumerate(self.forward_layers):
            if layer:
                x = self.between_layers(x)
            out, _ = forward_lstm(x)
            if self.bidirectional:
                backward, _ = self.backward_layers[layer](reverse_within_length(x, lengths))
                out = torch.cat([out, reverse_within_length(backward, lengths)], dim=-1)
            x = out
        return x


class LSTMClassifier(nn.Module):
    """embedding → length-aware (bi)LSTM → masked pooling → dropout → linear."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.pad_id)
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.encoder = LengthAwareBiLSTM(
            config.embed_dim, config.hidden_size, config.num_layers, config.bidirectional, config.dropout
        )
        features = self.encoder.output_size
        if config.pooling == "attention":
            self.attention = nn.Sequential(nn.Linear(features, features), nn.Tanh(), nn.Linear(features, 1, bias=False))
        pooled = features * 2 if config.pooling == "max_mean" else features
        if config.word_shortcut:
            pooled += config.embed_dim * 2
        self.head_dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(pooled, config.num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, classes]`` for right-padded ``ids [B, T]`` with ``lengths [B]`` (each >= 1)."""
        words, states, mask = self.encode(ids, lengths)
        features = self.pool(states, mask, lengths)
        if self.config.word_shortcut:
            features = torch.cat([features, masked_max_mean(words, mask, lengths)], dim=-1)
        return self.classifier(self.head_dropout(features))

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(word vectors [B, T, E], LSTM states [B, T, F], mask [B, T, 1])``: what the pooling reads."""
        words = self.embed_dropout(self.embedding(ids))
        return words, self.encoder(words, lengths), time_mask(lengths, ids.size(1)).unsqueeze(-1)

    def attention_weights(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, 1]``: softmax over the real positions of the attention scores (pads get 0)."""
        return torch.softmax(self.attention(states).masked_fill(~mask, float("-inf")), dim=1)

    def pool(self, states: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        pooling = self.config.pooling
        if pooling == "attention":
            return (self.attention_weights(states, mask) * states).sum(dim=1)
        if pooling == "mean":
            return masked_mean(states, mask, lengths)
        if pooling == "max":
            return masked_max(states, mask)
        return masked_max_mean(states, mask, lengths)


class EnsembleClassifier(nn.Module):
    """``config.members`` LSTMClassifiers over the same ids; their class probabilities are averaged.

    Returns log of the mean probability, so a softmax of the output is that mean and everything
    downstream (loss, export, the worker's top-k) treats it as logits. Each member is serving-safe,
    so the average is too.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        single = replace(config, members=1)
        self.members = nn.ModuleList(LSTMClassifier(single) for _ in range(config.members))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.combine([m(ids, lengths) for m in self.members])

    @staticmethod
    def combine(member_logits: list[torch.Tensor]) -> torch.Tensor:
        """Log of the mean of the members' softmax probabilities."""
        log_probabilities = torch.stack([torch.log_softmax(logits, dim=-1) for logits in member_logits])
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(member_logits))


# Word pairs are hashed, not looked up: a hash is a few integer operations in the graph, a pair
# vocabulary would need a lookup table there. Ids are below 2^31, so the product fits in int64.
BIGRAM_HASH_MULTIPLIER = 1_000_003


def bigram_column(previous, current, buckets: int):
    """The hashed column (0 .. buckets - 1) of the word pair (previous, current): numpy arrays or tensors."""
    return (previous * BIGRAM_HASH_MULTIPLIER + current) % buckets


class BagOfWordsBranch(nn.Module):
    """Margins of a linear model over the document's TF-IDF vector, computed from the ids in the graph.

    The vector is scikit-learn's ``TfidfTransformer(sublinear_tf=True)`` of the feature counts:
    feature u gets ``(1 + log count_u) * idf_u``, then the vector is scaled to unit length. The
    features are the words and, with ``bigram_buckets``, the pairs of adjacent words, hashed into
    that many columns after the vocabulary's (``bigram_column``). It is computed per position
    without a feature-wide tensor or a scatter: position t's feature occurs ``c_t`` times, so
    summing ``value_t / c_t`` over positions counts each feature once. Pads and ``<unk>`` do not
    count (masked by ``lengths`` and id; a pair needs two counted words), so, like the LSTMs, a
    document's margins do not depend on padding or batch-mates. The buffers are fitted in closed
    form (``training.bag_of_words``), not by gradient descent.
    """

    def __init__(self, vocab_size: int, num_classes: int, bigram_buckets: int = 0, unk_id: int = UNK_ID):
        super().__init__()
        self.unk_id, self.vocab_size, self.bigram_buckets = unk_id, vocab_size, bigram_buckets
        columns = vocab_size + bigram_buckets
        self.register_buffer("idf", torch.zeros(columns))
        self.register_buffer("weight", torch.zeros(columns, num_classes))  # one row per word, then per pair bucket
        self.register_buffer("bias", torch.zeros(num_classes))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.per_position(ids, lengths).sum(dim=1) + self.bias

    def per_position(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[B, T, classes]``: each position's share of the margins (their sum, plus the bias, is the margins).

        A pair's share is split evenly between its two words: deleting either one removes it.
        """
        counted = time_mask(lengths, ids.shape[1]) & (ids > self.unk_id)  # pads (id 0) too
        streams = [(ids, counted)]
        if self.bigram_buckets:
            # The pair ending at position t (none ends at 0), in the columns after the vocabulary's.
            paired = torch.cat([torch.zeros_like(counted[:, :1]), counted[:, :-1] & counted[:, 1:]], dim=1)
            pairs = self.vocab_size + bigram_column(ids[:, :-1], ids[:, 1:], self.bigram_buckets)
            streams.append((torch.cat([torch.zeros_like(ids[:, :1]), pairs], dim=1), paired))
        parts = []
        for columns, mask in streams:
            real = mask.float()
            same = (columns.unsqueeze(2) == columns.unsqueeze(1)).float() * real.unsqueeze(1)
            occurrences = (same.sum(dim=2) * real).clamp(min=1.0)  # [B, T]: c_t
            values = (1.0 + torch.log(occurrences)) * self.idf[columns] * real
            parts.append((columns, values, occurrences))
        norm = torch.sqrt(sum((values * values / occurrences).sum(dim=1, keepdim=True)
                              for _, values, occurrences in parts)).clamp(min=1e-12)
        shares = [(values / occurrences / norm).unsqueeze(2) * self.weight[columns]
                  for columns, values, occurrences in parts]
        if len(shares) == 1:
            return shares[0]
        half = 0.5 * shares[1]
        return shares[0] + half + torch.cat([half[:, 1:], torch.zeros_like(half[:, :1])], dim=1)


class HybridClassifier(nn.Module):
    """The LSTM (or ensemble) with a linear TF-IDF branch; returns log of the mixed probabilities."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.lstm = build_model(replace(config, bow_weight=0.0))
        self.bag_of_words = BagOfWordsBranch(config.vocab_size, config.num_classes, config.bow_bigram_buckets)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.mix(self.lstm(ids, lengths), self.config.bow_sharpness * self.bag_of_words(ids, lengths))

    def mix(self, lstm_logits: torch.Tensor, linear_logits: torch.Tensor) -> torch.Tensor:
        """Log of ``(1 - bow_weight) * softmax(lstm) + bow_weight * softmax(linear)``."""
        weight = self.config.bow_weight
        lstm = torch.log_softmax(lstm_logits, dim=-1) + math.log(1.0 - weight)
        linear = torch.log_softmax(linear_logits, dim=-1)
        return torch.logsumexp(torch.stack([lstm, linear + math.log(weight)]), dim=0)


class ProbabilityModel(nn.Module):
    """What is exported: ids, lengths → class probabilities."""

    def __init__(self, classifier: LSTMClassifier | EnsembleClassifier | HybridClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(ids, lengths), dim=-1)


def build_model(config: ModelConfig | dict) -> LSTMClassifier | EnsembleClassifier | HybridClassifier:
    config = config if isinstance(config, ModelConfig) else ModelConfig(**config)
    if config.bow_weight > 0:
        return HybridClassifier(config)
    return EnsembleClassifier(config) if config.members > 1 else LSTMClassifier(config)
