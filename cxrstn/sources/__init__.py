"""Readers of the original dataset formats, one module per source (as torchxrayvision does).

`chexpert` reads the classification set's CSV. The lung-mask sets that train the thorax
detector (`jsrt` with the SCR masks, `montgomery`, `shenzhen`) all list their images as
`LungSample`s with the same fields, so the detector code never sees a format's quirks;
`lung_sets.lung_samples` gathers them from the `data.*` roots.
Readers find files by their documented names anywhere below the given root, so a root one
level too high still works, and a name found twice is an error rather than a silent pick.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrstn.images import PIL_OPEN, ImageError, raw_img_side, read_image

MASK_THRESHOLD = 128
"""Mask pixels at or above this are lung: resized masks have anti-aliased edges."""


@dataclass(frozen=True)
class LungSample:
    """One detector-set radiograph and the files of its lung masks (empty when it has none)."""

    source: str  # 'jsrt' | 'montgomery' | 'shenzhen'
    key: str  # file stem, e.g. 'JPCLN001', 'MCUCXR_0001_0'
    image_path: Path
    mask_paths: tuple[Path, ...] = ()

    def read_image(self) -> np.ndarray:
        """The radiograph as uint8 2-D, lungs dark and bone bright."""
        return read_image(self.image_path)

    def read_lung_mask(self) -> np.ndarray | None:
        """Union of the lung masks as bool 2-D at the image's resolution; None without masks.

        SCR masks of JSRT are half the image's side and are upsampled exactly x2; any other
        size mismatch, or a mask with no lung pixel, raises ValueError naming the files.
        """
        if not self.mask_paths:
            return None
        height, width = image_shape(self.image_path)
        union = np.zeros((height, width), dtype=bool)
        for mask_path in self.mask_paths:
            mask = read_image(mask_path) >= MASK_THRESHOLD
            if not mask.any():
                raise ValueError(f"{mask_path}: lung mask is empty (no pixel >= {MASK_THRESHOLD})")
            if self.source == "jsrt" and 2 * mask.shape[0] == height and 2 * mask.shape[1] == width:
                mask = mask.repeat(2, axis=0).repeat(2, axis=1)
            if mask.shape != (height, width):
                raise ValueError(
                    f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} px but its image "
                    f"{self.image_path} is {width}x{height} px"
                )
            union |= mask
        return union


def image_shape(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the image `read_image(path)` returns, read from the header only."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".img":
        side = raw_img_side(path)
        return side, side
    if suffix == ".dcm":
        return read_image(path).shape
    try:
        with PIL_OPEN(path) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientation: 90 degrees
    except OSError as error:
        raise ImageError(f"{path}: cannot read the image header ({error})") from error
    return (width, height) if rotated else (height, width)


def files_below(root: str | os.PathLike) -> list[Path]:
    """Every file below `root` (following symlinked folders), sorted; the root must exist."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    found = []
    for folder, _, names in os.walk(root, followlinks=True):
        found.extend(Path(folder) / name for name in names)
    return sorted(found)


def unique_index(items: Iterable[tuple[str, Path]], what: str) -> dict[str, Path]:
    """`{key: path}` from (key, path) pairs; a key found twice raises ValueError naming both."""
    index: dict[str, Path] = {}
    for key, path in items:
        if key in index:
            raise ValueError(f"{what} {key} found twice: {index[key]} and {path}")
        index[key] = path
    return index
