"""The streaming pipeline: the consumer/inference loop."""
