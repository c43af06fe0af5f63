"""``lstm-export``: turn a training checkpoint into a verified ONNX model bundle (imports torch)."""

__version__ = "0.1.0"
