"""What ``lstm-export`` writes: the explaining model with the checkpoint's calibration in the graph.

``training.calibration`` fits ``p = softmax(log p_raw / T + b)`` out of fold; here the same formula
runs on the classifier's output (``log p_raw`` up to a per-document constant, which the softmax
cancels), so ONNX Runtime returns calibrated probabilities and the parity gate, the padding gate and
the self-test compare them with this PyTorch reference. The attributions still explain the model's
mixture (``training.attribution``), for the calibrated argmax label, scaled by ``1 / T``: to first
order the calibrated log-odds move by that factor. A checkpoint without a calibration exports the
raw probabilities, exactly as before.
"""

from __future__ import annotations

import torch
from torch import nn

from training.attribution import component_scores, predicted_label_attributions
from training.calibration import METHOD_NONE, Calibration
from training.model import EnsembleClassifier, HybridClassifier, LSTMClassifier, time_mask


class CalibratedExplainingModel(nn.Module):
    """ids, lengths → (calibrated class probabilities, attributions ``[B, T]`` for the predicted label)."""

    def __init__(self, classifier: LSTMClassifier | EnsembleClassifier | HybridClassifier, calibration: Calibration):
        super().__init__()
        self.classifier = classifier
        self.calibrated = calibration.method != METHOD_NONE
        classes = classifier.config.num_classes
        bias = calibration.class_bias if calibration.class_bias is not None else (0.0,) * classes
        if len(bias) != classes:
            raise ValueError(f"the calibration has {len(bias)} class biases for {classes} classes")
        self.register_buffer("inverse_temperature", torch.tensor(1.0 / calibration.temperature))
        self.register_buffer("class_bias", torch.tensor(bias, dtype=torch.float32))
        self.with_bias = calibration.class_bias is not None

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, components = component_scores(self.classifier, ids, lengths)
        if self.calibrated:
            scores = logits * self.inverse_temperature
            probabilities = torch.softmax(scores + self.class_bias if self.with_bias else scores, dim=-1)
        else:
            probabilities = torch.softmax(logits, dim=-1)
        mask = time_mask(lengths, ids.size(1)).to(probabilities.dtype)
        attributions = predicted_label_attributions(probabilities, components, mask)
        return probabilities, attributions * self.inverse_temperature if self.calibrated else attributions
