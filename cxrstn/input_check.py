"""Is a file a grayscale radiograph at all? The `not_radiograph` half of `cxrstn predict`'s
input check (the `out_of_distribution` half, from the models' own features, is cxrstn/ood.py).

Three measurements, each with a constant threshold fitted on the phantom, the real films of
`../shared/real-samples/` and the synthetic non-radiographs of `cxrstn.nonradiographs`
(docs/predict.md gives the measured ranges):

- colour: the share of pixels whose red, green and blue differ by more than COLOUR_SPREAD
  (a radiograph stored as RGB has equal channels; a photograph or a heat map does not);
- grey levels: how few of the 256 levels hold 90 % of the pixels, at full resolution. A
  radiograph needs 120 or more (its densities change smoothly); a mask needs 2, a text
  page or a checkerboard 2, a screenshot a handful, a flat image 1;
- noise: the correlation of horizontally adjacent pixels, with the image shrunk to at most
  WORK_SIDE: at least 0.96 on every radiograph measured, about 0 on pixel noise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cxrstn.images import PIL_OPEN, ImageError, is_dicom

OK = "ok"
NOT_RADIOGRAPH = "not_radiograph"
OUT_OF_DISTRIBUTION = "out_of_distribution"
VALUES = (OK, NOT_RADIOGRAPH, OUT_OF_DISTRIBUTION)
"""The `input_check` column's values, in the order the summary line counts them."""

COLOUR_SPREAD = 32
"""Channel difference (of 255) above which a pixel counts as coloured; JPEG's chroma noise
on a grey image stays well below it."""
COLOUR_SHARE = 0.02
"""Share of coloured pixels above which the image is colour (a small coloured marker or
arrow on a film stays below)."""
FEW_LEVELS = 40
"""A radiograph needs at least this many grey levels to hold 90 % of its pixels (measured:
120 or more on every phantom and real film; 1 to 7 on masks, text, screenshots, flat images)."""
NOISE_CORRELATION = 0.75
"""Below this correlation of adjacent pixels the image is noise (radiographs: 0.96 or more;
pixel noise: about 0)."""
WORK_SIDE = 256
"""Longest side the image is shrunk to before the noise measurement."""
COLOUR_SIDE = 512
"""Longest side a colour file is decoded at for the colour measurement (a JPEG by DCT scaling)."""
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
"""Pillow modes that can hold colour (a palette may be grey: its pixels are measured)."""


@dataclass(frozen=True)
class Appearance:
    """The three measurements of one image."""

    colour: float  # share of coloured pixels
    levels: int  # fewest grey levels holding 90 % of the pixels
    correlation: float  # of horizontally adjacent pixels, at most WORK_SIDE a side

    def problem(self) -> str | None:
        """Why the image is not a grayscale radiograph, or None when it may be one."""
        if self.colour > COLOUR_SHARE:
            return f"colour ({self.colour:.0%} of the pixels)"
        if self.levels == 1:
            return "flat (a single grey level)"
        if self.levels < FEW_LEVELS:
            return f"{self.levels} grey levels hold 90% of the pixels (mask, text or screenshot)"
        if self.correlation < NOISE_CORRELATION:
            return f"noise (adjacent pixels correlate {self.correlation:.2f})"
        return None


def colour_share(path: str | os.PathLike) -> float:
    """Share of pixels whose channels differ by more than COLOUR_SPREAD; 0 for a file that
    can hold no colour (grey PNG or JPEG, 16-bit, DICOM: `read_image` refuses colour DICOM,
    raw .IMG). Only a colour-capable file is decoded a second time, at most COLOUR_SIDE.
    Meant for a file `images.read_image` has decoded; raises ImageError if Pillow cannot."""
    path = Path(path)
    if path.suffix.lower() == ".img" or is_dicom(path):
        return 0.0
    try:
        with PIL_OPEN(path) as image:
            if image.mode not in COLOUR_MODES:
                return 0.0
            if image.format == "JPEG":
                image.draft("RGB", (COLOUR_SIDE, COLOUR_SIDE))
            factor = max(1, -(-max(image.size) // COLOUR_SIDE))  # ceil: at most COLOUR_SIDE
            rgb = np.asarray(image.convert("RGB").reduce(factor), dtype=np.int16)
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"{path}: cannot read its colours ({error})") from error
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return float((spread > COLOUR_SPREAD).mean())


def grey_levels(image: np.ndarray, share: float = 0.9) -> int:
    """The fewest of the 256 grey levels that together hold `share` of the pixels."""
    counts = cv2.calcHist([image], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    held = np.cumsum(np.sort(counts)[::-1])  # pixels in the 1, 2, ... most common levels
    return int(np.searchsorted(held, share * image.size - 1e-6) + 1)


def adjacent_correlation(image: np.ndarray) -> float:
    """Correlation of each pixel with its right neighbour, the image shrunk (area) to at most
    WORK_SIDE a side; 1 for an image with no variation along its rows."""
    height, width = image.shape
    scale = WORK_SIDE / max(height, width)
    if scale < 1:
        size = (max(2, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    left = image[:, :-1].astype(np.float64).ravel()
    right = image[:, 1:].astype(np.float64).ravel()
    if left.std() == 0 or right.std() == 0:
        return 1.0
    return float(np.corrcoef(left, right)[0, 1])


def appearance(image: np.ndarray, colour: float = 0.0) -> Appearance:
    """The measurements of a decoded uint8 image (`images.read_image`); `colour` is the
    file's `colour_share` (the decoded image is already grey)."""
    return Appearance(colour, grey_levels(image), adjacent_correlation(image))


def verdict(problem: str | None, ood_ratio: float) -> tuple[str, str]:
    """An image's `input_check` value and `check_reason`: not_radiograph when its appearance
    has a `problem`, else out_of_distribution when its `ood_ratio` (cxrstn/ood.py) is above 1,
    else ok (no reason)."""
    if problem is not None:
        return NOT_RADIOGRAPH, problem
    if ood_ratio > 1:
        return OUT_OF_DISTRIBUTION, f"feature distance {ood_ratio:.2f}x the threshold"
    return OK, ""
