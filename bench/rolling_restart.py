"""The pause in output while three workers are rolled one by one, the way a Deployment rolls pods.

One local broker (``--broker``: Apache Kafka by default, or Tansu), a 6-partition input topic, three
``lstm-worker run`` processes in one consumer group, and a producer that writes real 20 Newsgroups
documents at a steady rate to the partitions in turn. After a steady-state window the workers are
replaced one at a time:

- ``--order replace-first`` (the shipped Deployment: ``maxSurge: 0``, ``maxUnavailable: 1``): the old
  worker gets SIGTERM and its replacement starts at once, as the ReplicaSet controller does;
- ``--order surge-first`` (``maxSurge: 1``, ``maxUnavailable: 0``): the replacement starts, and the old
  worker gets SIGTERM once the replacement is ready;

"ready" is the first answer 200 of ``/readyz`` polled every ``--probe-period-s`` from the process start
(the kubelet's readiness probe: the manifests probe every 10 s), and the next pod is touched only after
``--min-ready-s`` more seconds (``minReadySeconds``). Outputs are read with confluent-kafka (librdkafka),
a different client from the worker's; an output's time is its CreateTime, set by the worker's producer.

Measured, for the steady window and for the rollout (first SIGTERM to last replacement ready +
min-ready + ``--settle-s``): the longest gap between consecutive outputs of the whole topic (the
"pause"), the longest gap per input partition, end-to-end latency (sent to output CreateTime), and the
duplicates (at-least-once re-deliveries after revocations). Writes
``bench/results/rolling-restart-<stamp>.json``.

    python -m bench.rolling_restart --bundle /tmp/rr-bundle --data ../shared/data/20news-bydate.tar.gz
    python -m bench.rolling_restart --bundle ... --data ... --assignment-strategy cooperative-sticky --min-ready-s 10

``--assignment-strategy`` is passed to the workers only when given (workers without that option refuse it).
``--worker-src DIR`` runs the workers from another checkout (PYTHONPATH=DIR for them only), e.g. the
worker rewrite in a sibling worktree; the result records that checkout's commit.
"""

from __future__ import annotations

import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import click

from bench.provenance import command_line, write_result
from bench.rollout_stream import PARTITIONS, Stream, window_stats
from bench.streaming import create_topics
from devtools.local_broker import BROKER_KINDS, DESCRIPTIONS, KAFKA, running_broker
from worker.devbroker import free_port

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 3


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    metrics_port: int
    log: Path
    started: float = field(default_factory=time.time)
    ready_at: float | None = None


def start_worker(name: str, bootstrap: str, topic: str, bundle: Path, workdir: Path, extra: list[str],
                 worker_src: Path | None = None) -> Worker:
    port = free_port()
    log = workdir / f"{name}.log"
    command = [
        str(Path(sys.executable).parent / "lstm-worker"), "run", "--topic", topic, "--bootstrap-servers", bootstrap,
        "--group-id", f"rr-{topic}", "--model", str(bundle), "--metrics-port", str(port), "--threads", "1",
        "--provider", "cpu", "--batch-size", "64", "--max-wait-ms", "50", "--session-timeout-ms", "10000",
        "--shutdown-timeout-s", "25", "--log-format", "json", *extra,
    ]
    handle = log.open("w")
    env = dict(os.environ)
    if worker_src is not None:
        env["PYTHONPATH"] = str(worker_src)
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    return Worker(name, process, port, log)


def worker_revision(worker_src: Path | None) -> dict:
    source = (worker_src or ROOT).resolve()
    commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "worker"], capture_output=True,
                           text=True)
    return {"source": str(source), "commit": commit.stdout.strip() or None,
            "worker_dir_modified": bool(dirty.stdout.strip())}


def ready(worker: Worker) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_ready(worker: Worker, probe_period_s: float, timeout: float = 180) -> float:
    """Probe like the kubelet: first at start, then every period; return the epoch time it passed."""
    next_probe = worker.started
    while time.time() - worker.started < timeout:
        if worker.process.poll() is not None:
            raise RuntimeError(f"{worker.name} exited ({worker.process.returncode}); see {worker.log}")
        now = time.time()
        if now >= next_probe:
            if ready(worker):
                worker.ready_at = time.time()
                return worker.ready_at
            next_probe += probe_period_s
            while next_probe < now:
                next_probe += probe_period_s
        time.sleep(min(0.05, max(0.0, next_probe - time.time())))
    raise TimeoutError(f"{worker.name} not ready within {timeout:.0f} s; see {worker.log}")


def stop(worker: Worker, events: list[dict]) -> None:
    worker.process.send_signal(signal.SIGTERM)
    events.append({"t": time.time(), "event": f"SIGTERM {worker.name}"})
    watch_exit(worker, events)


def watch_exit(worker: Worker, events: list[dict]) -> None:
    """Record when the process really exits (the rollout goes on meanwhile, as Kubernetes does)."""
    def watch() -> None:
        code = worker.process.wait()
        events.append({"t": time.time(), "event": f"exited {worker.name} ({code})"})
    threading.Thread(target=watch, daemon=True).start()


def wait_exit(worker: Worker, events: list[dict], timeout: float = 40) -> int:
    try:
        return worker.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        events.append({"t": time.time(), "event": f"SIGKILL {worker.name} (drain overran)"})
        return worker.process.wait()


@click.command()
@click.option("--bundle", type=click.Path(path_type=Path, exists=True), required=True, help="Model bundle to serve.")
@click.option("--data", envvar="LSTM_TRAIN_DATA", default="20newsgroups", show_envvar=True,
              help="20 Newsgroups archive; documents come from its test split.")
@click.option("--assignment-strategy", default=None,
              help="Passed to every worker as --assignment-strategy (default: not passed, the worker's default).")
@click.option("--min-ready-s", default=0.0, show_default=True,
              help="minReadySeconds: wait after ready before the next.")
@click.option("--probe-period-s", default=10.0, show_default=True,
              help="Readiness probe period (the manifests' readinessProbe.periodSeconds).")
@click.option("--order", type=click.Choice(["replace-first", "surge-first"]), default="replace-first",
              show_default=True, help="replace-first = maxSurge 0 / maxUnavailable 1 (the shipped Deployment).")
@click.option("--rate", default=120.0, show_default=True, help="Documents per second offered, steadily.")
@click.option("--steady-s", default=20.0, show_default=True, help="Steady-state window before the rollout.")
@click.option("--settle-s", default=10.0, show_default=True,
              help="Rollout window extends this long after the last step.")
@click.option("--worker-arg", "worker_args", multiple=True, help="Extra `lstm-worker run` argument (repeatable).")
@click.option("--worker-src", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Run the workers from this checkout (PYTHONPATH) instead of the installed one.")
@click.option("--broker", "broker_kind", type=click.Choice(BROKER_KINDS), default=KAFKA, show_default=True,
              envvar="LSTM_BENCH_BROKER", show_envvar=True, help="The local broker the workers run against.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Result file. [default: bench/results/rolling-restart-<stamp>.json]")
def main(bundle: Path, data: str, assignment_strategy: str | None, min_ready_s: float, probe_period_s: float,
         order: str, rate: float, steady_s: float, settle_s: float, worker_args: tuple[str, ...],
         worker_src: Path | None, broker_kind: str, output: Path | None) -> None:
    """Measure the output pause of a rolling restart of three workers on the local broker."""
    from training.data import load_dataset

    dataset = load_dataset(data, seed=0)
    texts = [dataset.test_texts[i] for i in random.Random(0).sample(range(len(dataset.test_texts)), 2000)]
    extra = list(worker_args) + (["--assignment-strategy", assignment_strategy] if assignment_strategy else [])
    stamp = time.strftime("%Y%m%dT%H%M%S")
    output = output or ROOT / f"bench/results/rolling-restart-{stamp}.json"
    workdir = Path(tempfile.mkdtemp(prefix="rolling-restart-"))
    events: list[dict] = []
    exit_codes: dict[str, int] = {}
    workers: list[Worker] = []
    with running_broker(broker_kind) as broker:
        topic = f"rr-{stamp.lower()}"
        create_topics(broker.bootstrap_servers, [topic, f"{topic}.labels", f"{topic}.dlq"], PARTITIONS)
        stream = Stream(broker.bootstrap_servers, topic, texts, rate)
        try:
            for n in range(WORKERS):
                workers.append(start_worker(f"w{n}", broker.bootstrap_servers, topic, bundle, workdir, extra,
                                            worker_src))
            for worker in workers:
                wait_ready(worker, probe_period_s=0.5)
            stream.start()
            click.echo(f"3 workers ready; streaming {rate:.0f} docs/s; warm-up 10 s, steady window {steady_s:.0f} s")
            time.sleep(10)  # every worker fetching and at its batching rhythm
            steady_start = time.time()
            time.sleep(steady_s)
            rollout_start = time.time()
            events.append({"t": rollout_start, "event": "rollout start"})
            for n, old in enumerate(list(workers)):
                name = f"w{n}-new"
                if order == "replace-first":
                    stop(old, events)
                    new = start_worker(name, broker.bootstrap_servers, topic, bundle, workdir, extra, worker_src)
                    events.append({"t": new.started, "event": f"start {name}"})
                    events.append({"t": wait_ready(new, probe_period_s), "event": f"ready {name}"})
                    exit_codes[old.name] = wait_exit(old, events)
                else:
                    new = start_worker(name, broker.bootstrap_servers, topic, bundle, workdir, extra, worker_src)
                    events.append({"t": new.started, "event": f"start {name}"})
                    events.append({"t": wait_ready(new, probe_period_s), "event": f"ready {name}"})
                    stop(old, events)
                    exit_codes[old.name] = wait_exit(old, events)
                workers[n] = new
                click.echo(f"  {old.name} replaced by {name} (ready {new.ready_at - new.started:.1f} s after start)")
                time.sleep(min_ready_s)
            rollout_end = time.time() + settle_s
            time.sleep(settle_s)
            stream.stop_producing.set()
            for thread in stream.threads[:1]:
                thread.join(60)
            deadline = time.time() + 60
            with stream.lock:
                expected = set(stream.sent)
            while not expected <= stream.delivered() and time.time() < deadline:
                time.sleep(0.5)
            stream.stop_reading.set()
            stream.threads[1].join(30)
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    stop(worker, events)
            for worker in workers:
                if worker.process.poll() is None or worker.name not in exit_codes:
                    exit_codes[worker.name] = wait_exit(worker, events)
    with stream.lock:
        sent_keys = set(stream.sent)
        keys = [k for k, _ in stream.outputs]
    missing = len(sent_keys - set(keys))
    steady = window_stats(stream, steady_start, rollout_start)
    rollout = window_stats(stream, rollout_start, rollout_end)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": command_line("bench.rolling_restart"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "broker": DESCRIPTIONS[broker_kind],
        "bundle": str(bundle),
        "worker": worker_revision(worker_src),
        "settings": {"partitions": PARTITIONS, "workers": WORKERS, "rate_docs_per_s": rate, "order": order,
                     "assignment_strategy": assignment_strategy or "(worker default)", "min_ready_s": min_ready_s,
                     "probe_period_s": probe_period_s, "worker_args": extra, "steady_s": steady_s,
                     "settle_s": settle_s},
        "steady": steady,
        "rollout": rollout,
        "pause_s": {"steady_max_gap": steady["max_gap_s"], "rollout_max_gap": rollout["max_gap_s"],
                    "steady_max_partition_gap": steady["max_partition_gap_s"],
                    "rollout_max_partition_gap": rollout["max_partition_gap_s"]},
        "sent": len(sent_keys), "missing": missing, "duplicates": len(keys) - len(set(keys)),
        "exit_codes": exit_codes,
        "events": [{"t_s": round(e["t"] - rollout_start, 2), "event": e["event"]}
                   for e in sorted(events, key=lambda e: e["t"])],
        "worker_logs": str(workdir),
    }
    write_result(output, report)
    click.echo(f"\nresults: {output}")
    click.echo(f"steady : longest output gap {steady['max_gap_s']:.3f} s, longest per-partition gap "
               f"{steady['max_partition_gap_s']:.3f} s, latency {steady.get('latency_ms')}")
    click.echo(f"rollout: longest output gap {rollout['max_gap_s']:.3f} s, longest per-partition gap "
               f"{rollout['max_partition_gap_s']:.3f} s, latency {rollout.get('latency_ms')}")
    click.echo(f"sent {len(sent_keys)}, missing {missing}, duplicates {report['duplicates']}, exits {exit_codes}")
    if missing:
        sys.exit(1)


if __name__ == "__main__":
    main()
