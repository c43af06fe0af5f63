"""Acceptance check of an exported bundle on a real trained model, through the installed CLIs.

``python -m export.bars --checkpoint artifacts/small --bundle artifacts/small/bundle
[--int8-bundle artifacts/small/bundle-int8] --data ../shared/data/20news-bydate.tar.gz``

It checks what issue #3 promises, end to end, the way a user would see it:

1. the whole test split through ``lstm-worker classify`` reproduces the PyTorch
   test accuracy that ``lstm-train`` recorded in metrics.json (within 0.2 points);
2. a short document gets the same label and score alone and among 63 long ones;
3. flipping one byte of model.onnx makes ``classify`` refuse the bundle (checksum);
4. the int8 bundle's test accuracy is within 1 point of fp32, and how fast it is.

The numbers in docs/export.md come from this script. It is torch-free: the
PyTorch side is the accuracy ``lstm-train`` measured, not a re-computation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from training.data import read_source

BIN = Path(sys.executable).parent
ACCURACY_POINTS = 0.2
INT8_POINTS = 1.0
INVARIANCE = 1e-5


def classify(bundle: Path, input_path: Path, output_path: Path, *extra: str) -> tuple[list[dict], float, str]:
    """Run ``lstm-worker classify``; return records, wall seconds and its stderr summary."""
    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "lstm-worker"), "classify", "--model", str(bundle), "--input", str(input_path),
         "--output", str(output_path), "--provider", "cpu", *extra],
        capture_output=True, text=True, timeout=3600,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise click.ClickException(f"classify failed ({result.returncode}): {result.stderr.strip()}")
    records = [json.loads(line) for line in output_path.read_text(encoding="utf-8").splitlines()]
    return records, elapsed, result.stderr.strip()


def test_accuracy(records: list[dict], gold: list[str]) -> float:
    by_id = {r["id"]: r["label"] for r in records}
    return sum(by_id[f"test-{i}"] == label for i, label in enumerate(gold)) / len(gold)


def invariance(bundle: Path, texts: list[str], work: Path) -> dict:
    """A short document alone vs. in the middle of 63 of the longest test documents, through the CLI."""
    short = "Does anyone know a good driver for my graphics card?"
    longest = sorted(texts, key=len)[-63:]
    alone_in, batch_in = work / "alone.jsonl", work / "batch.jsonl"
    alone_in.write_text(json.dumps({"id": "short", "text": short}) + "\n", encoding="utf-8")
    rows = [{"id": f"long-{i}", "text": t} for i, t in enumerate(longest[:31])] + [{"id": "short", "text": short}] + [
        {"id": f"long-{i}", "text": t} for i, t in enumerate(longest[31:], start=31)]
    batch_in.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    [alone], _, _ = classify(bundle, alone_in, work / "alone.out.jsonl", "--top-k", "20")
    batch, _, _ = classify(bundle, batch_in, work / "batch.out.jsonl", "--top-k", "20",
                           "--batch-size", "64", "--max-batch-tokens", "1000000")
    inside = next(r for r in batch if r["id"] == "short")
    scores_alone = {t["label"]: t["score"] for t in alone["top_k"]}
    worst = max(abs(t["score"] - scores_alone[t["label"]]) for t in inside["top_k"])
    passed = alone["label"] == inside["label"] and worst <= INVARIANCE
    return {"short_text": short, "label_alone": alone["label"], "label_in_batch": inside["label"],
            "max_abs_score_diff_all_classes": worst, "passed": passed}


def tamper(bundle: Path, work: Path) -> dict:
    copy = work / "tampered"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.onnx").write_bytes(bytes(data))
    result = subprocess.run([str(BIN / "lstm-worker"), "classify", "--model", str(copy), "hello"],
                            capture_output=True, text=True, timeout=120)
    message = result.stderr.strip()
    return {"exit_code": result.returncode, "stderr": message,
            "passed": result.returncode != 0 and "model.onnx" in message and "sha256" in message
            and not result.stdout}


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The lstm-train output directory (metrics.json holds the PyTorch test accuracy).")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The fp32 bundle lstm-export wrote from that checkpoint.")
@click.option("--int8-bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The --quantize int8 bundle of the same checkpoint (optional).")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True,
              help="The 20news-bydate archive the checkpoint was trained on (its test split is scored).")
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Also write the report as JSON here.")
def main(checkpoint: Path, bundle: Path, int8_bundle: Path | None, data: Path, report: Path | None) -> None:
    """Check an exported bundle against the bars of issue #3 and print the numbers."""
    metrics = json.loads((checkpoint / "metrics.json").read_text(encoding="utf-8"))
    torch_accuracy = float(metrics["accuracy"])
    test = read_source(data)["test"]
    results: dict = {"documents": len(test.texts), "pytorch_test_accuracy": torch_accuracy}
    with tempfile.TemporaryDirectory(prefix="bars-") as tmp:
        work = Path(tmp)
        test_in = work / "test.jsonl"
        test_in.write_text("".join(json.dumps({"id": f"test-{i}", "text": t}) + "\n"
                                   for i, t in enumerate(test.texts)), encoding="utf-8")
        records, seconds, summary = classify(bundle, test_in, work / "fp32.jsonl")
        fp32 = test_accuracy(records, test.labels)
        results["fp32"] = {"test_accuracy": fp32, "diff_points_vs_pytorch": round((fp32 - torch_accuracy) * 100, 4),
                           "classify_seconds": round(seconds, 2), "classify_summary": summary,
                           "passed": abs(fp32 - torch_accuracy) * 100 <= ACCURACY_POINTS}
        results["invariance"] = invariance(bundle, test.texts, work)
        results["tamper"] = tamper(bundle, work)
        if int8_bundle is not None:
            records8, seconds8, summary8 = classify(int8_bundle, test_in, work / "int8.jsonl")
            int8 = test_accuracy(records8, test.labels)
            agree = sum(a["label"] == b["label"] for a, b in zip(records, records8, strict=True)) / len(records)
            results["int8"] = {
                "test_accuracy": int8, "drop_points_vs_fp32": round((fp32 - int8) * 100, 4),
                "argmax_agreement_with_fp32": round(agree, 4), "classify_seconds": round(seconds8, 2),
                "classify_summary": summary8, "speedup_vs_fp32": round(seconds / seconds8, 3),
                "export_report": json.loads((int8_bundle / "manifest.json").read_text())["parity"].get("quantization"),
                "passed": (fp32 - int8) * 100 <= INT8_POINTS,
            }
    text = json.dumps(results, indent=2)
    if report is not None:
        report.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    failed = [k for k, v in results.items() if isinstance(v, dict) and v.get("passed") is False]
    if failed:
        raise click.ClickException(f"bars not met: {', '.join(failed)}")


if __name__ == "__main__":
    main()
