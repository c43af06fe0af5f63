"""``lstm-worker promote`` and ``lstm-worker models``: choose and list the versions of a model store.

Promotion is where a version meets the machine that will serve it: the
bundle is verified (checksums) and its self-test is run through ONNX Runtime
with the provider given here, under the store's lock, and only then is
CURRENT replaced (atomically). Run it on (a machine like) the serving one:
a self-test that passes on a laptop's CPU says nothing about a GPU node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from core.bundle import load_bundle, not_held_out_reasons, read_manifest
from core.engine import open_verified
from core.exceptions import BundleError, EngineError, StoreError
from core.exit_codes import EXIT_FAILED
from core.model_store import ModelStore
from core.runtime import PROVIDERS
from worker.options import CannotStart, option

STORE_HELP = "Model store directory (versions as sub-directories, CURRENT names the served one)."


def _store(path: Path) -> ModelStore:
    if not path.is_dir():
        raise CannotStart(f"--store: {path} is not a directory (lstm-export --store creates one)")
    if not ModelStore.is_store(path):  # never write CURRENT or HISTORY into a folder that merely holds bundles
        raise CannotStart(f"--store: {path} is not a model store (no CURRENT or HISTORY file); "
                          "`lstm-export --checkpoint DIR --store STORE --version V` creates one")
    return ModelStore(path)


def verifier(provider: str, threads: int):
    """The check ``promote`` runs on a version: load_bundle, then the self-test on this provider."""

    def verify(bundle_path: Path) -> dict[str, Any]:
        engine = open_verified(load_bundle(bundle_path), provider=provider, threads=threads)
        engine.close()
        result = engine.self_test_result
        if result is None:  # format 1: nothing to measure; promoting it is allowed, and on record
            return {"self_test": None, "provider": engine.provider}
        return {"self_test_max_abs_diff": result.max_abs_diff, "self_test_inputs": result.n,
                "provider": result.provider}

    return verify


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("version", required=False)
@option("--store", required=True, type=click.Path(path_type=Path), help=STORE_HELP)
@option("--previous", is_flag=True, default=False,
        help="Roll back: promote the version served before the current one (per the store's HISTORY) instead "
             "of VERSION. Repeated, it walks further back.")
@option("--provider", default="auto", type=click.Choice(PROVIDERS),
        help="ONNX Runtime provider to run the self-test on; use the one the workers serve with.")
@option("--threads", default=1, type=click.IntRange(0),
        help="Parallel ONNX Runtime calls for the self-test (it is a few dozen inputs; 1 is plenty).")
def promote(version: str | None, store: Path, previous: bool, provider: str, threads: int) -> None:
    """Point the store's CURRENT at VERSION, after checking it on this machine.

    The version must verify (every file's sha256) and pass its self-test on
    --provider; otherwise it is refused and CURRENT is untouched. CURRENT is
    replaced atomically and the change appended to the store's HISTORY (version,
    when, by whom, the self-test's max |Δp|). Workers serving the store
    (--model STORE) see it within their --model-poll-s (10 s by default; SIGHUP
    at once), self-test it and swap it in at a batch boundary, without a restart.

    Exit status: 0 promoted; 1 failed while writing CURRENT or HISTORY; 2 refused
    (no such version, bad bundle, failed self-test, nothing to roll back to) or
    a bad option.
    """
    if previous == (version is not None):
        raise click.UsageError("give VERSION or --previous, not both and not neither")
    model_store = _store(store)
    verify = verifier(provider, threads)
    try:
        before = model_store.current_version()
        entry = model_store.rollback(verify=verify) if previous else model_store.promote(version, verify=verify)
    except (StoreError, BundleError, EngineError) as exc:
        raise CannotStart(f"promote refused, CURRENT unchanged: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"promote failed while writing the store: {exc}") from None  # exit 1
    assert entry is not None
    measured = (f"self-test max |Δp| {entry['self_test_max_abs_diff']:.2e} on {entry['provider']}"
                if "self_test_max_abs_diff" in entry else "WARNING: format 1 bundle, no self-test")
    click.echo(f"{store}: CURRENT {before} -> {entry['version']} ({entry['action']}; {measured})")


def _row(store: ModelStore, version: str, current: str | None, promoted: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {"version": version, "current": version == current,
                           "promoted_at": promoted.get(version)}
    try:
        manifest = read_manifest(store.bundle_path(version))
    except (BundleError, StoreError) as exc:
        return {**row, "error": str(exc)}
    metrics, report = manifest.get("metrics") or {}, manifest.get("parity") or {}
    calibration = metrics.get("calibration") or {}
    applied = (manifest.get("model") or {}).get("calibration") or {}
    try:
        caveats = not_held_out_reasons(manifest)
    except (KeyError, TypeError, AttributeError):
        caveats = ["the manifest does not say how the model was trained"]
    return {**row, "model": f"{manifest.get('name')}@{manifest.get('version')}",
            "created_at": manifest.get("created_at"), "test_accuracy": metrics.get("accuracy"),
            "validation_accuracy": report.get("validation_accuracy"),
            "validation_not_held_out": caveats,
            "out_of_fold_accuracy": metrics.get("val_out_of_fold_accuracy"),
            # The bundle's own scores: calibrated ones if its graph applies a calibration, the raw ones if not.
            "calibration": applied.get("method", "none"),
            "test_ece": (calibration.get("test") or {}).get("after" if applied.get("method", "none") != "none"
                                                            else "before", {}).get("ece"),
            "quantization": (manifest.get("model") or {}).get("quantization"),
            "self_test": "self_test" in manifest}


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ece_cell(row: dict[str, Any]) -> str:
    """The test calibration error of the scores the bundle serves; 'uncalibrated' marks raw scores."""
    if "error" in row:
        return "-"
    ece = _cell(row.get("test_ece"))
    return ece if row.get("calibration") != "none" else f"{ece} uncalibrated"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option("--store", required=True, type=click.Path(path_type=Path), help=STORE_HELP)
@option("--format", "output_format", default="table", type=click.Choice(("table", "json")),
        help="table for people, json (one object per version) for scripts.")
def models(store: Path, output_format: str) -> None:
    """List the versions of a model store: which is CURRENT, when each was last promoted, its accuracy.

    Accuracy is the test accuracy lstm-train recorded and the validation accuracy
    lstm-export measured through ONNX Runtime (marked when that split trained part of
    the model, with the out-of-fold accuracy beside it); TEST ECE is the expected
    calibration error of the bundle's scores on the test split; all from the bundle's manifest
    (its digest is checked; the files' checksums are checked by promote and at load).

    Exit status: 0 listed; 1 a version's manifest is unreadable (listed with its error);
    2 no such store.
    """
    model_store = _store(store)
    try:
        current, promoted = model_store.current_version(), model_store.last_promoted_at()
        rows = [_row(model_store, v, current, promoted) for v in model_store.versions()]
    except StoreError as exc:
        raise CannotStart(str(exc)) from None
    if output_format == "json":
        click.echo("\n".join(json.dumps(row, sort_keys=True) for row in rows))
    else:
        header = ("", "VERSION", "MODEL", "CREATED", "PROMOTED", "TEST ACC", "VAL ACC", "OOF ACC", "TEST ECE",
                  "SELF-TEST")
        table = [header] + [(
            "*" if row["current"] else "", row["version"], row.get("model", "BROKEN: " + row.get("error", "")),
            _cell(row.get("created_at")), _cell(row["promoted_at"]), _cell(row.get("test_accuracy")),
            _cell(row.get("validation_accuracy")) + ("†" if row.get("validation_not_held_out") else ""),
            _cell(row.get("out_of_fold_accuracy")), _ece_cell(row), "yes" if row.get("self_test") else "no")
            for row in rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for r in table:
            click.echo("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip())
        if any(row.get("validation_not_held_out") for row in rows):
            click.echo("† not held out (the validation split trained part of the model); OOF ACC is the held-out, "
                       "out-of-fold accuracy lstm-train measured")
        if current is None:
            click.echo(f"(no CURRENT: promote one with lstm-worker promote --store {store} VERSION)")
    if any("error" in row for row in rows):
        raise SystemExit(EXIT_FAILED)
