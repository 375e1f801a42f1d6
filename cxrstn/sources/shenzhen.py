"""Shenzhen TB set (NLM): `ChinaSet_AllFiles/CXR_png/CHNCXR_####_L.png`, L = 0 normal, 1 TB.

The lung masks are a separate download (yoctoman): `mask/CHNCXR_####_L_mask.png`, both
lungs in one 0/255 image, for 566 of the 662 images. Copies derived from the Kaggle set
drop the `_mask` suffix; both names are read. Clinical readings are loosely typed: CRLF
endings, no final newline, irregular trailing tabs and spaces, and sex/age variants such
as `femal`, `16month`, `64days` and `Female, 28yrs`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cxrstn.sources import LungSample, files_below, unique_index

KEY = re.compile(r"CHNCXR_\d{4}_([01])")
MASK_NAME = re.compile(r"(CHNCXR_\d{4}_[01])(?:_mask)?\.png")
SEX_AGE = re.compile(
    r"\s*(?P<sex>female|femal|male)(?![a-z])[\s,]*(?P<age>\d+(?:\.\d+)?)\s*"
    r"(?P<unit>yrs?|years?|y|months?|mos?|days?|d)(?![a-z])",
    re.IGNORECASE,
)
YEARS_PER_UNIT = {"y": 1.0, "m": 1 / 12, "d": 1 / 365.25}
"""Years per age unit, by the unit's first letter (yrs, month, days)."""


def label_of(key: str) -> int:
    """0 normal, 1 TB, from the key's suffix (`CHNCXR_0327_1` -> 1)."""
    match = KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"{key!r} is not a Shenzhen key like 'CHNCXR_0001_0'")
    return int(match.group(1))


def samples(root: str | os.PathLike, masks_root: str | os.PathLike) -> list[LungSample]:
    """Every `CXR_png/CHNCXR_*.png` below `root`, sorted by key, with its mask from below
    `masks_root` (`<key>_mask.png` or `<key>.png` outside a `CXR_png` folder) if it has one.
    """
    images = unique_index(
        (
            (f.stem, f)
            for f in files_below(root)
            if f.parent.name == "CXR_png" and f.name.startswith("CHNCXR_") and f.suffix == ".png"
        ),
        "Shenzhen image",
    )
    if not images:
        raise ValueError(f"{root}: no CXR_png/CHNCXR_*.png images found below this folder")
    masks = unique_index(
        (
            (match.group(1), f)
            for f in files_below(masks_root)
            if f.parent.name != "CXR_png" and (match := MASK_NAME.fullmatch(f.name))
        ),
        "Shenzhen lung mask",
    )
    found = []
    for key, image_path in sorted(images.items()):
        label_of(key)  # rejects a file name without the documented 0/1 suffix
        mask = (masks[key],) if key in masks else ()
        found.append(LungSample("shenzhen", key, image_path, mask))
    return found


def read_clinical(path: str | os.PathLike) -> dict:
    """`{sex: 'F'|'M', age: years (float), finding: str}` from a ClinicalReadings file."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    match = SEX_AGE.match(text)
    if match is None:
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        raise ValueError(f"{path}: no '<sex> <age>yrs' at the start, got {first_line!r}")
    finding = " ".join(text[match.end() :].split())
    if not finding:
        raise ValueError(f"{path}: no findings after {match.group(0).strip()!r}")
    sex = "F" if match.group("sex").lower().startswith("f") else "M"
    age = float(match.group("age")) * YEARS_PER_UNIT[match.group("unit")[0].lower()]
    return {"sex": sex, "age": age, "finding": finding}
