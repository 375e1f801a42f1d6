"""Has a model seen films like this one? The `out_of_distribution` half of `cxrstn predict`'s
input check (the `not_radiograph` half is cxrstn/input_check.py).

The model's own view of an image: the mean and standard deviation of each channel of its
first BLOCKS convolution blocks' outputs (feature-map statistics, as Lee et al. 2018's
Mahalanobis detector takes them from layers below the last). The penultimate features were
measured first and do not serve here: the phantom-trained STN maps real films close to the
training mean there (0-20 % of the real films of `../shared/real-samples/` flagged per
fold model, against 90-100 % with the first three blocks; docs/predict.md has the table).

At training time (stages/train.py) the features of the run's training images give a mean
and a shrunk covariance (Ledoit-Wolf: 112 features, at the default width, from about 640
images need shrinkage to invert stably), and the run's validation images, which that fit
did not see, give the distribution of the Mahalanobis distance of unseen films of the
training kind; its QUANTILE is the threshold. Both are written beside the model as
STATS_FILE. A film further than the threshold is out of distribution for that model: about
1 in 100 films like the training films is flagged, and a film unlike them when the model's
features say so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.covariance import LedoitWolf
from torch import nn
from torch.utils.data import DataLoader

from cxrstn.data import ImageDataset
from cxrstn.images import ImageStore
from cxrstn.io import atomic_path
from cxrstn.models import STN
from cxrstn.train import _evaluate, input_side

BLOCKS = 3
"""Convolution blocks (each ends in a max pool) whose channel statistics are the features."""
QUANTILE = 0.99
"""Share of the held-out films whose distance is at most the threshold."""
STATS_FILE = "ood.npz"
"""Name of the statistics file beside each model.pt."""
BATCH = 32
"""Images a forward pass when the training stage computes the features."""


def feature_layers(model: nn.Module) -> list[nn.Module]:
    """The max pools that end the classifier's first BLOCKS convolution blocks."""
    classifier = model.classifier if isinstance(model, STN) else model
    pools = [m for m in classifier.vgg.features if isinstance(m, nn.MaxPool2d)]
    return pools[:BLOCKS]


def feature_count(model: nn.Module) -> int:
    """How many features `capture_features` gives a pass: a mean and a standard deviation
    for each channel of the first BLOCKS blocks."""
    classifier = model.classifier if isinstance(model, STN) else model
    channels, counted = 0, 0
    for module in classifier.vgg.features:
        if isinstance(module, nn.Conv2d):
            last = module.out_channels
        elif isinstance(module, nn.MaxPool2d) and counted < BLOCKS:
            channels, counted = channels + last, counted + 1
    return 2 * channels


@contextmanager
def capture_features(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the features of every forward pass made inside the block, one (batch x
    features) float32 CPU tensor a pass, without changing what the model computes: each
    channel's mean over the map, then each channel's standard deviation, block by block."""
    captured: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    layers = feature_layers(model)

    def keep(_module, _inputs, output):
        maps = output.detach().float()
        outputs.append(torch.cat([maps.mean((2, 3)), maps.std((2, 3), correction=0)], 1))
        if len(outputs) == len(layers):  # the last block of this pass
            captured.append(torch.cat(outputs, 1).cpu())
            outputs.clear()

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def store_features(
    model: nn.Module, store: ImageStore, paths: list[str], device: torch.device
) -> np.ndarray:
    """Features (images x features) of stored images, prepared as the training stage's
    scoring prepares them (no augmentation)."""
    dataset = ImageDataset(store, paths, [0] * len(paths), side=input_side(model))
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=False)
    with capture_features(model) as captured:
        _evaluate(model, loader, device)
    return torch.cat(captured).numpy().astype(np.float64)


@dataclass
class FeatureStats:
    """A model's training features and the distance beyond which an image is unlike them."""

    mean: np.ndarray  # features
    precision: np.ndarray  # features x features: the inverse of the shrunk covariance
    threshold: float  # QUANTILE of the held-out distances
    quantile: float
    held_out: np.ndarray  # the held-out images' distances, sorted
    n_fit: int  # training images the mean and covariance come from

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of `features` (images x features)."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if features.shape[1] != len(self.mean):
            raise ValueError(
                f"{features.shape[1]} features, but the statistics have {len(self.mean)}"
            )
        centred = features - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, self.precision, centred))

    def save(self, path: str | os.PathLike) -> None:
        """Write an .npz whose bytes depend on the statistics only (`np.savez` dates every
        member 1980-01-01), so that a re-run of the train stage keeps dvc.lock's hash."""
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            np.savez(
                file,
                mean=self.mean,
                precision=self.precision,
                threshold=self.threshold,
                quantile=self.quantile,
                held_out=self.held_out,
                n_fit=self.n_fit,
            )

    @classmethod
    def load(cls, path: str | os.PathLike, features: int | None = None) -> FeatureStats:
        """The statistics in `path`, checked to hold `features` features when given."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no out-of-distribution statistics beside the model (the train stage "
                "writes them; re-run it with `dvc repro`, or pass --no-input-check)"
            )
        with np.load(path, allow_pickle=False) as saved:
            stats = cls(
                mean=saved["mean"],
                precision=saved["precision"],
                threshold=float(saved["threshold"]),
                quantile=float(saved["quantile"]),
                held_out=saved["held_out"],
                n_fit=int(saved["n_fit"]),
            )
        if features is not None and len(stats.mean) != features:
            raise ValueError(
                f"{path}: statistics of {len(stats.mean)} features, but the model beside it "
                f"gives {features} (written for another model?)"
            )
        return stats


def fit_stats(fit: np.ndarray, held_out: np.ndarray, quantile: float = QUANTILE) -> FeatureStats:
    """Mean and Ledoit-Wolf covariance of `fit`; the threshold is the `quantile` of the
    distances of `held_out` (images the fit did not see)."""
    if len(fit) < 2 or len(held_out) < 1:
        raise ValueError(
            f"need at least 2 images to fit and 1 held out, got {len(fit)} and {len(held_out)}"
        )
    shrunk = LedoitWolf().fit(fit)
    stats = FeatureStats(
        mean=shrunk.location_,
        precision=shrunk.precision_,
        threshold=0.0,
        quantile=quantile,
        held_out=np.empty(0),
        n_fit=len(fit),
    )
    distances = np.sort(stats.distances(held_out))
    stats.held_out = distances
    stats.threshold = float(np.quantile(distances, quantile))
    return stats


def training_stats(
    model: nn.Module, store: ImageStore, frame: pd.DataFrame, device: torch.device
) -> FeatureStats:
    """The statistics of one training run: fitted on its `train` rows of `frame` (path,
    split), the threshold from its `val` rows."""
    split = frame["split"]
    fit = store_features(model, store, frame.loc[split == "train", "path"].tolist(), device)
    held_out = store_features(model, store, frame.loc[split == "val", "path"].tolist(), device)
    return fit_stats(fit, held_out)
