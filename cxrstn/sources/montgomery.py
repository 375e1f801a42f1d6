"""Montgomery County TB set (NLM): `MontgomerySet/CXR_png/MCUCXR_####_L.png`, L = 0 normal, 1 TB.

Lung masks share the image's file name, one per lung, under `ManualMask/leftMask/` and
`ManualMask/rightMask/`. The Kaggle "Chest X-ray Masks and Labels" copy instead has one
merged mask per image under `masks/`; both layouts are read. Clinical readings are three
lines: `Patient's Sex: F ` (trailing space), `Patient's Age: 027Y` (DICOM age string), findings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cxrstn.sources import LungSample, files_below, unique_index

KEY = re.compile(r"MCUCXR_\d{4}_([01])")
AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
"""Years per unit of a DICOM age string (nnnY, nnnM, nnnW, nnnD)."""


def label_of(key: str) -> int:
    """0 normal, 1 TB, from the key's suffix (`MCUCXR_0104_1` -> 1)."""
    match = KEY.fullmatch(key)
    if match is None:
        raise ValueError(f"{key!r} is not a Montgomery key like 'MCUCXR_0001_0'")
    return int(match.group(1))


def samples(root: str | os.PathLike) -> list[LungSample]:
    """Every `CXR_png/MCUCXR_*.png` below `root` with its lung masks, sorted by key.

    Masks: the left and right `ManualMask` pair, else a Kaggle merged `masks/` file, else none.
    """
    files = [f for f in files_below(root) if f.name.startswith("MCUCXR_") and f.suffix == ".png"]

    def index(folder: str, what: str) -> dict[str, Path]:
        # removesuffix: a merged mask may also be named `<key>_mask.png`
        keyed = ((f.stem.removesuffix("_mask"), f) for f in files if f.parent.name == folder)
        return unique_index(keyed, what)

    images = index("CXR_png", "Montgomery image")
    if not images:
        raise ValueError(f"{root}: no CXR_png/MCUCXR_*.png images found below this folder")
    left, right = index("leftMask", "left lung mask"), index("rightMask", "right lung mask")
    merged = index("masks", "merged lung mask")
    found = []
    for key, image_path in sorted(images.items()):
        label_of(key)  # rejects a file name without the documented 0/1 suffix
        if key in left and key in right:
            masks: tuple[Path, ...] = (left[key], right[key])
        elif key in left or key in right:
            missing = "rightMask" if key in left else "leftMask"
            raise ValueError(f"{image_path}: ManualMask has one lung mask but no {missing}")
        else:
            masks = (merged[key],) if key in merged else ()
        found.append(LungSample("montgomery", key, image_path, masks))
    return found


def read_clinical(path: str | os.PathLike) -> dict:
    """`{sex: 'F'|'M', age: years (float), finding: str}` from a ClinicalReadings file."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    sex = re.search(r"Patient's Sex:\s*([MF])\b", text, re.IGNORECASE)
    age = re.search(r"Patient's Age:\s*(\d+)\s*([YMWD]?)\b", text, re.IGNORECASE)
    if sex is None or age is None:
        missing = "sex" if sex is None else "age"
        raise ValueError(f"{path}: no readable `Patient's {missing.title()}:` line")
    finding_lines = [
        line.strip() for line in text.splitlines() if not line.lower().startswith("patient's")
    ]
    finding = " ".join(line for line in finding_lines if line)
    if not finding:
        raise ValueError(f"{path}: no findings line")
    unit = AGE_UNITS[age.group(2).upper() or "Y"]
    return {"sex": sex.group(1).upper(), "age": int(age.group(1)) * unit, "finding": finding}
