"""The lettering shortcut test on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cxrstn.images import read_image
from cxrstn.phantom.datasets import generate
from cxrstn.shortcut import (
    ArrayStore,
    add_decisions,
    burn_lettering,
    check_reproduced,
    chexpert_tasks,
    cropped_variants,
    image_rng,
    is_phantom,
    make_variants,
    score_variants,
    summarize,
    text_free_file,
)

SIZE = 64
BOX = (16, 12, 48, 52)  # lung box of the constructed images (x1, y1 exclusive)
PAD = 2  # max(2, round(0.02 * 64))


def _image(value: int = 60) -> np.ndarray:
    image = np.full((SIZE, SIZE), value, np.uint8)
    image[BOX[1] : BOX[3], BOX[0] : BOX[2]] = 128
    return image


def test_burning_keeps_the_lung_box_and_its_margin_pixel_exact():
    for seed in range(20):
        original = _image()
        burned, drawn = burn_lettering(original, BOX, "AP", image_rng(seed, "x.jpg"))
        assert drawn >= 1
        inside = np.s_[BOX[1] - PAD : BOX[3] + PAD, BOX[0] - PAD : BOX[2] + PAD]
        np.testing.assert_array_equal(burned[inside], original[inside])
        assert (burned != original).sum() > 10  # the lettering is there, outside
        assert burned.max() > 128  # white ink, brighter than anything in the image
    with pytest.raises(ValueError, match="uint8 2-D"):
        burn_lettering(original.astype(float), BOX, "PA", image_rng(0, "x"))


class RegionModel(nn.Module):
    """A 'classifier' reading one region: the lung box's mean, or the brightest pixel outside."""

    def __init__(self, outside: bool):
        super().__init__()
        self.outside = outside
        mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        mask[BOX[1] : BOX[3], BOX[0] : BOX[2]] = True
        self.register_buffer("lungs", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = x[:, 0][:, self.lungs].mean(dim=1)
        if not self.outside:
            return 40 * (inside - 0.5)
        brightest = x[:, 0][:, ~self.lungs].amax(dim=1)
        return torch.where(brightest > 0.5, 20.0, 10 * (inside - 0.5))


def _constructed(n=40, seed=0):
    """Lungs brighter on abnormal images (with overlap); nothing bright outside the lungs."""
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * (n // 2))
    originals, burned = {}, {}
    for i, label in enumerate(labels):
        image = _image()
        lungs = 118 + 20 * label + rng.integers(-15, 16)
        image[BOX[1] : BOX[3], BOX[0] : BOX[2]] = lungs
        path = f"img{i}.jpg"
        originals[path] = image
        burned[path] = burn_lettering(image, BOX, "PA", image_rng(seed, path))[0]
    variants = {
        "original": ArrayStore(originals, "original"),
        "burned": ArrayStore(burned, "burned"),
        "removed": ArrayStore(originals, "removed"),
    }
    test = pd.DataFrame({"path": list(originals), "label": labels})
    return variants, test


def _shortcut_table(model, variants, test):
    scored = score_variants(model, variants, test, 8, torch.device("cpu"))
    scored = scored.assign(setting="s", fold=0, text=np.arange(len(test)) % 4 == 0)
    return add_decisions(scored, recall=0.95)


def test_a_model_reading_outside_the_lungs_flips_and_one_reading_inside_does_not():
    variants, test = _constructed()
    inside = _shortcut_table(RegionModel(outside=False), variants, test)
    np.testing.assert_array_equal(inside["score_burned"], inside["score"])
    values = summarize(inside)["s"]
    assert values["flip_burned"] == 0 and values["delta_auc_burned"] == 0
    assert values["n_images"] == 40 and values["n_text"] == 10

    outside = _shortcut_table(RegionModel(outside=True), variants, test)
    # Without text the outside pixels are dark (60/255): the scores rank by the lungs alone.
    # With white lettering every score jumps to sigmoid(20), above the threshold, so exactly
    # the images called normal before flip, all upwards, and the AUC drops to 50 (all tied).
    called_normal = 100 * (~outside["called"]).mean()
    assert called_normal > 20
    values = summarize(outside)["s"]
    assert values["flip_burned"] == pytest.approx(called_normal)
    assert values["flip_burned_up"] == pytest.approx(called_normal)
    assert outside["called_burned"].all()
    assert values["auc_burned"] == pytest.approx(50)
    assert values["delta_auc_burned"] == pytest.approx(50 - values["auc"])
    assert values["flip_removed"] == 0 and values["delta_auc_removed"] == 0  # removed = original


def test_check_reproduced_catches_other_scores():
    scored = pd.DataFrame({"path": ["a", "b"], "score": [0.2, 0.7]})
    check_reproduced(scored, scored.assign(score=[0.20001, 0.7]), "run")
    with pytest.raises(ValueError, match="run: scores of the unmodified test images differ"):
        check_reproduced(scored, scored.assign(score=[0.2, 0.8]), "run")


def test_cropped_variants_cut_the_crop_box_of_every_variant():
    image = np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE).astype(np.uint8)
    variants = {"original": {"a": image, "b": image}}
    crops = pd.DataFrame(
        {
            "path": ["a", "b"],
            "x0": [8.0, None],
            "y0": [8.0, None],
            "x1": [40.0, None],
            "y1": [24.0, None],
            "conf": [0.95, 0.1],
            "status": ["cropped", "whole"],
        }
    )
    stored = {"original": ArrayStore({"a": image[:32, :32], "b": image[:32, :32]}, "s")}
    cropped = cropped_variants(variants, stored, crops, SIZE, 32, ["a", "b"])["original"]
    # box 32 x 16 -> square of side 32 centred on (24, 16): rows 0..32, cols 8..40
    np.testing.assert_array_equal(cropped["a"], image[0:32, 8:40])
    np.testing.assert_array_equal(cropped["b"], image[:32, :32])  # whole: the stored image
    with pytest.raises(ValueError, match="no row for test image c"):
        cropped_variants({"original": {"c": image}}, stored, crops, SIZE, 32, ["c"])


def test_is_phantom(tmp_path):
    assert is_phantom(tmp_path / "ph" / "CheXpert-v1.0-small", tmp_path / "ph")
    assert is_phantom(tmp_path / "ph" / "x" / ".." / "CheXpert-v1.0-small", tmp_path / "ph")
    assert not is_phantom(tmp_path / "real" / "CheXpert-v1.0-small", tmp_path / "ph")


PHANTOM = {
    "seed": 0,
    "chexpert_patients": 12,
    "chexpert_size": [160, 195],
    "jsrt_images": 0,
    "jsrt_side": 256,
    "montgomery_images": 0,
    "montgomery_size": [402, 489],
    "shenzhen_images": 0,
    "shenzhen_size": [300, 292],
    "shenzhen_mask_share": 0.85,
    "finding_contrast": 1.5,
    "workers": 1,
}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """The same phantom at correlation 0 (text on half of the normals) and 1 (on none)."""
    root = tmp_path_factory.mktemp("phantoms")
    truths = {}
    for correlation in (0.0, 1.0):
        params = {**PHANTOM, "text_label_correlation": correlation}
        truths[correlation] = generate(params, root / str(correlation))
    return root, truths


def test_removal_gives_the_phantoms_own_text_free_rendering(phantoms, tmp_path):
    root, truths = phantoms
    both = truths[0.0].merge(truths[1.0], on="file", suffixes=("", "_c1"))
    # A normal frontal that has text at correlation 0 has none at 1; all else is equal.
    normal_with_text = both[
        (both["label"] == 0) & (both["words"] > 0) & (both["words_c1"] == 0)
        & (both["view"] != "LAT")
    ]  # fmt: skip
    assert len(normal_with_text) >= 1
    tasks = chexpert_tasks({**PHANTOM, "text_label_correlation": 0.0})
    for row in normal_with_text.itertuples():
        removed_file, box = text_free_file(tasks[row.file], tmp_path)
        removed = read_image(removed_file)
        expected = read_image(root / "1.0" / row.file)
        np.testing.assert_array_equal(removed, expected)
        assert box == (row.x0, row.y0, row.x1, row.y1)
        with_text = read_image(root / "0.0" / row.file)
        assert (with_text != removed).sum() > 5  # the text was there
    lateral = next(task for task in tasks.values() if task.spec["view"] == "LAT")
    with pytest.raises(ValueError, match="lateral view"):
        text_free_file(lateral, tmp_path)


def test_make_variants_on_a_generated_phantom(phantoms):
    root, truths = phantoms
    truth = truths[0.0]
    frontal = truth[(truth["view"] != "LAT")].rename(columns={"file": "path"}).head(8)
    assert frontal["words"].gt(0).any() and frontal["words"].eq(0).any()
    files = {p: root / "0.0" / p for p in frontal["path"]}
    tasks = chexpert_tasks({**PHANTOM, "text_label_correlation": 0.0})
    decoded = make_variants(files, frontal, tasks, seed=0, decodes={"full": None, "draft": 64})
    # At reduced size (JPEG draft mode) the originals are what the resize stage decodes.
    for path in frontal["path"]:
        draft = decoded["draft"]["original"][path]
        np.testing.assert_array_equal(draft, read_image(files[path], min_side=64))
        assert min(draft.shape) >= 64 and draft.shape[0] < 195
    variants = decoded["full"]
    for row in frontal.itertuples():
        original = variants["original"][row.path]
        np.testing.assert_array_equal(original, read_image(files[row.path]))
        lungs = np.s_[row.y0 : row.y1, row.x0 : row.x1]
        np.testing.assert_array_equal(variants["burned"][row.path][lungs], original[lungs])
        assert (variants["burned"][row.path] != original).any()
        if row.words == 0:
            np.testing.assert_array_equal(variants["removed"][row.path], original)
    # Made in two processes, every image is the same.
    two = make_variants(files, frontal, tasks, seed=0, decodes={"full": None}, workers=2)
    for variant, images in two["full"].items():
        assert list(images) == list(frontal["path"])
        for path, image in images.items():
            np.testing.assert_array_equal(image, variants[variant][path])
    # A truth.csv that does not belong to these params is caught.
    moved = frontal[frontal["words"] > 0].head(1).assign(x0=lambda f: f["x0"] + 1)
    with pytest.raises(ValueError, match="re-rendered lung box"):
        make_variants(files, moved, tasks, seed=0, decodes={"full": None})
    with pytest.raises(ValueError, match="not an image the phantom's params plan"):
        make_variants(files, frontal.tail(1), {}, seed=0, decodes={"full": None})


def test_decisions_ignore_score_noise_at_the_threshold():
    # Abnormal scores .9 .6 .4 -> at recall 0.95 the threshold is .4, itself a test score.
    scored = pd.DataFrame(
        {
            "setting": "s",
            "fold": 0,
            "label": [1, 1, 1, 0, 0],
            "score": [0.9, 0.6, 0.4, 0.5, 0.2],
            "score_burned": [0.9, 0.6, 0.4 - 1e-6, 0.5, 0.45],  # noise, and a real change
            "score_removed": [0.9, 0.3, 0.4, 0.5, 0.2],  # .6 drops below .4
        }
    )
    table = add_decisions(scored, recall=0.95)
    assert (table["threshold"] == 0.4).all()
    assert table["called"].tolist() == [True, True, True, True, False]
    assert table["called_burned"].tolist() == [True, True, True, True, True]
    assert table["called_removed"].tolist() == [True, False, True, True, False]
