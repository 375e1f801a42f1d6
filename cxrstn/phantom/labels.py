"""CheXpert look-alike labels: finding frequencies in the proportions of the paper's Table I.

A study is normal, abnormal or neither (excluded later by the binarizer), in the shares the
real PA images have. An abnormal study draws each finding independently with probability
c * q_f, where q_f = Table I count / abnormal count, and is redrawn while it has none; c
solves 1 - prod(1 - c * q_f) = c, which makes the share of abnormal studies with finding f
exactly q_f, so finding frequencies among all labelled images match Table I in expectation.
Part of the positives are coded -1.0 (uncertain), with each finding's real uncertain share.
"""

from __future__ import annotations

import numpy as np

from cxrstn.paper import TABLE_I, TABLE_I_ABNORMAL, TABLE_I_NORMAL
from cxrstn.phantom.findings import FINDINGS, SUPPORT_DEVICES

NO_FINDING = "No Finding"
LABEL_COLUMNS = (NO_FINDING, *FINDINGS, SUPPORT_DEVICES)

# Table I of the paper: counts among 27,654 PA images after U-Ones binarization.
# Measured on the real CheXpert-v1.0-small train.csv, PA images: share of each finding's
# mentions coded -1.0, and the share of images that are neither normal nor abnormal.
UNCERTAIN_SHARE = {
    "Enlarged Cardiomediastinum": 0.56,
    "Cardiomegaly": 0.28,
    "Lung Opacity": 0.10,
    "Lung Lesion": 0.15,
    "Edema": 0.33,
    "Consolidation": 0.65,
    "Pneumonia": 0.65,
    "Atelectasis": 0.50,
    "Pneumothorax": 0.19,
    "Pleural Effusion": 0.18,
    "Pleural Other": 0.43,
    "Fracture": 0.08,
}
NEITHER_SHARE = 0.06  # 1,772 of 29,420 real PA images
SUPPORT_DEVICES_SHARE = 0.28  # studies with Support Devices = 1.0
ZERO_SHARE = {"normal": 0.24, "abnormal": 0.10}  # unmentioned findings written 0.0, not blank


def _finding_scale(shares: np.ndarray) -> float:
    """The c in (0, 1] with 1 - prod(1 - c * q) = c (bisection; the left side is concave)."""
    low, high = 1e-9, 1.0
    if 1 - np.prod(1 - shares) >= 1.0:
        return 1.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        if 1 - np.prod(1 - mid * shares) > mid:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


_SHARES = np.array([TABLE_I[f] / TABLE_I_ABNORMAL for f in FINDINGS])
_FINDING_PROBABILITY = _finding_scale(_SHARES) * _SHARES
NORMAL_SHARE = TABLE_I_NORMAL / (TABLE_I_NORMAL + TABLE_I_ABNORMAL)


def sample_study(rng: np.random.Generator) -> dict[str, float]:
    """Label values of one study: column -> 1.0, 0.0, -1.0 or NaN (blank).

    The kind (normal, abnormal or neither) follows the real PA shares; see the module doc.
    """
    u = rng.random()
    if u < NEITHER_SHARE:
        kind = "neither"
    elif u < NEITHER_SHARE + (1 - NEITHER_SHARE) * NORMAL_SHARE:
        kind = "normal"
    else:
        kind = "abnormal"
    labels = dict.fromkeys(LABEL_COLUMNS, np.nan)
    if kind == "abnormal":
        present = np.zeros(len(FINDINGS), bool)
        while not present.any():
            present = rng.random(len(FINDINGS)) < _FINDING_PROBABILITY
        for name, positive in zip(FINDINGS, present, strict=True):
            if positive:
                labels[name] = -1.0 if rng.random() < UNCERTAIN_SHARE[name] else 1.0
            elif rng.random() < ZERO_SHARE["abnormal"]:
                labels[name] = 0.0
    else:
        if kind == "normal":
            labels[NO_FINDING] = 1.0
        for name in FINDINGS:
            if rng.random() < ZERO_SHARE["normal"]:
                labels[name] = 0.0
    devices = rng.random()
    if devices < SUPPORT_DEVICES_SHARE or (kind == "neither" and devices < 0.5):
        labels[SUPPORT_DEVICES] = 1.0
    elif devices > 0.97:
        labels[SUPPORT_DEVICES] = 0.0
    return labels


def binary_label(labels: dict[str, float]) -> int | None:
    """1 abnormal (a finding 1 or -1), 0 normal (No Finding 1), None neither (U-Ones rule)."""
    if any(labels[name] in (1.0, -1.0) for name in FINDINGS):
        return 1
    return 0 if labels[NO_FINDING] == 1.0 else None
