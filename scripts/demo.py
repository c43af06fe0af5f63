"""`make demo`: train (if needed), export, and stream real 20 Newsgroups documents through the worker.

Everything it starts (broker, worker) is stopped before it returns, also on
Ctrl-C or an error. Set LSTM_TRAIN_DATA to a local 20news-bydate archive on a
machine without internet.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from tqdm import tqdm

from core.bundle import load_bundle
from core.exceptions import BundleError
from training.data import load_dataset
from worker.devbroker import DevBroker, free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "demo"
CHECKPOINT, BUNDLE = ARTIFACTS / "model", ARTIFACTS / "bundle"
BIN = Path(sys.executable).parent
TOPIC = "demo-incoming"
DOCS = int(os.environ.get("DEMO_DOCS", "3000"))
# A quick model (README, Results: the quick row). `README.md` shows the full configuration.
QUICK_TRAIN = ["--epochs", "3", "--max-len", "128", "--embed-dim", "64", "--hidden-size", "64",
               "--vocab-size", "20000", "--no-baseline", "--seed", "0", "--members", "1"]
MALFORMED = [b"\xff\xfe not utf-8", b"", b"   ", b'{"text": 42}', b"[1, 2, 3]", b"null"]


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run(*command: str) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def ensure_bundle(data: str) -> None:
    try:
        bundle = load_bundle(BUNDLE)
        say(f"Using the existing model bundle {BUNDLE} ({bundle.model_id}); delete it to retrain")
        return
    except BundleError:
        pass
    if not (CHECKPOINT / "checkpoint.pt").exists():
        say(f"Training a quick model on {data} (full training: see README)")
        # --overwrite: an earlier demo stopped before its checkpoint leaves this folder partly written.
        run(str(BIN / "lstm-train"), "--data", data, "--output", str(CHECKPOINT), "--overwrite", *QUICK_TRAIN)
    say("Exporting the checkpoint to an ONNX bundle (parity-gated against PyTorch)")
    run(str(BIN / "lstm-export"), "--checkpoint", str(CHECKPOINT), "--output", str(BUNDLE),
        "--name", "news-demo", "--version", "1")


def wait_ready(port: int, worker: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with code {worker.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the worker did not become ready in time")


def stream(bootstrap: str, texts: list[str], truths: list[str]) -> dict:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i, text in enumerate(texts):
        producer.send(TOPIC, key=f"doc-{i}".encode(), value=json.dumps({"id": f"doc-{i}", "text": text}).encode())
    for j, payload in enumerate(MALFORMED):
        producer.send(TOPIC, key=f"bad-{j}".encode(), value=payload)
    producer.flush()
    producer.close()
    expected = len(texts) + len(MALFORMED)
    consumer = KafkaConsumer(f"{TOPIC}.labels", f"{TOPIC}.dlq", bootstrap_servers=bootstrap,
                             auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=60_000)
    outputs: dict[str, dict] = {}
    dead: list[dict] = []
    times: list[float] = []
    with tqdm(total=expected, desc="messages through the worker", unit="msg") as progress:
        for record in consumer:
            times.append(record.timestamp / 1000)  # when the worker produced it, not when we read it
            if record.topic.endswith(".dlq"):
                headers = {k: v.decode(errors="replace") for k, v in record.headers}
                dead.append({"key": record.key.decode(), "reason": headers.get("error.type", "?")})
            else:
                value = json.loads(record.value)
                outputs[value["id"]] = value
            progress.update(1)
            if len(outputs) + len(dead) >= expected:
                break
    consumer.close()
    correct = sum(outputs[f"doc-{i}"]["label"] == truth for i, truth in enumerate(truths) if f"doc-{i}" in outputs)
    return {"sent": expected, "outputs": outputs, "dead": dead, "correct": correct,
            "seconds": (times[-1] - times[0]) if len(times) > 1 else 0.0}


def main() -> int:
    data = os.environ.get("LSTM_TRAIN_DATA", "20newsgroups")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ensure_bundle(data)
    dataset = load_dataset(data, seed=0)
    rng = random.Random(0)
    picks = rng.sample(range(len(dataset.test_texts)), min(DOCS, len(dataset.test_texts)))
    texts = [dataset.test_texts[i] for i in picks]
    truths = [dataset.label_names[dataset.test_labels[i]] for i in picks]

    # The usual Kafka port when it is free, else any: DevBroker() picks a free one itself.
    broker = DevBroker(port=None if port_taken(9092) else 9092)
    say(f"Starting the local Kafka-protocol broker (Tansu) on 127.0.0.1:{broker.port}")
    worker: subprocess.Popen | None = None
    with broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        admin.create_topics([NewTopic(t, 3, 1) for t in (TOPIC, f"{TOPIC}.labels", f"{TOPIC}.dlq")])
        admin.close()
        metrics_port = free_port()
        command = [str(BIN / "lstm-worker"), "run", "--topic", TOPIC, "--bootstrap-servers",
                   broker.bootstrap_servers, "--group-id", "lstm-worker-demo", "--model", str(BUNDLE),
                   "--metrics-port", str(metrics_port), "--session-timeout-ms", "6000", "--log-format", "json"]
        say("Starting the worker: " + " ".join(command[1:]))
        log_path = ARTIFACTS / "worker.log"
        with log_path.open("w") as log:
            worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_ready(metrics_port, worker)
                say(f"Streaming {len(texts)} real test documents and {len(MALFORMED)} malformed payloads")
                result = stream(broker.bootstrap_servers, texts, truths)
            finally:
                worker.send_signal(signal.SIGTERM)
                try:
                    exit_code = worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    exit_code = worker.wait()
    report(result, texts, truths, exit_code, log_path)
    return 0 if exit_code == 0 and len(result["outputs"]) + len(result["dead"]) == result["sent"] else 1


def report(result: dict, texts: list[str], truths: list[str], exit_code: int, log_path: Path) -> None:
    outputs, dead = result["outputs"], result["dead"]
    say("Summary")
    rate = (len(outputs) + len(dead)) / result["seconds"] if result["seconds"] else float("nan")
    print(f"  messages in            {result['sent']}")
    print(f"  labelled (out)         {len(outputs)}")
    print(f"  dead letters           {len(dead)}  {dict(Counter(d['reason'] for d in dead))}")
    print(f"  throughput             {rate:.0f} msg/s (worker's first to last output timestamp)")
    print(f"  streamed accuracy      {result['correct'] / max(1, len(texts)):.3f} against the true newsgroup")
    print(f"  worker exit on SIGTERM {exit_code} (log: {log_path.relative_to(ROOT)})")
    print("\n  examples:")
    for i in range(5):
        out = outputs.get(f"doc-{i}")
        if out:
            subject = next((ln for ln in texts[i].splitlines() if ln.lower().startswith("subject:")), "")[:60]
            mark = "ok " if out["label"] == truths[i] else "MISS"
            print(f"   [{mark}] {out['label']:<26} {out['score']:.2f}  (truth {truths[i]})  {subject}")
    print("\nNext: your own labelled CSV on a stream, no code: README, 'Your CSV in four commands';"
          "\n      the whole path, a second version promoted live: docs/tutorial.md;"
          "\n      full training `lstm-train --data $LSTM_TRAIN_DATA --output artifacts/full` (about 10 minutes on"
          "\n      2 cores, 0.887 test accuracy; README: Results),"
          "\n      the worker on a cluster: `kubectl apply -k deploy/k8s/overlays/cpu` (docs/deploy.md).")


if __name__ == "__main__":
    sys.exit(main())
