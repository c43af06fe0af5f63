"""``lstm-worker classify`` on the tiny real bundle, through real ONNX Runtime.

Most tests call the click command in-process; the end-to-end tests run the
installed ``lstm-worker`` script (and prove it never imports torch).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from core.bundle import load_bundle
from core.engine import InferenceEngine
from core.exit_codes import EXIT_CANNOT_START, EXIT_PARTIAL
from core.vocab import pad_batch
from worker.classify_command import classify

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def validation_texts(tiny_checkpoint_dir: Path) -> list[str]:
    lines = (tiny_checkpoint_dir / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line]


@pytest.fixture(scope="module")
def engine(tiny_bundle_dir: Path) -> InferenceEngine:
    return InferenceEngine(load_bundle(tiny_bundle_dir), provider="cpu")


def invoke(bundle: Path, *args: str, stdin: bytes | str | None = None):
    result = CliRunner().invoke(classify, ["--model", str(bundle), *args], input=stdin, catch_exceptions=False)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result, records


def test_jsonl_order_ids_and_scores_match_the_engine(tiny_bundle_dir: Path, engine: InferenceEngine,
                                                     validation_texts: list[str], tmp_path: Path) -> None:
    # Mixed lengths on purpose: the engine sorts by length internally and must restore input order.
    texts = validation_texts[:40] + ["graphics", "nasa shuttle orbit launch"]
    rows = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(texts)]
    rows[5].pop("id")  # no id: the 1-based line number stands in
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result, records = invoke(tiny_bundle_dir, "--input", str(source), "--top-k", "3")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in records] == [f"doc-{i}" if i != 5 else 6 for i in range(len(texts))]
    expected = engine.predict_texts(texts, top_k=3)
    for record, prediction in zip(records, expected, strict=True):
        assert record["label"] == prediction.label
        assert record["score"] == pytest.approx(prediction.score, abs=1e-6)
        assert [t["label"] for t in record["top_k"]] == [label for label, _ in prediction.top_k]
        assert record["model"] == load_bundle(tiny_bundle_dir).model_id
        assert set(record) == {"id", "label", "score", "top_k", "model"}


def test_plain_text_file_stdin_and_arguments_agree(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    texts = ["the goalie made a save in overtime", "my scsi drive will not boot", "god and the bible"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    from_file = invoke(tiny_bundle_dir, "--input", str(source), "--input-format", "text")[1]
    from_stdin = invoke(tiny_bundle_dir, stdin="\n".join(texts))[1]
    from_args = invoke(tiny_bundle_dir, *texts)[1]
    assert [r["id"] for r in from_file] == [1, 2, 3]
    assert from_file == from_stdin == from_args


def test_bad_lines_become_error_records_in_place(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    lines = [b'{"id": "ok-1", "text": "hockey playoffs"}', b"{broken json", b'{"id": "e", "text": "   "}',
             b'{"body": "no text field"}', b'\xff\xfe not utf-8', b'["an", "array"]', b'{"text": "space shuttle"}']
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "out.jsonl"
    result, _ = invoke(tiny_bundle_dir, "--input", str(source), "--output", str(output), "--input-format", "json")
    assert result.exit_code == EXIT_PARTIAL
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["ok-1", 2, "e", 4, 5, 6, 7]
    errors = {r["id"]: r["error"]["type"] for r in records if "error" in r}
    assert errors == {2: "invalid_json", "e": "empty_text", 4: "missing_text", 5: "invalid_utf8",
                      6: "not_json_object"}
    assert all(r["error"]["message"] for r in records if "error" in r)
    assert "label" in records[0] and "label" in records[-1]
    assert "5 rejected" in result.stderr


def test_auto_format_reads_json_objects_and_text_lines(tiny_bundle_dir: Path) -> None:
    stdin = '{"id": 7, "body": "windows driver"}\njust text, {with braces}\n'
    result, records = invoke(tiny_bundle_dir, "--text-field", "body", stdin=stdin)
    assert result.exit_code == 0
    assert [r["id"] for r in records] == [7, 2] and all("label" in r for r in records)


def test_auto_format_counts_a_truncated_json_line_as_invalid_json(tiny_bundle_dir: Path) -> None:
    result, records = invoke(tiny_bundle_dir, stdin='{"text": "windows driver"}\n{"text": \n')
    assert result.exit_code == EXIT_PARTIAL
    assert "label" in records[0] and records[1]["error"]["type"] == "invalid_json"


def test_streams_across_batches_in_order(tiny_bundle_dir: Path) -> None:
    count = 3 * 50 + 17
    stdin = "".join(json.dumps({"id": i, "text": f"message {i} about cars"}) + "\n" for i in range(count))
    result, records = invoke(tiny_bundle_dir, "--batch-size", "50", "--rows-per-call", "7", stdin=stdin)
    assert result.exit_code == 0
    assert [r["id"] for r in records] == list(range(count))


def test_short_document_alone_equals_among_63_long(tiny_bundle_dir: Path, engine: InferenceEngine,
                                                   validation_texts: list[str]) -> None:
    short = "orbit"
    longest = sorted(validation_texts, key=len)[-63:]
    # Directly on ONNX Runtime: one padded batch of 64, the short document in the middle.
    ids = [engine.token_ids(t) for t in longest]
    batch = ids[:31] + [engine.token_ids(short)] + ids[31:]
    padded_ids, lengths = pad_batch(batch)
    assert padded_ids.shape[1] == engine.max_len and lengths[31] == 1
    inside = engine.run_padded(padded_ids, lengths)[31]
    alone = engine.run_padded(*pad_batch([engine.token_ids(short)]))[0]
    assert np.abs(inside - alone).max() <= 1e-5
    # Through the CLI: alone, then among the 63 long documents in one batch.
    _, [single] = invoke(tiny_bundle_dir, short)
    stdin = "".join(json.dumps({"text": t}) + "\n" for t in longest[:31] + [short] + longest[31:])
    _, records = invoke(tiny_bundle_dir, "--rows-per-call", "64", "--tokens-per-call", "100000", stdin=stdin)
    assert len(records) == 64
    together = records[31]
    assert together["label"] == single["label"]
    assert abs(together["score"] - single["score"]) <= 1e-5


def test_tampered_bundle_is_refused_with_a_checksum_message(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle)
    model = bytearray((bundle / "model.onnx").read_bytes())
    model[len(model) // 3] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(model))
    result = subprocess.run([str(BIN / "lstm-worker"), "classify", "--model", str(bundle), "some text"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_CANNOT_START and result.stdout == ""
    assert "model.onnx" in result.stderr and "sha256" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_bundle_and_absent_cuda_are_one_line_errors(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    result, _ = invoke(tmp_path / "nowhere", "text")
    assert result.exit_code == EXIT_CANNOT_START and "not a directory" in result.output
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        result, _ = invoke(tiny_bundle_dir, "--provider", "cuda", "text")
        assert result.exit_code == EXIT_CANNOT_START and "CUDAExecutionProvider" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_lstm_worker_classify_never_imports_torch(tiny_bundle_dir: Path) -> None:
    code = (
        "import sys\n"
        "from worker.cli import main\n"
        "try:\n"
        f"    main(['classify', '--model', {str(tiny_bundle_dir)!r}, 'space shuttle launch'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == 1


def test_every_output_line_is_strict_json_whatever_the_input_id(tiny_bundle_dir: Path) -> None:
    stdin = (b'{"id": "\\ud800", "text": "hockey"}\n{"id": NaN, "text": "space"}\n{"id": 1e999, "text": "cars"}\n'
             b'{"id": "\\udc00", "text": "  "}\n\xef\xbb\xbf{"id": "bom", "text": "god"}\n')
    result, _ = invoke(tiny_bundle_dir, stdin=stdin)
    assert result.exit_code == EXIT_PARTIAL  # the whitespace-only line
    lines = result.stdout.splitlines()
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}")) for line in lines]
    assert all(line.encode("utf-8") for line in lines)  # no lone surrogate written
    assert [r["id"] for r in records] == [1, 2, 3, 4, "bom"]  # ids strict JSON cannot echo: the line number
    assert records[3]["error"]["type"] == "empty_text"
