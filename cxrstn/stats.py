"""Paired comparison of the settings' ROC AUCs on the same test images.

Every setting is scored on the same test images of each fold, so the AUCs of two settings
are correlated and must be compared as pairs:

- **DeLong's test** (DeLong, DeLong & Clarke-Pearson 1988) in the fast midrank form of
  Sun & Xu (2014): the variance of the AUC difference from the covariance of the two
  models' structural components (one per abnormal and one per normal image).
- **Combined over folds**, the statistic is the mean of the per-fold AUC differences, the
  very quantity Table II reports (mean AUC of setting a minus mean AUC of setting b). The
  folds' test images (and patients) are disjoint, so given the trained models the per-fold
  differences are independent and Var(mean) = sum of the per-fold DeLong variances / K^2:
  a stratified DeLong test, fold as the stratum. Scores are not pooled across folds,
  because each fold has its own model and their score scales need not agree (a pooled
  AUC would mix calibration with ranking). Fisher's combination of p-values is not used
  either: it ignores the sign, so opposite effects in two folds would add up as evidence.
- **Paired bootstrap over patients**: within each fold, the test patients are drawn with
  replacement (all their images come along) and the same draw scores every setting;
  per replicate the per-fold differences and their mean are recomputed. The 95 %
  percentile interval is reported per fold and for the mean over folds.

Both, like Table II, treat the trained models as fixed: they measure the uncertainty
from the finite test set, not from training (that would need retraining per replicate).
AUCs, differences and intervals are in percent, like `cxrstn.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

PAIRS = (
    ("baseline", "stn"),
    ("baseline", "yolo"),
    ("yolo", "stn"),
    ("baseline", "stn_eq"),
    ("yolo", "stn_eq"),
    ("stn", "stn_eq"),
)
"""Pairs compared (a, b); the difference is AUC(b) - AUC(a), positive when b is better. New
pairs go at the end: each pair's bootstrap stream is seeded by its place."""
TABLE_COLUMNS = (
    "pair",
    "setting_a",
    "setting_b",
    "fold",
    "n_images",
    "auc_a",
    "auc_b",
    "diff",
    "se",
    "z",
    "p",
    "ci_low",
    "ci_high",
)


@dataclass(frozen=True)
class DeLongResult:
    """One paired DeLong comparison; AUCs and difference as fractions (0..1)."""

    auc_a: float
    auc_b: float
    var: float  # variance of auc_b - auc_a

    @property
    def diff(self) -> float:
        return self.auc_b - self.auc_a

    @property
    def z(self) -> float:
        return z_score(self.diff, self.var)

    @property
    def p(self) -> float:
        return two_sided_p(self.z)


def z_score(diff: float, var: float) -> float:
    """diff / sqrt(var); with zero variance 0 for no difference and +-inf otherwise; NaN when
    the variance could not be computed."""
    if math.isnan(var):
        return math.nan
    if var > 0:
        return diff / math.sqrt(var)
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def two_sided_p(z: float) -> float:
    return float(2 * norm.sf(abs(z)))


def _checked(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if labels.ndim != 1 or scores.shape[1] != len(labels):
        raise ValueError(
            f"labels {labels.shape} and scores {scores.shape} must be n and (models, n)"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (abnormal)")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if labels.min(initial=1) == labels.max(initial=0):
        raise ValueError("an AUC needs both normal and abnormal images")
    return labels.astype(int), scores


def delong_components(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components of each model (rows of `scores`).

    Returns (aucs (k,), v10 (k, m), v01 (k, n)): v10[r, i] is the share of normal images
    that abnormal image i outranks under model r (ties count half), v01[r, j] the share of
    abnormal images that outrank normal image j. Computed from midranks in O(n log n)
    (Sun & Xu 2014) instead of the m x n comparison matrix.
    """
    labels, scores = _checked(labels, scores)
    positives, negatives = scores[:, labels == 1], scores[:, labels == 0]
    m, n = positives.shape[1], negatives.shape[1]
    rank_all = rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    rank_pos = rankdata(positives, axis=1)
    rank_neg = rankdata(negatives, axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    aucs = v10.mean(axis=1)
    return aucs, v10, v01


def delong_covariance(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix S10/m + S01/n (sample covariances, ddof 1)."""
    aucs, v10, v01 = delong_components(labels, scores)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong's variance needs at least 2 abnormal and 2 normal images, got {m} and {n}"
        )
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, covariance


def delong_test(labels, scores_a, scores_b) -> DeLongResult:
    """DeLong's test of AUC(b) - AUC(a) for two models scored on the same images."""
    aucs, covariance = delong_covariance(labels, np.vstack([scores_a, scores_b]))
    var = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    return DeLongResult(float(aucs[0]), float(aucs[1]), max(float(var), 0.0))


def fold_delong_test(labels, scores_a, scores_b) -> DeLongResult:
    """`delong_test` for one test fold, which may be too small for it: with fewer than 2
    abnormal or 2 normal images the AUCs are still given but the variance is NaN (and so
    are z and p), rather than stopping the whole evaluation over one small fold."""
    labels = np.asarray(labels)
    if min((labels == 1).sum(), (labels == 0).sum()) >= 2:
        return delong_test(labels, scores_a, scores_b)
    aucs, _, _ = delong_components(labels, np.vstack([scores_a, scores_b]))
    return DeLongResult(float(aucs[0]), float(aucs[1]), math.nan)


def combine_folds(results: list[DeLongResult]) -> DeLongResult:
    """The stratified test of the mean over folds: mean AUCs, Var = sum of variances / K^2
    (NaN if any fold's variance is: the test of the mean needs every fold's)."""
    if not results:
        raise ValueError("combine_folds needs at least one fold")
    k = len(results)
    return DeLongResult(
        auc_a=float(np.mean([r.auc_a for r in results])),
        auc_b=float(np.mean([r.auc_b for r in results])),
        var=float(sum(r.var for r in results) / k**2),
    )


def weighted_auc(labels, scores, weights) -> np.ndarray:
    """ROC AUC of one model under each row of `weights` (replicates x images), ties half.

    An image of weight w counts as w copies of itself, so a bootstrap replicate is a row of
    draw counts. Rows whose abnormal or normal weight is zero give NaN.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if weights.shape[1] != len(labels) or scores.shape != labels.shape:
        raise ValueError(f"weights {weights.shape} do not match {len(labels)} images")
    order = np.argsort(scores, kind="stable")
    scores, labels, weights = scores[order], labels[order], weights[:, order]
    negative = weights * (labels == 0)
    positive = weights * (labels == 1)
    # Normal weight strictly below each score and tied with it, via the tie groups' bounds.
    starts = np.searchsorted(scores, scores, side="left")
    ends = np.searchsorted(scores, scores, side="right")
    cumulative = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(negative, axis=1)], axis=1)
    below = cumulative[:, starts]
    tied = cumulative[:, ends] - below
    wins = (positive * (below + 0.5 * tied)).sum(axis=1)
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def patient_draws(patients, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Draw counts per image (n_boot x images): patients resampled with replacement, each
    drawn patient bringing all of its images."""
    codes, uniques = pd.factorize(pd.Series(patients), sort=True)
    drawn = rng.integers(0, len(uniques), size=(n_boot, len(uniques)))
    counts = np.stack([np.bincount(row, minlength=len(uniques)) for row in drawn])
    return counts[:, codes]


def paired_frames(runs: dict, folds: pd.DataFrame, a: str, b: str) -> dict[int, pd.DataFrame]:
    """Per fold, the test images scored by both settings: `path, patient, label, score_a, score_b`.

    Only images both settings scored are compared (the evaluate stage has already checked
    that all settings scored the same test images); `n_images` in the table says how many.
    """
    patient_of = dict(zip(folds["path"], folds["patient"], strict=True))
    frames = {}
    fold_numbers = sorted({fold for setting, fold in runs if setting in (a, b)})
    for fold in fold_numbers:
        tests = []
        for setting in (a, b):
            if (setting, fold) not in runs:
                raise ValueError(f"no run of {setting} fold {fold} to compare with")
            run = runs[setting, fold]
            tests.append(run.loc[run["split"] == "test", ["path", "label", "score"]])
        merged = tests[0].merge(tests[1], on="path", suffixes=("_a", "_b"), validate="1:1")
        if (merged["label_a"] != merged["label_b"]).any():
            bad = merged.loc[merged["label_a"] != merged["label_b"], "path"].iloc[0]
            raise ValueError(f"{a} and {b} fold {fold} disagree on the label of {bad}")
        unknown = sorted(set(merged["path"]) - set(patient_of))
        if unknown:
            raise ValueError(
                f"{len(unknown)} test images of fold {fold} are not in data/folds.csv, "
                f"e.g. {unknown[0]}"
            )
        frames[fold] = pd.DataFrame(
            {
                "path": merged["path"],
                "patient": merged["path"].map(patient_of),
                "label": merged["label_a"].astype(int),
                "score_a": merged["score_a"],
                "score_b": merged["score_b"],
            }
        )
    return frames


def compare_pair(
    frames: dict[int, pd.DataFrame], n_boot: int, seed: int, level: float = 0.95
) -> list[dict]:
    """Rows of the table for one pair: each fold and 'all' (the mean over folds).

    The bootstrap draws each fold's patients independently; the 'all' interval is the
    percentile interval of the replicates' mean over folds. Replicates in which a fold
    lost a whole class are left out and counted in `n_boot_valid`.
    """
    if n_boot < 1:
        raise ValueError(f"the bootstrap needs at least one resample, got {n_boot}")
    rng = np.random.default_rng(seed)
    rows, results, replicate_diffs = [], [], []
    for fold, frame in frames.items():
        labels = frame["label"].to_numpy()
        result = fold_delong_test(labels, frame["score_a"], frame["score_b"])
        draws = patient_draws(frame["patient"], n_boot, rng)
        diffs = weighted_auc(labels, frame["score_b"], draws) - weighted_auc(
            labels, frame["score_a"], draws
        )
        results.append(result)
        replicate_diffs.append(diffs)
        rows.append(_row(fold, len(frame), result, diffs, level))
    mean_diffs = np.mean(replicate_diffs, axis=0)  # NaN where any fold's replicate is NaN
    total = sum(len(frame) for frame in frames.values())
    rows.append(_row("all", total, combine_folds(results), mean_diffs, level))
    return rows


def _row(fold, n_images: int, result: DeLongResult, diffs: np.ndarray, level: float) -> dict:
    valid = diffs[np.isfinite(diffs)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(valid, [tail, 100 - tail]) if valid.size else (math.nan,) * 2
    return {
        "fold": fold,
        "n_images": n_images,
        "auc_a": 100 * result.auc_a,
        "auc_b": 100 * result.auc_b,
        "diff": 100 * result.diff,
        "se": 100 * math.sqrt(result.var),
        "z": result.z,
        "p": result.p,
        "ci_low": 100 * float(low),
        "ci_high": 100 * float(high),
        "n_boot_valid": int(valid.size),
    }


def comparison_table(
    runs: dict, folds: pd.DataFrame, n_boot: int, seed: int, pairs=PAIRS
) -> pd.DataFrame:
    """The tidy table for the report: one row per pair x (fold or 'all').

    `runs` as from `metrics.load_runs` ((setting, fold) -> predictions), `folds` as
    data/folds.csv (for the patients). Pairs with a setting that has no runs are left
    out. Columns: TABLE_COLUMNS plus `n_boot_valid`; AUCs, diff, se and CI in percent,
    diff = auc_b - auc_a. Each pair gets its own seeded stream, so adding a pair does
    not change the others' intervals.
    """
    settings = {setting for setting, _ in runs}
    rows = []
    for index, (a, b) in enumerate(pairs):
        if a not in settings or b not in settings:
            continue
        frames = paired_frames(runs, folds, a, b)
        for row in compare_pair(frames, n_boot, seed=seed + index):
            rows.append({"pair": f"{a}_vs_{b}", "setting_a": a, "setting_b": b, **row})
    columns = [*TABLE_COLUMNS, "n_boot_valid"]
    return pd.DataFrame(rows, columns=columns)


def comparison_metrics(table: pd.DataFrame) -> dict:
    """For reports/metrics.json: per pair, the 'all' row's diff, z, p and interval.

    DVC metrics must be numbers, so a value that could not be computed (NaN) is left out
    rather than written as NaN, which is not JSON.
    """
    combined = table[table["fold"].astype(str) == "all"]
    metrics = {}
    for row in combined.itertuples():
        values = {
            "auc_diff": round(float(row.diff), 4),
            "z": round(float(row.z), 4),
            "p": float(f"{row.p:.4g}"),
            "ci_low": round(float(row.ci_low), 4),
            "ci_high": round(float(row.ci_high), 4),
        }
        metrics[row.pair] = {key: value for key, value in values.items() if math.isfinite(value)}
    return metrics
