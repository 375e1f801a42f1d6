"""Contact sheet of a written phantom: what the readers will see, at thumbnail size.

The images are read back from the files (JSRT shown inverted back, as for display), the
detector sets with their lung-mask outlines, CheXpert with its findings as captions, so
the sheet can be put beside real radiographs and judged by eye.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pandas as pd

from cxrstn.images import read_image
from cxrstn.io import atomic_path
from cxrstn.phantom.datasets import (
    MONTGOMERY_DIR,
    SCR_DIR,
    SHENZHEN_MASK_DIR,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

TILE = (240, 292)  # width, height of one thumbnail
OUTLINE = (255, 60, 60)


def _mask_files(root: Path, row) -> list[Path]:
    """The lung mask files of a detector-set image (none for CheXpert or a maskless image)."""
    stem = Path(row.file).stem
    if row.dataset == "jsrt":
        return sorted((root / SCR_DIR).glob(f"fold*/masks/* lung/{stem}.gif"))
    if row.dataset == "montgomery":
        folder = root / MONTGOMERY_DIR / "ManualMask"
        return [folder / "leftMask" / f"{stem}.png", folder / "rightMask" / f"{stem}.png"]
    if row.dataset == "shenzhen":
        mask = root / SHENZHEN_MASK_DIR / f"{stem}_mask.png"
        return [mask] if mask.is_file() else []
    return []


def _thumbnail(root: Path, row) -> np.ndarray:
    """RGB thumbnail of one image, lung outlines drawn in red, letterboxed to TILE."""
    image = read_image(root / row.file)
    rgb = np.repeat(image[:, :, None], 3, axis=2).copy()
    for mask_file in _mask_files(root, row):
        mask = (read_image(mask_file) >= 128).astype(np.uint8)
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, OUTLINE, max(1, image.shape[1] // 150))
    scale = min(TILE[0] / rgb.shape[1], TILE[1] / rgb.shape[0])
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    tile = np.zeros((TILE[1], TILE[0], 3), np.uint8)
    tile[: size[1], : size[0]] = small
    return tile


def _pick(truth: pd.DataFrame) -> list[tuple[pd.Series, str]]:
    """Up to 16 images: CheXpert PA normal and abnormal, AP, lateral, then each detector set."""
    chexpert = truth[truth["dataset"] == "chexpert"]
    pa = chexpert[chexpert["view"] == "PA"]
    wanted = [
        (pa[pa["label"] == 0], 2, "CheXpert PA normal"),
        (pa[pa["label"] == 1], 4, None),
        (chexpert[chexpert["view"] == "AP"], 1, "CheXpert AP"),
        (chexpert[chexpert["view"] == "LAT"], 1, "CheXpert lateral"),
        (truth[truth["dataset"] == "jsrt"], 2, "JSRT"),
        (truth[truth["dataset"] == "montgomery"].sort_values("label"), 3, "Montgomery"),
        (truth[truth["dataset"] == "shenzhen"].sort_values("label"), 3, "Shenzhen"),
    ]
    picked = []
    for rows, count, caption in wanted:
        if len(rows) > count:  # spread the picks over the set: normals and abnormals
            rows = rows.iloc[np.linspace(0, len(rows) - 1, count).round().astype(int)]
        for row in rows.itertuples():
            findings = row.findings if isinstance(row.findings, str) and row.findings else "normal"
            if caption is None:
                text = "CheXpert PA: " + findings.replace(";", ", ")
            elif row.dataset == "chexpert":
                text = caption
            else:
                finding = " (nodule)" if row.dataset == "jsrt" else " (TB)"
                text = f"{caption} {Path(row.file).stem}" + (finding if row.label == 1 else "")
            picked.append((row, text))
    return picked


def contact_sheet(root: str | os.PathLike, out_file: str | os.PathLike, columns: int = 4) -> None:
    """Draw the contact sheet of the phantom under `root` (read from its `truth.csv`)."""
    root = Path(root)
    truth = pd.read_csv(root / "truth.csv")
    picked = _pick(truth)
    rows = max(1, -(-len(picked) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 3.2, rows * 3.9))
    axes = np.atleast_1d(axes).ravel()
    for axis in axes:
        axis.axis("off")
    for axis, (row, caption) in zip(axes, picked, strict=False):
        axis.imshow(_thumbnail(root, row))
        axis.set_title(_wrap(caption), fontsize=8)
    figure.suptitle("Phantom data as written (lung masks outlined in red)", fontsize=11)
    figure.tight_layout()
    with atomic_path(out_file) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def _wrap(text: str, width: int = 40) -> str:
    words, lines, line = text.split(" "), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
