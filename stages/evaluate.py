"""Stage evaluate: Table II metrics of every run, per fold and as mean and std over folds.

Reads `reports/runs/<setting>/fold<k>/predictions.csv` for k < split.folds (checked
against the fold roles of data/folds.csv) and writes
`reports/metrics.json` (the summary for the threshold mode eval.threshold_on),
`reports/eval/folds.csv` (every setting x fold x threshold mode), the ROC and PR
points of every run (`reports/eval/roc.csv`, `reports/eval/pr.csv`) for the report, the
mean curve of each setting (`reports/plots/roc.csv`, `reports/plots/pr.csv`) for
`dvc plots show/diff`, the paired comparisons of the settings' AUCs (DeLong's test and a
patient bootstrap, `reports/eval/comparisons.csv`, summarised under `paired` in
reports/metrics.json), and the operating thresholds that `cxrstn predict` applies
(`models/thresholds.json`).
A setting without any run folder (e.g. yolo when no detector was trained) is left out
and said so; a setting with a missing fold is an error.
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import pandas as pd

from cxrstn.io import load_params, write_csv, write_json
from cxrstn.metrics import (
    check_roles,
    check_same_test_images,
    compared_settings,
    curve_points,
    fold_table,
    load_runs,
    mean_curves,
    operating_threshold,
    summary,
)
from cxrstn.roi import phantom_lung_boxes, roi_summary, roi_table
from cxrstn.settings import SETTINGS, run_settings
from cxrstn.stats import comparison_metrics, comparison_table

RUNS_DIR = "reports/runs"


def operating_thresholds(runs: dict, folds: pd.DataFrame, recall: float, mode: str) -> dict:
    """`models/thresholds.json`: each run's threshold of mode `mode`, and each setting's
    threshold for the mean score of its fold models (`ensemble`).

    No image is unseen by all fold models, so the ensemble has no held-out scores of its
    own. Its threshold is the operating threshold of the pooled out-of-fold scores: every
    image's score from the one fold model that held it out in split `mode` (each image
    once). That is one threshold meeting the recall on all the data scored honestly,
    rather than a mean of five thresholds that no score set was ever checked against.
    The mean of fold scores is tighter than any single model's scores, so the ensemble's
    recall at it is close to, not guaranteed at, the target.
    """
    settings: dict = {}
    chosen = folds[folds["threshold_on"] == mode]
    for setting, fold in runs:
        match = chosen[(chosen["setting"] == setting) & (chosen["fold"] == fold)]
        entry = settings.setdefault(setting, {"folds": {}, "ensemble": None})
        entry["folds"][str(fold)] = float(match["threshold"].iloc[0])
    for setting, entry in settings.items():
        pooled = pd.concat(
            predictions[predictions["split"] == mode]
            for (name, _), predictions in runs.items()
            if name == setting
        )
        entry["ensemble"] = operating_threshold(pooled["label"], pooled["score"], recall)
    return {
        "recall": recall,
        "threshold_on": mode,
        "ensemble_rule": f"pooled out-of-fold {mode} scores",
        "settings": settings,
    }


def main() -> None:
    params = load_params()
    n_folds = int(params["split"]["folds"])
    recall = float(params["eval"]["recall"])
    threshold_on = params["eval"]["threshold_on"]

    settings = compared_settings(params, RUNS_DIR)
    for setting in SETTINGS:
        if setting not in run_settings(params):
            print(f"evaluate: {setting} left out: split.{setting}_fold_ids is []")
        elif setting not in settings:
            print(f"evaluate: {RUNS_DIR}/{setting} does not exist: setting {setting} left out")
    runs = load_runs(RUNS_DIR, settings, n_folds)
    folds_csv = pd.read_csv("data/folds.csv")
    check_roles(runs, folds_csv, n_folds)
    check_same_test_images(runs)
    folds = fold_table(runs, recall)
    metrics = summary(folds, threshold_on)
    roc, pr = curve_points(runs)

    write_csv("reports/eval/folds.csv", folds)
    write_csv("reports/eval/roc.csv", roc)
    write_csv("reports/eval/pr.csv", pr)
    mean_roc, mean_pr = mean_curves(roc, pr)
    write_csv("reports/plots/roc.csv", mean_roc)
    write_csv("reports/plots/pr.csv", mean_pr)
    comparisons = comparison_table(
        runs, folds_csv, int(params["eval"]["bootstrap"]), int(params["eval"]["bootstrap_seed"])
    )
    write_csv("reports/eval/comparisons.csv", comparisons)
    if params["data"]["lung_boxes"] is not None:
        # Where each setting looks, against the known lung boxes (the phantom's truth).
        crops = pd.read_csv("data/crops.csv") if "yolo" in settings else None
        lung_boxes = phantom_lung_boxes(params["data"]["lung_boxes"], folds_csv["path"])
        rois = roi_table(runs, lung_boxes, crops, int(params["resize"]["size"]))
        write_csv("reports/eval/roi.csv", rois)
        for setting, values in roi_summary(rois).items():
            metrics[setting] |= values
    write_json("reports/metrics.json", metrics | {"paired": comparison_metrics(comparisons)})
    write_json("models/thresholds.json", operating_thresholds(runs, folds, recall, threshold_on))
    for setting, values in metrics.items():
        print(
            f"evaluate: {setting}: AUC {values['auc']['mean']:.2f} ± {values['auc']['std']:.2f}, "
            f"precision {values['precision']['mean']:.2f} (threshold on {threshold_on})"
        )


if __name__ == "__main__":
    run_stage(main)
