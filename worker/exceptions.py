"""Errors of the worker package; each message names the fix."""


class WorkerError(Exception):
    """Base class for worker errors."""


class EngineError(WorkerError):
    """The inference engine could not be created (provider unavailable, model unloadable)."""


class InferenceError(WorkerError):
    """ONNX Runtime failed while scoring a batch."""


class ConfigError(WorkerError):
    """A worker option is invalid; the message names the option and the fix."""


class BrokerError(WorkerError):
    """The Kafka broker cannot be reached or lacks what the worker needs (topics, permissions)."""


class DeliveryError(WorkerError):
    """The producer could not deliver an output or dead letter after its retries."""


class StartupError(WorkerError):
    """The worker cannot start (broker unreachable, topic missing, bad bundle); the message names the fix."""
