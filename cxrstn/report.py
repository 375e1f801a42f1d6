"""Table II next to the paper's, findings, compute cost, exclusions and provenance.

Every table is built once as rows of strings and rendered twice: as Markdown
(`reports/table2.md`) and as HTML inside the one self-contained `reports/report.html`
(inline CSS, figures embedded as base64 PNG, no reference to anything on the web).
Inputs of the yolo setting (detector, crops) may be absent; the report then says so.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cxrstn.cost import cost_rows
from cxrstn.metrics import SUMMARY_METRICS, THRESHOLD_MODES, summarize
from cxrstn.page import html_table, image_tag, md_table, paragraph, render_html
from cxrstn.paper import PAPER_PREVALENCE, PAPER_TABLE2, TABLE_I, TABLE_I_ABNORMAL, TABLE_I_NORMAL
from cxrstn.provenance import (
    device_description,
    git_commit,
    library_versions,
    params_differences,
    shown_pairs,
)
from cxrstn.roi import ROI_METRICS, ST_PARAMS, roi_summary
from cxrstn.settings import SETTINGS, SHORT_NAMES, ST_SETTINGS, TITLES

METRIC_TITLES = {
    "auc": "AUC",
    "pr_auc": "PR-AUC",
    "precision": "Precision",
    "tp_rate": "TP rate",
    "fp_rate": "FP rate",
    "tn_rate": "TN rate",
    "fn_rate": "FN rate",
    "recall": "Recall on the test fold",
    "prevalence": "Prevalence (precision of calling every image abnormal)",
    "threshold": "Operating threshold (score)",
}


EXTRA_ROWS = ("recall", "prevalence", "threshold")

PAPER_NOTE = (
    "Paper values are transcribed from Table II of the text we have, which is garbled: "
    "the ± sign comes out as '4', '+', '1' or '40' (e.g. '83.2140.69' is read as "
    "83.21 ± 0.69). The reading is confirmed by the paper's own text (AUC +0.77 for YOLO "
    "and +1.01 for the STN over the baseline; STN FP rate -0.97 and TN rate +0.96), by "
    "every column's four rates summing to 100.00 and by precision = TP / (TP + FP). One "
    "value stays doubtful: the baseline TN-rate std reads 0.96, whereas its FP-rate std is "
    "0.50 (in stratified folds FP + TN is nearly constant, so both stds should be close, as "
    "they are for YOLO and STN); it is shown as printed. The paper's prevalence is Table I's "
    "22,146 abnormal of 27,654 images; its recall is not published (TP/(TP+FN) of its "
    "rates is about 94.98%)."
)


PAPER_FINDINGS = {
    "tp": "Edema, Pneumonia, Cardiomegaly / Lung Opacity (tied)",
    "fn": "Fracture, Enlarged Cardiomediastinum, Lung Lesion",
}


NOT_RUN = {"stn_eq": " (split.stn_eq_fold_ids is []: params.attention.yaml runs it)"}
"""Why a setting outside the paper is missing from a run that leaves it out."""


def mean_std(values) -> str:
    stats = summarize(values)
    if math.isnan(stats["mean"]):
        return "n/a"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def table2_rows(folds: pd.DataFrame, threshold_on: str, with_paper: bool) -> tuple[list, list]:
    """Columns and rows of Table II for one threshold mode: ours per setting, and the
    paper's beside each setting the paper has (`with_paper`)."""
    chosen = folds[folds["threshold_on"] == threshold_on]
    # the paper's settings always (a missing one says "not run"), others when they ran
    shown = [s for s in SETTINGS if s in PAPER_TABLE2 or s in set(chosen["setting"])]
    columns = ["Metric (%)"]
    for setting in shown:
        columns.append(TITLES[setting])
        if with_paper and setting in PAPER_TABLE2:
            columns.append("paper")
    rows = []
    for metric in (*SUMMARY_METRICS, *EXTRA_ROWS):
        row = [METRIC_TITLES[metric]]
        for setting in shown:
            values = chosen.loc[chosen["setting"] == setting, metric]
            row.append(mean_std(values) if len(values) else "not run")
            if with_paper and setting in PAPER_TABLE2:
                row.append(_paper_value(setting, metric))
        rows.append(row)
    return columns, rows


def std_rows(folds: pd.DataFrame, threshold_on: str) -> tuple[list, list]:
    """Both std conventions per setting and metric: population (ddof=0, Table II) and sample."""
    chosen = folds[folds["threshold_on"] == threshold_on]
    settings = [s for s in SETTINGS if s in set(chosen["setting"])]
    columns = ["Metric (%)"] + [f"{TITLES[s]}: ddof=0 / ddof=1" for s in settings]
    rows = []
    for metric in SUMMARY_METRICS:
        row = [METRIC_TITLES[metric]]
        for setting in settings:
            values = chosen.loc[chosen["setting"] == setting, metric].to_numpy(dtype=float)
            sample = values.std(ddof=1) if len(values) > 1 else math.nan
            row.append(f"{values.std(ddof=0):.2f} / {sample:.2f}")
        rows.append(row)
    return columns, rows


def table1_rows(labels_report: dict) -> tuple[list, list]:
    """Our label counts (reports/labels.json) beside the paper's Table I, with shares."""
    ours_total = labels_report["normal"] + labels_report["abnormal"]
    paper_total = TABLE_I_NORMAL + TABLE_I_ABNORMAL
    columns = ["Label", "images", "% of images", "paper: images", "paper: % of images"]
    entries = [
        *((name, labels_report["findings"].get(name, 0), count) for name, count in TABLE_I.items()),
        ("Abnormal (any finding, binary label 1)", labels_report["abnormal"], TABLE_I_ABNORMAL),
        ("No Finding (normal, binary label 0)", labels_report["normal"], TABLE_I_NORMAL),
    ]
    rows = [
        [
            name,
            f"{ours:,}",
            f"{100 * ours / ours_total:.2f}",
            f"{paper:,}",
            f"{100 * paper / paper_total:.2f}",
        ]
        for name, ours, paper in entries
    ]
    return columns, rows


def _paper_value(setting: str, metric: str) -> str:
    if metric in PAPER_TABLE2[setting]:
        mean, std = PAPER_TABLE2[setting][metric]
        return f"{mean:.2f} ± {std:.2f}"
    if metric == "prevalence":
        return f"{PAPER_PREVALENCE:.2f}"
    return "—"


def fold_rows(folds: pd.DataFrame) -> tuple[list, list]:
    """Every run's numbers (one row per setting x fold x threshold mode) for the appendix."""
    names = [
        "setting",
        "fold",
        "threshold_on",
        "n_test",
        "threshold",
        "auc",
        "pr_auc",
        "precision",
        "recall",
        "tp_rate",
        "fp_rate",
        "tn_rate",
        "fn_rate",
    ]
    rows = []
    for record in folds[names].itertuples(index=False):
        rows.append(
            [
                f"{value:.4f}" if name == "threshold" else _number(value)
                for name, value in zip(names, record, strict=True)
            ]
        )
    return names, rows


def _number(value) -> str:
    if isinstance(value, float | np.floating):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def table2_intro(threshold_on: str, recall: float, n_folds: int) -> str:
    where = {
        "test": "on the test fold itself, as the paper's Table II (its tiny TP-rate std "
        "says the recall was met on every test fold)",
        "val": "on the validation fold and applied to the test fold, as in deployment; the "
        "paper's values beside were most likely obtained with the threshold chosen on the "
        "test fold (its TP-rate std is tiny), as our second table is",
    }[threshold_on]
    return (
        f"Mean ± standard deviation over {n_folds} test folds, all values in percent. "
        f"Operating point: the highest score threshold whose recall is at least "
        f"{100 * recall:g}%, chosen {where} (`eval.threshold_on: {threshold_on}`). "
        "TP, FP, TN and FN rates are shares of all test images (they sum to 100). "
        "The std is the population std over folds (ddof=0, numpy's default, presumably "
        "what the paper used); the sample std (ddof=1) is listed below Table II. PR-AUC is "
        "the average precision (scikit-learn's average_precision_score: precision summed "
        "over recall steps), not a trapezoidal area under the PR curve."
    )


def without_crop_note(run_info: dict) -> str | None:
    """How many test images of each fold the yolo setting scored whole (no confident crop)."""
    folds = sorted(fold for setting, fold in run_info if setting == "yolo")
    if not folds:
        return None
    counts = [
        f"fold {fold}: {run_info['yolo', fold].get('n_test_without_crop', 'n/a')} of "
        f"{run_info['yolo', fold].get('n_test', 'n/a')}"
        for fold in folds
    ]
    return (
        "All settings are scored on the same test images. Test images without a confident "
        "thorax box (below crop.conf) are classified whole by the YOLO setting: "
        + "; ".join(counts)
        + "."
    )


def table2_markdown(
    folds: pd.DataFrame,
    threshold_on: str,
    recall: float,
    n_folds: int,
    notes: tuple[str, ...] = (),
) -> str:
    """`reports/table2.md`: the chosen threshold mode with the paper beside, then the other."""
    other = next(mode for mode in THRESHOLD_MODES if mode != threshold_on)
    missing = [TITLES[s] + NOT_RUN.get(s, "") for s in SETTINGS if s not in set(folds["setting"])]
    parts = [
        f"# Table II: mean and std over {n_folds} cross-validation folds",
        "",
        table2_intro(threshold_on, recall, n_folds),
        "",
        md_table(*table2_rows(folds, threshold_on, with_paper=True)),
        "",
        f"## Threshold chosen on the {other} fold instead (`eval.threshold_on: {other}`)",
        "",
        "AUC and PR-AUC do not depend on the threshold and are the same as above.",
        "",
        md_table(*table2_rows(folds, other, with_paper=False)),
        "",
        "## Notes",
        "",
        f"- {PAPER_NOTE}",
    ]
    parts += [f"- {note}" for note in notes]
    if missing:
        parts.append(f"- Not run: {'; '.join(missing)}.")
    return "\n".join(parts) + "\n"


def finding_rows(analysis: pd.DataFrame) -> tuple[list, list]:
    """Per finding: images carrying it and, per setting, recall and shares of TPs / FNs."""
    settings = list(dict.fromkeys(analysis["setting"]))
    columns = ["Finding", f"abnormal test images with it ({settings[0]})"]
    for setting in settings:
        columns += [f"{setting}: recall %", f"{setting}: % of TPs", f"{setting}: % of FNs"]
    rows = []
    first = analysis[analysis["setting"] == settings[0]]
    for finding, n_images in zip(first["finding"], first["n_images"], strict=True):
        row = [finding, str(n_images)]
        for setting in settings:
            match = analysis[(analysis["setting"] == setting) & (analysis["finding"] == finding)]
            record = match.iloc[0]
            row += [_number(record[c]) for c in ("recall", "share_of_tp", "share_of_fn")]
        rows.append(row)
    return columns, rows


def top_three_rows(analysis: pd.DataFrame) -> tuple[list, list]:
    """The paper's top-three analysis under two readings: shares of TPs/FNs, and recall."""
    columns = [
        "Setting",
        "largest share of TPs",
        "largest share of FNs",
        "highest recall",
        "lowest recall (most often missed)",
    ]
    rows = []
    for setting, group in analysis.groupby("setting", sort=False):
        group = group[group["n_images"] > 0]
        rows.append(
            [
                TITLES.get(setting, setting),
                _top(group, "share_of_tp", ascending=False),
                _top(group, "share_of_fn", ascending=False),
                _top(group, "recall", ascending=False),
                _top(group, "recall", ascending=True),
            ]
        )
    rows.append(
        [
            "Paper (its wording: contribute most to TP / FN rate)",
            PAPER_FINDINGS["tp"],
            PAPER_FINDINGS["fn"],
            "",
            "",
        ]
    )
    return columns, rows


def _top(group: pd.DataFrame, column: str, ascending: bool) -> str:
    ranked = group.dropna(subset=[column]).sort_values(column, ascending=ascending, kind="stable")
    return ", ".join(
        f"{r.finding} ({getattr(r, column):.0f}%)" for r in ranked.head(3).itertuples()
    )


def read_optional_json(path: str | os.PathLike) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def run_rows(run_info: dict) -> tuple[list, list]:
    names = ["n_train", "n_val", "n_test", "n_excluded", "epochs", "train_images"]
    names += ["best_epoch", "val_auc", "test_auc"]  # epochs, train_images: the run's budget
    rows = [
        [setting, str(fold), *(_number(info.get(name, "—")) for name in names)]
        for (setting, fold), info in run_info.items()
    ]
    return ["setting", "fold", *names], rows


def roi_examples(
    runs: dict,
    resized,
    crops_table: pd.DataFrame | None,
    crops_store,
    n_examples: int,
    rois: pd.DataFrame | None = None,
) -> tuple[list[dict], str]:
    """Test images of fold 0 for the ROI figure (the paper's Fig. 4) and a sentence saying
    how they were chosen.

    With known lung boxes (`rois`, reports/eval/roi.csv) and an STN run: the windows of the
    first STN setting (`ST_SETTINGS`: the paper's) of best, median and worst IoU with the
    lung box, a third of the examples each, each drawn with its lung box. Otherwise half
    normal, half abnormal, evenly spaced in path order (deterministic, no seed). Each
    example carries the window of every STN setting that ran on fold 0 (`windows`).
    """
    windows = {}  # every STN setting's window per test image of fold 0
    for st in (s for s in ST_SETTINGS if (s, 0) in runs):
        missing = [c for c in ST_PARAMS if c not in runs[st, 0].columns]
        if missing:
            raise ValueError(f"reports/runs/{st}/fold0/predictions.csv: missing columns {missing}")
        windows[st] = runs[st, 0].set_index("path")[list(ST_PARAMS)]
    setting = next(iter(windows), next(iter(runs))[0])
    test = runs[setting, 0]
    test = test[(test["split"] == "test") & test["path"].isin(resized.paths)].sort_values("path")
    lungs = None
    if rois is not None and setting in windows:
        lungs = rois[(rois["setting"] == setting) & (rois["fold"] == 0)].set_index("path")
        test = test[test["path"].isin(lungs.index)]
        lungs = lungs if len(test) else None
    if lungs is not None:  # best, median and worst windows, a third of the examples each
        ranked = test.assign(iou=lungs.loc[test["path"], "iou"].to_numpy())
        ranked = ranked.sort_values(["iou", "path"], ascending=[False, True], kind="stable")
        n, third = len(ranked), max(1, n_examples // 3)
        middle = max(0, n // 2 - third // 2)
        picks = [*range(third), *range(middle, middle + third)]
        picks += range(n - (n_examples - 2 * third), n)
        chosen = ranked.iloc[list(dict.fromkeys(i for i in picks if 0 <= i < n))]
    else:
        chosen = []
        for label, count in ((0, n_examples // 2), (1, n_examples - n_examples // 2)):
            group = test[test["label"] == label]
            if count and len(group):
                picks = np.unique(np.linspace(0, len(group) - 1, min(count, len(group))).round())
                chosen.append(group.iloc[picks.astype(int)])
        chosen = pd.concat(chosen) if chosen else test.iloc[:0]
    boxes = crops_table.set_index("path") if crops_table is not None else None

    examples = []
    for row in chosen.itertuples():
        example = {
            "title": f"{_short_path(row.path)}\n{'abnormal' if row.label else 'normal'}, "
            f"{setting} score {row.score:.2f}",
            "image": resized[row.path],
        }
        if lungs is not None:
            size = resized.size
            example["lung_box"] = tuple(lungs.loc[row.path, ["lx0", "ly0", "lx1", "ly1"]] * size)
            example["title"] += f", window IoU {lungs.loc[row.path, 'iou']:.2f}"
        if boxes is None:
            example["crop_note"] = "no YOLO crops (detector not run)"
        elif row.path not in boxes.index:
            example["crop_note"] = "image missing from data/crops.csv"
        else:
            box = boxes.loc[row.path]
            if not pd.isna(box["x0"]):
                example["box"] = (box["x0"], box["y0"], box["x1"], box["y1"])
            example["title"] += f", YOLO conf {box['conf']:.2f}"
            stored = crops_store is not None and row.path in crops_store
            example["crop"] = crops_store[row.path] if stored else None
            example["crop_note"] = f"no crop: status {box['status']} (conf {box['conf']:.2f})"
        example["windows"] = {
            st: tuple(float(v) for v in frame.loc[row.path])
            for st, frame in windows.items()
            if row.path in frame.index
        }
        examples.append(example)
    how = (
        f"{len(examples)} test images of fold 0 ({setting} run), half normal and half "
        "abnormal, evenly spaced in path order."
    )
    if lungs is not None:
        how = (
            f"{len(examples)} test images of fold 0: the {SHORT_NAMES[setting]} windows of "
            "best, median and worst IoU with the image's lung box (green), a third each."
        )
    return examples, how


def _short_path(path: str) -> str:
    """The last three path parts (patient/study/view for CheXpert)."""
    return "/".join(Path(path).parts[-3:])


STAGE_REPORTS = ("labels", "resize", "split", "thorax_boxes", "detector", "crop")
"""The `reports/<name>.json` of earlier stages whose counts and exclusions the report shows."""


@dataclass
class ReportInputs:
    """Everything the report shows, read once by the report stage."""

    params: dict
    folds: pd.DataFrame  # reports/eval/folds.csv: every setting x fold x threshold mode
    labels: pd.DataFrame  # data/labels.csv
    run_info: dict  # (setting, fold) -> the run's metrics.json
    analysis: pd.DataFrame  # findings at the operating point
    stage_reports: dict  # name -> reports/<name>.json, or None when the stage did not run
    figures: dict  # name -> PNG path
    roi_how: str  # how the ROI examples were chosen
    comparisons: pd.DataFrame | None = None  # reports/eval/comparisons.csv (cxrstn.stats)
    rois: pd.DataFrame | None = None  # reports/eval/roi.csv; None without known lung boxes
    shortcut: dict | None = None  # reports/shortcut.json
    paper_params: str | os.PathLike = "params.paper.yaml"

    @property
    def threshold_on(self) -> str:
        return self.params["eval"]["threshold_on"]


def build_page(inputs: ReportInputs) -> str:
    """The whole `reports/report.html`: one section per function, in reading order; the
    result first, so that the page's first screen shows Table II, then what was run."""
    sections = [
        table2_section(inputs),
        setup_section(inputs),
        table1_section(inputs),
        comparisons_section(inputs),
        curves_section(inputs),
        roi_section(inputs),
        roi_quality_section(inputs),
        shortcut_section(inputs),
        findings_section(inputs),
        ("Training curves", image_tag(inputs.figures["training"], "training curves")),
        cost_section(inputs),
        counts_section(inputs),
        provenance_section(inputs),
    ]
    return render_html("Chest X-ray triage: baseline, YOLO thorax crops and STN", sections)


def setup_section(inputs: ReportInputs) -> tuple[str, str]:
    """What was run: data, settings, cross-validation, operating point, parameters."""
    params, labels = inputs.params, inputs.labels
    settings_run = list(dict.fromkeys(inputs.folds["setting"]))
    not_run = [TITLES[s] + NOT_RUN.get(s, "") for s in SETTINGS if s not in settings_run]
    setup = [
        ("data.chexpert", params["data"]["chexpert"]),
        (
            "images in data/labels.csv",
            f"{len(labels):,} ({int((labels['label'] == 0).sum()):,} "
            f"normal, {int((labels['label'] == 1).sum()):,} abnormal)",
        ),
        ("settings run", ", ".join(TITLES[s] for s in settings_run)),
        ("settings not run", ", ".join(not_run) or "none"),
        (
            "cross-validation",
            f"{params['split']['folds']} patient-grouped folds; run k tests on fold k, "
            "validates on fold k+1, trains on the rest",
        ),
        (
            "operating point",
            f"recall ≥ {100 * float(params['eval']['recall']):g}%, threshold chosen on the "
            f"{inputs.threshold_on} fold",
        ),
    ]
    # a section named after a setting (stn, stn_eq) only when that setting ran
    sections = ("classifier", "stn", "stn_eq", "detector", "crop", "labels", "resize")
    for section in sections:
        if section in params and (section not in SETTINGS or section in settings_run):
            setup.append((section, _inline(params[section])))
    if inputs.stage_reports.get("detector") is None:
        setup.append(("thorax detector", "not run: no reports/detector.json"))
    return "What was run", html_table(None, setup, "kv")


def table1_section(inputs: ReportInputs) -> tuple[str, str]:
    labels_report = inputs.stage_reports.get("labels")
    if labels_report is None:
        return "Table I", paragraph("reports/labels.json missing: binarize was not run.", "note")
    body = paragraph(
        "Images of each finding and of each binary class after the uncertainty policy "
        f"(labels.uncertain: {inputs.params['labels']['uncertain']}), beside the paper's "
        "Table I. An abnormal image may carry several findings."
    ) + html_table(*table1_rows(labels_report))
    return "Table I: labels", body


def table2_section(inputs: ReportInputs) -> tuple[str, str]:
    """Table II beside the paper's, the other threshold mode, and every run."""
    params, folds, threshold_on = inputs.params, inputs.folds, inputs.threshold_on
    other = next(mode for mode in THRESHOLD_MODES if mode != threshold_on)
    recall, n_folds = float(params["eval"]["recall"]), int(params["split"]["folds"])
    parts = [
        paragraph(table2_intro(threshold_on, recall, n_folds)),
        html_table(*table2_rows(folds, threshold_on, with_paper=True), "table2"),
        paragraph(PAPER_NOTE, "note"),
        *[paragraph(note, "note") for note in [without_crop_note(inputs.run_info)] if note],
        f"<h3>Threshold chosen on the {other} fold instead</h3>",
        paragraph("AUC and PR-AUC do not depend on the threshold."),
        html_table(*table2_rows(folds, other, with_paper=False)),
        "<h3>Standard deviation over folds: population (ddof=0) and sample (ddof=1)</h3>",
        html_table(*std_rows(folds, threshold_on)),
        "<details><summary>Every run (setting × fold × threshold mode)</summary>"
        + html_table(*fold_rows(folds))
        + "</details>",
    ]
    return "Table II", "\n".join(parts)


def comparison_rows(table: pd.DataFrame) -> tuple[list, list]:
    """One row per pair of settings and fold (and over all folds): AUCs, difference, DeLong's
    p and the patient-bootstrap 95% interval of the difference."""
    columns = ["Comparison", "Fold", "Test images", "AUC a", "AUC b", "b − a"]
    columns += ["DeLong z", "p", "bootstrap 95% CI of b − a"]
    rows = []
    for row in table.itertuples():
        rows.append(
            [
                f"{TITLES[row.setting_b]} vs {TITLES[row.setting_a]}",
                "all (stratified)" if str(row.fold) == "all" else str(row.fold),
                f"{int(row.n_images):,}",
                f"{row.auc_a:.2f}",
                f"{row.auc_b:.2f}",
                f"{row.diff:+.2f}",
                "n/a" if math.isnan(row.z) else f"{row.z:.2f}",
                "n/a" if math.isnan(row.p) else f"{row.p:.3g}",
                f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]",
            ]
        )
    return columns, rows


def comparisons_section(inputs: ReportInputs) -> tuple[str, str]:
    title = "Are the AUC differences significant?"
    if inputs.comparisons is None or inputs.comparisons.empty:
        return title, paragraph("No paired comparison: fewer than two settings were run.", "note")
    body = paragraph(
        "The settings are scored on the same test images, so their AUCs are compared "
        "pairwise: DeLong's test for correlated ROC curves in each fold, and over all folds "
        "as a stratified test of the mean per-fold difference (the folds' test patients are "
        "disjoint); the interval is a paired bootstrap over patients (each resample draws a "
        "fold's test patients with all their images and scores both settings on it). Both "
        "treat the trained models as fixed: they measure the uncertainty of the test set, "
        "not of training. The paper reports no test of its differences."
    ) + html_table(*comparison_rows(inputs.comparisons))
    table = inputs.comparisons
    per_fold = table[table["fold"].astype(str) != "all"]
    small = sorted(per_fold.loc[per_fold["z"].isna(), "fold"].astype(str).unique())
    if small:
        body += paragraph(
            f"n/a: DeLong's variance needs at least two normal and two abnormal test images; "
            f"fold {', '.join(small)} has fewer, so it gets no p-value, and neither does the "
            "test over all folds, which needs every fold's variance. The bootstrap interval "
            "is still given.",
            "note",
        )
    return title, body


def curves_section(inputs: ReportInputs) -> tuple[str, str]:
    body = (
        '<div class="pair">'
        + image_tag(inputs.figures["roc"], "ROC curves")
        + image_tag(inputs.figures["pr"], "PR curves")
        + "</div>"
        + paragraph(
            "Mean ROC: true positive rate averaged over folds at each false positive "
            "rate. Mean PR: precision at the highest threshold reaching each recall, "
            "averaged over folds (the operating-point rule).",
            "note",
        )
    )
    return "ROC and PR curves", body


def roi_section(inputs: ReportInputs) -> tuple[str, str]:
    body = image_tag(inputs.figures["roi"], "ROI examples") + paragraph(inputs.roi_how, "note")
    return "Regions of interest (the paper's Fig. 4)", body


def roi_quality_rows(rois: pd.DataFrame) -> tuple[list, list]:
    """Per setting, mean ± std over folds of each ROI measure, in percent (r as is)."""
    summary = roi_summary(rois)
    columns = ["Setting", "IoU with the lung box (%)", "lung box in view (%)"]
    columns += ["apices in view (%)", "r of vertical centre", "r of height"]
    columns += ["centre's spread / the lungs'"]
    rows = []
    for setting in [s for s in SETTINGS if s in summary]:
        values = summary[setting]
        row = [TITLES[setting]]
        for name in ROI_METRICS:
            scale = 1 if name.startswith(("roi_r_", "roi_spread_")) else 100
            mean, std = values[name]["mean"] * scale, values[name]["std"] * scale
            row.append(f"{mean:.2f} ± {std:.2f}" if scale == 1 else f"{mean:.1f} ± {std:.1f}")
        rows.append(row)
    return columns, rows


def roi_quality_section(inputs: ReportInputs) -> tuple[str, str]:
    title = "Where each setting looks"
    figure = image_tag(inputs.figures["roi_quality"], "ROI quality")
    if inputs.rois is None:
        return title, figure
    body = (
        paragraph(
            "Each test image's window (the STN's sampling window from its stored sx, sy, tx, "
            "ty; the YOLO square crop, or the whole image when it had no confident box; the "
            "whole image for the baseline) against the image's known lung box: IoU, the share "
            "of the lung box inside the window, and the share of its top 10 % of rows (the "
            "apices) inside the window. r: Pearson correlation across the test images of the "
            "window's and the lung box's vertical centre and height, i.e. whether the window "
            "follows each image (0 for a window that never moves). Mean ± std over folds."
        )
        + html_table(*roi_quality_rows(inputs.rois))
        + figure
    )
    return title, body


def shortcut_rows(shortcut: dict) -> tuple[list, list]:
    """Per setting: AUC, its change with lettering burned in and with the text removed, and
    the share of decisions each flips at the operating threshold."""
    columns = ["Setting", "test images (with text)", "AUC", "lettering burned in: ΔAUC"]
    columns += ["decisions flipped (%)", "text removed: ΔAUC", "decisions flipped (%)"]
    rows = []
    for setting in [s for s in SETTINGS if s in shortcut]:
        v = shortcut[setting]
        if not v.get("n_images"):
            continue
        rows.append(
            [
                TITLES[setting],
                f"{v['n_images']:,} ({v['n_text']:,})",
                f"{v['auc']:.2f}",
                f"{v['delta_auc_burned']:+.2f}",
                f"{v['flip_burned']:.1f}",
                f"{v['delta_auc_removed']:+.2f}",
                f"{v['flip_removed']:.1f}",
            ]
        )
    return columns, rows


def shortcut_section(inputs: ReportInputs) -> tuple[str, str]:
    title = "Does a setting read the lettering?"
    columns, rows = shortcut_rows(inputs.shortcut or {})
    if not rows:
        return title, paragraph(
            "Not measured: the shortcut test needs the phantom (lung boxes and a text-free "
            "rendering of every test image).",
            "note",
        )
    correlation = inputs.params.get("phantom", {}).get("text_label_correlation", "n/a")
    body = paragraph(
        "Every test image scored by its fold's model three ways: as stored, with lettering "
        "like the phantom's (side markers, PORTABLE, dates) burned in outside its lung box, "
        "and re-rendered by the phantom without its text (texted images only). A classifier "
        "that ignores the lettering changes neither AUC nor decisions; flips are counted at "
        "the operating threshold of the unmodified scores. In this run the lettering's "
        f"correlation with the label is phantom.text_label_correlation = {correlation}."
    ) + html_table(columns, rows)
    return title, body


def findings_section(inputs: ReportInputs) -> tuple[str, str]:
    parts = [
        image_tag(inputs.figures["findings"], "findings at the operating point"),
        paragraph(
            "Abnormal test images of all folds at the operating point "
            f"(threshold on the {inputs.threshold_on} fold). '% of TPs' is the share of the "
            "true positives carrying the finding; recall is the share of the images carrying "
            "it that were called abnormal. An image may carry several findings. The paper's "
            "top three ('contribute most to the TP/FN rate') match the recall reading "
            "better: the share reading is dominated by the most frequent findings."
        ),
        html_table(*top_three_rows(inputs.analysis)),
        html_table(*finding_rows(inputs.analysis)),
    ]
    return "Findings at the operating point", "\n".join(parts)


def cost_section(inputs: ReportInputs) -> tuple[str, str]:
    reports = inputs.stage_reports
    cost = cost_rows(inputs.run_info, reports.get("detector"), reports.get("crop"))
    body = (
        paragraph(
            "The paper claims the STN is cheaper than a separate thorax detector: "
            "parameters and FLOPs per image (classifier at its input size, detector at "
            "its imgsz, ST module at the stored image size) and measured wall times."
        )
        + paragraph(cost["comparison"])
        + html_table(*cost["totals"])
        + html_table(*cost["components"])
    )
    return "Compute cost", body


def counts_section(inputs: ReportInputs) -> tuple[str, str]:
    """Every earlier stage's counts and exclusions, and each run's own numbers."""
    reports = inputs.stage_reports
    cards = [
        f"<div><h3>reports/{name}.json</h3>{html_table(None, shown_pairs(record), 'kv')}</div>"
        for name, record in reports.items()
        if record is not None
    ]
    parts = [f'<div class="cards">{"".join(cards)}</div>']
    absent = [f"reports/{name}.json" for name, record in reports.items() if record is None]
    if absent:
        parts.append(paragraph(f"Not present (stage not run): {', '.join(absent)}.", "note"))
    parts.append("<h3>Runs (reports/runs/*/fold*/metrics.json)</h3>")
    parts.append(html_table(*run_rows(inputs.run_info)))
    return "Counts and exclusions", "\n".join(parts)


def provenance_section(inputs: ReportInputs) -> tuple[str, str]:
    """Commit, libraries, device, and how the parameters differ from the paper's profile."""
    params, paper_params = inputs.params, inputs.paper_params
    provenance = [
        ("git commit", git_commit()),
        ("device", device_description(str(params.get("train", {}).get("device", "n/a")))),
        *library_versions(),
    ]
    differences = params_differences(params, paper_params)
    parts = [html_table(None, provenance, "kv")]
    if differences is None:
        parts.append(
            paragraph(
                f"{paper_params} not found: no comparison with the paper's configuration.", "note"
            )
        )
    else:
        parts.append(f"<h3>Parameters that differ from {html.escape(str(paper_params))}</h3>")
        parts.append(html_table(["key", "this run", "paper configuration"], differences, "kv"))
    parts.append("<h3>params.yaml used</h3>")
    parts.append(f"<pre>{html.escape(yaml.safe_dump(params, sort_keys=False))}</pre>")
    return "Provenance", "\n".join(parts)


def _inline(section: dict) -> str:
    return ", ".join(f"{key}: {value}" for key, value in shown_pairs(section))
