"""The evaluate and report stages end to end on a tiny hand-built project.

`build_project` writes every input the two stages read (labels, image stores, folds,
runs with predictions, metrics.json and dvclive logs, stage json files), so the tests
check the numbers against scikit-learn and the outputs a user opens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

from cxrstn.cost import cost_rows
from cxrstn.figures import stn_output, window_rectangle
from cxrstn.metrics import GRID, mean_pr
from cxrstn.provenance import git_commit, params_differences, shown_pairs
from cxrstn.report import shortcut_rows, std_rows, table1_rows, table2_markdown
from cxrstn.settings import SETTINGS
from cxrstn.sources.chexpert import FINDINGS
from cxrstn.stats import PAIRS

ROOT = Path(__file__).resolve().parents[1]


def set_params(root: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def brute_force_rates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    called = scores >= threshold
    counts = {
        "tp_rate": called & (labels == 1),
        "fp_rate": called & (labels == 0),
        "tn_rate": ~called & (labels == 0),
        "fn_rate": ~called & (labels == 1),
    }
    rates = {name: 100 * mask.mean() for name, mask in counts.items()}
    rates["precision"] = 100 * labels[called].mean()
    return rates


def brute_force_threshold(labels: np.ndarray, scores: np.ndarray, recall: float) -> float:
    """The largest candidate score whose 'score >= t' recall reaches the target."""
    best = -np.inf
    for t in np.unique(scores):
        if np.mean(scores[labels == 1] >= t) >= recall:
            best = max(best, t)
    return best


def expected_metrics(root: Path, settings, n_folds: int, recall: float, mode: str) -> dict:
    """metrics.json recomputed from the predictions with scikit-learn and brute force."""
    expected = {}
    for setting in settings:
        per_fold = []
        for fold in range(n_folds):
            frame = pd.read_csv(root / f"reports/runs/{setting}/fold{fold}/predictions.csv")
            test, chosen = frame[frame["split"] == "test"], frame[frame["split"] == mode]
            y, s = test["label"].to_numpy(), test["score"].to_numpy()
            t = brute_force_threshold(
                chosen["label"].to_numpy(), chosen["score"].to_numpy(), recall
            )
            per_fold.append(
                {
                    "auc": 100 * roc_auc_score(y, s),
                    "pr_auc": 100 * average_precision_score(y, s),
                    **brute_force_rates(y, s, t),
                }
            )
        expected[setting] = {
            name: {
                "mean": np.mean([f[name] for f in per_fold]),
                "std": np.std([f[name] for f in per_fold]),
            }
            for name in per_fold[0]
        }
    return expected


def assert_close(actual: dict, expected: dict) -> None:
    actual = {k: v for k, v in actual.items() if k != "paired"}  # checked on its own
    assert set(actual) == set(expected)
    for setting, metrics in expected.items():
        table2 = {k: v for k, v in actual[setting].items() if not k.startswith("roi_")}
        assert set(table2) == set(metrics)
        for name, stats in metrics.items():
            for key in ("mean", "std"):
                assert actual[setting][name][key] == pytest.approx(stats[key], abs=1e-4), (
                    setting,
                    name,
                    key,
                )


@pytest.fixture
def project(tmp_path, make_project):
    make_project(tmp_path)
    return tmp_path


def test_evaluate_matches_sklearn_and_brute_force(project, monkeypatch, run_stage):
    run_stage("evaluate", project)
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert_close(metrics, expected_metrics(project, SETTINGS, 3, 0.95, "test"))
    folds = pd.read_csv(project / "reports/eval/folds.csv")
    assert len(folds) == len(SETTINGS) * 3 * 2
    rates = folds[["tp_rate", "fp_rate", "tn_rate", "fn_rate"]].sum(axis=1)
    assert rates.to_numpy() == pytest.approx(100.0)
    assert (folds.loc[folds["threshold_on"] == "test", "recall"] >= 95).all()


def test_mean_pr_curve_at_the_operating_recall_is_the_mean_operating_precision(
    project, monkeypatch, run_stage
):
    run_stage("evaluate", project)
    pr = pd.read_csv(project / "reports/eval/pr.csv")
    metrics = json.loads((project / "reports/metrics.json").read_text())
    at_95 = int(np.flatnonzero(GRID == 95.0)[0])
    for setting in SETTINGS:
        mean = mean_pr(pr[pr["setting"] == setting])[at_95]
        assert mean == pytest.approx(metrics[setting]["precision"]["mean"], abs=1e-4)


def test_paired_differences_are_the_differences_of_mean_fold_aucs(project, run_stage):
    run_stage("evaluate", project)
    paired = json.loads((project / "reports/metrics.json").read_text())["paired"]
    assert set(paired) == {f"{a}_vs_{b}" for a, b in PAIRS}
    folds = pd.read_csv(project / "reports/eval/folds.csv")
    mean_auc = folds[folds["threshold_on"] == "test"].groupby("setting")["auc"].mean()
    for pair, values in paired.items():
        a, b = pair.split("_vs_")
        assert values["auc_diff"] == pytest.approx(mean_auc[b] - mean_auc[a], abs=1e-3)
        assert values["ci_low"] <= values["auc_diff"] <= values["ci_high"]
        assert 0 <= values["p"] <= 1
    table = pd.read_csv(project / "reports/eval/comparisons.csv")
    assert set(table["fold"].astype(str)) == {"0", "1", "2", "all"}


def test_every_settings_window_is_measured_against_the_lung_boxes(project, run_stage):
    run_stage("evaluate", project)
    metrics = json.loads((project / "reports/metrics.json").read_text())
    # baseline: the whole image, IoU 0.6 x 0.5 = 0.3, all of the lungs and apices in view
    assert metrics["baseline"]["roi_iou"] == {"mean": 0.3, "std": 0.0}
    assert metrics["baseline"]["roi_apex_coverage"]["mean"] == 1.0
    # stn: the builder's theta (0.8, 0.6, 0.05, 0.1) is x 12.5..92.5 %, y 25..85 %
    expected_iou = (0.6 * 0.5) / (0.8 * 0.6)  # the lung box lies inside the window
    assert metrics["stn"]["roi_iou"]["mean"] == pytest.approx(expected_iou, abs=1e-4)
    assert metrics["stn"]["roi_lung_coverage"]["mean"] == pytest.approx(1.0)
    assert {"roi_iou", "roi_r_centre"} <= set(metrics["yolo"])
    rois = pd.read_csv(project / "reports/eval/roi.csv")
    assert set(rois["setting"]) == set(SETTINGS)


def test_threshold_on_val_is_used_for_metrics_json(project, monkeypatch, run_stage):
    set_params(project, "eval", "threshold_on", "val")
    run_stage("evaluate", project)
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert_close(metrics, expected_metrics(project, SETTINGS, 3, 0.95, "val"))
    on_test = expected_metrics(project, SETTINGS, 3, 0.95, "test")
    assert any(
        metrics[s]["fp_rate"]["mean"] != pytest.approx(on_test[s]["fp_rate"]["mean"])
        for s in SETTINGS
    )


def test_missing_fold_names_the_run(project, monkeypatch, run_stage):
    (project / "reports/runs/stn/fold1/predictions.csv").unlink()
    with pytest.raises(SystemExit, match=r"^error: .*stn/fold1.*run stn fold 1 is missing"):
        run_stage("evaluate", project)


def test_settings_scored_on_other_test_images_are_refused(project, run_stage):
    path = project / "reports/runs/yolo/fold1/predictions.csv"
    predictions = pd.read_csv(path)
    first_test = predictions.index[predictions["split"] == "test"][0]
    predictions.drop(index=first_test).to_csv(path, index=False)
    with pytest.raises(SystemExit, match=r"fold 1: the yolo run scored other test images"):
        run_stage("evaluate", project)


def test_run_on_the_wrong_fold_is_refused(project, monkeypatch, run_stage):
    folds = pd.read_csv(project / "data/folds.csv")
    moved = folds.index[folds["fold"] == 0][0]
    folds.loc[moved, "fold"] = 1
    folds.to_csv(project / "data/folds.csv", index=False)
    message = "^error: run baseline fold 0: 1 test images .* not in fold 0"
    with pytest.raises(SystemExit, match=message):
        run_stage("evaluate", project)


def table2_values(markdown: str) -> dict:
    """'mean ± std' cells of the first table, by row title, in the column order of settings
    (the paper's columns, headed 'paper', left out)."""
    first_table = markdown.split("\n## ")[0]
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in first_table.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]
    ours = [i for i, title in enumerate(rows[0]) if i and title != "paper"]
    values = {}
    for cells in rows[1:]:
        numbers = [re.fullmatch(r"(-?[\d.]+) ± ([\d.]+)", cells[i]) for i in ours]
        if all(numbers):
            values[cells[0]] = [(float(m[1]), float(m[2])) for m in numbers]
    return values


def test_report_table_matches_metrics_and_paper(project, monkeypatch, run_stage):
    run_stage("evaluate", project)
    run_stage("report", project)
    metrics = json.loads((project / "reports/metrics.json").read_text())
    markdown = (project / "reports/table2.md").read_text()
    values = table2_values(markdown)
    titles = {
        "AUC": "auc",
        "PR-AUC": "pr_auc",
        "Precision": "precision",
        "TP rate": "tp_rate",
        "FP rate": "fp_rate",
        "TN rate": "tn_rate",
        "FN rate": "fn_rate",
    }
    for title, name in titles.items():
        for setting, (mean, std) in zip(SETTINGS, values[title], strict=True):
            assert mean == pytest.approx(metrics[setting][name]["mean"], abs=0.005)
            assert std == pytest.approx(metrics[setting][name]["std"], abs=0.005)
    assert "| AUC | " in markdown and "| 83.21 ± 0.69 |" in markdown  # the paper's baseline
    assert "| 84.22 ± 0.70 |" in markdown  # the paper's STN
    assert "Threshold chosen on the val fold" in markdown

    page = (project / "reports/report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 6
    for name in ("roc", "pr", "roi_examples", "findings", "training_curves"):
        assert (project / f"reports/figures/{name}.png").stat().st_size > 5000
    findings = pd.read_csv(project / "reports/findings.csv")
    folds = pd.read_csv(project / "reports/eval/folds.csv")
    chosen = folds[folds["threshold_on"] == "test"].groupby("setting")
    n_tp = findings.groupby("setting")["n_tp"].first()
    assert n_tp.sort_index().tolist() == chosen["tp"].sum().sort_index().tolist()


def test_table2_counts_the_test_images_scored_whole(project, run_stage):
    run_stage("evaluate", project)
    run_stage("report", project)
    crops = pd.read_csv(project / "data/crops.csv").set_index("path")
    folds = pd.read_csv(project / "data/folds.csv")
    expected = [
        f"fold {k}: {(crops.loc[group['path'], 'status'] == 'whole').sum()} of {len(group)}"
        for k, group in folds.groupby("fold")
    ]
    markdown = (project / "reports/table2.md").read_text()
    assert "classified whole by the YOLO setting: " + "; ".join(expected) in markdown
    assert "; ".join(expected) in (project / "reports/report.html").read_text()


def test_report_without_yolo_inputs(tmp_path, monkeypatch, run_stage, make_project):
    make_project(tmp_path, with_yolo=False)
    run_stage("evaluate", tmp_path)
    run_stage("report", tmp_path)
    markdown = (tmp_path / "reports/table2.md").read_text()
    assert "not run" in markdown
    page = (tmp_path / "reports/report.html").read_text()
    assert "reports/detector.json missing" in page
    assert "Not present (stage not run): reports/resize.json" in page
    assert "reports/detector.json, reports/crop.json." in page
    assert (tmp_path / "reports/figures/roi_examples.png").stat().st_size > 5000


def test_table2_markdown_marks_missing_setting():
    folds = pd.DataFrame(
        [
            {
                "setting": "baseline",
                "fold": f,
                "threshold_on": mode,
                "auc": 80.0 + f,
                "pr_auc": 90.0,
                "precision": 85.0,
                "recall": 95.0,
                "tp_rate": 76.0,
                "fp_rate": 14.0,
                "tn_rate": 6.0,
                "fn_rate": 4.0,
                "prevalence": 80.0,
                "threshold": 0.5,
            }
            for f in (0, 1)
            for mode in ("test", "val")
        ]
    )
    markdown = table2_markdown(folds, "test", 0.95, 2)
    assert "| AUC | 80.50 ± 0.50 | 83.21 ± 0.69 | not run | 83.98 ± 0.75 | not run |" in markdown


def test_cost_rows_add_detector_and_crop_to_yolo():
    run_info = {
        ("baseline", 0): {"n_params": 1000, "gflops_classifier": 0.5, "train_seconds": 10.0},
        ("yolo", 0): {"n_params": 1000, "gflops_classifier": 0.5, "train_seconds": 12.0},
        ("stn", 0): {
            "n_params": 1100,
            "gflops_classifier": 0.5,
            "gflops_st": 0.1,
            "train_seconds": 11.0,
        },
    }
    cost = cost_rows(
        run_info, {"n_params": 5000, "gflops": 7.0, "train_seconds": 400.0}, {"seconds": 30.0}
    )
    totals = {row[0]: row[2:] for row in cost["totals"][1]}
    assert totals["Baseline"] == ["1,000", "0.50", "10 s"]
    assert totals["Baseline with thorax detection (YOLO)"] == ["6,000", "7.50", "442 s"]
    assert totals["Proposed STN"] == ["1,100", "0.60", "11 s"]
    st_row = next(row for row in cost["components"][1] if row[0] == "of which the ST module")
    assert st_row[1:3] == ["100", "0.10"]  # 1100 - 1000 parameters
    assert cost["comparison"] == (
        "Over the baseline, the Baseline with thorax detection (YOLO) setting adds 5,000 "
        "parameters, 7.000 GFLOPs per image and 432 s of training; the Proposed STN setting "
        "adds 100 parameters, 0.100 GFLOPs per image and 1 s of training (all folds)."
    )
    no_detector = cost_rows(run_info, None, None)
    assert {row[0]: row[2] for row in no_detector["totals"][1]}[
        "Baseline with thorax detection (YOLO)"
    ] == "n/a"


def test_stn_window_and_output():
    image = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)

    def rect(*theta):
        patch = window_rectangle(theta, 16)
        return (*patch.get_xy(), patch.get_width(), patch.get_height())

    assert rect(1.0, 1.0, 0.0, 0.0) == (-0.5, -0.5, 16.0, 16.0)
    assert np.allclose(stn_output(image, 1.0, 1.0, 0.0, 0.0), image)
    # sx = sy = 0.5 centred: output pixel i samples source pixel 3.75 + 0.5 i (the middle
    # 8 x 8 pixels); bilinear sampling of the linear image 16 y + x is exact there
    assert rect(0.5, 0.5, 0.0, 0.0) == (3.5, 3.5, 8.0, 8.0)
    source = 3.75 + 0.5 * np.arange(16)
    assert np.allclose(stn_output(image, 0.5, 0.5, 0.0, 0.0), 16 * source[:, None] + source)
    # tx = 0.5, sx = 0.5: the right half of the image
    assert rect(0.5, 1.0, 0.5, 0.0)[0] == pytest.approx(7.5)


def test_table1_beside_the_papers():
    report = {"normal": 20, "abnormal": 80, "findings": {f: 0 for f in FINDINGS} | {"Edema": 10}}
    columns, rows = table1_rows(report)
    by_name = {row[0]: row[1:] for row in rows}
    assert by_name["Edema"] == ["10", "10.00", "2,547", "9.21"]  # 2,547 of 27,654
    assert by_name["No Finding (normal, binary label 0)"] == ["20", "20.00", "5,508", "19.92"]
    assert by_name["Abnormal (any finding, binary label 1)"][2:] == ["22,146", "80.08"]


def test_std_rows_give_both_conventions():
    folds = pd.DataFrame(
        {"setting": "baseline", "threshold_on": "test", "auc": [80.0, 82.0, 84.0]}
        | {m: 0.0 for m in ("pr_auc", "precision", "tp_rate", "fp_rate", "tn_rate", "fn_rate")}
    )
    columns, rows = std_rows(folds, "test")
    assert columns == ["Metric (%)", "Baseline: ddof=0 / ddof=1"]
    assert rows[0] == ["AUC", "1.63 / 2.00"]  # sqrt(8/3) and sqrt(8/2)


def test_shown_pairs_of_nested_json():
    assert shown_pairs({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 3}]}) == [
        ("a.b", "1"),
        ("a.c", "[1, 2]"),
        ("d[0].e", "3"),
    ]


def test_params_differences_and_no_git(tmp_path):
    (tmp_path / "paper.yaml").write_text(
        "classifier:\n  lr: 1.0e-05\n  epochs: 20\neval:\n  recall: 0.95\n"
    )
    ours = {"classifier": {"lr": 1.0e-05, "epochs": 2}, "eval": {"recall": 0.95}, "report": {}}
    assert params_differences(ours, tmp_path / "paper.yaml") == [("classifier.epochs", "2", "20")]
    assert params_differences(ours, tmp_path / "absent.yaml") is None
    assert git_commit(tmp_path).startswith("unknown")


def test_shortcut_rows_show_each_measured_setting():
    shortcut = {
        "baseline": {
            "n_images": 100,
            "n_text": 60,
            "auc": 70.0,
            "delta_auc_burned": -4.4,
            "flip_burned": 4.5,
            "delta_auc_removed": -6.9,
            "flip_removed": 5.0,
        },
        "stn": {"n_images": 0},  # not measured (real data): left out
    }
    columns, rows = shortcut_rows(shortcut)
    assert len(columns) == 7
    assert rows == [["Baseline", "100 (60)", "70.00", "-4.40", "4.5", "-6.90", "5.0"]]


def test_roi_examples_are_the_best_median_and_worst_stn_windows(tmp_path):
    """Fig. 4: with known lung boxes, the STN windows of highest, middle and lowest IoU,
    a third of the examples each, each with its lung box in the image's pixels."""
    from cxrstn.images import ImageStore, write_store
    from cxrstn.report import roi_examples

    paths = [f"train/patient{i:05d}/study1/view1_frontal.jpg" for i in range(9)]
    write_store(tmp_path / "store", paths, (np.zeros((32, 32), np.uint8) for _ in paths), 32)
    predictions = pd.DataFrame({"path": paths, "label": [0, 1] * 4 + [1], "score": 0.5})
    predictions = predictions.assign(split="test", sx=1.0, sy=1.0, tx=0.0, ty=0.0)
    iou = [0.30, 0.90, 0.10, 0.50, 0.70, 0.20, 0.80, 0.40, 0.60]  # path i has IoU iou[i]
    rois = pd.DataFrame({"setting": "stn", "fold": 0, "path": paths, "iou": iou})
    rois = rois.assign(lx0=0.25, ly0=0.125, lx1=0.75, ly1=0.875)
    examples, how = roi_examples(
        {("stn", 0): predictions}, ImageStore(tmp_path / "store"), None, None, 6, rois
    )
    shown = [float(e["title"].rsplit("IoU ", 1)[1]) for e in examples]
    assert shown == [0.90, 0.80, 0.60, 0.50, 0.20, 0.10]  # best 2, median 2 (0.5), worst 2
    assert all(e["lung_box"] == (8.0, 4.0, 24.0, 28.0) for e in examples)
    assert "best, median and worst" in how
    # Without lung boxes: half normal, half abnormal, as before.
    examples, how = roi_examples(
        {("stn", 0): predictions}, ImageStore(tmp_path / "store"), None, None, 4
    )
    assert [e["title"].split("\n")[1].split(",")[0] for e in examples] == [
        "normal", "normal", "abnormal", "abnormal"
    ]  # fmt: skip
    assert "lung_box" not in examples[0]
