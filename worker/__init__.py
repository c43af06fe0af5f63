"""The streaming worker and the offline ``classify`` engine. Never imports torch."""

__version__ = "0.1.0"
