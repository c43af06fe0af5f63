"""``lstm-worker classify``: the offline face of the serving engine (JSONL or text lines in, JSONL out).

Same bundle loader, same engine, same input rules (``worker.codec``) and the
same output fields as the streaming worker, minus ``source``; so it is both a
batch tool and the reference for the worker's answers and speed. It streams:
input is read and scored in chunks, so a file of any size runs in bounded
memory, and results come out in input order. Never imports torch.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import click

from core.bundle import load_bundle
from core.exceptions import ContractError
from worker.codec import Decoded, SourceRef, decode_value
from worker.engine import PROVIDERS, InferenceEngine, Prediction
from worker.exceptions import WorkerError

INPUT_FORMATS = ("auto", "text", "json")
CHUNK_LINES = 1024
# A single line above this is rejected, not scored; the tokenizer reads at most max_len tokens anyway.
MAX_LINE_BYTES = 16 * 1024 * 1024
EXIT_REJECTED_LINES = 1
EXIT_CANNOT_RUN = 2


class CannotRun(click.ClickException):
    """A user error that stops the run before any input is read: one line, no traceback."""

    exit_code = EXIT_CANNOT_RUN


@dataclass(frozen=True)
class ClassifySettings:
    provider: str
    threads: int
    top_k: int
    batch_size: int
    max_batch_tokens: int
    text_field: str
    input_format: str


def prediction_record(record_id: Any, prediction: Prediction, model_id: str) -> dict[str, Any]:
    """The worker's output message without ``source`` (scores rounded like the worker's)."""
    return {
        "id": record_id,
        "label": prediction.label,
        "score": round(prediction.score, 6),
        "top_k": [{"label": label, "score": round(score, 6)} for label, score in prediction.top_k],
        "model": model_id,
    }


def error_record(record_id: Any, error_type: str, message: str) -> dict[str, Any]:
    return {"id": record_id, "error": {"type": error_type, "message": message}}


def numbered_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(1-based line number, line without its newline)``; bytes, so one bad byte spoils only its line."""
    for number, line in enumerate(stream, start=1):
        yield number, line.rstrip(b"\r\n") if line.endswith(b"\n") else line


def chunks(items: Iterable[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _json_id(line: bytes, number: int) -> Any:
    """A rejected line still reports its JSON "id" when it has one (e.g. empty text), else its number."""
    try:
        parsed = json.loads(line)
    except (ValueError, RecursionError):
        return number
    value = parsed.get("id") if isinstance(parsed, dict) else None
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else number


def classify_chunk(
    engine: InferenceEngine, chunk: list[tuple[int, bytes]], settings: ClassifySettings
) -> tuple[list[dict[str, Any]], int]:
    """Output records for one chunk, in input order, and how many lines were rejected."""
    decoded: list[Decoded | dict[str, Any]] = []
    for number, line in chunk:
        result = decode_value(line, None, SourceRef("line", 0, number), input_format=settings.input_format,
                              text_field=settings.text_field, max_message_bytes=MAX_LINE_BYTES)
        if isinstance(result, Decoded):
            # The codec's fallback id is the Kafka position; offline it is the line number.
            record_id = number if result.id == f"line:0:{number}" else result.id
            decoded.append(Decoded(result.text, record_id))
        else:
            decoded.append(error_record(_json_id(line, number), result.reason, result.message))
    texts = [item for item in decoded if isinstance(item, Decoded)]
    predictions = engine.to_predictions(
        engine.predict_proba([engine.token_ids(item.text) for item in texts]), settings.top_k
    ) if texts else []
    scored = iter(predictions)
    model_id = engine.bundle.model_id
    records = [prediction_record(item.id, next(scored), model_id) if isinstance(item, Decoded) else item
               for item in decoded]
    return records, len(decoded) - len(texts)


def open_input(texts: tuple[str, ...], input_path: str | None) -> IO[bytes]:
    if texts and input_path is not None:
        raise click.UsageError("give TEXT arguments or --input, not both")
    if texts:
        return io.BytesIO("\n".join(t.replace("\r", " ").replace("\n", " ") for t in texts).encode("utf-8"))
    if input_path in (None, "-"):
        return sys.stdin.buffer
    try:
        return open(input_path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise CannotRun(f"cannot read --input {input_path}: {exc.strerror}") from None


def open_output(output_path: str) -> IO[str]:
    if output_path == "-":
        return sys.stdout
    try:
        return open(output_path, "w", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise CannotRun(f"cannot write --output {output_path}: {exc.strerror}") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@click.option("--model", "model", required=True, envvar="LSTM_WORKER_MODEL", show_envvar=True,
              type=click.Path(), help="Model bundle directory written by lstm-export.")
@click.option("--input", "input_path", default=None, envvar="LSTM_WORKER_CLASSIFY_INPUT", show_envvar=True,
              help="File of input lines, '-' for stdin. [default: stdin when no TEXT is given]")
@click.option("--output", "output_path", default="-", show_default=True, envvar="LSTM_WORKER_CLASSIFY_OUTPUT",
              show_envvar=True, help="JSONL file to write, '-' for stdout.")
@click.option("--top-k", type=click.IntRange(1), default=3, show_default=True, envvar="LSTM_WORKER_TOP_K",
              show_envvar=True, help="Labels (with scores) listed in each prediction's top_k.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True,
              envvar="LSTM_WORKER_BATCH_SIZE", show_envvar=True,
              help="Most documents per ONNX Runtime call (input is read 1024 lines at a time and sorted by length).")
@click.option("--max-batch-tokens", type=click.IntRange(1), default=16384, show_default=True,
              envvar="LSTM_WORKER_MAX_BATCH_TOKENS", show_envvar=True,
              help="Most padded tokens per ONNX Runtime call.")
@click.option("--provider", type=click.Choice(PROVIDERS), default="auto", show_default=True,
              envvar="LSTM_WORKER_PROVIDER", show_envvar=True,
              help="ONNX Runtime provider: auto (CUDA if available), cpu, or cuda (fail if unavailable).")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, envvar="LSTM_WORKER_THREADS",
              show_envvar=True,
              help="Parallel ONNX Runtime calls, one thread each (0 = one per usable CPU, cgroup limit included).")
@click.option("--text-field", default="text", show_default=True, envvar="LSTM_WORKER_TEXT_FIELD",
              show_envvar=True, help="JSON field holding the text.")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS), default="auto", show_default=True,
              envvar="LSTM_WORKER_INPUT_FORMAT", show_envvar=True,
              help="auto: a line that is a JSON object is JSON, any other line is text; "
                   "json: every line must be a JSON object; text: every line is the text.")
def classify(texts: tuple[str, ...], model: str, input_path: str | None, output_path: str, top_k: int,
             batch_size: int, max_batch_tokens: int, provider: str, threads: int, text_field: str,
             input_format: str) -> None:
    """Classify TEXT arguments, or lines of --input (JSONL or plain text), into JSONL predictions.

    One output line per input line, in input order: {"id", "label", "score",
    "top_k", "model"}; the id is the input JSON's "id", else the 1-based line
    number. A line that cannot be classified (invalid JSON with
    --input-format json, missing or empty text, invalid UTF-8) gets
    {"id", "error": {"type", "message"}} instead and the run goes on.

    Exit status: 0 all lines classified; 1 some lines were rejected (error
    records written); 2 nothing ran (bad option, invalid bundle, provider missing).
    """
    if not text_field:
        raise click.BadParameter("must not be empty", param_hint="--text-field")
    settings = ClassifySettings(provider, threads, top_k, batch_size, max_batch_tokens, text_field,
                                "text" if texts else input_format)
    try:
        bundle = load_bundle(model)
        engine = InferenceEngine(bundle, provider=provider, threads=threads, max_batch_tokens=max_batch_tokens,
                                 max_sub_batch=batch_size)
    except (ContractError, WorkerError) as exc:
        raise CannotRun(str(exc)) from None
    source = open_input(texts, input_path)
    sink = open_output(output_path)
    total = rejected = 0
    started = time.perf_counter()
    try:
        for chunk in chunks(numbered_lines(source), CHUNK_LINES):
            records, bad = classify_chunk(engine, chunk, settings)
            sink.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            sink.flush()
            total, rejected = total + len(records), rejected + bad
    except WorkerError as exc:
        raise click.ClickException(f"inference failed after {total} lines: {exc}") from None
    finally:
        engine.close()
        if source is not sys.stdin.buffer:
            source.close()
        if sink is not sys.stdout:
            sink.close()
    elapsed = time.perf_counter() - started
    click.echo(f"classified {total - rejected} of {total} lines with {bundle.model_id} on {engine.provider} "
               f"in {elapsed:.2f}s ({(total - rejected) / max(elapsed, 1e-9):.0f} docs/s); {rejected} rejected",
               err=True)
    if rejected:
        sys.exit(EXIT_REJECTED_LINES)
