"""Patient-grouped cross-validation folds and the rule that gives each fold its role.

Folds are made by a greedy multi-label stratification over patients: every patient's
images go to one fold, and each patient goes to the fold where the counts of images,
normal and abnormal images and each finding stay closest to an even share. This keeps
the label *and* finding proportions of every fold close to the whole (scikit-learn's
StratifiedGroupKFold balances a single label only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrstn.sources.chexpert import FINDINGS


def fold_roles(fold: int, n_folds: int) -> dict:
    """Run `fold` tests on fold k, validates on fold k+1 (mod K) and trains on the rest."""
    if n_folds < 3:
        raise ValueError(f"need at least 3 folds (train, validation, test), got {n_folds}")
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    val = (fold + 1) % n_folds
    return {"test": fold, "val": val, "train": [k for k in range(n_folds) if k not in (fold, val)]}


def split_of(folds: pd.Series, fold: int, n_folds: int) -> pd.Series:
    """Map each image's fold number to 'train', 'val' or 'test' for run `fold`."""
    roles = fold_roles(fold, n_folds)
    names = {roles["test"]: "test", roles["val"]: "val"} | {k: "train" for k in roles["train"]}
    return folds.map(names)


def assign_folds(labels: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """Return `path, patient, label, fold` with every patient in exactly one fold."""
    if n_folds < 3:
        raise ValueError(f"need at least 3 folds (train, validation, test), got {n_folds}")
    findings = [f for f in FINDINGS if f in labels.columns]
    features = pd.DataFrame(
        {"images": 1, "abnormal": labels["label"] == 1, "normal": labels["label"] == 0}
        | {f: labels[f] == 1 for f in findings}
    ).astype(float)
    per_patient = features.groupby(labels["patient"].to_numpy(), sort=True).sum()
    if len(per_patient) < n_folds:
        raise ValueError(f"{len(per_patient)} patients cannot fill {n_folds} folds")

    counts = per_patient.to_numpy()
    target = np.maximum(counts.sum(axis=0) / n_folds, 1.0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    order = order[np.argsort(-counts[order, 0], kind="stable")]  # large patients first

    load = np.zeros((n_folds, counts.shape[1]))
    patient_fold = np.empty(len(counts), dtype=int)
    for p in order:
        c = counts[p]
        # Increase of the summed squared relative deviation if p joins each fold.
        cost = ((2 * load * c + c * c) / target**2).sum(axis=1)
        best = np.flatnonzero(np.isclose(cost, cost.min()))
        fold = best[np.argmin(load[best, 0])]
        patient_fold[p] = fold
        load[fold] += c

    fold_of = dict(zip(per_patient.index, patient_fold, strict=True))
    return pd.DataFrame(
        {
            "path": labels["path"].to_numpy(),
            "patient": labels["patient"].to_numpy(),
            "label": labels["label"].to_numpy(),
            "fold": labels["patient"].map(fold_of).to_numpy(),
        }
    )


def check_fold_ids(split: dict) -> None:
    """`split.fold_ids` (the training runs dvc.yaml creates) must be exactly 0..folds-1."""
    expected = list(range(int(split["folds"])))
    if list(split["fold_ids"]) != expected:
        raise ValueError(
            f"params.yaml: split.fold_ids is {split['fold_ids']} but split.folds = "
            f"{split['folds']} needs {expected}; set both, e.g. "
            f"-S split.folds=3 -S 'split.fold_ids=[0,1,2]'"
        )
