"""Errors raised by the shared core (the text and bundle contract, and running a bundle); each message names the fix."""


class ContractError(Exception):
    """Base class for errors in the text or bundle contract, and in running a bundle with ONNX Runtime."""


class VocabularyError(ContractError):
    """A vocabulary file is missing, malformed or inconsistent."""


class BundleError(ContractError):
    """A model bundle is missing, incomplete, tampered with or of an unknown format."""


class StoreError(ContractError):
    """A model store is missing, has no such version, or has no (or a malformed) CURRENT."""


class EngineError(ContractError):
    """The inference engine could not be created (provider unavailable, model unloadable, self-test refused)."""


class InferenceError(ContractError):
    """ONNX Runtime failed while scoring a batch."""
