"""JSRT radiographs (raw `.IMG`) with the SCR lung masks.

An `.IMG` file has no header: n x n big-endian 16-bit words holding 12-bit values, where
high values are dark (real files: 2048 x 2048, 8,388,608 bytes). The side is inferred from
the file size, so smaller look-alikes (the phantom's) read the same way. SCR masks are
`<scr>/fold{1,2}/masks/{left lung,right lung}/<key>.gif`, at half the image's side.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from cxrstn.images import ImageError
from cxrstn.sources import LungSample, files_below, unique_index

MAX_VALUE = 4095
"""Largest 12-bit value."""

LUNG_FOLDERS = ("left lung", "right lung")


def image_side(path: str | os.PathLike) -> int:
    """The side n of a raw n x n 16-bit image, from its file size (2 * n**2 bytes)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    size = path.stat().st_size
    side = math.isqrt(size // 2)
    if size == 0 or size != 2 * side * side:
        raise ImageError(
            f"{path}: {size:,} bytes is not a square image of 16-bit words (2*n*n bytes; "
            f"a real JSRT .IMG is 8,388,608 bytes for 2048x2048)"
        )
    return side


def read_img(path: str | os.PathLike) -> np.ndarray:
    """Raw 12-bit values of a JSRT `.IMG` file as a uint16 n x n array."""
    side = image_side(path)
    raw = np.fromfile(path, dtype=">u2").reshape(side, side).astype(np.uint16)
    if raw.max() > MAX_VALUE:
        raise ImageError(f"{path}: value {raw.max()} above the 12-bit maximum {MAX_VALUE}")
    return raw


def to_display(raw: np.ndarray) -> np.ndarray:
    """Raw 12-bit values to uint8 for display, high raw = dark: round((4095 - v) * 255 / 4095)."""
    if raw.max() > MAX_VALUE:
        raise ValueError(f"value {raw.max()} above the 12-bit maximum {MAX_VALUE}")
    inverted = MAX_VALUE - raw.astype(np.uint32)
    return ((inverted * 255 + MAX_VALUE // 2) // MAX_VALUE).astype(np.uint8)


def samples(jsrt_root: str | os.PathLike, scr_root: str | os.PathLike) -> list[LungSample]:
    """Every `.IMG` below `jsrt_root`, with its left and right SCR lung masks below `scr_root`.

    An image without masks gets empty `mask_paths`; one with a single lung mask is an error.
    """
    images = unique_index(
        ((f.stem, f) for f in files_below(jsrt_root) if f.suffix.lower() == ".img"), "JSRT image"
    )
    if not images:
        raise ValueError(f"{jsrt_root}: no JSRT .IMG files found below this folder")
    mask_files = [f for f in files_below(scr_root) if f.suffix.lower() == ".gif"]
    masks = {
        folder: unique_index(
            (
                (f.stem, f)
                for f in mask_files
                if f.parent.name == folder and f.parent.parent.name == "masks"
            ),
            f"SCR {folder} mask",
        )
        for folder in LUNG_FOLDERS
    }
    found = []
    for key, image_path in sorted(images.items()):
        lungs = [masks[folder].get(key) for folder in LUNG_FOLDERS]
        if any(lungs) and not all(lungs):
            missing = LUNG_FOLDERS[lungs.index(None)]
            raise ValueError(f"{image_path}: SCR has a mask of one lung but not the {missing}")
        found.append(LungSample("jsrt", key, image_path, tuple(lungs) if all(lungs) else ()))
    return found
