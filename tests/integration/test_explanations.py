"""``run --explain`` on the real broker: labels and review labels both carry the document's strongest tokens."""

from __future__ import annotations

import json
import statistics

from core.bundle import load_bundle
from core.engine import InferenceEngine
from core.text import tokenize
from tests.support.data import json_records
from tests.support.kafka import create_stream, create_topics, produce, read_until


def test_labels_and_review_labels_carry_explanations_from_their_document(broker, workers, news_docs, unique_name,
                                                                        tiny_bundle_dir) -> None:
    docs = news_docs[:60]
    bundle = load_bundle(tiny_bundle_dir)
    engine = InferenceEngine(bundle, provider="cpu", threads=1)
    threshold = round(statistics.median(p.score for p in engine.predict_texts(docs)), 3)  # both topics get some
    engine.close()
    bootstrap = broker.bootstrap_servers
    topic, labels, dlq = create_stream(bootstrap, unique_name, partitions=2)
    review = f"{topic}.review"
    create_topics(bootstrap, [review], partitions=2)
    worker = workers.start(bootstrap, topic, f"{unique_name}-g", "--explain", "3",
                           "--min-confidence", str(threshold), "--review-topic", review)
    worker.wait_ready()
    records = json_records(docs)
    produce(bootstrap, topic, records)
    answered = read_until(bootstrap, [labels, review, dlq], len(records), timeout=180)
    assert len(answered) == len(records) and not [m for m in answered if m.topic == dlq]
    assert {m.topic for m in answered} == {labels, review}
    texts = dict(zip([key for key, _ in records], docs, strict=True))
    for message in answered:
        body = json.loads(message.value)
        tokens = [item["token"] for item in body["explanation"]]
        weights = [item["weight"] for item in body["explanation"]]
        assert 0 < len(tokens) <= 3 and weights == sorted(weights, reverse=True) and min(weights) > 0
        read = set(tokenize(texts[body["id"]], max_tokens=bundle.preprocessing.max_len))
        assert set(tokens) <= read, (tokens, body["id"])  # words of this document, as the model read them
    assert worker.terminate() == 0
