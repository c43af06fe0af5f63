"""Errors raised by the training side; each message names the fix.

The CLI turns these into one-line click errors, so a user never sees a traceback
for bad input.
"""


class TrainingError(Exception):
    """Base class for errors in ``lstm-train``."""


class DataError(TrainingError):
    """The training or test data is missing, unreadable or unusable (one class, no texts, missing column)."""


class CheckpointError(TrainingError):
    """A checkpoint is missing, of an unknown format, or does not match the run it should resume."""
