"""Errors of the worker package; each message names the fix."""


class WorkerError(Exception):
    """Base class for worker errors."""


class EngineError(WorkerError):
    """The inference engine could not be created (provider unavailable, model unloadable)."""


class InferenceError(WorkerError):
    """ONNX Runtime failed while scoring a batch."""
