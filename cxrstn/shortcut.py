"""The lettering shortcut test: do the trained classifiers read burned-in text?

The paper's motivation is that lettering outside the thorax ("PORTABLE", side markers,
dates) correlates with the label and biases a classifier that sees the whole film. On
the phantom, where that correlation is a parameter (`phantom.text_label_correlation`) and
every image's lung box is known, each test image is scored three ways by its fold's model:

- `original`: the stored image, as in Table II;
- `burned`: new lettering like the phantom's (`phantom.lettering`: a side marker, maybe a
  position word, maybe a date, in random fonts and corners) burned in outside the lung
  box of *every* test image; the lung box and a margin around it stay pixel-exact;
- `removed`: the same image re-rendered by the phantom with its text switched off (only
  images that carry text change; the phantom draws text from its own random stream,
  after the anatomy, so everything else is identical), through the same JPEG and resize.

A classifier that uses the anatomy only scores the three alike. The yolo setting sees the
square crop around its detected box (`data/crops.csv`), cut from the modified image with
the box the detector found on the original (text lies outside the lungs, so the box
should not move; re-running the detector per variant would mix detector and classifier
effects). Decisions use each fold's operating threshold on the *original* test scores
(`metrics.operating_threshold` at `eval.recall`); a flip is a changed decision.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import zlib
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from cxrstn.images import read_image, resize_square
from cxrstn.metrics import auc, operating_threshold
from cxrstn.phantom.datasets import CHEXPERT_DIR, Task, plan_chexpert, run_task
from cxrstn.phantom.lettering import burn_text, sample_words
from cxrstn.thorax import crop_to_thorax
from cxrstn.train import predict

VARIANTS = ("original", "burned", "removed")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
SCORE_TOLERANCE = 1e-4
"""Score changes up to this are numerical noise (e.g. the STN's window moving by 1e-6),
not a changed decision: the operating threshold is itself a test score, so the image at
it would otherwise flip on any change in the last digits. Also the tolerance within which
the unmodified scores must reproduce the run's."""
CLEARANCE = 0.02
"""Margin kept free of text around the lung box, as a share of the image width (the
phantom's own rule for its lettering)."""


def is_phantom(chexpert_root: str | os.PathLike, phantom_root: str | os.PathLike) -> bool:
    """Whether `data.chexpert` is the phantom's CheXpert look-alike (only it has a text-free
    version and lung boxes)."""
    return Path(chexpert_root).resolve() == (Path(phantom_root) / CHEXPERT_DIR).resolve()


def chexpert_tasks(phantom: dict) -> dict[str, Task]:
    """The phantom's CheXpert render tasks keyed by image path, re-planned from its params.

    Planning is cheap and seeded, so these are the very tasks that wrote data/phantom.
    """
    size = tuple(int(side) for side in phantom["chexpert_size"])
    _, tasks = plan_chexpert(
        int(phantom["seed"]),
        int(phantom["chexpert_patients"]),
        size,
        float(phantom["finding_contrast"]),
        float(phantom["text_label_correlation"]),
    )
    return {task.file: task for task in tasks}


def burn_lettering(
    image: np.ndarray, box: tuple[int, int, int, int], view: str, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """`image` (uint8) with phantom-style lettering burned in clear of `box` plus a margin.

    Returns the new image and the number of text blocks that fit. Pixels that receive no
    ink keep their exact value.
    """
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected a uint8 2-D image, got {image.dtype} {image.shape}")
    pad = max(2, round(CLEARANCE * image.shape[1]))
    clear = (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
    canvas = image.astype(np.float32) / np.float32(255)
    drawn = burn_text(rng, canvas, clear, sample_words(rng, view))
    return np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8), drawn


def text_free_file(task: Task, workdir: str | os.PathLike) -> tuple[Path, tuple]:
    """The phantom image of `task` rendered with its text off, written by the phantom's own
    writer (JPEG) into `workdir`: its file and its lung box (original pixels). Only frontal
    views: a lateral draws its text from the shared stream, so it would change."""
    if task.spec.get("view") == "LAT":
        raise ValueError(f"{task.file}: a lateral view cannot be re-rendered without its text")
    text_free = dataclasses.replace(task, spec={**task.spec, "text": False})
    truth = run_task(text_free, workdir)
    return Path(workdir) / task.file, tuple(int(truth[key]) for key in BOX_COLUMNS)


def scaled_box(box: tuple, original_size: tuple[int, int], image: np.ndarray) -> tuple:
    """A box in original pixels mapped onto `image`, a decode of the original at another
    size (JPEG draft mode), rounded outwards so that it still covers every lung pixel."""
    fx, fy = image.shape[1] / original_size[0], image.shape[0] / original_size[1]
    x0, y0, x1, y1 = box
    return (
        math.floor(x0 * fx),
        math.floor(y0 * fy),
        min(math.ceil(x1 * fx), image.shape[1]),
        min(math.ceil(y1 * fy), image.shape[0]),
    )


class ArrayStore:
    """An in-memory stand-in for `images.ImageStore`, so that `train.predict` scores modified
    images exactly as it scores stored ones."""

    def __init__(self, images: dict[str, np.ndarray], name: str):
        self.images = images
        self.directory = Path(f"<{name}>")

    def __contains__(self, path: str) -> bool:
        return path in self.images

    def __getitem__(self, path: str) -> np.ndarray:
        return self.images[path]


def image_rng(seed: int, path: str) -> np.random.Generator:
    """A stream per image and seed, independent of which other images are processed."""
    return np.random.default_rng([seed, zlib.crc32(path.encode())])


def make_variants(
    files: dict[str, Path],
    images: pd.DataFrame,
    tasks: dict[str, Task],
    seed: int,
    decodes: dict[str, int | None],
    workers: int = 1,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """The three variants of the test images in `images` (`path, view, words, x0..y1`),
    decoded from their files as each setting's pipeline decodes the originals: `decodes`
    names each way with its `read_image` `min_side` (the resize stage's reduced-size JPEG
    decoding for the stored images; None, full size, for the crops cut from the originals).
    Returns {decode: {variant: {path: image}}}; `files` maps each path to its original.
    Images are made in `workers` processes; each has its own seeded stream, so the result
    does not depend on their number.

    The lung box of each text-free render must equal the one in truth.csv: otherwise the
    phantom's params or code differ from those that wrote data/phantom, and the "same
    image without text" would be another image.
    """
    variants = {name: {variant: {} for variant in VARIANTS} for name in decodes}
    jobs = []
    for row in images.itertuples():
        if row.path not in tasks:
            raise ValueError(f"{row.path}: not an image the phantom's params plan")
        box = tuple(int(getattr(row, key)) for key in BOX_COLUMNS)
        jobs.append((tasks[row.path], files[row.path], box, row.view, int(row.words), seed))
    with Pool(workers) as pool:
        made = pool.imap(partial(_variants_of, decodes=decodes), jobs, chunksize=4)
        for (task, *_), found in tqdm(zip(jobs, made, strict=True), total=len(jobs),
                                      desc="shortcut", unit="img"):  # fmt: skip
            for name, images_of in found.items():
                for variant, image in images_of.items():
                    variants[name][variant][task.file] = image
    return variants


def _variants_of(job: tuple, decodes: dict[str, int | None]) -> dict[str, dict[str, np.ndarray]]:
    """One image's variants for `make_variants`: {decode: {variant: image}}."""
    task, file, lung_box, view, words, seed = job
    path = task.file
    found = {}
    with tempfile.TemporaryDirectory(prefix="shortcut-") as workdir:
        text_free = None
        if words > 0:
            text_free, rendered_box = text_free_file(task, workdir)
            if rendered_box != lung_box:
                raise ValueError(
                    f"{path}: re-rendered lung box {rendered_box} differs from "
                    f"truth.csv {lung_box}; data/phantom was made with other phantom "
                    "params or code (re-run the phantom stage)"
                )
        for name, min_side in decodes.items():
            original = read_image(file, min_side)
            box = scaled_box(lung_box, task.size, original)
            burned, _ = burn_lettering(original, box, view, image_rng(seed, path))
            removed = original if text_free is None else read_image(text_free, min_side)
            found[name] = {"original": original, "burned": burned, "removed": removed}
    return found


def resized_variants(variants: dict[str, dict], size: int) -> dict[str, ArrayStore]:
    """What the baseline and STN see: each variant resized as the resize stage does."""
    return {
        name: ArrayStore({path: resize_square(image, size) for path, image in found.items()}, name)
        for name, found in variants.items()
    }


def cropped_variants(
    variants: dict[str, dict],
    stored: dict[str, ArrayStore],
    crops: pd.DataFrame,
    detected_on: int,
    size: int,
    paths,
) -> dict[str, ArrayStore]:
    """What the yolo setting sees, as the crop stage makes it: the images `paths` of each
    variant (decoded at full size) cut to the square of their `data/crops.csv` box (found
    on the `detected_on` px stored copy); an image kept whole is its stored version
    (`stored`, from `resized_variants`)."""
    boxes = crops.set_index("path")
    result = {}
    for name, found in variants.items():
        images = {}
        for path in paths:
            if path not in boxes.index:
                raise ValueError(f"data/crops.csv: no row for test image {path}")
            row = boxes.loc[path]
            if row["status"] == "cropped":
                box = tuple(float(row[key]) for key in BOX_COLUMNS)
                images[path] = crop_to_thorax(found[path], box, size, detected_on)
            else:
                images[path] = resize_square(stored[name][path], size)
        result[name] = ArrayStore(images, f"{name} crops")
    return result


def score_variants(
    model: nn.Module,
    variants: dict[str, ArrayStore],
    test: pd.DataFrame,
    batch_size: int,
    device: torch.device,
) -> pd.DataFrame:
    """`test` (`path, label`) with `score` (original), `score_burned` and `score_removed`."""
    frame = test[["path", "label"]].reset_index(drop=True)
    scored = frame.copy()
    for name in VARIANTS:
        column = "score" if name == "original" else f"score_{name}"
        scored[column] = predict(model, variants[name], frame, batch_size, device)["score"]
    return scored


def check_reproduced(
    scored: pd.DataFrame, reference: pd.DataFrame, what: str, tol: float = SCORE_TOLERANCE
):
    """The original scores must reproduce the run's predictions.csv: else the images or the
    model are not those the run was evaluated on."""
    merged = scored.merge(reference[["path", "score"]], on="path", suffixes=("", "_run"))
    if len(merged) != len(scored):
        raise ValueError(f"{what}: {len(scored) - len(merged)} scored images are not in the run")
    gap = float(np.max(np.abs(merged["score"] - merged["score_run"]).to_numpy(), initial=0.0))
    if gap > tol:
        raise ValueError(
            f"{what}: scores of the unmodified test images differ from the run's by up to "
            f"{gap:.2g}; the model or the stored images changed since the run"
        )


def add_decisions(scored: pd.DataFrame, recall: float) -> pd.DataFrame:
    """Per setting and fold, the operating threshold on the original scores and the decision
    (`called*`, score >= threshold) of each variant; a variant's score within
    SCORE_TOLERANCE of the original keeps the original decision."""
    parts = []
    for _, group in scored.groupby(["setting", "fold"], sort=False):
        threshold = operating_threshold(group["label"], group["score"], recall)
        group = group.assign(threshold=threshold)
        group["called"] = group["score"] >= threshold
        for name in VARIANTS[1:]:
            score = group[f"score_{name}"]
            unchanged = (score - group["score"]).abs() <= SCORE_TOLERANCE
            group[f"called_{name}"] = group["called"].where(unchanged, score >= threshold)
        parts.append(group)
    return pd.concat(parts, ignore_index=True)


def summarize(table: pd.DataFrame) -> dict:
    """Per setting, numbers for reports/shortcut.json (percent, like Table II).

    `auc*`: mean over folds of the test AUC of each variant; `delta_auc_*`: the mean of
    the per-fold changes. `flip_burned`: share of all test images whose decision changes
    with lettering burned in, `flip_burned_up` those turning normal -> abnormal.
    `flip_removed`: share of the images that carried text whose decision changes when the
    text is removed, `flip_removed_down` those turning abnormal -> normal (the other
    images are unchanged by construction). `score_change_*`: mean score change, in
    percentage points.
    """
    summary = {}
    for setting, rows in table.groupby("setting", sort=False):
        per_fold = {
            name: [
                auc(fold["label"], fold["score" if name == "original" else f"score_{name}"])
                for _, fold in rows.groupby("fold")
            ]
            for name in VARIANTS
        }
        text = rows[rows["text"]]
        burned_flip = rows["called_burned"] != rows["called"]
        removed_flip = text["called_removed"] != text["called"]
        values = {
            "n_images": len(rows),
            "n_text": len(text),
            "auc": np.mean(per_fold["original"]),
            "auc_burned": np.mean(per_fold["burned"]),
            "auc_removed": np.mean(per_fold["removed"]),
            "delta_auc_burned": np.mean(np.subtract(per_fold["burned"], per_fold["original"])),
            "delta_auc_removed": np.mean(np.subtract(per_fold["removed"], per_fold["original"])),
            "flip_burned": 100 * burned_flip.mean(),
            "flip_burned_up": 100 * (burned_flip & rows["called_burned"]).mean(),
            "flip_removed": 100 * removed_flip.mean() if len(text) else 0.0,
            "flip_removed_down": (
                100 * (removed_flip & ~text["called_removed"]).mean() if len(text) else 0.0
            ),
            "score_change_burned": 100 * (rows["score_burned"] - rows["score"]).mean(),
            "score_change_removed": (
                100 * (text["score_removed"] - text["score"]).mean() if len(text) else 0.0
            ),
        }
        summary[setting] = {
            key: value if isinstance(value, int) else round(float(value), 4)
            for key, value in values.items()
        }
    return summary
