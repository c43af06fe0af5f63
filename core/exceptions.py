"""Errors raised by the shared contract; each message names the fix."""


class ContractError(Exception):
    """Base class for errors in the text or bundle contract."""


class VocabularyError(ContractError):
    """A vocabulary file is missing, malformed or inconsistent."""


class BundleError(ContractError):
    """A model bundle is missing, incomplete, tampered with or of an unknown format."""


class StoreError(ContractError):
    """A model store is missing, has no such version, or has no (or a malformed) CURRENT."""
