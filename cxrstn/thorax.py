"""Thorax boxes from lung masks, the YOLO thorax dataset built from them, and box overlays.

The paper's detector ground truth is "a bounding box around the manual lung field
segmentation masks" of JSRT (SCR masks), Montgomery and Shenzhen (§III-B2). This module
turns each mask into that box and writes the one-class YOLO dataset the detector trains on:

    <out>/images/{train,val}/<source>__<key>.png   grayscale, resized to imgsz x imgsz
    <out>/labels/{train,val}/<source>__<key>.txt   "0 cx cy w h", normalised to [0, 1]
    <out>/boxes.csv      source, key, name, split, width, height, x0, y0, x1, y1 (original pixels)
    <out>/excluded.csv   source, key, reason, message (every image left out for a bad input)
    <out>/data.yaml      no `path:` key, so ultralytics resolves the splits against the
                         yaml's own folder and the dataset works wherever the project lives
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from cxrstn.images import ImageError, read_image, resize_square, square_box

MIN_LUNG_SHARE = 0.1
"""A second component counts as a lung only if its area is at least this share of the largest."""

CROP_COLUMNS = ["path", "x0", "y0", "x1", "y1", "conf", "status"]
CROP_STATUSES = ("cropped", "whole")
"""An image is `cropped` when its best box reaches crop.conf, else kept `whole` (uncropped)."""

LOW_CONF_POLICIES = ("drop", "full")
"""crop.low_conf: what yolo *training* does with a `whole` image: leave it out (the paper)
or train on it uncropped. Validation and test always score every image of their fold."""

EXCLUSION_REASONS = ("bad_mask", "unreadable_image")

BOX_COLUMNS = ["source", "key", "name", "split", "width", "height", "x0", "y0", "x1", "y1"]


def thorax_box(mask: np.ndarray, min_share: float = MIN_LUNG_SHARE) -> tuple[int, int, int, int]:
    """Bounding box `(x0, y0, x1, y1)` of both lung fields, in pixel edges (x1, y1 exclusive).

    Real masks come resized, with anti-aliased edges and stray specks, so the box is not
    simply the extent of every non-zero pixel. The mask is thresholded at half its maximum
    (a bool mask is used as is), split into 4-connected components (so that a speck
    touching a lung only at a corner stays separate), and only the lungs are kept: the
    largest component and the second largest if its area is at least `min_share` of the
    largest. Everything else is a speck and ignored. Raises ValueError on an empty mask.
    """
    if mask.ndim != 2:
        raise ValueError(f"lung mask must be 2-D, got shape {mask.shape}")
    binary = mask if mask.dtype == bool else mask > mask.max() / 2
    if not binary.any():
        raise ValueError("lung mask is empty")
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=4)
    components = sorted(stats[1:count].tolist(), key=lambda s: s[cv2.CC_STAT_AREA], reverse=True)
    largest_area = components[0][cv2.CC_STAT_AREA]
    lungs = [c for c in components[:2] if c[cv2.CC_STAT_AREA] >= min_share * largest_area]
    x0 = min(c[cv2.CC_STAT_LEFT] for c in lungs)
    y0 = min(c[cv2.CC_STAT_TOP] for c in lungs)
    x1 = max(c[cv2.CC_STAT_LEFT] + c[cv2.CC_STAT_WIDTH] for c in lungs)
    y1 = max(c[cv2.CC_STAT_TOP] + c[cv2.CC_STAT_HEIGHT] for c in lungs)
    return x0, y0, x1, y1


def yolo_label(box: tuple[float, float, float, float], width: int, height: int) -> str:
    """One-class YOLO label line `0 cx cy w h` for `box` in an image of `width` x `height`.

    Normalised coordinates survive a plain (non-aspect-keeping) resize unchanged, so the
    label is computed on the original image and fits the resized copy.
    """
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
    return f"0 {cx:.6f} {cy:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"


def split_by_source(
    keys_by_source: dict[str, list[str]], val_fraction: float, seed: int
) -> dict[tuple[str, str], str]:
    """Seeded train/val assignment stratified by source: `{(source, key): "train" | "val"}`.

    Each source sends round(val_fraction * n) of its images (at least one when it has two
    or more and val_fraction > 0, never all) to val. Keys are sorted first, so the split
    does not depend on the order the readers list files in.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    roles = {}
    for source in sorted(keys_by_source):
        keys = sorted(keys_by_source[source])
        n_val = round(val_fraction * len(keys))
        if val_fraction > 0 and len(keys) >= 2:
            n_val = min(max(n_val, 1), len(keys) - 1)
        val_rows = set(rng.permutation(len(keys))[:n_val].tolist())
        for row, key in enumerate(keys):
            roles[(source, key)] = "val" if row in val_rows else "train"
    return roles


def file_stem(source: str, key: str) -> str:
    """A file name for an image key: `<source>__<key>` with anything but [A-Za-z0-9_.-] as `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{source}__{Path(key).with_suffix('')}")


def build_yolo_dataset(
    samples: Iterable, out_dir: str | os.PathLike, imgsz: int, val_fraction: float, seed: int
) -> dict:
    """Write the one-class YOLO thorax dataset of `samples` (sources.LungSample) to `out_dir`.

    An image without a lung mask is counted and skipped (Shenzhen lacks some by design; its
    image is not even read); an unreadable image or a bad mask (empty, wrong size) is
    excluded, counted by reason and listed with its message in `excluded.csv`. Returns the
    counts per source and in total: images (= with_mask + without_mask), with_mask,
    without_mask, excluded, excluded_<reason>, train, val (train + val + excluded = with_mask).
    """
    out_dir = Path(out_dir)
    kept = []  # (sample, image resized to imgsz, box, original (height, width))
    counts: dict[str, Counter] = {}
    excluded = []
    for sample in tqdm(list(samples), desc="thorax boxes", unit="image"):
        count = counts.setdefault(sample.source, Counter())
        count["images"] += 1
        try:
            mask = sample.read_lung_mask()
        except (ValueError, OSError) as error:
            count["with_mask"] += 1
            excluded.append((sample, "bad_mask", error))
            continue
        if mask is None:
            count["without_mask"] += 1
            continue
        count["with_mask"] += 1
        try:
            image = sample.read_image()
        except (ImageError, OSError) as error:
            excluded.append((sample, "unreadable_image", error))
            continue
        try:
            if mask.shape != image.shape:
                raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
            box = thorax_box(mask)
        except ValueError as error:
            excluded.append((sample, "bad_mask", error))
            continue
        kept.append((sample, resize_square(image, imgsz), box, image.shape))

    for sample, reason, _ in excluded:
        counts[sample.source]["excluded"] += 1
        counts[sample.source][f"excluded_{reason}"] += 1

    keys_by_source: dict[str, list[str]] = {}
    for sample, *_ in kept:
        keys_by_source.setdefault(sample.source, []).append(sample.key)
    roles = split_by_source(keys_by_source, val_fraction, seed)

    for role in ("train", "val"):
        (out_dir / "images" / role).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / role).mkdir(parents=True, exist_ok=True)
    rows = []
    for sample, image, box, (height, width) in kept:
        role = roles[(sample.source, sample.key)]
        name = file_stem(sample.source, sample.key)
        image_file = out_dir / "images" / role / f"{name}.png"
        label_file = out_dir / "labels" / role / f"{name}.txt"
        if label_file.exists():
            raise ValueError(f"{sample.image_path}: two images map to the file name {name}")
        if not cv2.imwrite(str(image_file), image):
            raise OSError(f"{image_file}: could not write the image")
        label_file.write_text(yolo_label(box, width, height) + "\n")
        counts[sample.source][role] += 1
        rows.append([sample.source, sample.key, name, role, width, height, *box])

    pd.DataFrame(rows, columns=BOX_COLUMNS).to_csv(
        out_dir / "boxes.csv", index=False, lineterminator="\n"
    )
    pd.DataFrame(
        [[s.source, s.key, reason, str(error)] for s, reason, error in excluded],
        columns=["source", "key", "reason", "message"],
    ).to_csv(out_dir / "excluded.csv", index=False, lineterminator="\n")
    data = {"train": "images/train", "val": "images/val", "names": {0: "thorax"}}
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    fields = ["images", "with_mask", "without_mask", "excluded", "train", "val"]
    reasons = [f"excluded_{reason}" for reason in EXCLUSION_REASONS]
    per_source = {
        source: {field: int(count[field]) for field in fields + reasons}
        for source, count in sorted(counts.items())
    }
    total = {field: sum(c[field] for c in per_source.values()) for field in fields + reasons}
    return {"sources": per_source, "total": total}


def crop_table(paths: list[str], detections: list[tuple | None], conf: float) -> pd.DataFrame:
    """The `data/crops.csv` table: each image's best box, its confidence and its status.

    An image whose best box reaches `conf` is `cropped`, any other is kept `whole`. A
    missing detection has an empty box and conf 0. Box (0.1 px) and conf (4 decimals) are
    rounded before the decision, so the table alone reproduces every status and crop.
    """
    if len(paths) != len(detections):
        raise ValueError(f"{len(paths)} images but {len(detections)} detections")
    rows = []
    for path, detection in zip(paths, detections, strict=True):
        box = [round(v, 1) for v in detection[:4]] if detection else [None] * 4
        score = round(detection[4], 4) if detection else 0.0
        status = "cropped" if detection and score >= conf else "whole"
        rows.append([path, *box, score, status])
    return pd.DataFrame(rows, columns=CROP_COLUMNS)


def check_low_conf(policy: str) -> None:
    if policy not in LOW_CONF_POLICIES:
        raise ValueError(f"crop.low_conf must be one of {list(LOW_CONF_POLICIES)}, got {policy!r}")


def crop_to_thorax(
    image: np.ndarray, box: tuple[float, ...], size: int, detected_on: int | None = None
) -> np.ndarray:
    """The square around `box` (side = its larger side, see images.square_box), resized to `size`.

    Cutting a square keeps the image's proportions, as the paper does; at the border the
    square shifts inwards instead of being padded. `box` is in the pixels of the
    `detected_on` x `detected_on` resized copy the detector saw (None: of `image` itself);
    the square is drawn there and cut from `image` at the same place, so a crop of the
    original file has the geometry of a crop of the copy with the original's detail.
    """
    height, width = image.shape[:2]
    seen_width, seen_height = (detected_on, detected_on) if detected_on else (width, height)
    x0, y0, x1, y1 = square_box(*box, seen_width, seen_height)
    fx, fy = width / seen_width, height / seen_height
    rows = slice(round(y0 * fy), max(round(y1 * fy), round(y0 * fy) + 1))
    columns = slice(round(x0 * fx), max(round(x1 * fx), round(x0 * fx) + 1))
    return resize_square(np.ascontiguousarray(image[rows, columns]), size)


def crop_file(job: tuple, size: int) -> np.ndarray:
    """`crop_to_thorax` of an original file; `job` is (file, box, detected_on)."""
    file, box, detected_on = job
    return crop_to_thorax(read_image(file), box, size, detected_on)


def plot_box_overlays(
    dataset_dir: str | os.PathLike, out_png: str | os.PathLike, per_source: int = 4
):
    """Save a grid of dataset images with their thorax boxes: one row per source.

    Drawn from the written dataset (resized image + normalised label), so the figure shows
    exactly what the detector is trained on. The images are spread evenly over each
    source's file names, which list normal films apart from nodule or TB ones, so both show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset_dir = Path(dataset_dir)
    boxes = pd.read_csv(dataset_dir / "boxes.csv")
    sources = sorted(boxes["source"].unique())
    if not sources:
        raise ValueError(f"{dataset_dir}: no boxes to plot")
    fig, axes = plt.subplots(
        len(sources), per_source, figsize=(2.2 * per_source, 2.4 * len(sources)), squeeze=False
    )
    for axes_row, source in zip(axes, sources, strict=True):
        rows = boxes[boxes["source"] == source]
        spread = np.unique(np.linspace(0, len(rows) - 1, per_source).round().astype(int))
        for ax, row in zip(axes_row, rows.iloc[spread].itertuples(), strict=False):
            image = cv2.imread(
                str(dataset_dir / "images" / row.split / f"{row.name}.png"), cv2.IMREAD_GRAYSCALE
            )
            scale_x, scale_y = image.shape[1] / row.width, image.shape[0] / row.height
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.add_patch(
                plt.Rectangle(
                    (row.x0 * scale_x, row.y0 * scale_y),
                    (row.x1 - row.x0) * scale_x,
                    (row.y1 - row.y0) * scale_y,
                    fill=False,
                    edgecolor="lime",
                    linewidth=1.5,
                )
            )
            ax.set_title(str(row.key)[-20:], fontsize=7)
        for ax in axes_row:
            ax.axis("off")
        axes_row[0].text(
            -0.05,
            0.5,
            source,
            transform=axes_row[0].transAxes,
            rotation=90,
            ha="right",
            va="center",
        )
    fig.tight_layout()
    fig.savefig(out_png, dpi=110, format="png")  # the atomic writer's name ends in .partial
    plt.close(fig)
