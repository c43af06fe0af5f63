"""Errors of the worker package; each message names the fix."""


class WorkerError(Exception):
    """Base class for worker errors."""


class BrokerError(WorkerError):
    """The development broker (``lstm-worker broker``) cannot start or is not running."""


class StartupError(WorkerError):
    """The worker cannot start (broker unreachable, topic missing, bad bundle); the message names the fix."""
