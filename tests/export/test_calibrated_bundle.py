"""The calibration lstm-train fitted is in the exported graph; a checkpoint without one still serves, with a warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from core.bundle import load_bundle
from core.engine import InferenceEngine
from export.cli import main as export_main
from training.calibration import METHOD_NONE, Calibration
from worker.classify_command import classify
from worker.options import UNCALIBRATED_WARNING

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def uncalibrated_bundle(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported from a copy of its checkpoint without the calibration (as trained before it)."""
    old = tmp_path_factory.mktemp("uncalibrated-checkpoint")
    checkpoint = torch.load(tiny_checkpoint_dir / "checkpoint.pt", weights_only=True)
    del checkpoint["calibration"]
    torch.save(checkpoint, old / "checkpoint.pt")
    for name in ("validation.jsonl", "metrics.json"):
        (old / name).write_bytes((tiny_checkpoint_dir / name).read_bytes())
    bundle = tmp_path_factory.mktemp("uncalibrated-bundle") / "bundle"
    result = CliRunner().invoke(export_main, ["--checkpoint", str(old), "--output", str(bundle)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "calibration: none, scores are uncalibrated" in result.output
    return bundle


def test_the_checkpoint_and_the_report_record_a_calibration_fitted_out_of_fold(tiny_checkpoint_dir: Path) -> None:
    stored = torch.load(tiny_checkpoint_dir / "checkpoint.pt", weights_only=True)["calibration"]
    report = json.loads((tiny_checkpoint_dir / "metrics.json").read_text())["calibration"]
    assert stored["method"] != METHOD_NONE and stored["temperature"] > 0
    assert report["method"] == stored["method"] and report["temperature"] == pytest.approx(stored["temperature"],
                                                                                          abs=1e-5)
    assert report["documents"] > 0 and "test split not used" in report["fitted_on"]
    for split, after in (("validation", "after_cross_fitted"), ("test", "after")):
        for key in ("ece", "nll", "brier", "accuracy"):
            assert 0 <= report[split]["before"][key] and 0 <= report[split][after][key]
    assert report["test"]["after"]["nll"] < report["test"]["before"]["nll"]
    assert (tiny_checkpoint_dir / "reliability_diagram.png").stat().st_size > 0


def test_onnx_runtime_returns_the_calibrated_probabilities(tiny_bundle_dir: Path, tiny_checkpoint_dir: Path,
                                                           uncalibrated_bundle: Path) -> None:
    calibrated, raw = load_bundle(tiny_bundle_dir), load_bundle(uncalibrated_bundle)
    calibration = Calibration.from_dict(torch.load(tiny_checkpoint_dir / "checkpoint.pt",
                                                   weights_only=True)["calibration"])
    assert calibrated.calibrated and not raw.calibrated
    assert calibrated.manifest["model"]["calibration"] == calibration.to_dict()
    rows = [json.loads(line) for line in (tiny_checkpoint_dir / "validation.jsonl").read_text().splitlines()][:300]
    engines = [InferenceEngine(b, provider="cpu", threads=1) for b in (calibrated, raw)]
    ids = [engines[0].token_ids(row["text"]) for row in rows]
    served, uncalibrated = (engine.predict_proba(ids) for engine in engines)
    np.testing.assert_allclose(served, calibration.apply(uncalibrated), atol=2e-5)
    assert not np.allclose(served, uncalibrated, atol=1e-3)
    if calibration.class_bias is None:  # a temperature alone keeps every label
        np.testing.assert_array_equal(served.argmax(axis=1), uncalibrated.argmax(axis=1))
    # The drift reference describes the scores served.
    assert calibrated.drift_reference.confidence_mean != raw.drift_reference.confidence_mean


def test_an_uncalibrated_bundle_serves_with_a_one_line_warning(tiny_bundle_dir: Path,
                                                               uncalibrated_bundle: Path) -> None:
    for bundle, warned in ((uncalibrated_bundle, True), (tiny_bundle_dir, False)):
        result = CliRunner().invoke(classify, ["--model", str(bundle), "the space shuttle"], catch_exceptions=False)
        assert result.exit_code == 0 and json.loads(result.stdout.splitlines()[0])["label"]
        lines = [line for line in result.stderr.splitlines() if UNCALIBRATED_WARNING in line]
        assert len(lines) == (1 if warned else 0), result.stderr
