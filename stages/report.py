"""Stage report: Table II beside the paper's, figures and one offline HTML report.

Reads the outputs of evaluate (reports/eval/), every run (reports/runs/), data/labels.csv,
data/resized/, the yolo inputs when present (data/crops.csv, data/crops/) and the counts
of earlier stages (reports/<stage>.json). Writes reports/table2.md, reports/findings.csv,
reports/report.html and single figures under reports/figures/ (a folder other stages
also write to): roc.png, pr.png, roi_examples.png, findings.png, training_curves.png.
"""

from cxrstn.runtime import configure_tools, run_stage

configure_tools()  # before the libraries below read their settings

from pathlib import Path

import pandas as pd

from cxrstn.figures import (
    curves_figure,
    findings_figure,
    read_live_logs,
    roi_figure,
    roi_quality_figure,
    training_figure,
)
from cxrstn.images import ImageStore
from cxrstn.io import atomic_path, load_params, read_json, write_csv
from cxrstn.metrics import called_abnormal, finding_analysis, load_runs, run_dir, summary
from cxrstn.provenance import device_description
from cxrstn.report import (
    STAGE_REPORTS,
    ReportInputs,
    build_page,
    read_optional_json,
    roi_examples,
    table2_markdown,
    without_crop_note,
)
from cxrstn.sources.chexpert import FINDINGS

RUNS_DIR = "reports/runs"
FIGURES = {
    "roc": "reports/figures/roc.png",
    "pr": "reports/figures/pr.png",
    "roi": "reports/figures/roi_examples.png",
    "findings": "reports/figures/findings.png",
    "training": "reports/figures/training_curves.png",
    "roi_quality": "reports/figures/roi_quality.png",
}


def main() -> None:
    params = load_params()
    n_folds = int(params["split"]["folds"])
    recall = float(params["eval"]["recall"])
    threshold_on = params["eval"]["threshold_on"]

    folds = pd.read_csv("reports/eval/folds.csv")
    settings = list(dict.fromkeys(folds["setting"]))
    runs = load_runs(RUNS_DIR, settings, n_folds)
    run_info = {key: read_json(run_dir(RUNS_DIR, *key) / "metrics.json") for key in runs}
    labels = pd.read_csv("data/labels.csv")
    missing = [f for f in FINDINGS if f not in labels.columns]
    if missing:
        raise ValueError(f"data/labels.csv: missing finding columns {missing}")
    stage_reports = {name: read_optional_json(f"reports/{name}.json") for name in STAGE_REPORTS}

    with atomic_path("reports/table2.md") as tmp:
        made_on = f"Made with {device_description(params['train']['device'])}."
        notes = tuple(note for note in [without_crop_note(run_info), made_on] if note)
        tmp.write_text(table2_markdown(folds, threshold_on, recall, n_folds, notes))

    metrics = summary(folds, threshold_on)
    curves_figure(pd.read_csv("reports/eval/roc.csv"), metrics, "roc", recall, FIGURES["roc"])
    curves_figure(pd.read_csv("reports/eval/pr.csv"), metrics, "pr", recall, FIGURES["pr"])

    analysis = finding_analysis(called_abnormal(runs, folds, threshold_on), labels, FINDINGS)
    write_csv("reports/findings.csv", analysis)
    findings_figure(analysis, FIGURES["findings"])

    crops_table = pd.read_csv("data/crops.csv") if Path("data/crops.csv").is_file() else None
    crops_store = ImageStore("data/crops") if Path("data/crops/index.csv").is_file() else None
    rois = pd.read_csv("reports/eval/roi.csv") if Path("reports/eval/roi.csv").is_file() else None
    examples, roi_how = roi_examples(
        runs,
        ImageStore("data/resized"),
        crops_table,
        crops_store,
        params["report"]["roi_examples"],
        rois,
    )
    roi_figure(examples, FIGURES["roi"])
    roi_quality_figure(rois, ImageStore("data/resized"), FIGURES["roi_quality"])
    training_figure(read_live_logs(RUNS_DIR), FIGURES["training"])

    page = build_page(
        ReportInputs(
            params,
            folds,
            labels,
            run_info,
            analysis,
            stage_reports,
            FIGURES,
            roi_how,
            comparisons=pd.read_csv("reports/eval/comparisons.csv"),
            rois=rois,
            shortcut=read_optional_json("reports/shortcut.json"),
        )
    )
    with atomic_path("reports/report.html") as tmp:
        tmp.write_text(page)
    print(f"report: reports/report.html ({len(page) / 1e6:.1f} MB), reports/table2.md")


if __name__ == "__main__":
    run_stage(main)
