"""Binary normal/abnormal labels from CheXpert's 14 observation columns.

The rule (the paper's §III-A): keep frontal images of the chosen projections (PA by
default); apply the uncertainty policy to the 12 findings; an image is abnormal if any
finding is positive, normal if `No Finding` is 1.0 and no finding is positive, and
excluded otherwise. `Support Devices` never makes an image abnormal. Only the CSV is
read: no image file is needed.
"""

from __future__ import annotations

import pandas as pd

from cxrstn.sources.chexpert import FINDINGS, patient_of, study_of

POLICIES = ("ones", "zeros", "ignore")


def binarize(
    table: pd.DataFrame, uncertain: str = "ones", views=("PA",)
) -> tuple[pd.DataFrame, dict]:
    """Return (labels, exclusions) for a CheXpert table as returned by `chexpert.read_csv`.

    `labels` has one row per kept image: `path, patient, study, label` (0 normal,
    1 abnormal) and the 12 findings as 0/1 after the policy. `exclusions` counts every
    dropped row by reason, so that kept + excluded = all rows.

    Policies for uncertain (-1.0) findings: `ones` counts them as present (U-Ones),
    `zeros` as absent, `ignore` as unknown: an image with a certain positive finding is
    still abnormal, one whose only findings are uncertain is excluded.
    """
    if uncertain not in POLICIES:
        raise ValueError(f"labels.uncertain must be one of {POLICIES}, got {uncertain!r}")
    views = list(views)
    exclusions: dict[str, int] = {}

    def drop(mask: pd.Series, reason: str) -> pd.DataFrame:
        if int(mask.sum()):
            exclusions[reason] = exclusions.get(reason, 0) + int(mask.sum())
        return table[~mask]

    table = drop(table["Frontal/Lateral"] != "Frontal", "lateral view")
    projection = table["AP/PA"].fillna("blank")
    for view in sorted(set(projection) - set(views)):
        table = drop(table["AP/PA"].fillna("blank") == view, f"frontal view {view}")

    findings = table[FINDINGS]
    certain = findings == 1.0
    uncertain_mask = findings == -1.0
    present = certain | uncertain_mask if uncertain == "ones" else certain
    abnormal = present.any(axis=1)
    normal = (table["No Finding"] == 1.0) & ~abnormal
    if uncertain == "ignore":
        only_uncertain = ~abnormal & uncertain_mask.any(axis=1)
        table, abnormal, normal, present = _keep(~only_uncertain, table, abnormal, normal, present)
        if int(only_uncertain.sum()):
            exclusions["only uncertain findings (ignore policy)"] = int(only_uncertain.sum())
    neither = ~abnormal & ~normal
    if int(neither.sum()):
        exclusions["neither normal nor abnormal"] = int(neither.sum())
    table, abnormal, normal, present = _keep(~neither, table, abnormal, normal, present)

    labels = pd.DataFrame(
        {
            "path": table["Path"].to_numpy(),
            "patient": [patient_of(p) for p in table["Path"]],
            "study": [study_of(p) for p in table["Path"]],
            "label": abnormal.astype(int).to_numpy(),
        }
    )
    for finding in FINDINGS:
        labels[finding] = present[finding].astype(int).to_numpy()
    return labels, exclusions


def _keep(mask, *frames):
    return tuple(frame[mask] for frame in frames)


def summary(labels: pd.DataFrame, exclusions: dict, n_rows: int) -> dict:
    """Counts in the shape of the paper's Table I, plus exclusions by reason."""
    return {
        "rows": n_rows,
        "kept": len(labels),
        "normal": int((labels["label"] == 0).sum()),
        "abnormal": int((labels["label"] == 1).sum()),
        "patients": int(labels["patient"].nunique()),
        "findings": {f: int(labels[f].sum()) for f in FINDINGS},
        "excluded": dict(sorted(exclusions.items())),
        "excluded_total": int(sum(exclusions.values())),
    }
