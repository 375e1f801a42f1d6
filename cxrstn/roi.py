"""Geometry of attention windows and lung boxes, in normalized image coordinates.

Every box is (x0, y0, x1, y1) with x to the right and y down, both in [0, 1] of the image
width and height (the stored images are stretched to a square, so these fractions are the
same in the original film and in the stored copy). Functions take numpy arrays and work
on one box (shape 4) or many (shape N x 4, or anything broadcasting to it).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cxrstn.images import square_box
from cxrstn.settings import ST_SETTINGS

ST_PARAMS = ("sx", "sy", "tx", "ty")
"""An STN window's parameters (theta = [[sx, 0, tx], [0, sy, ty]]), as predictions.csv names
its columns."""


def _boxes(box) -> np.ndarray:
    array = np.asarray(box, dtype=np.float64)
    if array.shape[-1:] != (4,):
        raise ValueError(
            f"boxes need 4 coordinates (x0, y0, x1, y1) on the last axis, got {array.shape}"
        )
    return array


def _area(box: np.ndarray) -> np.ndarray:
    return np.clip(box[..., 2] - box[..., 0], 0, None) * np.clip(box[..., 3] - box[..., 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[..., 0], b[..., 0])
    y0 = np.maximum(a[..., 1], b[..., 1])
    x1 = np.minimum(a[..., 2], b[..., 2])
    y1 = np.minimum(a[..., 3], b[..., 3])
    return np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)


def stn_window(sx, sy, tx, ty, clip: bool = True) -> np.ndarray:
    """The image area the ST module samples for theta = [[sx, 0, tx], [0, sy, ty]].

    `affine_grid(..., align_corners=False)` maps the output's edges (-1, 1) to input
    coordinates tx -/+ sx (and ty -/+ sy), where -1 and 1 are the outer edges of the
    image's border pixels; u = (x + 1) / 2 brings them to [0, 1]. A negative scale (a
    flip) samples the same area. With `clip` the part outside the image, which holds only
    the zero padding, is cut off, so the box is what the classifier actually sees.
    """
    sx, sy, tx, ty = (np.asarray(v, dtype=np.float64) for v in (sx, sy, tx, ty))
    sx, sy = np.abs(sx), np.abs(sy)
    box = np.stack(
        np.broadcast_arrays(
            (tx - sx + 1) / 2, (ty - sy + 1) / 2, (tx + sx + 1) / 2, (ty + sy + 1) / 2
        ),
        axis=-1,
    )
    return np.clip(box, 0.0, 1.0) if clip else box


def iou(a, b) -> np.ndarray:
    """Intersection over union of boxes `a` and `b` (0 when both are empty)."""
    a, b = _boxes(a), _boxes(b)
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def coverage(window, lung) -> np.ndarray:
    """Share of the lung box's area inside the window."""
    window, lung = _boxes(window), _boxes(lung)
    area = _area(lung)
    if np.any(area <= 0):
        raise ValueError("every lung box needs a positive area")
    return _intersection(window, lung) / area


def apex_coverage(window, lung, top: float = 0.1) -> np.ndarray:
    """Share of the lung box's top `top` rows (the apices' strip) inside the window."""
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    lung = _boxes(lung)
    strip = lung.copy()
    strip[..., 3] = lung[..., 1] + top * (lung[..., 3] - lung[..., 1])
    return coverage(window, strip)


def phantom_lung_boxes(truth_csv: str | os.PathLike, paths) -> pd.DataFrame:
    """Normalized lung boxes of the CheXpert `paths` (as in data/labels.csv) from truth.csv.

    The phantom writes each image's lung box in the pixels of the written file
    (x1, y1 exclusive) with the file's width and height; its `file` is the path below the
    phantom root, which is also CheXpert's `Path` (e.g. CheXpert-v1.0-small/train/...).
    Returns one row per path, in the order given, with columns path, x0, y0, x1, y1;
    a path that truth.csv does not know is an error naming it.
    """
    truth = pd.read_csv(truth_csv)
    needed = {"file", "x0", "y0", "x1", "y1", "width", "height"}
    missing = needed - set(truth.columns)
    if missing:
        raise ValueError(f"{truth_csv}: missing columns {sorted(missing)}")
    truth = truth.set_index("file")
    paths = list(paths)
    unknown = [p for p in paths if p not in truth.index]
    if unknown:
        raise ValueError(
            f"{truth_csv}: {len(unknown)} images have no lung box, e.g. {unknown[0]} "
            "(data.lung_boxes is the phantom's truth; real data needs data.lung_boxes: null)"
        )
    rows = truth.loc[paths]
    width, height = rows["width"].to_numpy(float), rows["height"].to_numpy(float)
    return pd.DataFrame(
        {
            "path": paths,
            "x0": rows["x0"].to_numpy(float) / width,
            "y0": rows["y0"].to_numpy(float) / height,
            "x1": rows["x1"].to_numpy(float) / width,
            "y1": rows["y1"].to_numpy(float) / height,
        }
    )


ROI_METRICS = (
    "roi_iou",
    "roi_lung_coverage",
    "roi_apex_coverage",
    "roi_r_centre",
    "roi_r_height",
    "roi_spread_centre",
)
"""What `quality` measures of a set of windows, as named in reports/metrics.json."""


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0


def quality(windows, lungs) -> dict[str, float]:
    """How `windows` frame their images' `lungs` (N x 4 each): mean IoU, mean share of the
    lung box inside the window, mean apex coverage, and whether the window follows each
    image: the Pearson r across images of the window's and the lung box's vertical centre,
    and of their heights (0 when either does not vary, e.g. the whole image), and how far
    the window's vertical centre spreads across images as a share of the lung boxes'
    spread (standard deviations; 0 for one window for all images, about 1 for a window
    that moves as much as the lungs do)."""
    windows, lungs = _boxes(windows), _boxes(lungs)
    centres, lung_centres = windows[:, 1] + windows[:, 3], lungs[:, 1] + lungs[:, 3]
    spread = centres.std() / lung_centres.std() if lung_centres.std() > 0 else 0.0
    return {
        "roi_iou": float(iou(windows, lungs).mean()),
        "roi_lung_coverage": float(coverage(windows, lungs).mean()),
        "roi_apex_coverage": float(apex_coverage(windows, lungs).mean()),
        "roi_r_centre": _pearson(centres, lung_centres),
        "roi_r_height": _pearson(windows[:, 3] - windows[:, 1], lungs[:, 3] - lungs[:, 1]),
        "roi_spread_centre": float(spread),
    }


def crop_windows(crops: pd.DataFrame, detected_on: int) -> np.ndarray:
    """The yolo setting's windows from `data/crops.csv`: the square cut around each box (in
    the pixels of the `detected_on` px stored copy), or the whole image when kept whole."""
    windows = np.tile([0.0, 0.0, 1.0, 1.0], (len(crops), 1))
    for index, row in enumerate(crops.itertuples()):
        if row.status == "cropped":
            box = square_box(row.x0, row.y0, row.x1, row.y1, detected_on, detected_on)
            windows[index] = np.asarray(box, dtype=np.float64) / detected_on
    return windows


def setting_windows(setting: str, test: pd.DataFrame, crops: pd.DataFrame | None, size: int):
    """The window each test image was classified through: the STN's (from its stored sx,
    sy, tx, ty), the yolo square crop, or the whole image for the baseline."""
    if setting in ST_SETTINGS:
        return stn_window(*(test[name].to_numpy() for name in ST_PARAMS))
    if setting == "yolo":
        if crops is None:
            raise ValueError("the yolo setting's windows need data/crops.csv")
        return crop_windows(crops.set_index("path").loc[test["path"]].reset_index(), size)
    return np.tile([0.0, 0.0, 1.0, 1.0], (len(test), 1))


def roi_table(runs: dict, lung_boxes: pd.DataFrame, crops, size: int) -> pd.DataFrame:
    """Per test image of every run (`runs` as `metrics.load_runs` gives them): its window's
    IoU with the lung box, lung coverage and apex coverage."""
    boxes = lung_boxes.set_index("path")
    parts = []
    for (setting, fold), predictions in runs.items():
        test = predictions[predictions["split"] == "test"].reset_index(drop=True)
        windows = setting_windows(setting, test, crops, size)
        lungs = boxes.loc[test["path"], ["x0", "y0", "x1", "y1"]].to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "setting": setting,
                    "fold": fold,
                    "path": test["path"],
                    "label": test["label"],
                    "iou": iou(windows, lungs),
                    "lung_coverage": coverage(windows, lungs),
                    "apex_coverage": apex_coverage(windows, lungs),
                    **{f"w{k}": windows[:, i] for i, k in enumerate(("x0", "y0", "x1", "y1"))},
                    **{f"l{k}": lungs[:, i] for i, k in enumerate(("x0", "y0", "x1", "y1"))},
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def roi_summary(table: pd.DataFrame) -> dict:
    """Per setting, the mean and population std over folds of each `ROI_METRICS` value."""
    summary = {}
    for setting, rows in table.groupby("setting", sort=False):
        per_fold = [
            quality(
                fold_rows[["wx0", "wy0", "wx1", "wy1"]].to_numpy(),
                fold_rows[["lx0", "ly0", "lx1", "ly1"]].to_numpy(),
            )
            for _, fold_rows in rows.groupby("fold")
        ]
        summary[setting] = {
            name: {
                "mean": round(float(np.mean([q[name] for q in per_fold])), 4),
                "std": round(float(np.std([q[name] for q in per_fold])), 4),
            }
            for name in ROI_METRICS
        }
    return summary
