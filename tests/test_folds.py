import numpy as np
import pandas as pd
import pytest

from cxrstn.folds import assign_folds, check_fold_ids, fold_roles, split_of
from cxrstn.sources.chexpert import FINDINGS


def synthetic_labels(n_patients=400, seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for s in range(rng.integers(1, 5)):
            label = int(rng.random() < 0.8)
            row = {"path": f"p{p}/s{s}.jpg", "patient": f"patient{p:05d}", "label": label}
            row |= {f: int(label and rng.random() < 0.2) for f in FINDINGS}
            rows.append(row)
    return pd.DataFrame(rows)


def test_roles_rule():
    assert fold_roles(0, 5) == {"test": 0, "val": 1, "train": [2, 3, 4]}
    assert fold_roles(4, 5) == {"test": 4, "val": 0, "train": [1, 2, 3]}
    with pytest.raises(ValueError, match="fold must be"):
        fold_roles(5, 5)
    with pytest.raises(ValueError, match="at least 3"):
        fold_roles(0, 2)
    assert split_of(pd.Series([0, 1, 2, 3, 4]), 4, 5).tolist() == [
        "val",
        "train",
        "train",
        "train",
        "test",
    ]


def test_every_role_is_used_once_across_runs():
    tests = [fold_roles(k, 5)["test"] for k in range(5)]
    vals = [fold_roles(k, 5)["val"] for k in range(5)]
    assert sorted(tests) == sorted(vals) == list(range(5))


def test_no_patient_in_two_folds_and_balanced():
    labels = synthetic_labels()
    folds = assign_folds(labels, 5, seed=0)
    assert folds["path"].tolist() == labels["path"].tolist()
    assert folds.groupby("patient")["fold"].nunique().max() == 1
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 0.05 * len(folds)
    overall = labels["label"].mean()
    for _, group in folds.groupby("fold"):
        assert abs(group["label"].mean() - overall) < 0.02
    merged = labels.assign(fold=folds["fold"])
    for finding in FINDINGS:
        share = merged.groupby("fold")[finding].sum() / merged[finding].sum()
        assert share.between(0.2 - 0.04, 0.2 + 0.04).all(), finding


def test_deterministic_for_a_seed():
    labels = synthetic_labels()
    a = assign_folds(labels, 5, seed=3)["fold"]
    b = assign_folds(labels, 5, seed=3)["fold"]
    c = assign_folds(labels, 5, seed=4)["fold"]
    assert a.equals(b)
    assert not a.equals(c)


def test_too_few_patients():
    labels = synthetic_labels(n_patients=3)
    with pytest.raises(ValueError, match="3 patients cannot fill 5 folds"):
        assign_folds(labels, 5, seed=0)


def test_fold_ids_must_be_all_folds():
    check_fold_ids({"folds": 3, "fold_ids": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"split.fold_ids is \[0, 1\] but split.folds = 3"):
        check_fold_ids({"folds": 3, "fold_ids": [0, 1]})
