"""Paired AUC statistics against hand-worked values and independent brute-force computations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrstn.report import comparisons_section
from cxrstn.stats import (
    DeLongResult,
    combine_folds,
    comparison_metrics,
    comparison_table,
    delong_components,
    delong_covariance,
    delong_test,
    patient_draws,
    weighted_auc,
)

# Three abnormal and two normal images, two models.
LABELS = np.array([1, 1, 1, 0, 0])
SCORES_A = np.array([0.9, 0.6, 0.4, 0.5, 0.2])
SCORES_B = np.array([0.8, 0.3, 0.7, 0.6, 0.4])


def test_delong_hand_worked_example():
    # Model a: abnormal .9 and .6 beat both normals, .4 beats only .2 -> V10 = (1, 1, .5),
    # AUC 5/6; normal .5 is outranked by 2 of 3 abnormals, .2 by all -> V01 = (2/3, 1).
    # Model b: V10 = (1, 0, 1), AUC 2/3; V01 = (2/3, 2/3).
    # S10 (ddof 1): var_a = 1/12, var_b = 1/3, cov = -1/12; S01: var_a = 1/18, others 0.
    # Var(a) = 1/36 + 1/36 = 1/18, Var(b) = 1/9, Cov = -1/36:
    # Var(b - a) = 1/18 + 1/9 + 2/36 = 2/9, diff = -1/6, z = -(1/6) / sqrt(2/9) = -1/(2 sqrt 2).
    aucs, v10, v01 = delong_components(LABELS, np.vstack([SCORES_A, SCORES_B]))
    np.testing.assert_allclose(aucs, [5 / 6, 2 / 3])
    np.testing.assert_allclose(v10, [[1, 1, 0.5], [1, 0, 1]])
    np.testing.assert_allclose(v01, [[2 / 3, 1], [2 / 3, 2 / 3]])
    result = delong_test(LABELS, SCORES_A, SCORES_B)
    assert result.diff == pytest.approx(-1 / 6)
    assert result.var == pytest.approx(2 / 9)
    assert result.z == pytest.approx(-1 / (2 * math.sqrt(2)))
    assert result.p == pytest.approx(2 * (1 - 0.6381631950841185), abs=1e-9)  # Phi(0.35355)


def _brute_force_covariance(labels, scores):
    """DeLong 1988 from the definition: psi over all abnormal x normal pairs, ties half."""
    positives, negatives = scores[:, labels == 1], scores[:, labels == 0]
    psi = (positives[:, :, None] > negatives[:, None, :]) + 0.5 * (
        positives[:, :, None] == negatives[:, None, :]
    )
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    m, n = positives.shape[1], negatives.shape[1]

    def covariance(v, count):
        centred = v - v.mean(axis=1, keepdims=True)
        return np.array([[np.sum(r * s) / (count - 1) for s in centred] for r in centred])

    s10, s01 = covariance(v10, m), covariance(v01, n)
    return psi.mean(axis=(1, 2)), s10 / m + s01 / n


def test_delong_matches_brute_force_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    # Three correlated models with scores rounded to one decimal: many ties.
    base = labels + rng.normal(0, 1, 60)
    scores = np.round(np.vstack([base + rng.normal(0, s, 60) for s in (0.3, 0.8, 1.5)]), 1)
    aucs, covariance = delong_covariance(labels, scores)
    expected_aucs, expected_covariance = _brute_force_covariance(labels, scores)
    np.testing.assert_allclose(aucs, expected_aucs)
    np.testing.assert_allclose(covariance, expected_covariance)
    np.testing.assert_allclose(aucs, [roc_auc_score(labels, s) for s in scores])


def test_delong_identical_and_opposite_models():
    same = delong_test(LABELS, SCORES_A, SCORES_A)
    assert (same.diff, same.var, same.z, same.p) == (0.0, 0.0, 0.0, 1.0)
    # Perfect vs perfectly inverted: every component is constant, variance 0, diff -1.
    perfect = LABELS.astype(float)
    opposite = delong_test(LABELS, perfect, 1 - perfect)
    assert opposite.diff == -1.0 and opposite.z == -math.inf and opposite.p == 0.0


def test_delong_rejects_bad_input():
    with pytest.raises(ValueError, match="both normal and abnormal"):
        delong_test(np.ones(5, int), SCORES_A, SCORES_B)
    with pytest.raises(ValueError, match="at least 2 abnormal and 2 normal"):
        delong_test(np.array([1, 1, 0]), [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="finite"):
        delong_test(LABELS, [0.1, np.nan, 0.3, 0.4, 0.5], SCORES_B)


def test_combine_folds_is_the_mean_with_summed_variance():
    folds = [DeLongResult(0.8, 0.9, 0.004), DeLongResult(0.7, 0.7, 0.002)]
    combined = combine_folds(folds)
    # mean diff (0.1 + 0) / 2 = 0.05, var (0.004 + 0.002) / 4 = 0.0015
    assert combined.diff == pytest.approx(0.05)
    assert combined.var == pytest.approx(0.0015)
    assert combined.z == pytest.approx(0.05 / math.sqrt(0.0015))


def test_weighted_auc_equals_sklearn_with_sample_weight():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random(40), 1)  # ties
    weights = rng.integers(0, 4, (5, 40))
    expected = [roc_auc_score(labels, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(weighted_auc(labels, scores, weights), expected)
    # No normal weight: undefined.
    assert np.isnan(weighted_auc(labels, scores, (labels == 1)[None].astype(int)))[0]


def test_patient_draws_keep_patients_whole():
    patients = ["p1", "p1", "p2", "p3", "p3", "p3"]
    draws = patient_draws(patients, 200, np.random.default_rng(0))
    assert draws.shape == (200, 6)
    np.testing.assert_array_equal(draws[:, 0], draws[:, 1])
    np.testing.assert_array_equal(draws[:, 3], draws[:, 5])
    # three patients drawn per replicate
    np.testing.assert_array_equal(draws[:, [0, 2, 3]].sum(axis=1), 3)


def _runs(n_folds=2, images=120, seed=0, perfect_b=False, same=False):
    """Two settings on the same test images; patients with two images each."""
    rng = np.random.default_rng(seed)
    runs, rows = {}, []
    for fold in range(n_folds):
        labels = rng.integers(0, 2, images)
        paths = [f"f{fold}/img{i}.jpg" for i in range(images)]
        rows += [
            {"path": p, "patient": f"f{fold}p{i // 2}", "label": y, "fold": fold}
            for i, (p, y) in enumerate(zip(paths, labels, strict=True))
        ]
        score_a = rng.random(images)
        if same:
            score_b = score_a
        elif perfect_b:
            score_b = labels + 0.1 * rng.random(images)
        else:
            score_b = labels + rng.normal(0, 1, images)
        for setting, score in (("baseline", score_a), ("stn", score_b)):
            runs[setting, fold] = pd.DataFrame(
                {"path": paths, "label": labels, "score": score, "split": "test"}
            )
    return runs, pd.DataFrame(rows)


def test_identical_settings_give_zero_difference_and_zero_width_interval():
    runs, folds = _runs(same=True)
    table = comparison_table(runs, folds, n_boot=200, seed=0)
    assert list(table["pair"].unique()) == ["baseline_vs_stn"]  # yolo has no runs
    assert list(table["fold"]) == [0, 1, "all"]
    assert (table[["diff", "ci_low", "ci_high", "z"]] == 0).all().all()
    assert (table["p"] == 1).all()


def test_perfect_against_random_is_far_from_zero():
    runs, folds = _runs(perfect_b=True)
    table = comparison_table(runs, folds, n_boot=300, seed=1)
    combined = table[table["fold"] == "all"].iloc[0]
    assert combined["auc_b"] == pytest.approx(100)
    assert 35 < combined["diff"] < 65  # random is near 50
    assert combined["ci_low"] > 25 and combined["ci_high"] <= combined["diff"] + 15
    assert combined["p"] < 1e-10
    assert combined["n_images"] == 240 and combined["n_boot_valid"] == 300


def test_bootstrap_spread_agrees_with_delong():
    # Two independent estimates of the same sampling error: with one image per patient the
    # bootstrap's standard deviation of the difference should be close to DeLong's SE.
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 400)
    latent = labels + rng.normal(0, 1, 400)
    runs = {
        ("baseline", 0): pd.DataFrame(
            {"path": range(400), "label": labels, "score": latent + rng.normal(0, 1, 400)}
        ),
        ("stn", 0): pd.DataFrame(
            {"path": range(400), "label": labels, "score": latent + rng.normal(0, 0.3, 400)}
        ),
    }
    for frame in runs.values():
        frame["split"] = "test"
    folds = pd.DataFrame({"path": range(400), "patient": range(400)})
    table = comparison_table(runs, folds, n_boot=2000, seed=0)
    fold0 = table[table["fold"] == 0].iloc[0]
    bootstrap_se = (fold0["ci_high"] - fold0["ci_low"]) / (2 * 1.96)
    assert bootstrap_se == pytest.approx(fold0["se"], rel=0.15)


def test_comparison_uses_images_both_settings_scored_and_checks_labels():
    runs, folds = _runs(n_folds=1)
    runs["stn", 0] = runs["stn", 0].iloc[10:]  # e.g. yolo leaving out images without a crop
    table = comparison_table(runs, folds, n_boot=50, seed=0)
    assert table.loc[table["fold"] == 0, "n_images"].item() == 110
    flipped = runs["stn", 0].copy()
    flipped.loc[flipped.index[0], "label"] = 1 - flipped["label"].iloc[0]
    runs["stn", 0] = flipped
    with pytest.raises(ValueError, match="disagree on the label"):
        comparison_table(runs, folds, n_boot=50, seed=0)


def test_comparison_is_seeded_and_metrics_are_numeric():
    runs, folds = _runs()
    first = comparison_table(runs, folds, n_boot=100, seed=7)
    pd.testing.assert_frame_equal(first, comparison_table(runs, folds, n_boot=100, seed=7))
    metrics = comparison_metrics(first)
    assert set(metrics) == {"baseline_vs_stn"}
    values = metrics["baseline_vs_stn"]
    assert set(values) == {"auc_diff", "z", "p", "ci_low", "ci_high"}
    assert all(isinstance(v, float) for v in values.values())


def _one_normal_in_fold_1():
    """`_runs()` with a single normal image left in fold 1: its AUC exists, DeLong's
    variance does not."""
    runs, folds = _runs()
    labels = runs["baseline", 1]["label"]
    keep = (labels == 1) | (labels.index == labels[labels == 0].index[0])
    for setting in ("baseline", "stn"):
        runs[setting, 1] = runs[setting, 1][keep]
    return runs, folds


def test_a_fold_too_small_for_delong_gets_no_p_value_but_the_rest_is_computed():
    runs, folds = _one_normal_in_fold_1()
    table = comparison_table(runs, folds, n_boot=100, seed=0).set_index("fold")
    assert np.isfinite(table.loc[0, ["se", "z", "p"]].astype(float)).all()
    assert table.loc[1, ["se", "z", "p"]].astype(float).isna().all()
    assert table.loc["all", ["se", "z", "p"]].astype(float).isna().all()
    one_normal = runs["stn", 1]
    expected = roc_auc_score(one_normal["label"], one_normal["score"])
    assert table.loc[1, "auc_b"] == pytest.approx(100 * expected)
    assert table.loc["all", "diff"] == pytest.approx(table.loc[[0, 1], "diff"].mean())
    assert 0 < table.loc[1, "n_boot_valid"] < 100  # replicates without the normal left out
    # metrics.json gets only numbers: what could not be computed is left out.
    metrics = comparison_metrics(table.reset_index())["baseline_vs_stn"]
    assert set(metrics) == {"auc_diff", "ci_low", "ci_high"}


def test_the_report_says_why_a_fold_has_no_p_value():
    runs, folds = _one_normal_in_fold_1()
    table = comparison_table(runs, folds, n_boot=50, seed=0)
    inputs = SimpleNamespace(comparisons=table)
    _, html = comparisons_section(inputs)
    assert html.count(">n/a</td>") == 4  # z and p of fold 1 and of all
    assert "fold 1 has fewer" in html
    _, complete = comparisons_section(
        SimpleNamespace(comparisons=comparison_table(*_runs(), 50, 0))
    )
    assert "n/a" not in complete
