"""Classifier metrics of the paper's Table II, per run and summarised over folds.

Conventions (kept identical in `reports/metrics.json`, `reports/eval/folds.csv` and
`reports/table2.md`): every metric is a percentage, as in the paper's Table II (AUC 83.21,
not 0.8321). The operating point is the highest score threshold whose recall is at least
the target; an image is called abnormal when its score is at or above the threshold. The
four rates are shares of *all* test images, so they sum to 100. The spread over folds is
the population standard deviation (numpy's default, ddof=0), which is what a paper
computing `np.std` over five folds reports.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from cxrstn.folds import fold_roles
from cxrstn.settings import run_settings

THRESHOLD_MODES = ("test", "val")
GRID = np.linspace(0.0, 100.0, 201)
"""False positive rates (ROC) and recalls (PR) in percent at which mean curves are taken."""
SUMMARY_METRICS = ("auc", "pr_auc", "precision", "tp_rate", "fp_rate", "tn_rate", "fn_rate")
PREDICTION_COLUMNS = ("path", "label", "score", "split")


def _checked(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal 1-d")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (abnormal)")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if labels.min(initial=1) == labels.max(initial=0):
        raise ValueError("metrics need both normal and abnormal images")
    return labels.astype(int), scores


def auc(labels, scores) -> float:
    """ROC AUC in percent."""
    labels, scores = _checked(labels, scores)
    return 100.0 * float(roc_auc_score(labels, scores))


def pr_auc(labels, scores) -> float:
    """PR-AUC as average precision (sklearn's step-wise sum, no interpolation), in percent."""
    labels, scores = _checked(labels, scores)
    return 100.0 * float(average_precision_score(labels, scores))


def operating_threshold(labels, scores, recall: float = 0.95) -> float:
    """The highest threshold t such that calling every score >= t abnormal reaches `recall`.

    It is the k-th highest score among the abnormal images, k the smallest count with
    k / positives >= recall (compared as that division: 55/100 meets 0.55, whereas
    ceil(0.55 * 100) would ask for 56).
    Tied scores are all called abnormal, so the achieved recall may exceed k / positives.
    """
    if not 0 < recall <= 1:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    labels, scores = _checked(labels, scores)
    positive_scores = np.sort(scores[labels == 1])[::-1]
    counts = np.arange(1, len(positive_scores) + 1)
    needed = int(np.argmax(counts / len(positive_scores) >= recall))
    return float(positive_scores[needed])


def confusion_rates(labels, scores, threshold: float) -> dict[str, float]:
    """Counts, shares of all images (percent, summing to 100), precision and recall at `threshold`.

    Precision is NaN when nothing is called abnormal (possible only with a threshold
    chosen on another split).
    """
    labels, scores = _checked(labels, scores)
    called = scores >= threshold
    tp = int(np.sum(called & (labels == 1)))
    fp = int(np.sum(called & (labels == 0)))
    tn = int(np.sum(~called & (labels == 0)))
    fn = int(np.sum(~called & (labels == 1)))
    total = len(labels)
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": 100.0 * tp / (tp + fp) if tp + fp else math.nan,
        "recall": 100.0 * tp / (tp + fn),
        "tp_rate": 100.0 * tp / total,
        "fp_rate": 100.0 * fp / total,
        "tn_rate": 100.0 * tn / total,
        "fn_rate": 100.0 * fn / total,
    }


def summarize(per_fold) -> dict[str, float]:
    """Mean and population standard deviation (ddof=0, numpy's default) over folds."""
    values = np.asarray(per_fold, dtype=float)
    if values.size == 0:
        raise ValueError("summarize needs at least one fold")
    return {"mean": float(values.mean()), "std": float(values.std())}


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A run's predictions.csv, checked: columns, 0/1 labels, finite scores, val and test rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions of this run are missing")
    frame = pd.read_csv(path)
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    if not frame["label"].isin((0, 1)).all():
        raise ValueError(f"{path}: label must be 0 or 1")
    if not np.isfinite(frame["score"].to_numpy(dtype=float)).all():
        raise ValueError(f"{path}: score has missing or infinite values")
    for split in ("val", "test"):
        rows = frame[frame["split"] == split]
        if rows["label"].nunique() < 2:
            raise ValueError(f"{path}: split {split!r} needs both normal and abnormal images")
    unknown = set(frame["split"]) - {"val", "test"}
    if unknown:
        raise ValueError(f"{path}: unknown split values {sorted(unknown)}")
    if frame["path"].duplicated().any():
        raise ValueError(
            f"{path}: duplicated paths, e.g. {frame['path'][frame['path'].duplicated()].iloc[0]}"
        )
    return frame


def run_metrics(predictions: pd.DataFrame, recall: float) -> list[dict]:
    """One row per threshold mode: the threshold, where it was chosen and the test metrics."""
    test = predictions[predictions["split"] == "test"]
    shared = {
        "n_test": len(test),
        "prevalence": 100.0 * float(test["label"].mean()),
        "auc": auc(test["label"], test["score"]),
        "pr_auc": pr_auc(test["label"], test["score"]),
    }
    rows = []
    for mode in THRESHOLD_MODES:
        chosen_on = predictions[predictions["split"] == mode]
        threshold = operating_threshold(chosen_on["label"], chosen_on["score"], recall)
        rates = confusion_rates(test["label"], test["score"], threshold)
        rows.append({"threshold_on": mode, "threshold": threshold, **shared, **rates})
    return rows


def run_dir(runs_dir: str | Path, setting: str, fold: int) -> Path:
    return Path(runs_dir) / setting / f"fold{fold}"


def compared_settings(params: dict, runs_dir: str | Path) -> list[str]:
    """The settings the params train (`run_settings`) that have a run folder, in the paper's
    order; at least one is required. A missing folder leaves its setting out (stages run by
    hand, without the detector); the folders of a setting the params do not train, which
    an earlier experiment leaves on disk, are never read."""
    present = [s for s in run_settings(params) if (Path(runs_dir) / s).is_dir()]
    if not present:
        raise FileNotFoundError(f"{runs_dir}: no runs of any setting {run_settings(params)}")
    return present


def load_runs(runs_dir: str | Path, settings: list[str], n_folds: int) -> dict:
    """Every run's checked predictions, keyed by (setting, fold); a missing fold is an error."""
    runs = {}
    for setting in settings:
        for fold in range(n_folds):
            path = run_dir(runs_dir, setting, fold) / "predictions.csv"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: run {setting} fold {fold} is missing ({n_folds} folds expected)"
                )
            runs[setting, fold] = read_predictions(path)
    return runs


def check_roles(runs: dict, folds: pd.DataFrame, n_folds: int) -> None:
    """Every run must test on its own fold and validate on the next (`folds.fold_roles`).

    Catches a run trained on another split or stale predictions from an older fold
    assignment.
    """
    fold_of = dict(zip(folds["path"], folds["fold"], strict=True))
    for (setting, fold), predictions in runs.items():
        roles = fold_roles(fold, n_folds)
        for split in ("test", "val"):
            paths = predictions.loc[predictions["split"] == split, "path"]
            wrong = [p for p in paths if fold_of.get(p) != roles[split]]
            if wrong:
                raise ValueError(
                    f"run {setting} fold {fold}: {len(wrong)} {split} images of its "
                    f"predictions.csv are not in fold {roles[split]} of data/folds.csv, "
                    f"e.g. {wrong[0]} (fold {fold_of.get(wrong[0], 'none')})"
                )


def check_same_test_images(runs: dict) -> None:
    """All settings must be scored on the same test images of each fold, as the paper's
    Table II compares them (same prevalence in every column)."""
    by_fold: dict[int, dict[str, set]] = {}
    for (setting, fold), predictions in runs.items():
        test = set(predictions.loc[predictions["split"] == "test", "path"])
        by_fold.setdefault(fold, {})[setting] = test
    for fold, tests in by_fold.items():
        (first, reference), *others = tests.items()
        for setting, paths in others:
            if paths != reference:
                only = sorted(paths ^ reference)
                raise ValueError(
                    f"fold {fold}: the {setting} run scored other test images than the {first} "
                    f"run ({len(only)} differ, e.g. {only[0]}); re-run both"
                )


def fold_table(runs: dict, recall: float) -> pd.DataFrame:
    """`reports/eval/folds.csv`: one row per setting x fold x threshold mode."""
    rows = []
    for (setting, fold), predictions in runs.items():
        for row in run_metrics(predictions, recall):
            rows.append({"setting": setting, "fold": fold, **row})
    return pd.DataFrame(rows)


def summary(folds: pd.DataFrame, threshold_on: str) -> dict:
    """`reports/metrics.json`: per setting, mean and std over folds of the Table II metrics.

    Rounded to 4 decimals (of a percent), so that the file reads cleanly in `dvc metrics show`.
    """
    if threshold_on not in THRESHOLD_MODES:
        raise ValueError(
            f"eval.threshold_on must be one of {THRESHOLD_MODES}, got {threshold_on!r}"
        )
    chosen = folds[folds["threshold_on"] == threshold_on]
    return {
        setting: {
            name: {key: round(value, 4) for key, value in summarize(rows[name]).items()}
            for name in SUMMARY_METRICS
        }
        for setting, rows in chosen.groupby("setting", sort=False)
    }


def curve_points(runs: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC (`fpr, tpr`) and PR (`recall, precision`) points of each run's test split, in percent."""
    roc_parts, pr_parts = [], []
    for (setting, fold), predictions in runs.items():
        test = predictions[predictions["split"] == "test"]
        fpr, tpr, roc_thresholds = roc_curve(test["label"], test["score"])
        roc_parts.append(
            pd.DataFrame(
                {
                    "setting": setting,
                    "fold": fold,
                    "fpr": 100 * fpr,
                    "tpr": 100 * tpr,
                    "threshold": roc_thresholds,
                }
            )
        )
        # The last PR point (recall 0, precision 1) has no threshold; it is left out.
        precision, recall, pr_thresholds = precision_recall_curve(test["label"], test["score"])
        pr_parts.append(
            pd.DataFrame(
                {
                    "setting": setting,
                    "fold": fold,
                    "recall": 100 * recall[:-1],
                    "precision": 100 * precision[:-1],
                    "threshold": pr_thresholds,
                }
            )
        )
    return pd.concat(roc_parts, ignore_index=True), pd.concat(pr_parts, ignore_index=True)


def mean_roc(roc: pd.DataFrame) -> np.ndarray:
    """Vertical average: mean TPR over runs at each false positive rate of `GRID` (percent)."""
    curves = []
    for _, run in roc.groupby("fold"):
        run = run.sort_values("threshold", ascending=False, kind="stable")  # fpr rising
        curves.append(np.interp(GRID, run["fpr"], run["tpr"]))
    return np.mean(curves, axis=0)


def precision_at_recall(run: pd.DataFrame, recall: np.ndarray) -> np.ndarray:
    """Precision at the highest threshold whose recall reaches each `recall` (percent).

    The same rule as the operating point, so the mean curve at 95 is the mean of the
    runs' operating precisions (with the threshold chosen on the test fold).
    """
    run = run.sort_values("threshold")
    recalls = run["recall"].to_numpy()
    precisions = run["precision"].to_numpy()
    # recall falls as the threshold rises: the last index with recall >= r is the highest threshold
    reached = recalls[None, :] >= recall[:, None] - 1e-9
    last = reached.shape[1] - 1 - np.argmax(reached[:, ::-1], axis=1)
    return np.where(reached.any(axis=1), precisions[last], np.nan)


def mean_pr(pr: pd.DataFrame) -> np.ndarray:
    """Mean precision over runs at each recall of `GRID` (percent), by `precision_at_recall`."""
    curves = [precision_at_recall(run, GRID) for _, run in pr.groupby("fold")]
    return np.mean(curves, axis=0)


def mean_curves(roc: pd.DataFrame, pr: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean ROC (`fpr` and one TPR column per setting) and mean PR (`recall` and one
    precision column per setting) on `GRID`: one line per setting, for `dvc plots`."""
    settings = list(dict.fromkeys(roc["setting"]))
    mean_roc_table = pd.DataFrame({"fpr": GRID})
    mean_pr_table = pd.DataFrame({"recall": GRID})
    for setting in settings:
        mean_roc_table[setting] = mean_roc(roc[roc["setting"] == setting])
        mean_pr_table[setting] = mean_pr(pr[pr["setting"] == setting])
    return mean_roc_table, mean_pr_table


def called_abnormal(runs: dict, folds: pd.DataFrame, threshold_on: str) -> pd.DataFrame:
    """Every test image of every run with `setting, fold, path, label, score, called`.

    `called` uses the fold's operating threshold of mode `threshold_on` from `fold_table`.
    """
    parts = []
    for (setting, fold), predictions in runs.items():
        match = folds[
            (folds["setting"] == setting)
            & (folds["fold"] == fold)
            & (folds["threshold_on"] == threshold_on)
        ]
        if len(match) != 1:
            raise ValueError(
                f"fold table has no {threshold_on} threshold for {setting} fold {fold}"
            )
        test = predictions.loc[predictions["split"] == "test", ["path", "label", "score"]].copy()
        test["called"] = test["score"] >= float(match["threshold"].iloc[0])
        parts.append(test.assign(setting=setting, fold=fold))
    return pd.concat(parts, ignore_index=True)


def finding_analysis(
    called: pd.DataFrame, labels: pd.DataFrame, findings: list[str]
) -> pd.DataFrame:
    """Per setting and finding, how the abnormal test images carrying it fared, pooled over folds.

    `share_of_tp` / `share_of_fn`: percent of the true positives / false negatives that
    carry the finding (an image may carry several, so a column sums to over 100).
    `recall`: percent of the images carrying the finding that were called abnormal.
    `n_tp`, `n_fn`: all true positives and false negatives of the setting.
    """
    missing = sorted(set(called["path"]) - set(labels["path"]))
    if missing:
        raise ValueError(f"{len(missing)} test images are not in labels.csv, e.g. {missing[0]}")
    abnormal = called[called["label"] == 1].merge(labels[["path", *findings]], on="path")
    rows = []
    for setting, group in abnormal.groupby("setting", sort=False):
        tp, fn = group[group["called"]], group[~group["called"]]
        for finding in findings:
            carrying = group[group[finding] == 1]
            rows.append(
                {
                    "setting": setting,
                    "finding": finding,
                    "n_images": len(carrying),
                    "n_tp": len(tp),
                    "n_fn": len(fn),
                    "tp": int((tp[finding] == 1).sum()),
                    "fn": int((fn[finding] == 1).sum()),
                    "share_of_tp": 100.0 * (tp[finding] == 1).mean() if len(tp) else math.nan,
                    "share_of_fn": 100.0 * (fn[finding] == 1).mean() if len(fn) else math.nan,
                    "recall": 100.0 * carrying["called"].mean() if len(carrying) else math.nan,
                }
            )
    return pd.DataFrame(rows)
