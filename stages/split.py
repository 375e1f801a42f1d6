"""Stage split: data/labels.csv -> patient-grouped, stratified folds in data/folds.csv."""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

import pandas as pd

from cxrstn.folds import assign_folds, check_fold_ids
from cxrstn.images import ImageStore
from cxrstn.io import load_params, write_csv, write_json
from cxrstn.sources.chexpert import FINDINGS


def main() -> None:
    params = load_params()
    check_fold_ids(params["split"])
    labels = pd.read_csv("data/labels.csv")
    stored = set(ImageStore("data/resized").paths)
    unreadable = ~labels["path"].isin(stored)
    labels = labels[~unreadable]
    folds = assign_folds(labels, params["split"]["folds"], params["split"]["seed"])
    write_csv("data/folds.csv", folds)

    merged = labels.assign(fold=folds["fold"].to_numpy())
    per_fold = {
        int(k): {
            "images": len(group),
            "patients": int(group["patient"].nunique()),
            "normal": int((group["label"] == 0).sum()),
            "abnormal": int((group["label"] == 1).sum()),
            "abnormal_share": round(float(group["label"].mean()), 4),
            "findings": {f: int(group[f].sum()) for f in FINDINGS},
        }
        for k, group in merged.groupby("fold")
    }
    write_json(
        "reports/split.json",
        {"folds": per_fold, "left_out_unreadable": int(unreadable.sum())},
    )
    print("split: " + ", ".join(f"fold {k}: {v['images']} images" for k, v in per_fold.items()))


if __name__ == "__main__":
    run_stage(main)
