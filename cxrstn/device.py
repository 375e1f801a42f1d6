"""The compute device a run uses, chosen the same way by the classifiers and the detector."""

from __future__ import annotations

import torch


def choose_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; any other name is used as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
