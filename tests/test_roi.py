import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cxrstn.roi import apex_coverage, coverage, iou, phantom_lung_boxes, stn_window


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
