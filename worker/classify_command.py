"""``lstm-worker classify``: the offline face of the serving engine (JSONL or text lines in, JSONL out).

Same bundle loader, same engine, same options, same input rules and the same
rendering (``worker.codec``) as the streaming worker, minus ``source``; so it is both a
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
from pathlib import Path
from typing import IO, Any

import click

from core.engine import InferenceEngine, Prediction
from core.exceptions import InferenceError
from core.exit_codes import EXIT_PARTIAL
from worker import codec
from worker.explanations import explain_all
from worker.options import CannotStart, engine_options, open_engine, option


@dataclass(frozen=True)
class ClassifySettings:
    top_k: int
    text_field: str
    input_format: str
    max_message_bytes: int
    min_confidence: float
    explain: int = 0


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
    """A rejected line still reports its JSON "id" when strict JSON can echo it (e.g. empty text), else its number."""
    try:
        parsed = json.loads(line.decode("utf-8").removeprefix("\ufeff"))
    except (ValueError, RecursionError):
        return number
    value = parsed.get("id") if isinstance(parsed, dict) else None
    return value if codec.echoable_id(value) else number


def classify_chunk(
    engine: InferenceEngine, chunk: list[tuple[int, bytes]], settings: ClassifySettings
) -> tuple[list[str], int]:
    """Output lines (strict JSON, no newline) for one chunk, in input order, and how many were rejected."""
    decoded: list[codec.Decoded | codec.Rejection] = []
    for number, line in chunk:
        result = codec.decode_value(line, None, codec.SourceRef("line", 0, number),
                                    input_format=settings.input_format, text_field=settings.text_field,
                                    max_message_bytes=settings.max_message_bytes)
        if isinstance(result, codec.Decoded) and result.id == f"line:0:{number}":
            result = codec.Decoded(result.text, number)  # the codec's fallback id is the Kafka position; here the line
        decoded.append(result)
    texts = [item for item in decoded if isinstance(item, codec.Decoded)]
    predictions = iter(predict(engine, [engine.token_ids(item.text) for item in texts], settings) if texts else [])
    model_id = engine.bundle.model_id
    lines = []
    for (number, line), item in zip(chunk, decoded, strict=True):
        if isinstance(item, codec.Decoded):
            body = codec.output_body(record_id=item.id, prediction=next(predictions), model_id=model_id, source=None,
                                     min_confidence=settings.min_confidence)
        else:
            body = codec.error_body(_json_id(line, number), item)
        lines.append(codec.to_json(body))
    return lines, len(decoded) - len(texts)


def predict(engine: InferenceEngine, id_lists: list[list[int]], settings: ClassifySettings) -> list[Prediction]:
    if not settings.explain:
        return engine.to_predictions(engine.predict_proba(id_lists), settings.top_k)
    probabilities, attributions = engine.predict_explained(id_lists)
    return engine.to_predictions(probabilities, settings.top_k,
                                 explain_all(id_lists, attributions, engine.bundle.vocab, settings.explain))


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
        raise CannotStart(f"cannot read --input {input_path}: {exc.strerror}") from None


def open_output(output_path: str) -> IO[str]:
    if output_path == "-":
        return sys.stdout
    try:
        return open(output_path, "w", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise CannotStart(f"cannot write --output {output_path}: {exc.strerror}") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@engine_options(batch_size=1024, batch_help="Lines read and scored together; each batch is sorted by length and "
                                            "scored in ONNX Runtime calls (--rows-per-call, --tokens-per-call).")
@option("--input", "input_path", default=None,
        help="File of input lines, '-' for stdin. [default: stdin when no TEXT is given]")
@option("--output", "output_path", default="-", help="JSONL file to write, '-' for stdout.")
def classify(texts: tuple[str, ...], model: Path, input_path: str | None, output_path: str, batch_size: int,
             rows_per_call: int, tokens_per_call: int, provider: str, threads: int, input_format: str,
             text_field: str, top_k: int, min_confidence: float, explain: int, max_message_bytes: int) -> None:
    """Classify TEXT arguments, or lines of --input (JSONL or plain text), into JSONL predictions.

    One output line per input line, in input order, the same JSON as
    `lstm-worker run` publishes without "source": {"id", "label", "score",
    "top_k", "model"}, and "explanation" with --explain; the id is the input
    JSON's "id", else the 1-based line number. A line that cannot be
    classified (invalid JSON with --input-format json, missing or empty text,
    invalid UTF-8, too large) gets {"id", "error": {"type", "message"}}
    instead, with the same types as the worker's dead letters, and the run
    goes on.

    Exit status: 0 every line classified; 1 failed while running; 2 could not
    start (a bad option, bundle or provider); 3 finished, but some lines got
    error records.
    """
    if not text_field:
        raise click.BadParameter("must not be empty", param_hint="--text-field")
    settings = ClassifySettings(top_k, text_field, "text" if texts else input_format, max_message_bytes,
                                min_confidence, explain)
    engine = open_engine(model, provider=provider, threads=threads, rows_per_call=rows_per_call,
                         tokens_per_call=tokens_per_call, explain=explain > 0)
    source = open_input(texts, input_path)
    sink = open_output(output_path)
    total = rejected = 0
    started = time.perf_counter()
    try:
        for chunk in chunks(numbered_lines(source), batch_size):
            lines, bad = classify_chunk(engine, chunk, settings)
            sink.write("".join(line + "\n" for line in lines))
            sink.flush()
            total, rejected = total + len(lines), rejected + bad
    except InferenceError as exc:
        raise click.ClickException(f"inference failed after {total} lines: {exc}") from None
    finally:
        engine.close()
        if source is not sys.stdin.buffer:
            source.close()
        if sink is not sys.stdout:
            sink.close()
    elapsed = time.perf_counter() - started
    click.echo(f"classified {total - rejected} of {total} lines with {engine.bundle.model_id} on {engine.provider} "
               f"in {elapsed:.2f}s ({(total - rejected) / max(elapsed, 1e-9):.0f} docs/s); {rejected} rejected",
               err=True)
    if rejected:
        sys.exit(EXIT_PARTIAL)
