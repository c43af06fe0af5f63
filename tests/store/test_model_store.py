"""A model store end to end: real exports into it, real promotions, real ONNX Runtime self-tests.

Two versions are exported once per module through the real ``lstm-export``
CLI; each test works on its own copy of that store, so they can promote,
tamper and roll back independently.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from core.bundle import MANIFEST_FILE, MODEL_FILE, load_bundle, manifest_digest
from core.model_store import CURRENT_FILE, HISTORY_FILE, ModelStore
from core.selftest import SELF_TEST_FILE
from tests.support.model import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported_store(two_version_store: tuple[Path, str]) -> Path:
    store, last_export_output = two_version_store
    assert "CURRENT stays 1" in last_export_output and "lstm-worker promote --store" in last_export_output
    return store


@pytest.fixture
def store(exported_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(exported_store, copy)
    return copy


def current(store: Path) -> str:
    return (store / CURRENT_FILE).read_text()


def worker(*args: str):
    return run_cli("lstm-worker", *args, timeout=300)


def test_export_promote_rollback_and_list(store: Path, tiny_checkpoint_dir: Path) -> None:
    # The first export made its version CURRENT (the store had none); the second did not.
    assert current(store) == "1\n"
    assert ModelStore(store).versions() == ["1", "2"]
    assert [e["action"] for e in ModelStore(store).history()] == ["export"]
    before = {p: p.read_bytes() for p in (store / "1").iterdir()}
    again = run_cli("lstm-export", "--checkpoint", str(tiny_checkpoint_dir), "--store", str(store), "--version", "1")
    assert again.returncode == 1 and "'1' already exists" in again.stderr and "immutable" in again.stderr
    assert {p: p.read_bytes() for p in (store / "1").iterdir()} == before
    assert current(store) == "1\n"
    assert sorted(p.name for p in store.iterdir()) == [".lock", "1", "2", CURRENT_FILE, HISTORY_FILE]

    promoted = worker("promote", "--store", str(store), "2", "--provider", "cpu")
    assert promoted.returncode == 0, promoted.stderr
    assert "CURRENT 1 -> 2" in promoted.stdout and "max |Δp|" in promoted.stdout
    assert current(store) == "2\n"
    entry = ModelStore(store).history()[-1]
    assert entry["version"] == "2" and entry["previous"] == "1" and entry["action"] == "promote"
    assert 0 <= entry["self_test_max_abs_diff"] <= 1e-4 and entry["provider"] == "cpu" and "@" in entry["by"]
    assert entry["promoted_at"].endswith("+00:00")

    listed = worker("models", "--store", str(store), "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["version"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows["2"]["current"] and not rows["1"]["current"]
    metrics = json.loads((tiny_checkpoint_dir / "metrics.json").read_text())
    assert rows["1"]["test_accuracy"] == metrics["accuracy"] and 0.2 < rows["2"]["validation_accuracy"] <= 1
    assert rows["1"]["promoted_at"] and rows["2"]["promoted_at"] == entry["promoted_at"]
    # One LSTM without the branch: its validation split is held out; the ECE is that of the calibrated scores.
    assert rows["1"]["validation_not_held_out"] == [] and rows["1"]["calibration"] != "none"
    assert rows["1"]["test_ece"] == metrics["calibration"]["test"]["after"]["ece"]
    assert rows["1"]["out_of_fold_accuracy"] == metrics["val_out_of_fold_accuracy"]
    table = worker("models", "--store", str(store)).stdout.splitlines()
    assert table[0].split()[:2] == ["VERSION", "MODEL"] and "TEST ECE" in table[0]
    assert table[2].startswith("*  2") and f"{metrics['accuracy']:.4f}" in table[2]
    assert f"{metrics['calibration']['test']['after']['ece']:.4f}" in table[2] and "†" not in "".join(table)

    back = worker("promote", "--store", str(store), "--previous")
    assert back.returncode == 0 and "CURRENT 2 -> 1 (rollback" in back.stdout
    assert current(store) == "1\n"
    nothing = worker("promote", "--store", str(store), "--previous")
    assert nothing.returncode == 2 and "nothing to roll back to" in nothing.stderr and current(store) == "1\n"


def test_models_marks_a_validation_accuracy_that_is_not_held_out(store: Path) -> None:
    """A hybrid's validation split fitted its linear branch: the table says so and shows the out-of-fold score."""
    path = store / "2" / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["model"]["config"]["bow_weight"] = 0.3
    manifest["metrics"]["val_out_of_fold_accuracy"] = 0.4321
    manifest["manifest_sha256"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest))
    listed = worker("models", "--store", str(store))
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["2"])
    assert "†" in row and "0.4321" in row
    assert "† not held out" in listed.stdout


def test_current_is_replaced_by_rename_never_rewritten_in_place(store: Path) -> None:
    """A reader holding the old CURRENT open still reads a whole old name: the file was replaced, not edited."""
    with open(store / CURRENT_FILE, encoding="utf-8") as old:
        assert worker("promote", "--store", str(store), "2").returncode == 0
        assert old.read() == "1\n"
    assert current(store) == "2\n"
    assert not [p for p in store.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("target", [MODEL_FILE, SELF_TEST_FILE])
def test_a_tampered_version_is_refused_and_current_untouched(store: Path, target: str) -> None:
    path = store / "2" / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = worker("promote", "--store", str(store), "2")
    assert result.returncode == 2
    assert "promote refused, CURRENT unchanged" in result.stderr and target in result.stderr
    assert "sha256" in result.stderr and "Traceback" not in result.stderr
    assert current(store) == "1\n" and len(ModelStore(store).history()) == 1


def edit_expectations(bundle: Path) -> None:
    """Change one expected probability and recompute every checksum: integrity passes, the self-test must not."""
    path = bundle / SELF_TEST_FILE
    body = json.loads(path.read_text())
    row = body["expected_probabilities"][3]
    best = max(range(len(row)), key=row.__getitem__)
    row[best] -= 0.01  # 100x the tolerance; still a plausible probability
    path.write_text(json.dumps(body))
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["files"][SELF_TEST_FILE] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                         "bytes": path.stat().st_size}
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    load_bundle(bundle)  # the checksums cannot tell


def test_edited_expectations_pass_the_checksums_but_not_the_self_test(store: Path) -> None:
    edit_expectations(store / "2")
    result = worker("promote", "--store", str(store), "2")
    assert result.returncode == 2 and current(store) == "1\n"
    assert "self-test FAILED" in result.stderr and "tolerance 1e-04" in result.stderr
    assert "max |Δp| 1.00e-02" in result.stderr and str(store / "2") in result.stderr
    # The same check guards every load: classify refuses the bundle itself, in one line.
    served = worker("classify", "--model", str(store / "2"), "hello")
    assert served.returncode == 2 and "self-test FAILED" in served.stderr
    assert len(served.stderr.strip().splitlines()) == 1 and served.stdout == ""


def test_classify_with_a_store_serves_current(store: Path) -> None:
    first = worker("classify", "--model", str(store), "the shuttle reached orbit")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["model"] == "tiny@1"
    assert "(store" in first.stderr and "self-test passed: max |Δp|" in first.stderr
    assert worker("promote", "--store", str(store), "2").returncode == 0
    second = worker("classify", "--model", str(store), "the shuttle reached orbit")
    assert json.loads(second.stdout)["model"] == "tiny@2"


def test_a_store_without_current_is_a_clear_error(store: Path) -> None:
    (store / CURRENT_FILE).unlink()
    result = worker("classify", "--model", str(store), "hello")
    assert result.returncode == 2 and "has no CURRENT" in result.stderr and "lstm-worker promote" in result.stderr
    listed = worker("models", "--store", str(store))
    assert listed.returncode == 0 and "no CURRENT" in listed.stdout


def test_a_format_1_bundle_is_served_with_a_warning(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """Bundles exported before the self-test existed keep working, and say they are unchecked."""
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle_dir, old)
    (old / SELF_TEST_FILE).unlink()
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    del manifest["self_test"], manifest["files"][SELF_TEST_FILE]
    manifest["format_version"] = 1
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    result = worker("classify", "--model", str(old), "hello")
    assert result.returncode == 0, result.stderr
    assert "carries no self-test (bundle format 1)" in result.stderr


def test_a_folder_that_merely_holds_a_bundle_is_not_a_store(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """A user's working folder with one bundle in it: promote writes nothing there, --model points at the bundle."""
    working = tmp_path / "work"
    shutil.copytree(tiny_bundle_dir, working / "spam-v1")
    for command in (("promote", "--store", str(working), "spam-v1"), ("models", "--store", str(working))):
        result = worker(*command)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"Error: --store: {working} is not a model store (no CURRENT or HISTORY file); "
            "`lstm-export --checkpoint DIR --store STORE --version V` creates one"]
    assert sorted(p.name for p in working.iterdir()) == ["spam-v1"]
    served = worker("classify", "--model", str(working), "hello")
    assert served.returncode == 2
    assert served.stderr.strip().splitlines() == [
        f"Error: --model: {working} is neither a bundle nor a model store (it holds the bundle folder 'spam-v1'): "
        f"give the bundle folder itself, e.g. {working / 'spam-v1'}"]


def test_promote_help_says_when_workers_swap() -> None:
    from worker.run_command import run

    poll = next(p for p in run.params if p.name == "model_poll_s")
    text = worker("promote", "--help").stdout
    assert "next start" not in text and "--model-poll-s" in text and f"({poll.default:g} s by default" in text
