"""Training data: stored images as tensors, soft affine augmentation, a class-balancing sampler.

Images leave the store as uint8 S x S and enter the model as float 1 x S x S in [0, 1]
(the models normalise from there). Augmentation (the paper's soft random affine: small
rotation and shear) is applied to training images only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from cxrstn.images import ImageStore
from cxrstn.models import source_copy

# Memory for the source copies an ImageDataset keeps (per dataset, and per loader worker):
# the default run's 643 training images at 160 px take 66 MB.
SOURCE_CACHE_BYTES = 1 << 30


def augmentation(rotation: float, shear: float) -> v2.RandomAffine:
    """Soft random affine: rotation in [-rotation, rotation] and x-shear in [-shear, shear] deg."""
    return v2.RandomAffine(
        degrees=rotation, shear=shear, interpolation=v2.InterpolationMode.BILINEAR
    )


class ImageDataset(Dataset):
    """Images of `paths` from `store` with their labels; items are (image, label, index).

    With `side` (`classifier.sample_size`, the same for every setting), each image is
    first brought to the source copy by `models.source_copy`, the very resize the model
    applies to a larger input (so the model's own resize then does nothing), and only
    then augmented: every setting augments at the same resolution, and augmenting 160 px
    instead of 512 px images is ~10x cheaper, which keeps the loader from being the
    bottleneck of a CPU run. The source copies are kept after their first use (up to
    `SOURCE_CACHE_BYTES` per dataset): an image drawn again in a later epoch, or validated
    again, skips its decode to float and its resize, which took half a training item's
    time (1.3 of 2.4 ms at 160 px), and gets the very same tensor.
    """

    def __init__(
        self,
        store: ImageStore,
        paths: Sequence[str],
        labels: Sequence[int],
        transform: v2.Transform | None = None,
        side: int | None = None,
    ):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        missing = [p for p in paths if p not in store]
        if missing:
            raise ValueError(
                f"{store.directory}: {len(missing)} images are not in the store, e.g. {missing[0]}"
            )
        bad = sorted({int(y) for y in labels} - {0, 1})
        if bad:
            raise ValueError(f"labels must be 0 or 1, got {bad}")
        self.store = store
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.side = side
        self._sources: dict[int, torch.Tensor] = {}
        self._max_sources = SOURCE_CACHE_BYTES // (4 * side * side) if side else 0

    def __len__(self) -> int:
        return len(self.paths)

    def source(self, index: int) -> torch.Tensor:
        """Image `index` as float 1 x S x S in [0, 1], brought to the source copy (`side`)."""
        if index in self._sources:
            return self._sources[index]
        pixels = torch.tensor(self.store[self.paths[index]]).unsqueeze(0)  # copy off the memmap
        image = pixels.float().div_(255.0)
        if self.side is not None:
            image = source_copy(image[None], self.side)[0]
            if len(self._sources) < self._max_sources:
                self._sources[index] = image
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self.source(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.tensor(float(self.labels[index])), index


def balanced_sampler(labels: Sequence[int], generator: torch.Generator) -> WeightedRandomSampler:
    """Draw len(labels) images with replacement, each class equally likely on average.

    Each image's weight is the inverse of its class's frequency, so a batch holds as many
    normal as abnormal images in expectation despite the dataset's imbalance.
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=2)
    if (counts == 0).any():
        raise ValueError(f"the training set needs both classes, got counts {counts.tolist()}")
    weights = torch.from_numpy(1.0 / counts[labels])
    return WeightedRandomSampler(
        weights, num_samples=len(labels), replacement=True, generator=generator
    )
