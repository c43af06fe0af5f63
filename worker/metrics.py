"""Prometheus metrics of the worker, on a private registry (several workers can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from core.drift_reference import CONFIDENCE_BUCKETS

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_in = Counter("lstm_worker_records_in", "Records polled from the input topic", registry=r)
        self.records_out = Counter("lstm_worker_records_out", "Labels acknowledged by the broker", registry=r)
        self.labels = Counter("lstm_worker_labels", "Labels stored, by label (review included)", ["label"], registry=r)
        self.confidence = Histogram("lstm_worker_confidence", "Top-1 score of stored labels",
                                    buckets=CONFIDENCE_BUCKETS, registry=r)
        self.routed_to_review = Counter("lstm_worker_review", "Labels sent to --review-topic (below --min-confidence)",
                                        registry=r)
        self.dead_letters = Counter("lstm_worker_dead_letters", "Records dead-lettered, by reason",
                                    ["reason"], registry=r)
        self.send_errors = Counter(
            "lstm_worker_send_errors", "Sends that failed after the producer's own retries (then retried or "
            "dead-lettered, see docs/worker.md)", registry=r)
        self.send_retries = Counter("lstm_worker_send_retries", "Failed sends tried again by the worker, by topic",
                                    ["topic"], registry=r)
        self.send_stalled = Gauge("lstm_worker_send_stalled",
                                  "1 while a failed send is being retried and later sends wait behind it", registry=r)
        self.dropped_revoked = Counter(
            "lstm_worker_dropped_revoked",
            "Records skipped because their partition was revoked (the next owner re-reads them)", registry=r)
        self.batch_size = Histogram("lstm_worker_batch_size", "Records per inference batch",
                                    buckets=_SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram("lstm_worker_batch_tokens", "Tokens per inference batch",
                                      buckets=_TOKEN_BUCKETS, registry=r)
        self.inference_seconds = Histogram("lstm_worker_inference_seconds", "ONNX Runtime time per batch, by model",
                                           ["model"], buckets=_SECONDS_BUCKETS, registry=r)
        self.end_to_end_seconds = Histogram(
            "lstm_worker_end_to_end_seconds",
            "Record timestamp to broker acknowledgement of its label", buckets=_SECONDS_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "lstm_worker_consumer_lag", "Log end minus the group's committed offset per assigned partition, asked of "
            "the broker every 5 s (it moves while fetching is paused)", ["topic", "partition"], registry=r)
        self.in_flight = Gauge("lstm_worker_in_flight", "Records polled but not yet acknowledged", registry=r)
        self.paused = Gauge("lstm_worker_fetch_paused", "1 while fetching is paused for backpressure", registry=r)
        self.ready = Gauge("lstm_worker_ready", "1 while /readyz answers 200 (alert on pods not ready for long)",
                           registry=r)
        self.assigned_partitions = Gauge("lstm_worker_assigned_partitions", "Partitions assigned", registry=r)
        self.commits = Counter("lstm_worker_commits", "Offset commits, by outcome", ["outcome"], registry=r)
        self.model_info = Info("lstm_worker_model", "The model bundle being served", registry=r)
        self.model_self_test_max_abs_diff = Gauge(
            "lstm_worker_model_self_test_max_abs_diff",
            "Largest probability difference of the bundle's self-test at load, against its export", ["model"],
            registry=r)
        self.shadow_records = Counter("lstm_worker_shadow_records", "Records the shadow model scored, by its model",
                                      ["model"], registry=r)
        self.shadow_agreements = Counter(
            "lstm_worker_shadow_agreements", "Shadow-scored records with the primary's top label, by shadow model",
            ["model"], registry=r)
        self.shadow_disagreements = Counter(
            "lstm_worker_shadow_disagreements", "Shadow-scored records labelled otherwise, by primary and shadow label",
            ["primary", "shadow"], registry=r)
        self.shadow_skipped = Counter("lstm_worker_shadow_skipped", "Labelled records not shadow-scored, under load",
                                      registry=r)
        self.shadow_labels_dropped = Counter(
            "lstm_worker_shadow_labels_dropped", "Shadow labels not sent to --shadow-topic while the primary's sends "
            "were held", registry=r)
        # Drift of the recent labels from the bundle's reference, per model (worker/drift.py); NaN until the
        # --drift-window is full, absent for a bundle without a reference.
        self.drift_label_divergence = Gauge(
            "lstm_worker_drift_label_divergence", "Jensen-Shannon divergence (base 2, 0-1) of the last --drift-window "
            "labels' mix from the mix the model predicted on held-out documents at export", ["model"], registry=r)
        self.drift_low_confidence_share = Gauge(
            "lstm_worker_drift_low_confidence_share", "Share of the last --drift-window labels scoring below "
            "lstm_worker_drift_low_confidence_threshold", ["model"], registry=r)
        self.drift_low_confidence_reference = Gauge(
            "lstm_worker_drift_low_confidence_reference", "Share of the held-out documents at export that scored "
            "below the same threshold", ["model"], registry=r)
        self.drift_low_confidence_threshold = Gauge(
            "lstm_worker_drift_low_confidence_threshold", "--min-confidence, or the score the 10 % least confident "
            "held-out documents had at export", ["model"], registry=r)
        self.drift_confidence_shift = Gauge(
            "lstm_worker_drift_confidence_shift", "Mean top-1 score of the last --drift-window labels minus its mean "
            "on the held-out documents at export", ["model"], registry=r)
        self.drift_window_records = Gauge("lstm_worker_drift_window_records", "Labels in the drift window",
                                          ["model"], registry=r)
        self.model_swaps = Counter("lstm_worker_model_swaps", "Switches to a newly promoted model", registry=r)
        self.model_reload_failures = Counter(
            "lstm_worker_model_reload_failures", "Promoted versions refused at load (the old model kept serving)",
            registry=r)

    def totals(self) -> dict[str, float]:
        """Records in / out / dead-lettered so far, for the exit log line."""

        def total(metric: Counter) -> float:
            return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total"))

        return {"records_in": total(self.records_in), "records_out": total(self.records_out),
                "dead_letters": total(self.dead_letters)}
