"""Real data in one step: the params.real.yaml profile, the data path (binarize -> resize ->
split -> thorax_boxes) on the real files in ../shared/real-samples/, and the one-line error
each common layout mistake gives (the ones docs/real-data.md lists).

The real samples are read where they lie and never copied into the project; the tests that
need them skip when the folder is absent.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrstn.cli import set_args
from cxrstn.folds import assign_folds
from cxrstn.images import ImageStore, read_image, resize_square, write_store
from cxrstn.io import load_params
from cxrstn.labels import binarize
from cxrstn.params import check_params
from cxrstn.sources import chexpert
from cxrstn.sources.lung_sets import lung_samples
from cxrstn.thorax import build_yolo_dataset

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real-samples"
needs_samples = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is not here")


def test_the_real_profile_is_params_yaml_with_real_roots_and_no_lung_boxes():
    ours = load_params(ROOT / "params.yaml", check=False)
    real = load_params(ROOT / "params.real.yaml", check=False)
    assert check_params(real, "params.real.yaml") == []
    args = set_args(ours, real)  # refuses a profile that lacks a key or has an extra one
    changed = {arg.split("=")[0] for arg in args[1::2]}
    roots = {"chexpert", "jsrt", "scr", "montgomery", "shenzhen", "shenzhen_masks"}
    assert changed == {f"data.{key}" for key in roots} | {"data.lung_boxes", "resize.size"}
    assert real["data"]["lung_boxes"] is None
    assert not any(str(real["data"][key]).startswith("data/phantom") for key in roots)
    applied = copy.deepcopy(ours)  # what `dvc exp run -S ...` makes of params.yaml
    for assignment in args[1::2]:
        key, value = assignment.split("=", 1)
        section, leaf = key.split(".")
        applied[section][leaf] = yaml.safe_load(value)
    assert applied == real


@needs_samples
def test_binarize_resize_split_thorax_boxes_on_real_files(tmp_path):
    # binarize: the real train.csv's first 1,000 rows, PA and U-Ones as the default profile
    csv_path = chexpert.find_csv(REAL / "chexpert")  # one level too high still works
    assert csv_path == REAL / "chexpert" / "CheXpert-v1.0-small" / "train.csv"
    table = chexpert.read_csv(csv_path)
    labels, exclusions = binarize(table, "ones", ["PA"])
    assert len(table) == 1000 and len(labels) == 210
    assert labels["label"].value_counts().to_dict() == {1: 157, 0: 53}
    assert exclusions == {
        "lateral view": 213,
        "frontal view AP": 563,
        "neither normal nor abnormal": 14,
    }

    # resize: the real CheXpert image there is (valid.csv, an AP film) into an image store
    valid_csv = csv_path.with_name("valid.csv")
    valid, _ = binarize(chexpert.read_csv(valid_csv), "ones", ["AP", "PA"])
    files = {p: chexpert.image_file(valid_csv, p) for p in valid["path"]}
    present = [p for p, file in files.items() if file.is_file()]
    assert present == ["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"]
    images = [resize_square(read_image(files[p], min_side=64), 64) for p in present]
    assert write_store(tmp_path / "resized", present, images, 64) == 1
    store = ImageStore(tmp_path / "resized")
    assert store.size == 64 and 40 < store[present[0]].mean() < 215  # a radiograph, not blank

    # split: patient-grouped folds of the real labels
    folds = assign_folds(labels, 5, 0)
    assert folds.groupby("patient")["fold"].nunique().max() == 1
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    assert all(set(group["label"]) == {0, 1} for _, group in folds.groupby("fold"))

    # thorax_boxes: the real Shenzhen films with their masks, and Montgomery's original
    # film, whose ManualMask folder the samples lack: counted as without mask
    samples = lung_samples(
        montgomery=REAL / "montgomery" / "MontgomerySet",
        shenzhen=REAL / "shenzhen" / "derived_arcus",
        shenzhen_masks=REAL / "shenzhen" / "derived_arcus" / "mask",
    )
    counts = build_yolo_dataset(samples, tmp_path / "thorax", 64, 0.2, 0)
    assert counts["sources"]["montgomery"]["without_mask"] == 1
    assert counts["sources"]["shenzhen"]["with_mask"] == 11
    assert counts["total"] | {"train": 0} == counts["total"] | {
        "images": 12, "with_mask": 11, "without_mask": 1, "excluded": 0, "train": 0
    }  # fmt: skip
    assert counts["total"]["train"] + counts["total"]["val"] == 11
    boxes = pd.read_csv(tmp_path / "thorax" / "boxes.csv")
    width = (boxes["x1"] - boxes["x0"]) / boxes["width"]
    assert np.all((width > 0.5) & (width < 0.95))  # both lungs, not the whole film


# (what the user set, the call a stage makes, the one line it stops with)
MISTAKES = [
    (
        "data.chexpert at a folder without train.csv",
        lambda: chexpert.find_csv(REAL / "montgomery"),
        FileNotFoundError,
        f"{REAL / 'montgomery'}: no train.csv in this folder or the two levels below it",
    ),
    (
        "data.chexpert at the image folder",
        lambda: chexpert.find_csv(REAL / "chexpert" / "CheXpert-v1.0-small" / "valid"),
        FileNotFoundError,
        "valid: no train.csv in this folder or the two levels below it",
    ),
    (
        "data.shenzhen without data.shenzhen_masks",
        lambda: lung_samples(shenzhen=REAL / "shenzhen" / "derived_arcus"),
        ValueError,
        "data.shenzhen is set but data.shenzhen_masks is not: Shenzhen needs its lung masks",
    ),
    (
        "data.shenzhen at the mask folder",
        lambda: lung_samples(
            shenzhen=REAL / "shenzhen" / "derived_arcus" / "mask",
            shenzhen_masks=REAL / "shenzhen" / "derived_arcus" / "mask",
        ),
        ValueError,
        "mask: no CXR_png/CHNCXR_*.png images found below this folder",
    ),
    (
        "data.montgomery at a copy renamed from the original layout",
        lambda: lung_samples(montgomery=REAL / "montgomery" / "derived_kaggle_512"),
        ValueError,
        "derived_kaggle_512: no CXR_png/MCUCXR_*.png images found below this folder",
    ),
    (
        "data.jsrt without data.scr",
        lambda: lung_samples(jsrt=REAL / "JSRT"),
        ValueError,
        "data.jsrt is set but data.scr is not: JSRT needs the SCR lung masks",
    ),
    (
        "a root that does not exist",
        lambda: lung_samples(jsrt=REAL / "JSRT", scr=REAL / "SCR"),
        FileNotFoundError,
        f"{REAL / 'JSRT'}: dataset folder not found",
    ),
]


@needs_samples
@pytest.mark.parametrize(
    ("mistake", "call", "kind", "line"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_each_common_mistake_stops_with_its_documented_line(mistake, call, kind, line):
    with pytest.raises(kind) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message and message.endswith(line)
    documented = line.replace(str(REAL), "$R")
    assert documented.split(": ", 1)[-1] in (ROOT / "docs" / "real-data.md").read_text(), mistake


def test_the_phantom_lung_boxes_on_real_images_say_what_to_set(tmp_path):
    from cxrstn.roi import phantom_lung_boxes

    truth = tmp_path / "truth.csv"
    truth.write_text(
        "file,x0,y0,x1,y1,width,height\nCheXpert-v1.0-small/train/a.jpg,1,1,9,9,10,10\n"
    )
    with pytest.raises(ValueError) as raised:
        phantom_lung_boxes(truth, ["CheXpert-v1.0-small/train/patient99999/study1/b.jpg"])
    line = str(raised.value)
    hint = "(data.lung_boxes is the phantom's truth; real data needs data.lung_boxes: null)"
    assert line.endswith(hint)
    assert hint in (ROOT / "docs" / "real-data.md").read_text()
