"""Does the trained baseline's heatmap give a per-image lung box? (issue #33 item 2)

    python bench/heatmap_boxes.py [--folds 0 1 2 3 4] [--limit 300] [--abnormal-only]
                                  [--threads 1] [--json PATH] [--grid PNG]

For each fold k, the trained baseline models/baseline/fold<k>/model.pt maps its test images
(fold k of data/folds.csv, fed as the pipeline feeds them) to heatmaps and boxes
(`cxrstn.heatmap_boxes`): Grad-CAM of the abnormal logit, Grad-CAM of the predicted class
and the summed activations, of blocks 3-5, thresholded at 0.15-0.7 of each map's maximum,
boxed around the largest component or all pixels above it. Each variant's boxes are scored
against the known lung boxes (so the phantom, or data with `data.lung_boxes`). Prints one
row per variant: the mean over folds, the r's range over folds in brackets.
`--abnormal-only` scores the abnormal test images alone, the ones whose abnormal-logit
Grad-CAM should show a finding. `--grid`
saves the first fold's first test images with their maps and boxes. Under a minute on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from cxrstn import heatmap_boxes
from cxrstn.data import ImageDataset
from cxrstn.folds import split_of
from cxrstn.images import ImageStore
from cxrstn.io import load_params
from cxrstn.models import Classifier
from cxrstn.roi import phantom_lung_boxes
from cxrstn.train import input_side, load_model

SCORES = ("roi_iou", "roi_lung_coverage", "roi_r_centre", "roi_r_height", "r_x_centre", "r_width")
VARIANT = ["map", "block", "threshold", "rule"]


def test_images(
    model, store: ImageStore, frame: pd.DataFrame, limit: int | None, abnormal_only: bool = False
):
    """The first `limit` test rows (abnormal ones only with `abnormal_only`) and their images
    as the pipeline feeds them."""
    rows = frame[frame["split"] == "test"]
    if abnormal_only:
        rows = rows[rows["label"] == 1]
    rows = rows.reset_index(drop=True).iloc[:limit]
    dataset = ImageDataset(store, rows.path.tolist(), rows.label.tolist(), side=input_side(model))
    return rows, torch.stack([dataset.source(i) for i in range(len(dataset))])


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant: the mean of each score over folds, and the r's min and max."""
    grouped = table.groupby(VARIANT, sort=False)
    result = grouped[[*SCORES, "empty"]].mean()
    for column in SCORES[2:]:
        result[f"{column}_min"] = grouped[column].min()
        result[f"{column}_max"] = grouped[column].max()
    return result.reset_index()


def save_grid(path: Path, model, images, lungs, count: int = 6) -> None:
    """`count` images with their lung box (green), and each block's Grad-CAM and summed
    activations with the box at 0.3 of the max, largest component (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    count = min(count, len(images))
    images, lungs = images[:count], lungs[:count]
    columns = [
        (block, name) for block in heatmap_boxes.BLOCKS for name in ("gradcam", "activation")
    ]
    maps = {block: heatmap_boxes.heatmaps(model, images, block) for block in heatmap_boxes.BLOCKS}
    side = model.input_size
    figure, axes = plt.subplots(
        count, 1 + len(columns), figsize=(2 * (1 + len(columns)), 2 * count)
    )

    def box(ax, b, colour, scale):
        x0, y0, x1, y1 = np.asarray(b) * scale
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.5))

    for row in range(count):
        image = images[row, 0].numpy()
        axes[row, 0].imshow(image, cmap="gray")
        box(axes[row, 0], lungs[row], "lime", image.shape[-1])
        for col, (block, name) in enumerate(columns, start=1):
            heat = maps[block][name][row].numpy()
            axes[row, col].imshow(heat, cmap="jet")
            box(axes[row, col], lungs[row], "lime", side)
            found = heatmap_boxes.map_box(heat, 0.3, "largest")
            if found is not None:
                box(axes[row, col], found, "red", side)
            if row == 0:
                axes[row, col].set_title(f"block {block} {name}", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, nargs="+", help="default: every fold")
    parser.add_argument("--limit", type=int, default=300, help="test images per fold at most")
    parser.add_argument("--abnormal-only", action="store_true", help="abnormal test images only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every fold's rows here")
    parser.add_argument("--grid", type=Path, help="a PNG of the first fold's first images")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = load_params()
    if not params["data"].get("lung_boxes"):
        sys.exit("heatmap_boxes needs known lung boxes: data.lung_boxes is null")
    n_folds = params["split"]["folds"]
    folds = pd.read_csv("data/folds.csv")
    store = ImageStore("data/resized")
    started, tables = time.perf_counter(), []
    for fold in args.folds if args.folds is not None else range(n_folds):
        model_path = Path(f"models/baseline/fold{fold}/model.pt")
        model = load_model(model_path)
        if not isinstance(model, Classifier):
            sys.exit(f"{model_path}: not a whole-image classifier")
        frame = folds.assign(split=split_of(folds["fold"], fold, n_folds))
        rows, images = test_images(model, store, frame, args.limit, args.abnormal_only)
        lungs = phantom_lung_boxes(params["data"]["lung_boxes"], rows.path)
        lungs = lungs[["x0", "y0", "x1", "y1"]].to_numpy()
        with torch.no_grad():
            logits = model(images).numpy()
        labels = rows.label.to_numpy()
        auc = f"{roc_auc_score(labels, logits):.4f}" if len(set(labels)) == 2 else "n/a"
        print(f"fold {fold}: {len(rows)} test images, the baseline's AUC on them {auc}")
        tables.append(heatmap_boxes.measure(model, images, lungs).assign(fold=fold))
        if args.grid and not tables[:-1]:
            save_grid(args.grid, model, images, lungs)
    table = pd.concat(tables, ignore_index=True)
    n = table["fold"].nunique()
    print(
        f"\nmean over {n} fold(s), r's range in brackets; box rule: largest component or all"
        " pixels above the threshold; 'empty': share of maps with no positive pixel (boxed whole)"
    )
    header = f"{'map':18s} {'blk':>3s} {'thr':>4s} {'rule':7s} {'IoU':>5s} {'cover':>5s}"
    print(header + "".join(f" {name:>18s}" for name in ("r centre", "r height", "r x", "r width")))
    for row in summary(table).itertuples():
        values = f"{row.map:18s} {row.block:3d} {row.threshold:4.2f} {row.rule:7s}"
        values += f" {row.roi_iou:5.2f} {row.roi_lung_coverage:5.2f}"
        for column in SCORES[2:]:
            low, high = getattr(row, f"{column}_min"), getattr(row, f"{column}_max")
            values += f" {getattr(row, column):5.2f} [{low:5.2f},{high:5.2f}]"
        print(values + (f" empty {row.empty:.2f}" if row.empty else ""))
    print(f"total {time.perf_counter() - started:.0f} s, {args.threads} thread(s)")
    if args.json:
        args.json.write_text(json.dumps(table.to_dict(orient="records"), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
