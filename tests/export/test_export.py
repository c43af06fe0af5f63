"""lstm-export on the tiny real checkpoint: the bundle verifies, gates refuse what they must.

The sabotage and int8 tests run the CLI in-process (click's CliRunner) so a
test hook can perturb the model between the PyTorch reference and the ONNX
export: the exported model then really differs from the reference, which is
exactly what the parity gate exists to catch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from core.bundle import MODEL_FILE, load_bundle
from core.engine import InferenceEngine
from export import parity
from export.cli import main as export_main
from tests.support.model import TINY_TRAIN_ARGS, run_cli
from tests.support.paths import read_only_folder

pytestmark = pytest.mark.slow


def run_export(*args: str):
    return CliRunner().invoke(export_main, list(args), catch_exceptions=False)


def validation_accuracy(bundle_dir: Path, checkpoint_dir: Path) -> float:
    engine = InferenceEngine(load_bundle(bundle_dir), provider="cpu")
    rows = [json.loads(line) for line in (checkpoint_dir / "validation.jsonl").read_text().splitlines() if line]
    probabilities = engine.predict_proba([engine.token_ids(r["text"]) for r in rows])
    predicted = [engine.labels[i] for i in probabilities.argmax(axis=1)]
    return float(np.mean([p == r["label"] for p, r in zip(predicted, rows, strict=True)]))


def test_bundle_verifies_and_records_the_gates(tiny_bundle_dir: Path, tiny_checkpoint_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    checkpoint = torch.load(tiny_checkpoint_dir / "checkpoint.pt", weights_only=True)
    manifest = bundle.manifest
    assert manifest["model"]["config"] == checkpoint["model_config"]
    assert list(bundle.labels) == checkpoint["labels"]
    assert bundle.preprocessing.max_len == checkpoint["preprocessing"]["max_len"]
    assert manifest["metrics"] == json.loads((tiny_checkpoint_dir / "metrics.json").read_text())
    report = manifest["parity"]
    assert report["passed"] and report["onnx"]["passed"] and report["padding_invariance"]["passed"]
    onnx_report = report["onnx"]
    assert onnx_report["documents_compared"] >= 512
    assert onnx_report["max_abs_diff"] <= 1e-4 and onnx_report["argmax_mismatches"] == 0
    assert onnx_report["one_token_documents"] >= 1 and onnx_report["documents_longer_than_max_len"] >= 1
    assert 1 in onnx_report["batch_sizes"] and max(onnx_report["batch_sizes"]) >= 64
    assert report["padding_invariance"]["max_abs_diff"] <= 1e-5
    # The graph: named inputs/outputs with dynamic batch and sequence axes, opset 17, float LSTMs.
    graph = onnx.load(str(bundle.model_path))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    # explain: the optional boolean that asks for the attributions (an initializer gives its default, false).
    assert dims == {"input_ids": ["batch", "sequence"], "lengths": ["batch"], "explain": []}
    assert [o.name for o in graph.graph.output] == ["probabilities", "attributions"]
    assert manifest["model"]["attributions"] == {"input": "explain", "output": "attributions"}
    attributions = onnx_report["attributions"]
    assert attributions["max_abs_diff"] <= 1e-4 and attributions["largest_abs_attribution"] > 0
    assert report["padding_invariance"]["attributions_max_abs_diff"] <= 1e-5
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {17}
    assert any(node.op_type == "LSTM" for node in graph.graph.node)
    # No pickle anywhere: every file other than the ONNX protobuf is JSON.
    for name in manifest["files"]:
        if name != MODEL_FILE:
            json.loads((tiny_bundle_dir / name).read_text(encoding="utf-8"))


def test_parity_gate_refuses_a_sabotaged_export(tiny_checkpoint_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def perturb(model: torch.nn.Module) -> None:
        with torch.no_grad():  # a 0.5 % change of the output layer: small, but a different model
            model.classifier.classifier.weight.mul_(1.005)

    monkeypatch.setattr(parity, "after_reference_hook", perturb)
    output = tmp_path / "bundle"
    result = run_export("--checkpoint", str(tiny_checkpoint_dir), "--output", str(output))
    assert result.exit_code != 0
    assert "parity gate failed" in result.output and "no bundle written" in result.output
    assert not output.exists()
    assert list(tmp_path.iterdir()) == [], "the scratch directory must be removed too"


def test_export_refuses_a_non_empty_output(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "keep.txt").write_text("precious")
    result = run_export("--checkpoint", str(tiny_checkpoint_dir), "--output", str(tmp_path / "bundle"))
    assert result.exit_code != 0 and "not an empty directory" in result.output
    assert (tmp_path / "bundle" / "keep.txt").read_text() == "precious"


def test_export_refuses_a_directory_without_checkpoint(tmp_path: Path) -> None:
    result = run_export("--checkpoint", str(tmp_path), "--output", str(tmp_path / "bundle"))
    assert result.exit_code == 1
    assert "checkpoint.pt: not found" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "bundle").exists()


def test_export_refuses_a_pickled_object_in_the_checkpoint(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "validation.jsonl").write_bytes((tiny_checkpoint_dir / "validation.jsonl").read_bytes())
    torch.save({"format": "lstm-worker-checkpoint", "payload": Path("/")}, tmp_path / "checkpoint.pt")
    result = run_export("--checkpoint", str(tmp_path), "--output", str(tmp_path / "bundle"))
    assert result.exit_code == 1 and "weights-only" in result.output


def test_a_model_without_validation_split_exports_with_parity_data(tiny_checkpoint_dir: Path,
                                                                   tmp_path: Path) -> None:
    """`lstm-train --val-fraction 0` writes an empty validation.jsonl: refused with the fix, then --parity-data."""
    trained = tmp_path / "trained"
    trained.mkdir()
    for name in ("checkpoint.pt", "metrics.json"):
        (trained / name).write_bytes((tiny_checkpoint_dir / name).read_bytes())
    (trained / "validation.jsonl").write_text("")
    refused = run_export("--checkpoint", str(trained), "--output", str(tmp_path / "refused"))
    assert refused.exit_code == 1 and "--parity-data" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "refused").exists()

    held_out = tmp_path / "held-out.jsonl"
    held_out.write_bytes((tiny_checkpoint_dir / "validation.jsonl").read_bytes())
    result = run_export("--checkpoint", str(trained), "--output", str(tmp_path / "bundle"),
                        "--parity-data", str(held_out))
    assert result.exit_code == 0, result.output
    report = load_bundle(tmp_path / "bundle").manifest["parity"]
    assert report["passed"] and report["onnx"]["documents_compared"] >= 512


def test_an_ensemble_exports_as_one_graph_that_averages_its_members(news_data: str, tmp_path: Path) -> None:
    args = [*TINY_TRAIN_ARGS[:TINY_TRAIN_ARGS.index("--members")], "--members", "2", "--epochs", "1"]
    trained = run_cli("lstm-train", "--data", news_data, "--output", str(tmp_path / "trained"), *args)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    result = run_export("--checkpoint", str(tmp_path / "trained"), "--output", str(tmp_path / "bundle"))
    assert result.exit_code == 0, result.output
    assert "not held out" in result.output  # its validation accuracy is not a held-out score
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest["model"]["config"]["members"] == 2
    report = bundle.manifest["parity"]
    assert report["passed"] and report["onnx"]["documents_compared"] >= 512
    assert report["onnx"]["max_abs_diff"] <= 1e-4 and report["onnx"]["argmax_mismatches"] == 0
    graph = onnx.load(str(bundle.model_path))
    assert sum(node.op_type == "LSTM" for node in graph.graph.node) == 4  # two BiLSTMs, one graph
    # Served through ONNX Runtime it classifies well above chance (1 in 20) after one epoch.
    assert validation_accuracy(tmp_path / "bundle", tmp_path / "trained") > 0.3
    metrics = json.loads((tmp_path / "trained" / "metrics.json").read_text())
    assert metrics["members"][0]["validation_documents"] == metrics["members"][1]["validation_documents"] == 600


def test_a_model_with_a_bag_of_words_branch_exports_and_passes_the_gates(news_data: str, tmp_path: Path) -> None:
    """--bow-weight: the LSTM and the fitted TF-IDF branch are one graph that answers as PyTorch did."""
    trained = run_cli("lstm-train", "--data", news_data, "--output", str(tmp_path / "trained"),
                      *TINY_TRAIN_ARGS, "--epochs", "1", "--bow-weight", "0.3")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "bag-of-words branch" in trained.stdout and "linear part" in trained.stdout
    metrics = json.loads((tmp_path / "trained" / "metrics.json").read_text())
    assert metrics["model"].startswith("LSTM + linear TF-IDF branch")
    assert set(metrics["parts"]) == {"lstm", "bag_of_words"}
    assert (tmp_path / "trained" / "member-1" / "last.pt").is_file()  # the LSTM trains in its own folder

    result = run_export("--checkpoint", str(tmp_path / "trained"), "--output", str(tmp_path / "bundle"))
    assert result.exit_code == 0, result.output
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest["model"]["config"]["bow_weight"] == 0.3
    report = bundle.manifest["parity"]
    assert report["passed"] and report["onnx"]["documents_compared"] >= 512
    assert report["onnx"]["max_abs_diff"] <= 1e-4 and report["onnx"]["argmax_mismatches"] == 0
    assert report["padding_invariance"]["passed"]
    assert "the bag-of-words branch was fitted on every training post" in result.output
    # One epoch of a tiny LSTM is weak; with the linear branch the served model is well above chance.
    assert validation_accuracy(tmp_path / "bundle", tmp_path / "trained") > 0.5


# The tiny fixture model (0.5 accuracy on 600 validation posts) has many near ties, so whether int8 loses
# under one point depends on how this CPU rounds its training: the CLI's pass path is tested at a bound
# that leaves room for that; the gate's arithmetic (refuse beyond the bound) on fixed scores below.
GENEROUS_DROP = "10"


def test_int8_export_within_its_accuracy_bound_is_published(tiny_checkpoint_dir: Path, tiny_bundle_dir: Path,
                                                            tmp_path: Path) -> None:
    output = tmp_path / "int8"
    result = run_export("--checkpoint", str(tiny_checkpoint_dir), "--output", str(output),
                        "--quantize", "int8", "--name", "tiny-int8", "--version", "2.0", "--allow-batch-dependence",
                        "--max-accuracy-drop", GENEROUS_DROP)
    assert result.exit_code == 0, result.output
    bundle = load_bundle(output)
    # Dynamic int8 is not batch-invariant; the accepted failure is on record, not hidden.
    invariance = bundle.manifest["parity"]["padding_invariance"]
    assert invariance["passed"] is False and invariance["accepted"] == "--allow-batch-dependence"
    assert invariance["max_abs_diff"] > 1e-5
    assert bundle.model_id == "tiny-int8@2.0"
    assert bundle.manifest["model"]["quantization"] == "int8"
    quantization = bundle.manifest["parity"]["quantization"]
    assert quantization["passed"] and quantization["op_types"].get("DynamicQuantizeLSTM", 0) >= 1
    assert quantization["speed"]["int8_speedup"] > 0
    assert {n.op_type for n in onnx.load(str(bundle.model_path)).graph.node} >= {"DynamicQuantizeLSTM"}
    # Independently of the report: score the validation split with both bundles.
    fp32, int8 = validation_accuracy(tiny_bundle_dir, tiny_checkpoint_dir), validation_accuracy(
        output, tiny_checkpoint_dir)
    assert quantization["max_accuracy_drop_points"] == float(GENEROUS_DROP)
    assert quantization["accuracy_drop_upper_bound_points"] <= float(GENEROUS_DROP)
    assert (fp32 - int8) * 100 == pytest.approx(quantization["accuracy_drop_points"], abs=1e-3)
    assert int8 == pytest.approx(quantization["int8_accuracy"], abs=1e-6)


class _FixedScores:
    """Stands in for an engine: the same probabilities for any call (the gate's arithmetic, no I/O)."""

    def __init__(self, probabilities: np.ndarray):
        self.probabilities = probabilities

    def predict_proba(self, id_lists) -> np.ndarray:
        return self.probabilities[: len(id_lists)]


def test_the_int8_gate_refuses_a_drop_beyond_its_bound_and_publishes_one_within() -> None:
    from export.exceptions import QuantizationError
    from export.quantize import check_int8

    gold = np.zeros(200, dtype=int)
    right = np.tile([0.9, 0.1], (200, 1))
    int8 = right.copy()
    int8[:4] = [0.2, 0.8]  # 4 of 200 lost: a 2-point drop, standard error sqrt(4 - 0.08) / 200 = 0.99 points
    ids = [[2, 3]] * 200
    with pytest.raises(QuantizationError, match=r"drop 2.00 points \(\+1 standard error: 2.99\) > 1.0") as refused:
        check_int8(_FixedScores(right), _FixedScores(int8), ids, gold, {}, speed_docs=8)
    assert refused.value.report["passed"] is False
    report = check_int8(_FixedScores(right), _FixedScores(int8), ids, gold, {}, max_drop_points=3.0, speed_docs=8)
    assert report["passed"] and report["accuracy_drop_points"] == pytest.approx(2.0)


def test_max_accuracy_drop_needs_quantize(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    result = run_export("--checkpoint", str(tiny_checkpoint_dir), "--output", str(tmp_path / "b"),
                        "--max-accuracy-drop", "2")
    assert result.exit_code == 2 and "only applies to --quantize" in result.output


def test_int8_only_settings_from_the_environment_do_not_block_fp32(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    """A deployment that sets them for its int8 exports still exports fp32: only typed options are refused."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "model.onnx").write_bytes(b"an earlier bundle")
    result = CliRunner().invoke(export_main, ["--checkpoint", str(tiny_checkpoint_dir), "--output", str(taken)],
                                env={"LSTM_EXPORT_MAX_ACCURACY_DROP": "2", "LSTM_EXPORT_ALLOW_BATCH_DEPENDENCE": "1"})
    assert result.exit_code == 1 and "already exists" in result.output  # past the option checks, to the real work


def test_version_flag_prints_the_tool_version() -> None:
    result = run_export("--version")
    assert result.exit_code == 0 and result.output.startswith("lstm-export, version ")


def test_int8_export_is_refused_without_accepting_batch_dependence(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "int8"
    result = run_export("--checkpoint", str(tiny_checkpoint_dir), "--output", str(output), "--quantize", "int8",
                        "--max-accuracy-drop", GENEROUS_DROP)
    assert result.exit_code == 3
    assert "padding-invariance gate failed" in result.output and "--allow-batch-dependence" in result.output
    assert list(tmp_path.iterdir()) == []


def test_batch_dependence_cannot_be_accepted_for_fp32(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    result = run_export("--checkpoint", str(tiny_checkpoint_dir), "--output", str(tmp_path / "b"),
                        "--allow-batch-dependence")
    assert result.exit_code == 2 and "only applies to --quantize int8" in result.output


def test_int8_gate_counts_the_noise_of_a_small_validation_split() -> None:
    from export.quantize import paired_standard_error_points

    gold = np.zeros(1000, dtype=int)
    same = np.zeros(1000, dtype=int)
    assert paired_standard_error_points(same, same, gold) == 0.0  # identical answers: no uncertainty
    # 60 documents only fp32 gets right, 50 only int8: drop 1 point, SE = sqrt(110 - 0.1) / 1000 * 100.
    pred32, pred8 = same.copy(), same.copy()
    pred8[:60] = 1
    pred32[60:110] = 1
    assert paired_standard_error_points(pred32, pred8, gold) == pytest.approx(np.sqrt(110 - 0.1) / 10)


@pytest.mark.parametrize(("model_config", "train_config", "expected"), [
    ({"members": 1}, {"val_fraction": 0.1}, ""),
    ({"members": 3}, {"val_fraction": 0.1}, "member 1's validation fold"),
    ({"members": 8, "bow_weight": 0.3}, {"val_fraction": 0.0}, "--val-fraction 0"),
    ({"members": 1, "bow_weight": 0.3}, {"val_fraction": 0.1}, "bag-of-words branch"),
])
def test_the_printed_validation_accuracy_says_why_it_is_not_held_out(model_config, train_config, expected) -> None:
    from export.pipeline import _not_held_out

    caveat = _not_held_out({"model": {"config": model_config}, "source": {"train_config": train_config}})
    assert (expected in caveat and caveat.startswith(" (not held out: ")) if expected else caveat == ""
    if train_config["val_fraction"] == 0:
        assert "member 1" not in caveat  # every member trained on everything; there is no member-1 fold


def test_an_unwritable_output_is_refused_before_any_work(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("not a folder")
    read_only = read_only_folder(tmp_path)
    cases = {str(a_file / "bundle"): f"{a_file} is a file, not a folder",
             str(a_file): f"{a_file} is a file, not a folder",
             str(read_only / "bundle"): f"cannot write in {read_only} ("}
    for output, reason in cases.items():
        for option in ("--output", "--store"):
            result = run_cli("lstm-export", "--checkpoint", str(tiny_checkpoint_dir), option, output,
                             "--version", "2")
            assert result.returncode == 2
            [line] = result.stderr.strip().splitlines()  # no traceback, no work logged before it
            assert line.startswith(f"Error: {reason}") and line.endswith(f"choose another {option}")
    assert a_file.read_text() == "not a folder"


def test_a_bare_version_among_other_arguments_is_refused(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    """`--version` without a value names no model version: refused, not read as 'print the tool's version'."""
    output = tmp_path / "bundle"
    for args in (["--output", str(output), "--version"], ["--version", "--output", str(output)]):
        result = run_cli("lstm-export", "--checkpoint", str(tiny_checkpoint_dir), *args)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.strip().splitlines() == [
            "Error: --version needs a value here: the model's version, e.g. --version 2 "
            "(alone, `lstm-export --version` prints the tool's version)"]
    assert not output.exists()


def test_a_store_is_never_made_inside_a_folder_that_is_not_one(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    working = tmp_path / "work"
    working.mkdir()
    (working / "notes.txt").write_text("the user's own files")
    result = run_cli("lstm-export", "--checkpoint", str(tiny_checkpoint_dir), "--store", str(working), "--version", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: --store {working} holds files but is not a model store (no CURRENT or HISTORY): give a new folder, "
        "or the store an earlier `lstm-export --store` made"]
    assert sorted(p.name for p in working.iterdir()) == ["notes.txt"]
