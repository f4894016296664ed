"""The model zoo: the registry (``zoo.csv`` + :mod:`.registry`), building (:mod:`.build`)
and input preprocessing (:mod:`.preprocess`).

Only the registry is imported here, so reading params does not import torch.
"""

from deepmouse.models.registry import Zoo, ZooEntry, load_zoo

__all__ = ["Zoo", "ZooEntry", "load_zoo"]
