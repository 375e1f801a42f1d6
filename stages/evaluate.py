"""Stage evaluate: Table II metrics of every run, per fold and as mean and std over folds.

Reads `reports/runs/<setting>/fold<k>/predictions.csv` for k < split.folds (checked
against the fold roles of data/folds.csv) and writes
`reports/metrics.json` (the summary for the threshold mode eval.threshold_on),
`reports/eval/folds.csv` (every setting x fold x threshold mode) and the ROC and PR
points of every run (`reports/eval/roc.csv`, `reports/eval/pr.csv`) for the report, and
the mean curve of each setting (`reports/plots/roc.csv`, `reports/plots/pr.csv`) for
`dvc plots show/diff`.
A setting without any run folder (e.g. yolo when no detector was trained) is left out
and said so; a setting with a missing fold is an error.
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import pandas as pd

from cxrstn.io import load_params, write_csv, write_json
from cxrstn.metrics import (
    available_settings,
    check_roles,
    check_same_test_images,
    curve_points,
    fold_table,
    load_runs,
    mean_curves,
    summary,
)
from cxrstn.settings import SETTINGS

RUNS_DIR = "reports/runs"


def main() -> None:
    params = load_params()
    n_folds = int(params["split"]["folds"])
    recall = float(params["eval"]["recall"])
    threshold_on = params["eval"]["threshold_on"]

    settings = available_settings(RUNS_DIR)
    for setting in SETTINGS:
        if setting not in settings:
            print(f"evaluate: {RUNS_DIR}/{setting} does not exist: setting {setting} left out")
    runs = load_runs(RUNS_DIR, settings, n_folds)
    check_roles(runs, pd.read_csv("data/folds.csv"), n_folds)
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
    write_json("reports/metrics.json", metrics)
    for setting, values in metrics.items():
        print(
            f"evaluate: {setting}: AUC {values['auc']['mean']:.2f} ± {values['auc']['std']:.2f}, "
            f"precision {values['precision']['mean']:.2f} (threshold on {threshold_on})"
        )


if __name__ == "__main__":
    run_stage(main)
