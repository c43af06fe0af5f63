"""Errors of the export package; each message names the fix."""


class ExportError(Exception):
    """Base class: the export could not produce a bundle."""


class CheckpointError(ExportError):
    """The checkpoint directory is missing, incomplete or not in the expected format."""


class GateError(ExportError):
    """A verification gate refused the exported model; no bundle was written."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


class ParityError(GateError):
    """ONNX Runtime does not answer like PyTorch (probabilities or argmax differ)."""


class PaddingInvarianceError(GateError):
    """A document's scores change when it is batched with longer documents."""


class QuantizationError(GateError):
    """The int8 model could not be built or lost too much accuracy."""
