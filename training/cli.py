"""``lstm-train``: the click command. Builds a frozen TrainConfig once, here, and hands it down."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from core.cli_types import FiniteFloat
from core.exit_codes import CannotStart
from training.config import AUTO, EMBEDDING_INITS, POOLINGS, TrainConfig

DEFAULTS = TrainConfig(data="", output="")


def _version() -> str:
    try:
        return version("lstm-worker")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


class BowWeight(click.ParamType):
    """``auto`` or a number in [0, 1)."""

    name = "auto|FLOAT"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or str(value).strip().lower() == AUTO:
            return value if isinstance(value, float) else AUTO
        try:
            weight = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'auto' nor a number", param, ctx)
        if not 0.0 <= weight < 1.0:
            self.fail(f"{weight} is not in [0, 1)", param, ctx)
        return weight


class Duration(click.ParamType):
    """A wall time: ``90s``, ``20m``, ``1h``, ``1h30m`` or seconds; converted to seconds."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        from training.budget_plan import parse_duration

        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _opt(*names: str, env: str, help: str, **kwargs):
    return click.option(*names, envvar=f"LSTM_TRAIN_{env}", show_envvar=True, help=help, **kwargs)


OPTIONS = [
    _opt("--data", env="DATA", help="Training data: the 20news-bydate archive (.tar.gz or folder), '20newsgroups' "
         "(download with scikit-learn), or a CSV/TSV/JSONL file."),
    _opt("--output", type=click.Path(), env="OUTPUT",
         help="Folder for checkpoint.pt, last.pt, metrics.json and plots (created)."),
    _opt("--test-data", type=click.Path(dir_okay=False), env="TEST_DATA",
         help="Labelled test file; default: the archive's test split or a stratified 20% of --data."),
    _opt("--text-field", default=DEFAULTS.text_field, show_default=True, env="TEXT_FIELD",
         help="Column/field holding the text (a 1-based column number for files without a header row)."),
    _opt("--label-field", default=DEFAULTS.label_field, show_default=True, env="LABEL_FIELD",
         help="Column/field holding the label (a 1-based column number for files without a header row)."),
    _opt("--val-fraction", type=FiniteFloat(0.0, 0.9), default=DEFAULTS.val_fraction, show_default=True,
         env="VAL_FRACTION", help="Stratified share of the training data held out for validation/early stopping."),
    _opt("--max-train-samples", type=click.IntRange(min=2), default=None, env="MAX_TRAIN_SAMPLES",
         help="Train on a stratified subsample of this many documents (quick runs)."),
    _opt("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs, show_default=True, env="EPOCHS",
         help="Maximum epochs (the one-cycle LR schedule spans all of them)."),
    _opt("--batch-size", type=click.IntRange(min=1), default=DEFAULTS.batch_size, show_default=True,
         env="BATCH_SIZE", help="Documents per training batch."),
    _opt("--max-len", type=click.IntRange(min=1), default=DEFAULTS.max_len, show_default=True, env="MAX_LEN",
         help="Tokens read per document (the rest is cut; also used when serving)."),
    _opt("--vocab-size", type=click.IntRange(min=3), default=DEFAULTS.vocab_size, show_default=True,
         env="VOCAB_SIZE", help="Vocabulary size, pad and unk included."),
    _opt("--min-freq", type=click.IntRange(min=1), default=DEFAULTS.min_freq, show_default=True, env="MIN_FREQ",
         help="Minimum training-set count for a token to enter the vocabulary."),
    _opt("--embed-dim", type=click.IntRange(min=1), default=DEFAULTS.embed_dim, show_default=True,
         env="EMBED_DIM", help="Word vector size."),
    _opt("--hidden-size", type=click.IntRange(min=1), default=DEFAULTS.hidden_size, show_default=True,
         env="HIDDEN_SIZE", help="LSTM hidden units per direction."),
    _opt("--layers", type=click.IntRange(min=1), default=DEFAULTS.layers, show_default=True, env="LAYERS",
         help="Stacked LSTM layers."),
    _opt("--bidirectional/--unidirectional", default=DEFAULTS.bidirectional, show_default=True,
         env="BIDIRECTIONAL", help="Read each document in both directions."),
    _opt("--dropout", type=FiniteFloat(0.0, 0.95), default=DEFAULTS.dropout, show_default=True,
         env="DROPOUT", help="Dropout between LSTM layers and before the classifier."),
    _opt("--embed-dropout", type=FiniteFloat(0.0, 0.95), default=DEFAULTS.embed_dropout, show_default=True,
         env="EMBED_DROPOUT", help="Dropout on the word vectors."),
    _opt("--word-dropout", type=FiniteFloat(0.0, 0.9), default=DEFAULTS.word_dropout, show_default=True,
         env="WORD_DROPOUT", help="Share of training tokens replaced by <unk> each batch (against memorising names)."),
    _opt("--pooling", type=click.Choice(POOLINGS), default=DEFAULTS.pooling, show_default=True, env="POOLING",
         help="How LSTM states become one document vector."),
    _opt("--word-shortcut/--no-word-shortcut", default=DEFAULTS.word_shortcut, show_default=True,
         env="WORD_SHORTCUT", help="Also give the classifier the max/mean-pooled word vectors (beside the LSTM)."),
    _opt("--embeddings", type=click.Path(dir_okay=False), default=None, env="EMBEDDINGS",
         help="GloVe-format text file of pretrained word vectors (its dimension must equal --embed-dim)."),
    _opt("--embedding-init", type=click.Choice(EMBEDDING_INITS), default=DEFAULTS.embedding_init,
         show_default=True, env="EMBEDDING_INIT",
         help="Initial word vectors without --embeddings: 'lsa' (SVD of the training TF-IDF matrix) or 'random'."),
    _opt("--lr", type=FiniteFloat(min=0.0, min_open=True), default=DEFAULTS.lr, show_default=True,
         env="LR", help="Peak learning rate of the one-cycle schedule (AdamW)."),
    _opt("--embedding-lr-scale", type=FiniteFloat(min=0.0), default=DEFAULTS.embedding_lr_scale,
         show_default=True, env="EMBEDDING_LR_SCALE",
         help="Word vectors learn at --lr times this; 0 freezes them (keeps LSA/GloVe vectors general)."),
    _opt("--weight-decay", type=FiniteFloat(min=0.0), default=DEFAULTS.weight_decay, show_default=True,
         env="WEIGHT_DECAY", help="AdamW weight decay (not applied to embeddings and biases)."),
    _opt("--grad-clip", type=FiniteFloat(min=0.0, min_open=True), default=DEFAULTS.grad_clip,
         show_default=True, env="GRAD_CLIP", help="Clip the gradient norm to this value."),
    _opt("--label-smoothing", type=FiniteFloat(0.0, 1.0, max_open=True), default=DEFAULTS.label_smoothing,
         show_default=True, env="LABEL_SMOOTHING",
         help="Share of each target spread evenly over all classes (keeps the LSTM from over-trusting "
         "training-period cues)."),
    _opt("--distill-weight", type=FiniteFloat(min=0.0), default=DEFAULTS.distill_weight, show_default=True,
         env="DISTILL_WEIGHT", help="Weight of a KL term pulling the LSTM towards out-of-fold TF-IDF + LinearSVC "
         "scores (0 = off; the teacher takes ~15 s on 20NG)."),
    _opt("--distill-sharpness", type=FiniteFloat(min=0.0, min_open=True), default=DEFAULTS.distill_sharpness,
         show_default=True, env="DISTILL_SHARPNESS",
         help="Teacher probabilities are softmax(sharpness x SVM margin); larger is closer to one-hot."),
    _opt("--patience", type=click.IntRange(min=1), default=DEFAULTS.patience, show_default=True, env="PATIENCE",
         help="Stop after this many epochs without a better validation macro-F1."),
    _opt("--members", type=click.IntRange(min=1), default=DEFAULTS.members, show_default=True, env="MEMBERS",
         help="Train this many LSTMs (each with its own validation fold and seed) and average their "
         "probabilities in one model; inference costs this many times one LSTM."),
    _opt("--bow-weight", type=BowWeight(), default=DEFAULTS.bow_weight, show_default=True, env="BOW_WEIGHT",
         help="Mix the LSTMs' probabilities with a linear TF-IDF + LinearSVC model over the same tokens, "
         "fitted after them and exported in the same graph: (1 - w) x LSTM + w x linear (0 = LSTM only). "
         "'auto': w, the sharpness and the features (single words, or words and pairs) are chosen on the "
         "members' validation folds, out of fold (each fold scored by the member and a linear model that did not "
         "train on it); 0 when there are no folds."),
    _opt("--bow-sharpness", type=FiniteFloat(min=0.0, min_open=True), default=DEFAULTS.bow_sharpness,
         show_default=True, env="BOW_SHARPNESS",
         help="The linear branch's probabilities are softmax(sharpness x SVM margin) (with an explicit "
         "--bow-weight; 'auto' chooses it too)."),
    _opt("--bow-bigram-buckets", type=click.IntRange(min=0), default=DEFAULTS.bow_bigram_buckets, show_default=True,
         env="BOW_BIGRAM_BUCKETS",
         help="The linear branch also counts pairs of adjacent words, hashed into this many columns "
         "(0 = single words only); each column costs a row of class weights in the model. With --bow-weight "
         "auto the pairs are kept only if they beat single words out of fold."),
    _opt("--jobs", type=click.IntRange(min=0), default=DEFAULTS.jobs, show_default=True, env="JOBS",
         help="Members trained at once, one process each (0 = as many as the cores allow at --threads each; "
         "1 on a GPU)."),
    _opt("--seed", type=int, default=DEFAULTS.seed, show_default=True, env="SEED",
         help="Seed for splits, initialisation and batch order."),
    _opt("--device", type=click.Choice(["cpu", "cuda"]), default=DEFAULTS.device, show_default=True,
         env="DEVICE", help="Where to train."),
    _opt("--threads", type=click.IntRange(min=0), default=DEFAULTS.threads, show_default=True, env="THREADS",
         help="PyTorch CPU threads (0 = one per core). 1 is fastest for these small LSTM matmuls on a busy "
         "machine (measured 4x faster than 2 on a shared 2-core box)."),
    _opt("--baseline/--no-baseline", default=DEFAULTS.baseline, show_default=True, env="BASELINE",
         help="Also train and report TF-IDF + LinearSVC on the same split."),
    _opt("--time-budget", type=Duration(), default=None, env="TIME_BUDGET",
         help="Instead of the settings above, search max length, hidden size, epochs, members and the branch "
         "weight on validation data within this wall time (90s, 20m, 1h) and train the best found, all inside "
         "it; the report lists the trials and why the final choice."),
    _opt("--init-from", type=click.Path(exists=True), default=None, env="INIT_FROM",
         help="Start from this checkpoint (folder or file): shared tokens keep their word vectors, the LSTMs "
         "their weights, the output layer too if the labels are the same (a new label set gets a new one). "
         "The LSTM options must match its shape."),
    _opt("--resume", is_flag=True, default=False, env="RESUME",
         help="Continue the interrupted run in --output from its last.pt (same options required)."),
    _opt("--overwrite", is_flag=True, default=False, env="OVERWRITE",
         help="Train into an --output that already holds files, replacing those a run writes (without it, "
              "such a folder is refused unless --resume)."),
    _opt("--evaluate", "evaluate_dir", type=click.Path(), default=None, env="EVALUATE",
         help="Instead of training: score the checkpoint in this folder on --data and print the metrics "
              "(written to --output/evaluation.json when --output is given)."),
]


def _apply(options):
    def decorator(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorator


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@_apply(OPTIONS)
@click.version_option(_version(), prog_name="lstm-train")
def main(data, output, evaluate_dir, overwrite, **options) -> None:
    """Train an LSTM text classifier and report it beside a TF-IDF + LinearSVC baseline.

    \b
    Examples:
      lstm-train --data ../shared/data/20news-bydate.tar.gz --output artifacts/default
      lstm-train --data tickets.csv --text-field body --label-field queue --output artifacts/tickets
      lstm-train --data tickets.csv --label-field queue --output artifacts/tickets --time-budget 20m
      lstm-train --evaluate artifacts/default --data other.jsonl
    """
    from training.exceptions import DataError, TrainingError

    if not data:
        raise click.UsageError("--data is required (a CSV/TSV/JSONL file, the 20news-bydate archive, "
                               "or '20newsgroups'); or set LSTM_TRAIN_DATA")
    try:
        if evaluate_dir:
            from training.pipeline import evaluate_checkpoint

            evaluate_checkpoint(evaluate_dir, data, options["text_field"], options["label_field"],
                                options["device"], output, log=click.echo)
            return
        if not output:
            raise click.UsageError("--output is required: the folder for the checkpoint and report")
        try:
            config = TrainConfig(data=data, output=output, **options)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        from training.pipeline import run_training
        from training.run_guard import check_output, guarded_run

        check_output(output, config.resume, overwrite)
        with guarded_run(output):
            run_training(config, log=click.echo)
    except DataError as exc:  # found while reading the data, before any training: nothing was done
        raise CannotStart(str(exc)) from None
    except TrainingError as exc:
        raise click.ClickException(str(exc)) from None
