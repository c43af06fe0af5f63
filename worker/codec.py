"""The message contract: input record → text (or a typed rejection); outputs and dead letters → bytes.

Pure functions over plain values, so the whole contract is testable without
a broker. See docs/worker.md for the user-facing description.

Every output is strict JSON that any client parses: an input ``id`` that cannot
be echoed as such (``NaN``, ``Infinity``, a string with a lone surrogate) is
replaced by the record's fallback id, and encoding refuses non-finite numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

Headers = list[tuple[str, bytes]]
_BOM = "\ufeff"
_STRUCTURED_STARTS = ("{", "[")  # in auto mode, a value starting so is meant as JSON

CONTENT_TYPE_HEADER = "content-type"
MODEL_HEADER = "lstm-worker.model"
_REPLACED_HEADERS = {CONTENT_TYPE_HEADER, MODEL_HEADER}

# Dead-letter reasons (header error.type, metric label). Stable: users alert on them.
OVERSIZE = "oversize"
NULL_VALUE = "null_value"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_JSON_OBJECT = "not_json_object"
MISSING_TEXT = "missing_text"
EMPTY_TEXT = "empty_text"
INFERENCE_ERROR = "inference_error"
OUTPUT_TOO_LARGE = "output_too_large"  # the label (with the input's headers) is more than the producer/broker takes
REASONS = (OVERSIZE, NULL_VALUE, INVALID_UTF8, INVALID_JSON, NOT_JSON_OBJECT, MISSING_TEXT, EMPTY_TEXT,
           INFERENCE_ERROR, OUTPUT_TOO_LARGE)


@dataclass(frozen=True)
class SourceRef:
    topic: str
    partition: int
    offset: int

    def as_id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class Decoded:
    """A classifiable message: its text and the id echoed in the output."""

    text: str
    id: Any


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str


def echoable_id(value: Any) -> bool:
    """True for an id that strict JSON carries unchanged: a finite number, or a string of valid Unicode."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # a lone surrogate (from a "\\ud800" escape) cannot be encoded
        except UnicodeEncodeError:
            return False
        return True
    return False


def _record_id(json_id: Any, key: bytes | None, source: SourceRef) -> Any:
    """The JSON ``id`` if strict JSON can echo it, else the key as UTF-8, else ``topic:partition:offset``."""
    if echoable_id(json_id):
        return json_id
    if key is not None:
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            pass  # a binary key is still carried over as the output key; it just cannot be the id
    return source.as_id()


def decode_value(
    value: bytes | None,
    key: bytes | None,
    source: SourceRef,
    *,
    input_format: str = "auto",
    text_field: str = "text",
    max_message_bytes: int = 1_000_000,
) -> Decoded | Rejection:
    """Turn one record value into text to classify, or say precisely why it cannot be.

    ``auto``: a value that parses as a JSON object is JSON; a JSON string is its
    decoded text; a JSON array or ``null`` is rejected (a structured payload that
    is not an object is a producer bug, not prose), and so is a value that starts
    like one (``{`` or ``[``) but does not parse (a truncated or broken payload, not
    prose); anything else, numbers included, is plain text.
    ``json``: only a JSON object is accepted. ``text``: the whole value is the text.
    """
    if value is None:
        return Rejection(NULL_VALUE, "record value is null (tombstone)")
    if len(value) > max_message_bytes:
        return Rejection(OVERSIZE, f"value is {len(value)} bytes, over --max-message-bytes {max_message_bytes}")
    try:
        raw = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(INVALID_UTF8, f"value is not valid UTF-8: {exc.reason} at byte {exc.start}")
    raw = raw.removeprefix(_BOM)  # some producers (Windows tools) prefix UTF-8 with a byte-order mark
    json_id: Any = None
    if input_format == "text":
        text = raw
    else:
        parsed, error = _parse_json(raw)
        if error is not None and (input_format == "json" or raw.lstrip().startswith(_STRUCTURED_STARTS)):
            return Rejection(INVALID_JSON, f"value is not valid JSON: {error}")
        if isinstance(parsed, dict):
            field = parsed.get(text_field)
            if not isinstance(field, str):
                kind = "missing" if field is None else f"a {type(field).__name__}, not a string"
                return Rejection(MISSING_TEXT, f"JSON field {text_field!r} is {kind}")
            text, json_id = field, parsed.get("id")
        elif error is None and (input_format == "json" or parsed is None or isinstance(parsed, list)):
            return Rejection(NOT_JSON_OBJECT, f"value is a JSON {_json_kind(parsed)}, expected an object")
        elif isinstance(parsed, str):
            text = parsed
        else:
            text = raw
    if not text.strip():
        return Rejection(EMPTY_TEXT, "text is empty or whitespace only")
    return Decoded(text, _record_id(json_id, key, source))


def _parse_json(raw: str) -> tuple[Any, str | None]:
    try:
        return json.loads(raw), None
    except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, an integer of over 4300 digits
        return None, str(exc)[:300]


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "value")


def rounded_score(prediction: Any) -> float:
    """The top score as outputs carry it; confidence routing compares this, so a reader can check it."""
    return round(float(prediction.score), 6)


def low_confidence(prediction: Any, min_confidence: float) -> bool:
    return rounded_score(prediction) < min_confidence


def output_body(*, record_id: Any, prediction: Any, model_id: str, source: SourceRef | None,
                min_confidence: float = 0.0, for_review: bool = False) -> dict[str, Any]:
    """The label message: what ``run`` publishes and ``classify`` writes (``classify`` has no ``source``).

    Below ``min_confidence`` it says so (``low_confidence``); sent for review, it also says why. A
    prediction made with ``--explain`` carries its ``explanation`` (worker/explanations.py).
    """
    body: dict[str, Any] = {
        "id": record_id,
        "label": prediction.label,
        "score": rounded_score(prediction),
        "top_k": [{"label": name, "score": round(float(p), 6)} for name, p in prediction.top_k],
        "model": model_id,
    }
    if getattr(prediction, "explanation", None) is not None:
        body["explanation"] = [{"token": token, "weight": weight} for token, weight in prediction.explanation]
    if source is not None:
        body["source"] = {"topic": source.topic, "partition": source.partition, "offset": source.offset}
    if low_confidence(prediction, min_confidence):
        body["low_confidence"] = True
        if for_review:
            body["review_reason"] = f"top score {body['score']} is below --min-confidence {min_confidence}"
    return body


def error_body(record_id: Any, rejection: Rejection) -> dict[str, Any]:
    """What ``classify`` writes for a line it cannot classify (``run`` dead-letters the record instead)."""
    return {"id": record_id, "error": {"type": rejection.reason, "message": rejection.message}}


def to_json(body: dict[str, Any]) -> str:
    """Strict JSON: ``NaN``/``Infinity`` are refused, not written (ids were checked by :func:`echoable_id`)."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def output_headers(input_headers: Headers | None, model_id: str) -> Headers:
    """Input headers (trace context) carried over; content-type and model replaced, not duplicated."""
    kept = [(k, v) for k, v in (input_headers or []) if k.lower() not in _REPLACED_HEADERS]
    return [*kept, (CONTENT_TYPE_HEADER, b"application/json"), (MODEL_HEADER, model_id.encode("utf-8"))]


def dead_letter_headers(input_headers: Headers | None, rejection: Rejection, source: SourceRef) -> Headers:
    """Original headers plus why and where from; error.message is capped so a header stays small."""
    return [
        *(input_headers or []),
        ("error.type", rejection.reason.encode("utf-8")),
        ("error.message", rejection.message[:1000].encode("utf-8", "replace")),
        ("source.topic", source.topic.encode("utf-8")),
        ("source.partition", str(source.partition).encode("ascii")),
        ("source.offset", str(source.offset).encode("ascii")),
    ]
