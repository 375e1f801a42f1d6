import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cxrstn.roi import (
    apex_coverage,
    coverage,
    crop_windows,
    iou,
    phantom_lung_boxes,
    quality,
    roi_summary,
    roi_table,
    stn_window,
)


def test_identity_window_is_the_whole_image():
    assert stn_window(1.0, 1.0, 0.0, 0.0).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_window_by_hand():
    # x in [0.2 - 0.5, 0.2 + 0.5] = [-0.3, 0.7] -> [0.35, 0.85]; y in [-0.4, 0.0] -> [0.3, 0.5]
    assert np.allclose(stn_window(0.5, 0.2, 0.2, -0.2), [0.35, 0.3, 0.85, 0.5])
    # a negative scale (flip) samples the same area
    assert np.allclose(stn_window(-0.5, 0.2, 0.2, -0.2), [0.35, 0.3, 0.85, 0.5])


def test_window_is_clipped_to_the_image_unless_asked():
    assert np.allclose(stn_window(0.5, 1.0, 0.8, 0.0), [0.65, 0.0, 1.0, 1.0])
    assert np.allclose(stn_window(0.5, 1.0, 0.8, 0.0, clip=False), [0.65, 0.0, 1.15, 1.0])


def test_window_is_vectorised():
    boxes = stn_window(np.array([1.0, 0.5]), np.array([1.0, 0.5]), 0.0, np.array([0.0, 0.5]))
    assert boxes.shape == (2, 4)
    assert np.allclose(boxes[1], [0.25, 0.5, 0.75, 1.0])


def test_window_matches_what_affine_grid_samples():
    # An image whose pixel value is its column index: the sampled window's first and last
    # columns sit half an output pixel inside the window's edges.
    size, out = 40, 8
    image = torch.arange(size, dtype=torch.float32).expand(1, 1, size, size).contiguous()
    sx, tx = 0.5, 0.25
    theta = torch.tensor([[[sx, 0.0, tx], [0.0, 1.0, 0.0]]])
    grid = F.affine_grid(theta, (1, 1, out, out), align_corners=False)
    sampled = F.grid_sample(image, grid, align_corners=False)[0, 0, 0]
    x0, _, x1, _ = stn_window(sx, 1.0, tx, 0.0)
    step = (x1 - x0) / out
    # pixel i covers [i, i + 1) in pixel units, so its centre value i is at u = (i + 0.5) / size
    expected = (x0 + step * (np.arange(out) + 0.5)) * size - 0.5
    assert np.allclose(sampled.numpy(), expected, atol=1e-4)


def test_iou_by_hand():
    a = [0.0, 0.0, 0.5, 0.5]
    b = [0.25, 0.25, 0.75, 0.75]
    # intersection 0.0625, union 0.25 + 0.25 - 0.0625
    assert iou(a, b) == pytest.approx(0.0625 / 0.4375)
    assert iou(a, a) == pytest.approx(1.0)
    assert iou(a, [0.6, 0.6, 0.9, 0.9]) == 0.0
    assert np.allclose(iou(np.array([a, b]), b), [0.0625 / 0.4375, 1.0])


def test_coverage_is_the_lung_share_inside_the_window():
    lung = [0.2, 0.2, 0.6, 0.6]
    assert coverage([0.0, 0.0, 1.0, 1.0], lung) == pytest.approx(1.0)
    assert coverage([0.0, 0.0, 0.4, 1.0], lung) == pytest.approx(0.5)
    assert coverage([0.4, 0.4, 1.0, 1.0], lung) == pytest.approx(0.25)


def test_coverage_refuses_an_empty_lung_box():
    with pytest.raises(ValueError, match="positive area"):
        coverage([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.9])


def test_apex_coverage_looks_at_the_top_tenth_of_the_lung_box():
    lung = [0.2, 0.2, 0.8, 0.7]  # apex strip: y in [0.2, 0.25], x in [0.2, 0.8]
    # a window starting at y = 0.23 keeps 2/5 of the strip's rows but all of the lung below
    window = [0.0, 0.23, 1.0, 1.0]
    assert apex_coverage(window, lung) == pytest.approx(0.4)
    assert coverage(window, lung) == pytest.approx(0.47 / 0.5)
    # a window that keeps only the left half of the strip
    assert apex_coverage([0.0, 0.0, 0.5, 1.0], lung) == pytest.approx(0.5)
    # a wider strip
    assert apex_coverage(window, lung, top=0.2) == pytest.approx(0.07 / 0.1)
    with pytest.raises(ValueError, match="top"):
        apex_coverage(window, lung, top=0.0)


def test_boxes_need_four_coordinates():
    with pytest.raises(ValueError, match="4 coordinates"):
        iou([0, 0, 1], [0, 0, 1, 1])


def test_phantom_lung_boxes_normalise_by_each_file_size(tmp_path):
    truth = pd.DataFrame(
        {
            "dataset": ["chexpert", "chexpert", "jsrt"],
            "file": [
                "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
                "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg",
                "JSRT/All247images/JPCLN001.IMG",
            ],
            "x0": [32, 0, 10],
            "y0": [39, 78, 10],
            "x1": [288, 160, 20],
            "y1": [351, 390, 20],
            "width": [320, 320, 256],
            "height": [390, 390, 256],
        }
    )
    truth.to_csv(tmp_path / "truth.csv", index=False)
    paths = [truth["file"][1], truth["file"][0]]
    boxes = phantom_lung_boxes(tmp_path / "truth.csv", paths)
    assert boxes["path"].tolist() == paths
    assert np.allclose(
        boxes[["x0", "y0", "x1", "y1"]].to_numpy(), [[0, 0.2, 0.5, 1.0], [0.1, 0.1, 0.9, 0.9]]
    )
    with pytest.raises(ValueError, match="truth.csv: 1 images have no lung box, e.g. nope.jpg"):
        phantom_lung_boxes(tmp_path / "truth.csv", ["nope.jpg"])
    truth.drop(columns="width").to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(ValueError, match=r"old.csv: missing columns \['width'\]"):
        phantom_lung_boxes(tmp_path / "old.csv", paths)


def test_quality_by_hand():
    lungs = np.array([[0.2, 0.2, 0.8, 0.6], [0.2, 0.4, 0.8, 0.9]])
    whole = np.tile([0.0, 0.0, 1.0, 1.0], (2, 1))
    q = quality(whole, lungs)
    assert q["roi_iou"] == pytest.approx((0.24 + 0.30) / 2)  # lung areas 0.24 and 0.30
    assert q["roi_lung_coverage"] == 1 and q["roi_apex_coverage"] == 1
    assert q["roi_r_centre"] == 0 and q["roi_r_height"] == 0  # the whole image never moves
    q = quality(lungs, lungs)  # windows that are the lung boxes: perfect, and following
    assert q["roi_iou"] == 1 and q["roi_r_centre"] == pytest.approx(1)
    assert q["roi_r_height"] == pytest.approx(1)
    # A window missing the top half of the first lung box keeps half of it and no apex.
    lower = np.array([[0.2, 0.4, 0.8, 0.6], [0.2, 0.4, 0.8, 0.9]])
    q = quality(lower, lungs)
    assert q["roi_lung_coverage"] == pytest.approx((0.5 + 1) / 2)
    assert q["roi_apex_coverage"] == pytest.approx((0 + 1) / 2)


def test_crop_windows_are_the_squares_the_crop_stage_cuts():
    crops = pd.DataFrame(
        {
            "path": ["a", "b"],
            "x0": [10.0, None],
            "y0": [20.0, None],
            "x1": [50.0, None],
            "y1": [40.0, None],
            "status": ["cropped", "whole"],
        }
    )
    # box 40 x 20 on a 100 px copy: the square of side 40 centred on (30, 30)
    np.testing.assert_allclose(crop_windows(crops, 100), [[0.1, 0.1, 0.5, 0.5], [0, 0, 1, 1]])


def test_roi_table_and_summary_per_setting_and_fold():
    lungs = pd.DataFrame(
        {"path": ["a", "b"], "x0": [0.25, 0.25], "y0": [0.25, 0.0], "x1": [0.75, 0.75]}
        | {"y1": [0.75, 0.5]}
    )
    test = pd.DataFrame({"path": ["a", "b"], "label": [0, 1], "split": "test"})
    # theta (0.5, 0.5, 0, 0) samples the central half of the image: the lung box of a.
    stn = test.assign(sx=0.5, sy=0.5, tx=0.0, ty=0.0)
    runs = {("baseline", 0): test, ("stn", 0): stn, ("stn", 1): stn}
    table = roi_table(runs, lungs, None, 512)
    stn_rows = table[(table["setting"] == "stn") & (table["fold"] == 0)]
    assert stn_rows["iou"].tolist() == pytest.approx([1.0, 1 / 3])  # b: overlap 0.125 of 0.375
    assert table.loc[table["setting"] == "baseline", "iou"].tolist() == [0.25, 0.25]
    summary = roi_summary(table)
    assert summary["stn"]["roi_iou"] == {"mean": pytest.approx(2 / 3, abs=1e-4), "std": 0.0}
    assert summary["baseline"]["roi_lung_coverage"]["mean"] == 1.0
    with pytest.raises(ValueError, match="need data/crops.csv"):
        roi_table({("yolo", 0): test}, lungs, None, 512)


def test_the_centre_spread_is_the_windows_share_of_the_lungs_spread():
    lungs = np.array([[0.2, 0.1, 0.8, 0.5], [0.2, 0.3, 0.8, 0.7], [0.2, 0.2, 0.8, 0.6]])
    assert quality(lungs, lungs)["roi_spread_centre"] == pytest.approx(1.0)
    half = lungs.copy()
    half[:, [1, 3]] = 0.5 * lungs[:, [1, 3]] + 0.5 * 0.6  # moves half as far
    assert quality(half, lungs)["roi_spread_centre"] == pytest.approx(0.5)
    whole = np.tile([0.0, 0.0, 1.0, 1.0], (3, 1))
    assert quality(whole, lungs)["roi_spread_centre"] == 0.0
