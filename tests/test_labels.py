import numpy as np
import pandas as pd
import pytest

from cxrstn.labels import binarize, summary
from cxrstn.sources import chexpert
from cxrstn.sources.chexpert import FINDINGS

B = np.nan  # a blank cell


def table(*rows):
    """Rows of (view, projection, no_finding, {finding: value}, support_devices)."""
    records = []
    for i, (view, proj, nofind, findings, devices) in enumerate(rows):
        record = {
            "Path": f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_{view.lower()}.jpg",
            "Sex": "Female",
            "Age": 50,
            "Frontal/Lateral": view,
            "AP/PA": proj,
            "No Finding": nofind,
        }
        record |= {f: findings.get(f, B) for f in FINDINGS}
        record["Support Devices"] = devices
        records.append(record)
    return pd.DataFrame.from_records(records, columns=chexpert.COLUMNS)


ROWS = table(
    ("Frontal", "PA", 1.0, {}, B),  # 0 normal
    ("Frontal", "PA", 1.0, {}, 1.0),  # 1 normal: devices do not make an image abnormal
    ("Frontal", "PA", B, {"Edema": 1.0}, B),  # 2 abnormal
    ("Frontal", "PA", B, {"Edema": -1.0}, B),  # 3 uncertain only
    ("Frontal", "PA", B, {"Edema": -1.0, "Fracture": 1.0}, B),  # 4 abnormal (certain)
    ("Frontal", "PA", B, {"Edema": 0.0}, 1.0),  # 5 neither
    ("Frontal", "AP", B, {"Edema": 1.0}, B),  # 6 AP
    ("Lateral", B, B, {"Edema": 1.0}, B),  # 7 lateral
    ("Frontal", "PA", B, {}, B),  # 8 neither (all blank)
)


@pytest.mark.parametrize(
    ("policy", "kept", "labels", "reasons"),
    [
        ("ones", [0, 1, 2, 3, 4], [0, 0, 1, 1, 1], {"neither normal nor abnormal": 2}),
        ("zeros", [0, 1, 2, 4], [0, 0, 1, 1], {"neither normal nor abnormal": 3}),
        (
            "ignore",
            [0, 1, 2, 4],
            [0, 0, 1, 1],
            {"neither normal nor abnormal": 2, "only uncertain findings (ignore policy)": 1},
        ),
    ],
)
def test_policies(policy, kept, labels, reasons):
    out, excluded = binarize(ROWS, policy, ["PA"])
    assert [int(p.split("patient")[1][:5]) for p in out["path"]] == kept
    assert out["label"].tolist() == labels
    assert excluded == reasons | {"lateral view": 1, "frontal view AP": 1}
    assert len(out) + sum(excluded.values()) == len(ROWS)


def test_finding_columns_follow_policy():
    ones, _ = binarize(ROWS, "ones")
    zeros, _ = binarize(ROWS, "zeros")
    assert ones.set_index("path")["Edema"].tolist() == [0, 0, 1, 1, 1]
    assert zeros.set_index("path")["Edema"].tolist() == [0, 0, 1, 0]
    assert set(ones.columns) == {"path", "patient", "study", "label", *FINDINGS}
    assert ones["patient"].iloc[2] == "patient00002"
    assert ones["study"].iloc[2] == "patient00002/study1"


def test_views_are_a_parameter():
    out, excluded = binarize(ROWS, "ones", ["PA", "AP"])
    assert len(out) == 6
    assert "frontal view AP" not in excluded


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="labels.uncertain"):
        binarize(ROWS, "maybe")


def test_summary_counts():
    out, excluded = binarize(ROWS, "ones")
    counts = summary(out, excluded, len(ROWS))
    assert (counts["normal"], counts["abnormal"], counts["excluded_total"]) == (2, 3, 4)
    assert counts["findings"]["Edema"] == 3
    assert counts["findings"]["Fracture"] == 1


def test_real_train_csv_gives_table_one(real_samples):
    """U-Ones on the real train.csv: 22,149 abnormal / 5,499 normal (paper: 22,146 / 5,508)."""
    gz = real_samples / "chexpert" / "torchxrayvision_full_train" / "chexpert_train.csv.gz"
    out, excluded = binarize(chexpert.read_csv(gz), "ones", ["PA"])
    assert (out["label"] == 1).sum() == 22149
    assert (out["label"] == 0).sum() == 5499
    assert excluded["neither normal nor abnormal"] == 1772
    assert sum(excluded.values()) + len(out) == 223414
    assert out["Lung Opacity"].sum() == 10793
    assert out["Pleural Effusion"].sum() == 9884
