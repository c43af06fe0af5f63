"""Torch-free contract shared by training, export and the worker.

It owns, once: how text becomes token ids (``core.text``, ``core.vocab``) and
what a model bundle is (``core.bundle``). Nothing here imports torch.
"""

__version__ = "0.1.0"
