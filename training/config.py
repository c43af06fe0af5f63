"""The training configuration: built once at the CLI edge, frozen, passed down."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.model import ModelConfig

EMBEDDING_INITS = ("lsa", "lsa-sv", "random")
# Same as training.model.POOLINGS (a test keeps them equal); repeated so `lstm-train --help`
# and input errors answer without importing torch.
POOLINGS = ("max", "mean", "attention", "max_mean")
# --bow-weight auto: the branch's weight (and sharpness) are chosen out of fold on the members' validation folds.
AUTO = "auto"
MIN_BUDGET_SECONDS = 20.0
# Keys that may differ between a run and its --resume without changing what is trained.
# The bag-of-words branch is fitted after the LSTMs: changing it and resuming a finished run refits only it.
# Member k's fold and seed do not depend on how many members there are, so --members may grow (or shrink)
# a finished run: the members it has are kept, the new ones trained.
RESUME_FREE_KEYS = frozenset({"resume", "threads", "device", "baseline", "output", "jobs", "members",
                              "bow_weight", "bow_sharpness", "bow_bigram_buckets"})


@dataclass(frozen=True)
class TrainConfig:
    data: str
    output: str
    test_data: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    val_fraction: float = 0.1
    max_train_samples: int | None = None
    epochs: int = 10
    batch_size: int = 32
    max_len: int = 256
    vocab_size: int = 30000
    min_freq: int = 2
    embed_dim: int = 128
    hidden_size: int = 96
    layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.3
    embed_dropout: float = 0.2
    word_dropout: float = 0.0
    pooling: str = "attention"
    word_shortcut: bool = False
    embeddings: str | None = None
    embedding_init: str = "lsa"
    embedding_lr_scale: float = 1.0
    lr: float = 1.2e-2
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    distill_weight: float = 0.5
    distill_sharpness: float = 6.0
    patience: int = 3
    members: int = 3
    bow_weight: float | str = AUTO
    bow_sharpness: float = 6.0
    bow_bigram_buckets: int = 2**18
    jobs: int = 0
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    baseline: bool = True
    resume: bool = False
    time_budget: float | None = None  # seconds: search the settings within it (training.time_budget)
    init_from: str | None = None  # a checkpoint whose weights the run starts from (training.transfer)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.max_len >= 1, "--max-len must be at least 1"),
            (self.vocab_size >= 3, "--vocab-size must be at least 3"),
            (0.0 <= self.val_fraction < 1.0, "--val-fraction must be in [0, 1)"),
            (self.lr > 0, "--lr must be positive"),
            (0.0 <= self.word_dropout < 1.0, "--word-dropout must be in [0, 1)"),
            (self.embedding_lr_scale >= 0, "--embedding-lr-scale must be >= 0"),
            (self.embedding_init in EMBEDDING_INITS, f"--embedding-init must be one of {EMBEDDING_INITS}"),
            (0.0 <= self.label_smoothing < 1.0, "--label-smoothing must be in [0, 1)"),
            (self.distill_weight >= 0, "--distill-weight must be >= 0"),
            (self.distill_sharpness > 0, "--distill-sharpness must be positive"),
            (self.patience >= 1, "--patience must be at least 1"),
            (self.members >= 1, "--members must be at least 1"),
            (self.members * self.val_fraction < 1.0,
             "--members x --val-fraction must stay below 1: each member holds out its own validation fold"),
            (self.jobs >= 0, "--jobs must be >= 0"),
            (self.bow_weight == AUTO or isinstance(self.bow_weight, float | int) and 0.0 <= self.bow_weight < 1.0,
             "--bow-weight must be 'auto' or in [0, 1)"),
            (self.bow_sharpness > 0, "--bow-sharpness must be positive"),
            (self.bow_bigram_buckets >= 0, "--bow-bigram-buckets must be 0 (words only) or positive"),
            (self.pooling in POOLINGS, f"--pooling must be one of {POOLINGS}"),
            (self.time_budget is None or self.time_budget >= MIN_BUDGET_SECONDS,
             f"--time-budget must be at least {MIN_BUDGET_SECONDS:.0f}s"),
            (self.time_budget is None or not self.resume,
             "--resume continues a run with fixed settings; it cannot be combined with --time-budget"),
            (self.time_budget is None or self.init_from is None,
             "--init-from fixes the LSTM's shape, which --time-budget searches; use one or the other"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def bow_branch(self) -> bool:
        """Whether the run may end with a linear branch: an explicit weight above 0, or one chosen out of fold."""
        return self.bow_weight == AUTO or self.bow_weight > 0

    def model_config(self, vocab_size: int, num_classes: int) -> ModelConfig:
        from training.model import ModelConfig

        return ModelConfig(
            vocab_size=vocab_size, num_classes=num_classes, embed_dim=self.embed_dim,
            hidden_size=self.hidden_size, num_layers=self.layers, bidirectional=self.bidirectional,
            dropout=self.dropout, embed_dropout=self.embed_dropout, pooling=self.pooling,
            word_shortcut=self.word_shortcut,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def resume_mismatches(self, stored: dict) -> list[str]:
        """Names of settings that differ from a checkpoint's ``train_config`` (and so forbid resuming)."""
        return [f.name for f in fields(self)
                if f.name not in RESUME_FREE_KEYS and stored.get(f.name) != getattr(self, f.name)]
