"""The training loop of one LSTM: AdamW + one-cycle LR, gradient clipping, early stopping on validation macro-F1.

Speed on CPU comes from padded, length-bucketed batches (see ``batching``)
over ids encoded once up front; accuracy from LSA-initialised embeddings and
the one-cycle schedule (see ``embeddings``). Everything it trains from comes in
a :class:`MemberJob`, in memory; it writes checkpoints only when the job names a folder.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.vocab import Vocabulary
from training.batching import BucketBatchSampler, collate, drop_words
from training.checkpoint import BEST_FILE, LAST_FILE, load_checkpoint, make_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.embeddings import InitialVectors
from training.model import LSTMClassifier, build_model
from training.predict import predict_logits, softmax, validation_scores
from training.resume import Progress, load_last, save_last
from training.transfer import InitSource, apply_init

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainingData:
    """Train / validation / test parts; labels are indices into ``label_names``."""

    train_texts: Sequence[str]
    train_labels: Sequence[int]
    val_texts: Sequence[str]
    val_labels: Sequence[int]
    test_texts: Sequence[str]
    test_labels: Sequence[int]
    label_names: Sequence[str]


@dataclass
class TrainResult:
    model: LSTMClassifier
    vocab: Vocabulary
    history: list[dict]
    best_epoch: int
    best_val_macro_f1: float | None  # None: trained without a validation split
    train_seconds: float
    train_cpu_seconds: float
    stopped_early: bool
    embedding_source: str
    distillation: dict = field(default_factory=dict)
    members: list[dict] = field(default_factory=list)  # ensembles: one summary per member
    bow_selection: dict | None = None  # --bow-weight auto: the weight chosen out of fold and the scores compared
    # Pooled out-of-fold accuracy of the model as built (each fold scored by the member that did not train
    # on it, mixed with a branch fitted without it); None without validation folds.
    val_score: float | None = None
    # The out-of-fold probabilities val_score is computed from, and their labels: what the calibration is fitted on.
    held_out: tuple[np.ndarray, np.ndarray] | None = None
    cut_short: bool = False  # a deadline stopped some member before its last epoch
    init: dict | None = None  # --init-from: what carried over


@dataclass(frozen=True)
class MemberJob:
    """One LSTM to train, all in memory: its documents' ids, seed, shared vocabulary and vectors, teacher."""

    name: str  # "member 2"; "" for a single model
    seed: int
    vocab: Vocabulary
    vectors: InitialVectors | None
    train_texts: Sequence[str]  # what the distillation teacher reads
    train_ids: Sequence[np.ndarray]
    train_labels: Sequence[int]
    val_ids: Sequence[np.ndarray]
    val_labels: Sequence[int]
    label_names: Sequence[str]
    teacher_margins: np.ndarray | None = None  # computed by an earlier configuration on the same documents
    output: Path | None = None  # checkpoint.pt and last.pt every epoch (--resume); None: nothing written
    deadline: float | None = None  # time.time() after which no batch starts
    init: InitSource | None = None  # --init-from: the earlier model's weights this member starts from


@dataclass
class MemberFit:
    """A trained member: best weights, history, and what the run reuses (fold probabilities, teacher margins)."""

    model: LSTMClassifier
    history: list[dict]
    best_epoch: int
    best_val_macro_f1: float | None
    train_seconds: float
    train_cpu_seconds: float
    stopped_early: bool
    embedding_source: str
    distillation: dict
    val_probabilities: np.ndarray | None
    teacher_margins: np.ndarray | None
    cut_short: bool


def _distillation_targets(config: TrainConfig, job: MemberJob,
                          log: Log) -> tuple[torch.Tensor | None, np.ndarray | None, dict]:
    """The teacher's soft targets (or None), its margins (to reuse) and what to report in ``metrics.json``."""
    if config.distill_weight <= 0:
        return None, None, {"weight": 0.0}
    from training.teacher import soft_targets, teacher_accuracy, teacher_margins

    start = time.perf_counter()
    margins = job.teacher_margins
    if margins is None:
        try:
            margins = teacher_margins(job.train_texts, job.train_labels, len(job.label_names), seed=config.seed)
        except ValueError as exc:
            # On by default, so a rare class must not stop a run: train on the labels alone and say so.
            log(f"distillation skipped: {exc}")
            return None, None, {"weight": config.distill_weight, "skipped": str(exc)}
    targets = soft_targets(margins, config.distill_sharpness)
    accuracy = teacher_accuracy(targets, job.train_labels)
    seconds = time.perf_counter() - start
    log(f"distillation: TF-IDF + LinearSVC teacher, out-of-fold accuracy {accuracy:.4f}, {seconds:.1f}s")
    return torch.from_numpy(targets), margins, {
        "weight": config.distill_weight, "sharpness": config.distill_sharpness,
        "teacher_out_of_fold_accuracy": round(accuracy, 5), "teacher_seconds": round(seconds, 1)}


def _optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, list[float]]:
    """AdamW and each group's peak LR; no weight decay on embeddings (sparse rows would decay unevenly) or biases.

    The word vectors learn at ``lr * embedding_lr_scale`` (frozen at 0): fine-tuning 30k LSA vectors
    on 11k documents at full speed memorises names and addresses of the training period, which the
    later test period does not share (docs/training.md, Results on 20 Newsgroups).
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not name.startswith("embedding."):
            (no_decay if name.endswith("bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    peaks = [config.lr, config.lr]
    if config.embedding_lr_scale > 0:
        groups.append({"params": list(model.embedding.parameters()), "weight_decay": 0.0})
        peaks.append(config.lr * config.embedding_lr_scale)
    else:
        model.embedding.weight.requires_grad_(False)  # frozen: no gradient to compute either
    return torch.optim.AdamW(groups, lr=config.lr), peaks


def fit_member(config: TrainConfig, job: MemberJob, device: torch.device, log: Log = print) -> MemberFit:
    """Train one LSTM on ``job``; the best epoch by validation macro-F1 is kept (the last without validation).

    With ``job.output`` it also writes ``checkpoint.pt`` (best) and ``last.pt`` (every epoch, with the
    optimizer state ``--resume`` continues from). With ``job.deadline`` no batch starts after it: the
    best finished epoch is kept (or, if none finished, the weights as they are) and ``cut_short`` is set.
    """
    torch.manual_seed(job.seed)
    resumed = load_last(config, job.vocab, job.output) if config.resume and job.output else None
    model = build_model(config.model_config(len(job.vocab), len(job.label_names)))
    progress = Progress()
    if resumed is None and job.vectors is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(torch.from_numpy(job.vectors.matrix))
        progress.embedding_source = job.vectors.source
    if resumed is None and job.init is not None:
        apply_init(model, job.init, job.vocab, list(job.label_names), map_new_tokens=job.vectors is not None)
        progress.embedding_source = f"{progress.embedding_source}, shared tokens from {job.init.path}"
    model.to(device)

    train_y = torch.as_tensor(job.train_labels, dtype=torch.long)
    sampler = BucketBatchSampler([len(x) for x in job.train_ids], config.batch_size, job.seed)
    optimizer, peak_lrs = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak_lrs, total_steps=config.epochs * len(sampler), pct_start=0.25,
        anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    soft_targets, margins, distillation = _distillation_targets(config, job, log)
    # Without a validation split there is nothing to stop early on or to pick an epoch with:
    # every epoch replaces the saved model, so the last one is kept.
    validating = bool(job.val_ids)
    if not validating:
        log("no validation split (--val-fraction 0): no early stopping, the last epoch is kept")
    best_state = None
    if resumed is not None:
        model.load_state_dict(resumed.weights)
        optimizer.load_state_dict(resumed.optimizer_state)
        scheduler.load_state_dict(resumed.scheduler_state)
        torch.set_rng_state(resumed.torch_rng_state)
        progress = resumed.progress
        best_state = load_checkpoint(job.output / BEST_FILE)["state_dict"]
        log(f"resuming from {job.output / LAST_FILE} after epoch {progress.epoch}")
    stopped_early, cut_short = progress.bad_epochs >= config.patience, False
    saving = dict(vocab=job.vocab, labels=list(job.label_names), max_len=config.max_len,
                  train_config=config.to_dict())
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        if stopped_early:
            break
        began, began_cpu = time.perf_counter(), time.process_time()
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        word_rng = np.random.default_rng([job.seed, epoch, 1])  # per epoch: --resume replays it exactly
        prefix = f"{job.name} " if job.name else ""
        bar = tqdm(sampler.batches(epoch), desc=f"{prefix}epoch {epoch}/{config.epochs}", unit="batch",
                   leave=False, disable=None, mininterval=2.0)
        for batch in bar:
            if job.deadline is not None and time.time() >= job.deadline:
                cut_short = True
                break
            ids, lengths = collate(job.train_ids, batch)
            if config.word_dropout > 0:
                ids = drop_words(ids, config.word_dropout, word_rng)
            targets = train_y[batch].to(device)
            logits = model(torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device))
            loss = loss_fn(logits, targets)
            if soft_targets is not None:
                loss = loss + config.distill_weight * nn.functional.kl_div(
                    torch.log_softmax(logits, dim=-1), soft_targets[batch].to(device), reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.grad_clip)
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.item()) * len(batch)
            correct += int((logits.argmax(1) == targets).sum().item())
            seen += len(batch)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        if cut_short and best_state is not None:
            log(f"deadline: stopped in epoch {epoch}; epoch {progress.best_epoch} is kept")
            break
        record = {"epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                  "lr": scheduler.get_last_lr()[0]}
        if cut_short:
            record["share_of_epoch"] = round(seen / max(len(job.train_ids), 1), 4)
        record.update(validation_scores(model, job.val_ids, job.val_labels, device) if validating else
                      {"val_loss": None, "val_accuracy": None, "val_macro_f1": None})
        progress.epoch = epoch
        progress.train_seconds += time.perf_counter() - began
        progress.train_cpu_seconds += time.process_time() - began_cpu
        record["seconds"] = round(time.perf_counter() - began, 1)
        progress.history.append(record)
        improved = not validating or record["val_macro_f1"] > progress.best_f1
        if improved:
            if validating:
                progress.best_f1 = record["val_macro_f1"]
            progress.best_epoch, progress.bad_epochs = epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            if job.output:
                save_checkpoint(make_checkpoint(model=model, epoch=epoch, best_val_macro_f1=progress.best_known,
                                                **saving), job.output / BEST_FILE)
        else:
            progress.bad_epochs += 1
        stopped_early = progress.bad_epochs >= config.patience
        if job.output:
            save_last(make_checkpoint(model=model, epoch=epoch, best_val_macro_f1=progress.best_known, **saving),
                      progress, optimizer, scheduler, job.output)
        scores = (f"val loss {record['val_loss']:.4f}  val acc {record['val_accuracy']:.4f}  "
                  f"val macro-F1 {record['val_macro_f1']:.4f}  " if validating else "")
        log(f"epoch {epoch:>2}/{config.epochs}  loss {record['train_loss']:.4f}  "
            f"train acc {record['train_accuracy']:.4f}  {scores}"
            f"{record['seconds']:.0f}s{'  *best' if improved and validating else ''}")
        if cut_short:
            log(f"deadline: stopped in epoch {epoch}, the only one begun; its weights are kept")
            break
        if stopped_early and epoch < config.epochs:
            log(f"early stop: validation macro-F1 has not improved for {config.patience} epochs")
    if best_state is not None:
        model.load_state_dict(best_state)
    val_probabilities = softmax(predict_logits(model, job.val_ids, device)) if validating else None
    return MemberFit(model, progress.history, progress.best_epoch, progress.best_known, progress.train_seconds,
                     progress.train_cpu_seconds, stopped_early, progress.embedding_source, distillation,
                     val_probabilities, margins, cut_short)

