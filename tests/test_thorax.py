"""Thorax boxes from masks, the YOLO dataset writer, crop decisions and square crops."""

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from cxrstn.images import resize_square
from cxrstn.thorax import (
    CROP_COLUMNS,
    build_yolo_dataset,
    check_low_conf,
    crop_table,
    crop_to_thorax,
    plot_box_overlays,
    split_by_source,
    thorax_box,
    yolo_label,
)

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-samples"


def two_lungs(height=100, width=120):
    """A mask with two rectangular 'lungs': boxes (20..50, 10..80) and (70..100, 15..90)."""
    mask = np.zeros((height, width), np.uint8)
    mask[10:80, 20:50] = 255
    mask[15:90, 70:100] = 255
    return mask


def test_box_of_two_lungs_in_pixel_edges():
    assert thorax_box(two_lungs()) == (20, 10, 100, 90)
    assert thorax_box(two_lungs() > 0) == (20, 10, 100, 90)


def test_specks_are_ignored_even_touching_a_lung_at_a_corner():
    mask = two_lungs()
    mask[2, 2] = 255  # isolated speck far outside
    mask[80, 19] = 255  # touches the left lung's corner pixel (79, 20) only diagonally
    mask[95:98, 110:113] = 255  # 9-pixel blob, far below 10% of a lung
    assert thorax_box(mask) == (20, 10, 100, 90)


def test_a_single_lung_is_its_own_box():
    mask = np.zeros((50, 50), np.uint8)
    mask[5:45, 10:30] = 1
    mask[0, 49] = 1
    assert thorax_box(mask) == (10, 5, 30, 45)


def test_anti_aliased_edges_count_from_half_the_maximum():
    mask = two_lungs()
    mask[10:80, 19] = 100  # faint edge column: below half of 255
    mask[10:80, 50] = 200  # strong edge column: kept
    assert thorax_box(mask) == (20, 10, 100, 90)
    mask[15:90, 100] = 128
    assert thorax_box(mask) == (20, 10, 101, 90)


def test_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        thorax_box(np.zeros((10, 10), np.uint8))


def real_masks(pattern):
    files = sorted(REAL.glob(pattern))
    if not files:
        pytest.skip(f"real samples not found: {REAL / pattern}")
    return files


def test_real_montgomery_mask_with_stray_pixel():
    (file,) = real_masks("montgomery/derived_kaggle_512/masks/MCUCXR_0001_0.png")
    mask = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
    # Read off the two lung components (threshold 128): x 92..253 / 279..457, y 63..361 / 57..367.
    assert thorax_box(mask) == (92, 57, 457, 367)
    ys, xs = np.nonzero(mask >= 128)
    assert xs.min() == 91  # the stray pixel at (x 91, y 361) that the box leaves out


def test_real_shenzhen_masks_match_the_extent_of_both_lungs():
    for file in real_masks("shenzhen/derived_arcus/mask/*_mask.png"):
        mask = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
        ys, xs = np.nonzero(mask >= 128)  # these masks hold exactly the two lungs
        expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert thorax_box(mask) == expected, file.name
    mask = cv2.imread(str(REAL / "shenzhen/derived_arcus/mask/CHNCXR_0001_0_mask.png"), 0)
    assert thorax_box(mask) == (103, 89, 675, 580)


def test_yolo_label_is_normalised_centre_and_size():
    assert (
        yolo_label((10, 20, 50, 100), width=200, height=400)
        == "0 0.150000 0.150000 0.200000 0.200000"
    )


def test_split_is_seeded_stratified_and_order_free():
    keys = {"jsrt": [f"j{i}" for i in range(10)], "mont": [f"m{i}" for i in range(4)]}
    roles = split_by_source(keys, val_fraction=0.2, seed=3)
    assert sum(r == "val" for (s, _), r in roles.items() if s == "jsrt") == 2
    assert sum(r == "val" for (s, _), r in roles.items() if s == "mont") == 1  # round(0.8) = 1
    reversed_keys = {s: list(reversed(k)) for s, k in keys.items()}
    assert split_by_source(reversed_keys, 0.2, seed=3) == roles
    assert split_by_source(keys, 0.2, seed=4) != roles
    assert set(split_by_source({"one": ["a"]}, 0.5, 0).values()) == {"train"}
    assert list(split_by_source({"two": ["a", "b"]}, 0.01, 0).values()).count("val") == 1


@dataclass
class FakeSample:
    """Stands in for cxrstn.sources.LungSample."""

    source: str
    key: str
    image: np.ndarray
    mask: np.ndarray | None
    error: str | None = None
    image_path: str = ""
    mask_paths: list = field(default_factory=list)

    def read_image(self):
        return self.image

    def read_lung_mask(self):
        if self.error:
            raise ValueError(f"{self.key}: {self.error}")
        return self.mask


def fake_samples():
    image = np.full((100, 120), 50, np.uint8)
    samples = [FakeSample("jsrt", f"JPCLN{i:03d}.IMG", image, two_lungs() > 0) for i in range(6)]
    samples += [
        FakeSample("shenzhen", f"CHNCXR_{i:04d}_0.png", image, two_lungs() > 0) for i in range(3)
    ]
    samples.append(FakeSample("shenzhen", "CHNCXR_0100_1.png", image, None))
    samples.append(
        FakeSample("shenzhen", "CHNCXR_0101_1.png", image, None, error="empty lung mask")
    )
    samples.append(FakeSample("shenzhen", "CHNCXR_0102_1.png", image, np.ones((10, 10), bool)))
    return samples


def test_yolo_dataset_files_counts_and_labels(tmp_path):
    counts = build_yolo_dataset(fake_samples(), tmp_path, imgsz=64, val_fraction=0.34, seed=0)
    assert counts["sources"]["jsrt"] == {
        "images": 6, "with_mask": 6, "without_mask": 0, "excluded": 0, "train": 4, "val": 2,
        "excluded_bad_mask": 0, "excluded_unreadable_image": 0,
    }  # fmt: skip
    assert counts["sources"]["shenzhen"] == {
        "images": 6, "with_mask": 5, "without_mask": 1, "excluded": 2, "train": 2, "val": 1,
        "excluded_bad_mask": 2, "excluded_unreadable_image": 0,
    }  # fmt: skip
    assert counts["total"]["images"] == 12 and counts["total"]["excluded"] == 2

    labels = sorted(tmp_path.glob("labels/*/*.txt"))
    assert len(labels) == 9 and len(list(tmp_path.glob("images/*/*.png"))) == 9
    # Box (20, 10, 100, 90) in a 120 x 100 image.
    assert labels[0].read_text() == "0 0.500000 0.500000 0.666667 0.800000\n"
    image = cv2.imread(
        str(next(tmp_path.glob("images/train/jsrt__JPCLN*.png"))), cv2.IMREAD_UNCHANGED
    )
    assert image.shape == (64, 64) and image.dtype == np.uint8

    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert data["train"] == "images/train" and data["val"] == "images/val" and "path" not in data
    excluded = pd.read_csv(tmp_path / "excluded.csv")
    assert sorted(excluded["key"]) == ["CHNCXR_0101_1.png", "CHNCXR_0102_1.png"]
    assert "empty lung mask" in excluded["message"].iloc[0]
    boxes = pd.read_csv(tmp_path / "boxes.csv")
    assert (
        len(boxes) == 9 and (boxes[["x0", "y0", "x1", "y1"]].to_numpy() == [20, 10, 100, 90]).all()
    )

    again = tmp_path / "again"
    build_yolo_dataset(list(reversed(fake_samples())), again, imgsz=64, val_fraction=0.34, seed=0)
    assert sorted(p.name for p in again.glob("labels/val/*")) == sorted(
        p.name for p in tmp_path.glob("labels/val/*")
    )

    plot_box_overlays(tmp_path, tmp_path / "overlay.png")
    assert cv2.imread(str(tmp_path / "overlay.png")) is not None


def test_crop_table_statuses_and_columns():
    paths = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    detections = [
        (10.0, 20.0, 300.0, 400.0, 0.95),
        (5.0, 5.0, 50.0, 50.0, 0.9),
        (1, 2, 3, 4, 0.5),
        None,
    ]
    table = crop_table(paths, detections, conf=0.9)
    assert list(table.columns) == CROP_COLUMNS == ["path", "x0", "y0", "x1", "y1", "conf", "status"]
    assert table["status"].tolist() == ["cropped", "cropped", "whole", "whole"]
    assert table.loc[3, "conf"] == 0 and table.loc[3, ["x0", "y0", "x1", "y1"]].isna().all()


def test_low_conf_policy_is_checked():
    check_low_conf("drop")
    check_low_conf("full")
    with pytest.raises(ValueError, match=r"crop.low_conf must be one of \['drop', 'full'\]"):
        check_low_conf("keep")


def test_crop_of_the_original_has_the_geometry_of_the_resized_copy():
    original = (np.arange(200 * 100) % 251).astype(np.uint8).reshape(200, 100)  # 100 wide
    # Box seen on a 50 x 50 copy: its square (side 20, centred at 20, 15) is x 10..30, y 5..25,
    # which is x 20..60 (x2) and y 20..100 (x4) of the original.
    crop = crop_to_thorax(original, (10.0, 10.0, 30.0, 20.0), 16, detected_on=50)
    assert np.array_equal(crop, resize_square(original[20:100, 20:60], 16))
    same_size = crop_to_thorax(original, (10.0, 10.0, 30.0, 20.0), 16)
    assert np.array_equal(same_size, resize_square(original[5:25, 10:30], 16))


def test_square_crop_at_the_borders():
    image = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    # Box touching the left edge: a 40-px square centred at y 30, from x 0.
    assert np.array_equal(crop_to_thorax(image, (0, 10, 40, 50), 40), image[10:50, 0:40])
    # Box at the top-right corner: side 30, centre (85, 10) -> shifted down to y 0..30.
    assert np.array_equal(crop_to_thorax(image, (70, 0, 100, 20), 30), image[0:30, 70:100])
    # A box taller than wide becomes a square of its height, centred horizontally.
    assert np.array_equal(crop_to_thorax(image, (40, 20, 60, 80), 60), image[20:80, 20:80])
    assert crop_to_thorax(image, (40, 20, 60, 80), 512).shape == (512, 512)
