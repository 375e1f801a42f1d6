"""The report's figures: ROC and PR curves, ROI examples (the paper's Fig. 4), findings, training.

Each function draws one figure and saves it as PNG to the path given (atomically), so
that stages can write single files into `reports/figures/`, a folder other stages share.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from cxrstn.images import square_box
from cxrstn.io import atomic_path
from cxrstn.metrics import GRID, mean_pr, mean_roc
from cxrstn.roi import stn_window
from cxrstn.settings import SHORT_NAMES, ST_SETTINGS

SETTING_COLORS = {"baseline": "#7f7f7f", "yolo": "#1f77b4", "stn": "#d62728", "stn_eq": "#ff7f0e"}
COLOR_NAMES = {"#7f7f7f": "grey", "#1f77b4": "blue", "#d62728": "red", "#ff7f0e": "orange"}


def save(figure: Figure, path: str | os.PathLike) -> None:
    """Write `figure` as PNG through a temporary file (Agg canvas, no pyplot state)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _subplots(rows: int = 1, columns: int = 1, figsize=None, **kwargs):
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, **kwargs)


def curves_figure(
    points: pd.DataFrame, summary: dict, kind: str, recall_target: float, path: str | os.PathLike
) -> None:
    """ROC (`kind="roc"`) or PR curves: thin lines per fold, a thick mean line per setting."""
    figure, axes = _subplots(figsize=(6.4, 5.6))
    for setting, runs in points.groupby("setting", sort=False):
        color = SETTING_COLORS.get(setting, "black")
        x, y = ("fpr", "tpr") if kind == "roc" else ("recall", "precision")
        for _, run in runs.groupby("fold"):
            ordered = run.sort_values("threshold", ascending=kind != "roc")
            steps = "default" if kind == "roc" else "steps-post"
            axes.plot(ordered[x], ordered[y], color=color, alpha=0.25, lw=0.8, drawstyle=steps)
        metric = "auc" if kind == "roc" else "pr_auc"
        stats = summary[setting][metric]
        label = (
            f"{SHORT_NAMES.get(setting, setting)}: {metric.upper().replace('_', '-')} "
            f"{stats['mean']:.2f} ± {stats['std']:.2f}"
        )
        mean = mean_roc(runs) if kind == "roc" else mean_pr(runs)
        axes.plot(GRID, mean, color=color, linewidth=2.2, label=label)
    note = f"operating recall {100 * recall_target:g}%"
    if kind == "roc":
        axes.plot([0, 100], [0, 100], color="black", linestyle=":", linewidth=0.8)
        axes.axhline(100 * recall_target, color="black", linestyle="--", linewidth=0.8)
        axes.text(1, 100 * recall_target - 1, note, va="top", fontsize=8)
        axes.set(xlabel="False positive rate (% of normal images)", ylabel="True positive rate (%)")
        axes.set_title("ROC curves: folds (thin) and mean over folds (thick)")
    else:
        axes.axvline(100 * recall_target, color="black", linestyle="--", linewidth=0.8)
        axes.text(100 * recall_target - 1, 1, note, ha="right", fontsize=8)
        axes.set(xlabel="Recall (%)", ylabel="Precision (%)")
        axes.set_title("Precision-recall curves: folds (thin) and mean (thick)")
    axes.set_xlim(0, 100)
    axes.set_ylim(0, 101)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right" if kind == "roc" else "lower left", bbox_to_anchor=None)
    save(figure, path)


def window_rectangle(theta, size: int, **style) -> Rectangle:
    """The STN sampling window of `theta` (sx, sy, tx, ty; see `roi.stn_window`, unclipped)
    as a patch on a `size` px image shown with imshow (pixel centres at integers)."""
    x0, y0, x1, y1 = stn_window(*theta, clip=False) * size
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, **style)


def stn_output(image: np.ndarray, sx: float, sy: float, tx: float, ty: float) -> np.ndarray:
    """The image as the ST module hands it to the classifier (bilinear, zeros outside)."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
    theta = torch.tensor([[[sx, 0.0, tx], [0.0, sy, ty]]], dtype=torch.float32)
    grid = F.affine_grid(theta, list(tensor.shape), align_corners=False)
    return F.grid_sample(tensor, grid, align_corners=False)[0, 0].numpy()


def _blank(axes: Axes, message: str) -> None:
    """A grey square panel with `message` in place of a missing image."""
    axes.set_facecolor("#f2f2f2")
    axes.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
    axes.text(0.5, 0.5, "\n".join(textwrap.wrap(message, 22)), ha="center", va="center", fontsize=9)


def roi_figure(examples: list[dict], path: str | os.PathLike) -> None:
    """One row per example: the original with the YOLO box and every STN window, the YOLO
    crop, then what each STN setting's classifier saw (the paper's Fig. 4, one column per
    STN setting).

    Each example holds `title`, `image` (square uint8), optional `box` (x0, y0, x1, y1 in
    `image` pixels) and `lung_box` (the same), `crop` (image or None) with `crop_note`, and
    `windows`: {STN setting: (sx, sy, tx, ty)}, empty when no STN ran.
    """
    settings = [s for s in ST_SETTINGS if any(s in e.get("windows", {}) for e in examples)]
    rows, columns = max(len(examples), 1), 2 + max(len(settings), 1)
    figure, grid = _subplots(rows, columns, figsize=(3.0 * columns, 3.1 * rows), squeeze=False)
    titles = ["Original: YOLO box, STN windows", "YOLO crop"]
    titles += [f"{SHORT_NAMES[s]} output" for s in settings] or ["STN output"]
    for column, title in enumerate(titles):
        grid[0, column].set_title(title, fontsize=10, fontweight="bold")
    if not examples:
        _blank(grid[0, 0], "no test images to show")
    for row, example in zip(grid, examples, strict=False):
        image = example["image"]
        size = image.shape[0]
        row[0].imshow(image, cmap="gray", vmin=0, vmax=255)
        if example.get("box") is not None:
            x0, y0, x1, y1 = example["box"]
            row[0].add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="#1f77b4", lw=2)
            )
            left, top, right, bottom = square_box(x0, y0, x1, y1, size, size)
            row[0].add_patch(
                Rectangle(
                    (left - 0.5, top - 0.5),
                    right - left,
                    bottom - top,
                    fill=False,
                    color="#1f77b4",
                    lw=1,
                    ls=":",
                )
            )
        if example.get("lung_box") is not None:
            x0, y0, x1, y1 = example["lung_box"]
            row[0].add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="#2ca02c", lw=2)
            )
        windows = example.get("windows", {})
        for setting in settings:
            if setting in windows:
                color = SETTING_COLORS[setting]
                row[0].add_patch(
                    window_rectangle(windows[setting], size, color=color, lw=2, ls="--")
                )
        row[0].set_xlim(-0.5, size - 0.5)
        row[0].set_ylim(size - 0.5, -0.5)
        row[0].set_xlabel(example["title"], fontsize=7.5, loc="left")
        if example.get("crop") is not None:
            row[1].imshow(example["crop"], cmap="gray", vmin=0, vmax=255)
        else:
            _blank(row[1], example.get("crop_note", "no crop"))
        for axes, setting in zip(row[2:], settings or [None], strict=True):
            if setting not in windows:
                _blank(axes, "no STN run")
                continue
            axes.imshow(stn_output(image, *windows[setting]), cmap="gray", vmin=0, vmax=255)
            sx, sy, tx, ty = windows[setting]
            caption = f"sx {sx:.2f}, sy {sy:.2f}, tx {tx:.2f}, ty {ty:.2f}"
            axes.set_xlabel(caption, fontsize=7.5, loc="left")
        for axes in row:
            axes.set_xticks([])
            axes.set_yticks([])
    legend = ", ".join(f"{SHORT_NAMES[s]} {COLOR_NAMES[SETTING_COLORS[s]]}" for s in settings)
    figure.text(
        0.5,
        -0.005,
        "blue: YOLO box, dotted: the square cut around it; dashed: each STN's sampling window "
        f"(x in tx ± sx, y in ty ± sy){'; ' + legend if legend else ''}; green: the lung box, "
        "where known",
        ha="center",
        fontsize=8.5,
    )
    figure.tight_layout()
    save(figure, path)


def findings_figure(analysis: pd.DataFrame, path: str | os.PathLike) -> None:
    """Per setting: share of TPs and of FNs carrying each finding at the operating point."""
    settings = list(dict.fromkeys(analysis["setting"]))
    figure, grid = _subplots(
        1, len(settings), figsize=(3.6 * len(settings) + 1.6, 5.2), sharey=True, squeeze=False
    )
    for axes, setting in zip(grid[0], settings, strict=True):
        rows = analysis[analysis["setting"] == setting].iloc[::-1]
        positions = np.arange(len(rows))
        axes.barh(positions + 0.2, rows["share_of_tp"], 0.4, color="#2ca02c", label="share of TPs")
        axes.barh(positions - 0.2, rows["share_of_fn"], 0.4, color="#ff7f0e", label="share of FNs")
        axes.set_yticks(positions, rows["finding"])
        n_tp, n_fn = rows["n_tp"].iloc[0], rows["n_fn"].iloc[0]
        axes.set_title(f"{SHORT_NAMES.get(setting, setting)} (TP {n_tp}, FN {n_fn})", fontsize=10)
        axes.set_xlabel("% of the TPs / FNs carrying the finding")
        axes.grid(axis="x", alpha=0.3)
    grid[0, 0].legend(loc="lower right", fontsize=8)
    figure.suptitle("Findings of the abnormal test images at the operating point, all folds")
    figure.tight_layout()
    save(figure, path)


def read_live_logs(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """All dvclive step logs as `setting, fold, metric, step, value` (empty when none exist)."""
    parts = []
    for tsv in sorted(Path(runs_dir).glob("*/fold*/live/plots/metrics/**/*.tsv")):
        metrics_dir = next(p for p in tsv.parents if p.name == "metrics")
        fold_dir = metrics_dir.parents[2]
        frame = pd.read_csv(tsv, sep="\t")
        value_column = tsv.stem
        if "step" not in frame.columns or value_column not in frame.columns:
            raise ValueError(f"{tsv}: expected columns step and {value_column}, got {list(frame)}")
        parts.append(
            pd.DataFrame(
                {
                    "setting": fold_dir.parent.name,
                    "fold": fold_dir.name,
                    "metric": tsv.relative_to(metrics_dir).with_suffix("").as_posix(),
                    "step": frame["step"],
                    "value": frame[value_column],
                }
            )
        )
    columns = ["setting", "fold", "metric", "step", "value"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def training_figure(logs: pd.DataFrame, path: str | os.PathLike) -> None:
    """One panel per logged metric; a line per run, coloured by setting."""
    metrics = sorted(logs["metric"].unique())
    columns = min(len(metrics), 3) or 1
    rows = max(1, -(-len(metrics) // columns))
    figure, grid = _subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    if not metrics:
        _blank(grid[0, 0], "no dvclive training logs found under reports/runs")
        grid[0, 0].set_xticks([])
        grid[0, 0].set_yticks([])
    for axes, metric in zip(grid.flat, metrics, strict=False):
        for (setting, _fold), run in logs[logs["metric"] == metric].groupby(["setting", "fold"]):
            axes.plot(run["step"], run["value"], color=SETTING_COLORS.get(setting, "black"), lw=1)
        axes.set_title(metric, fontsize=10)
        axes.set_xlabel("dvclive step (epoch - 1)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    for axes in list(grid.flat)[len(metrics) :]:
        if metrics:
            axes.set_visible(False)
    handles = [
        Line2D([], [], color=SETTING_COLORS[s], label=SHORT_NAMES[s])
        for s in SETTING_COLORS
        if s in set(logs["setting"])
    ]
    if handles:
        figure.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False)
        figure.tight_layout(rect=(0, 0, 1, 0.93))
    save(figure, path)


ROI_TITLES = {
    "iou": "IoU with the lung box",
    "lung_coverage": "share of the lung box in view",
    "apex_coverage": "share of the apices in view",
}


def roi_quality_figure(rois: pd.DataFrame, store, path: str | os.PathLike, worst: int = 4):
    """Top: each setting's distribution of the ROI measures over all test images. Bottom:
    the `worst` test images of the STN (lowest IoU; of another setting if no STN ran),
    with the window (red dashed) and the known lung box (green).

    `rois` is reports/eval/roi.csv (`roi.roi_table`), None when no lung boxes are known
    (real data): the figure then says so; `store` holds the stored images.
    """
    if rois is None:
        figure, axes = _subplots(figsize=(4, 2))
        _blank(axes, "no known lung boxes (data.lung_boxes is null): ROI quality not measured")
        axes.set_axis_off()
        save(figure, path)
        return
    settings = [s for s in SETTING_COLORS if s in set(rois["setting"])]
    figure = Figure(figsize=(3.0 * max(len(ROI_TITLES), worst), 6.4))
    top = figure.subfigures(2, 1, height_ratios=[1.0, 1.25])
    hist_axes = top[0].subplots(1, len(ROI_TITLES))
    bins = np.linspace(0, 1, 21)
    for axes, (column, title) in zip(hist_axes, ROI_TITLES.items(), strict=True):
        for setting in settings:
            values = rois.loc[rois["setting"] == setting, column]
            axes.hist(
                values,
                bins=bins,
                histtype="step",
                lw=1.8,
                color=SETTING_COLORS[setting],
                label=f"{SHORT_NAMES[setting]} (mean {values.mean():.2f})",
            )
        axes.set_title(title, fontsize=10)
        axes.legend(fontsize=7, loc="upper left")
    hist_axes[0].set_ylabel("test images")
    shown = "stn" if "stn" in settings else settings[-1]
    chosen = rois[rois["setting"] == shown].nsmallest(worst, "iou")
    image_axes = top[1].subplots(1, worst)
    for axes, row in zip(np.atleast_1d(image_axes), chosen.itertuples(), strict=False):
        image = store[row.path]
        size = image.shape[0]
        axes.imshow(image, cmap="gray", vmin=0, vmax=255)
        for (x0, y0, x1, y1), style in (
            ((row.lx0, row.ly0, row.lx1, row.ly1), {"color": "#2ca02c", "lw": 1.5}),
            ((row.wx0, row.wy0, row.wx1, row.wy1), {"color": "#d62728", "lw": 2, "ls": "--"}),
        ):
            axes.add_patch(
                Rectangle(
                    (x0 * size - 0.5, y0 * size - 0.5),
                    (x1 - x0) * size,
                    (y1 - y0) * size,
                    fill=False,
                    **style,
                )
            )
        axes.set_title(
            f"fold {row.fold}: IoU {row.iou:.2f}, apex {row.apex_coverage:.2f}", fontsize=8
        )
        axes.set_xticks([])
        axes.set_yticks([])
    top[1].suptitle(
        f"Lowest-IoU test images of the {SHORT_NAMES[shown]} setting "
        "(green: lung box, red dashed: the window the classifier saw)",
        fontsize=9,
    )
    save(figure, path)
