"""JSRT radiographs (raw `.IMG`) with the SCR lung masks.

The raw `.IMG` format itself (no header, n x n big-endian 16-bit words holding 12-bit
values, high values dark; real files 2048 x 2048) is decoded by `cxrstn.images`, like every
other image format; this module knows the dataset's layout. SCR masks are
`<scr>/fold{1,2}/masks/{left lung,right lung}/<key>.gif`, at half the image's side.
"""

from __future__ import annotations

import os

from cxrstn.sources import LungSample, files_below, unique_index

LUNG_FOLDERS = ("left lung", "right lung")


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
