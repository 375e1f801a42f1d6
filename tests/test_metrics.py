"""Metrics on hand-built examples whose answers are worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cxrstn.metrics import (
    auc,
    confusion_rates,
    finding_analysis,
    fold_table,
    load_runs,
    operating_threshold,
    pr_auc,
    read_predictions,
    run_metrics,
    summarize,
    summary,
)

# Five abnormal (scores .9 .8 .7 .7 .4) and three normal (.7 .3 .1); three images tie at .7.
LABELS = np.array([1, 1, 1, 1, 0, 1, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.7, 0.7, 0.4, 0.3, 0.1])


def test_auc_counts_ties_as_half():
    # 15 abnormal-normal pairs: .9 and .8 beat all three (6), each .7 beats two and ties
    # one (2 x 2.5), .4 beats two (2): 13 / 15.
    assert auc(LABELS, SCORES) == pytest.approx(100 * 13 / 15)


def test_pr_auc_is_average_precision():
    # Thresholds .9, .8, .7, .4 reach recall .2, .4, .8, 1 with precision 1, 1, 4/5, 5/6:
    # AP = .2 * 1 + .2 * 1 + .4 * .8 + .2 * 5/6.
    assert pr_auc(LABELS, SCORES) == pytest.approx(100 * (0.2 + 0.2 + 0.32 + 0.2 * 5 / 6))


@pytest.mark.parametrize(
    ("recall", "threshold"),
    [
        (0.95, 0.4),  # all 5 abnormal needed: the lowest abnormal score
        (0.8, 0.7),  # 4 of 5: the two .7 abnormal images come in together
        (0.6, 0.7),  # 3 of 5: .8 gives only 2/5; at .7 all ties are called, recall 4/5
        (0.4, 0.8),
        (0.2, 0.9),
    ],
)
def test_operating_threshold_is_highest_with_enough_recall(recall, threshold):
    assert operating_threshold(LABELS, SCORES, recall) == threshold


def test_operating_threshold_exact_fraction():
    # 100 abnormal images at recall 0.55 need exactly 55 of them: the 55th highest score.
    # (0.55 * 100 is 55.00000000000001 in floating point; a ceil of it would ask for 56.)
    labels = np.array([1] * 100 + [0] * 10)
    scores = np.concatenate([np.arange(100, 0, -1) / 1000, np.full(10, 0.0005)])
    assert operating_threshold(labels, scores, 0.55) == pytest.approx(0.046)
    assert operating_threshold(labels, scores, 0.95) == pytest.approx(0.006)


def test_confusion_rates_at_tied_threshold():
    # At .7: called .9 .8 .7 .7 .7 -> TP 4, FP 1; not called .4 (FN) and .3 .1 (TN).
    rates = confusion_rates(LABELS, SCORES, 0.7)
    assert (rates["tp"], rates["fp"], rates["tn"], rates["fn"]) == (4, 1, 2, 1)
    assert rates["tp_rate"] == 50.0 and rates["fp_rate"] == 12.5
    assert rates["tn_rate"] == 25.0 and rates["fn_rate"] == 12.5
    assert rates["precision"] == 80.0 and rates["recall"] == 80.0
    total = sum(rates[k] for k in ("tp_rate", "fp_rate", "tn_rate", "fn_rate"))
    assert total == pytest.approx(100.0)


def test_confusion_rates_nothing_called_has_no_precision():
    rates = confusion_rates(LABELS, SCORES, 0.95)
    assert math.isnan(rates["precision"]) and rates["fn_rate"] == 62.5


def test_summarize_uses_population_std():
    stats = summarize([1.0, 2.0, 3.0, 4.0])
    assert stats["mean"] == 2.5
    assert stats["std"] == pytest.approx(math.sqrt(1.25))  # ddof=0; ddof=1 gives 1.29


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "0 \\(normal\\) or 1"),
        ([1, 1], [0.1, 0.2], "both normal and abnormal"),
        ([0, 1], [0.1, np.nan], "finite"),
    ],
)
def test_bad_input_is_refused(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        auc(labels, scores)


def predictions(test_scores, val_scores) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"t{i}" for i in range(len(test_scores))]
            + [f"v{i}" for i in range(len(val_scores))],
            "label": list(LABELS) + [1, 1, 0, 0],
            "score": list(test_scores) + list(val_scores),
            "split": ["test"] * len(test_scores) + ["val"] * len(val_scores),
        }
    )


def test_threshold_on_val_is_applied_to_test():
    # Validation: abnormal .85 .5, normal .6 .2; recall .95 needs both abnormal -> t = .5.
    # On the test fold, score >= .5 calls .9 .8 .7 .7 .7: TP 4, FP 1, FN 1, TN 2.
    # Chosen on test instead, t = .4: TP 5, FP 1, TN 2, FN 0.
    rows = {
        r["threshold_on"]: r for r in run_metrics(predictions(SCORES, [0.85, 0.5, 0.6, 0.2]), 0.95)
    }
    assert rows["val"]["threshold"] == 0.5 and rows["test"]["threshold"] == 0.4
    assert (rows["val"]["tp"], rows["val"]["fp"], rows["val"]["tn"], rows["val"]["fn"]) == (
        4,
        1,
        2,
        1,
    )
    assert (rows["test"]["tp"], rows["test"]["fn"]) == (5, 0)
    assert rows["test"]["precision"] == pytest.approx(100 * 5 / 6)
    assert rows["val"]["auc"] == rows["test"]["auc"] == pytest.approx(100 * 13 / 15)
    assert rows["test"]["prevalence"] == 62.5


def test_summary_over_folds(tmp_path):
    for fold, shift in enumerate((0.0, 0.05)):
        run = tmp_path / "stn" / f"fold{fold}"
        run.mkdir(parents=True)
        predictions(SCORES + shift, [0.85, 0.5, 0.6, 0.2]).to_csv(
            run / "predictions.csv", index=False
        )
    folds = fold_table(load_runs(tmp_path, ["stn"], 2), 0.95)
    metrics = summary(folds, "val")
    # fold 0: t = .5 -> FP 12.5; fold 1 (test scores + .05): .45 >= .5 is false, still FP 12.5
    assert metrics["stn"]["fp_rate"] == {"mean": 12.5, "std": 0.0}
    assert metrics["stn"]["auc"]["mean"] == pytest.approx(100 * 13 / 15, abs=1e-4)
    with pytest.raises(ValueError, match="threshold_on"):
        summary(folds, "train")


def test_missing_fold_names_the_run(tmp_path):
    run = tmp_path / "yolo" / "fold0"
    run.mkdir(parents=True)
    predictions(SCORES, [0.85, 0.5, 0.6, 0.2]).to_csv(run / "predictions.csv", index=False)
    with pytest.raises(FileNotFoundError, match="run yolo fold 1 is missing"):
        load_runs(tmp_path, ["yolo"], 2)


def test_read_predictions_names_the_file(tmp_path):
    path = tmp_path / "predictions.csv"
    predictions(SCORES, [0.85, 0.5, 0.6, 0.2]).drop(columns="split").to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"predictions.csv: missing columns \['split'\]"):
        read_predictions(path)


def test_finding_analysis_shares_and_recall():
    # Four abnormal test images: a (Edema, called), b (Edema + Fracture, called),
    # c (Fracture, missed), d (Edema, missed); one normal image that is ignored.
    called = pd.DataFrame(
        {
            "setting": "stn",
            "fold": 0,
            "path": ["a", "b", "c", "d", "n"],
            "label": [1, 1, 1, 1, 0],
            "called": [True, True, False, False, True],
        }
    )
    labels = pd.DataFrame(
        {"path": list("abcdn"), "Edema": [1, 1, 0, 1, 0], "Fracture": [0, 1, 1, 0, 0]}
    )
    table = finding_analysis(called, labels, ["Edema", "Fracture"]).set_index("finding")
    # Edema: 2 of 2 TPs, 1 of 2 FNs, 2 of its 3 images called.
    assert table.loc["Edema", ["share_of_tp", "share_of_fn"]].tolist() == [100.0, 50.0]
    assert table.loc["Edema", "recall"] == pytest.approx(200 / 3)
    # Fracture: 1 of 2 TPs, 1 of 2 FNs, 1 of its 2 images called.
    assert table.loc["Fracture", ["share_of_tp", "share_of_fn", "recall"]].tolist() == [50.0] * 3
    assert table["n_tp"].tolist() == [2, 2] and table["n_images"].tolist() == [3, 2]
    with pytest.raises(ValueError, match="not in labels.csv, e.g. a"):
        finding_analysis(called, labels[labels["path"] != "a"], ["Edema"])
