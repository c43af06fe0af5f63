"""What every configuration trained on one data set shares, prepared once and kept in memory.

A run trains one configuration; a ``--time-budget`` search trains many on the same documents. Each
would otherwise rebuild the vocabulary, the LSA word vectors, encode every document and fit each
member's out-of-fold teacher again. Here they are built on first use and reused by every
configuration that needs the same ones (the cache keys name exactly the settings they depend on).
Nothing is written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from core.vocab import Vocabulary
from training.config import TrainConfig
from training.data import validation_indices
from training.embeddings import InitialVectors, initial_vectors
from training.predict import encode_all
from training.trainer import TrainingData
from training.transfer import InitSource, load_init_source


@dataclass(frozen=True)
class Features:
    """A configuration's vocabulary, starting word vectors and every training document's ids."""

    vocab: Vocabulary
    vectors: InitialVectors | None
    ids: list[np.ndarray]  # all training documents, first max_len tokens


def shares_vocabulary(config: TrainConfig) -> bool:
    """Whether the members share one vocabulary built from every training document (else: from the train part).

    An ensemble needs one vocabulary for its one graph, and so does a model with a linear branch
    (fitted on every document); a single LSTM builds its own from the documents it trains on.
    """
    return config.members > 1 or config.bow_branch


@dataclass
class PreparedData:
    """Every training document (no validation part; each member takes its fold) and the test part."""

    full: TrainingData
    cache: dict = field(default_factory=dict)

    def folds(self, config: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each member's ``(train, validation)`` indices into ``full``'s training documents (its own fold)."""
        return [validation_indices(self.full.train_labels, config.val_fraction, config.seed, fold=i)
                for i in range(config.members)]

    def features(self, config: TrainConfig) -> Features:
        """The vocabulary (see :func:`shares_vocabulary`), starting vectors and ids ``config`` trains from."""
        if shares_vocabulary(config):
            source: tuple = ("all",)
            texts = self.full.train_texts
        else:
            kept = self.folds(config)[0][0]
            source = ("fold 1", config.val_fraction, config.seed)
            texts = [self.full.train_texts[i] for i in kept]
        vocab_key = ("vocab", source, config.vocab_size, config.min_freq)
        vocab = self._cached(vocab_key, lambda: Vocabulary.build(texts, max_size=config.vocab_size,
                                                                  min_freq=config.min_freq))
        vectors = self._cached(("vectors", vocab_key, config.embeddings, config.embedding_init, config.embed_dim,
                                config.seed), lambda: initial_vectors(config, texts, vocab))
        ids = self._cached(("ids", vocab_key, config.max_len),
                           lambda: encode_all(vocab, self.full.train_texts, config.max_len))
        return Features(vocab, vectors, ids)

    def init_source(self, config: TrainConfig) -> InitSource | None:
        """``--init-from``'s checkpoint, read once."""
        if config.init_from is None:
            return None
        return self._cached(("init", config.init_from), lambda: load_init_source(config.init_from))

    def teacher_margins(self, config: TrainConfig, fold: int) -> np.ndarray | None:
        """Member ``fold``'s out-of-fold teacher margins if an earlier configuration computed them."""
        return self.cache.get(self._teacher_key(config, fold))

    def keep_teacher_margins(self, config: TrainConfig, fold: int, margins: np.ndarray | None) -> None:
        if margins is not None:
            self.cache[self._teacher_key(config, fold)] = margins

    @staticmethod
    def _teacher_key(config: TrainConfig, fold: int) -> tuple:
        # The teacher reads a member's training texts (its fold's complement) and nothing the model settings change.
        return ("teacher", config.val_fraction, config.seed, fold)

    def _cached(self, key: tuple, build):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]


def member_dataset(prepared: PreparedData, config: TrainConfig, index: int) -> TrainingData:
    """Member ``index``'s train/validation split of all training documents, as texts."""
    full = prepared.full
    kept, held = prepared.folds(config)[index]
    return replace(full, train_texts=[full.train_texts[i] for i in kept],
                   train_labels=[int(full.train_labels[i]) for i in kept],
                   val_texts=[full.train_texts[i] for i in held], val_labels=[int(full.train_labels[i]) for i in held])
