"""Are ``--explain`` explanations faithful, and what do they cost? ``python -m bench.explain --bundle B``.

Faithfulness is measured apart from the attribution code: the explanations come
from the real ``lstm-worker classify --explain K`` on held-out documents (the
20 Newsgroups bydate *test* split, which no model trains on); everything after
that is the bundle's vocabulary and the engine's plain probabilities. For each
document, from the tokens the model read (its first ``max_len``):

- remove every occurrence of its K explained tokens, and re-score;
- remove every occurrence of K random distinct tokens of the same document
  (``--draws`` draws; ``<unk>`` is not a token one can name, so it is never drawn), and re-score;
- the drop is the predicted label's probability before minus after.

A document passes when the explained tokens' drop exceeds the mean drop of its
random draws; the bar is 80 % of documents, and no label scored 0.9 or more without an
explanation. On the first ``--occlusion-docs``
documents the explained tokens are also compared with the K tokens whose
deletion alone lowers the label's probability most (every distinct token is
deleted in turn): the share they have in common, beside the share a random
choice of K would have. Documents with no more distinct
tokens than K are skipped (a random draw would be the explained set). Cost: the
same CLI on the same documents with and without ``--explain K``, in alternating
rounds (best of each; the CLI's own docs/s, model loading excluded). With
``--plain-baseline``, the same model exported before attributions existed is
measured beside the ``--bundle`` of the same vocabulary and labels, both without
``--explain``: the plain path of a bundle with attributions should cost the same.
Writes ``bench/results/explain-<timestamp>.json``.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from bench.provenance import command_line, write_result
from core.bundle import load_bundle
from core.engine import InferenceEngine
from core.vocab import UNK_ID
from training.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "lstm-worker"
BAR = 0.8
# A label scored this high must come with an explanation (an empty one there is a defect).
CONFIDENT = 0.9


def classify(bundle: Path, input_path: Path, output_path: Path, threads: int, explain: int) -> float:
    """Run the real CLI; return the docs/s it reports (scoring only, after the model is loaded)."""
    command = [str(CLI), "classify", "--model", str(bundle), "--input", str(input_path), "--output",
               str(output_path), "--threads", str(threads), "--provider", "cpu", "--explain", str(explain)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise click.ClickException(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    rate = re.search(r"\((\d+) docs/s\)", result.stderr)
    if rate is None:
        raise click.ClickException(f"no docs/s in the output of {' '.join(command)}: {result.stderr.strip()}")
    return float(rate.group(1))


def without(ids: list[int], removed: set[int]) -> list[int]:
    kept = [i for i in ids if i not in removed]
    return kept or [UNK_ID]  # as the vocabulary encodes a text without tokens


def deletion_test(engine: InferenceEngine, texts: list[str], outputs: list[dict], k: int, draws: int,
                  seed: int) -> dict:
    vocab, rng = engine.bundle.vocab, random.Random(seed)
    index = {token: i for i, token in enumerate(vocab.tokens)}
    windows = [engine.token_ids(text) for text in texts]
    before = engine.predict_proba(windows)
    variants, kept = [], []  # per kept document: the explained deletion, then its random draws
    skipped = {"too_few_distinct_tokens": 0, "no_positive_token": 0}
    for doc, (ids, output) in enumerate(zip(windows, outputs, strict=True)):
        distinct = sorted({i for i in ids if i != UNK_ID})
        explained = {index[item["token"]] for item in output["explanation"]}
        if len(distinct) <= k:
            skipped["too_few_distinct_tokens"] += 1
            continue
        if not explained:  # nothing to remove: counted as a failure below, not skipped
            skipped["no_positive_token"] += 1
        kept.append(doc)
        variants.append(without(ids, explained))
        size = max(len(explained), 1)
        variants += [without(ids, set(rng.sample(distinct, size))) for _ in range(draws)]
    after = engine.predict_proba(variants).reshape(len(kept), 1 + draws, -1)
    label = np.array([engine.labels.index(outputs[doc]["label"]) for doc in kept])
    p_before = before[kept, label]
    drops = p_before[:, None] - after[np.arange(len(kept)), :, label]  # [docs, 1 + draws]
    explained_drop, random_drops = drops[:, 0], drops[:, 1:]
    share = float(np.mean(explained_drop > random_drops.mean(axis=1)))
    # Calibrated scores saturate more often; a confident label must still say why.
    empty_confident = sum(1 for output in outputs if output["score"] >= CONFIDENT and not output["explanation"])
    return {
        "documents": len(texts),
        "documents_compared": len(kept),
        "skipped": skipped["too_few_distinct_tokens"],
        "documents_without_a_positive_token": skipped["no_positive_token"],
        "cli_label_is_engine_argmax": float(np.mean(before[kept].argmax(axis=1) == label)),
        "share_explained_beats_mean_random": round(share, 4),
        "share_explained_beats_each_draw": round(float(np.mean(explained_drop[:, None] > random_drops)), 4),
        "mean_drop_explained": round(float(explained_drop.mean()), 4),
        "mean_drop_random": round(float(random_drops.mean()), 4),
        "median_drop_explained": round(float(np.median(explained_drop)), 4),
        "median_drop_random": round(float(np.median(random_drops)), 4),
        "mean_probability_before": round(float(p_before.mean()), 4),
        "confident_labels": sum(1 for output in outputs if output["score"] >= CONFIDENT),
        "confident_labels_without_explanation": empty_confident,
        "passed": share >= BAR and empty_confident == 0,
    }


def occlusion_overlap(engine: InferenceEngine, texts: list[str], outputs: list[dict], k: int) -> dict:
    """How many of the K explained tokens are among the K whose single deletion lowers p(label) most."""
    index = {token: i for i, token in enumerate(engine.bundle.vocab.tokens)}
    overlaps, chance = [], []
    for text, output in zip(texts, outputs, strict=True):
        ids = engine.token_ids(text)
        distinct = sorted({i for i in ids if i != UNK_ID})
        if len(distinct) <= k:
            continue
        label = engine.labels.index(output["label"])
        before = engine.predict_proba([ids])[0, label]
        drops = before - engine.predict_proba([without(ids, {token}) for token in distinct])[:, label]
        strongest = {distinct[i] for i in np.argsort(-drops, kind="stable")[:k] if drops[i] > 0}
        explained = {index[item["token"]] for item in output["explanation"]}
        overlaps.append(len(explained & strongest) / k)
        chance.append(k / len(distinct))
    return {"documents": len(overlaps), "mean_overlap": round(float(np.mean(overlaps)), 4),
            "mean_overlap_of_a_random_choice": round(float(np.mean(chance)), 4)}


def measure(bundle: Path, texts: list[str], throughput_texts: list[str], k: int, draws: int, rounds: int,
            threads: int, occlusion_docs: int, work: Path) -> dict:
    loaded = load_bundle(bundle)
    inputs = work / "docs.jsonl"
    inputs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    explained_path = work / "explained.jsonl"
    classify(bundle, inputs, explained_path, threads, k)
    outputs = [json.loads(line) for line in explained_path.read_text().splitlines()]
    engine = InferenceEngine(loaded, provider="cpu", threads=threads)
    try:
        faithfulness = deletion_test(engine, texts, outputs, k, draws, seed=0)
        faithfulness["single_word_deletion_top_k"] = occlusion_overlap(engine, texts[:occlusion_docs],
                                                                       outputs[:occlusion_docs], k)
    finally:
        engine.close()
    speed_inputs = work / "speed.jsonl"
    speed_inputs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(throughput_texts)))
    plain, explaining = [], []
    for _ in range(rounds):  # alternating, so both see the same machine load
        plain.append(classify(bundle, speed_inputs, work / "plain.jsonl", threads, 0))
        explaining.append(classify(bundle, speed_inputs, work / "explaining.jsonl", threads, k))
    config = loaded.manifest["model"].get("config") or {}
    return {
        "bundle": str(bundle),
        "model": loaded.model_id,
        "members": config.get("members", 1),
        "bow_weight": config.get("bow_weight", 0.0),
        "pooling": config.get("pooling"),
        "max_len": loaded.preprocessing.max_len,
        "test_accuracy": (loaded.manifest.get("metrics") or {}).get("accuracy"),
        "faithfulness": faithfulness,
        "example": outputs[0],
        "throughput": {
            "docs": len(throughput_texts),
            "plain_docs_per_s": plain,
            "explain_docs_per_s": explaining,
            "ratio_of_best": round(max(explaining) / max(plain), 3),
        },
    }


def plain_path(baseline: Path, bundle: Path, texts_path: Path, rounds: int, threads: int, work: Path) -> dict:
    """classify without --explain: a bundle without attributions vs one with them, alternating rounds."""
    old, new = [], []
    for _ in range(rounds):
        old.append(classify(baseline, texts_path, work / "old.jsonl", threads, 0))
        new.append(classify(bundle, texts_path, work / "new.jsonl", threads, 0))
    return {"baseline": str(baseline), "bundle": str(bundle), "baseline_docs_per_s": old, "bundle_docs_per_s": new,
            "ratio_of_best": round(max(new) / max(old), 3)}


@click.command()
@click.option("--bundle", "bundles", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
              required=True, help="A bundle exported with attributions (repeat to compare several).")
@click.option("--data", envvar="LSTM_TRAIN_DATA", default="20newsgroups", show_envvar=True,
              help="20 Newsgroups archive; documents come from its test split.")
@click.option("--docs", default=1000, show_default=True, help="Held-out documents for the deletion test.")
@click.option("--explain", "k", default=5, show_default=True, help="K: tokens explained and removed.")
@click.option("--draws", default=5, show_default=True, help="Random draws of K tokens per document.")
@click.option("--occlusion-docs", default=200, show_default=True,
              help="Documents whose every token is deleted in turn, to compare with the explained top K.")
@click.option("--throughput-docs", default=3000, show_default=True, help="Documents per throughput run.")
@click.option("--rounds", default=3, show_default=True, help="Alternating throughput rounds; the best of each.")
@click.option("--threads", default=0, show_default=True, help="--threads of the CLI (0 = one per usable CPU).")
@click.option("--plain-baseline", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The same model as one --bundle, exported before attributions: plain classify speed of both.")
@click.option("--output", type=click.Path(path_type=Path), default=ROOT / "bench/results", show_default=True)
def main(bundles: tuple[Path, ...], data: str, docs: int, k: int, draws: int, occlusion_docs: int,
         throughput_docs: int, rounds: int, threads: int, plain_baseline: Path | None, output: Path) -> None:
    """Deletion test of --explain on held-out documents, and its cost in classify throughput."""
    dataset = load_dataset(data, seed=0)
    texts = random.Random(0).sample(list(dataset.test_texts), docs)
    throughput_texts = random.Random(1).sample(list(dataset.test_texts), throughput_docs)
    rows = []
    for bundle in bundles:
        with tempfile.TemporaryDirectory(prefix="bench-explain-") as work:
            rows.append(measure(bundle, texts, throughput_texts, k, draws, rounds, threads, occlusion_docs,
                                Path(work)))
        f, t = rows[-1]["faithfulness"], rows[-1]["throughput"]
        o = f["single_word_deletion_top_k"]
        click.echo(f"{rows[-1]['model']} ({bundle}): {f['confident_labels_without_explanation']} of "
                   f"{f['confident_labels']} labels scored {CONFIDENT} or more have an empty explanation")
        click.echo(f"{rows[-1]['model']} ({bundle}): explained tokens lower p(label) more than random ones on "
                   f"{f['share_explained_beats_mean_random']:.1%} of {f['documents_compared']} documents "
                   f"(bar {BAR:.0%}; {f['share_explained_beats_each_draw']:.1%} of draws); mean drop "
                   f"{f['mean_drop_explained']:.3f} vs {f['mean_drop_random']:.3f}; {o['mean_overlap']:.0%} of the "
                   f"explained tokens are among the {k} strongest single deletions (random choice "
                   f"{o['mean_overlap_of_a_random_choice']:.0%}); throughput with --explain "
                   f"{k} {max(t['explain_docs_per_s']):.0f} vs {max(t['plain_docs_per_s']):.0f} docs/s "
                   f"({t['ratio_of_best']:.2f}x)")
    plain = None
    if plain_baseline is not None:
        old = load_bundle(plain_baseline)
        twin = next((b for b in bundles if (load_bundle(b).vocab, load_bundle(b).labels) == (old.vocab, old.labels)),
                    None)
        if twin is None:
            raise click.UsageError("--plain-baseline must be the same model (vocabulary, labels) as one --bundle")
        with tempfile.TemporaryDirectory(prefix="bench-explain-") as work:
            texts_path = Path(work) / "speed.jsonl"
            texts_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in throughput_texts))
            plain = plain_path(plain_baseline, twin, texts_path, rounds, threads, Path(work))
        click.echo(f"plain classify: {max(plain['bundle_docs_per_s']):.0f} docs/s with attributions in the graph vs "
                   f"{max(plain['baseline_docs_per_s']):.0f} without ({plain['ratio_of_best']:.2f}x)")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    result = {"command": command_line("bench.explain"), "docs": docs, "k": k,
              "draws": draws, "threads": threads, "split": "20 Newsgroups bydate test", "bar": BAR,
              "load_average_1_5_15": list(os.getloadavg()), "measured_at": stamp, "bundles": rows, "plain_path": plain}
    write_result(output / f"explain-{stamp}.json", result)
    click.echo(f"wrote {output / f'explain-{stamp}.json'}")


if __name__ == "__main__":
    main()
