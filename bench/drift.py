"""What the drift gauges read on normal and on drifted streams: the numbers behind the drift alert.

Scores real documents with the bundle (the worker's engine) and feeds the labels, in stream order, through
the worker's own drift code (``worker.drift.DriftMonitor``), sampling every gauge every 50 records once the
window is full. Streams:

- ``20ng-test-shuffled``: the 20 Newsgroups test split in random order: what a healthy stream looks like
  (the test split was posted after the training split: a little real drift is part of "normal");
- ``20ng-test-grouped``: the same documents in archive order, one newsgroup after another;
- ``20ng-3-groups``: only comp.graphics, rec.sport.hockey and talk.politics.mideast, shuffled;
- ``sms-spam``: SMS messages, a stream the model was never meant for.

With ``--stream``, the shuffled test split also goes through a real ``lstm-worker run`` on the development
broker (one partition, so its window ends on the same labels), and the gauges are read from its /metrics.

    python -m bench.drift --bundle artifacts/demo/bundle --data ../shared/data/20news-bydate.tar.gz \\
        --sms ../shared/data/sms-spam.tsv --stream

Writes ``bench/results/drift-<stamp>.json``.
"""

from __future__ import annotations

import csv
import json
import random
import signal
import time
import urllib.request
from pathlib import Path

import click
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.provenance import command_line, write_result
from bench.streaming import create_topics, output_consumer, produce, start_worker, wait_http
from core.bundle import load_bundle
from core.engine import InferenceEngine
from training.readers import read_news_archive
from worker.devbroker import DevBroker, free_port
from worker.drift import DriftMonitor
from worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[1]
THREE_GROUPS = ("comp.graphics", "rec.sport.hockey", "talk.politics.mideast")
GAUGES = ("label_divergence", "low_confidence_share", "confidence_shift")
SAMPLE_EVERY = 50


class _Quiet:
    def __getattr__(self, _name: str):
        return lambda *_args, **_fields: None


def read_gauges(metrics_text: str, model: str) -> dict[str, float]:
    return {family.name.removeprefix("lstm_worker_drift_"): sample.value
            for family in text_string_to_metric_families(metrics_text) if family.name.startswith("lstm_worker_drift_")
            for sample in family.samples if sample.labels.get("model") == model}


def replay(labels: list[str], scores: list[float], model: str, reference, window: int,
           min_confidence: float) -> dict:
    """Feed the stream through the worker's drift code; the gauges' spread over the full windows."""
    metrics = WorkerMetrics()
    monitor = DriftMonitor(metrics, window, min_confidence, _Quiet())
    monitor.serve(model, reference)
    samples: dict[str, list[float]] = {name: [] for name in GAUGES}
    values: dict[str, float] = {}
    for i, (label, score) in enumerate(zip(labels, scores, strict=True), start=1):
        monitor.observe(model, label, score)
        if i >= window and (i - window) % SAMPLE_EVERY == 0 or i == len(labels):
            values = read_gauges(metrics_text(metrics), model)
            for name in GAUGES:
                if not np.isnan(values[name]):
                    samples[name].append(values[name])
    summary = {name: {"min": round(min(v), 4), "p05": round(float(np.quantile(v, 0.05)), 4),
                      "median": round(float(np.median(v)), 4), "p95": round(float(np.quantile(v, 0.95)), 4),
                      "max": round(max(v), 4)} for name, v in samples.items() if v}
    return {"records": len(labels), "windows_sampled": len(samples[GAUGES[0]]), "gauges": summary,
            "last_window": {k: round(v, 6) for k, v in values.items()}}


def metrics_text(metrics: WorkerMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def stream_through_worker(bundle: Path, texts: list[str], window: int, model: str) -> dict[str, float]:
    """The texts through a real worker (one partition); its drift gauges once every label is out."""
    with DevBroker() as broker:
        bootstrap, topic = broker.bootstrap_servers, f"drift-{time.time_ns()}"
        create_topics(bootstrap, [topic, f"{topic}.labels", f"{topic}.dlq"], 1)
        produce(bootstrap, topic, [(str(i), json.dumps({"id": str(i), "text": t}).encode())
                                   for i, t in enumerate(texts)])
        port = free_port()
        worker = start_worker(bootstrap, topic, bundle, port, 0, "cpu", ("--drift-window", str(window)))
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
            consumer, received = output_consumer(bootstrap, f"{topic}.labels", 1), 0
            deadline = time.monotonic() + 900
            while received < len(texts) and time.monotonic() < deadline:
                received += sum(1 for m in consumer.consume(500, timeout=0.5) if m.error() is None)
            consumer.close()
            if received < len(texts):
                raise RuntimeError(f"the worker labelled {received} of {len(texts)} documents")
            for _ in range(100):  # acknowledgements reach the worker's loop a moment after the broker stored them
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    gauges = read_gauges(response.read().decode(), model)
                if gauges.get("window_records") == window:
                    return {k: round(v, 6) for k, v in gauges.items()}
                time.sleep(0.1)
            raise RuntimeError(f"the worker's drift window never filled: {gauges}")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)


def read_sms(path: Path) -> list[str]:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)  # texts hold unbalanced quotes
        return [row[1] for row in rows if len(row) >= 2 and row[1].strip()]


@click.command()
@click.option("--bundle", type=click.Path(path_type=Path), required=True, help="Model bundle with a drift reference.")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="20news-bydate.tar.gz")
@click.option("--sms", type=click.Path(path_type=Path), default=None, help="sms-spam.tsv (label<TAB>text)")
@click.option("--window", default=1000, type=click.IntRange(1), help="--drift-window to replay with.")
@click.option("--min-confidence", default=0.0, type=float, help="As the worker's --min-confidence (0: the quantile).")
@click.option("--stream", is_flag=True, help="Also stream the shuffled test split through a real worker.")
@click.option("--seed", default=0, type=int)
def main(bundle: Path, data: Path, sms: Path | None, window: int, min_confidence: float, stream: bool,
         seed: int) -> None:
    loaded = load_bundle(bundle)
    if loaded.drift_reference is None:
        raise click.UsageError(f"{bundle} has no drift reference: export it again with this version")
    engine = InferenceEngine(loaded, provider="cpu")
    model, reference = loaded.model_id, loaded.drift_reference
    test = read_news_archive(data)["test"]

    def score(texts: list[str]) -> tuple[list[str], list[float]]:
        predictions = engine.predict_texts(texts)
        return [p.label for p in predictions], [round(float(p.score), 6) for p in predictions]

    started = time.perf_counter()
    labels, scores = score(list(test.texts))
    shuffled = list(range(len(labels)))
    random.Random(seed).shuffle(shuffled)
    three = [i for i in shuffled if test.labels[i] in THREE_GROUPS]
    streams = {
        "20ng-test-shuffled": shuffled,
        "20ng-test-grouped": list(range(len(labels))),
        "20ng-3-groups": three,
    }
    results: dict = {"bundle": model, "window": window, "min_confidence": min_confidence, "seed": seed,
                     "reference": {"documents": reference.documents, "confidence_mean": reference.confidence_mean,
                                   "quantile_10": round(reference.quantile(0.10), 6)},
                     "streams": {}}
    for name, order in streams.items():
        results["streams"][name] = replay([labels[i] for i in order], [scores[i] for i in order], model,
                                          reference, window, min_confidence)
    if sms is not None:
        sms_labels, sms_scores = score(read_sms(sms))
        results["streams"]["sms-spam"] = replay(sms_labels, sms_scores, model, reference, window, min_confidence)
    results["offline_seconds"] = round(time.perf_counter() - started, 1)
    engine.close()
    if stream:
        texts = [test.texts[i] for i in shuffled]
        results["worker_stream"] = {"stream": "20ng-test-shuffled",
                                    "gauges": stream_through_worker(bundle, texts, window, model)}
    for name, result in results["streams"].items():
        gauges = result["gauges"]
        click.echo(f"{name:20} {result['records']:5d} records: " + "; ".join(
            f"{g} median {gauges[g]['median']:+.4f} [{gauges[g]['min']:+.4f}, {gauges[g]['max']:+.4f}]"
            for g in GAUGES if g in gauges))
    if stream:
        click.echo(f"worker /metrics after 20ng-test-shuffled: {results['worker_stream']['gauges']}")
        click.echo(f"replayed last window:                   {results['streams']['20ng-test-shuffled']['last_window']}")
    out = write_result(ROOT / "bench" / "results" / f"drift-{time.strftime('%Y%m%dT%H%M%S')}.json",
                       {"command": command_line("bench.drift"), **results})
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
