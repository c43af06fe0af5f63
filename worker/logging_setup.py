"""structlog configuration: JSON lines for machines, readable console output on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

from worker.kafka_client_log import CLIENT_LOG


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Log to stderr; ``auto`` is console on a TTY, JSON lines otherwise."""
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer = (structlog.dev.ConsoleRenderer() if log_format == "console"
                else structlog.processors.JSONRenderer())
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # kafka-python logs through stdlib logging: its records become JSON lines like ours (errors only unless
    # debugging), none during start-up, and its warnings are read for the cause of a failed connection.
    client = logging.getLogger("kafka")
    client.handlers[:] = [CLIENT_LOG]
    client.propagate = False
    client.setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
    CLIENT_LOG.configure(structlog.get_logger("kafka"), logging.DEBUG if numeric <= logging.DEBUG else logging.ERROR)
