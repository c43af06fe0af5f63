"""Whether a bundle's self-test passed on one engine: the measurement, the refusal, the attribution check.

The engine (``core/engine.py``) runs the inputs; this module only judges what came back, so it needs
numpy and nothing of ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.exceptions import EngineError


class SelfTestError(EngineError):
    """The bundle's self-test failed on this engine; ``result`` is the measurement (None: it could not run)."""

    def __init__(self, message: str, result: SelfTestResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class SelfTestResult:
    """The bundle's self-test as measured by one engine (its provider, its ONNX Runtime, this CPU/GPU)."""

    n: int
    max_abs_diff: float
    argmax_mismatches: int
    tolerance: float
    provider: str
    reference: str
    # Explaining engines only: whether the attributions came back finite, one per token and 0 at the pads.
    attributions_ok: bool = True

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.argmax_mismatches == 0 and self.attributions_ok

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"self-test {verdict}: max |Δp| {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}), "
                f"{self.argmax_mismatches} argmax mismatches on {self.n} inputs, provider {self.provider}, "
                f"expected by {self.reference}" + ("" if self.attributions_ok else "; malformed attributions"))


def well_formed(attributions: np.ndarray, ids: np.ndarray, lengths: np.ndarray) -> bool:
    """One finite attribution per position of the padded batch, exactly 0 at the pads."""
    if attributions.shape != ids.shape or not np.isfinite(attributions).all():
        return False
    return not attributions[np.arange(ids.shape[1])[None, :] >= lengths[:, None]].any()
