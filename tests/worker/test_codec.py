"""The message contract: decoding inputs into text or a typed rejection, encoding outputs and dead letters."""

from __future__ import annotations

import json

import pytest

from core.engine import Prediction
from worker import codec
from worker.codec import Decoded, Rejection, SourceRef

SRC = SourceRef("incoming", 3, 42)


def decode(value, key=None, **kwargs):
    return codec.decode_value(value, key, SRC, **kwargs)


def test_plain_text_uses_the_key_as_id():
    assert decode(b"the space shuttle launched", key=b"doc-7") == Decoded("the space shuttle launched", "doc-7")


def test_without_key_or_json_id_the_id_is_topic_partition_offset():
    assert decode(b"hello").id == "incoming:3:42"


def test_json_object_with_id_and_text():
    assert decode(json.dumps({"id": 12, "text": "hockey game"}).encode(), key=b"k") == Decoded("hockey game", 12)


def test_custom_text_field():
    assert decode(b'{"body": "graphics card"}', text_field="body").text == "graphics card"


def test_binary_key_falls_back_to_source_id():
    assert decode(b"text", key=b"\xff\x00").id == "incoming:3:42"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, codec.NULL_VALUE),
        (b"\xff\xfe bad", codec.INVALID_UTF8),
        (b"", codec.EMPTY_TEXT),
        (b" \n\t ", codec.EMPTY_TEXT),
        (b'{"id": 1}', codec.MISSING_TEXT),
        (b'{"text": 5}', codec.MISSING_TEXT),
        (b'{"text": "   "}', codec.EMPTY_TEXT),
        (b"[1, 2]", codec.NOT_JSON_OBJECT),
        (b"null", codec.NOT_JSON_OBJECT),
    ],
)
def test_auto_mode_rejections(value, reason):
    result = decode(value)
    assert isinstance(result, Rejection) and result.reason == reason and result.message


def test_oversize_is_rejected_before_decoding():
    result = decode(b"a" * 101, max_message_bytes=100)
    assert isinstance(result, Rejection) and result.reason == codec.OVERSIZE
    assert isinstance(decode(b"a" * 100, max_message_bytes=100), Decoded)


def test_auto_mode_treats_numbers_json_strings_and_prose_as_text():
    assert decode(b"42").text == "42"
    assert decode(b'"a quoted sentence"').text == "a quoted sentence"
    assert decode(b"an {aside} in braces").text == "an {aside} in braces"


@pytest.mark.parametrize("value", [b'{"text": ', b'  {"text": "cut', b"[1, 2", b"{not json at all", b"\xef\xbb\xbf{"])
def test_auto_mode_rejects_what_starts_like_json_but_does_not_parse(value):
    result = decode(value)
    assert isinstance(result, Rejection) and result.reason == codec.INVALID_JSON
    assert result.message.startswith("value is not valid JSON: ")


def test_json_mode_rejects_everything_but_objects():
    assert decode(b"plain words", input_format="json").reason == codec.INVALID_JSON
    assert decode(b'"a string"', input_format="json").reason == codec.NOT_JSON_OBJECT
    assert decode(b"42", input_format="json").reason == codec.NOT_JSON_OBJECT
    assert decode(b'{"text": "ok"}', input_format="json").text == "ok"


def test_text_mode_takes_the_raw_value_even_if_it_is_json():
    assert decode(b'{"text": "inner"}', input_format="text").text == '{"text": "inner"}'
    assert decode(b"null", input_format="text").text == "null"


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")

    text.encode("utf-8")  # no lone surrogate anywhere
    return json.loads(text, parse_constant=refuse)


def test_output_json_shape():
    prediction = Prediction("sci.space", 0.9, (("sci.space", 0.9), ("sci.med", 0.05)))
    body = _strict(codec.to_json(codec.output_body(record_id="a", prediction=prediction, model_id="m@1", source=SRC)))
    assert body == {"id": "a", "label": "sci.space", "score": 0.9,
                    "top_k": [{"label": "sci.space", "score": 0.9}, {"label": "sci.med", "score": 0.05}],
                    "model": "m@1", "source": {"topic": "incoming", "partition": 3, "offset": 42}}
    assert "source" not in codec.output_body(record_id="a", prediction=prediction, model_id="m@1", source=None)


@pytest.mark.parametrize(
    ("value", "expected_id"),
    [
        (b'{"id": "\\ud800", "text": "t"}', "key-1"),  # valid JSON, but the id is a lone surrogate
        (b'{"id": "ok \\ud83d\\ude00", "text": "t"}', "ok \U0001F600"),  # a proper surrogate pair is fine
        (b'{"id": NaN, "text": "t"}', "key-1"),
        (b'{"id": Infinity, "text": "t"}', "key-1"),
        (b'{"id": -Infinity, "text": "t"}', "key-1"),
        (b'{"id": 1e999, "text": "t"}', "key-1"),
        (b'{"id": 2.5, "text": "t"}', 2.5),
        (b'{"id": true, "text": "t"}', "key-1"),
        (b'{"id": {"nested": 1}, "text": "t"}', "key-1"),
    ],
)
def test_ids_that_strict_json_cannot_echo_fall_back_to_the_key(value, expected_id):
    decoded = codec.decode_value(value, b"key-1", SRC)
    assert isinstance(decoded, Decoded) and decoded.id == expected_id
    prediction = Prediction("x", 1.0, (("x", 1.0),))
    body = _strict(codec.to_json(codec.output_body(record_id=decoded.id, prediction=prediction, model_id="m",
                                                   source=SRC)))
    assert body["id"] == expected_id


def test_a_byte_order_mark_before_json_is_ignored():
    decoded = codec.decode_value(b'\xef\xbb\xbf{"id": "b", "text": "hello"}', None, SRC)
    assert decoded == Decoded("hello", "b")


def test_hostile_json_is_a_rejection_never_an_exception():
    deep = b'{"text": "t", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge_int = b'{"text": "t", "id": ' + b"9" * 5000 + b"}"  # over Python's 4300-digit limit: a ValueError
    for value in (deep, huge_int):
        for input_format in ("auto", "json"):
            result = codec.decode_value(value, b"k", SRC, input_format=input_format)
            assert isinstance(result, Rejection) and result.reason == codec.INVALID_JSON


def test_to_json_refuses_non_finite_numbers():
    with pytest.raises(ValueError):
        codec.to_json({"score": float("nan")})


def test_output_headers_carry_trace_context_and_replace_content_type():
    headers = codec.output_headers([("traceparent", b"00-abc"), ("content-type", b"text/plain")], "m@1")
    assert headers == [("traceparent", b"00-abc"), ("content-type", b"application/json"),
                       ("lstm-worker.model", b"m@1")]


def test_dead_letter_headers():
    headers = dict(codec.dead_letter_headers([("traceparent", b"00-abc")],
                                             Rejection(codec.EMPTY_TEXT, "text is empty"), SRC))
    assert headers == {"traceparent": b"00-abc", "error.type": b"empty_text", "error.message": b"text is empty",
                       "source.topic": b"incoming", "source.partition": b"3", "source.offset": b"42"}
