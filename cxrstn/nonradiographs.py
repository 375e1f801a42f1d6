"""Synthetic files that are not chest radiographs, one or two of each kind the input check
of `cxrstn predict` must refuse (cxrstn/input_check.py): masks, colour images, flat images,
noise, a text page and a screenshot. The tests, the predict bench and the worked example of
docs/predict.md score them beside real films.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cxrstn.phantom.radiograph import render_frontal


def film(seed: int, width: int = 420, height: int = 512) -> np.ndarray:
    """A phantom frontal radiograph (uint8), the radiograph inside some of the kinds."""
    image = render_frontal(np.random.default_rng(seed), width, height, words=["PORTABLE"]).image
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def lung_mask(width: int = 512, height: int = 512) -> np.ndarray:
    """Two lung-shaped ellipses, 255 on 0: what a segmentation set stores beside each film."""
    mask = np.zeros((height, width), np.uint8)
    for cx in (0.3, 0.7):
        centre = (round(cx * width), round(0.5 * height))
        cv2.ellipse(mask, centre, (round(0.14 * width), round(0.33 * height)), 0, 0, 360, 255, -1)
    return mask


def checkerboard(side: int = 600, squares: int = 8) -> np.ndarray:
    """Black and white squares, `squares` a side."""
    rows, cols = np.indices((side, side)) * squares // side
    return np.where((rows + cols) % 2 == 0, 255, 0).astype(np.uint8)


def text_page(seed: int, width: int = 850, height: int = 1100) -> np.ndarray:
    """A scanned-looking letter: lines of antialiased black text on white."""
    rng = np.random.default_rng(seed)
    page = np.full((height, width), 250, np.uint8)
    words = ["patient", "report", "chest", "findings", "normal", "the", "of", "and", "seen"]
    for y in range(90, height - 80, 34):
        line = " ".join(rng.choice(words, size=rng.integers(5, 9)))
        cv2.putText(page, line, (70, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 20, 2, cv2.LINE_AA)
    return page


def screenshot(seed: int, width: int = 1280, height: int = 800) -> np.ndarray:
    """A grey desktop window: title bar, side panel, list rows, buttons, text, and a small
    radiograph thumbnail (about 6 % of the area), as a viewer's screenshot would show."""
    shot = np.full((height, width), 236, np.uint8)
    shot[:40] = 45  # title bar
    shot[40:, :260] = 205  # side panel
    for row, y in enumerate(range(70, height - 40, 36)):
        shot[y : y + 34, 280:1000] = 228 if row % 2 else 244
        cv2.putText(shot, f"study {row:03d}  CHEST PA", (290, y + 24),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, 30, 1, cv2.LINE_AA)  # fmt: skip
    for y in range(80, 400, 60):  # buttons in the side panel
        cv2.rectangle(shot, (20, y), (240, y + 40), 160, -1)
        cv2.putText(shot, "Open", (90, y + 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 255, 2, cv2.LINE_AA)
    cv2.putText(shot, "Viewer", (16, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2, cv2.LINE_AA)
    shot[90:330, 1030:1230] = cv2.resize(film(seed), (200, 240), interpolation=cv2.INTER_AREA)
    return shot


def heatmap_overlay(seed: int) -> np.ndarray:
    """A radiograph under a jet-coloured attention map (RGB), as saliency figures show them."""
    gray = film(seed)
    height, width = gray.shape
    yy, xx = np.mgrid[0:height, 0:width]
    heat = np.exp(
        -(((xx - 0.35 * width) / (0.2 * width)) ** 2 + ((yy - 0.5 * height) / (0.25 * height)) ** 2)
    )
    coloured = cv2.applyColorMap(np.rint(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blend = cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 0.6, coloured, 0.4, 0)
    return cv2.cvtColor(blend, cv2.COLOR_BGR2RGB)


def colour_photo(seed: int, width: int = 640, height: int = 480) -> np.ndarray:
    """Smooth random colour fields (RGB): a photograph's statistics, not its content."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((6, 8, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.rint(np.clip(smooth, 0, 1) * 255).astype(np.uint8)


def examples(seed: int = 0) -> dict[str, np.ndarray]:
    """File name -> pixels (2-D gray or H x W x 3 RGB) of every kind; the suffix says how
    `write_examples` stores it (the JPEG mask is near-binary: compression blurs its edges)."""
    rng = np.random.default_rng(seed)
    soft_mask = cv2.GaussianBlur(lung_mask(), (0, 0), 2)
    return {
        "mask_lungs.png": lung_mask(),
        "mask_lungs_soft.jpg": soft_mask,
        "checkerboard.png": checkerboard(),
        "flat_grey.png": np.full((512, 512), 128, np.uint8),
        "flat_noisy.png": np.clip(rng.normal(120, 2, (512, 512)), 0, 255).astype(np.uint8),
        "noise_uniform.png": rng.integers(0, 256, (512, 512), dtype=np.uint8),
        "noise_gaussian.jpg": np.clip(rng.normal(128, 40, (512, 512)), 0, 255).astype(np.uint8),
        "text_page.png": text_page(seed),
        "screenshot.png": screenshot(seed),
        "colour_photo.jpg": colour_photo(seed),
        "colour_heatmap.png": heatmap_overlay(seed),
    }


def write_examples(folder: str | os.PathLike, seed: int = 0) -> list[Path]:
    """Write `examples(seed)` into `folder` (created); returns the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, pixels in examples(seed).items():
        path = folder / name
        Image.fromarray(pixels).save(path, **({"quality": 90} if name.endswith(".jpg") else {}))
        files.append(path)
    return files
