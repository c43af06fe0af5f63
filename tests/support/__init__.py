"""Shared test support: the only place tests import helpers from (never from another test module).

- :mod:`tests.support.ports`: free TCP ports.
- :mod:`tests.support.kafka`: topics, producing, reading back and committed offsets, all with
  confluent-kafka (librdkafka), a client independent of the worker's kafka-python.
- :mod:`tests.support.workers`: ``lstm-worker run`` as a real process, and the delivery modes.
- :mod:`tests.support.data`: input records (real documents as JSON, malformed and hostile payloads).
- :mod:`tests.support.model`: the tiny model's training arguments and the console scripts.
- :mod:`tests.support.datasets`: where the real data comes from (20 Newsgroups, the tutorial's SMS
  messages), and the one-line stop when it is missing.
- :mod:`tests.support.topic_refusal`: a topic of a live Apache Kafka that refuses writes (and accepts them again).
- :mod:`tests.support.brokers`: the suites' broker switch (``LSTM_TEST_BROKER``) and its markers.
- :mod:`tests.support.report`: measured numbers kept for the README (artifacts/faults-report.json).

Fixtures live in the conftest.py files.
"""
