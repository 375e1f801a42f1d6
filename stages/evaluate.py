"""Stage evaluate: Table II metrics of every run, per fold and as mean and std over folds.

Reads `reports/runs/<setting>/fold<k>/predictions.csv` for k < split.folds (checked
against the fold roles of data/folds.csv) and writes
`reports/metrics.json` (the summary for the threshold mode eval.threshold_on),
`reports/eval/folds.csv` (every setting x fold x threshold mode) and the ROC and PR
points of every run (`reports/eval/roc.csv`, `reports/eval/pr.csv`) for the report.
A setting without any run folder (e.g. yolo when no detector was trained) is left out
and said so; a setting with a missing fold is an error.
"""

import pandas as pd

from cxrstn.io import load_params, run_stage, write_csv, write_json
from cxrstn.metrics import (
    SETTINGS,
    available_settings,
    check_roles,
    curve_points,
    fold_table,
    load_runs,
    summary,
)

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
    folds = fold_table(runs, recall)
    metrics = summary(folds, threshold_on)
    roc, pr = curve_points(runs)

    write_csv("reports/eval/folds.csv", folds)
    write_csv("reports/eval/roc.csv", roc)
    write_csv("reports/eval/pr.csv", pr)
    write_json("reports/metrics.json", metrics)
    for setting, values in metrics.items():
        print(
            f"evaluate: {setting}: AUC {values['auc']['mean']:.2f} ± {values['auc']['std']:.2f}, "
            f"precision {values['precision']['mean']:.2f} (threshold on {threshold_on})"
        )


if __name__ == "__main__":
    run_stage(main)
