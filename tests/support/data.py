"""Input records for the worker: real documents as JSON, malformed payloads, hostile-but-valid JSON.

And the checks every output must pass: strict JSON (no NaN/Infinity, no lone surrogates).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

# The dead-letter contract (header error.type).
REASONS = frozenset({"oversize", "null_value", "invalid_utf8", "invalid_json", "not_json_object", "missing_text",
                     "empty_text", "inference_error", "output_too_large"})
LABEL = "label"  # in a result map: the input got a label, not a dead letter


def json_records(texts: list[str], prefix: str = "doc") -> list[tuple[str, bytes]]:
    """``(key, value)``: each text as ``{"id": key, "text": text}``."""
    return [(f"{prefix}-{i}", json.dumps({"id": f"{prefix}-{i}", "text": t}).encode()) for i, t in enumerate(texts)]


def malformed_payloads(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` payloads no model can score, cycling through every shape the contract rejects."""
    rng = random.Random(seed)
    shapes = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) + b"\xff",  # random bytes, never UTF-8
        lambda: b"\xc3\x28 invalid utf-8",
        lambda: b"",
        lambda: b" \n\t ",
        lambda: b"x" * 1_100_000,  # over the default 1,000,000-byte limit
        lambda: b'{"text": 42}',
        lambda: b'{"text": {"nested": "json"}}',
        lambda: b'{"id": "no-text"}',
        lambda: b"[1, 2, 3]",
        lambda: b"null",
        lambda: b'{"text": "   "}',
    ]
    return [(f"bad-{i}", shapes[i % len(shapes)]()) for i in range(count)]


@dataclass(frozen=True)
class Hostile:
    """One hostile input: its key, raw value, and what the contract says becomes of it.

    ``expect`` is a dead-letter reason, :data:`LABEL`, or None where the contract allows either (the worker
    decides, but both delivery modes must decide alike). ``fallback_id``: the id in the label is not the
    JSON id (which cannot be echoed as strict JSON) but the key, else ``topic:partition:offset``.
    """

    key: bytes | None
    value: bytes | None
    expect: str | None
    fallback_id: bool = False


def hostile_payloads(text: str) -> list[Hostile]:
    """Valid-but-hostile JSON and broken payloads, each with a unique key (one without a key at all)."""
    body = json.dumps(text)[1:-1].encode()  # the text as a JSON string body, escapes included
    nested = b"[" * 100_000 + b"]" * 100_000
    return [
        # JSON escapes decoding to a lone surrogate: valid JSON, but no UTF-8 string can hold it.
        Hostile(b"h-surrogate-id", b'{"id": "\\ud800", "text": "' + body + b'"}', LABEL, fallback_id=True),
        Hostile(b"h-low-surrogate-id", b'{"id": "\\udc00\\ud800", "text": "' + body + b'"}', LABEL,
                fallback_id=True),
        Hostile(None, b'{"id": "\\ud800 no key", "text": "' + body + b'"}', LABEL, fallback_id=True),
        Hostile(b"h-emoji-id", b'{"id": "\\ud83d\\ude00", "text": "' + body + b'"}', LABEL),  # a valid pair
        # Non-standard JSON numbers Python's json accepts: echoing them would write NaN/Infinity.
        Hostile(b"h-nan-id", b'{"id": NaN, "text": "' + body + b'"}', LABEL, fallback_id=True),
        Hostile(b"h-infinity-id", b'{"id": Infinity, "text": "' + body + b'"}', LABEL, fallback_id=True),
        Hostile(b"h-minus-infinity-id", b'{"id": -Infinity, "text": "' + body + b'"}', LABEL, fallback_id=True),
        Hostile(b"h-huge-number-id", b'{"id": 1e999, "text": "' + body + b'"}', LABEL, fallback_id=True),
        # 100,000 nested arrays in another field: a recursive parser overflows.
        Hostile(b"h-deep-nesting", b'{"id": "deep", "nest": ' + nested + b', "text": "' + body + b'"}', None),
        Hostile(b"h-deep-array", nested, None),
        Hostile(b"h-bom", b'\xef\xbb\xbf{"id": "bom", "text": "' + body + b'"}', None),
        Hostile(b"h-100kb-id", b'{"id": "' + b"i" * 100_000 + b'", "text": "' + body + b'"}', LABEL),
        Hostile(b"h-surrogate-in-text", b'{"id": "sur-text", "text": "' + body + b' \\ud800 tail"}', LABEL),
        Hostile(b"h-invalid-utf8", b'{"id": "bad", "text": "caf\xe9 \xff"}', "invalid_utf8"),
        Hostile(b"h-tombstone", None, "null_value"),
        Hostile(b"h-truncated-json", b'{"text": ', "invalid_json"),  # cut short: not prose to classify
        Hostile(b"h-json-array", b'[{"id": "a", "text": "in an array"}]', "not_json_object"),
        Hostile(b"h-empty-text", b'{"id": "empty", "text": ""}', "empty_text"),
        Hostile(b"h-number-text", b'{"id": "number", "text": 42}', "missing_text"),
        Hostile(b"h-object-text", b'{"id": "object", "text": {"text": "nested"}}', "missing_text"),
        Hostile(b"h-null-text", b'{"id": "null-text", "text": null}', "missing_text"),
    ]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def strict_json(value: bytes) -> Any:
    """Parse ``value`` as strict JSON (RFC 8259): UTF-8, no NaN/Infinity, every string encodable as UTF-8."""
    parsed = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    stack = [parsed]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # raises on a lone surrogate
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for k, v in item.items():
                k.encode("utf-8")
                stack.append(v)
    return parsed
